"""The send-time checks, row by row over plain lists (:mod:`huitouke.deliver.checks`), give the
verdicts of the simple frame logic they replaced, kept here as the reference, on random frames."""

from __future__ import annotations

import random
from datetime import date, timedelta

import numpy as np
import pandas as pd

from huitouke.deliver import checks
from huitouke.deliver.replies import normalize_phone

TODAY = date(2026, 3, 10)
WAVES = [("a", date(2026, 3, 1), 1), ("a", date(2026, 3, 1), 2), ("b", date(2026, 3, 5), 1)]
MAYBE = (True, False, None, np.nan)


def reference_counts(candidates: pd.DataFrame, sent: pd.DataFrame, today: date) -> np.ndarray:
    counts = np.zeros(len(candidates), dtype=np.int64)
    if sent.empty:
        return counts
    waves = sent.groupby(checks.WAVE_KEY, as_index=False)["sent_on"].min()
    for i, row in enumerate(candidates.itertuples(index=False)):
        theirs = waves[waves["customer_id"] == row.customer_id]
        since = today - timedelta(days=int(row.cap_per_days) - 1)
        other = ~(
            (theirs["campaign"] == row.campaign)
            & (theirs["entered_on"] == row.entered_on)
            & (theirs["wave"] == row.wave)
        )
        counts[i] = int(((theirs["sent_on"] >= since) & other).sum())
    return counts


def flag(column: pd.Series) -> pd.Series:
    """``fillna(False).astype(bool)``, without pandas' warning on all-NaN float columns."""
    return column.astype(object).where(column.notna(), False).astype(bool)


def reference_verdicts(candidates: pd.DataFrame, recent: np.ndarray) -> pd.DataFrame:
    phones = candidates["current_phone"].map(
        lambda p: normalize_phone(p) or p if isinstance(p, str) else None
    )
    emails = candidates["current_email"].where(candidates["current_email"].notna(), None)
    address = pd.Series(np.where(candidates["channel"] == "email", emails, phones), index=candidates.index)
    address = address.map(lambda a: a.strip() if isinstance(a, str) else "")
    flagged = flag(candidates["flag_opted_out"])
    opted = flagged | flag(candidates["opted_out"])
    capped = flag(candidates["counts_toward_cap"]) & (
        recent >= candidates["cap_max_contacts"].fillna(np.inf).to_numpy()
    )
    conditions = [
        opted.to_numpy(),
        ~flag(candidates["treated"]).to_numpy(),
        (address == "").to_numpy(),
        capped.to_numpy(),
    ]
    reason = np.select(conditions, list(checks.SUPPRESSION_REASONS), default="")
    return pd.DataFrame(
        {
            "message_id": candidates["message_id"].to_numpy(),
            "reason": pd.Series(reason).replace("", None).to_numpy(),
            "recipient": address.to_numpy(),
        }
    )


def random_case(rng: random.Random, n: int) -> tuple[pd.DataFrame, list[tuple]]:
    rows = []
    for i in range(n):
        campaign, entered_on, wave = rng.choice(WAVES)
        rows.append(
            {
                "message_id": i,
                "campaign": campaign,
                "customer_id": f"c{rng.randrange(8)}",
                "entered_on": entered_on,
                "wave": wave,
                "channel": rng.choice(["sms", "email", "call"]),
                "current_phone": rng.choice(["+8613800000001", "13800000002", " 138 0000 0003 ", "", None]),
                "current_email": rng.choice(["a@example.com", " b@example.com ", "", None, np.nan]),
                "flag_opted_out": rng.choice(MAYBE),
                "opted_out": rng.choice((True, False, False, False)),
                "treated": rng.choice(MAYBE),
                "counts_toward_cap": rng.choice(MAYBE),
                "cap_max_contacts": rng.choice((1, 2, 3)),
                "cap_per_days": rng.choice((1, 3, 7)),
            }
        )
    sent = [
        (
            *(lambda w: (w[0], f"c{rng.randrange(8)}", w[1], w[2]))(rng.choice(WAVES)),
            TODAY - timedelta(rng.randrange(9)),
        )
        for _ in range(rng.randrange(0, 3 * n))
    ]
    return pd.DataFrame(rows), sent


def test_the_checks_give_the_reference_verdicts_on_random_frames():
    rng = random.Random(13)
    for _ in range(60):
        candidates, sent = random_case(rng, rng.randrange(1, 40))
        frame = pd.DataFrame(sent, columns=[*checks.WAVE_KEY, "sent_on"])
        counts = checks.recent_contact_counts(candidates, sent, TODAY)
        assert counts.tolist() == reference_counts(candidates, frame, TODAY).tolist()
        got = checks.send_time_verdicts(candidates, counts)
        want = reference_verdicts(candidates, counts)
        assert got["message_id"].tolist() == want["message_id"].tolist()
        assert got["reason"].tolist() == want["reason"].tolist()
        assert got["recipient"].tolist() == want["recipient"].tolist()


def test_no_sent_waves_count_nothing():
    candidates, _ = random_case(random.Random(1), 5)
    assert checks.recent_contact_counts(candidates, [], TODAY).tolist() == [0] * 5
