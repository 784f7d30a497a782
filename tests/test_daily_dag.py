"""The daily DAG end to end through Airflow (``dag.test``): a generated shop in its own database,
read by the SQL source, over several consecutive business days, then a day run again."""

from __future__ import annotations

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
        runs = {r.business_date: r for r in conn.execute(select(intake_runs)).all()}
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
    from huitouke.intake.records import PAID_STATUSES
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
        again = conn.execute(select(intake_runs).where(intake_runs.c.business_date == DAYS[1])).one()
    assert again.inserted == 0 and again.updated == 0 and again.unchanged == again.orders_read > 0


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
