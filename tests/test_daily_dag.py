"""The daily DAG end to end through Airflow (``dag.test``): a generated shop in its own database,
read by the SQL source, over several consecutive business days, then a day run again."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pandas as pd
import pytest
from sqlalchemy import func, select

pytestmark = pytest.mark.airflow

TZ = ZoneInfo("Asia/Shanghai")
HISTORY_START = date(2025, 11, 1)
DAYS = [date(2025, 12, 11), date(2025, 12, 12), date(2025, 12, 13)]


@pytest.fixture(scope="module")
def shop(airflow_db):
    """A small demo shop written to the shop_db Connection; the CRM store migrated and loaded
    with the history before the first DAG day."""
    from huitouke.config import load_settings
    from huitouke.demo_shop import ShopSpec, generate_shop, write_shop
    from huitouke.pipeline import day_bounds, intake_orders
    from huitouke.store.connection import engine_for
    from huitouke.store.migrate import upgrade

    shop = generate_shop(
        ShopSpec(customers=3_000, start=HISTORY_START, end=DAYS[-1], seed=11, bad_row_share=0.01)
    )
    write_shop(shop, engine_for("shop_db").url.render_as_string(hide_password=False))
    crm = engine_for("crm_db")
    upgrade(crm)
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
    from huitouke.dagrun import run_business_days

    return run_business_days(DAYS)


def _local(text: pd.Series) -> pd.Series:
    return pd.to_datetime(text, errors="coerce")


def _shop_orders_until(shop, last_day: date) -> pd.DataFrame:
    orders = shop.orders.copy()
    end = datetime.combine(last_day + timedelta(days=1), datetime.min.time())
    return orders[_local(orders["updated_at"]) < end]


def test_every_day_runs_successfully(daily_runs):
    assert daily_runs == {day: "success" for day in DAYS}


def test_each_day_records_what_it_read_loaded_and_quarantined(daily_runs, crm, shop):
    from huitouke.store.schema import intake_runs

    with crm.connect() as conn:
        runs = {r.business_date: r for r in conn.execute(select(intake_runs)).all()}
    for day in DAYS:
        run = runs[day]
        start = datetime.combine(day, datetime.min.time())
        updated = _local(shop.orders["updated_at"])
        expected_orders = shop.orders[(updated >= start) & (updated < start + timedelta(days=1))]
        assert run.rows_read >= len(expected_orders) > 0
        assert (
            run.inserted + run.updated + run.unchanged + run.quarantined
            >= len(expected_orders) - run.quarantined
        )
    assert runs[date(2025, 12, 12)].inserted > runs[date(2025, 12, 11)].inserted  # the 12.12 peak


def test_the_store_holds_exactly_the_good_orders_of_the_period(daily_runs, crm, shop):
    from huitouke.store.schema import orders

    period = _shop_orders_until(shop, DAYS[-1])
    bad_ids = set(shop.bad_rows["order_id"])
    expected = set(period["order_id"]) - bad_ids
    with crm.connect() as conn:
        stored = set(conn.execute(select(orders.c.order_id)).scalars())
    assert stored == expected


def test_every_bad_row_is_in_quarantine_with_a_reason(daily_runs, crm, shop):
    from huitouke.store.schema import quarantine

    period_ids = set(_shop_orders_until(shop, DAYS[-1])["order_id"])
    bad = shop.bad_rows[shop.bad_rows["order_id"].isin(period_ids)]
    assert len(bad) > 0
    with crm.connect() as conn:
        rows = conn.execute(select(quarantine.c.order_id, quarantine.c.reason)).all()
    quarantined_ids = {r.order_id for r in rows if r.order_id}
    missing_customer = set(bad.loc[bad["kind"].str.contains("customer"), "order_id"])
    assert set(bad["order_id"]) <= quarantined_ids | missing_customer
    assert {r.reason for r in rows} >= {"invalid_amount", "unparseable_time"}


def test_refunds_update_status_without_adding_revenue(daily_runs, crm, shop):
    from huitouke.store.schema import orders

    period = _shop_orders_until(shop, DAYS[-1])
    refunded = period[period["status"] == "refunded"]
    refunded = refunded[~refunded["order_id"].isin(set(shop.bad_rows["order_id"]))]
    with crm.connect() as conn:
        statuses = dict(conn.execute(select(orders.c.order_id, orders.c.status)).all())
    assert len(refunded) > 0
    assert all(statuses[oid] == "refunded" for oid in refunded["order_id"])


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
        again = conn.execute(select(intake_runs).where(intake_runs.c.business_date == DAYS[1])).one()
    assert again.inserted == 0 and again.updated == 0 and again.unchanged == again.orders_read > 0
