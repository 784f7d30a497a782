"""Airflow's own API app with huitouke's plugin mounted, and the wiring its routes read, for the
tests of the plugin's routes that need no login (the unsubscribe link, the Aliyun relay)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine


def airflow_api_client() -> Iterator[TestClient]:
    """Airflow's own API app (what ``airflow api-server`` serves: the plugin mounted, Airflow's
    middlewares and auth manager), for a module-scoped fixture."""
    from airflow.api_fastapi.app import create_app, purge_cached_app

    with TestClient(create_app("core")) as client:
        yield client
    purge_cached_app()


def plugin_wiring(
    monkeypatch: Any, tmp_path: Path, setting: tuple[str, str], connection: tuple[str, dict[str, Any]]
) -> Engine:
    """A migrated SQLite store the plugin's pages read, the shipped configuration with one
    setting's line changed (``setting``: the line as shipped, the line wanted), and one Airflow
    Connection (``connection``: its id, its fields) as the api-server would find them."""
    from huitouke.config import config_path
    from huitouke.store.connection import make_engine
    from huitouke.store.migrate import upgrade
    from huitouke.ui import data

    store_engine = make_engine(f"sqlite:///{tmp_path / 'crm.sqlite'}")
    upgrade(store_engine)
    shipped = config_path().read_text(encoding="utf-8")
    assert setting[0] in shipped, f"the shipped configuration has no line {setting[0]!r}"
    config = tmp_path / "huitouke.yaml"
    config.write_text(shipped.replace(*setting), encoding="utf-8")
    monkeypatch.setenv("HUITOUKE_CONFIG", str(config))
    conn_id, fields = connection
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(fields))
    monkeypatch.setattr(data, "store_engine", lambda: store_engine)
    return store_engine
