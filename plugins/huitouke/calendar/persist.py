"""The calendar's edge with the store: the ``business_days`` rows around one day, and their moves."""

from __future__ import annotations

from datetime import date, datetime, timedelta

from sqlalchemy import Connection, func, insert, select, update

from huitouke.calendar.rules import COMPLETED, OPEN, CalendarView
from huitouke.store.rows import lock_writers
from huitouke.store.schema import business_days, segment_kpis

__all__ = ["day_computed", "lock_calendar", "mark_completed", "mark_opened", "mark_stopped", "read_view"]

_days = business_days.c


def lock_calendar(conn: Connection) -> None:
    """One writer of the calendar at a time (two runs cannot open days at once)."""
    lock_writers(conn, business_days)


def _status(conn: Connection, day: date) -> tuple[str | None, str | None]:
    """The day's status and stop reason (None, None: never opened)."""
    row = conn.execute(select(_days.status, _days.stop_reason).where(_days.business_date == day)).first()
    return (row.status, row.stop_reason) if row else (None, None)


def read_view(conn: Connection, day: date) -> CalendarView:
    """The stored calendar around ``day``."""
    first_day = conn.scalar(select(func.min(_days.business_date)))
    last_completed = conn.scalar(select(func.max(_days.business_date)).where(_days.status == COMPLETED))
    previous_status, previous_stop_reason = _status(conn, day - timedelta(days=1))
    return CalendarView(
        day=day,
        status=_status(conn, day)[0],
        previous_status=previous_status,
        first_day=first_day,
        last_completed=last_completed,
        previous_stop_reason=previous_stop_reason,
    )


def mark_opened(
    conn: Connection, view: CalendarView, run_id: str | None, run_type: str | None, now: datetime
) -> int:
    """Record an attempt at ``view.day``: a new row (open), or one more attempt on its row (a
    completed day stays completed while it runs again). Returns the attempt's number."""
    if view.status is None:
        conn.execute(
            insert(business_days).values(
                business_date=view.day,
                status=OPEN,
                attempts=1,
                run_id=run_id,
                run_type=run_type,
                opened_at=now,
            )
        )
        return 1
    conn.execute(
        update(business_days)
        .where(_days.business_date == view.day)
        .values(
            attempts=_days.attempts + 1, run_id=run_id, run_type=run_type, opened_at=now, stop_reason=None
        )
    )
    return int(conn.scalar(select(_days.attempts).where(_days.business_date == view.day)))


def mark_stopped(conn: Connection, day: date, reason: str) -> None:
    """The day's attempt stopped before completing: it stays open, with the reason."""
    conn.execute(update(business_days).where(_days.business_date == day).values(stop_reason=reason))


def mark_completed(conn: Connection, day: date, now: datetime) -> bool:
    """The stateful stages of ``day`` are done. False when the day was never opened."""
    done = conn.execute(
        update(business_days).where(_days.business_date == day).values(status=COMPLETED, completed_at=now)
    )
    return done.rowcount == 1


def day_computed(conn: Connection, day: date) -> bool:
    """Whether the day's stateful stages ran: the calendar opened it, nothing stopped it, and its
    segments were computed. What delivery asks before it sends anything of the day."""
    status, stop_reason = _status(conn, day)
    if status is None or stop_reason:
        return False
    return conn.scalar(select(func.count()).where(segment_kpis.c.business_date == day)) > 0
