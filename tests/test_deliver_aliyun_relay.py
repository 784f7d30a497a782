"""Aliyun SMS's report relay (docs/delivery.md, "Aliyun SMS", receipts and replies), on SQLite and
PostgreSQL: Aliyun's pushes (JSON arrays of SmsReport / SmsUp records) kept once each, read back
by cursor. Most tests call the app the Airflow plugin mounts (``huitouke.ui.app``) through
FastAPI's TestClient, with the tokens and the store handed in. One runs that app under uvicorn on
a loopback port, mounted at ``/huitouke`` as Airflow mounts it, and reads it with the real
:class:`AliyunSmsProvider` through ``huitouke.deliver.feeds``: receipts land on their rows and a
"T" reply becomes an opt-out. The last goes through Airflow's own API app, tokens read from the
Connection."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
from datetime import datetime, timedelta

import pytest
import uvicorn
from airflow_app import airflow_api_client, plugin_wiring
from deliver_rows import phone, seed
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from huitouke.deliver.aliyun_relay import MAX_RECORDS, RelayTokens, records_after, store_push
from huitouke.store.schema import aliyun_push_records, opt_outs, outbox
from huitouke.ui import aliyun_relay as endpoint
from huitouke.ui import data

PUSH_TOKEN = "push-token-of-the-relay-0000"
PULL_TOKEN = "pull-token-of-the-relay-1111"
TOKENS = RelayTokens(push=PUSH_TOKEN, pull=PULL_TOKEN, keep_days=30)
PULL = {"Authorization": f"Bearer {PULL_TOKEN}"}
RECEIVED = {"code": 0, "msg": "接收成功"}


def report(i: int, biz_id: str = "BIZ1", success: bool = True) -> dict:
    """An SmsReport record as Aliyun pushes it (its documented fields)."""
    return {
        "phone_number": phone(i).removeprefix("+86"),
        "send_time": "2026-12-06 10:00:00",
        "report_time": f"2026-12-06 10:00:{i:02d}",
        "success": success,
        "err_code": "DELIVERED" if success else "MK:0001",
        "err_msg": "用户接收成功" if success else "用户接收失败",
        "sms_size": "1",
        "biz_id": biz_id,
        "out_id": "htk:thank_you",
    }


def sms_up(i: int, content: str = "T", sequence_id: int | None = None) -> dict:
    """An SmsUp record as Aliyun pushes it."""
    return {
        "phone_number": phone(i).removeprefix("+86"),
        "send_time": "2026-12-06 10:05:00",
        "content": content,
        "sign_name": "小店",
        "dest_code": "1234",
        "sequence_id": 1000 + i if sequence_id is None else sequence_id,
    }


@pytest.fixture
def relay(store_engine, monkeypatch):
    """The relay on a store, on SQLite and on PostgreSQL."""
    monkeypatch.setattr(endpoint, "configured_tokens", lambda: TOKENS)
    monkeypatch.setattr(endpoint, "configured_engine", lambda: store_engine)
    return store_engine


@pytest.fixture
def sqlite_relay(tmp_path, monkeypatch):
    """The relay on a SQLite store only: for what is checked before the store is reached."""
    from huitouke.store.connection import make_engine
    from huitouke.store.migrate import upgrade

    engine = make_engine(f"sqlite:///{tmp_path / 'crm.sqlite'}")
    upgrade(engine)
    monkeypatch.setattr(endpoint, "configured_tokens", lambda: TOKENS)
    monkeypatch.setattr(endpoint, "configured_engine", lambda: engine)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def client() -> TestClient:
    from huitouke.ui.app import create_app

    return TestClient(create_app())  # authenticated like the plugin's: its pages need a login


def push(client, feed: str, records, token: str = PUSH_TOKEN):
    return client.post(f"/aliyun/{feed}", params={"token": token}, json=records)


def pull(client, feed: str, cursor: str | None = None) -> dict:
    response = client.get(f"/aliyun/{feed}", params={"cursor": cursor} if cursor else None, headers=PULL)
    assert response.status_code == 200
    return response.json()


def kept(engine) -> int:
    with engine.connect() as conn:
        return len(conn.execute(select(aliyun_push_records.c.record_id)).all())


def test_a_push_is_kept_answered_as_aliyun_expects_and_pulled_in_order(relay, client):
    reports = [report(i) for i in range(3)]
    response = push(client, "sms_report", reports)
    assert response.status_code == 200 and response.json() == RECEIVED

    page = pull(client, "sms_report")
    assert page["messages"] == reports  # as Aliyun pushed them, in order
    assert pull(client, "sms_report", page["cursor"]) == {"messages": [], "cursor": page["cursor"]}
    assert pull(client, "sms_up") == {"messages": [], "cursor": "0"}  # the feeds are apart

    assert push(client, "sms_up", [sms_up(1)]).json() == RECEIVED
    assert push(client, "sms_report", [report(3)]).json() == RECEIVED
    assert pull(client, "sms_report", page["cursor"])["messages"] == [report(3)]
    assert pull(client, "sms_up")["messages"] == [sms_up(1)]


def test_a_repeated_push_stores_nothing_new(relay, client):
    batch = [report(0), report(1), report(1)]  # a record twice in one push, too
    assert push(client, "sms_report", batch).json() == RECEIVED
    assert push(client, "sms_report", batch).json() == RECEIVED  # Aliyun's retry: answered the same
    assert push(client, "sms_report", [report(1), report(2)]).json() == RECEIVED
    assert [m["phone_number"] for m in pull(client, "sms_report")["messages"]] == [
        phone(i).removeprefix("+86") for i in range(3)
    ]
    assert push(client, "sms_up", [sms_up(1)]).json() == RECEIVED
    assert push(client, "sms_up", [sms_up(1), sms_up(2, "退订")]).json() == RECEIVED
    assert [m["sequence_id"] for m in pull(client, "sms_up")["messages"]] == [1001, 1002]
    assert kept(relay) == 5


def test_wrong_tokens_are_refused_and_nothing_is_kept(sqlite_relay, client):
    for token in ("", "wrong", PULL_TOKEN, PUSH_TOKEN[:-1]):
        response = push(client, "sms_report", [report(0)], token=token)
        assert response.status_code == 403 and response.json()["code"] != 0
    assert client.post("/aliyun/sms_up", json=[sms_up(0)]).status_code == 403
    assert kept(sqlite_relay) == 0
    push(client, "sms_report", [report(0)])
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Bearer {PUSH_TOKEN}"},
                    {"Authorization": PULL_TOKEN}, {"Authorization": f"Basic {PULL_TOKEN}"}):  # fmt: skip
        response = client.get("/aliyun/sms_report", headers=headers)
        assert response.status_code == 401 and "messages" not in response.json()
        assert response.headers["www-authenticate"] == "Bearer"


BAD_BODIES = [
    (b"not json", 400),
    (b"\xff\xfe", 400),
    (b'{"phone_number": "13800000000"}', 400),  # an object, not an array
    (b"[1, 2]", 400),
    (b'[{"phone_number": {"nested": 1}}]', 400),
    (b'[{"content": "T"}]', 400),  # no phone_number
    (json.dumps([report(0)] * (MAX_RECORDS + 1)).encode(), 400),
    (b"[" + b" " * 1_000_001 + b"]", 413),
]


def test_a_bad_body_is_refused_with_a_one_line_reason_and_nothing_is_kept(sqlite_relay, client, caplog):
    caplog.set_level(logging.INFO, logger="huitouke")
    for body, status in BAD_BODIES:
        response = client.post(
            "/aliyun/sms_report", params={"token": PUSH_TOKEN}, content=body,
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        assert response.status_code == status, body[:40]
        answer = response.json()
        assert answer["code"] != 0 and "\n" not in answer["msg"] and len(answer["msg"]) < 120
        assert "Traceback" not in response.text and "13800000000" not in response.text
    assert kept(sqlite_relay) == 0
    assert "13800000000" not in caplog.text and "Traceback" not in caplog.text
    assert client.get("/aliyun/sms_report", params={"cursor": "abc"}, headers=PULL).status_code == 400


def test_nothing_personal_is_logged(sqlite_relay, client, caplog):
    caplog.set_level(logging.DEBUG, logger="huitouke")  # an earlier CLI test may have raised its level
    push(client, "sms_up", [sms_up(7, "退订 张三")])
    pull(client, "sms_up")
    assert phone(7).removeprefix("+86") not in caplog.text and "张三" not in caplog.text
    assert "sms_up push of 1 records, 1 new" in caplog.text


def test_without_a_relay_or_with_a_broken_one_nothing_is_kept(sqlite_relay, client, monkeypatch):
    monkeypatch.setattr(endpoint, "configured_tokens", lambda: None)  # delivery.aliyun_relay_conn_id unset
    assert push(client, "sms_report", [report(0)]).status_code == 404
    assert client.get("/aliyun/sms_report", headers=PULL).status_code == 404

    def broken():
        raise ValueError("Connection 'huitouke_aliyun_relay': the push token must be at least 16 bytes")

    monkeypatch.setattr(endpoint, "configured_tokens", broken)
    response = push(client, "sms_report", [report(0)])
    assert response.status_code == 503 and "huitouke_aliyun_relay" not in response.text
    monkeypatch.setattr(endpoint, "configured_tokens", lambda: TOKENS)

    def down():
        raise data.StoreProblem("The CRM store (crm_db) is at schema revision none")

    monkeypatch.setattr(endpoint, "configured_engine", down)
    response = push(client, "sms_report", [report(0)])  # not 200: Aliyun pushes again later
    assert response.status_code == 503 and "crm_db" not in response.text
    assert client.get("/aliyun/sms_report", headers=PULL).status_code == 503
    monkeypatch.setattr(endpoint, "configured_engine", lambda: sqlite_relay)
    assert kept(sqlite_relay) == 0


def test_records_older_than_the_retention_are_deleted_when_a_push_is_kept(store_engine):
    start = datetime(2026, 11, 1, 12)
    assert store_push(store_engine, "sms_report", [report(0)], start, keep_days=30) == 1
    assert store_push(store_engine, "sms_up", [sms_up(0)], start + timedelta(days=20), keep_days=30) == 1
    assert store_push(store_engine, "sms_report", [report(1)], start + timedelta(days=31), keep_days=30) == 1
    assert [m["phone_number"] for m in records_after(store_engine, "sms_report", 0)[0]] == ["13800000001"]
    assert len(records_after(store_engine, "sms_up", 0)[0]) == 1
    records, cursor = records_after(store_engine, "sms_report", 0, limit=1)
    assert len(records) == 1 and records_after(store_engine, "sms_report", cursor) == ([], cursor)


# ----------------------------------------------------------------------- end to end, over HTTP


class Served:
    """An app under uvicorn on a loopback port, in a thread (the provider needs a real URL)."""

    def __init__(self, app: FastAPI) -> None:
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}"
        config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=lambda: asyncio.run(self.server.serve([self.socket])))

    def __enter__(self) -> Served:
        self.thread.start()
        while not self.server.started and self.thread.is_alive():
            threading.Event().wait(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(5)
        self.socket.close()


def test_the_aliyun_provider_reads_the_relay_and_a_t_reply_becomes_an_opt_out(relay):
    from huitouke.deliver.feeds import pull_feeds
    from huitouke.deliver.providers.aliyun import AliyunSettings, AliyunSmsProvider
    from huitouke.ui.app import create_app

    ids = seed(relay, 3)
    with relay.begin() as conn:
        conn.execute(update(outbox).values(status="sent", provider="aliyun", provider_message_id="BIZ1"))
    airflow = FastAPI()
    airflow.mount("/huitouke", create_app())  # as the api-server mounts the plugin's app
    with Served(airflow) as served, TestClient(airflow) as aliyun:
        pushed = aliyun.post("/huitouke/aliyun/sms_report", params={"token": PUSH_TOKEN},
                             json=[report(0), report(1, success=False)])  # fmt: skip
        assert pushed.json() == RECEIVED
        assert aliyun.post("/huitouke/aliyun/sms_up", params={"token": PUSH_TOKEN},
                           json=[sms_up(1, "Ｔ"), sms_up(2, "谢谢")]).json() == RECEIVED  # fmt: skip
        sms = AliyunSmsProvider(
            AliyunSettings(
                access_key_id="LTAI-test", access_key_secret="x" * 16, endpoint="127.0.0.1:9",
                report_url=f"{served.url}/huitouke/aliyun", report_token=PULL_TOKEN,
                timeout_s=5, connect_timeout_s=5,
            )
        )  # fmt: skip
        counts = pull_feeds(relay, sms, datetime(2026, 12, 6, 3))
        again = pull_feeds(relay, sms, datetime(2026, 12, 6, 4))

    assert (counts.receipts, counts.delivered, counts.undelivered) == (2, 1, 1)
    assert (counts.replies, counts.opt_outs) == (2, 1)
    assert (again.receipts, again.replies, again.opt_outs) == (0, 0, 0)  # the cursors moved
    with relay.connect() as conn:
        receipts = {r.message_id: (r.receipt, r.receipt_code) for r in conn.execute(select(outbox))}
        stops = [(r.customer_id, r.channel, r.source) for r in conn.execute(select(opt_outs))]
    assert receipts == {ids[0]: ("delivered", "DELIVERED"), ids[1]: ("undelivered", "MK:0001"),
                        ids[2]: (None, None)}  # fmt: skip
    assert stops == [("c1", "sms", "reply")]


# ----------------------------------------------------------------------------- Airflow, for real


@pytest.fixture(scope="module")
def airflow_client(airflow_db):
    yield from airflow_api_client()


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
def test_inside_airflow_the_relay_needs_no_login_and_reads_its_tokens_from_the_connection(
    airflow_client, monkeypatch, tmp_path
):
    connection = {"conn_type": "generic", "password": PUSH_TOKEN, "extra": {"pull_token": PULL_TOKEN}}
    plugin_wiring(  # the shipped configuration, the relay turned on
        monkeypatch,
        tmp_path,
        ("aliyun_relay_conn_id: null", "aliyun_relay_conn_id: huitouke_aliyun_relay"),
        ("huitouke_aliyun_relay", connection),
    )
    airflow_client.cookies.clear()

    assert airflow_client.get("/huitouke/results").status_code == 401  # the rest of the plugin: login
    pushed = airflow_client.post("/huitouke/aliyun/sms_up", params={"token": PUSH_TOKEN}, json=[sms_up(3)])
    assert pushed.status_code == 200 and pushed.json() == RECEIVED
    page = airflow_client.get("/huitouke/aliyun/sms_up", headers=PULL)
    assert page.status_code == 200 and page.json()["messages"] == [sms_up(3)]
    wrong = airflow_client.get("/huitouke/aliyun/sms_up", headers={"Authorization": f"Bearer {PUSH_TOKEN}"})
    assert wrong.status_code == 401


def test_the_tokens_come_from_the_connection_and_must_be_long_and_different(monkeypatch):
    from huitouke.config import DeliverySettings
    from huitouke.deliver.wiring import aliyun_relay_tokens

    assert aliyun_relay_tokens(DeliverySettings()) is None  # the relay is off by default
    settings = DeliverySettings(aliyun_relay_conn_id="huitouke_aliyun_relay", aliyun_relay_keep_days=7)

    def connection(password: str, pull_token: str | None) -> None:
        extra = {"pull_token": pull_token} if pull_token is not None else {}
        value = json.dumps({"conn_type": "generic", "password": password, "extra": extra})
        monkeypatch.setenv("AIRFLOW_CONN_HUITOUKE_ALIYUN_RELAY", value)

    connection(PUSH_TOKEN, PULL_TOKEN)
    tokens = aliyun_relay_tokens(settings)
    assert (tokens.push, tokens.pull, tokens.keep_days) == (PUSH_TOKEN, PULL_TOKEN, 7)
    assert PUSH_TOKEN not in repr(tokens) and PULL_TOKEN not in repr(tokens)
    for push_token, pull_token in ((PUSH_TOKEN, None), ("short", PULL_TOKEN), (PUSH_TOKEN, PUSH_TOKEN)):
        connection(push_token, pull_token)
        with pytest.raises(ValueError, match="huitouke_aliyun_relay") as refused:
            aliyun_relay_tokens(settings)
        assert PUSH_TOKEN not in str(refused.value)
