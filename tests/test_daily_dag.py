"""The daily DAG end to end through Airflow (``dag.test``): a generated shop in its own database,
read by the SQL source, over several consecutive business days, then a day run again."""

from __future__ import annotations

import json
from datetime import date, timedelta

import pandas as pd
import pytest
from sqlalchemy import func, select

pytestmark = pytest.mark.airflow

HISTORY_START = date(2025, 11, 1)
DAYS = [date(2025, 12, 11), date(2025, 12, 12), date(2025, 12, 13)]


@pytest.fixture(scope="module")
def shop(airflow_db):
    """A small demo shop in the shop_db database; the CRM store migrated and loaded with the
    history before the first DAG day, from the shop as it stood then."""
    from huitouke.config import load_settings
    from huitouke.demo_shop import ShopSpec, generate_shop, shop_as_of, write_shop
    from huitouke.pipeline import day_bounds, intake_orders
    from huitouke.store.connection import engine_for
    from huitouke.store.migrate import upgrade

    shop = generate_shop(
        ShopSpec(customers=3_000, start=HISTORY_START, end=DAYS[-1], seed=11, bad_row_share=0.01)
    )
    write_shop(shop_as_of(shop, DAYS[0] - timedelta(days=1)), engine_for("shop_db"))
    upgrade(engine_for("crm_db"))
    settings = load_settings()
    start, _ = day_bounds(HISTORY_START, settings)
    end, _ = day_bounds(DAYS[0], settings)
    intake_orders(start, end, settings)
    return shop


@pytest.fixture(scope="module")
def crm():
    from huitouke.store.connection import engine_for

    return engine_for("crm_db")


@pytest.fixture(scope="module")
def daily_runs(shop):
    """Each business day: the shop database as it stood at the end of that day, then the DAG."""
    from huitouke.dagrun import load_daily_dag, run_business_days
    from huitouke.demo_shop import shop_as_of, write_shop
    from huitouke.store.connection import engine_for

    dag = load_daily_dag()
    states = {}
    for day in DAYS:
        write_shop(shop_as_of(shop, day), engine_for("shop_db"))
        states.update(run_business_days([day], dag=dag))
    return states


@pytest.fixture(scope="module")
def final_shop(shop):
    """The shop's good orders as they stood at the end of the last day."""
    from huitouke.demo_shop import shop_as_of

    orders = shop_as_of(shop, DAYS[-1]).orders
    return orders[~orders["order_id"].isin(set(shop.bad_rows["order_id"]))]


def test_every_day_runs_successfully(daily_runs):
    assert daily_runs == {day: "success" for day in DAYS}


def test_each_day_records_new_orders_status_updates_and_quarantine(daily_runs, crm):
    from huitouke.store.schema import intake_runs

    with crm.connect() as conn:
        runs = {
            r.business_date: r
            for r in conn.execute(select(intake_runs).order_by(intake_runs.c.attempt)).all()
        }
    for day in DAYS:
        run = runs[day]
        assert run.inserted > 0, day  # orders paid that day
        assert run.updated > 0, day  # earlier orders shipped, completed, refunded that day
        assert run.orders_read == run.inserted + run.updated + run.unchanged
    assert runs[date(2025, 12, 12)].inserted > runs[date(2025, 12, 11)].inserted  # the 12.12 peak


def test_the_store_holds_exactly_the_good_orders_with_their_current_status(daily_runs, crm, final_shop):
    from huitouke.store.schema import orders

    with crm.connect() as conn:
        stored = dict(conn.execute(select(orders.c.order_id, orders.c.status)).all())
    assert stored == dict(zip(final_shop["order_id"], final_shop["status"], strict=True))


