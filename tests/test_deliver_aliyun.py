"""The Aliyun SMS provider against the gateway simulator's Aliyun-shaped API, over loopback, through
the official SDK: every Fate by injected faults, status after a timeout or a dropped connection,
receipts and replies, the ACS3 signature checked by the simulator's own code."""

from __future__ import annotations

import dataclasses
import json
import socket
from datetime import UTC, datetime

import pytest

pytest.importorskip("alibabacloud_dysmsapi20170525")

from gateway_helpers import faults_exactly  # noqa: E402

from huitouke.deliver.providers.aliyun import (  # noqa: E402
    AliyunSettings,
    AliyunSmsProvider,
    aliyun_number,
    classify_aliyun_code,
)
from huitouke.deliver.providers.base import Fate, OutgoingMessage, StatusAnswer  # noqa: E402
from huitouke.gateway.aliyun import verify_acs3_signature  # noqa: E402


def use_faults(gw, **changes) -> None:
    faults_exactly(gw, **changes)
    gw.state.reset()


def provider(gw, **changes) -> AliyunSmsProvider:
    settings = AliyunSettings(
        access_key_id="LTAI-test",
        access_key_secret=gw.state.token,
        endpoint=gw.url.removeprefix("http://"),
        protocol="http",
        sign_name="小店",
        timeout_s=0.3,
        connect_timeout_s=0.3,
        report_url=gw.url + "/aliyun",
        report_token=gw.state.token,
        status_settle_s=0,
    )
    return AliyunSmsProvider(dataclasses.replace(settings, **changes))


def message(i: int, **changes) -> OutgoingMessage:
    base = OutgoingMessage(
        message_id=i,
        out_id=f"htk-{i}",
        channel="sms",
        recipient=f"+86138001380{i:02d}",
        body=f"【小店】您好 {i}",
        template="sms/thank_you",
        campaign="thank_you",
        template_code="SMS_100",
        template_params={"name": f"客{i}"},
        claimed_at=datetime.now(UTC),
    )
    return dataclasses.replace(base, **changes)


def fates(outcomes) -> dict[int, Fate]:
    return {o.message_id: o.fate for o in outcomes}


def test_a_batch_goes_out_in_one_signed_call_with_one_bizid(gw):
    outcomes = provider(gw).send([message(i) for i in range(3)])
    assert fates(outcomes) == {0: Fate.ACCEPTED, 1: Fate.ACCEPTED, 2: Fate.ACCEPTED}
    assert len({o.provider_message_id for o in outcomes}) == 1
    assert gw.state.stats()["calls"] == {"aliyun": 1}
    accepted = gw.state.accepted()
    assert sorted(m["to"] for m in accepted) == [f"+86138001380{i:02d}" for i in range(3)]
    assert {m["extra"]["template_code"] for m in accepted} == {"SMS_100"}
    assert {m["extra"]["aliyun_out_id"] for m in accepted} == {"htk:thank_you"}
    assert all("客" in m["text"] and m["text"].startswith("【小店】") for m in accepted)


def test_more_than_batch_size_and_several_templates_make_several_calls(gw):
    messages = [message(i) for i in range(5)] + [message(9, template_code="SMS_200")]
    outcomes = provider(gw, batch_size=2).send(messages)
    assert set(fates(outcomes).values()) == {Fate.ACCEPTED}
    assert gw.state.stats()["calls"] == {"aliyun": 4}  # SMS_100: 2+2+1, SMS_200: 1


def test_a_wrong_secret_is_refused_by_the_signature_check_and_pauses(gw):
    outcomes = provider(gw, access_key_secret="wrong").send([message(1)])
    assert outcomes[0].fate is Fate.PAUSE
    assert "SignatureDoesNotMatch" in outcomes[0].reason
    assert gw.state.accepted() == []


def test_the_hand_written_signature_check_agrees_with_the_sdk_signer():
    from alibabacloud_tea_openapi.utils import Utils
    from darabonba.request import DaraRequest

    body = b"PhoneNumberJson=%5B%2213800138000%22%5D"
    request = DaraRequest()
    request.method, request.pathname = "POST", "/"
    request.query = {"OutId": "htk:a b~c", "TemplateCode": "SMS_1"}
    request.headers = {
        "host": "127.0.0.1:1",
        "x-acs-action": "SendBatchSms",
        "x-acs-date": "2026-01-01T00:00:00Z",
        "x-acs-signature-nonce": "n1",
        "content-type": "application/x-www-form-urlencoded",
    }
    payload = Utils.hash(body, "ACS3-HMAC-SHA256").hex()
    request.headers["x-acs-content-sha256"] = payload
    auth = Utils.get_authorization(request, "ACS3-HMAC-SHA256", payload, "AK", "secret")
    headers = request.headers | {"authorization": auth}
    query = list(request.query.items())
    assert verify_acs3_signature("POST", "/", query, headers, body, "secret") is None
    assert verify_acs3_signature("POST", "/", query, headers, body, "other") == "SignatureDoesNotMatch"
    assert (
        verify_acs3_signature("POST", "/", query, headers, body + b"x", "secret") == "SignatureDoesNotMatch"
    )


