"""Aliyun SMS (dysmsapi 2017-05-25) through Alibaba Cloud's official SDK: ``SendBatchSms`` for
sending (at most 100 numbers a call, one approved template a call), ``QuerySendDetails`` for the
status of a message whose fate is unknown, and a documented pull of Aliyun's ``SmsReport`` /
``SmsUp`` records for receipts and replies from the report relay Aliyun pushes them to
(:mod:`huitouke.ui.aliyun_relay`; docs/delivery.md, "Aliyun SMS").

Batch semantics: one ``SendBatchSms`` answer applies to every number of the call (one ``BizId``,
one ``Code``). A refused call sent nothing, so when Aliyun refuses a batch as
``isv.MOBILE_NUMBER_ILLEGAL`` the provider splits it in halves and sends each, until the bad number
is alone (it then ends FAILED) - no message can go twice, because the refused call accepted none.
Numbers that are visibly not mobile numbers are failed before any call.

``OutId`` is one per call too, so it cannot name one message: it is set to ``htk:<campaign>``, and
a status query matches a message by recipient, send date, template code and that ``OutId``
(one message per campaign, customer and day is huitouke's own rule).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from itertools import groupby
from typing import Any
from zoneinfo import ZoneInfo

import requests
from alibabacloud_dysmsapi20170525 import models as sms_models
from alibabacloud_dysmsapi20170525.client import Client
from alibabacloud_tea_openapi import models as openapi_models
from alibabacloud_tea_openapi.exceptions import AlibabaCloudException, ThrottlingException
from darabonba.runtime import RuntimeOptions

from huitouke.deliver.providers.base import (
    Fate,
    OutgoingMessage,
    Receipt,
    Reply,
    SendOutcome,
    StatusAnswer,
)
from huitouke.deliver.providers.settings import settings_with_extras
from huitouke.deliver.providers.transport import transport_fate
from huitouke.pii import get_logger, mask_text

log = get_logger(__name__)

DEFAULT_CONN_ID = "huitouke_sms_aliyun"
DEFAULT_ENDPOINT = "dysmsapi.aliyuncs.com"
MAX_BATCH = 100  # SendBatchSms takes at most 100 numbers
SHANGHAI = ZoneInfo("Asia/Shanghai")  # Aliyun's SendDate and report times are China time
QUERY_PAGE_SIZE = 50  # QuerySendDetails' largest page
QUERY_MAX_PAGES = 20

# Every answer code, classified once (Aliyun's error code list, help.aliyun.com/document_detail/101346).
ALIYUN_CODES: dict[str, Fate] = {
    "OK": Fate.ACCEPTED,
    # retry later: rate and frequency limits, Aliyun's own transient failures
    "isv.BUSINESS_LIMIT_CONTROL": Fate.RETRY,
    "isv.DAY_LIMIT_CONTROL": Fate.RETRY,
    "isp.SYSTEM_ERROR": Fate.RETRY,
    "isp.GATEWAY_ERROR": Fate.RETRY,
    "ServiceUnavailable": Fate.RETRY,
    "InternalError": Fate.RETRY,
    # the account cannot send: stop, keep the rows queued
    "isv.AMOUNT_NOT_ENOUGH": Fate.PAUSE,
    "isv.OUT_OF_SERVICE": Fate.PAUSE,
    "isv.PRODUCT_UN_SUBSCRIPT": Fate.PAUSE,
    "isv.PRODUCT_UNSUBSCRIBE": Fate.PAUSE,
    "isv.ACCOUNT_NOT_EXISTS": Fate.PAUSE,
    "isv.ACCOUNT_ABNORMAL": Fate.PAUSE,
    "isp.RAM_PERMISSION_DENY": Fate.PAUSE,
    "SignatureDoesNotMatch": Fate.PAUSE,
    "IncompleteSignature": Fate.PAUSE,
    "MissingAccessKeyId": Fate.PAUSE,
    # permanent for the message
    "isv.MOBILE_NUMBER_ILLEGAL": Fate.FAILED,
    # permanent for the campaign: the template, signature or parameters Aliyun refuses
    "isv.SMS_TEMPLATE_ILLEGAL": Fate.CAMPAIGN_FAILED,
    "isv.SMS_SIGNATURE_ILLEGAL": Fate.CAMPAIGN_FAILED,
    "isv.SMS_SIGN_ILLEGAL": Fate.CAMPAIGN_FAILED,
    "isv.SIGN_NAME_ILLEGAL": Fate.CAMPAIGN_FAILED,
    "isv.SMS_SIGNATURE_SCENE_ILLEGAL": Fate.CAMPAIGN_FAILED,
    "isv.TEMPLATE_MISSING_PARAMETERS": Fate.CAMPAIGN_FAILED,
    "isv.TEMPLATE_PARAMS_ILLEGAL": Fate.CAMPAIGN_FAILED,
    "isv.INVALID_JSON_PARAM": Fate.CAMPAIGN_FAILED,
    "isv.INVALID_PARAMETERS": Fate.CAMPAIGN_FAILED,
    "isv.PARAM_LENGTH_LIMIT": Fate.CAMPAIGN_FAILED,
    "isv.BLACK_KEY_CONTROL_LIMIT": Fate.CAMPAIGN_FAILED,
    "isv.SMS_CONTENT_ILLEGAL": Fate.CAMPAIGN_FAILED,
    "isv.EXTEND_CODE_ERROR": Fate.CAMPAIGN_FAILED,
    "isv.DOMESTIC_NUMBER_NOT_SUPPORTED": Fate.CAMPAIGN_FAILED,
}
ALIYUN_CODE_PREFIXES: tuple[tuple[str, Fate], ...] = (
    ("Throttling", Fate.RETRY),  # Throttling, Throttling.User, Throttling.Api
    ("InvalidAccessKeyId", Fate.PAUSE),  # .NotFound, .Inactive
    ("Forbidden", Fate.PAUSE),  # Forbidden.RAM, Forbidden.AccessKeyDisabled
    ("InvalidTimeStamp", Fate.PAUSE),  # this machine's clock is wrong
)
# Codes about one number of a batch (Aliyun refuses the whole call): the batch is halved until the
# number is alone, so the others still go out.
PER_NUMBER_CODES = {"isv.MOBILE_NUMBER_ILLEGAL", "isv.BUSINESS_LIMIT_CONTROL", "isv.DAY_LIMIT_CONTROL"}
# An answer we do not know stops sending loudly rather than failing a hundred customers' messages.
UNKNOWN_CODE_FATE = Fate.PAUSE


def classify_aliyun_code(code: str | None) -> Fate:
    """The one classification of an Aliyun answer code."""
    code = code or ""
    if code in ALIYUN_CODES:
        return ALIYUN_CODES[code]
    for prefix, fate in ALIYUN_CODE_PREFIXES:
        if code.startswith(prefix):
            return fate
    return UNKNOWN_CODE_FATE


def aliyun_number(recipient: str) -> str | None:
    """The number as SendBatchSms wants it (mainland: 11 digits; elsewhere: country code and
    number, no ``+``), or ``None`` when it is visibly not a mobile number."""
    digits = recipient.strip().replace(" ", "").replace("-", "")
    if digits.startswith("+"):
        digits = digits[1:]
    elif digits.startswith("00"):
        digits = digits[2:]
    if not digits.isdigit():
        return None
    if len(digits) == 13 and digits.startswith("861"):
        digits = digits[2:]
    if len(digits) == 11 and digits[0] == "1" and digits[1] in "3456789":
        return digits
    if digits[0] != "1" and not digits.startswith("86") and 8 <= len(digits) <= 15:
        return digits
    return None


def e164(number: Any) -> str | None:
    """Aliyun's number (``13800138000``, ``85212345678``) as E.164, as the outbox keeps it."""
    digits = str(number or "").strip().lstrip("+")
    if not digits.isdigit():
        return None
    if len(digits) == 11 and digits[0] == "1":
        return f"+86{digits}"
    return f"+{digits}"