def test_revenue_counts_only_paid_orders_and_matches_the_shop(daily_runs, crm, final_shop):
    from huitouke.records import PAID_STATUSES
    from huitouke.store.schema import orders

    with crm.connect() as conn:
        revenue = conn.scalar(
            select(func.sum(orders.c.amount_cents)).where(orders.c.status.in_(PAID_STATUSES))
        )
    paid = final_shop[final_shop["status"].isin(PAID_STATUSES)]
    assert revenue == round(pd.to_numeric(paid["pay_amount"]).sum() * 100)


def test_every_bad_row_is_in_quarantine_with_a_reason(daily_runs, crm, shop):
    from huitouke.demo_shop import shop_as_of
    from huitouke.store.schema import quarantine

    seen = set(shop_as_of(shop, DAYS[-1]).orders["order_id"])
    bad = shop.bad_rows[shop.bad_rows["order_id"].isin(seen)]
    assert len(bad) > 0
    with crm.connect() as conn:
        rows = conn.execute(select(quarantine.c.order_id, quarantine.c.reason)).all()
    assert {r.order_id for r in rows} >= set(bad["order_id"])
    reason_of = {
        "missing_customer_id": "missing_customer",
        "non_numeric_amount": "invalid_amount",
        "negative_amount": "negative_amount",
        "bad_paid_at": "unparseable_time",
        "unknown_status": "unknown_status",
    }
    stored = {(r.order_id, r.reason) for r in rows}
    for order_id, kind in zip(bad["order_id"], bad["kind"], strict=True):
        assert (order_id, reason_of[kind]) in stored


def test_refunds_change_the_status_and_never_add_an_order(daily_runs, crm, final_shop):
    from huitouke.store.schema import intake_runs, orders

    refunded = set(final_shop.loc[final_shop["status"] == "refunded", "order_id"])
    with crm.connect() as conn:
        stored = dict(conn.execute(select(orders.c.order_id, orders.c.status)).all())
        updates = conn.scalar(
            select(func.sum(intake_runs.c.updated)).where(intake_runs.c.business_date.in_(DAYS))
        )
    assert refunded and all(stored[o] == "refunded" for o in refunded)
    assert len(stored) == len(final_shop)
    assert updates > 0


def test_running_a_day_again_changes_nothing(daily_runs, crm):
    from huitouke.dagrun import run_business_days
    from huitouke.store.schema import intake_runs, order_lines, orders, quarantine

    def snapshot():
        with crm.connect() as conn:
            return (
                conn.scalar(select(func.count()).select_from(orders)),
                conn.scalar(select(func.count()).select_from(order_lines)),
                conn.scalar(select(func.count()).select_from(quarantine)),
                conn.scalar(select(func.sum(orders.c.amount_cents))),
                tuple(
                    conn.execute(select(orders.c.order_id, orders.c.status).order_by(orders.c.order_id)).all()
                ),
            )

    before = snapshot()
    assert run_business_days([DAYS[1]]) == {DAYS[1]: "success"}
    assert snapshot() == before
    with crm.connect() as conn:
        first, again = conn.execute(
            select(intake_runs).where(intake_runs.c.business_date == DAYS[1]).order_by(intake_runs.c.attempt)
        ).all()
    assert again.inserted == 0 and again.updated == 0 and again.unchanged == again.orders_read > 0
    assert first.attempt == 1 and first.inserted > 0  # the first attempt's audit is kept


def _segment_snapshot(crm):
    from huitouke.store.schema import customer_state, segment_history, segment_kpis, segment_transitions

    history = [c for c in segment_history.columns if c.name != "segment_id"]  # ids are the store's business
    with crm.connect() as conn:
        return (
            tuple(conn.execute(select(customer_state).order_by(customer_state.c.customer_id)).all()),
            tuple(conn.execute(select(*history).order_by(*history[:2])).all()),
            tuple(conn.execute(select(segment_transitions).order_by(*segment_transitions.primary_key)).all()),
            tuple(conn.execute(select(segment_kpis.c.business_date, segment_kpis.c.customers)).all()),
        )


