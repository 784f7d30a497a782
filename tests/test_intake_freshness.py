"""A day without its data is not a quiet day: intake stops a business day whose source data does
not look complete before anything is written, says why, and loads it only when told to. The intake
audit keeps one row per attempt."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta

import pytest
from sqlalchemy import create_engine, func, insert, select, text

from huitouke.config import parse_settings
from huitouke.intake.freshness import FreshnessRules, StaleDay, floor_problem
from huitouke.pipeline import day_bounds, intake_orders
from huitouke.store.connection import engine_for
from huitouke.store.migrate import upgrade
from huitouke.store.schema import intake_runs, orders

DAY = date(2025, 12, 12)
QUERY = (
    "SELECT order_id, customer_id, paid_at, amount, status, updated_at FROM o "
    "WHERE updated_at >= :start AND updated_at < :end"
)


@pytest.fixture
def crm(monkeypatch, tmp_path):
    monkeypatch.setenv(
        "AIRFLOW_CONN_FRESH_CRM", json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "c.db")})
    )
    engine = engine_for("fresh_crm")
    upgrade(engine)
    return engine


@pytest.fixture
def shop(monkeypatch, tmp_path):
    """A shop database with one table of orders (times in shop time, as text)."""
    path = tmp_path / "shop.db"
    monkeypatch.setenv("AIRFLOW_CONN_FRESH_SHOP", json.dumps({"conn_type": "sqlite", "host": str(path)}))
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE o (order_id, customer_id, paid_at, amount, status, updated_at)"))
    return engine


def _add_order(shop, order_id: str, at: str) -> None:
    with shop.begin() as conn:
        conn.execute(
            text("INSERT INTO o VALUES (:id, 'c-1', :at, '10.00', 'paid', :at)"), {"id": order_id, "at": at}
        )


def _sql_settings(**freshness):
    sql = {"conn_id": "fresh_shop", "query": QUERY, "watermark_query": "SELECT MAX(updated_at) FROM o"}
    intake = {"source": "sql", "sql": sql, "freshness": freshness}
    return parse_settings({"store": {"conn_id": "fresh_crm"}, "intake": intake}, "test.yaml")


def _run(settings, day=DAY, accept=False):
    start, end = day_bounds(day, settings)
    return intake_orders(start, end, settings, accept_incomplete=accept)


def _stored(crm) -> tuple[int, int]:
    with crm.connect() as conn:
        return conn.scalar(select(func.count()).select_from(orders)), conn.scalar(
            select(func.count()).select_from(intake_runs)
        )


# ---------------------------------------------------------------------------------- the floor


def test_the_floor_on_a_days_orders():
    rules = FreshnessRules(min_share_of_median=0.2, trailing_days=28, min_history_days=7)
    assert floor_problem(0, [], rules) == "the source returned no order for the day"
    assert floor_problem(3, [100] * 6, rules) is None  # too little history for a median
    assert (
        floor_problem(19, [100] * 7, rules) == "19 orders, under 20% of the median of the last 7 days (100)"
    )
    assert floor_problem(20, [100] * 7, rules) is None
    assert floor_problem(19, [1] * 30 + [100] * 28, rules) is not None  # only the last 28 days count


# ------------------------------------------------------------------------- through intake (SQL)


def test_a_day_the_source_has_not_finished_stops_before_anything_is_written(crm, shop):
    _add_order(shop, "A1", "2025-12-12 10:00:00")  # the latest update: 14 hours before the day's end
    with pytest.raises(StaleDay) as stale:
        _run(_sql_settings())
    message = str(stale.value)
    assert "business day 2025-12-12 looks incomplete" in message
    assert "latest order update is 2025-12-12 10:00, before 2025-12-12 18:00 shop time" in message
    assert "accept_incomplete_day" in message and "Nothing was written" in message
    assert _stored(crm) == (0, 0)

    _add_order(shop, "A2", "2025-12-13 01:00:00")  # the shop went on into the next day
    assert _run(_sql_settings())["inserted"] == 1
    assert _stored(crm) == (1, 1)


def test_a_day_without_orders_stops_unless_the_run_accepts_it(crm, shop):
    _add_order(shop, "A1", "2025-12-13 01:00:00")  # the source is current, the 12th had no order
    with pytest.raises(StaleDay, match="the source returned no order for the day"):
        _run(_sql_settings())
    assert _stored(crm) == (0, 0)
    accepted = _run(_sql_settings(), accept=True)
    assert (accepted["rows_read"], accepted["inserted"]) == (0, 0)
    assert _stored(crm) == (0, 1)  # the audit says the day was taken in, empty


def test_a_day_far_below_the_trailing_median_stops(crm, shop):
    with crm.begin() as conn:
        conn.execute(
            insert(intake_runs),
            [
                {
                    "business_date": DAY - timedelta(days=n),
                    "source": "sql:fresh_shop",
                    "attempt": 1,
                    "last_business_date": DAY - timedelta(days=n),
                    "rows_read": 10,
                    "orders_read": 10,
                    "inserted": 10,
                    "updated": 0,
                    "unchanged": 0,
                    "quarantined": 0,
                    "quarantined_by_reason": "{}",
                    "finished_at": datetime(2025, 12, 1),
                }
                for n in range(1, 8)
            ],
        )
    _add_order(shop, "A1", "2025-12-12 23:00:00")
    with pytest.raises(StaleDay, match=r"1 orders, under 20% of the median of the last 7 days \(10\)"):
        _run(_sql_settings())
    assert _run(_sql_settings(min_share_of_median=0.1))["inserted"] == 1


def test_every_attempt_keeps_its_audit_row(crm, shop):
    _add_order(shop, "A1", "2025-12-12 23:00:00")
    first = _run(_sql_settings())
    _add_order(shop, "A2", "2025-12-12 23:30:00")
    _run(_sql_settings())
    with crm.connect() as conn:
        rows = conn.execute(select(intake_runs).order_by(intake_runs.c.attempt)).all()
    assert [(r.attempt, r.orders_read, r.inserted) for r in rows] == [(1, 1, 1), (2, 2, 1)]
    assert first["inserted"] == 1


# ------------------------------------------------------------------------------- through files


def test_a_missing_daily_export_is_named(crm, tmp_path):
    folder = tmp_path / "exports"
    folder.mkdir()
    files = {"folder": str(folder), "pattern": "orders_{ds}.csv"}
    settings = parse_settings(
        {"store": {"conn_id": "fresh_crm"}, "intake": {"source": "files", "files": files}}, "test.yaml"
    )
    with pytest.raises(
        StaleDay, match="the day's export orders_2025-12-12.csv is not in the folder exports yet"
    ):
        _run(settings)
    assert _stored(crm) == (0, 0)
