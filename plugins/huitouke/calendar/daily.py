"""The calendar's two moments in a business day's run: it opens before the stateful stages start,
and completes after the last of them.

:func:`open_day` decides by :func:`huitouke.calendar.rules.decide` whether the day may run, in a
transaction that holds the store's writers (two runs cannot open days at once), and records the
attempt; it raises :class:`DayRefused` (never, as things stand: the message says what to do) or
:class:`DayWaits` (the day before is still running). :func:`close_day` marks the day completed.
Both return a result with ``as_text()`` and ``as_dict()``, as every stage's ``run_day`` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import Engine

from huitouke.calendar import persist
from huitouke.calendar.rules import RUN, WAIT, decide
from huitouke.pii import get_logger

__all__ = ["CalendarDay", "DayRefused", "DayWaits", "RunIdentity", "close_day", "open_day", "stop_day"]

log = get_logger(__name__)


class DayRefused(RuntimeError):
    """The day may not run: it follows a gap, or it is out of the calendar's order."""


class DayWaits(RuntimeError):
    """The day before has not completed yet: try again once it has."""


@dataclass(frozen=True)
class RunIdentity:
    """Which run asks (Airflow's run id and type: scheduled, manual, backfill, ...)."""

    run_id: str | None = None
    run_type: str | None = None


@dataclass(frozen=True)
class CalendarDay:
    """What the calendar did for one day: opened (as first, next, rerun, resume) or completed."""

    day: date
    event: str  # opened, completed
    kind: str
    attempt: int | None
    reason: str

    def as_text(self) -> str:
        attempt = f", attempt {self.attempt}" if self.attempt else ""
        return f"business day {self.day}: {self.event} ({self.kind}{attempt}): {self.reason}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "business_date": self.day.isoformat(),
            "event": self.event,
            "kind": self.kind,
            "attempt": self.attempt,
        }


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def open_day(engine: Engine, day: date, run: RunIdentity | None = None) -> CalendarDay:
    """Open ``day`` for its stateful stages, or raise :class:`DayRefused` / :class:`DayWaits`."""
    run = run or RunIdentity()
    with engine.begin() as conn:
        persist.lock_calendar(conn)
        view = persist.read_view(conn, day)
        decision = decide(view)
        if decision.action == WAIT:
            raise DayWaits(decision.reason)
        if decision.action != RUN:
            raise DayRefused(decision.reason)
        attempt = persist.mark_opened(conn, view, run.run_id, run.run_type, _now())
    return CalendarDay(day, "opened", decision.kind, attempt, decision.reason)


def stop_day(engine: Engine, day: date, reason: str) -> None:
    """The day's attempt stopped before completing (a stale source): it stays open with the reason,
    which the next day's wait repeats."""
    with engine.begin() as conn:
        persist.lock_calendar(conn)
        persist.mark_stopped(conn, day, reason)


def close_day(engine: Engine, day: date) -> CalendarDay:
    """Mark ``day`` completed: the next business day may run."""
    with engine.begin() as conn:
        persist.lock_calendar(conn)
        if not persist.mark_completed(conn, day, _now()):
            raise DayRefused(
                f"business day {day} was never opened: its run did not start with the calendar's check"
            )
    return CalendarDay(day, "completed", "completed", None, "the next business day may run")