def test_segments_are_computed_every_day_with_kpis_and_transitions(daily_runs, crm):
    from huitouke.store.schema import segment_kpis, segment_transitions

    with crm.connect() as conn:
        kpis = {r.business_date: r for r in conn.execute(select(segment_kpis)).all()}
        transitions = conn.execute(select(segment_transitions)).all()
    assert set(DAYS) <= set(kpis)
    last = kpis[DAYS[-1]]
    assert last.customers > 2_000 and 0 < last.repeat_rate < 1 and 0 <= last.churn_rate < 1
    assert {"value_tiers", "lifecycle", "member_tiers"} <= set(json.loads(last.figures))
    assert any(t.from_lifecycle == "none" and t.to_lifecycle == "new" for t in transitions)


def test_the_daily_state_equals_a_full_rebuild_from_the_store(daily_runs, crm):
    from huitouke.segments import build_state, load_segment_settings
    from huitouke.segments.persist import read_orders, read_state

    with crm.connect() as conn:
        stored = read_state(conn)
        orders, lines = read_orders(conn)
    rebuilt = build_state(orders, lines, settings=load_segment_settings(), until=DAYS[-1])
    pd.testing.assert_frame_equal(stored, rebuilt, check_dtype=False)


def test_segment_history_is_compact_and_answers_for_any_day(daily_runs, crm):
    from huitouke.segments import LABEL_COLUMNS, SEGMENT_COLUMNS, build_state, classify, load_segment_settings
    from huitouke.segments.persist import read_orders, segments_on
    from huitouke.store.schema import segment_history

    with crm.connect() as conn:
        rows = conn.execute(select(segment_history.c.customer_id, segment_history.c.valid_to)).all()
        today = segments_on(conn, DAYS[-1])
        first_day = segments_on(conn, DAYS[0])
        orders, lines = read_orders(conn)
    customers = {r.customer_id for r in rows}
    assert len(rows) < len(customers) * 2  # ranges, not a row per customer per day
    open_rows = [r.customer_id for r in rows if r.valid_to is None]
    assert len(open_rows) == len(set(open_rows))
    rules = load_segment_settings()
    expected = classify(build_state(orders, lines, settings=rules, until=DAYS[-1]), DAYS[-1], rules)
    cols = ["customer_id", *SEGMENT_COLUMNS]
    expected = expected.astype({column: "str" for column in LABEL_COLUMNS})  # classify: categoricals
    pd.testing.assert_frame_equal(
        today[cols].reset_index(drop=True), expected[cols].reset_index(drop=True), check_dtype=False
    )
    assert 0 < len(first_day) < len(today)  # fewer customers on the first day


def test_running_the_last_day_again_gives_the_same_segments(daily_runs, crm):
    from huitouke.dagrun import run_business_days

    before = _segment_snapshot(crm)
    assert run_business_days([DAYS[-1]]) == {DAYS[-1]: "success"}
    assert _segment_snapshot(crm) == before


def _campaign_snapshot(crm):
    from huitouke.store.schema import campaign_days, campaign_entries, campaign_waves, coupons, outbox

    def rows(table, skip=()):
        columns = [
            c for c in table.columns if c.name not in skip and c.name not in ("message_id", "entry_id")
        ]
        with crm.connect() as conn:
            return sorted(tuple(map(str, r)) for r in conn.execute(select(*columns)).all())

    return (
        rows(campaign_entries),
        rows(campaign_waves),
        rows(coupons),
        rows(campaign_days),
        rows(outbox),
    )


