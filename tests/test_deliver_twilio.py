"""The Twilio provider against the gateway simulator's Twilio-shaped API, over loopback, through
the official SDK: every Fate by injected faults and Twilio's magic numbers, status by listing after
a timeout or a dropped connection, receipts and replies with cursors, concurrent sends."""

from __future__ import annotations

import dataclasses
import json
import socket
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest

pytest.importorskip("twilio")

from gateway_helpers import faults_exactly  # noqa: E402

from huitouke.deliver.providers.base import Fate, OutgoingMessage, StatusAnswer  # noqa: E402
from huitouke.deliver.providers.twilio import (  # noqa: E402
    TwilioSettings,
    TwilioSmsProvider,
    classify_twilio_error,
)

ACCOUNT = "AC" + "1" * 32
FROM = "+15005550006"


def provider(gw, **changes) -> TwilioSmsProvider:
    settings = TwilioSettings(
        account_sid=ACCOUNT,
        auth_token=gw.state.token,
        base_url=gw.url,
        from_number=FROM,
        timeout_s=0.3,
        connect_timeout_s=0.3,
        max_concurrency=8,
        receipt_settle_s=0,
        status_settle_s=0,
    )
    return TwilioSmsProvider(dataclasses.replace(settings, **changes))


def message(i: int, **changes) -> OutgoingMessage:
    base = OutgoingMessage(
        message_id=i,
        out_id=f"htk-{i}",
        channel="sms",
        recipient=f"+1415555{i:04d}",
        body=f"Hi {i}, thanks for your order. Reply STOP to opt out.",
        template="sms/thank_you",
        campaign="thank_you",
        claimed_at=datetime.now(UTC),
    )
    return dataclasses.replace(base, **changes)


def test_one_message_a_call_accepted_with_its_sid_and_segments(gw):
    outcomes = provider(gw).send([message(1), message(2)])
    assert [o.fate for o in outcomes] == [Fate.ACCEPTED, Fate.ACCEPTED]
    assert all(o.provider_message_id.startswith("SM") and o.billed_segments == 1 for o in outcomes)
    accepted = gw.state.accepted()
    assert [(m["to"], m["extra"]["from_"]) for m in accepted] == [
        (message(1).recipient, FROM),
        (message(2).recipient, FROM),
    ]
    assert gw.state.stats()["calls"] == {"twilio": 2}


@pytest.mark.parametrize(
    ("to", "fate", "code", "opt_out"),
    [
        ("+15005550001", Fate.FAILED, "21211", False),
        ("+15005550009", Fate.FAILED, "21614", False),
        ("+15005550004", Fate.FAILED, "21610", True),
        ("+15005550003", Fate.FAILED, "21408", False),  # per destination
    ],
)
def test_twilio_error_codes_by_its_magic_numbers(gw, to, fate, code, opt_out):
    outcome = provider(gw).send([message(1, recipient=to)])[0]
    assert (outcome.fate, outcome.opt_out) == (fate, opt_out)
    assert outcome.reason.startswith(f"twilio {code}:")
    assert "5005550" not in outcome.reason
    assert gw.state.accepted() == []


def test_a_number_the_simulator_is_told_to_reject_as_unsubscribed_is_an_opt_out(gw):
    gw.state.reject_number(message(1).recipient, "unsubscribed")
    outcome = provider(gw).send([message(1)])[0]
    assert (outcome.fate, outcome.opt_out) == (Fate.FAILED, True)


def test_a_from_number_that_cannot_send_fails_the_campaign(gw):
    outcome = provider(gw, from_number="+15005550007").send([message(1)])[0]
    assert outcome.fate is Fate.CAMPAIGN_FAILED


def test_a_messaging_service_instead_of_a_from_number(gw):
    outcome = provider(gw, from_number=None, messaging_service_sid="MG" + "2" * 32).send([message(1)])[0]
    assert outcome.fate is Fate.ACCEPTED
    assert gw.state.accepted()[0]["extra"]["messaging_service_sid"] == "MG" + "2" * 32


