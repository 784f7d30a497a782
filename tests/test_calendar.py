"""The daily run's calendar: each business day's stateful stages run once, in date order.

The decision over plain data (every case of the contract), then the same through the store
(SQLite and PostgreSQL): opening, re-running, waiting, refusing a day after a gap with the command
that runs the missing days, the audit of attempts, and the store migrated from before the calendar.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pytest
from sqlalchemy import insert, select

from huitouke.calendar import persist
from huitouke.calendar.backfill import backfill_args
from huitouke.calendar.daily import DayRefused, DayWaits, RunIdentity, close_day, open_day, stop_day
from huitouke.calendar.rules import COMPLETED, OPEN, REFUSE, RUN, WAIT, CalendarView, decide
from huitouke.store.schema import business_days

D = date(2025, 12, 16)


def _view(status=None, previous=None, first=date(2025, 12, 1), last=None, day=D):
    return CalendarView(
        day=day, status=status, previous_status=previous, first_day=first, last_completed=last
    )


@pytest.mark.parametrize(
    ("view", "action", "kind"),
    [
        (_view(first=None), RUN, "first"),
        (_view(status=OPEN, first=D), RUN, "first"),  # the first day, its first attempt failed
        (_view(previous=COMPLETED, last=D - timedelta(days=1)), RUN, "next"),
        (_view(status=OPEN, previous=COMPLETED, last=D - timedelta(days=1)), RUN, "resume"),
        (_view(status=COMPLETED, previous=COMPLETED, last=D + timedelta(days=5)), RUN, "rerun"),
        (_view(previous=OPEN, last=D - timedelta(days=2)), WAIT, "wait"),
        (_view(last=D - timedelta(days=3)), REFUSE, "gap"),
        (_view(first=D + timedelta(days=1), last=D + timedelta(days=1)), REFUSE, "before_start"),
        (_view(first=D + timedelta(days=3), last=None), REFUSE, "before_start"),
        (_view(previous=COMPLETED, last=D + timedelta(days=2)), REFUSE, "out_of_order"),
    ],
)
def test_each_case_of_the_contract(view, action, kind):
    decision = decide(view)
    assert (decision.action, decision.kind) == (action, kind)


def test_a_day_after_a_gap_names_the_missing_days_and_the_command_that_runs_them():
    decision = decide(_view(last=date(2025, 12, 13)))
    assert "2025-12-14 .. 2025-12-15 (2 days) did not run" in decision.reason
    assert "`huitouke backfill --from 2025-12-14 --to 2025-12-15`" in decision.reason
    one = decide(_view(last=date(2025, 12, 14)))
    assert "and 2025-12-15 did not run" in one.reason
    assert "--from 2025-12-15 --to 2025-12-15" in one.reason


def test_the_days_of_a_store_whose_first_day_never_completed_are_missing_from_that_day():
    decision = decide(_view(first=date(2025, 12, 10), last=None))
    assert decision.kind == "gap"
    assert "--from 2025-12-10 --to 2025-12-15" in decision.reason


# ------------------------------------------------------------------------------------- the store


def test_days_open_and_complete_in_order_through_the_store(store_engine):
    first = open_day(store_engine, D, RunIdentity("scheduled__1", "scheduled"))
    assert (first.kind, first.attempt) == ("first", 1)
    with pytest.raises(DayWaits, match="2025-12-16, the day before, has not completed"):
        open_day(store_engine, D + timedelta(days=1))
    close_day(store_engine, D)
    following = open_day(store_engine, D + timedelta(days=1), RunIdentity("manual__2", "manual"))
    assert following.kind == "next"
    close_day(store_engine, D + timedelta(days=1))
    with pytest.raises(
        DayRefused, match=r"2025-12-18 did not run.*huitouke backfill --from 2025-12-18 --to 2025-12-18"
    ):
        open_day(store_engine, D + timedelta(days=3))


def test_a_rerun_counts_its_attempt_and_keeps_the_day_completed(store_engine):
    open_day(store_engine, D)
    close_day(store_engine, D)
    again = open_day(store_engine, D, RunIdentity("backfill__x", "backfill"))
    assert (again.kind, again.attempt) == ("rerun", 2)
    with store_engine.connect() as conn:
        row = conn.execute(select(business_days).where(business_days.c.business_date == D)).one()
    assert (row.status, row.attempts, row.run_type) == (COMPLETED, 2, "backfill")


def test_a_day_stopped_on_stale_data_stays_open_and_the_next_day_waits_saying_why(store_engine):
    open_day(store_engine, D)
    stop_day(store_engine, D, "business day 2025-12-16 looks incomplete: no export file")
    with pytest.raises(DayWaits) as waited:
        open_day(store_engine, D + timedelta(days=1))
    message = str(waited.value)
    assert "2025-12-16, the day before, stopped: business day 2025-12-16 looks incomplete" in message
    assert "accept_incomplete_day" in message
    again = open_day(store_engine, D, RunIdentity("manual__3", "manual"))  # cleared once fixed
    assert (again.kind, again.attempt) == ("first", 2)
    with store_engine.connect() as conn:
        assert persist.read_view(conn, D + timedelta(days=1)).previous_stop_reason is None


def test_a_day_never_opened_cannot_be_completed(store_engine):
    with pytest.raises(DayRefused, match="was never opened"):
        close_day(store_engine, D)


def test_the_calendar_reads_what_the_store_holds(store_engine):
    with store_engine.begin() as conn:
        conn.execute(
            insert(business_days),
            [
                {
                    "business_date": D - timedelta(days=2),
                    "status": COMPLETED,
                    "attempts": 1,
                    "opened_at": datetime(2025, 12, 15),
                },
                {
                    "business_date": D - timedelta(days=1),
                    "status": OPEN,
                    "attempts": 1,
                    "opened_at": datetime(2025, 12, 16),
                },
            ],
        )
    with store_engine.connect() as conn:
        view = persist.read_view(conn, D)
    assert view == CalendarView(D, None, OPEN, D - timedelta(days=2), D - timedelta(days=2))


# ----------------------------------------------------------------------------------- backfills


def test_a_backfill_asks_airflow_for_exactly_the_shop_days_one_at_a_time():
    args = backfill_args(date(2025, 12, 12), date(2025, 12, 13), "Asia/Shanghai")
    assert args[args.index("--from-date") + 1] == "2025-12-12T00:00:00+08:00"
    assert args[args.index("--to-date") + 1] == "2025-12-13T00:00:00+08:00"
    assert args[args.index("--max-active-runs") + 1] == "1"
    assert args[args.index("--reprocess-behavior") + 1] == "completed"
    accepted = backfill_args(D, D, "Asia/Shanghai", accept_incomplete=True, dry_run=True)
    assert '{"accept_incomplete_day": true}' in accepted and accepted[-1] == "--dry-run"
    with pytest.raises(ValueError, match="before --from"):
        backfill_args(D, D - timedelta(days=1), "Asia/Shanghai")