def test_campaigns_are_planned_and_queued_every_day_and_holdouts_get_nothing(daily_runs, crm):
    from huitouke.store.schema import campaign_days, campaign_waves, outbox

    with crm.connect() as conn:
        days = pd.DataFrame(conn.execute(select(campaign_days)).mappings().all())
        waves = pd.DataFrame(conn.execute(select(campaign_waves)).mappings().all())
        messages = pd.DataFrame(conn.execute(select(outbox)).mappings().all())
    assert set(days["business_date"]) == set(DAYS)
    assert (days["status"] == "queued").all()
    # Queued, then delivery's verdict: these business days ran long after the day after them, so
    # nothing of them was sent and every message ended stale.
    assert len(messages) > 50 and (messages["status"] == "stale").all()
    assert messages["last_error"].str.contains("too late to send").all()
    key = ["campaign", "customer_id", "entered_on", "wave"]
    sent = messages.merge(waves, on=key, how="left", validate="many_to_one")
    assert (sent["outcome"] == "treated").all() and (sent["arm"] == "treatment").all()
    assert (waves["outcome"] == "held_out").sum() > 0
    assert not messages.duplicated([*key, "channel"]).any()
    queued = messages.groupby(["business_date", "campaign"]).size()
    for row in days.itertuples():
        assert queued.get((row.business_date, row.campaign), 0) == row.messages_queued


def test_running_the_last_day_again_queues_nothing_new(daily_runs, crm):
    from huitouke.dagrun import run_business_days

    before = _campaign_snapshot(crm)
    assert run_business_days([DAYS[-1]]) == {DAYS[-1]: "success"}
    after = _campaign_snapshot(crm)
    assert after[:3] == before[:3] and after[4] == before[4]


@pytest.mark.postgres
def test_the_daily_dag_runs_against_a_postgresql_store(daily_runs, crm, postgres_server, monkeypatch):
    """The same DAG with Connection crm_db pointing at PostgreSQL loads the same orders, same statuses."""
    from huitouke.dagrun import load_daily_dag, run_business_days
    from huitouke.store.connection import engine_for
    from huitouke.store.migrate import upgrade
    from huitouke.store.schema import orders

    url = postgres_server.create_database("crm_dag_e2e")
    monkeypatch.setenv("AIRFLOW_CONN_CRM_DB", url.replace("postgresql+psycopg2://", "postgresql://"))
    pg = engine_for("crm_db")
    assert pg.dialect.name == "postgresql"
    upgrade(pg)
    assert run_business_days(DAYS[-2:], dag=load_daily_dag()) == {day: "success" for day in DAYS[-2:]}
    with pg.connect() as conn:
        on_pg = dict(conn.execute(select(orders.c.order_id, orders.c.status)).all())
    with crm.connect() as conn:
        on_sqlite = dict(
            conn.execute(
                select(orders.c.order_id, orders.c.status).where(orders.c.order_id.in_(list(on_pg)))
            ).all()
        )
    assert len(on_pg) > 300 and on_pg == on_sqlite


def test_segments_on_a_past_day_from_the_command_line(daily_runs, capsys):
    from huitouke.cli import main

    assert main(["segments", "on", DAYS[0].isoformat()]) == 0
    out = capsys.readouterr().out
    assert f"on {DAYS[0]}" in out and "one_time" in out
    assert main(["segments", "on", "2020-01-01"]) == 1


def test_templates_preview_for_a_stored_customer(daily_runs, crm, capsys):
    from huitouke.cli import main
    from huitouke.store.schema import customers, outbox

    with crm.connect() as conn:
        cid = conn.scalar(select(outbox.c.customer_id).where(outbox.c.campaign == "thank_you").limit(1))
        name = conn.scalar(select(customers.c.name).where(customers.c.customer_id == cid))
    assert main(["templates", "preview", "thank_you_returning", "--customer", cid, "--channel", "sms"]) == 0
    out = capsys.readouterr().out
    assert "【" in out and "segment(s)" in out and (name or "亲") in out
    assert main(["templates", "preview", "thank_you_new", "--customer", "no-such-customer"]) == 1
    assert "no customer" in capsys.readouterr().err


