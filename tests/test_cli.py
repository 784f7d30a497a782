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


def test_a_configuration_mistake_exits_2_naming_file_line_and_field(monkeypatch, tmp_path, capsys):
    bad = tmp_path / "huitouke.yaml"
    bad.write_text("intake:\n  source: sql\n  sql:\n    query: SELECT 1\n", encoding="utf-8")
    monkeypatch.setenv("HUITOUKE_CONFIG", str(bad))
    assert main(["intake", "--from", "2025-12-01"]) == 2
    err = capsys.readouterr().err
    assert "huitouke.yaml (line 4): intake.sql.query:" in err and ":start" in err


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


# ------------------------------------------------------------------- failures: one line, a status


def _one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def test_quarantine_masks_phones_and_emails_unless_raw(store_env, capsys):
    from datetime import datetime

    from huitouke.store.connection import engine_for
    from huitouke.store.schema import quarantine

    assert main(["db", "upgrade"]) == 0
    with engine_for("crm_db").begin() as conn:
        conn.execute(
            quarantine.insert().values(
                row_key="k1",
                business_date=date(2025, 12, 1),
                source="files",
                source_ref="o.csv:3",
                reason="invalid_amount",
                detail="amount '13812345678' is not plausible; buyer wang.wu@example.com",
                order_id="13912345678",
                raw='{"amount": "13812345678"}',
                quarantined_at=datetime(2025, 12, 2),
            )
        )
    capsys.readouterr()
    assert main(["quarantine"]) == 0
    out = capsys.readouterr().out
    assert "138****5678" in out and "w***@example.com" in out and "139****5678" in out
    assert "13812345678" not in out and "wang.wu@" not in out and "13912345678" not in out
    assert main(["quarantine", "--raw"]) == 0
    assert "wang.wu@example.com" in capsys.readouterr().out
    assert main(["quarantine", "--limit", "0"]) == 0
    assert "invalid_amount" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (
            ["quarantine", "--limit", "-1"],
            "argument --limit: expected a whole number of at least 0, got '-1'",
        ),
        (["demo", "--customers", "0"], "argument --customers: expected a whole number of at least 1"),
        (["intake", "--from", "2025-13-45"], "argument --from: expected a date YYYY-MM-DD, got '2025-13-45'"),
        (["analyze", "x.csv", "--encoding", "nosuch"], "argument --encoding: unknown text encoding 'nosuch'"),
        (["templates", "lint", "--max-segments", "-2"], "argument --max-segments: expected a whole number"),
        (["gateway", "--port", "70000"], "argument --port: expected a port number from 0 to 65535"),
    ],
)
def test_a_bad_option_is_named_by_argparse(argv, says, capsys):
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2 and says in capsys.readouterr().err


def test_analyze_into_a_missing_folder_names_it(tmp_path, capsys):
    orders = tmp_path / "orders.csv"
    orders.write_text("order_id\n", encoding="utf-8")
    out = tmp_path / "nowhere" / "customers.csv"
    assert main(["analyze", str(orders), "--customers-out", str(out)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert f"--customers-out {out}: the folder {out.parent} does not exist" in line


def test_a_store_without_its_tables_exits_3(tmp_path, capsys):
    assert main(["quarantine", "--url", f"sqlite:///{tmp_path / 'empty.db'}"]) == 3
    line = _one_error_line(capsys.readouterr().err)
    assert "OperationalError" in line and "huitouke db current" in line


def test_an_unexpected_error_is_one_line_and_debug_shows_the_trace(monkeypatch, capsys):
    import huitouke.cli as cli

    def broken(args):
        raise RuntimeError("customer 13812345678 zhang.san@example.com")

    monkeypatch.setattr(cli, "cmd_db_current", broken)
    assert main(["db", "current"]) == 4
    line = _one_error_line(capsys.readouterr().err)
    assert "unexpected RuntimeError at test_cli.py:" in line and "run with --debug" in line
    assert "13812345678" not in line
    for argv in (["--debug", "db", "current"], ["db", "current", "--debug"]):
        assert main(argv) == 4
        err = capsys.readouterr().err
        assert "Traceback (most recent call last)" in err and err.splitlines()[-1].startswith(
            "error: unexpected"
        )


def test_a_database_error_never_prints_the_row_it_failed_on(tmp_path, monkeypatch, capsys):
    """A real IntegrityError, whose text quotes the statement's parameters (a phone, an e-mail, a name)."""
    import sqlalchemy as sa

    import huitouke.cli as cli
    from huitouke.cli_errors import describe_failure

    engine = sa.create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    people = sa.Table(
        "people", sa.MetaData(), sa.Column("phone", sa.String, unique=True), sa.Column("name", sa.String)
    )
    people.metadata.create_all(engine)
    row = {"phone": "13812345678", "name": "张三丰 zhang.san@example.com"}
    with engine.begin() as conn:
        conn.execute(people.insert().values(**row))
    with pytest.raises(sa.exc.IntegrityError) as raised:
        with engine.begin() as conn:
            conn.execute(people.insert().values(**row))
    assert "13812345678" in str(raised.value)  # what a traceback would show
    failure = describe_failure(raised.value)
    assert failure.status == 3 and len(failure.lines) == 1
    assert "IntegrityError (sqlite3.IntegrityError)" in failure.lines[0]

    def failing(args):
        raise raised.value

    monkeypatch.setattr(cli, "cmd_db_current", failing)
    assert main(["db", "current"]) == 3
    line = _one_error_line(capsys.readouterr().err)
    assert not any(secret in line for secret in ("13812345678", "张三", "zhang.san", "138****"))


def _raised(action) -> BaseException:
    try:
        action()
    except BaseException as exc:  # noqa: BLE001 - the exception is what is tested
        return exc
    raise AssertionError("nothing raised")


def test_each_kind_of_failure_has_its_status_and_one_safe_line(tmp_path):
    import codecs
    from decimal import Decimal

    from huitouke.cli_errors import describe_failure

    def status_and_line(action):
        failure = describe_failure(_raised(action))
        assert len(failure.lines) == 1, failure
        return failure.status, failure.lines[0]

    assert status_and_line(lambda: open(tmp_path)) == (2, f"{tmp_path}: a folder, not a file")
    missing = tmp_path / "no" / "out.csv"
    assert status_and_line(lambda: open(missing, "w")) == (
        2,
        f"{missing}: the folder {missing.parent} does not exist",
    )
    assert status_and_line(lambda: codecs.lookup("nosuch"))[0] == 2
    assert status_and_line(lambda: Decimal("1e30").quantize(Decimal(1)) * 10**30)[0] == 2
    assert status_and_line(lambda: int(float("1e400")))[0] == 2
    assert status_and_line(lambda: int("张三丰")) == (
        2,
        "invalid literal for int() with base 10: (the value is not shown)",
    )
    assert status_and_line(lambda: b"\xff".decode("utf-8"))[0] == 2
    status, line = status_and_line(lambda: {}["13812345678"])
    assert status == 4 and line.startswith("unexpected KeyError at test_cli.py:") and "1381" not in line
    assert describe_failure(KeyboardInterrupt()).status == 130
