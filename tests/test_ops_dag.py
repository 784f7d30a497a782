"""The operations wiring of the daily DAG (docs/operations.md), through Airflow: the params, the
failure notifier in default_args, the deadlines, timeouts and pools as the DAG file declares them,
and ``dag.test`` runs with ``dry_run`` (nothing sent, the messages stay queued for the next real
run) and with an unknown campaign (the run fails at its first task, naming it, and the failure
alert reaches a real HTTP server)."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml
from deliver_rows import seed, statuses, yesterday
from test_deliver_dag import _computed, _task_instances

from huitouke.ops.params import RunOptions, RunParamError, run_options

pytestmark = pytest.mark.usefixtures("airflow_db")
SQLITE_ONLY = pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
DELIVERY_TASKS = ["wait_for_send_window", "deliver_messages"]


@pytest.fixture(scope="module")
def dag():
    from huitouke.dagrun import load_daily_dag

    return load_daily_dag()


def test_the_params_have_json_schemas(dag):
    params = dag.params.dump()
    assert params["dry_run"] is False and params["campaigns"] == []
    schema = dag.params.get_param("campaigns").schema
    assert schema["type"] == "array" and schema["items"]["type"] == "string"
    assert dag.params.get_param("dry_run").schema["type"] == "boolean"


def test_every_task_has_a_timeout_and_the_failure_notifier(dag):
    from huitouke.ops.alerts import TaskFailureNotifier

    for task in dag.tasks:
        callbacks = (
            task.on_failure_callback
            if isinstance(task.on_failure_callback, list)
            else [task.on_failure_callback]
        )
        assert any(isinstance(c, TaskFailureNotifier) for c in callbacks), task.task_id
        if task.task_id == "wait_for_send_window":  # deferred on the triggerer: its own timeout
            assert task.execution_timeout is None and task.timeout == 36 * 3600
        else:
            assert task.execution_timeout is not None, task.task_id
    deliver = dag.get_task("deliver_messages")
    assert deliver.execution_timeout == timedelta(minutes=780)
    assert deliver.execution_timeout.total_seconds() > 120 + 60 + 300  # lease + settle + max wait
    assert deliver.max_active_tis_per_dagrun == 3
    assert dag.get_task("intake_orders").execution_timeout == timedelta(minutes=60)


def test_the_dag_declares_both_deadlines(dag):
    from huitouke.dagrun import load_daily_dag

    assert dag.deadline is None  # dropped for dag.test (huitouke.dagrun.load_daily_dag)
    declared = load_daily_dag(deadlines=True).deadline
    assert sorted(a.name for a in declared) == ["huitouke run_finished_by", "huitouke sending_started_by"]


def test_delivery_takes_the_send_pool_when_configured(tmp_path, monkeypatch):
    from huitouke.config import project_home
    from huitouke.dagrun import load_daily_dag

    config = yaml.safe_load((project_home() / "include/huitouke.yaml").read_text())
    config["operations"]["send_pool"] = "huitouke_send"
    (tmp_path / "huitouke.yaml").write_text(yaml.safe_dump(config, allow_unicode=True))
    monkeypatch.setenv("HUITOUKE_CONFIG", str(tmp_path / "huitouke.yaml"))
    dag = load_daily_dag()
    assert dag.get_task("deliver_messages").pool == "huitouke_send"
    assert {dag.get_task(t).pool for t in ("intake_orders", "render_messages")} == {"huitouke_store"}


# ------------------------------------------------------------------------------ the params' check


def test_the_task_check_names_the_bad_value():
    known = ["thank_you", "care_tips"]
    assert run_options(None, known) == RunOptions()
    assert run_options({"dry_run": True, "campaigns": ["care_tips"]}, known) == RunOptions(
        True, ("care_tips",)
    )
    assert run_options({"campaigns": []}, known).campaigns is None
    with pytest.raises(RunParamError) as err:
        run_options({"campaigns": ["care_tips", "black_friday"]}, known)
    assert str(err.value) == (
        "param campaigns: unknown campaign 'black_friday'; the playbook's campaigns: thank_you, care_tips"
    )
    with pytest.raises(RunParamError, match=r"^param dry_run: expected true or false, got 'yes'$"):
        run_options({"dry_run": "yes"}, known)
    with pytest.raises(
        RunParamError, match=r"^param campaigns: expected a list of campaign names, got 'care_tips'$"
    ):
        run_options({"campaigns": "care_tips"}, known)


def test_a_campaign_left_out_is_not_rendered():
    from airflow.sdk.exceptions import AirflowSkipException

    from huitouke.pipeline import render_messages

    with pytest.raises(AirflowSkipException, match="campaign birthday is not among the run's campaigns"):
        render_messages(None, "birthday", conf={"campaigns": ["thank_you"]})


# ------------------------------------------------------------------------------ through dag.test


class Hook(BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self):  # noqa: N802 - http.server's name
        Hook.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def configured(tmp_path, monkeypatch, store_url, gateway):
    """SMS through the simulator, alerts to a small HTTP server, a send window all day long."""
    from huitouke.config import project_home

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    Hook.received.clear()
    config = yaml.safe_load((project_home() / "include/huitouke.yaml").read_text())
    config["delivery"] = {"sms": {"provider": "webhook", "conn_id": "huitouke_sms_webhook"}}
    config["operations"]["alerts"]["notifier"] = "webhook"
    (tmp_path / "huitouke.yaml").write_text(yaml.safe_dump(config, allow_unicode=True))
    playbook = yaml.safe_load((project_home() / "include/playbook.yaml").read_text())
    playbook["shop"]["send_window"] = {"start": "00:00:00", "end": "23:59:59"}
    (tmp_path / "playbook.yaml").write_text(yaml.safe_dump(playbook, allow_unicode=True))
    monkeypatch.setenv("HUITOUKE_CONFIG", str(tmp_path / "huitouke.yaml"))
    monkeypatch.setenv("HUITOUKE_PLAYBOOK", str(tmp_path / "playbook.yaml"))
    crm = {"conn_type": "sqlite", "host": store_url.removeprefix("sqlite:///")}
    monkeypatch.setenv("AIRFLOW_CONN_CRM_DB", json.dumps(crm))
    webhook = {"conn_type": "http", "host": f"{gateway.url}/webhook", "password": "test-token"}
    monkeypatch.setenv("AIRFLOW_CONN_HUITOUKE_SMS_WEBHOOK", json.dumps(webhook))
    alerts = {"conn_type": "http", "host": f"http://127.0.0.1:{server.server_address[1]}/alerts"}
    monkeypatch.setenv("AIRFLOW_CONN_HUITOUKE_ALERTS", json.dumps(alerts))
    gateway.state.reset()
    yield
    server.shutdown()


def _run(day, task_ids, conf=None):
    from airflow.sdk.definitions._internal.expandinput import EXPAND_INPUT_EMPTY

    from huitouke.dagrun import load_daily_dag, logical_date_for

    dag = load_daily_dag().partial_subset(task_ids=task_ids, include_upstream=False)
    for task in dag.tasks:
        task.retries = 0
        if getattr(task, "op_kwargs_expand_input", None) is not None:  # see test_deliver_dag
            task.expand_input = EXPAND_INPUT_EMPTY
    run = dag.test(logical_date=logical_date_for(day, "Asia/Shanghai"), run_conf=conf)
    return str(run.state).rsplit(".", 1)[-1].lower(), _task_instances(run.run_id)


@SQLITE_ONLY
def test_a_dry_run_sends_nothing_and_the_next_real_run_sends_it(store_engine, configured, gateway):
    day = yesterday()
    ids = seed(store_engine, 6, day=day)
    _computed(store_engine, day)
    state, tasks = _run(day, DELIVERY_TASKS, {"dry_run": True})
    assert state == "success" and tasks["wait_for_send_window"][0] == "success"
    assert {tasks[f"deliver_messages[{ch}]"][0] for ch in ("sms", "email", "call")} == {"skipped"}
    assert {s for s, _ in statuses(store_engine).values()} == {"queued"}
    assert gateway.state.stats()["accepted"] == 0 and Hook.received == []

    state, tasks = _run(day, DELIVERY_TASKS)
    assert state == "success" and tasks["deliver_messages[sms]"][0] == "success"
    assert {s for s, _ in statuses(store_engine).values()} == {"sent"}
    assert gateway.state.stats()["accepted"] == len(ids)


@SQLITE_ONLY
def test_an_unknown_campaign_fails_the_run_at_its_first_task_and_alerts(store_engine, configured):
    state, tasks = _run(yesterday(), ["check_crm_schema"], {"campaigns": ["thank_you", "black_friday"]})
    assert state == "failed" and tasks["check_crm_schema"][0] == "failed"
    [alert] = Hook.received
    assert alert["kind"] == "task_failed" and alert["task_id"] == "check_crm_schema"
    assert alert["details"]["error_type"] == "AirflowFailException"
