"""The webhook provider against real HTTP servers over loopback: the gateway simulator (every fault
it injects maps to the Fate docs/delivery.md promises) and, for answers the simulator never gives
(a 200 that omits a message, a proxy's 504, a redirect), a scripted server answering as told."""

from __future__ import annotations

import json
import socket
import threading
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest
import requests

from huitouke.deliver.providers.base import Fate, OutgoingMessage, StatusAnswer
from huitouke.deliver.providers.webhook import (
    WebhookConfigError,
    WebhookProvider,
    base_url_from_connection,
)


def _message(n: int, **fields) -> OutgoingMessage:
    values = {
        "message_id": n,
        "out_id": f"htk-{n}",
        "channel": "sms",
        "recipient": f"+86138{n:08d}",
        "body": "【小店】您的优惠券已到账 回T退订",
        "template": "sms/coupon",
        "campaign": "new_customer_coupon",
    }
    return OutgoingMessage(**{**values, **fields})


@pytest.fixture
def provider(gw):
    p = WebhookProvider(f"{gw.url}/webhook", "test-token", timeout_s=2.0)
    yield p
    p.close()


def _fates(outcomes) -> list[Fate]:
    return [o.fate for o in sorted(outcomes, key=lambda o: o.message_id)]


def test_a_batch_is_one_call_and_every_message_is_accepted(gw, provider):
    messages = [_message(n) for n in range(100)]
    outcomes = provider.send(messages)
    assert _fates(outcomes) == [Fate.ACCEPTED] * 100
    recorded = {m["out_id"]: m for m in gw.state.accepted()}
    assert {o.provider_message_id for o in outcomes} == {m["provider_id"] for m in recorded.values()}
    assert recorded["htk-7"]["text"] == messages[7].body
    assert recorded["htk-7"]["extra"] == {"campaign": "new_customer_coupon", "template": "sms/coupon"}
    assert gw.state.stats()["calls"] == {"webhook": 1}


@pytest.mark.parametrize(
    ("code", "fate", "opt_out"),
    [
        ("invalid_number", Fate.FAILED, False),
        ("unsubscribed", Fate.FAILED, True),
        ("template_refused", Fate.CAMPAIGN_FAILED, False),
        ("rate_limited", Fate.RETRY, False),
        ("blacklisted_content", Fate.FAILED, False),
    ],
)
def test_rejections_map_by_code(gw, provider, code, fate, opt_out):
    rejected = _message(2)
    gw.state.reject_number(rejected.recipient, code)
    outcomes = sorted(provider.send([_message(1), rejected]), key=lambda o: o.message_id)
    assert outcomes[0].fate is Fate.ACCEPTED
    assert (outcomes[1].fate, outcomes[1].opt_out) == (fate, opt_out)
    assert outcomes[1].reason.startswith(code) and rejected.recipient not in outcomes[1].reason


def test_invalid_numbers_from_the_dice_fail_each_message(gw, provider):
    gw.state.set_faults(rate_invalid_number=1.0)
    assert _fates(provider.send([_message(1), _message(2)])) == [Fate.FAILED, Fate.FAILED]
    assert gw.state.stats()["accepted"] == 0


def test_429_is_retry_after_the_gateways_delay(gw, provider):
    gw.state.set_faults(rate_429=1.0, retry_after_s=7)
    outcomes = provider.send([_message(1), _message(2)])
    assert [(o.fate, o.retry_after_s) for o in outcomes] == [(Fate.RETRY, 7.0)] * 2


def test_5xx_is_retry_and_nothing_was_accepted(gw, provider):
    gw.state.set_faults(rate_5xx=1.0)
    outcomes = provider.send([_message(1)])
    assert outcomes[0].fate is Fate.RETRY and outcomes[0].reason.startswith("HTTP 503")
    assert gw.state.stats()["accepted"] == 0


def test_out_of_balance_pauses(gw, provider):
    gw.state.set_faults(insufficient_balance=True)
    outcomes = provider.send([_message(1)])
    assert outcomes[0].fate is Fate.PAUSE and "insufficient_balance" in outcomes[0].reason


def test_a_wrong_token_pauses(gw):
    wrong = WebhookProvider(f"{gw.url}/webhook", "not-the-token")
    assert _fates(wrong.send([_message(1)])) == [Fate.PAUSE]
    assert wrong.status(_message(1), None) is StatusAnswer.UNKNOWN


def test_a_wrong_url_pauses(gw):
    wrong = WebhookProvider(f"{gw.url}/no-such-path", "test-token")
    assert _fates(wrong.send([_message(1)])) == [Fate.PAUSE]


def test_a_request_the_gateway_refuses_fails_its_messages_not_their_campaigns(gw, provider):
    outcomes = provider.send([_message(1, recipient="")])
    assert outcomes[0].fate is Fate.FAILED and outcomes[0].reason.startswith("HTTP 400: bad_request")


