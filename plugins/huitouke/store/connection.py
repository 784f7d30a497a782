"""From an Airflow Connection to a SQLAlchemy engine.

Every database huitouke touches (the CRM store, the shop's order database) is named by an Airflow
Connection id. This module is the one place that turns a Connection into a SQLAlchemy URL, so a
data engineer configures databases exactly as they configure any other Airflow endpoint:
``AIRFLOW_CONN_CRM_DB='{"conn_type": "sqlite", "host": "/abs/path/crm.sqlite"}'`` or
``AIRFLOW_CONN_CRM_DB='postgresql://user:pass@host:5432/crm'`` or the UI.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url

from huitouke.config import project_home
from huitouke.pii import get_logger

log = get_logger(__name__)

# Airflow conn_type -> SQLAlchemy driver name.
_DRIVERS = {
    "postgres": "postgresql+psycopg2",
    "postgresql": "postgresql+psycopg2",
    "mysql": "mysql+pymysql",
    "mssql": "mssql+pymssql",
}


class ConnectionConfigError(RuntimeError):
    """A Connection is missing or lacks what huitouke needs; the message says which and what."""


def airflow_connection(conn_id: str) -> Any:
    try:
        from airflow.sdk import BaseHook
    except ImportError as exc:  # pragma: no cover - Airflow is a dependency
        raise ConnectionConfigError(
            f"Airflow is not installed: cannot look up Connection {conn_id!r}"
        ) from exc
    try:
        return BaseHook.get_connection(conn_id)
    except Exception as exc:  # AirflowNotFoundException and friends
        env = f"AIRFLOW_CONN_{conn_id.upper()}"
        raise ConnectionConfigError(
            f"Airflow Connection {conn_id!r} is not defined: add it in the Airflow UI (Admin > Connections) "
            f"or set {env}, e.g. {env}='postgresql://user:password@host:5432/dbname' ({exc})"
        ) from None


def url_from_connection(conn: Any) -> URL:
    """The SQLAlchemy URL a Connection describes.

    ``extra.sqlalchemy_url`` wins when present (any dialect). Otherwise sqlite uses ``host`` as the
    file path (relative paths are taken from the project home), and postgres/mysql/mssql are built
    from host, port, login, password and schema (the database name).
    """
    conn_id = getattr(conn, "conn_id", "?")
    extra = getattr(conn, "extra_dejson", None) or {}
    if extra.get("sqlalchemy_url"):
        return make_url(extra["sqlalchemy_url"])
    conn_type = (conn.conn_type or "").lower()
    if conn_type == "sqlite":
        if not conn.host:
            raise ConnectionConfigError(
                f"Connection {conn_id!r} (sqlite) needs host = the database file path"
            )
        path = Path(conn.host)
        if not path.is_absolute():
            path = project_home() / path
        return URL.create("sqlite", database=str(path))
    driver = _DRIVERS.get(conn_type)
    if driver is None:
        raise ConnectionConfigError(
            f"Connection {conn_id!r} has conn_type {conn_type!r}: use sqlite or postgres, "
            "or give extra.sqlalchemy_url"
        )
    if not conn.host or not conn.schema:
        raise ConnectionConfigError(
            f"Connection {conn_id!r} ({conn_type}) needs a host and a schema (the database name)"
        )
    return URL.create(
        driver,
        username=conn.login or None,
        password=conn.password or None,
        host=conn.host,
        port=conn.port or None,
        database=conn.schema,
    )


def url_for(conn_id: str) -> URL:
    """The SQLAlchemy URL of an Airflow Connection id."""
    return url_from_connection(airflow_connection(conn_id))


def _enable_sqlite_foreign_keys(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def make_engine(url: str | URL) -> Engine:
    """An engine for ``url``; SQLite files get their folder created and foreign keys enforced."""
    url = make_url(url)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, hide_parameters=True)
        event.listen(engine, "connect", _enable_sqlite_foreign_keys)
        return engine
    return create_engine(url, pool_pre_ping=True, hide_parameters=True)


def engine_for(conn_id: str) -> Engine:
    """An engine for an Airflow Connection id."""
    url = url_for(conn_id)
    log.info("Connection %s: %s", conn_id, url.render_as_string(hide_password=True))
    return make_engine(url)
