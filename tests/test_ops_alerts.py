"""Alerts (huitouke.ops.alerts, huitouke.ops.deadlines) through real servers: the webhook
notifier posts JSON to a small HTTP server started here, the e-mail notifier (the SMTP provider's
SmtpNotifier) sends to a real aiosmtpd server. A failed task, a day's delivery failing above the
configured share, a missed deadline: each alert names ids and counts, never a customer."""

from __future__ import annotations

import json
import os
import threading
from datetime import date
from email import message_from_bytes, policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pendulum
import pytest
from aiosmtpd.controller import Controller
from deliver_rows import phone, seed
from pg_server import free_port

from huitouke.config import ConfigError, load_settings
from huitouke.ops import alerts, deadlines

DAY = date(2025, 12, 12)
DAY_START = pendulum.datetime(2025, 12, 12, tz="Asia/Shanghai")


class Hook(BaseHTTPRequestHandler):
    """Keeps each POST's path, headers and JSON body; answers ``status``."""

    received: list[tuple[str, dict, dict]] = []
    status = 200

    def do_POST(self):  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Hook.received.append((self.path, dict(self.headers), json.loads(body)))
        self.send_response(Hook.status)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def hook_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()


class Mailbox:
    def __init__(self):
        self.messages: list[tuple[str, list[str], bytes]] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's name
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 2.0.0 Ok"


@pytest.fixture(scope="module")
def smtp_server():
    box, port = Mailbox(), free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    yield box, port
    controller.stop()


