"""The rules of sending, as plain functions: may this run send at all, when the send window opens
and closes, when a retryable failure may be tried again, which queued rows are too old to go.

Every rule about *whether* something may be sent lives here or in :mod:`huitouke.deliver.checks`
(per customer, at claim time); :mod:`huitouke.deliver.sender` only applies them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo

__all__ = [
    "DeliveryRules",
    "RunVerdict",
    "backoff",
    "next_window_open",
    "run_verdict",
    "window_close",
]

BACKFILL = "backfill"


@dataclass(frozen=True)
class DeliveryRules:
    """The knobs of sending (the ``delivery:`` section of include/huitouke.yaml)."""

    lease_seconds: float = 120.0  # a claim's lease: longer than any provider call may take
    max_attempts: int = 5  # retryable failures before a message ends failed
    backoff_seconds: float = 30.0  # the first retry's delay; doubled each attempt
    max_backoff_seconds: float = 1800.0
    max_age_days: int = 2  # queued rows of business days older than this end expired
    # After a timeout or a dropped connection, wait this long before asking the provider whether it
    # took the message: longer than any proxy's or backend's timeout, and than a provider's own
    # settle time (Aliyun, Twilio: status_settle_s), or a "not found" could be a message in flight.
    settle_seconds: float = 60.0
    max_wait_seconds: float = 300.0  # the longest a run sleeps for a retry to fall due
    # Rows one claim takes, at most: whole rounds of the provider's batch_size * max_concurrency
    # (at least one). A claim's fixed costs (the send-time checks' queries) dominate small claims.
    claim_rows: int = 2000
    # Claims made while the previous one's calls are still out: its claim then overlaps their
    # sending (1: about twice the messages a second). A stop read between claims holds from the
    # next claim on, so with claims ahead it holds one claim later; 0: claim only when nothing is out.
    claims_ahead: int = 1


@dataclass(frozen=True)
class RunVerdict:
    """Whether a run may send, and if not, why (its day's queued rows end ``stale`` with it)."""

    sends: bool
    reason: str | None = None


def run_verdict(run_type: str | None, day: date, today: date) -> RunVerdict:
    """A backfill never sends; nor does a run whose business day is older than yesterday."""
    if run_type == BACKFILL:
        return RunVerdict(False, f"business day {day} was run by a backfill: backfills never send")
    if day < today - timedelta(days=1):
        return RunVerdict(
            False, f"business day {day} ran on {today}, later than the day after it: too late to send"
        )
    return RunVerdict(True)


def _at(day: date, moment: time, tz: tzinfo) -> datetime:
    return datetime.combine(day, moment, tzinfo=tz).astimezone(UTC)


def next_window_open(now: datetime, start: time, end: time, tz: tzinfo) -> datetime | None:
    """When sending may start: None when ``now`` (aware) is inside the window [start, end) shop
    time, else the next window's start (aware UTC)."""
    local = now.astimezone(tz)
    if start <= local.time() < end:
        return None
    day = local.date() if local.time() < start else local.date() + timedelta(days=1)
    return _at(day, start, tz)


def window_close(now: datetime, end: time, tz: tzinfo) -> datetime:
    """The end of the window ``now`` is in (aware UTC): no claim is made at or after it."""
    return _at(now.astimezone(tz).date(), end, tz)


def backoff(attempts: int, rules: DeliveryRules, retry_after_s: float | None = None) -> timedelta:
    """How long a message waits after its ``attempts``-th retryable failure: the provider's
    Retry-After when it said, else doubling from ``backoff_seconds``, at most ``max_backoff``."""
    doubled = rules.backoff_seconds * 2 ** max(attempts - 1, 0)
    seconds = max(retry_after_s or 0.0, min(doubled, rules.max_backoff_seconds))
    return timedelta(seconds=seconds)


def oldest_sendable(day: date, rules: DeliveryRules) -> date:
    """Queued rows of business days before this one end ``expired``."""
    return day - timedelta(days=rules.max_age_days)
