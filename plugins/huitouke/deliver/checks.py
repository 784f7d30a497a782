"""The checks made again at send time, in the transaction that claims a batch: a customer who said
stop, a customer in the holdout, a customer without an address on the channel any more, and a
customer whose contact cap the messages already sent have reached get nothing; a customer whose
address changed since rendering is written to at the current one.

Plain functions over DataFrames; :mod:`huitouke.deliver.persist` reads the facts and applies the
verdicts. One check is not a verdict on a row but a filter of the claim's query,
:func:`claimable`: a campaign an operator paused (``huitouke deliver pause``), or one the run's
``campaigns`` param left out, is not claimed at all, so its messages stay ``queued`` (a later
claim, or run, sends them once it is resumed or selected) and never fill a claim ahead of the
campaigns still sending.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import ColumnElement, and_, exists, true

from huitouke.deliver.replies import normalize_phone
from huitouke.store.schema import campaign_pauses

__all__ = [
    "CANDIDATE_FACTS",
    "PAUSED",
    "SUPPRESSION_REASONS",
    "claimable",
    "contact_counts",
    "holds",
    "recent_contact_counts",
    "send_time_verdicts",
    "verdict",
]

OPTED_OUT, HOLDOUT, NO_ADDRESS, CONTACT_CAP = "opted_out", "holdout", "no_address", "contact_cap"
SUPPRESSION_REASONS = (OPTED_OUT, HOLDOUT, NO_ADDRESS, CONTACT_CAP)
PAUSED = "campaign paused"  # not a suppression: the rows stay queued (the log's reason)

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


def claimable(campaign: ColumnElement, campaigns: tuple[str, ...] | None = None) -> ColumnElement:
    """The campaign-level send-time check, as a condition on the claim's query (on the outbox's
    ``campaign`` column): not paused in ``campaign_pauses`` (read in the claim's transaction, so a
    pause made mid-day holds from the next claim on) and, when the run names ``campaigns``, one
    of them."""
    not_paused = ~exists().where(campaign_pauses.c.campaign == campaign)
    return and_(not_paused, campaign.in_(campaigns) if campaigns is not None else true())


def recent_contact_counts(
    candidates: pd.DataFrame, sent: Iterable[tuple[str, str, date, int, date]], today: date
) -> np.ndarray:
    """Per candidate (a frame with :data:`WAVE_KEY` and ``cap_per_days``): :func:`contact_counts`."""
    keys = zip(*(candidates[c].tolist() for c in (*WAVE_KEY, "cap_per_days")), strict=True)
    return np.array(contact_counts(list(keys), sent, today), dtype=np.int64)


def contact_counts(
    keys: Sequence[tuple[str, str, date, int, int]],
    sent: Iterable[tuple[str, str, date, int, date]],
    today: date,
) -> list[int]:
    """Per candidate ``(campaign, customer_id, entered_on, wave, cap_per_days)``: the capped waves,
    other than its own, already sent to its customer within its tier's ``cap_per_days`` (today
    included). ``sent``: ``(campaign, customer_id, entered_on, wave, sent_on)`` of capped waves
    with a message sent. Dicts, not frames: a claim's candidates have few sent waves each, and a
    loop over them beats grouping a frame per claim."""
    first: dict[tuple[str, str, date, int], date] = {}
    for campaign, customer_id, entered_on, wave, sent_on in sent:
        key = (campaign, customer_id, entered_on, wave)
        if key not in first or sent_on < first[key]:
            first[key] = sent_on
    by_customer: dict[str, list[tuple[tuple[str, str, date, int], date]]] = {}
    for key, sent_on in first.items():
        by_customer.setdefault(key[1], []).append((key, sent_on))
    if not by_customer:
        return [0] * len(keys)
    counts = []
    for campaign, customer_id, entered_on, wave, days in keys:
        own = (campaign, customer_id, entered_on, wave)
        since = today - timedelta(days=int(days) - 1)
        theirs = by_customer.get(customer_id, ())
        counts.append(sum(1 for key, sent_on in theirs if sent_on >= since and key != own))
    return counts


def holds(value: Any) -> bool:
    """A flag's value as a check reads it: missing (None, NaN) is False."""
    return False if value is None or value is pd.NA or value != value else bool(value)  # noqa: PLR0124


def _current_address(channel: Any, phone: Any, email: Any) -> str:
    """The address on the row's channel as the customer's profile has it now (phones in E.164);
    "" when there is none."""
    if channel == "email":
        address = email
    else:
        address = (normalize_phone(phone) or phone) if isinstance(phone, str) else None
    return address.strip() if isinstance(address, str) else ""


def _reason(row: Mapping[str, Any], address: str, recent: int) -> str | None:
    if holds(row["flag_opted_out"]) or holds(row["opted_out"]):
        return OPTED_OUT
    if not holds(row["treated"]):
        return HOLDOUT
    if address == "":
        return NO_ADDRESS
    cap = row["cap_max_contacts"]
    if holds(row["counts_toward_cap"]) and cap is not None and cap == cap and recent >= cap:
        return CONTACT_CAP
    return None


VERDICT_INPUTS = ("message_id", "channel", "current_phone", "current_email", *CANDIDATE_FACTS[2:7])


def verdict(row: Mapping[str, Any], recent_contacts: int) -> tuple[str | None, str]:
    """``(reason, recipient)`` of one candidate (a mapping with :data:`VERDICT_INPUTS`):
    ``reason`` None to send to ``recipient``, the current address; else the first of
    :data:`SUPPRESSION_REASONS` that holds."""
    address = _current_address(row["channel"], row["current_phone"], row["current_email"])
    return _reason(row, address, recent_contacts), address


def send_time_verdicts(candidates: pd.DataFrame, recent_contacts: np.ndarray) -> pd.DataFrame:
    """``message_id, reason, recipient`` per candidate: :func:`verdict` of each row of a frame."""
    columns = [candidates[c].tolist() for c in VERDICT_INPUTS]
    found = [
        verdict(dict(zip(VERDICT_INPUTS, values, strict=True)), recent)
        for values, recent in zip(zip(*columns, strict=True), recent_contacts.tolist(), strict=True)
    ]
    return pd.DataFrame(
        {
            "message_id": candidates["message_id"].to_numpy(),
            "reason": np.array([reason for reason, _ in found], dtype=object),
            "recipient": np.array([to for _, to in found], dtype=object),
        }
    )
