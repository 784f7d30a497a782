"""The CRM store's schema: migrations, the current-revision check, Connections to URLs."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from huitouke.store import migrate
from huitouke.store.connection import ConnectionConfigError, make_engine, url_for, url_from_connection
from huitouke.store.schema import metadata


def test_migrations_create_exactly_the_schema_the_code_declares(store_engine):
    with store_engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"version_table": migrate.VERSION_TABLE, "compare_type": True}
        )
        assert compare_metadata(context, metadata) == []


def test_upgrade_is_safe_to_repeat(store_engine):
    assert migrate.upgrade(store_engine) == migrate.head_revision()
    assert migrate.current_revision(store_engine) == migrate.head_revision()


def test_an_empty_store_is_refused_with_the_command_to_fix_it(store_url):
    engine = make_engine(store_url)
    with pytest.raises(migrate.StoreNotCurrentError, match="huitouke db upgrade --conn crm_db"):
        migrate.ensure_current(engine)


def test_downgrade_then_upgrade_round_trips(store_engine):
    from alembic import command

    cfg = migrate.alembic_config()
    with store_engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "base")
    assert migrate.current_revision(store_engine) is None
    migrate.upgrade(store_engine)
    migrate.ensure_current(store_engine)


def test_rows_the_daily_run_rewrites_can_stay_on_their_page(store_engine):
    """Revision 0006: nothing indexes segment_history.valid_to (a close then touches no index), and
    PostgreSQL leaves room on the pages of the three tables the daily run updates (HOT updates)."""
    from sqlalchemy import inspect, text

    indexed = {
        c for index in inspect(store_engine).get_indexes("segment_history") for c in index["column_names"]
    }
    assert "valid_to" not in indexed and "customer_id" in indexed
    if store_engine.dialect.name == "postgresql":
        with store_engine.connect() as db:
            options = dict(
                db.execute(
                    text(
                        "SELECT relname, reloptions FROM pg_class WHERE relname IN "
                        "('segment_history', 'customer_state', 'customer_spend')"
                    )
                ).all()
            )
        assert options == {
            name: ["fillfactor=85"] for name in ("segment_history", "customer_state", "customer_spend")
        }


def conn(**kw):
    defaults = {
        "conn_id": "crm_db",
        "conn_type": None,
        "host": None,
        "schema": None,
        "login": None,
        "password": None,
        "port": None,
        "extra_dejson": {},
    }
    return SimpleNamespace(**{**defaults, **kw})


def test_connections_become_sqlalchemy_urls(tmp_path, monkeypatch):
    monkeypatch.setenv("HUITOUKE_HOME", str(tmp_path))
    assert url_from_connection(conn(conn_type="sqlite", host="/x/crm.sqlite")).database == "/x/crm.sqlite"
    assert url_from_connection(conn(conn_type="sqlite", host="data/crm.sqlite")).database == str(
        tmp_path / "data" / "crm.sqlite"
    )
    url = url_from_connection(
        conn(conn_type="postgres", host="db", port=5433, login="u", password="p@ss", schema="crm")
    )
    assert (url.drivername, url.host, url.port, url.username, url.password, url.database) == (
        "postgresql+psycopg2",
        "db",
        5433,
        "u",
        "p@ss",
        "crm",
    )
    assert (
        str(url_from_connection(conn(conn_type="x", extra_dejson={"sqlalchemy_url": "sqlite://"})))
        == "sqlite://"
    )


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"conn_type": "sqlite"}, "needs host"),
        ({"conn_type": "postgres", "host": "db"}, "schema"),
        ({"conn_type": "ftp", "host": "x"}, "conn_type 'ftp'"),
    ],
)
def test_incomplete_connections_say_what_they_lack(kw, message):
    with pytest.raises(ConnectionConfigError, match=message):
        url_from_connection(conn(**kw))


def test_a_missing_connection_names_the_variable_to_set():
    with pytest.raises(ConnectionConfigError, match="AIRFLOW_CONN_NO_SUCH_DB"):
        url_for("no_such_db")


def test_connections_are_read_from_airflow_environment_variables(monkeypatch, tmp_path):
    monkeypatch.setenv(
        "AIRFLOW_CONN_MY_STORE", json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "s.db")})
    )
    assert url_for("my_store").database == str(tmp_path / "s.db")
