"""The huitouke command as a data engineer runs it."""

from __future__ import annotations

import json
from datetime import date

import pytest

from huitouke.cli import main
from huitouke.store.migrate import head_revision


@pytest.fixture
def store_env(monkeypatch, tmp_path):
    """CRM store and shop database of this test only, through Connections in the environment."""
    monkeypatch.setenv(
        "AIRFLOW_CONN_CRM_DB", json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "crm.db")})
    )
    monkeypatch.setenv(
        "AIRFLOW_CONN_SHOP_DB", json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "shop.db")})
    )
    return tmp_path


def test_db_upgrade_then_current(store_env, capsys):
    assert main(["db", "current"]) == 1
    assert "none (empty)" in capsys.readouterr().out
    assert main(["db", "upgrade"]) == 0
    assert f"migrated: empty -> {head_revision()}" in capsys.readouterr().out
    assert main(["db", "upgrade"]) == 0
    assert "is current" in capsys.readouterr().out
    assert main(["db", "current"]) == 0


def test_db_upgrade_by_url(tmp_path, capsys):
    assert main(["db", "upgrade", "--url", f"sqlite:///{tmp_path / 'x.db'}"]) == 0
    assert head_revision() in capsys.readouterr().out


def test_intake_and_quarantine_commands(store_env, capsys):
    from huitouke.demo_shop import ShopSpec, generate_shop, write_shop
    from huitouke.store.connection import engine_for

    shop = generate_shop(
        ShopSpec(customers=500, start=date(2025, 12, 1), end=date(2025, 12, 5), bad_row_share=0.05)
    )
    write_shop(shop, engine_for("shop_db"))
    assert main(["db", "upgrade"]) == 0
    assert main(["intake", "--from", "2025-12-01", "--to", "2025-12-05"]) == 0
    out = capsys.readouterr().out
    assert out.count("2025-12-0") >= 5 and "intake 2025-12-01..2025-12-05" in out
    assert main(["quarantine"]) == 0
    listing = capsys.readouterr().out
    assert "reason" in listing and "raw:" not in listing
    assert main(["quarantine", "--reason", "invalid_amount", "--raw", "--limit", "1"]) == 0
    assert "raw:" in capsys.readouterr().out


def test_a_configuration_mistake_exits_2_naming_file_and_field(monkeypatch, tmp_path, capsys):
    bad = tmp_path / "huitouke.yaml"
    bad.write_text("intake:\n  source: sql\n  sql:\n    query: SELECT 1\n", encoding="utf-8")
    monkeypatch.setenv("HUITOUKE_CONFIG", str(bad))
    assert main(["intake", "--from", "2025-12-01"]) == 2
    err = capsys.readouterr().err
    assert "huitouke.yaml: intake.sql.query:" in err and ":start" in err


def test_a_missing_connection_exits_2_naming_it(monkeypatch, capsys):
    monkeypatch.delenv("AIRFLOW_CONN_CRM_DB", raising=False)
    assert main(["db", "current", "--conn", "nowhere_db"]) == 2
    assert "AIRFLOW_CONN_NOWHERE_DB" in capsys.readouterr().err


def test_the_demo_refuses_a_store_that_holds_real_orders(store_env, capsys):
    from huitouke.demo import run_demo

    assert main(["db", "upgrade"]) == 0
    from huitouke.store.connection import engine_for
    from huitouke.store.schema import orders

    with engine_for("crm_db").begin() as conn:
        conn.execute(
            orders.insert().values(
                order_id="REAL-1",
                customer_id="c",
                status="paid",
                amount_cents=1,
                acquisition_source="organic",
                content_hash="x",
                source="s",
                loaded_at=date(2025, 1, 1),
                status_changed_at=date(2025, 1, 1),
            )
        )
    lines = []
    assert run_demo(customers=100, days=1, say=lines.append) == 2
    assert "already holds 1 orders" in lines[-1]
