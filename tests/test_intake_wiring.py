"""Sources chosen by configuration, wired to Airflow Connections, through the same stage-1
function the DAG task calls (``pipeline.intake_orders``)."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import func, select
from test_source_http import FakeApi, api  # noqa: F401 - the local API server fixture

from huitouke.config import parse_settings
from huitouke.pipeline import day_bounds, intake_orders
from huitouke.store.connection import engine_for
from huitouke.store.migrate import upgrade
from huitouke.store.schema import orders, quarantine

FIXTURES = Path(__file__).parent / "fixtures"
DAY = date(2025, 12, 12)


@pytest.fixture
def crm(monkeypatch, tmp_path):
    monkeypatch.setenv(
        "AIRFLOW_CONN_WIRING_CRM", json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "c.db")})
    )
    engine = engine_for("wiring_crm")
    upgrade(engine)
    return engine


def settings_for(intake: dict):
    return parse_settings({"store": {"conn_id": "wiring_crm"}, "intake": intake}, "test.yaml")


def run_day(settings):
    start, end = day_bounds(DAY, settings)
    return intake_orders(start, end, settings)


def test_a_taobao_export_folder_is_read_with_the_taobao_mapping(crm):
    settings = settings_for(
        {
            "source": "files",
            "files": {"folder": str(FIXTURES), "pattern": "taobao_orders_utf8bom.csv", "mapping": "taobao"},
        }
    )
    summary = run_day(settings)
    assert summary["source"].startswith("files")
    assert summary["inserted"] > 0
    with crm.connect() as conn:
        amount = conn.scalar(select(orders.c.amount_cents).where(orders.c.order_id == "3021498712345678"))
    assert amount == 129900  # ="3021498712345678" and "¥1,299.00" read correctly
    assert run_day(settings)["inserted"] == 0  # the same day again changes nothing


def test_the_gbk_export_gives_the_same_orders_as_the_utf8_one(crm):
    utf8 = run_day(
        settings_for(
            {
                "source": "files",
                "files": {
                    "folder": str(FIXTURES),
                    "pattern": "taobao_orders_utf8bom.csv",
                    "mapping": "taobao",
                },
            }
        )
    )
    gbk = run_day(
        settings_for(
            {
                "source": "files",
                "files": {"folder": str(FIXTURES), "pattern": "taobao_orders_gbk.csv", "mapping": "taobao"},
            }
        )
    )
    assert gbk["unchanged"] == utf8["inserted"] and gbk["inserted"] == 0


def test_the_http_source_uses_the_connection_for_url_and_token(crm, api, monkeypatch):  # noqa: F811
    def orders_route(query, number):
        rows = [
            {
                "order_id": "H1",
                "customer_id": "c1",
                "paid_at": "2025-12-12T10:00:00+08:00",
                "amount": 88,
                "status": "paid",
            },
            {
                "order_id": "H2",
                "customer_id": "",
                "paid_at": "2025-12-12T11:00:00+08:00",
                "amount": 5,
                "status": "paid",
            },
        ]
        return 200, {"orders": rows if query.get("page") == "1" else []}, {}

    api.routes["/v1/orders"] = orders_route
    monkeypatch.setenv(
        "AIRFLOW_CONN_WIRING_API",
        json.dumps(
            {
                "conn_type": "http",
                "host": api.base_url,
                "password": "s3cret-token",
                "extra": {"bearer_token": True},
            }
        ),
    )
    settings = settings_for({"source": "http", "http": {"conn_id": "wiring_api", "endpoint": "/v1/orders"}})
    summary = run_day(settings)
    assert (summary["inserted"], summary["quarantined_by_reason"]) == (1, {"missing_customer": 1})
    assert api.headers[0]["Authorization"] == "Bearer s3cret-token"
    first = api.calls("/v1/orders")[0]
    assert first["updated_from"].startswith("2025-12-12T00:00:00") and first["updated_to"].startswith(
        "2025-12-13"
    )
    with crm.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(quarantine)) == 1


def test_a_source_connection_that_is_missing_is_named(crm):
    settings = settings_for(
        {"source": "sql", "sql": {"conn_id": "no_shop", "query": "SELECT 1 WHERE :start < :end"}}
    )
    with pytest.raises(Exception, match="AIRFLOW_CONN_NO_SHOP"):
        run_day(settings)