@pytest.mark.parametrize(
    ("faults", "fate", "code"),
    [
        ({"insufficient_balance": True}, Fate.PAUSE, "isv.AMOUNT_NOT_ENOUGH"),
        ({"rate_5xx": 1.0}, Fate.RETRY, "ServiceUnavailable"),
        ({"rate_429": 1.0, "retry_after_s": 2.5}, Fate.RETRY, "Throttling.User"),
    ],
)
def test_refused_calls_accept_nothing(gw, faults, fate, code):
    use_faults(gw, **faults)
    outcomes = provider(gw).send([message(1), message(2)])
    assert {o.fate for o in outcomes} == {fate}
    assert all(code in o.reason for o in outcomes)
    assert gw.state.accepted() == []
    if code.startswith("Throttling"):
        assert {o.retry_after_s for o in outcomes} == {2.5}


def test_a_paused_call_stops_the_rest_of_the_batch_unsent(gw):
    use_faults(gw, insufficient_balance=True)
    outcomes = provider(gw, batch_size=1).send([message(1), message(2), message(3)])
    assert {o.fate for o in outcomes} == {Fate.PAUSE}
    assert gw.state.stats()["calls"] == {"aliyun": 1}


def test_a_batch_refused_for_an_invalid_number_is_halved_until_the_number_is_alone(gw):
    use_faults(gw, rate_invalid_number=0.25, seed=3)
    messages = [message(i) for i in range(8)]
    outcomes = provider(gw).send(messages)
    accepted = {m["to"] for m in gw.state.accepted()}
    failed = {o.message_id for o in outcomes if o.fate is Fate.FAILED}
    assert failed and len(failed) < 8, "the seed should make some numbers invalid, not all"
    for o in outcomes:
        to = messages[o.message_id].recipient
        if o.fate is Fate.FAILED:
            assert "isv.MOBILE_NUMBER_ILLEGAL" in o.reason and to not in accepted
        else:
            assert o.fate is Fate.ACCEPTED and to in accepted
    assert gw.state.stats()["duplicates"] == 0


def test_a_number_over_its_frequency_limit_is_retried_alone(gw):
    gw.state.reject_number(message(2).recipient, "rate_limited")
    outcomes = provider(gw, batch_size=4).send([message(i) for i in range(6)])
    assert fates(outcomes) == {i: Fate.RETRY if i == 2 else Fate.ACCEPTED for i in range(6)}
    assert "isv.BUSINESS_LIMIT_CONTROL" in outcomes[[o.message_id for o in outcomes].index(2)].reason


def test_what_is_refused_before_any_call(gw):
    outcomes = provider(gw, sign_name=None).send(
        [
            message(1, recipient="+86 12"),
            message(2, template_code=None),
            message(3),  # no sign name anywhere
            message(4, sign_name="小店"),
        ]
    )
    assert fates(outcomes) == {
        1: Fate.FAILED,
        2: Fate.CAMPAIGN_FAILED,
        3: Fate.CAMPAIGN_FAILED,
        4: Fate.ACCEPTED,
    }


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"template_code": "SMS_REFUSED_1"}, "isv.SMS_TEMPLATE_ILLEGAL"),
        ({"sign_name": "REFUSED"}, "isv.SMS_SIGNATURE_ILLEGAL"),
    ],
)
def test_a_refused_template_or_signature_fails_the_campaign(gw, change, code):
    outcomes = provider(gw).send([message(1, **change), message(2, **change)])
    assert {o.fate for o in outcomes} == {Fate.CAMPAIGN_FAILED}
    assert all(code in o.reason for o in outcomes)


@pytest.mark.parametrize(
    ("faults", "status"),
    [
        ({"rate_timeout": 1.0, "hang_s": 1.0, "timeout_accepts": 1.0}, StatusAnswer.ACCEPTED),
        ({"rate_timeout": 1.0, "hang_s": 1.0, "timeout_accepts": 0.0}, StatusAnswer.NOT_ACCEPTED),
        ({"rate_drop": 1.0}, StatusAnswer.ACCEPTED),
    ],
)
def test_a_timeout_or_a_drop_is_unknown_and_the_status_query_settles_it(gw, faults, status):
    sms = provider(gw)
    use_faults(gw, **faults)
    outcome = sms.send([message(1)])[0]
    assert outcome.fate is Fate.UNKNOWN
    faults_exactly(gw)
    assert sms.status(message(1), None) is status
    assert sms.status(message(1, template_code="SMS_OTHER"), None) is StatusAnswer.NOT_ACCEPTED


