"""Building the configured order source: the one place that turns settings and Airflow
Connections into a source object with ``name`` and ``read(start, end)``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import pandas as pd

from huitouke.config import HttpSourceSettings, Settings
from huitouke.store.connection import ConnectionConfigError, airflow_connection, engine_for

if TYPE_CHECKING:  # the sources are imported when chosen (requests only for the HTTP one)
    from huitouke.intake.http_api import HttpOptions


class OrderSource(Protocol):
    name: str

    def read(self, start: Any, end: Any) -> pd.DataFrame: ...

    def completeness(self, start: Any, end: Any, max_quiet_hours: float) -> str | None:
        """Why the interval may not be complete in the source yet, or None (intake/freshness.py)."""
        ...


def build_source(settings: Settings) -> OrderSource:
    """The source ``intake.source`` names, configured from its section."""
    intake = settings.intake
    tz = settings.shop.timezone
    if intake.source == "sql":
        from huitouke.intake.sql import SqlOrderSource

        sql = intake.sql
        assert sql is not None
        return SqlOrderSource(
            engine_for(sql.conn_id),
            sql.query,
            tz,
            name=f"sql:{sql.conn_id}",
            watermark_query=sql.watermark_query,
        )
    if intake.source == "files":
        from huitouke.intake.files import FileOrderSource

        files = intake.files
        assert files is not None
        return FileOrderSource(
            folder=files.folder_path(),
            pattern=files.pattern,
            mapping=files.mapping,
            timezone=tz,
            encoding=files.encoding,
            when_missing=files.when_missing,
        )
    from huitouke.intake.http_api import HttpOrderSource

    http = intake.http
    assert http is not None
    base_url, headers, auth = http_endpoint(http.conn_id)
    return HttpOrderSource(base_url, http_options(http), headers=headers, auth=auth, where="intake.http")


def http_options(http: HttpSourceSettings) -> HttpOptions:
    """The HTTP source's options from the ``intake.http`` settings, whose fields are named as the
    options are (pagination, fields, mapping...); the timeout in seconds is the read timeout, the
    connect timeout at most 10 s."""
    from huitouke.intake.http_api import HttpOptions

    return HttpOptions(
        **http.model_dump(exclude={"conn_id", "timeout_seconds"}),
        timeout=(min(10.0, http.timeout_seconds), http.timeout_seconds),
    )


def http_endpoint(conn_id: str) -> tuple[str, dict[str, str], tuple[str, str] | None]:
    """Base URL, headers and basic auth of an HTTP Connection.

    ``host`` may be a full URL (``https://api.example.com``) or a host name with ``schema`` as
    the scheme. ``extra.headers`` adds headers; ``extra.bearer_token: true`` sends the password as
    ``Authorization: Bearer ...`` instead of basic auth.
    """
    conn = airflow_connection(conn_id)
    host = (conn.host or "").rstrip("/")
    if not host:
        raise ConnectionConfigError(f"Connection {conn_id!r} needs a host (the API's base URL)")
    if "://" not in host:
        scheme = conn.schema or "https"
        host = f"{scheme}://{host}"
        if conn.port:
            host = f"{host}:{conn.port}"
    extra = conn.extra_dejson or {}
    headers = {str(k): str(v) for k, v in (extra.get("headers") or {}).items()}
    auth = None
    if conn.password and extra.get("bearer_token"):
        headers["Authorization"] = f"Bearer {conn.password}"
    elif conn.login:
        auth = (conn.login, conn.password or "")
    return host, headers, auth
