"""Test set-up: an Airflow home of the suite's own, the CRM store on SQLite and PostgreSQL.

Environment variables are set before anything imports Airflow, so the tests never touch the
project's .airflow/ or data/ folders, and never the user's own Airflow.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_SESSION_DIR = Path(tempfile.mkdtemp(prefix="huitouke-tests-"))
atexit.register(shutil.rmtree, _SESSION_DIR, ignore_errors=True)  # the suite's Airflow home, stores, caches

os.environ["HUITOUKE_HOME"] = str(ROOT)
os.environ["AIRFLOW_HOME"] = str(_SESSION_DIR / "airflow")
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(ROOT / "dags")
os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(ROOT / "plugins")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"
os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")
for name in list(os.environ):
    if name.startswith("AIRFLOW_CONN_"):
        del os.environ[name]
os.environ["AIRFLOW_CONN_CRM_DB"] = f'{{"conn_type": "sqlite", "host": "{_SESSION_DIR / "crm.sqlite"}"}}'
os.environ["AIRFLOW_CONN_SHOP_DB"] = f'{{"conn_type": "sqlite", "host": "{_SESSION_DIR / "shop.sqlite"}"}}'
os.environ["HUITOUKE_CACHE_DIR"] = str(_SESSION_DIR / "cache")  # segment snapshots: never in data/
sys.path.insert(0, str(ROOT / "tests"))

from pg_server import PostgresUnavailable, start_postgres  # noqa: E402
from redis_server import RedisUnavailable, start_redis  # noqa: E402


@pytest.fixture(scope="session")
def session_dir() -> Path:
    return _SESSION_DIR


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """Airflow's metadata database for the suite (SQLite), migrated once."""
    home = Path(os.environ["AIRFLOW_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        pytest.fail(f"airflow db migrate failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return home


@pytest.fixture(scope="session")
def postgres_server():
    """A PostgreSQL server for the session. Under CI=true a server that cannot start fails the suite."""
    try:
        server = start_postgres()
    except PostgresUnavailable as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"PostgreSQL is required under CI=true: {exc}")
        pytest.skip(f"PostgreSQL unavailable: {exc}")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_server():
    """A Redis server for the session (the Celery broker). Under CI=true a server that cannot
    start fails the suite."""
    try:
        server = start_redis()
    except RedisUnavailable as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"Redis is required under CI=true: {exc}")
        pytest.skip(f"Redis unavailable: {exc}")
    yield server
    server.stop()


_db_counter = iter(range(1, 1_000_000))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request, tmp_path) -> str:
    """An empty database URL for the CRM store, once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'crm.sqlite'}"
    server = request.getfixturevalue("postgres_server")
    return server.create_database(f"crm_test_{next(_db_counter)}")


@pytest.fixture
def store_engine(store_url):
    """A migrated CRM store on SQLite and on PostgreSQL."""
    from huitouke.store.connection import make_engine
    from huitouke.store.migrate import upgrade

    engine = make_engine(store_url)
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def gateway():
    """The gateway simulator (huitouke gateway) over loopback, one per test module."""
    from huitouke.gateway.server import GatewayServer

    with GatewayServer() as server:
        yield server


@pytest.fixture
def gw(gateway):
    """The module's simulator with no faults, no records and no forced rejections."""
    from huitouke.gateway.state import GatewayFaults

    gateway.state.reset(GatewayFaults())
    gateway.state.forced_rejections.clear()
    return gateway
