"""The daily run's contract, as one decision: may the stateful stages run business day D now?

The customer state, the segment history and the campaign entries are incremental: day D is
computed on top of day D-1. So a day runs only when the day before it has completed (or when it is
the store's first day), a completed day may run again (a re-run changes nothing that was computed),
and a day after a gap never runs: its message names the missing days and the command that runs
them. Plain data in, a :class:`Decision` out; :mod:`huitouke.calendar.daily` reads the stored
calendar and acts on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

__all__ = ["COMPLETED", "OPEN", "CalendarView", "Decision", "backfill_command", "decide"]

OPEN = "open"
COMPLETED = "completed"

# What a decision lets the run do.
RUN = "run"  # open the day and go on
WAIT = "wait"  # the day before is still running: try again later
REFUSE = "refuse"  # never, as things stand: the message says what to do


@dataclass(frozen=True)
class CalendarView:
    """What the stored calendar says around the day asked for."""

    day: date
    status: str | None  # of the day itself: None (never opened), OPEN or COMPLETED
    previous_status: str | None  # of the day before
    first_day: date | None  # the first business day the store opened
    last_completed: date | None  # the latest completed business day
    previous_stop_reason: str | None = None  # why the day before's latest attempt stopped


@dataclass(frozen=True)
class Decision:
    """``action`` is RUN, WAIT or REFUSE; ``reason`` says why in a line fit for the task log."""

    action: str
    kind: str  # first, next, rerun, resume, wait, gap, before_start
    reason: str

    @property
    def runs(self) -> bool:
        return self.action == RUN


def backfill_command(first: date, last: date) -> str:
    """The command that runs business days ``first`` .. ``last`` in order (README, "Backfills")."""
    return f"huitouke backfill --from {first.isoformat()} --to {last.isoformat()}"


def _days(first: date, last: date) -> str:
    count = (last - first).days + 1
    if count == 1:
        return first.isoformat()
    return f"{first.isoformat()} .. {last.isoformat()} ({count} days)"


def decide(view: CalendarView) -> Decision:
    """May ``view.day`` run now? See the module docstring for the contract."""
    day, previous = view.day, view.day - timedelta(days=1)
    if view.status == COMPLETED:
        return Decision(RUN, "rerun", f"{day} completed before: it runs again")
    if view.first_day is None or (view.status == OPEN and view.first_day == day):
        return Decision(RUN, "first", f"{day} is the store's first business day")
    if view.status is None and day < view.first_day:
        return Decision(
            REFUSE,
            "before_start",
            f"business day {day} is before {view.first_day}, the store's first business day: the days "
            f"before it are history (load their orders with `huitouke intake --from ... --to "
            f"{view.first_day - timedelta(days=1)}`)",
        )
    if view.status is None and view.last_completed is not None and day < view.last_completed:
        return Decision(
            REFUSE,
            "out_of_order",
            f"business day {day} never ran, and the days up to {view.last_completed} were computed "
            "without it: the customer state does not go back. Its orders are taken in by the next "
            "day that runs",
        )
    if view.previous_status == COMPLETED:
        return Decision(
            RUN, "resume" if view.status == OPEN else "next", f"{previous}, the day before, completed"
        )
    if view.previous_status == OPEN:
        return _wait(view, previous)
    return _gap(view, previous)


def _wait(view: CalendarView, previous: date) -> Decision:
    """The day before is open: still running, or stopped (then say why, and how to go on)."""
    if view.previous_stop_reason:
        return Decision(
            WAIT,
            "wait",
            f"{previous}, the day before, stopped: {view.previous_stop_reason}. {view.day} waits for it: "
            f"clear {previous}'s failed tasks once its data is complete (or run it with "
            "accept_incomplete_day)",
        )
    return Decision(
        WAIT,
        "wait",
        f"{previous}, the day before, has not completed yet: {view.day} waits for it (if its run "
        "failed, clear its failed tasks once fixed, or run it with accept_incomplete_day)",
    )


def _gap(view: CalendarView, previous: date) -> Decision:
    """The day before never ran: name the missing days, and the command that runs them."""
    last = view.last_completed
    first_missing = view.first_day if last is None else last + timedelta(days=1)
    since = (
        f"the store's first day {view.first_day} never completed"
        if last is None
        else (f"the last completed business day is {last}")
    )
    return Decision(
        REFUSE,
        "gap",
        f"business day {view.day} cannot run: {since}, and {_days(first_missing, previous)} "
        f"did not run (or did not complete). Run them first, in order: "
        f"`{backfill_command(first_missing, previous)}`",
    )
