"""Aliyun SMS's report relay, served at ``/huitouke/aliyun`` (docs/delivery.md, "Aliyun SMS").

Aliyun pushes delivery receipts (``SmsReport``) and inbound messages (``SmsUp``) as HTTP POSTs of
a JSON array to URLs registered in its SMS console; the Aliyun provider pulls them by cursor.

- ``POST /aliyun/sms_report?token=T`` and ``POST /aliyun/sms_up?token=T`` (Aliyun): the records
  are kept (:func:`huitouke.deliver.aliyun_relay.store_push`) and the answer is Aliyun's documented
  ``{"code": 0, "msg": "接收成功"}`` with HTTP 200. Aliyun sends no credentials and no custom
  headers, so the push token is in the URL. A wrong token: 403; a body that is not a JSON array of
  records: 400 (413 when too large), with a one-line reason; a store that cannot be written: 503,
  and Aliyun pushes again later.
- ``GET /aliyun/sms_report?cursor=C`` and ``GET /aliyun/sms_up?cursor=C`` (the provider, with
  ``Authorization: Bearer <pull token>``): ``{"messages": [...], "cursor": "<last id>"}``, the
  records as Aliyun pushed them, in order, at most 1,000 a page. A wrong token: 401.

These routes need no Airflow login (Aliyun calls them). Their tokens are read from the Connection
``delivery.aliyun_relay_conn_id`` on each request (:func:`configured_tokens`); without one the
relay is off and the routes answer 404. Tokens are compared in constant time. Nothing personal is
logged: counts and feeds only.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from datetime import UTC, datetime

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from huitouke.deliver.aliyun_relay import (
    FEEDS,
    MAX_BODY_BYTES,
    BadPush,
    RelayTokens,
    parse_push,
    records_after,
    store_push,
)
from huitouke.pii import get_logger

__all__ = ["PREFIX", "aliyun_relay_router", "configured_engine", "configured_tokens"]

log = get_logger(__name__)

PREFIX = "/aliyun"
RECEIVED = {"code": 0, "msg": "接收成功"}  # Aliyun checks HTTP 200 and a numeric code
HEADERS = {"Cache-Control": "no-store"}

TokensOf = Callable[[], RelayTokens | None]
EngineOf = Callable[[], Engine]


def configured_tokens() -> RelayTokens | None:
    from huitouke.config import load_settings
    from huitouke.deliver.wiring import aliyun_relay_tokens

    return aliyun_relay_tokens(load_settings().delivery)


def configured_engine() -> Engine:
    from huitouke.ui.unsubscribe import configured_engine as store_engine

    return store_engine()


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _answer(status_code: int, code: int, msg: str) -> JSONResponse:
    return JSONResponse({"code": code, "msg": msg}, status_code=status_code, headers=HEADERS)


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


async def _body(request: Request) -> bytes:
    """The body, read up to one byte past the limit (a larger one is refused, never kept whole)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise BadPush(f"the body is larger than {MAX_BODY_BYTES} bytes", 413)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            break
    return bytes(body)


def _tokens(tokens_of: TokensOf) -> RelayTokens | JSONResponse:
    try:
        tokens = tokens_of()
    except Exception as exc:  # a missing Connection, a short token: the operator's to fix
        log.warning("Aliyun relay: its tokens are not available: %s", exc)
        return _answer(503, 1, "the relay is not configured correctly")
    return tokens if tokens is not None else _answer(404, 1, "not found")


class _Relay:
    """The routes' work; tokens and the store asked for on each request (module docstring)."""

    def __init__(self, tokens_of: TokensOf, engine_of: EngineOf, clock: Callable[[], datetime]) -> None:
        self.tokens_of, self.engine_of, self.clock = tokens_of, engine_of, clock

    async def tokens(self) -> RelayTokens | JSONResponse:
        return await run_in_threadpool(_tokens, self.tokens_of)  # the Connection may be in Airflow's DB

    async def push(self, feed: str, request: Request) -> JSONResponse:
        found = await self.tokens()
        if isinstance(found, JSONResponse):
            return found
        if not _same(request.query_params.get("token", ""), found.push):
            log.info("Aliyun relay: a %s push with a wrong token was refused", feed)
            return _answer(403, 1, "wrong token")
        try:
            records = parse_push(await _body(request))
        except BadPush as bad:
            log.info("Aliyun relay: a %s push was refused: %s", feed, bad)
            return _answer(bad.status_code, 1, str(bad))
        try:
            new = await run_in_threadpool(
                lambda: store_push(self.engine_of(), feed, records, self.clock(), found.keep_days)
            )
        except Exception as exc:  # the store is down or behind: Aliyun pushes again
            log.warning("Aliyun relay: a %s push could not be stored: %s", feed, type(exc).__name__)
            return _answer(503, 1, "not stored, push again later")
        log.info("Aliyun relay: %s push of %d records, %d new", feed, len(records), new)
        return JSONResponse(RECEIVED, headers=HEADERS)

    async def pull(self, feed: str, request: Request) -> JSONResponse:
        found = await self.tokens()
        if isinstance(found, JSONResponse):
            return found
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not _same(given.strip(), found.pull):
            return JSONResponse(
                {"error": "unauthorized"}, 401, headers={**HEADERS, "WWW-Authenticate": "Bearer"}
            )
        text = request.query_params.get("cursor") or "0"
        if not text.isdigit() or len(text) > 18:
            return JSONResponse({"error": "cursor: not a cursor this relay gave"}, 400, headers=HEADERS)
        try:
            messages, cursor = await run_in_threadpool(
                lambda: records_after(self.engine_of(), feed, int(text))
            )
        except Exception as exc:  # the store is down or behind: the provider pulls again
            log.warning("Aliyun relay: %s could not be read: %s", feed, type(exc).__name__)
            return JSONResponse({"error": "the store cannot be read"}, 503, headers=HEADERS)
        return JSONResponse({"messages": messages, "cursor": str(cursor)}, headers=HEADERS)


def aliyun_relay_router(
    tokens_of: TokensOf | None = None,
    engine_of: EngineOf | None = None,
    clock: Callable[[], datetime] = _utcnow,
) -> APIRouter:
    """The push and pull routes of both feeds, with no Airflow login (module docstring). Tokens and
    the store are asked for on each request: by default from the configuration
    (:func:`configured_tokens`, :func:`configured_engine`, looked up when called, so tests and a
    Connection edited in the UI take effect at once)."""
    relay = _Relay(
        lambda: (tokens_of or configured_tokens)(), lambda: (engine_of or configured_engine)(), clock
    )
    router = APIRouter()
    for name in FEEDS:
        path = f"{PREFIX}/{name}"
        router.add_api_route(path, _bound(relay.push, name), methods=["POST"], include_in_schema=False)
        router.add_api_route(path, _bound(relay.pull, name), methods=["GET"], include_in_schema=False)
    return router


def _bound(route: Callable, feed: str) -> Callable:
    """``route`` for one feed, as FastAPI wants an endpoint: one ``request`` parameter."""

    async def endpoint(request: Request) -> JSONResponse:
        return await route(feed, request)

    endpoint.__name__ = f"{route.__name__}_{feed}"
    return endpoint
