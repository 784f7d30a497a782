"""The daily DAG under Airflow's real scheduler (api-server, dag-processor and scheduler as
processes, tests/airflow_server.py), driven through the REST API: a triggered day, the same day
run again, a backfill of two days. They share one Airflow start-up with every other test module
that uses the ``airflow_server`` fixture."""

from __future__ import annotations

import hashlib
import itertools
from datetime import date, datetime, timedelta

import pytest
from sqlalchemy import func, select

pytestmark = pytest.mark.scheduler
pytest_plugins = ["airflow_server"]

HISTORY_START = date(2025, 11, 1)
DAY = date(2025, 12, 11)  # triggered, then run again
BACKFILL = (date(2025, 12, 12), date(2025, 12, 13))  # backfilled after DAY
TASKS = {
    "check_crm_schema",
    "open_business_day",
    "intake_orders",
    "update_segments[shard 1/1]",  # mapped over the customer shards (scale.shards: 1)
    "reduce_segments",
    "lint_templates",
    "plan_shard[shard 1/1]",  # scale.shards: 1
    "plan_campaigns",
    "close_business_day",
}
# What runs did, not the data they leave: one row per intake attempt, the calendar's attempts.
AUDIT_TABLES = {"intake_runs", "business_days"}
# When a day's segments were last computed and its messages last rendered: a re-run stamps them anew.
RESTAMPED = {"computed_at", "rendered_at"}


@pytest.fixture(scope="module")
def crm(airflow_server):
    """A small generated demo shop in the harness's shop database, as it stood at the end of the
    last day these tests run; the CRM store migrated and loaded with the history before ``DAY``
    (one intake, then that evening's segments, as ``make demo`` does). The DAG is unpaused for
    the module: runs of a paused DAG stay queued."""
    from huitouke.config import load_settings
    from huitouke.demo_shop import ShopSpec, generate_shop, shop_as_of, write_shop
    from huitouke.pipeline import day_bounds, intake_orders, update_segments
    from huitouke.store.connection import make_engine
    from huitouke.store.migrate import upgrade

    data = airflow_server.data
    shop = generate_shop(
        ShopSpec(customers=2_000, start=HISTORY_START, end=BACKFILL[-1], seed=12, bad_row_share=0.01)
    )
    write_shop(shop_as_of(shop, BACKFILL[-1]), make_engine(data.shop_url))
    engine = make_engine(data.crm_url)
    upgrade(engine)
    with data.as_current():
        settings = load_settings()
        start, _ = day_bounds(HISTORY_START, settings)
        evening, end = day_bounds(DAY - timedelta(days=1), settings)
        intake_orders(start, end, settings)
        update_segments(evening, settings)
    airflow_server.api.unpause()
    yield engine
    airflow_server.api.pause()
    engine.dispose()


@pytest.fixture(scope="module")
def day_run(airflow_server, crm) -> dict:
    """Business day ``DAY`` triggered through the REST API, waited for."""
    api = airflow_server.api
    run = api.trigger_day(DAY)
    return api.wait_for_run(run["dag_run_id"])


def _at(value: str) -> datetime:
    return datetime.fromisoformat(value)


def _rows_for(crm, table, day: date) -> int:
    with crm.connect() as conn:
        return len(conn.execute(select(table).where(table.c.business_date == day)).all())


def store_fingerprint(crm) -> dict[str, tuple[int, str]]:
    """Rows and a checksum of every table of the CRM store, every column but the re-run stamps,
    the audit of intakes aside."""
    from huitouke.store.schema import metadata

    fingerprint = {}
    with crm.connect() as conn:
        for table in metadata.sorted_tables:
            if table.name in AUDIT_TABLES:
                continue
            columns = [c for c in table.columns if c.name not in RESTAMPED]
            rows = sorted(repr(tuple(row)) for row in conn.execute(select(*columns)))
            fingerprint[table.name] = (len(rows), hashlib.sha256("\n".join(rows).encode()).hexdigest()[:16])
    return fingerprint


