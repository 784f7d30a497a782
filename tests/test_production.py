"""The production topology (docker-compose.yaml) natively, no container engine: PostgreSQL holding
Airflow's metadata database and the CRM store (separate databases, separate roles), the
CeleryExecutor with a real Redis broker and a real ``airflow celery worker``, the api-server,
scheduler, dag-processor and triggerer as processes (tests/airflow_server.py with
:func:`production_env`). One business day of a small demo shop, triggered through the REST API,
runs to success, delivery included: SMS to the gateway simulator's HTTP server (webhook
provider), e-mail to a real SMTP server (aiosmtpd).

The run is for a past day, on the demo's simulated clock (huitouke.clock, run conf; the store is
marked as the demo's): to the run it is the next morning, :data:`BEFORE_WINDOW` seconds before
the send window opens, so the send-window sensor defers on the triggerer, the triggerer resumes
it when the window opens, and delivery sends, whatever the time of day the test runs."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import psycopg2
import pytest
from sqlalchemy import func, select

pytestmark = [pytest.mark.scheduler, pytest.mark.postgres]

HISTORY_START = date(2025, 11, 1)
DAY = date(2025, 12, 11)
SHOP_TZ = "Asia/Shanghai"
ROLES = {"airflow": "airflow", "crm": "huitouke"}  # database -> the role owning it
PASSWORDS = {"airflow": "airflow-pw", "huitouke": "huitouke-pw"}
STORE_POOL_SLOTS = 4  # a PostgreSQL store: the day's mapped renders side by side (docker-compose.yaml)
# The simulated clock at the trigger: this long before the playbook's send window opens (09:00):
# more than the stages before the sensor take on a loaded machine, so the sensor always defers.
BEFORE_WINDOW = timedelta(seconds=180)
WINDOW_OPENS = time(9, 0)
DELIVERY_ENV = ("HUITOUKE_CONFIG", "AIRFLOW_CONN_HUITOUKE_SMS_WEBHOOK", "AIRFLOW_CONN_HUITOUKE_SMTP")


def _databases(pg) -> dict[str, str]:
    """The ``airflow`` and ``crm`` databases, each owned by its own role; database -> its URL as
    that role."""
    urls = {}
    for database, role in ROLES.items():
        pg.create_role(role, PASSWORDS[role])
        pg.create_database(database, owner=role)
        urls[database] = pg.role_url(role, PASSWORDS[role], database)
    return urls


def _huitouke(data, *args: str) -> str:
    """``huitouke <args>`` with huitouke's settings (its Connections) and this checkout's code."""
    from airflow_server import ROOT

    done = subprocess.run(
        [sys.executable, "-m", "huitouke.cli", *args],
        env={**os.environ, **data.env(), "PYTHONPATH": str(ROOT / "plugins")},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _prepare_store(data) -> None:
    """The CRM store migrated (``huitouke db upgrade``, as compose's init does) and marked as the
    demo's; a small demo shop up to ``DAY`` in the shop database, its history before ``DAY``
    loaded into the store with that evening's segments."""
    from datetime import UTC, datetime

    from huitouke.clock import mark_demo_store
    from huitouke.config import load_settings
    from huitouke.demo_shop import ShopSpec, generate_shop, shop_as_of, write_shop
    from huitouke.pipeline import day_bounds, intake_orders, update_segments
    from huitouke.store.connection import make_engine

    _huitouke(data, "db", "upgrade")
    shop = generate_shop(ShopSpec(customers=2_000, start=HISTORY_START, end=DAY, seed=12))
    write_shop(shop_as_of(shop, DAY), make_engine(data.shop_url))
    crm = make_engine(data.crm_url)
    with crm.begin() as conn:
        mark_demo_store(conn, datetime.now(UTC).replace(tzinfo=None))
    crm.dispose()
    with data.as_current():
        settings = load_settings()
        start, _ = day_bounds(HISTORY_START, settings)
        evening, end = day_bounds(DAY - timedelta(days=1), settings)
        intake_orders(start, end, settings)
        update_segments(evening, settings)


def _started_beside(prepare, start):
    """``start()`` (Airflow's start-up, mostly waiting) in a thread while ``prepare()`` runs here;
    what ``start`` returned. A server started while ``prepare`` failed is stopped."""
    with ThreadPoolExecutor(1) as pool:
        starting = pool.submit(start)
        try:
            prepare()
        except BaseException:
            with contextlib.suppress(Exception):
                starting.result().stop()
            raise
        return starting.result()


@pytest.fixture(scope="module")
def production(postgres_server, redis_server, tmp_path_factory):
    """Everything started, the day run; yields what the tests look at."""
    from airflow_server import PRODUCTION_COMPONENTS, HuitoukeData, production_env, start_airflow

    from huitouke.config import config_path
    from huitouke.gateway.server import DEFAULT_TOKEN, GatewayServer
    from huitouke.gateway.state import GatewayFaults
    from huitouke.season import demo_delivery, mail_sink, run_conf

    folder = tmp_path_factory.mktemp("production")
    urls = _databases(postgres_server)
    data = HuitoukeData(folder / "data", crm=urls["crm"])
    data.folder.mkdir()
    with (
        GatewayServer(GatewayFaults(latency_ms=1, seed=5)) as gateway,
        mail_sink() as (mail, smtp_port),
        demo_delivery(config_path(), gateway.url, DEFAULT_TOKEN, smtp_port, data.folder),
    ):
        env = production_env(urls["airflow"], redis_server.url(), data)
        env |= {name: os.environ[name] for name in DELIVERY_ENV}
        server = _started_beside(
            lambda: _prepare_store(data),
            lambda: start_airflow(
                folder / "airflow",
                env,
                data,
                components=PRODUCTION_COMPONENTS,
                store_pool_slots=STORE_POOL_SLOTS,
            ),
        )
        try:
            server.api.unpause()
            run = server.api.trigger_day(DAY, conf=_before_the_window(run_conf(DAY, SHOP_TZ)))
            run = server.api.wait_for_run(run["dag_run_id"], timeout=360)
            yield {"server": server, "run": run, "gateway": gateway.state.stats(), "mail": mail.accepted}
        finally:
            server.stop()


def _before_the_window(conf: dict) -> dict:
    """The demo's run conf with the clock set :data:`BEFORE_WINDOW` before the window opens."""
    from huitouke.season import CONF_KEY

    opens = datetime.combine(DAY + timedelta(days=1), WINDOW_OPENS, tzinfo=ZoneInfo(SHOP_TZ))
    offset = opens - BEFORE_WINDOW - datetime.now(UTC)
    return {**conf, CONF_KEY: {"offset_seconds": offset.total_seconds()}}


def _sent_by_channel(crm_url: str) -> dict[str, int]:
    from huitouke.store.connection import make_engine
    from huitouke.store.schema import outbox

    engine = make_engine(crm_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(outbox.c.channel, func.count())
                .where(outbox.c.status == "sent")
                .group_by(outbox.c.channel)
            ).all()
    finally:
        engine.dispose()
    return dict(rows)


def test_the_day_runs_to_success_every_task_included(production):
    api, run = production["server"].api, production["run"]
    assert run["state"] == "success", api.describe([run["dag_run_id"]])
    states = api.task_states(run["dag_run_id"])
    assert {"open_business_day", "intake_orders", "wait_for_send_window", "close_business_day"} <= set(states)
    assert any(name.startswith("render_messages[") for name in states)
    assert any(name.startswith("deliver_messages[") for name in states)
    assert set(states.values()) == {"success"}, states


def test_the_send_window_sensor_deferred_on_the_triggerer(production):
    """Before the window the sensor frees its worker slot and waits on the triggerer, which
    resumes it when the window opens (the simulated clock's moment, in real time)."""
    api, run_id = production["server"].api, production["run"]["dag_run_id"]
    sensor_log = api.task_log(run_id, "wait_for_send_window")
    assert "outside the send window: deferred until" in sensor_log
    triggerer_log = production["server"].log_path("triggerer").read_text(errors="replace")
    assert "1 triggers currently running" in triggerer_log, triggerer_log[-3000:]


def test_every_component_is_still_up_after_the_run(production):
    server = production["server"]
    server.check_alive()  # no process exited
    health = server.health()
    for component in ("metadatabase", "scheduler", "triggerer", "dag_processor"):
        assert health[component]["status"] == "healthy", health


def test_every_sms_reached_the_gateway_and_every_email_the_smtp_server(production):
    sent = _sent_by_channel(production["server"].data.crm_url)
    assert sent.get("sms", 0) > 0 and sent.get("email", 0) > 0, sent
    assert production["gateway"]["accepted"] == sent["sms"]
    assert production["gateway"]["duplicates"] == 0
    assert production["mail"] == sent["email"]
    calls = production["server"].data.folder / "call_lists"
    assert [f.name.startswith(f"calls_{DAY}") for f in calls.iterdir()] == [True]  # the phone follow-ups


def test_the_celery_worker_ran_every_task(production):
    """Each task instance was handed to Celery (its queue) and executed by the worker process: its
    id is in the workload the worker logs; the scheduler ran the CeleryExecutor."""
    from airflow_server import CELERY_WORKER

    server, run = production["server"], production["run"]
    worker_log = server.log_path(CELERY_WORKER).read_text(errors="replace")
    executed = [line for line in worker_log.splitlines() if "Executing workload in Celery" in line]
    instances = server.api.task_instances(run["dag_run_id"])
    assert {ti["queue"] for ti in instances} == {"default"}
    missing = [ti["task_id"] for ti in instances if not any(ti["id"] in line for line in executed)]
    assert not missing, f"not run by the Celery worker: {missing}\n{worker_log[-3000:]}"
    assert "CeleryExecutor" in server.log_path("scheduler").read_text(errors="replace")


def test_airflow_and_the_crm_store_live_in_separate_databases_with_separate_roles(
    production, postgres_server
):
    """Airflow's tables belong to the ``airflow`` role in database ``airflow``, the store's to
    ``huitouke`` in ``crm``, and neither database holds the other's tables."""
    owners = {}
    for database in ROLES:
        conn = psycopg2.connect(host="127.0.0.1", port=postgres_server.port, user="postgres", dbname=database)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT tablename, tableowner FROM pg_tables WHERE schemaname = 'public'")
                owners[database] = dict(cur.fetchall())
        finally:
            conn.close()
    assert set(owners["airflow"].values()) == {"airflow"} and "dag_run" in owners["airflow"]
    assert set(owners["crm"].values()) == {"huitouke"} and "outbox" in owners["crm"]
    assert "outbox" not in owners["airflow"] and "dag_run" not in owners["crm"]
