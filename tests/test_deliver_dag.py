"""Delivery through the DAG (``dag.test``), on SQLite and PostgreSQL: the send-window sensor defers
on the triggerer until the window opens, then ``deliver_messages`` sends the day's queued messages
through the webhook Connection to the gateway simulator; a day whose stateful stages did not run
sends nothing. The stages before delivery are not run here (tests/test_daily_dag.py runs them):
the store is given a computed day and its queued messages."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta

import pytest
import yaml
from deliver_rows import SHOP_TZ, seed, statuses, yesterday
from sqlalchemy import insert

from huitouke.store.schema import business_days, segment_kpis

pytestmark = pytest.mark.usefixtures("airflow_db")
DELIVERY_TASKS = ["wait_for_send_window", "deliver_messages"]
WAIT_S = 3  # the window opens this long after the test starts


def _computed(engine, day) -> None:
    """The calendar opened the day and its segments were computed (what delivery asks)."""
    now = datetime(2025, 12, 1)
    with engine.begin() as conn:
        conn.execute(
            insert(business_days).values(business_date=day, status="completed", attempts=1, opened_at=now)
        )
        conn.execute(
            insert(segment_kpis).values(
                business_date=day,
                customers=1,
                paid_orders=1,
                gmv_cents=1,
                churned_customers=0,
                churn_rate=0.0,
                repeat_customers=0,
                repeat_rate=0.0,
                history_rows_closed=0,
                history_rows_opened=0,
                state_fingerprint="0",
                figures="{}",
                computed_at=now,
            )
        )


@pytest.fixture
def configured(tmp_path, monkeypatch, store_url, gateway):
    """The project's configuration with SMS through the webhook Connection (pointing at the
    simulator), a playbook whose send window opens a few seconds from now, the store at store_url."""
    from huitouke.config import project_home

    config = yaml.safe_load((project_home() / "include/huitouke.yaml").read_text())
    config["delivery"] = {"sms": {"provider": "webhook", "conn_id": "huitouke_sms_webhook"}}
    (tmp_path / "huitouke.yaml").write_text(yaml.safe_dump(config, allow_unicode=True))
    playbook = yaml.safe_load((project_home() / "include/playbook.yaml").read_text())
    # Whole seconds, as the playbook's send_window holds it: the window opens at that second.
    opens = (datetime.now(SHOP_TZ) + timedelta(seconds=WAIT_S)).replace(microsecond=0)
    if opens.date() != datetime.now(SHOP_TZ).date() or opens.hour == 23 and opens.minute == 59:
        pytest.skip("the shop's day is about to end: no window can open a few seconds from now")
    playbook["shop"]["send_window"] = {"start": opens.strftime("%H:%M:%S"), "end": "23:59:59"}
    (tmp_path / "playbook.yaml").write_text(yaml.safe_dump(playbook, allow_unicode=True))
    monkeypatch.setenv("HUITOUKE_CONFIG", str(tmp_path / "huitouke.yaml"))
    monkeypatch.setenv("HUITOUKE_PLAYBOOK", str(tmp_path / "playbook.yaml"))
    url = store_url.replace("postgresql+psycopg2://", "postgresql://")
    crm = {"conn_type": "sqlite", "host": url.removeprefix("sqlite:///")} if url.startswith("sqlite") else url
    monkeypatch.setenv("AIRFLOW_CONN_CRM_DB", json.dumps(crm) if isinstance(crm, dict) else crm)
    webhook = {"conn_type": "http", "host": f"{gateway.url}/webhook", "password": "test-token"}
    monkeypatch.setenv("AIRFLOW_CONN_HUITOUKE_SMS_WEBHOOK", json.dumps(webhook))
    gateway.state.reset()
    return opens


def _run_delivery(day):
    from airflow.sdk.definitions._internal.expandinput import EXPAND_INPUT_EMPTY

    from huitouke.dagrun import load_daily_dag, logical_date_for

    dag = load_daily_dag().partial_subset(task_ids=DELIVERY_TASKS, include_upstream=False)
    for task in dag.tasks:
        task.retries = 0
        # Airflow 3.3's partial_subset deep-copies a @task's mapped operator, and with it the
        # EXPAND_INPUT_EMPTY sentinel that the operator checks by identity: put the sentinel back.
        if getattr(task, "op_kwargs_expand_input", None) is not None:
            task.expand_input = EXPAND_INPUT_EMPTY
    run = dag.test(logical_date=logical_date_for(day, "Asia/Shanghai"))
    return str(run.state).rsplit(".", 1)[-1].lower(), _task_instances(run.run_id)


def _task_instances(run_id: str) -> dict[str, tuple[str, float]]:
    """task_id -> (state, seconds from start to end) of the run's task instances."""
    from airflow.models import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        tis = session.query(TaskInstance).filter(TaskInstance.run_id == run_id).all()
        return {
            (ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.rendered_map_index or ti.map_index}]"): (
                str(ti.state),
                (ti.end_date - ti.start_date).total_seconds() if ti.end_date and ti.start_date else 0.0,
            )
            for ti in tis
        }


