"""The Aliyun-shaped API of the simulator: what ``alibabacloud-dysmsapi20170525`` sends when its
endpoint is this server (``Config(endpoint="127.0.0.1:PORT", protocol="http")``).

The SDK speaks Alibaba Cloud's RPC style with the V3 signature: ``POST /`` with the action in the
``x-acs-action`` header, parameters in the query (``TemplateCode``, ``OutId``...) and the form
body (``PhoneNumberJson``...), signed ``ACS3-HMAC-SHA256`` in ``Authorization``. The simulator
checks that signature with the AccessKeySecret = the state's token (any AccessKeyId), by its own
code: the tests that pass through it prove both that the SDK really signed the request and that this
hand-written check agrees with the SDK's signer.

Actions: ``SendBatchSms`` and ``QuerySendDetails``. Receipts and replies: ``GET /aliyun/sms_report``
and ``GET /aliyun/sms_up`` serve Aliyun's ``SmsReport`` / ``SmsUp`` records for pull, as huitouke's
own report relay does in a deployment (:mod:`huitouke.ui.aliyun_relay`, docs/delivery.md).

Simulated refusals: a ``TemplateCode`` starting ``SMS_REFUSED`` is ``isv.SMS_TEMPLATE_ILLEGAL``, a
sign name starting ``REFUSED`` is ``isv.SMS_SIGNATURE_ILLEGAL``; a call with any invalid number
(the state's ``rate_invalid_number`` dice, or not digits) is refused whole as
``isv.MOBILE_NUMBER_ILLEGAL``, accepting none of its numbers.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import time
import uuid
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, quote
from zoneinfo import ZoneInfo

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from huitouke.gateway.calls import call_with_faults
from huitouke.gateway.state import CallFault, GatewayState, SimReceipt, SimReply

__all__ = ["API", "AliyunAPI", "routes", "verify_acs3_signature"]

API = "aliyun"
MAX_BATCH = 100
SHANGHAI = ZoneInfo("Asia/Shanghai")
ALGORITHM = "ACS3-HMAC-SHA256"
_biz_ids = itertools.count(1)
# The state's generic rejection codes as Aliyun answers them. Aliyun has no send-time
# "unsubscribed": such a number is refused as illegal (its opt-out arrives as an SmsUp reply).
REJECTIONS = {
    "invalid_number": ("isv.MOBILE_NUMBER_ILLEGAL", "非法手机号"),
    "unsubscribed": ("isv.MOBILE_NUMBER_ILLEGAL", "非法手机号"),
    "rate_limited": ("isv.BUSINESS_LIMIT_CONTROL", "触发号码天级流控"),
    "template_refused": ("isv.SMS_TEMPLATE_ILLEGAL", "模板不合法"),
}


def _answer(code: str, message: str, status: int = 200, **fields: Any) -> JSONResponse:
    body = {"Code": code, "Message": message, "RequestId": str(uuid.uuid4()).upper(), **fields}
    return JSONResponse(body, status_code=status)


def verify_acs3_signature(
    method: str, path: str, query: list[tuple[str, str]], headers: dict[str, str], body: bytes, secret: str
) -> str | None:
    """None when the request carries a valid ``ACS3-HMAC-SHA256`` signature made with ``secret``;
    else the Aliyun error code to answer (``IncompleteSignature`` or ``SignatureDoesNotMatch``).
    Hand-written from Alibaba Cloud's V3 signature spec; tests run it against the SDK's signer."""
    auth = headers.get("authorization", "")
    if not auth.startswith(ALGORITHM + " "):
        return "IncompleteSignature"
    parts = dict(p.split("=", 1) for p in auth[len(ALGORITHM) + 1 :].split(",") if "=" in p)
    signed = parts.get("SignedHeaders", "").split(";")
    needed = {"host", "x-acs-action", "x-acs-date", "x-acs-signature-nonce", "x-acs-content-sha256"}
    if not parts.get("Credential") or not parts.get("Signature") or not needed <= set(signed):
        return "IncompleteSignature"
    payload_hash = hashlib.sha256(body).hexdigest()
    if headers.get("x-acs-content-sha256") != payload_hash:
        return "SignatureDoesNotMatch"
    canonical_query = "&".join(f"{k}={quote(v, safe='~')}" for k, v in sorted(query))
    canonical_headers = "".join(f"{h}:{headers.get(h, '').strip()}\n" for h in signed)
    canonical = "\n".join(
        [method, path or "/", canonical_query, canonical_headers, ";".join(signed), payload_hash]
    )
    to_sign = f"{ALGORITHM}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    expected = hmac.new(secret.encode(), to_sign.encode(), hashlib.sha256).hexdigest()
    return None if hmac.compare_digest(expected, parts["Signature"]) else "SignatureDoesNotMatch"


def _e164(number: str) -> str:
    digits = number.strip().lstrip("+")
    if digits.startswith("0086"):
        digits = digits[4:]
    elif digits.startswith("86") and len(digits) == 13:
        digits = digits[2:]
    return f"+86{digits}" if len(digits) == 11 and digits.startswith("1") else f"+{digits}"


def _aliyun_number(e164: str) -> str:
    return e164[3:] if e164.startswith("+86") and len(e164) == 14 else e164.lstrip("+")


def _china(ts: float) -> str:
    return datetime.fromtimestamp(ts, SHANGHAI).strftime("%Y-%m-%d %H:%M:%S")


def _json_list(params: dict[str, str], name: str) -> list[Any] | None:
    try:
        value = json.loads(params.get(name) or "null")
    except ValueError:
        return None
    return value if isinstance(value, list) else None


def _refusal(fault: CallFault, retry_after_s: float) -> Response:
    if fault is CallFault.INSUFFICIENT_BALANCE:
        return _answer("isv.AMOUNT_NOT_ENOUGH", "账户余额不足")
    if fault is CallFault.RATE_LIMITED:
        response = _answer("Throttling.User", "Request was denied due to user flow control.", 400)
        response.headers["x-acs-retry-after"] = str(int(retry_after_s * 1000))
        return response
    if fault is CallFault.TIMEOUT:
        return _answer("ServiceUnavailable", "The request has failed due to a temporary failure.", 504)
    return _answer("ServiceUnavailable", "The request has failed due to a temporary failure.", 503)


class AliyunAPI:
    """``POST /`` (the RPC actions) and the report relay, over one :class:`GatewayState`
    (``QuerySendDetails`` reads the state's records)."""

    def __init__(self, state: GatewayState) -> None:
        self.state = state

    async def rpc(self, request: Request) -> Response:
        body = await request.body()
        query = list(request.query_params.multi_items())
        refused = verify_acs3_signature(
            request.method, request.url.path, query, dict(request.headers), body, self.state.token
        )
        if refused is not None:
            return _answer(refused, "The request signature does not conform to Aliyun standards.", 400)
        params = dict(query) | dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
        action = request.headers.get("x-acs-action") or params.get("Action")
        if action == "SendBatchSms":
            accept = lambda: self._send_batch(params)  # noqa: E731
        elif action == "QuerySendDetails":
            accept = lambda: self._query_send_details(params)  # noqa: E731
        else:
            return _answer("InvalidAction.NotFound", f"Specified api is not found: {action}", 404)
        state = self.state
        return await call_with_faults(
            request, state, API, accept=accept, refuse=lambda f: _refusal(f, state.faults.retry_after_s)
        )

    def _send_batch(self, params: dict[str, str]) -> Response:
        numbers = _json_list(params, "PhoneNumberJson")
        signs = _json_list(params, "SignNameJson")
        values = _json_list(params, "TemplateParamJson") or [{}] * len(numbers or [])
        template = params.get("TemplateCode") or ""
        if not numbers or signs is None or not len(numbers) == len(signs) == len(values):
            return _answer(
                "isv.INVALID_PARAMETERS", "PhoneNumberJson, SignNameJson and TemplateParamJson must match"
            )
        if len(numbers) > MAX_BATCH:
            return _answer("isv.MOBILE_COUNT_OVER_LIMIT", "too many numbers")
        if not template or template.startswith("SMS_REFUSED"):
            self.state.note_rejected("template_refused")
            return _answer("isv.SMS_TEMPLATE_ILLEGAL", "模板不合法")
        if any(str(s).startswith("REFUSED") for s in signs):
            self.state.note_rejected("signature_refused")
            return _answer("isv.SMS_SIGNATURE_ILLEGAL", "签名不合法")
        recipients = [_e164(str(n)) for n in numbers]
        rejections = [self.state.decide_rejection(to) for to in recipients]
        rejections += ["invalid_number" for n in numbers if not str(n).lstrip("+").isdigit()]
        refused = next((code for code in rejections if code), None)
        if refused is not None:  # one number refused: the whole call is
            return _answer(*REJECTIONS.get(refused, REJECTIONS["invalid_number"]))
        biz_id = f"{int(time.time() * 1000)}{next(_biz_ids):08d}^0"
        for to, sign, value in zip(recipients, signs, values, strict=True):
            self._accept_one(params, biz_id, to, str(sign), value)
        return _answer("OK", "OK", BizId=biz_id)

    def _accept_one(self, params: dict[str, str], biz_id: str, to: str, sign: str, value: Any) -> None:
        template, out_id = params.get("TemplateCode", ""), params.get("OutId")
        param_json = json.dumps(value, ensure_ascii=False, sort_keys=True)
        # Aliyun has no per-message id of ours: a message is (OutId, template, number, parameters).
        key = f"{out_id}|{template}|{to}|{param_json}"
        text = f"【{sign}】{param_json}"  # the simulator knows no template texts
        self.state.accept(
            API, key, to, text, biz_id=biz_id, aliyun_out_id=out_id, template_code=template, sign_name=sign
        )

    def _query_send_details(self, params: dict[str, str]) -> Response:
        to, day = _e164(params.get("PhoneNumber", "")), params.get("SendDate", "")
        biz_id = params.get("BizId")
        page, size = int(params.get("CurrentPage") or 1), min(int(params.get("PageSize") or 10), 50)
        records = [
            r
            for r in list(self.state.messages)  # a snapshot: the list only grows, until a reset
            if r.api == API
            and r.to == to
            and datetime.fromtimestamp(r.accepted_at, SHANGHAI).strftime("%Y%m%d") == day
            and (not biz_id or r.extra.get("biz_id") == biz_id)
        ]
        shown = records[(page - 1) * size : page * size]
        return _answer(
            "OK", "OK", TotalCount=str(len(records)),
            SmsSendDetailDTOs={"SmsSendDetailDTO": [_detail(r) for r in shown]},
        )  # fmt: skip

    def _authorized(self, request: Request) -> bool:
        return request.headers.get("authorization", "") == f"Bearer {self.state.token}"

    async def sms_report(self, request: Request) -> Response:
        if not self._authorized(request):
            return JSONResponse({"code": "unauthorized"}, 401)
        found, cursor = self.state.receipts_since(_cursor(request), API)
        return JSONResponse({"messages": [self._report(r) for r in found], "cursor": str(cursor)})

    async def sms_up(self, request: Request) -> Response:
        if not self._authorized(request):
            return JSONResponse({"code": "unauthorized"}, 401)
        found, cursor = self.state.replies_since(_cursor(request), API)
        first = int(request.query_params.get("cursor") or 0)
        return JSONResponse(
            {"messages": [_sms_up(r, first + i) for i, r in enumerate(found)], "cursor": str(cursor)}
        )

    def _report(self, receipt: SimReceipt) -> dict[str, Any]:
        record = self.state.lookup(provider_id=receipt.provider_id)
        extra = record.extra if record is not None else {}
        return {
            "phone_number": _aliyun_number(receipt.to),
            "send_time": _china(record.accepted_at if record else receipt.at),
            "report_time": _china(receipt.at),
            "success": receipt.delivered,
            "err_code": "DELIVERED" if receipt.delivered else receipt.code,
            "err_msg": "用户接收成功" if receipt.delivered else "用户接收失败",
            "sms_size": "1",
            "biz_id": extra.get("biz_id"),
            "out_id": extra.get("aliyun_out_id"),
        }


def _detail(record: Any) -> dict[str, Any]:
    status = record.status()
    send_status = {"accepted": 1, "undelivered": 2, "delivered": 3}[status]
    err_code = {"accepted": "", "delivered": "DELIVERED"}.get(status, record.code)
    return {
        "PhoneNum": _aliyun_number(record.to),
        "SendStatus": send_status,
        "ErrCode": err_code,
        "TemplateCode": record.extra.get("template_code"),
        "Content": record.text,
        "SendDate": _china(record.accepted_at),
        "ReceiveDate": _china(record.receipt_at) if status != "accepted" else "",
        "OutId": record.extra.get("aliyun_out_id"),
    }


def _sms_up(reply: SimReply, sequence: int) -> dict[str, Any]:
    return {
        "phone_number": _aliyun_number(reply.sender) if reply.sender.startswith("+") else reply.sender,
        "send_time": _china(reply.at),
        "content": reply.text,
        "sign_name": "",
        "dest_code": "",
        "sequence_id": sequence,
    }


def _cursor(request: Request) -> int:
    try:
        return int(request.query_params.get("cursor") or 0)
    except ValueError:
        return 0


def routes(state: GatewayState) -> list[BaseRoute]:
    """``POST /`` (SendBatchSms, QuerySendDetails), ``GET /aliyun/sms_report``, ``GET /aliyun/sms_up``."""
    api = AliyunAPI(state)
    return [
        Route("/", api.rpc, methods=["POST"]),
        Route("/aliyun/sms_report", api.sms_report, methods=["GET"]),
        Route("/aliyun/sms_up", api.sms_up, methods=["GET"]),
    ]