@pytest.mark.parametrize(
    ("faults", "settings", "fate", "code"),
    [
        ({}, {"auth_token": "wrong"}, Fate.PAUSE, "20003"),
        ({"insufficient_balance": True}, {}, Fate.PAUSE, "20005"),
        ({"rate_5xx": 1.0}, {}, Fate.RETRY, "20500"),
        ({"rate_429": 1.0, "retry_after_s": 3}, {}, Fate.RETRY, "20429"),
        ({"rate_invalid_number": 1.0}, {}, Fate.FAILED, "21211"),
    ],
)
def test_refusals_accept_nothing(gw, faults, settings, fate, code):
    faults_exactly(gw, **faults)
    outcome = provider(gw, **settings).send([message(1)])[0]
    assert outcome.fate is fate and outcome.reason.startswith(f"twilio {code}:")
    assert gw.state.accepted() == []
    if code == "20429":
        assert outcome.retry_after_s == 3


@pytest.mark.parametrize(
    ("faults", "status"),
    [
        ({"rate_timeout": 1.0, "hang_s": 1.0, "timeout_accepts": 1.0}, StatusAnswer.ACCEPTED),
        ({"rate_timeout": 1.0, "hang_s": 1.0, "timeout_accepts": 0.0}, StatusAnswer.NOT_ACCEPTED),
        ({"rate_drop": 1.0}, StatusAnswer.ACCEPTED),
    ],
)
def test_a_timeout_or_a_drop_is_unknown_and_listing_settles_it(gw, faults, status):
    sms = provider(gw)
    sms.send([message(2)])  # another message to the same number's neighbour: not a match
    faults_exactly(gw, **faults)
    assert sms.send([message(1)])[0].fate is Fate.UNKNOWN
    faults_exactly(gw)
    assert sms.status(message(1), None) is status
    assert sms.status(message(1, body="another text"), None) is StatusAnswer.NOT_ACCEPTED


def test_status_is_unknown_without_a_claim_time_too_young_or_when_listing_fails(gw):
    assert provider(gw).status(message(1, claimed_at=None), None) is StatusAnswer.UNKNOWN
    assert provider(gw, status_settle_s=3600).status(message(1), None) is StatusAnswer.UNKNOWN
    faults_exactly(gw, rate_5xx=1.0)
    assert provider(gw).status(message(1), None) is StatusAnswer.UNKNOWN


def test_status_by_sid(gw):
    sms = provider(gw)
    sid = sms.send([message(1)])[0].provider_message_id
    assert sms.status(message(1), sid) is StatusAnswer.ACCEPTED


def test_a_server_that_cannot_be_reached_means_retry():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sms = TwilioSmsProvider(
        TwilioSettings(ACCOUNT, "token", base_url=f"http://127.0.0.1:{port}", from_number=FROM)
    )
    assert sms.send([message(1)])[0].fate is Fate.RETRY


def test_concurrent_sends_share_one_pooled_client(gw):
    sms = provider(gw)
    messages = [message(i) for i in range(40)]
    with ThreadPoolExecutor(8) as pool:
        outcomes = [o for batch in pool.map(sms.send, [[m] for m in messages]) for o in batch]
    assert {o.fate for o in outcomes} == {Fate.ACCEPTED}
    assert len({o.provider_message_id for o in outcomes}) == 40
    assert gw.state.stats()["duplicates"] == 0
    adapter = sms.http.session.get_adapter(gw.url)
    assert adapter._pool_maxsize == 8 and adapter.max_retries.total == 0


def test_receipts_page_through_final_statuses_once(gw):
    faults_exactly(gw, rate_undelivered=0.5, seed=2)
    sms = provider(gw, page_size=2)
    outcomes = sms.send([message(i) for i in range(5)])
    receipts, cursor = sms.receipts(None)
    assert sorted(r.provider_message_id for r in receipts) == sorted(o.provider_message_id for o in outcomes)
    undelivered = [r for r in receipts if not r.delivered]
    assert undelivered and all(r.code.startswith("300") for r in undelivered)
    assert sms.receipts(cursor) == ([], cursor)
    later = sms.send([message(7)])
    receipts, _ = sms.receipts(cursor)
    assert [r.provider_message_id for r in receipts] == [later[0].provider_message_id]


