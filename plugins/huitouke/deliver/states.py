"""An outbox row's statuses, and how delivery moves it between them.

``queued`` (rendered) → ``sending`` (claimed: ``claimed_by`` until ``lease_until``) → ``sent``;
or ``failed`` (a permanent reason), ``unknown`` (it may have left and the provider cannot say:
never sent again), back to ``queued`` (a retryable error, ``next_attempt_at`` later; or a paused
account), ``suppressed`` (the checks at send time: opted out, holdout, no address, contact cap),
``stale`` (the run may not send: a backfill, or a run too late), ``expired`` (still queued past
``delivery.max_age_days``). Calls: ``queued`` → ``listed`` (on the day's call list) → ``sent``
(reached) or ``failed`` (not reached, wrong number, refused), from the imported outcomes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

QUEUED = "queued"
SENDING = "sending"
SENT = "sent"
FAILED = "failed"
UNKNOWN = "unknown"
SUPPRESSED = "suppressed"
STALE = "stale"
EXPIRED = "expired"
LISTED = "listed"

# Where a row ends: nothing moves it again (receipts only add to a sent row).
FINAL = frozenset({SENT, FAILED, UNKNOWN, SUPPRESSED, STALE, EXPIRED})


# The outbox key a message's id at its provider is made of.
OUT_ID_KEY = ("campaign", "customer_id", "entered_on", "wave", "channel")


def out_id_of(row: Mapping[str, Any]) -> str:
    """huitouke's id for a message at its provider: a digest of the outbox key, so the same
    (campaign, customer, entry, wave, channel) has the same id in every attempt and every store.
    Rendering stores it with the row; the claim computes it again from the stored key and writes
    it where it differs (rows rendered before it was stored)."""
    return out_id_from(tuple(row[k] for k in OUT_ID_KEY))


def out_id_from(key: tuple[Any, ...]) -> str:
    """:func:`out_id_of` from the key's values, in :data:`OUT_ID_KEY`'s order."""
    return "htk-" + hashlib.sha256("|".join(map(str, key)).encode()).hexdigest()[:24]
