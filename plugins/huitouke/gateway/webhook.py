"""The generic JSON webhook API of docs/delivery.md, as the simulator answers it, under ``/webhook``
(so a Connection's host is ``http://127.0.0.1:8765/webhook``)."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from huitouke.gateway.calls import call_with_faults
from huitouke.gateway.state import CallFault, GatewayState, SimReceipt, SimReply, iso

__all__ = ["API", "WebhookAPI", "routes"]

API = "webhook"
MAX_BATCH = 1000
REJECTION_TEXTS = {
    "invalid_number": "invalid number",
    "unsubscribed": "recipient unsubscribed",
    "template_refused": "template not approved",
    "rate_limited": "too many messages to this number",
}


def _unauthorized() -> JSONResponse:
    return JSONResponse({"code": "unauthorized", "message": "bad or missing bearer token"}, status_code=401)


def _refusal(fault: CallFault, retry_after_s: float) -> Response:
    if fault is CallFault.INSUFFICIENT_BALANCE:
        return JSONResponse({"code": "insufficient_balance", "message": "account out of balance"}, 402)
    if fault is CallFault.RATE_LIMITED:
        return JSONResponse({"code": "rate_limited"}, 429, headers={"Retry-After": f"{retry_after_s:g}"})
    if fault is CallFault.TIMEOUT:
        return JSONResponse({"code": "gateway_timeout"}, 504)
    return JSONResponse({"code": "server_error", "message": "simulated failure"}, 503)


def _accept_all(state: GatewayState, items: list[dict[str, Any]]) -> JSONResponse:
    results = []
    for item in items:
        out_id, to = item.get("id"), str(item.get("to", ""))
        code = state.decide_rejection(to)
        if code is not None:
            results.append(
                {"id": out_id, "status": "rejected", "code": code, "message": REJECTION_TEXTS.get(code, code)}
            )
            continue
        extra = {k: item[k] for k in ("campaign", "template") if k in item}
        record = state.accept(API, out_id, to, str(item.get("text", "")), **extra)
        results.append({"id": out_id, "status": "accepted", "provider_id": record.provider_id})
    return JSONResponse({"results": results})


def _batch(body: Any) -> list[dict[str, Any]] | None:
    items = body.get("messages") if isinstance(body, dict) else None
    if not isinstance(items, list) or not 0 < len(items) <= MAX_BATCH:
        return None
    if not all(isinstance(i, dict) and i.get("id") and i.get("to") for i in items):
        return None
    return items


class WebhookAPI:
    """The endpoints, over one :class:`GatewayState`; every one needs ``Authorization: Bearer
    <state.token>`` (401 otherwise)."""

    def __init__(self, state: GatewayState) -> None:
        self.state = state

    def _authorized(self, request: Request) -> bool:
        return request.headers.get("authorization", "") == f"Bearer {self.state.token}"

    async def send(self, request: Request) -> Response:
        if not self._authorized(request):
            return _unauthorized()
        try:
            items = _batch(json.loads(await request.body()))
        except ValueError:
            items = None
        if items is None:
            message = f"expected {{'messages': [1..{MAX_BATCH} objects with id, to, text]}}"
            return JSONResponse({"code": "bad_request", "message": message}, 400)
        state = self.state
        return await call_with_faults(
            request,
            state,
            API,
            accept=lambda: _accept_all(state, items),
            refuse=lambda fault: _refusal(fault, state.faults.retry_after_s),
        )

    async def status(self, request: Request) -> Response:
        if not self._authorized(request):
            return _unauthorized()
        out_id = request.path_params["out_id"]
        record = self.state.lookup(out_id=out_id)
        if record is None or record.api != API:
            return JSONResponse({"id": out_id, "status": "not_found"}, 404)
        status = record.status()
        code = None if status == "accepted" else record.code
        return JSONResponse({"id": out_id, "provider_id": record.provider_id, "status": status, "code": code})

    async def receipts(self, request: Request) -> Response:
        if not self._authorized(request):
            return _unauthorized()
        found, cursor = self.state.receipts_since(_cursor(request), API)
        return JSONResponse({"receipts": [_receipt(r) for r in found], "cursor": str(cursor)})

    async def replies(self, request: Request) -> Response:
        if not self._authorized(request):
            return _unauthorized()
        found, cursor = self.state.replies_since(_cursor(request), API)
        return JSONResponse({"replies": [_reply(r) for r in found], "cursor": str(cursor)})


def routes(state: GatewayState) -> list[BaseRoute]:
    """``/webhook/messages`` (POST: send; GET ``/{id}``: status), ``/webhook/receipts``,
    ``/webhook/replies``."""
    api = WebhookAPI(state)
    return [
        Mount(
            "/webhook",
            routes=[
                Route("/messages", api.send, methods=["POST"]),
                Route("/messages/{out_id:path}", api.status, methods=["GET"]),
                Route("/receipts", api.receipts, methods=["GET"]),
                Route("/replies", api.replies, methods=["GET"]),
            ],
        )
    ]


def _cursor(request: Request) -> int:
    try:
        return int(request.query_params.get("cursor") or 0)
    except ValueError:
        return 0


def _receipt(r: SimReceipt) -> dict[str, Any]:
    status = "delivered" if r.delivered else "undelivered"
    return {"id": r.out_id, "provider_id": r.provider_id, "status": status, "code": r.code, "at": iso(r.at)}


def _reply(r: SimReply) -> dict[str, Any]:
    return {"from": r.sender, "text": r.text, "at": iso(r.at)}