def test_a_failed_listing_keeps_the_cursor(gw):
    faults_exactly(gw, rate_5xx=1.0)
    cursor = "2026-01-01T00:00:00+00:00|"
    assert provider(gw).receipts(cursor) == ([], cursor)


def test_receipts_wait_for_the_settle_time(gw):
    sms = provider(gw, receipt_settle_s=3600)
    sms.send([message(1)])
    assert sms.receipts(None) == ([], None)


def test_replies_are_the_inbound_messages_with_a_cursor(gw):
    faults_exactly(gw, rate_reply_t=1.0)
    sms = provider(gw)
    sms.send([message(1)])
    replies, cursor = sms.replies(None)
    assert [(r.sender, r.text) for r in replies] == [(message(1).recipient, "T")]
    assert sms.replies(cursor) == ([], cursor)
    gw.state.add_reply(message(3).recipient, "STOP")
    replies, _ = sms.replies(cursor)
    assert [(r.sender, r.text) for r in replies] == [(message(3).recipient, "STOP")]


def test_the_codes_are_classified_once():
    assert classify_twilio_error(400, 21610)[0] is Fate.FAILED
    assert classify_twilio_error(429, 20429)[0] is Fate.RETRY
    assert classify_twilio_error(429, None)[0] is Fate.RETRY
    assert classify_twilio_error(503, 99999)[0] is Fate.RETRY
    assert classify_twilio_error(401, 20003)[0] is Fate.PAUSE
    assert classify_twilio_error(400, 21606)[0] is Fate.CAMPAIGN_FAILED
    assert classify_twilio_error(400, 99999)[0] is Fate.FAILED


def test_from_connection_reads_the_airflow_connection(monkeypatch):
    conn = {
        "conn_type": "generic",
        "login": ACCOUNT,
        "password": "token",
        "host": "http://127.0.0.1",
        "port": 8765,
        "extra": {"from_number": FROM, "max_concurrency": "32", "timeout_s": "4", "rate_per_s": ""},
    }
    monkeypatch.setenv("AIRFLOW_CONN_HUITOUKE_SMS_TWILIO", json.dumps(conn))
    sms = TwilioSmsProvider.from_connection()
    s = sms.settings
    assert (s.account_sid, s.auth_token, s.base_url, s.from_number) == (
        ACCOUNT,
        "token",
        "http://127.0.0.1:8765",
        FROM,
    )
    assert (sms.max_concurrency, sms.batch_size, sms.http.timeout, sms.rate_per_s) == (
        32,
        1,
        (5.0, 4.0),
        None,
    )


def test_a_batch_goes_as_one_request_a_message_at_once_each_with_its_own_answer(gw):
    faults_exactly(gw, rate_invalid_number=0.3, seed=3)
    sms = provider(gw, batch_size=20, max_concurrency=5)
    assert (sms.batch_size, sms.max_concurrency) == (20, 2)
    outcomes = sms.send([message(i) for i in range(20)])
    assert sorted(o.message_id for o in outcomes) == list(range(20))
    accepted = [o for o in outcomes if o.fate is Fate.ACCEPTED]
    failed = [o for o in outcomes if o.fate is Fate.FAILED]
    assert accepted and failed and len(accepted) + len(failed) == 20
    assert {o.reason for o in failed} == {"twilio 21211: invalid 'To' number"}
    assert gw.state.stats()["calls"]["twilio"] == 20 and len(gw.state.accepted()) == len(accepted)


def test_a_batch_under_429_keeps_each_requests_retry_after(gw):
    faults_exactly(gw, rate_429=1.0, retry_after_s=2)
    outcomes = provider(gw, batch_size=8).send([message(i) for i in range(8)])
    assert {(o.fate, o.retry_after_s) for o in outcomes} == {(Fate.RETRY, 2.0)}
