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