def test_a_refused_connection_is_retry():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    provider = WebhookProvider(f"http://127.0.0.1:{port}/webhook", "t", timeout_s=1.0)
    outcomes = provider.send([_message(1)])
    assert outcomes[0].fate is Fate.RETRY and "nothing was sent" in outcomes[0].reason
    assert provider.status(_message(1), None) is StatusAnswer.UNKNOWN


def test_a_dropped_connection_is_unknown_and_the_status_query_finds_it(gw, provider):
    gw.state.set_faults(rate_drop=1.0)
    outcomes = provider.send([_message(1), _message(2)])
    assert _fates(outcomes) == [Fate.UNKNOWN, Fate.UNKNOWN]
    assert "after the request was sent" in outcomes[0].reason
    gw.state.set_faults(rate_drop=0.0)
    assert provider.status(_message(2), None) is StatusAnswer.ACCEPTED
    assert provider.status(_message(3), None) is StatusAnswer.NOT_ACCEPTED


@pytest.mark.parametrize(
    ("accepts", "answer"), [(1.0, StatusAnswer.ACCEPTED), (0.0, StatusAnswer.NOT_ACCEPTED)]
)
def test_a_timeout_is_unknown_and_the_status_query_settles_it(gw, accepts, answer):
    gw.state.set_faults(rate_timeout=1.0, hang_s=1.0, timeout_accepts=accepts)
    provider = WebhookProvider(f"{gw.url}/webhook", "test-token", timeout_s=0.3)
    assert _fates(provider.send([_message(1)])) == [Fate.UNKNOWN]
    gw.state.set_faults(rate_timeout=0.0)
    assert provider.status(_message(1), None) is answer


def test_receipts_and_replies_pull_with_cursors(gw, provider):
    gw.state.set_faults(rate_reply_t=1.0, rate_undelivered=0.5, seed=2)
    provider.send([_message(n) for n in range(1, 11)])
    receipts, cursor = provider.receipts(None)
    assert sorted(r.out_id for r in receipts) == sorted(f"htk-{n}" for n in range(1, 11))
    assert {r.delivered for r in receipts} == {True, False}
    assert all(r.code and r.provider_message_id and r.at.tzinfo for r in receipts)
    assert provider.receipts(cursor) == ([], cursor)
    provider.send([_message(11)])
    later, _ = provider.receipts(cursor)
    assert [r.out_id for r in later] == ["htk-11"]

    replies, reply_cursor = provider.replies(None)
    assert len(replies) == 11 and {r.text for r in replies} == {"T"}
    assert isinstance(replies[0].at, datetime) and replies[0].at.tzinfo
    gw.state.add_reply("+8613900000000", "退订")
    more, _ = provider.replies(reply_cursor)
    assert [(r.sender, r.text) for r in more] == [("+8613900000000", "退订")]


def test_a_failed_pull_keeps_the_cursor(gw):
    wrong = WebhookProvider(f"{gw.url}/webhook", "not-the-token")
    assert wrong.receipts("5") == ([], "5")
    assert wrong.replies(None) == ([], None)


# -- answers the simulator never gives: a scripted server --------------------------------------


class _Scripted(BaseHTTPRequestHandler):
    def _answer(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        status, headers, body = self.server.answer
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _answer

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def scripted():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Scripted)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd
    httpd.shutdown()


def _scripted_send(scripted, status, body, headers=None, messages=None):
    scripted.answer = (status, headers or {}, body)
    provider = WebhookProvider(f"http://127.0.0.1:{scripted.server_port}/api", "t")
    return sorted(provider.send(messages or [_message(1), _message(2)]), key=lambda o: o.message_id)


def test_a_message_the_answer_omits_is_unknown(scripted):
    body = {"results": [{"id": "htk-1", "status": "accepted", "provider_id": "p1", "segments": 2}]}
    first, second = _scripted_send(scripted, 200, body)
    assert (first.fate, first.provider_message_id, first.billed_segments) == (Fate.ACCEPTED, "p1", 2)
    assert second.fate is Fate.UNKNOWN


@pytest.mark.parametrize(
    ("status", "body", "fate"),
    [
        (200, b"<html>ok</html>", Fate.UNKNOWN),  # a 200 we cannot read may have accepted
        (200, {"results": [{"id": "htk-1", "status": "queued"}]}, Fate.UNKNOWN),
        (504, b"upstream timed out", Fate.UNKNOWN),  # a proxy: the gateway may have taken it
        (502, b"bad gateway", Fate.UNKNOWN),
        (500, {"code": "oops"}, Fate.RETRY),
        (302, b"", Fate.UNKNOWN),
        (413, b"too large", Fate.PAUSE),
        (422, {"code": "bad_sign", "message": "signature not approved"}, Fate.FAILED),
    ],
)
def test_whole_call_answers(scripted, status, body, fate):
    assert {o.fate for o in _scripted_send(scripted, status, body)} == {fate}