def test_delivery_waits_deferred_for_the_window_then_sends(store_engine, configured, gateway):
    day = yesterday()
    ids = seed(store_engine, 25, day=day)
    _computed(store_engine, day)
    state, tasks = _run_delivery(day)
    assert state == "success"
    assert datetime.now(SHOP_TZ) >= configured  # it waited for the window...
    # ...in the sensor, which has no poke loop: it only takes that long deferred on the trigger
    assert tasks["wait_for_send_window"][0] == "success" and tasks["wait_for_send_window"][1] >= WAIT_S - 1
    assert {tasks[f"deliver_messages[{ch}]"][0] for ch in ("sms", "email", "call")} == {"success"}
    assert {s for s, _ in statuses(store_engine).values()} == {"sent"}
    assert gateway.state.stats()["accepted"] == len(ids)
    state, _ = _run_delivery(day)  # the DAG's delivery for the same day again: nothing more is sent
    assert state == "success" and gateway.state.stats()["accepted"] == len(ids)


def test_a_day_that_did_not_run_its_stages_sends_nothing(store_engine, configured, gateway):
    day = yesterday()
    seed(store_engine, 5, day=day)  # queued, but the calendar never opened the day
    time.sleep(max((configured - datetime.now(SHOP_TZ)).total_seconds(), 0))
    state, tasks = _run_delivery(day)
    assert state == "success" and tasks["deliver_messages[sms]"][0] == "skipped"
    assert {s for s, _ in statuses(store_engine).values()} == {"queued"}
    assert gateway.state.stats()["accepted"] == 0


def test_three_shards_deliver_side_by_side_and_the_day_is_summed_once(store_engine, configured, gateway):
    """``scale.shards: 3``: one deliver task per channel and shard, named after both; each sends
    its customers' messages; ``summarize_delivery`` logs the whole day once."""
    import os

    path = os.environ["HUITOUKE_CONFIG"]
    config = yaml.safe_load(open(path, encoding="utf-8").read())
    config["scale"] = {"shards": 3}
    with open(path, "w", encoding="utf-8") as out:
        out.write(yaml.safe_dump(config, allow_unicode=True))
    day = yesterday()
    ids = seed(store_engine, 30, day=day)
    _computed(store_engine, day)
    DELIVERY_TASKS.append("summarize_delivery")
    try:
        state, tasks = _run_delivery(day)
    finally:
        DELIVERY_TASKS.remove("summarize_delivery")
    assert state == "success"
    names = {f"deliver_messages[{ch} shard {i}/3]" for ch in ("sms", "email", "call") for i in (1, 2, 3)}
    assert {tasks[n][0] for n in names} == {"success"}
    assert tasks["summarize_delivery"][0] == "success"
    assert {s for s, _ in statuses(store_engine).values()} == {"sent"}
    assert gateway.state.stats()["accepted"] == len(ids)
