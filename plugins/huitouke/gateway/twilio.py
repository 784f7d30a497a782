"""The Twilio-shaped API of the simulator: the Messages resource of API version 2010-04-01, as the
``twilio`` SDK calls it once its base URL is this server.

- ``POST /2010-04-01/Accounts/{AccountSid}/Messages.json`` (form: To, From or
  MessagingServiceSid, Body): 201 and the message resource, or Twilio's error JSON
  (``{"code", "message", "more_info", "status"}``);
- ``GET .../Messages/{Sid}.json``: one message, its status moving from ``sent`` to ``delivered`` /
  ``undelivered`` (with an ErrorCode) when the state's receipt is due;
- ``GET .../Messages.json`` (To, From, PageSize, PageToken): outbound messages and the inbound
  replies, newest first, paged with ``next_page_uri``.

Basic auth: any account SID, the auth token = the state's token (20003 otherwise). Twilio's own
magic test numbers give its errors: To ``+15005550001`` 21211 (invalid), ``+15005550002`` 21612,
``+15005550003`` 21408 (region), ``+15005550004`` 21610 (unsubscribed), ``+15005550009`` 21614
(not mobile); From ``+15005550001`` 21212, ``+15005550007`` 21606. The state's
``rate_invalid_number`` dice answer 21211; ``insufficient_balance`` answers 20005 (account not
active: what an account out of funds gets).
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from huitouke.gateway.calls import call_with_faults
from huitouke.gateway.state import AcceptedMessage, CallFault, GatewayState, SimReply

__all__ = ["API", "DEFAULT_NUMBER", "TwilioAPI", "routes"]

API = "twilio"
DEFAULT_NUMBER = "+15005550006"  # Twilio's magic "valid From" number
BASE = "/2010-04-01/Accounts/{account_sid}"
MAGIC_TO = {
    "+15005550001": 21211,
    "+15005550002": 21612,
    "+15005550003": 21408,
    "+15005550004": 21610,
    "+15005550009": 21614,
}
MAGIC_FROM = {"+15005550001": 21212, "+15005550007": 21606}
ERRORS = {
    21211: (400, "The 'To' number is not a valid phone number."),
    21612: (400, "The 'To' phone number is not currently reachable via SMS."),
    21408: (
        400,
        "Permission to send an SMS has not been enabled for the region indicated by the 'To' number.",
    ),
    21610: (400, "Attempt to send to unsubscribed recipient"),
    21614: (400, "'To' number is not a valid mobile number"),
    21212: (400, "The 'From' number is not a valid phone number, shortcode, or alphanumeric sender ID."),
    21606: (400, "The 'From' phone number provided is not a valid message-capable Twilio phone number."),
    21602: (400, "Message body is required."),
    21604: (400, "A 'To' phone number is required."),
    21603: (400, "A 'From' phone number is required."),
    20003: (401, "Authenticate"),
    20005: (401, "Account not active"),
    20404: (404, "The requested resource was not found"),
    20429: (429, "Too Many Requests"),
    20500: (500, "Internal Server Error"),
    20504: (504, "Gateway Timeout"),
}
# The state's generic rejection codes as Twilio answers them.
REJECTIONS = {
    "invalid_number": 21211,
    "unsubscribed": 21610,
    "rate_limited": 20429,
    "template_refused": 21606,
}
UNDELIVERED = {"UNDELIV": 30003, "MK:0001": 30005, "EXPIRED": 30008}


def _error(code: int, headers: dict[str, str] | None = None) -> JSONResponse:
    status, message = ERRORS[code]
    body = {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    return JSONResponse(body, status_code=status, headers=headers)


def _rfc2822(ts: float | None) -> str | None:
    return format_datetime(datetime.fromtimestamp(ts, UTC), usegmt=True) if ts is not None else None


def _refusal(fault: CallFault, retry_after_s: float) -> Response:
    if fault is CallFault.INSUFFICIENT_BALANCE:
        return _error(20005)
    if fault is CallFault.RATE_LIMITED:
        return _error(20429, {"Retry-After": f"{retry_after_s:g}"})
    if fault is CallFault.TIMEOUT:
        return _error(20504)
    return _error(20500)


class TwilioAPI:
    """The Messages resource over one :class:`GatewayState` (listing reads the state's records).
    Every call meets the state's call faults, reads included."""

    def __init__(self, state: GatewayState) -> None:
        self.state = state

    def _authorized(self, request: Request) -> bool:
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
        except ValueError:
            return False
        return bool(user) and password == self.state.token

    async def create(self, request: Request) -> Response:
        if not self._authorized(request):
            return _error(20003)
        # The SDK posts application/x-www-form-urlencoded; parse_qsl is much cheaper than form().
        fields = dict(parse_qsl((await request.body()).decode("utf-8"), keep_blank_values=True))
        invalid = self._invalid(fields)
        if invalid is not None:
            return _error(invalid)
        state, sid = self.state, request.path_params["account_sid"]
        return await call_with_faults(
            request, state, API,
            accept=lambda: self._accept(sid, fields),
            refuse=lambda fault: _refusal(fault, state.faults.retry_after_s),
        )  # fmt: skip

    def _invalid(self, fields: dict[str, str]) -> int | None:
        to, sender = fields.get("To", ""), fields.get("From", "")
        if not to:
            return 21604
        if not fields.get("Body"):
            return 21602
        if not sender and not fields.get("MessagingServiceSid"):
            return 21603
        return MAGIC_FROM.get(sender) or MAGIC_TO.get(to)

    def _accept(self, account_sid: str, fields: dict[str, str]) -> Response:
        to, body = fields["To"], fields["Body"]
        refused = self.state.decide_rejection(to)
        if refused is not None:
            return _error(REJECTIONS.get(refused, 21211))
        sender = fields.get("From") or DEFAULT_NUMBER
        service = fields.get("MessagingServiceSid")
        # Twilio has no client reference: a message is (From, To, Body).
        record = self.state.accept(
            API,
            f"{sender}|{to}|{body}",
            to,
            body,
            from_=sender,
            messaging_service_sid=service,
            account_sid=account_sid,
        )
        return JSONResponse(_outbound(record, account_sid), status_code=201)

    async def fetch(self, request: Request) -> Response:
        if not self._authorized(request):
            return _error(20003)
        return await self._with_faults(request, lambda: self._fetch(request))

    def _fetch(self, request: Request) -> Response:
        record = self.state.lookup(provider_id=request.path_params["sid"].removesuffix(".json"))
        if record is None or record.api != API:
            return _error(20404)
        return JSONResponse(_outbound(record, request.path_params["account_sid"]))

    async def _with_faults(self, request: Request, answer: Callable[[], Response]) -> Response:
        state = self.state
        return await call_with_faults(
            request,
            state,
            API,
            accept=answer,
            refuse=lambda fault: _refusal(fault, state.faults.retry_after_s),
        )

    async def list(self, request: Request) -> Response:
        if not self._authorized(request):
            return _error(20003)
        return await self._with_faults(request, lambda: self._page(request))

    def _page(self, request: Request) -> Response:
        account_sid, params = request.path_params["account_sid"], request.query_params
        size = min(int(params.get("PageSize") or 50), 1000)
        items = [i for i in self._all(account_sid) if _wanted(i, params.get("To"), params.get("From"))]
        token = params.get("PageToken")
        if token:
            after = _token_key(token)
            items = [i for i in items if (i["_ts"], i["_seq"]) < after]
        page, rest = items[:size], items[size:]
        number = int(params.get("Page") or 0)
        uri = BASE.format(account_sid=account_sid) + "/Messages.json"
        query = {k: v for k, v in params.items() if k in ("To", "From")} | {"PageSize": size}
        next_uri = None
        if rest:
            last = page[-1]
            next_query = query | {"Page": number + 1, "PageToken": f"PA{last['_ts']!r}_{last['_seq']}"}
            next_uri = f"{uri}?{urlencode(next_query)}"
        return JSONResponse({
            "messages": [{k: v for k, v in i.items() if not k.startswith("_")} for i in page],
            "first_page_uri": f"{uri}?{urlencode(query)}", "next_page_uri": next_uri,
            "previous_page_uri": None, "page": number, "page_size": size,
            "start": 0, "end": len(page), "uri": f"{uri}?{urlencode(query)}",
        })  # fmt: skip

    def _all(self, account_sid: str) -> list[dict[str, Any]]:
        """Every message, newest first (by creation, then by arrival)."""
        records = list(self.state.messages)  # a snapshot: the list only grows, until a reset
        items = [
            _outbound(r, account_sid) | {"_ts": r.accepted_at, "_seq": n}
            for n, r in enumerate(records)
            if r.api == API
        ]
        replies, _ = self.state.replies_since(0, API, limit=10**9)
        for n, reply in enumerate(replies):
            items.append(self._inbound(reply, n, account_sid) | {"_ts": reply.at, "_seq": 10**12 + n})
        items.sort(key=lambda i: (i["_ts"], i["_seq"]), reverse=True)
        return items

    def _inbound(self, reply: SimReply, n: int, account_sid: str) -> dict[str, Any]:
        original = self.state.lookup(provider_id=reply.to_provider_id) if reply.to_provider_id else None
        our_number = (original.extra.get("from_") if original else None) or DEFAULT_NUMBER
        return _resource(
            f"SM{'f' * 8}{n:024x}", account_sid, direction="inbound", from_=reply.sender, to=our_number,
            body=reply.text, status="received", created=reply.at, sent=reply.at,
        )  # fmt: skip


def _outbound(record: AcceptedMessage, account_sid: str) -> dict[str, Any]:
    status = {"accepted": "sent", "delivered": "delivered", "undelivered": "undelivered"}[record.status()]
    resource = _resource(
        record.provider_id, account_sid, direction="outbound-api", from_=record.extra.get("from_"),
        to=record.to, body=record.text, status=status, created=record.accepted_at, sent=record.accepted_at,
    )  # fmt: skip
    resource["messaging_service_sid"] = record.extra.get("messaging_service_sid")
    if status == "undelivered":
        resource["error_code"] = UNDELIVERED.get(record.code, 30008)
        resource["error_message"] = "Unreachable destination handset"
        resource["date_updated"] = _rfc2822(record.receipt_at)
    return resource


def _resource(sid: str, account_sid: str, **f: Any) -> dict[str, Any]:
    uri = f"{BASE.format(account_sid=account_sid)}/Messages/{sid}.json"
    return {
        "sid": sid, "account_sid": account_sid, "api_version": "2010-04-01", "body": f["body"],
        "direction": f["direction"], "from": f["from_"], "to": f["to"], "status": f["status"],
        "date_created": _rfc2822(f["created"]), "date_sent": _rfc2822(f["sent"]),
        "date_updated": _rfc2822(f["sent"]), "num_segments": "1", "num_media": "0",
        "error_code": None, "error_message": None, "price": None, "price_unit": "USD",
        "messaging_service_sid": None, "uri": uri,
        "subresource_uris": {"media": uri.replace(".json", "/Media.json")},
    }  # fmt: skip


def _wanted(item: dict[str, Any], to: str | None, sender: str | None) -> bool:
    return (not to or item["to"] == to) and (not sender or item["from"] == sender)


def _token_key(token: str) -> tuple[float, int]:
    try:
        ts, _, seq = token.removeprefix("PA").partition("_")
        return float(ts), int(seq)
    except ValueError:
        return float("inf"), 0


def routes(state: GatewayState) -> list[BaseRoute]:
    """The Messages resource under ``/2010-04-01/Accounts/{AccountSid}/``."""
    api = TwilioAPI(state)
    base = "/2010-04-01/Accounts/{account_sid}"
    return [
        Route(f"{base}/Messages.json", api.create, methods=["POST"]),
        Route(f"{base}/Messages.json", api.list, methods=["GET"]),
        Route(f"{base}/Messages/{{sid}}", api.fetch, methods=["GET"]),
    ]