def test_a_triggered_business_day_runs_every_task_and_stores_that_day(airflow_server, day_run, crm):
    from huitouke.store.schema import campaign_days, intake_runs, segment_kpis

    api = airflow_server.api
    assert day_run["state"] == "success"
    assert day_run["run_type"] == "manual"
    assert api.business_day(day_run) == DAY
    assert _at(day_run["logical_date"]) == _at(day_run["data_interval_start"]) == api.day_start(DAY)
    assert _at(day_run["data_interval_end"]) == api.day_start(DAY + timedelta(days=1))
    states = api.task_states(day_run["dag_run_id"])
    assert TASKS | {"evaluate_campaigns"} <= set(states)
    assert any(name.startswith("render_messages[") for name in states)  # one per planned campaign
    assert set(states.values()) == {"success"}, states
    assert _rows_for(crm, intake_runs, DAY) == 1
    assert _rows_for(crm, segment_kpis, DAY) == 1
    assert _rows_for(crm, campaign_days, DAY) > 0
    assert f"Order intake for {DAY}" in api.task_log(day_run["dag_run_id"], "intake_orders")
    assert f"Segments for {DAY}" in api.task_log(day_run["dag_run_id"], "update_segments", map_index=0)
    assert f"Segments for {DAY}" in api.task_log(day_run["dag_run_id"], "reduce_segments")


def test_the_store_writers_of_a_day_run_one_at_a_time(airflow_server, day_run):
    """The pool of one slot serializes the store's writers, mapped renders included: under the real
    scheduler no two of them were ever running at once."""
    from airflow_server import STORE_POOL

    writers = [
        ti for ti in airflow_server.api.task_instances(day_run["dag_run_id"]) if ti["pool"] == STORE_POOL
    ]
    assert len([ti for ti in writers if ti["task_id"] == "render_messages"]) > 1  # parallel candidates
    spans = sorted((_at(ti["start_date"]), _at(ti["end_date"])) for ti in writers)
    overlaps = [(a, b) for a, b in itertools.pairwise(spans) if b[0] < a[1]]
    assert not overlaps, overlaps


def test_running_the_day_again_leaves_the_store_as_it_was(airflow_server, day_run, crm):
    api = airflow_server.api
    run_id = day_run["dag_run_id"]
    before = store_fingerprint(crm)
    assert api.clear_run(run_id)["state"] == "queued"
    again = api.wait_for_run(run_id)
    assert again["state"] == "success"
    assert _at(again["start_date"]) > _at(day_run["end_date"])  # really run again, the same run
    tries = {ti["task_id"]: ti["try_number"] for ti in api.task_instances(run_id)}
    assert set(tries.values()) == {2}, tries
    assert set(api.task_states(run_id).values()) == {"success"}
    assert store_fingerprint(crm) == before
    from huitouke.store.schema import business_days, intake_runs

    assert _rows_for(crm, intake_runs, DAY) == 2  # the first attempt's audit is kept beside the second
    with crm.connect() as conn:
        calendar = conn.execute(select(business_days).where(business_days.c.business_date == DAY)).one()
    assert (calendar.status, calendar.attempts, calendar.run_type) == ("completed", 2, "manual")


def test_a_backfill_runs_exactly_the_days_asked_one_at_a_time_in_date_order(airflow_server, day_run, crm):
    from huitouke.store.schema import intake_runs, segment_kpis

    api = airflow_server.api
    first, last = BACKFILL
    assert api.backfill_days(first, last) == [first, last]  # a dry run: those days and no others
    runs = api.wait_for_backfill(api.backfill(first, last, max_active_runs=1))
    assert [api.business_day(run) for run in runs] == [first, last]
    for run, day in zip(runs, BACKFILL, strict=True):
        assert run["state"] == "success" and run["run_type"] == "backfill"
        assert _at(run["logical_date"]) == _at(run["data_interval_start"]) == api.day_start(day)
        assert _at(run["data_interval_end"]) == api.day_start(day + timedelta(days=1))
        assert set(api.task_states(run["dag_run_id"]).values()) == {"success"}
        assert _rows_for(crm, intake_runs, day) == 1 and _rows_for(crm, segment_kpis, day) == 1
    assert _at(runs[0]["end_date"]) <= _at(runs[1]["start_date"])  # one after the other
    from huitouke.store.schema import outbox

    with crm.connect() as conn:
        rendered = conn.execute(
            select(outbox.c.status, outbox.c.last_error).where(outbox.c.business_date.in_(BACKFILL))
        ).all()
    assert rendered and {status for status, _ in rendered} == {"stale"}  # backfills never send
    assert all("backfill" in reason for _, reason in rendered)


def _nothing_stored_for(crm, day: date) -> bool:
    from huitouke.store.schema import campaign_days, intake_runs, segment_kpis

    return all(_rows_for(crm, table, day) == 0 for table in (intake_runs, segment_kpis, campaign_days))