def configure(tmp_path: Path, monkeypatch, alerts_yaml: str, store_conn: str = "crm_db") -> None:
    path = tmp_path / "huitouke.yaml"
    path.write_text(
        f"store: {{conn_id: {store_conn}}}\n"
        "intake: {source: files, files: {folder: data/exports}}\n"
        f"operations:\n  alerts: {alerts_yaml}\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("HUITOUKE_CONFIG", str(path))


@pytest.fixture
def webhook_alerts(tmp_path, monkeypatch, hook_server):
    Hook.received.clear()
    Hook.status = 200
    conn = {"conn_type": "http", "host": f"http://127.0.0.1:{hook_server}/alerts", "password": "ops-token"}
    monkeypatch.setenv("AIRFLOW_CONN_HUITOUKE_ALERTS", json.dumps(conn))
    configure(tmp_path, monkeypatch, "{notifier: webhook, max_failed_share: 0.1, min_attempted: 10}")
    return Hook.received


def failed_task_context() -> dict:
    ti = SimpleNamespace(dag_id="huitouke_daily", task_id="deliver_messages", map_index=0, try_number=4)
    run = SimpleNamespace(run_id="scheduled__2025-12-11T16:00:00+00:00")
    error = RuntimeError(f"provider refused {phone(1)}")  # the alert carries its type only
    return {"ti": ti, "dag_run": run, "exception": error, "data_interval_start": DAY_START}


def test_a_failed_task_posts_its_ids_to_the_webhook(webhook_alerts):
    alerts.TaskFailureNotifier()(failed_task_context())
    [(path, headers, body)] = webhook_alerts
    assert path == "/alerts" and headers["Authorization"] == "Bearer ops-token"
    assert body["kind"] == "task_failed" and body["task_id"] == "deliver_messages"
    assert body["business_date"] == "2025-12-12" and body["run_id"].startswith("scheduled__")
    assert body["summary"] == "task deliver_messages[0] failed for business day 2025-12-12"
    assert body["details"] == {"map_index": 0, "try_number": 4, "error_type": "RuntimeError"}
    assert phone(1) not in json.dumps(body)


def test_a_webhook_that_refuses_is_logged_not_raised(webhook_alerts, caplog):
    Hook.status = 500
    alerts.TaskFailureNotifier()(failed_task_context())  # the task failed already: no second error
    assert len(webhook_alerts) == 1
    assert "sending the failure alert failed: HTTPError" in caplog.text


def test_a_failed_task_mails_the_ops_team(tmp_path, monkeypatch, smtp_server):
    box, port = smtp_server
    box.messages.clear()
    conn = {
        "conn_type": "smtp",
        "host": "127.0.0.1",
        "port": port,
        "extra": {"disable_tls": True, "disable_ssl": True},
    }
    monkeypatch.setenv("AIRFLOW_CONN_HUITOUKE_ALERTS", json.dumps(conn))
    configure(
        tmp_path, monkeypatch, "{notifier: email, to: [ops@shop.example], from_email: huitouke@shop.example}"
    )
    alerts.TaskFailureNotifier()(failed_task_context())
    [(sender, rcpts, content)] = box.messages
    assert sender == "huitouke@shop.example" and rcpts == ["ops@shop.example"]
    mail = message_from_bytes(content, policy=policy.default)
    assert mail["Subject"] == "[huitouke] task deliver_messages[0] failed for business day 2025-12-12"
    text = mail.get_body(("html",)).get_content()
    assert "RuntimeError" in text and phone(1) not in text and "huitouke_daily" in text


def test_e_mail_alerts_need_recipients(tmp_path, monkeypatch):
    configure(tmp_path, monkeypatch, "{notifier: email}")
    with pytest.raises(ConfigError, match=r"operations\.alerts: notifier is email but there is no to:"):
        load_settings()


def test_deadline_times_must_be_quoted_times(tmp_path, monkeypatch):
    path = tmp_path / "huitouke.yaml"
    path.write_text(
        "intake: {source: files, files: {folder: x}}\noperations:\n  deadlines: {sending_started_by: 10:30}\n"
    )
    monkeypatch.setenv("HUITOUKE_CONFIG", str(path))
    with pytest.raises(
        ConfigError, match=r'operations\.deadlines\.sending_started_by: expected a time .*"10:30"'
    ):
        load_settings()


def test_deliverys_timeout_must_exceed_its_own_waits(tmp_path, monkeypatch):
    path = tmp_path / "huitouke.yaml"
    path.write_text(
        "intake: {source: files, files: {folder: x}}\noperations:\n  timeouts: {deliver_minutes: 5}\n"
    )
    monkeypatch.setenv("HUITOUKE_CONFIG", str(path))
    with pytest.raises(ConfigError, match=r"deliver_minutes \(5\) must exceed delivery's own waits"):
        load_settings()


# ------------------------------------------------------------------------------ the day's failures


def test_the_failure_share_counts_what_was_handed_to_a_provider():
    outcomes = {"sent": 70, "failed": 20, "unsettled": 10, "suppressed": 500, "expired": 9, "retried": 40}
    assert alerts.failure_share(outcomes) == (20, 100)
    summary = {"business_date": "2025-12-12", "outcomes": outcomes}
    assert alerts.delivery_failure_alert(summary, "sms", 0.2, 20) is None  # 20% is not above 20%
    alert = alerts.delivery_failure_alert(summary, "sms", 0.1, 20)
    assert (
        alert.summary
        == "delivery of sms for business day 2025-12-12: 20 of 100 messages failed (20%, above 10%)"
    )
    assert alerts.delivery_failure_alert(summary, "sms", 0.1, 101) is None  # too few to tell


def test_a_day_failing_above_the_share_posts_an_alert_after_its_delivery(webhook_alerts, store_engine, gw):
    """Through the DAG's adapter (which summarize_delivery calls on the day's table) with the real gateway: the numbers it refuses fail, the share is
    above the configured 10%, the alert names the counts."""
    from deliver_rows import job

    from huitouke.deliver.daily import run_day
    from huitouke.deliver.providers.webhook import WebhookProvider
    from huitouke.pipeline import _alert_on_failures

    seed(store_engine, 20)
    for i in range(5):
        gw.state.reject_number(phone(i), "invalid_number")
    provider = WebhookProvider(f"{gw.url}/webhook", "test-token", batch_size=10, timeout_s=0.5)
    summary = run_day(store_engine, job({"sms": provider})).as_dict()
    _alert_on_failures(summary, load_settings())
    [(_, _, body)] = webhook_alerts
    assert body["kind"] == "delivery_failures"
    assert body["details"] == {"channel": "sms", "failed": 5, "attempted": 20, "max_share": 0.1}
    assert phone(0) not in json.dumps(body)


# ------------------------------------------------------------------------------ deadlines


def deadline_context(run_type: str = "scheduled", conf: dict | None = None) -> dict:
    """What the scheduler passes a deadline callback: the run as the REST API shows it."""
    return {
        "dag_run": {
            "dag_id": "huitouke_daily",
            "dag_run_id": "scheduled__2025-12-11T16:00:00+00:00",
            "run_type": run_type,
            "state": "running",
            "data_interval_start": "2025-12-11T16:00:00Z",
            "conf": conf or {},
        },
        "deadline": {"id": "x", "deadline_time": "2025-12-13T02:30:00Z"},
    }


def test_the_dags_deadlines_are_the_morning_after_the_business_day():
    settings = load_settings()
    found = {a.name: a for a in deadlines.deadline_alerts(settings.operations.deadlines)}
    run_by, send_by = found["huitouke run_finished_by"], found["huitouke sending_started_by"]
    assert run_by.interval == pendulum.duration(days=1, hours=14)
    assert send_by.interval == pendulum.duration(days=1, hours=10, minutes=30)
    assert send_by.callback.path == "huitouke.ops.deadlines.sending_not_started"
    assert send_by.callback.kwargs == {"by": "10:30"}


@pytest.fixture
def crm_with_deadline_alerts(webhook_alerts, store_engine, store_url, monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_OPS_CRM",
        json.dumps({"conn_type": "sqlite", "host": store_url.removeprefix("sqlite:///")}),
    )
    path = Path(os.environ["HUITOUKE_CONFIG"])
    path.write_text(path.read_text().replace("conn_id: crm_db", "conn_id: ops_crm"))
    return store_engine


SQLITE_ONLY = pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)