def test_the_planner_reads_the_same_segments_from_the_snapshot_as_from_the_store(
    daily_runs, crm, monkeypatch
):
    from huitouke.campaigns import load_playbook
    from huitouke.campaigns.daily import _segments_of
    from huitouke.segments import persist as segment_store
    from huitouke.segments import snapshot

    loaded = []
    real_load = snapshot.load
    monkeypatch.setattr(snapshot, "load", lambda *args: loaded.append(real_load(*args)) or loaded[-1])
    playbook = load_playbook()
    with crm.connect() as conn:
        day = segment_store.latest_run(conn).business_date
        from_snapshot = _segments_of(conn, day, playbook)
    assert len(loaded) == 1 and loaded[0] is not None  # the snapshot was there and matched
    with crm.connect() as conn:
        monkeypatch.setenv("HUITOUKE_CACHE_DIR", "off")
        from_tables = _segments_of(conn, day, playbook)
    pd.testing.assert_frame_equal(from_snapshot, from_tables)


def test_a_day_after_a_gap_fails_at_the_calendar_and_writes_nothing(daily_runs, crm):
    """The calendar: a day whose predecessor never ran does not start (issue: "a skipped day is
    lost for good"); the failure names the missing day, and nothing of the day is stored."""
    from huitouke.dagrun import run_business_days
    from huitouke.store.schema import business_days, intake_runs

    gap_day = DAYS[-1] + timedelta(days=2)
    before = _segment_snapshot(crm)
    assert run_business_days([gap_day]) == {gap_day: "failed"}
    assert _segment_snapshot(crm) == before
    with crm.connect() as conn:
        calendar = dict(conn.execute(select(business_days.c.business_date, business_days.c.status)).all())
        audited = conn.scalar(
            select(func.count()).select_from(intake_runs).where(intake_runs.c.business_date == gap_day)
        )
    assert calendar == {day: "completed" for day in DAYS} and audited == 0


def test_runs_show_their_real_start_time_and_every_task_log_in_the_log_folder(daily_runs):
    """What the Airflow UI shows: a run's duration as it really was (dag.test records the logical
    date as the start: a month-old day looked like a month-long run), and each task's log where
    the UI reads it."""
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    from huitouke.dagrun import DAG_ID, task_log_path

    with create_session() as session:
        runs = session.query(DagRun).filter(DagRun.dag_id == DAG_ID).all()
        assert runs
        for run in runs:
            assert (run.end_date - run.start_date).total_seconds() < 3600, run.run_id
        tis = session.query(TaskInstance).filter(TaskInstance.dag_id == DAG_ID).all()
        paths = {ti.task_id: task_log_path(ti) for ti in tis if ti.state == "success"}
        intake = next(ti for ti in tis if ti.task_id == "intake_orders" and ti.state == "success")
        shown = _log_as_the_ui_reads_it(intake)
    assert {"intake_orders", "update_segments", "plan_campaigns", "evaluate_campaigns"} <= set(paths)
    records = [json.loads(line) for line in paths["intake_orders"].read_text(encoding="utf-8").splitlines()]
    assert all({"timestamp", "level", "event"} <= set(r) for r in records)
    assert any("rows read" in event for event in shown), shown[:5]


def _log_as_the_ui_reads_it(ti) -> list[str]:
    """The task log's events through Airflow's own reader (what the UI's log view calls)."""
    from airflow.utils.log.log_reader import TaskLogReader

    stream, _ = TaskLogReader().read_log_chunks(ti, ti.try_number, {})
    return [str(getattr(message, "event", message)) for message in stream]


def test_a_simulated_clock_is_refused_by_a_store_that_is_not_the_demos(daily_runs, crm):
    """A real deployment cannot switch the demo's simulated clock on: the run fails at its first
    task and nothing is written."""
    from huitouke.clock import CONF_KEY
    from huitouke.dagrun import run_business_days
    from huitouke.store.schema import intake_runs

    with crm.connect() as conn:
        before = conn.scalar(select(func.count()).select_from(intake_runs))
    states = run_business_days([DAYS[-1]], conf_of=lambda day: {CONF_KEY: {"offset_seconds": -86_400.0}})
    assert states == {DAYS[-1]: "failed"}
    with crm.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(intake_runs)) == before