def test_status_is_unknown_without_a_claim_time_or_when_too_young_or_when_the_query_fails(gw):
    assert provider(gw).status(message(1, claimed_at=None), None) is StatusAnswer.UNKNOWN
    assert provider(gw, status_settle_s=3600).status(message(1), None) is StatusAnswer.UNKNOWN
    use_faults(gw, rate_5xx=1.0)
    assert provider(gw).status(message(1), None) is StatusAnswer.UNKNOWN


def test_a_server_that_cannot_be_reached_means_retry():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again before the call: connection refused
    settings = AliyunSettings("AK", "secret", endpoint=f"127.0.0.1:{port}", protocol="http", sign_name="小店")
    outcome = AliyunSmsProvider(settings).send([message(1)])[0]
    assert outcome.fate is Fate.RETRY


def test_receipts_and_replies_come_from_the_report_relay_with_cursors(gw):
    use_faults(gw, rate_undelivered=1.0, rate_reply_t=1.0, seed=1)
    sms = provider(gw)
    outcomes = sms.send([message(1), message(2)])
    receipts, cursor = sms.receipts(None)
    assert {r.recipient for r in receipts} == {message(1).recipient, message(2).recipient}
    assert {r.provider_message_id for r in receipts} == {outcomes[0].provider_message_id}
    assert not any(r.delivered for r in receipts) and all(r.code for r in receipts)
    assert sms.receipts(cursor) == ([], cursor)
    replies, reply_cursor = sms.replies(None)
    assert {(r.sender, r.text) for r in replies} == {(message(1).recipient, "T"), (message(2).recipient, "T")}
    assert sms.replies(reply_cursor) == ([], reply_cursor)


def test_without_a_report_relay_or_when_it_fails_nothing_is_pulled_and_the_cursor_kept(gw):
    assert provider(gw, report_url=None).receipts("5") == ([], "5")
    assert provider(gw, report_token="wrong").replies("5") == ([], "5")


def test_reasons_never_name_the_recipient(gw):
    use_faults(gw, rate_invalid_number=1.0)
    outcomes = provider(gw).send([message(1), message(2, recipient="+86 1")])
    for o in outcomes:
        assert "13800138" not in (o.reason or "")


def test_the_codes_are_classified_once():
    assert classify_aliyun_code("isv.BUSINESS_LIMIT_CONTROL") is Fate.RETRY
    assert classify_aliyun_code("Throttling.Api") is Fate.RETRY
    assert classify_aliyun_code("isv.AMOUNT_NOT_ENOUGH") is Fate.PAUSE
    assert classify_aliyun_code("InvalidAccessKeyId.NotFound") is Fate.PAUSE
    assert classify_aliyun_code("isv.MOBILE_NUMBER_ILLEGAL") is Fate.FAILED
    assert classify_aliyun_code("isv.TEMPLATE_MISSING_PARAMETERS") is Fate.CAMPAIGN_FAILED
    assert classify_aliyun_code("isv.SOMETHING_NEW") is Fate.PAUSE


def test_numbers_as_sendbatchsms_wants_them():
    assert aliyun_number("+8613800138000") == "13800138000"
    assert aliyun_number("008613800138000") == "13800138000"
    assert aliyun_number("13800138000") == "13800138000"
    assert aliyun_number("+85291234567") == "85291234567"
    assert aliyun_number("+8612") is None
    assert aliyun_number("not a number") is None


def test_from_connection_reads_the_airflow_connection(monkeypatch):
    conn = {
        "conn_type": "generic",
        "login": "LTAI-id",
        "password": "the-secret",
        "host": "127.0.0.1",
        "port": 8765,
        "extra": {
            "sign_name": "小店",
            "protocol": "http",
            "timeout_s": "2",
            "max_concurrency": "8",
            "unknown": 1,
        },
    }
    monkeypatch.setenv("AIRFLOW_CONN_HUITOUKE_SMS_ALIYUN", json.dumps(conn))
    sms = AliyunSmsProvider.from_connection()
    s = sms.settings
    assert (s.access_key_id, s.access_key_secret, s.endpoint) == ("LTAI-id", "the-secret", "127.0.0.1:8765")
    assert (s.sign_name, s.protocol, s.timeout_s, sms.max_concurrency, sms.batch_size) == (
        "小店",
        "http",
        2,
        8,
        100,
    )