@SQLITE_ONLY
def test_sending_not_started_alerts_with_the_queued_count(crm_with_deadline_alerts):
    seed(crm_with_deadline_alerts, 7, day=DAY)
    assert deadlines.sending_not_started(deadline_context(), by="10:30")
    [(_, _, body)] = Hook.received
    assert body["kind"] == "send_deadline" and body["business_date"] == "2025-12-12"
    assert body["summary"] == (
        "sending for business day 2025-12-12 had not started by 10:30 shop time (7 messages queued); the run is running"
    )


@SQLITE_ONLY
def test_sending_started_or_a_dry_run_or_a_backfill_does_not_alert(crm_with_deadline_alerts):
    from sqlalchemy import update

    from huitouke.store.schema import outbox

    ids = seed(crm_with_deadline_alerts, 3, day=DAY)
    assert not deadlines.sending_not_started(deadline_context(conf={"dry_run": True}), by="10:30")
    assert not deadlines.sending_not_started(deadline_context(run_type="backfill"), by="10:30")
    with crm_with_deadline_alerts.begin() as conn:
        conn.execute(update(outbox).where(outbox.c.message_id == ids[0]).values(status="sent"))
    assert not deadlines.sending_not_started(deadline_context(), by="10:30")
    assert Hook.received == []


def test_a_run_not_finished_by_its_deadline_alerts(webhook_alerts):
    assert deadlines.run_not_finished(deadline_context(), by="14:00")
    [(_, _, body)] = webhook_alerts
    assert (
        body["summary"]
        == "the run for business day 2025-12-12 had not succeeded by 14:00 shop time; the run is running"
    )
    assert not deadlines.run_not_finished(deadline_context(run_type="manual"), by="14:00")


def test_without_a_notifier_an_alert_is_only_logged(tmp_path, monkeypatch, caplog):
    configure(tmp_path, monkeypatch, "{notifier: none}")
    assert not alerts.send_alert(alerts.Alert("run_deadline", "the run for business day x had not finished"))
    assert "alert run_deadline: the run for business day x had not finished" in caplog.text


def test_deadline_context_day_is_shop_time():
    _, day = deadlines._run_facts(deadline_context())  # 16:00 UTC is 00:00 in Shanghai
    assert day == DAY
