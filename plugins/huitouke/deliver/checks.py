"""The checks made again at send time, in the transaction that claims a batch: a customer who said
stop, a customer in the holdout, a customer without an address on the channel any more, and a
customer whose contact cap the messages already sent have reached get nothing; a customer whose
address changed since rendering is written to at the current one.

Plain functions over DataFrames; :mod:`huitouke.deliver.persist` reads the facts and applies the
verdicts.
"""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd

from huitouke.deliver.replies import normalize_phone

__all__ = ["CANDIDATE_FACTS", "SUPPRESSION_REASONS", "recent_contact_counts", "send_time_verdicts"]

OPTED_OUT, HOLDOUT, NO_ADDRESS, CONTACT_CAP = "opted_out", "holdout", "no_address", "contact_cap"
SUPPRESSION_REASONS = (OPTED_OUT, HOLDOUT, NO_ADDRESS, CONTACT_CAP)

# What the claim reads about each candidate row (besides the outbox row itself).
CANDIDATE_FACTS = (
    "current_phone",
    "current_email",
    "flag_opted_out",  # the customers table's flag for the row's channel
    "opted_out",  # an opt_outs row for the channel or for all channels
    "treated",  # the wave is still the treated arm's, treated
    "counts_toward_cap",
    "cap_max_contacts",
    "cap_per_days",
)

WAVE_KEY = ["campaign", "customer_id", "entered_on", "wave"]


def recent_contact_counts(candidates: pd.DataFrame, sent: pd.DataFrame, today: date) -> np.ndarray:
    """Per candidate: the capped waves, other than its own, already sent to its customer within its
    tier's ``cap_per_days`` (today included). ``sent``: ``campaign, customer_id, entered_on, wave,
    sent_on`` of capped waves with a message sent."""
    counts = np.zeros(len(candidates), dtype=np.int64)
    if sent.empty or candidates.empty:
        return counts
    waves = sent.groupby(WAVE_KEY, as_index=False)["sent_on"].min()
    by_customer = {cid: frame for cid, frame in waves.groupby("customer_id")}
    for i, row in enumerate(candidates.itertuples(index=False)):
        theirs = by_customer.get(row.customer_id)
        if theirs is None:
            continue
        since = today - timedelta(days=int(row.cap_per_days) - 1)
        other = ~(
            (theirs["campaign"] == row.campaign)
            & (theirs["entered_on"] == row.entered_on)
            & (theirs["wave"] == row.wave)
        )
        counts[i] = int(((theirs["sent_on"] >= since) & other).sum())
    return counts


def _current_address(candidates: pd.DataFrame) -> pd.Series:
    """The address on the row's channel as the customer's profile has it now (phones in E.164)."""
    phones = candidates["current_phone"].map(
        lambda p: normalize_phone(p) or p if isinstance(p, str) else None
    )
    emails = candidates["current_email"].where(candidates["current_email"].notna(), None)
    address = np.where(candidates["channel"] == "email", emails, phones)
    return pd.Series(address, index=candidates.index).map(lambda a: a.strip() if isinstance(a, str) else "")


def send_time_verdicts(candidates: pd.DataFrame, recent_contacts: np.ndarray) -> pd.DataFrame:
    """``message_id, reason, recipient`` per candidate: ``reason`` None to send (to ``recipient``,
    the current address), else the first of :data:`SUPPRESSION_REASONS` that holds."""
    address = _current_address(candidates)
    opted = candidates["flag_opted_out"].fillna(False).astype(bool) | candidates["opted_out"].fillna(
        False
    ).astype(bool)
    capped = candidates["counts_toward_cap"].fillna(False).astype(bool) & (
        recent_contacts >= candidates["cap_max_contacts"].fillna(np.inf).to_numpy()
    )
    reason = np.select(
        [
            opted.to_numpy(),
            ~candidates["treated"].fillna(False).astype(bool).to_numpy(),
            (address == "").to_numpy(),
            capped.to_numpy(),
        ],
        [OPTED_OUT, HOLDOUT, NO_ADDRESS, CONTACT_CAP],
        default="",
    )
    return pd.DataFrame(
        {
            "message_id": candidates["message_id"].to_numpy(),
            "reason": pd.Series(reason).replace("", None).to_numpy(),
            "recipient": address.to_numpy(),
        }
    )