def test_a_day_after_a_gap_fails_at_once_naming_the_missing_days(airflow_server, day_run, crm):
    """After the backfill the last completed day is BACKFILL[-1]; a day three days later does not
    start: its first stateful task fails without retries, naming the two missing days and the
    command that runs them; nothing of the day is stored."""
    api = airflow_server.api
    gap_day = BACKFILL[-1] + timedelta(days=3)
    run = api.wait_for_run(api.trigger_day(gap_day)["dag_run_id"])
    assert run["state"] == "failed"
    states = api.task_states(run["dag_run_id"])
    assert states["open_business_day"] == "failed" and states["intake_orders"] == "upstream_failed"
    log = api.task_log(run["dag_run_id"], "open_business_day")
    assert "2025-12-14 .. 2025-12-15 (2 days) did not run" in log
    assert "huitouke backfill --from 2025-12-14 --to 2025-12-15" in log
    assert _nothing_stored_for(crm, gap_day)


def test_a_stale_day_stops_before_anything_is_written(airflow_server, day_run, crm):
    """The shop's data ends with BACKFILL[-1]: the next day may run by the calendar, but its
    source is not past the day (and has no order): intake stops it, nothing is written, no
    message planned."""
    api = airflow_server.api
    stale_day = BACKFILL[-1] + timedelta(days=1)
    run = api.wait_for_run(api.trigger_day(stale_day)["dag_run_id"])
    assert run["state"] == "failed"
    states = api.task_states(run["dag_run_id"])
    assert states["open_business_day"] == "success" and states["intake_orders"] == "failed"
    assert states["plan_campaigns"] == "upstream_failed"
    log = api.task_log(run["dag_run_id"], "intake_orders")
    assert "business day 2025-12-14 looks incomplete" in log and "accept_incomplete_day" in log
    assert _nothing_stored_for(crm, stale_day)
    from huitouke.store.schema import business_days

    with crm.connect() as conn:
        day = conn.execute(select(business_days).where(business_days.c.business_date == stale_day)).one()
    assert day.status == "open" and "looks incomplete" in day.stop_reason  # the next day's wait says it


def test_unpausing_a_year_after_the_data_plans_nothing(airflow_server, day_run, crm):
    """The unpause trap: with scheduled runs on (catchup off) the scheduler runs the latest
    complete business day, long after the shop's data ends. The calendar stops that run at its
    first stateful task, naming the missing days; no segment moves, no message is planned."""
    from airflow_server import wait_until

    from huitouke.store.schema import outbox

    api = airflow_server.api
    with crm.connect() as conn:
        queued = conn.scalar(select(func.count()).select_from(outbox))
    airflow_server.restart_scheduler(scheduled_runs=True)
    try:
        scheduled = wait_until(
            "the scheduler's run for the latest day",
            lambda: api.runs(run_type="scheduled"),
            120,
            airflow_server.report,
        )[-1]
        run = api.wait_for_run(scheduled["dag_run_id"])
    finally:
        api.pause()
        airflow_server.restart_scheduler(scheduled_runs=False)
    latest = api.business_day(run)
    assert latest > BACKFILL[-1] + timedelta(days=300)  # yesterday, a year after the data
    assert run["state"] == "failed"
    assert api.task_states(run["dag_run_id"])["open_business_day"] == "failed"
    assert "huitouke backfill --from 2025-12-14" in api.task_log(run["dag_run_id"], "open_business_day")
    assert _nothing_stored_for(crm, latest)
    with crm.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(outbox)) == queued


def test_huitouke_backfill_asks_airflow_for_exactly_the_shop_days(airflow_server, crm):
    """The data engineer's command, against the running Airflow: a dry run of business days
    2025-12-12 .. 12-13 selects exactly their two runs (logical dates at 00:00 shop time), none on
    either side."""
    import subprocess
    import sys

    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "huitouke.cli",
            "backfill",
            "--from",
            "2025-12-12",
            "--to",
            "2025-12-13",
            "--dry-run",
        ],
        env=airflow_server.env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert "--from-date 2025-12-12T00:00:00+08:00" in out and "--max-active-runs 1" in out
    runs = [
        line.split("|")[1].strip()
        for line in out.split("Runs to be attempted")[-1].splitlines()
        if line.startswith("| 20")
    ]
    # business days 12-12 and 12-13 start at 2025-12-12 00:00 +08:00 and 2025-12-12 16:00 UTC
    assert runs == ["2025-12-12 00:00:00+08:00", "2025-12-12 16:00:00+00:00"], out