def test_retry_after_as_an_http_date(scripted):
    outcome = _scripted_send(scripted, 429, b"", {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})[0]
    assert (outcome.fate, outcome.retry_after_s) == (Fate.RETRY, 0.0)


def test_reasons_never_carry_the_recipient(scripted):
    message = _message(1, recipient="+8613812345678")
    body = {"results": [{"id": "htk-1", "status": "rejected", "code": "x", "message": "bad +8613812345678"}]}
    (outcome,) = _scripted_send(scripted, 200, body, messages=[message])
    assert "12345678" not in outcome.reason and "****5678" in outcome.reason
    (outcome,) = _scripted_send(scripted, 400, {"message": "number 13812345678 refused"}, messages=[message])
    assert "12345678" not in outcome.reason


def test_a_bare_404_is_not_a_confirmation(scripted):
    scripted.answer = (404, {}, b"Not Found")
    provider = WebhookProvider(f"http://127.0.0.1:{scripted.server_port}/api", "t")
    assert provider.status(_message(1), None) is StatusAnswer.UNKNOWN
    scripted.answer = (404, {}, {"id": "htk-1"})
    assert provider.status(_message(1), None) is StatusAnswer.NOT_ACCEPTED


# -- configuration -----------------------------------------------------------------------------


def _conn(**fields):
    values = {
        "conn_id": "c",
        "host": None,
        "port": None,
        "schema": None,
        "password": "tok",
        "extra_dejson": {},
    }
    return SimpleNamespace(**{**values, **fields})


@pytest.mark.parametrize(
    ("fields", "url"),
    [
        ({"host": "http://127.0.0.1:8765/webhook"}, "http://127.0.0.1:8765/webhook"),
        ({"host": "http://gw.local/webhook/", "port": 9000}, "http://gw.local:9000/webhook"),
        ({"host": "gw.local", "port": 8765, "schema": "webhook"}, "http://gw.local:8765/webhook"),
        ({"host": "gw.local", "schema": "https", "extra_dejson": {"path": "/sms"}}, "https://gw.local/sms"),
    ],
)
def test_base_url_from_a_connection(fields, url):
    assert base_url_from_connection(_conn(**fields)) == url


def test_settings_from_the_connections_extras(monkeypatch):
    extra = {"batch_size": 500, "timeout_s": 3, "max_concurrency": 8, "rate_per_s": 20}
    value = {
        "conn_type": "http",
        "host": "http://127.0.0.1:8765/webhook",
        "password": "secret-token",
        "extra": extra,
    }
    monkeypatch.setenv("AIRFLOW_CONN_HUITOUKE_SMS_WEBHOOK", json.dumps(value))
    provider = WebhookProvider.from_connection()
    assert (provider.base_url, provider.batch_size, provider.timeout_s) == (
        "http://127.0.0.1:8765/webhook",
        500,
        3.0,
    )
    assert (provider.max_concurrency, provider.rate_per_s) == (8, 20.0)
    assert provider.session.headers["Authorization"] == "Bearer secret-token"
    assert provider.session.get_adapter("http://x")._pool_maxsize >= 8


def test_bad_configuration_is_refused(monkeypatch):
    with pytest.raises(WebhookConfigError, match="batch_size"):
        WebhookProvider("http://127.0.0.1:1/webhook", "t", batch_size=1001)
    with pytest.raises(WebhookConfigError, match="base URL"):
        WebhookProvider("127.0.0.1:8765", "t")
    with pytest.raises(WebhookConfigError, match="password"):
        WebhookProvider.from_connection_fields(_conn(host="http://x/webhook", password=None))
    monkeypatch.delenv("AIRFLOW_CONN_NO_SUCH_WEBHOOK", raising=False)
    with pytest.raises(WebhookConfigError, match="AIRFLOW_CONN_NO_SUCH_WEBHOOK"):
        WebhookProvider.from_connection("no_such_webhook")


def test_the_session_is_shared_by_threads(gw, provider):
    batches = [[_message(n) for n in range(start, start + 50)] for start in range(0, 400, 50)]
    results: list = []
    threads = [threading.Thread(target=lambda b=b: results.extend(provider.send(b))) for b in batches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 400 and {o.fate for o in results} == {Fate.ACCEPTED}
    assert gw.state.stats()["accepted"] == 400 and gw.state.stats()["duplicates"] == 0
    assert requests.get(f"{gw.url}/_sim/stats").json()["calls"] == {"webhook": 8}