def batch_out_id(message: OutgoingMessage) -> str:
    """The OutId of the call that carries ``message``: ``htk:<campaign>`` (Aliyun keeps one OutId
    per call, under 256 characters)."""
    return f"htk:{message.campaign}"[:255]


@dataclass(frozen=True)
class AliyunSettings:
    """What the Connection says (login, password, host, extras)."""

    access_key_id: str
    access_key_secret: str
    endpoint: str = DEFAULT_ENDPOINT
    protocol: str = "https"
    sign_name: str | None = None
    timeout_s: float = 10.0
    connect_timeout_s: float = 5.0
    batch_size: int = MAX_BATCH
    max_concurrency: int = 4
    rate_per_s: float | None = None
    # The relay serving Aliyun's SmsReport / SmsUp records for pull (docs/delivery.md).
    report_url: str | None = None
    report_token: str | None = None
    # A status query answers NOT_ACCEPTED only for claims at least this old (records take time).
    status_settle_s: float = 30.0


@dataclass(frozen=True)
class _CallAnswer:
    fate: Fate
    code: str | None = None
    reason: str | None = None
    biz_id: str | None = None
    retry_after_s: float | None = None


class AliyunSmsProvider:
    """Aliyun SMS: ``SendBatchSms`` through ``alibabacloud-dysmsapi20170525``. Thread-safe: the SDK
    client holds no per-call state and its HTTP session pools ``max_concurrency`` connections."""

    name = "aliyun"
    channel = "sms"

    def __init__(self, settings: AliyunSettings) -> None:
        self.settings = settings
        self.batch_size = max(1, min(settings.batch_size, MAX_BATCH))
        self.max_concurrency = settings.max_concurrency
        self.rate_per_s = settings.rate_per_s
        self._client = Client(
            openapi_models.Config(
                access_key_id=settings.access_key_id,
                access_key_secret=settings.access_key_secret,
                endpoint=settings.endpoint,
                protocol=settings.protocol,
                read_timeout=int(settings.timeout_s * 1000),
                connect_timeout=int(settings.connect_timeout_s * 1000),
                max_idle_conns=max(1, settings.max_concurrency),
            )
        )
        # The SDK only reads its runtime options: one for every call. No retries inside the
        # provider: the sender owns retrying.
        self._runtime = RuntimeOptions(
            autoretry=False,
            max_attempts=0,
            read_timeout=int(settings.timeout_s * 1000),
            connect_timeout=int(settings.connect_timeout_s * 1000),
            max_idle_conns=max(1, settings.max_concurrency),
        )
        self._http = requests.Session()  # the report relay

    @classmethod
    def from_connection(cls, conn_id: str = DEFAULT_CONN_ID) -> AliyunSmsProvider:
        """Login = AccessKeyId, password = AccessKeySecret, host = endpoint; extras: sign_name,
        protocol, timeout_s, connect_timeout_s, batch_size, max_concurrency, rate_per_s,
        report_url, report_token, status_settle_s."""
        from huitouke.store.connection import airflow_connection

        conn = airflow_connection(conn_id)
        return cls(settings_from_connection(conn))

    # -- sending -------------------------------------------------------------------------------

    def send(self, messages: Sequence[OutgoingMessage]) -> list[SendOutcome]:
        outcomes: list[SendOutcome] = []
        sendable: list[tuple[OutgoingMessage, str]] = []  # with its number as SendBatchSms wants it
        for message in messages:
            number = aliyun_number(message.recipient)
            refusal = self._refusal_before_sending(message, number)
            if refusal is not None:
                outcomes.append(refusal)
            else:
                sendable.append((message, number))  # type: ignore[arg-type]
        stop: _CallAnswer | None = None
        for chunk in self._calls(sendable):
            if stop is not None:  # the account paused or throttled: nothing more this batch
                outcomes += [_outcome(m, stop) for m, _ in chunk]
                continue
            chunk_outcomes = self._send_call(chunk)
            outcomes += chunk_outcomes
            stop = _stopping_answer(chunk_outcomes)
        return outcomes

    def _refusal_before_sending(self, message: OutgoingMessage, number: str | None) -> SendOutcome | None:
        if number is None:
            return SendOutcome(message.message_id, Fate.FAILED, reason="invalid_number: not a mobile number")
        if not message.template_code:
            return SendOutcome(
                message.message_id,
                Fate.CAMPAIGN_FAILED,
                reason=f"no Aliyun template code mapped for {message.template}",
            )
        if not (message.sign_name or self.settings.sign_name):
            return SendOutcome(
                message.message_id,
                Fate.CAMPAIGN_FAILED,
                reason="no sign name: set the message's sign_name or the Connection's extra sign_name",
            )
        return None

    def _calls(
        self, messages: Sequence[tuple[OutgoingMessage, str]]
    ) -> Iterator[list[tuple[OutgoingMessage, str]]]:
        """One call per template code and OutId, at most ``batch_size`` numbers each."""

        def key(sendable: tuple[OutgoingMessage, str]) -> tuple[str, str]:
            m = sendable[0]
            return (m.template_code or "", batch_out_id(m))

        for _, group in groupby(sorted(messages, key=key), key=key):
            chunk = list(group)
            for start in range(0, len(chunk), self.batch_size):
                yield chunk[start : start + self.batch_size]

    def _send_call(self, chunk: list[tuple[OutgoingMessage, str]]) -> list[SendOutcome]:
        answer = self._call_send_batch(chunk)
        if answer.code in PER_NUMBER_CODES and len(chunk) > 1:
            # The refused call accepted nothing: halve it until the number it names is alone.
            middle = len(chunk) // 2
            return self._send_call(chunk[:middle]) + self._send_call(chunk[middle:])
        return [_outcome(m, answer) for m, _ in chunk]

    def _call_send_batch(self, chunk: list[tuple[OutgoingMessage, str]]) -> _CallAnswer:
        first = chunk[0][0]
        request = sms_models.SendBatchSmsRequest(
            phone_number_json=json.dumps([number for _, number in chunk]),
            sign_name_json=json.dumps(
                [m.sign_name or self.settings.sign_name for m, _ in chunk], ensure_ascii=False
            ),
            template_code=first.template_code,
            template_param_json=json.dumps([m.template_params for m, _ in chunk], ensure_ascii=False),
            out_id=batch_out_id(first),
        )
        try:
            response = self._client.send_batch_sms_with_options(request, self._runtime)
        except Exception as exc:  # every failure becomes a fate; nothing escapes a send
            return _answer_for_error(exc)
        body = response.body
        if body.code == "OK":
            return _CallAnswer(Fate.ACCEPTED, code="OK", biz_id=body.biz_id)
        return _CallAnswer(
            classify_aliyun_code(body.code), code=body.code, reason=_reason(body.code, body.message)
        )

    # -- status of a message whose fate is unknown ---------------------------------------------

    def status(self, message: OutgoingMessage, provider_message_id: str | None) -> StatusAnswer:
        """``QuerySendDetails`` for the recipient on each China-time day since the claim, matching
        template code and OutId (and BizId when known). NOT_ACCEPTED only when every query
        succeeded, found nothing, and the claim is at least ``status_settle_s`` old."""
        number = aliyun_number(message.recipient)
        claimed = message.claimed_at
        if number is None or claimed is None:
            return StatusAnswer.UNKNOWN
        now = datetime.now(UTC)
        for day in _china_days(claimed, now):
            found = self._sent_on(day, number, message, provider_message_id)
            if found is None:
                return StatusAnswer.UNKNOWN
            if found:
                return StatusAnswer.ACCEPTED
        if (now - claimed).total_seconds() < self.settings.status_settle_s:
            return StatusAnswer.UNKNOWN
        return StatusAnswer.NOT_ACCEPTED

    def _sent_on(self, day: date, number: str, message: OutgoingMessage, biz_id: str | None) -> bool | None:
        """Whether Aliyun lists the message on ``day``; ``None`` when the query failed."""
        for page in range(1, QUERY_MAX_PAGES + 1):
            request = sms_models.QuerySendDetailsRequest(
                phone_number=number,
                send_date=day.strftime("%Y%m%d"),
                biz_id=biz_id,
                current_page=page,
                page_size=QUERY_PAGE_SIZE,
            )
            try:
                body = self._client.query_send_details_with_options(request, self._runtime).body
            except Exception as exc:
                log.warning("Aliyun QuerySendDetails failed: %s", _error_text(exc))
                return None
            if body.code != "OK":
                log.warning("Aliyun QuerySendDetails answered %s", _reason(body.code, body.message))
                return None
            details = body.sms_send_detail_dtos.sms_send_detail_dto if body.sms_send_detail_dtos else []
            if any(_same_message(d, message) for d in details or []):
                return True
            if len(details or []) < QUERY_PAGE_SIZE:
                return False
        return None  # more records than we page through: cannot say

    # -- receipts and replies ------------------------------------------------------------------

    def receipts(self, cursor: str | None) -> tuple[list[Receipt], str | None]:
        """Aliyun's ``SmsReport`` records from the report relay (``report_url``/sms_report)."""
        records, next_cursor = self._pull("sms_report", cursor)
        return [_receipt(r) for r in records], next_cursor

    def replies(self, cursor: str | None) -> tuple[list[Reply], str | None]:
        """Aliyun's ``SmsUp`` records (inbound messages) from the report relay."""
        records, next_cursor = self._pull("sms_up", cursor)
        return [
            Reply(
                sender=e164(r.get("phone_number")) or "",
                text=str(r.get("content", "")),
                at=_china_time(r.get("send_time")),
            )
            for r in records
        ], next_cursor

    def _pull(self, feed: str, cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
        if not self.settings.report_url:
            log.info("Aliyun %s: no report_url in the Connection's extras, nothing pulled", feed)
            return [], cursor
        headers = (
            {"Authorization": f"Bearer {self.settings.report_token}"} if self.settings.report_token else {}
        )
        try:
            response = self._http.get(
                f"{self.settings.report_url.rstrip('/')}/{feed}",
                params={"cursor": cursor} if cursor else None,
                headers=headers,
                timeout=(self.settings.connect_timeout_s, self.settings.timeout_s),
            )
            response.raise_for_status()
            payload = response.json()
        except (requests.RequestException, ValueError) as exc:  # the next pull tries again
            log.warning("Aliyun %s pull failed (%s); cursor kept", feed, type(exc).__name__)
            return [], cursor
        return list(payload.get("messages") or []), payload.get("cursor") or cursor


def settings_from_connection(conn: Any) -> AliyunSettings:
    """The provider's settings from an Airflow Connection (see :meth:`AliyunSmsProvider.from_connection`)."""
    extra = getattr(conn, "extra_dejson", None) or {}
    host = conn.host or DEFAULT_ENDPOINT
    if conn.port:
        host = f"{host}:{conn.port}"
    settings = AliyunSettings(
        access_key_id=conn.login or "", access_key_secret=conn.password or "", endpoint=host
    )
    return settings_with_extras(settings, extra, {"access_key_id", "access_key_secret", "endpoint"})


# -- answers to outcomes -------------------------------------------------------------------------


def _outcome(message: OutgoingMessage, answer: _CallAnswer) -> SendOutcome:
    return SendOutcome(
        message.message_id,
        answer.fate,
        provider_message_id=answer.biz_id,
        reason=answer.reason,
        retry_after_s=answer.retry_after_s,
    )


def _stopping_answer(outcomes: list[SendOutcome]) -> _CallAnswer | None:
    """What stops the rest of a batch: a pause, or a retry of a whole call (throttled, 5xx) - not
    one number's retry left alone by halving."""
    whole_call_retry = all(o.fate is Fate.RETRY for o in outcomes)
    for outcome in outcomes:
        if outcome.fate is Fate.PAUSE or (outcome.fate is Fate.RETRY and whole_call_retry):
            return _CallAnswer(
                outcome.fate,
                reason=f"not sent: {outcome.reason}",
                retry_after_s=outcome.retry_after_s,
            )
    return None


def _answer_for_error(exc: Exception) -> _CallAnswer:
    if isinstance(exc, ThrottlingException):
        wait = exc.retry_after / 1000 if exc.retry_after else None
        return _CallAnswer(Fate.RETRY, code=exc.code, reason=_error_text(exc), retry_after_s=wait)
    if isinstance(exc, AlibabaCloudException):
        fate = Fate.RETRY if (exc.status_code or 0) >= 500 else classify_aliyun_code(exc.code)
        return _CallAnswer(fate, code=exc.code, reason=_error_text(exc))
    transport = transport_fate(exc)
    if transport is not None:
        return _CallAnswer(transport[0], reason=transport[1])
    # An answer we could not read (or a failure we do not know): it may have been accepted.
    return _CallAnswer(Fate.UNKNOWN, reason=f"unreadable answer: {type(exc).__name__}")


def _reason(code: str | None, message: str | None) -> str:
    return mask_text(f"{code}: {message or ''}".strip().rstrip(":"))[:300]


def _error_text(exc: Exception) -> str:
    if isinstance(exc, AlibabaCloudException):
        return _reason(exc.code, f"HTTP {exc.status_code}")
    transport = transport_fate(exc)
    return transport[1] if transport else type(exc).__name__


def _same_message(detail: Any, message: OutgoingMessage) -> bool:
    return detail.template_code == message.template_code and detail.out_id == batch_out_id(message)


def _china_days(since: datetime, until: datetime) -> list[date]:
    first, last = since.astimezone(SHANGHAI).date(), until.astimezone(SHANGHAI).date()
    days = []
    while first <= last and len(days) < 31:  # QuerySendDetails keeps 30 days
        days.append(first)
        first += timedelta(days=1)
    return days


def _china_time(text: Any) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.strptime(str(text), "%Y-%m-%d %H:%M:%S").replace(tzinfo=SHANGHAI)
    except ValueError:
        return None


def _receipt(record: dict[str, Any]) -> Receipt:
    return Receipt(
        out_id=None,  # the record's out_id is the call's (htk:<campaign>), not one message's
        provider_message_id=str(record.get("biz_id")) if record.get("biz_id") else None,
        delivered=bool(record.get("success")),
        code=record.get("err_code"),
        at=_china_time(record.get("report_time")),
        recipient=e164(record.get("phone_number")),
    )
