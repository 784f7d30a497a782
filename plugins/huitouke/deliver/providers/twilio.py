"""Twilio's Messages API through the official ``twilio`` SDK: one message a call (form-encoded,
basic auth with the account SID and auth token), status, receipts and replies by listing messages.

Twilio keeps no client reference id, so a message whose fate is unknown is looked for by listing
the messages sent To its recipient since the claim, newest first, and matching the body (and the
From number when one is configured). Receipts are the final status (``delivered`` /
``undelivered`` / ``failed`` with Twilio's ErrorCode) of outbound messages at least
``receipt_settle_s`` old; replies are the inbound messages. Both come from the same listing, with a
cursor of "created at" plus the message SIDs already seen at that second.

Pointing the SDK elsewhere (the simulator): the Connection's host replaces
``https://api.twilio.com`` in every URL, inside the SDK's documented extension point for custom
HTTP clients. Sending goes through the SDK's asynchronous API (``create_async``) on an
:class:`AsyncTwilioPool` - one event loop on a thread of its own, one ``aiohttp`` session with at
most ``max_concurrency`` requests in flight, no retries - so one :meth:`TwilioSmsProvider.send`
of ``batch_size`` messages makes that many one-message requests at once: the sender claims,
calls and records a batch at a time while the API stays one message a request. ``requests`` with
a thread per request topped out at about 500-620 calls/s on two cores. Status queries, receipts
and replies (a few calls each) go through the SDK's ``requests`` client,
:class:`PooledTwilioHttpClient`. The one thing read back after a call (the 429's ``Retry-After``)
is kept per thread and per asyncio task.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import threading
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
from requests.adapters import HTTPAdapter
from requests.utils import get_environ_proxies
from twilio.base import values
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http import AsyncHttpClient
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

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
from huitouke.pii import get_logger

log = get_logger(__name__)
# The SDK logs every request (with its query, e.g. To=<number>) at INFO: keep it out of task logs.
_sdk_log = get_logger(__name__ + ".http")
_sdk_log.setLevel("WARNING")

DEFAULT_CONN_ID = "huitouke_sms_twilio"
TWILIO_API = "https://api.twilio.com"
FINAL_STATUSES = {"delivered": True, "undelivered": False, "failed": False}
MAX_PAGES = 200

# Every Twilio error code huitouke acts on, classified once (twilio.com/docs/api/errors).
TWILIO_CODES: dict[int, tuple[Fate, str]] = {
    21211: (Fate.FAILED, "invalid 'To' number"),
    21614: (Fate.FAILED, "'To' is not a mobile number"),
    21612: (Fate.FAILED, "'To' cannot be reached by SMS"),
    21617: (Fate.FAILED, "body too long"),
    21610: (Fate.FAILED, "recipient unsubscribed (replied STOP)"),  # also an opt-out
    21408: (Fate.FAILED, "sending to this region is not enabled"),  # per destination
    21606: (Fate.CAMPAIGN_FAILED, "'From' number cannot send SMS"),
    21212: (Fate.CAMPAIGN_FAILED, "invalid 'From' number"),
    21660: (Fate.CAMPAIGN_FAILED, "'From' number not in this account"),
    21602: (Fate.CAMPAIGN_FAILED, "message body is required"),
    21603: (Fate.CAMPAIGN_FAILED, "no 'From' number or messaging service"),
    21604: (Fate.FAILED, "no 'To' number"),
    21703: (Fate.CAMPAIGN_FAILED, "messaging service has no sender"),
    21705: (Fate.CAMPAIGN_FAILED, "invalid messaging service"),
    20003: (Fate.PAUSE, "authentication failed"),
    20005: (Fate.PAUSE, "account not active (out of funds or suspended)"),
    10001: (Fate.PAUSE, "account not active"),
    20404: (Fate.PAUSE, "account or resource not found"),
    20429: (Fate.RETRY, "too many requests"),
    21611: (Fate.RETRY, "'From' number's queue is full"),
    20500: (Fate.RETRY, "Twilio internal error"),
    20503: (Fate.RETRY, "Twilio unavailable"),
}
OPT_OUT_CODES = {21610}


def classify_twilio_error(status: int | None, code: int | None) -> tuple[Fate, str]:
    """The one classification of a Twilio error answer: by code, else by HTTP status."""
    if code in TWILIO_CODES:
        return TWILIO_CODES[code]
    status = status or 0
    if status == 429:
        return Fate.RETRY, "too many requests"
    if status >= 500:
        return Fate.RETRY, "Twilio server error"
    if status in (401, 403):
        return Fate.PAUSE, "not allowed"
    return Fate.FAILED, "refused"  # another 4xx: this one message was refused


@dataclass(frozen=True)
class TwilioSettings:
    """What the Connection says (login, password, host, extras)."""

    account_sid: str
    auth_token: str
    base_url: str = TWILIO_API
    from_number: str | None = None
    messaging_service_sid: str | None = None
    timeout_s: float = 10.0
    connect_timeout_s: float = 5.0
    max_concurrency: int = 16  # requests in flight at once
    rate_per_s: float | None = None  # requests a second
    batch_size: int = 1  # messages per send() call, sent as that many requests at once
    # A message is looked at for its receipt once this old; one not final by then gets none.
    receipt_settle_s: float = 300.0
    # A status query answers NOT_ACCEPTED only for claims at least this old.
    status_settle_s: float = 30.0
    lookback_s: float = 86400.0  # where receipts/replies start without a cursor
    page_size: int = 200


class PooledTwilioHttpClient(TwilioHttpClient):
    """Twilio's ``requests``-based client, pointed at ``base_url``, with a pool of ``pool_size``
    connections, no retries, and the last response kept per thread.

    The environment's proxy and CA-bundle settings are read once here rather than on every call
    (``requests`` re-reads ``os.environ`` per request: about a millisecond of CPU, a bound on a
    one-message-a-call sender's rate)."""

    def __init__(self, base_url: str, pool_size: int, timeout: tuple[float, float]) -> None:
        self.base_url = base_url.rstrip("/")
        super().__init__(
            pool_connections=True, logger=_sdk_log, proxy=get_environ_proxies(self.base_url) or None
        )
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=max(1, pool_size), max_retries=0)
        assert self.session is not None
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)
        self.session.trust_env = False  # read above, once
        ca_bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        if ca_bundle:
            self.session.verify = ca_bundle
        self.timeout = timeout  # (connect, read): requests takes the pair
        self._local = threading.local()

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Response:
        if url.startswith(TWILIO_API) and self.base_url != TWILIO_API:
            url = self.base_url + url[len(TWILIO_API) :]
        self._local.response = None
        response = super().request(method, url, *args, **kwargs)
        self._local.response = response
        return response

    def retry_after_s(self) -> float | None:
        """``Retry-After`` of this thread's last response, in seconds."""
        return _retry_after_s(getattr(self._local, "response", None))


def _basic_auth(auth: tuple[str, str] | None) -> dict[str, str]:
    return {"Authorization": aiohttp.encode_basic_auth(*auth)} if auth else {}


def _retry_after_s(response: Response | None) -> float | None:
    value = (response.headers or {}).get("Retry-After") if response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def aiohttp_fate(exc: BaseException) -> tuple[Fate, str] | None:
    """As :func:`~huitouke.deliver.providers.transport.transport_fate`, for ``aiohttp``: only a
    connection never made (refused, not resolved, connect timeout) proves nothing left."""
    if isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError):
        return Fate.RETRY, "could not connect"
    if isinstance(exc, asyncio.TimeoutError):  # a read timeout (ServerTimeoutError is one too)
        return Fate.UNKNOWN, "no answer before the read timeout"
    if isinstance(exc, aiohttp.ClientError):
        return Fate.UNKNOWN, "connection dropped after the request was sent"
    return None


_last_async_response: contextvars.ContextVar[Response | None] = contextvars.ContextVar(
    "huitouke_twilio_response", default=None
)


class _Loop:
    """The pool's event loop, its thread and its session: what must be shut when the pool goes
    (kept apart from the pool so that a finalizer can hold it without keeping the pool alive)."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.session: aiohttp.ClientSession | None = None
        self.lock = threading.Lock()

    def start(self) -> asyncio.AbstractEventLoop:
        with self.lock:
            if self.loop is None:
                self.loop = asyncio.new_event_loop()
                threading.Thread(
                    target=self._run, args=(self.loop,), name="huitouke-twilio", daemon=True
                ).start()
            return self.loop

    @staticmethod
    def _run(loop: asyncio.AbstractEventLoop) -> None:
        loop.run_forever()
        loop.close()

    def shut(self) -> None:
        with self.lock:
            loop, self.loop = self.loop, None
        if loop is None:
            return
        if self.session is not None:
            try:
                asyncio.run_coroutine_threadsafe(self.session.close(), loop).result(timeout=5)
            except Exception as exc:  # noqa: BLE001 - closing is best effort
                log.debug("closing the Twilio session failed: %s", type(exc).__name__)
            self.session = None
        loop.call_soon_threadsafe(loop.stop)


class AsyncTwilioPool(AsyncHttpClient):
    """The SDK's asynchronous HTTP client, over ``aiohttp``, on an event loop of its own thread
    (started at the first request, shut by :meth:`close` or when the pool is collected): ``run``
    takes a coroutine from any thread and waits for it. URLs are pointed at ``base_url``; at most
    ``pool_size`` requests are in flight and request starts are spaced to ``rate_per_s``; no
    retries. The SDK's own ``AsyncTwilioHttpClient`` keeps the last response on the client (shared
    by concurrent requests) and makes its session outside the loop, hence this small one."""

    def __init__(
        self, base_url: str, pool_size: int, timeout: tuple[float, float], rate_per_s: float | None
    ) -> None:
        super().__init__(logger=_sdk_log, is_async=True, timeout=None)
        self.base_url = base_url.rstrip("/")
        self.pool_size = max(1, pool_size)
        self.connect_timeout, self.read_timeout = timeout
        self._gap = 1.0 / rate_per_s if rate_per_s else 0.0
        self._next_start = 0.0
        self._slots: asyncio.Semaphore | None = None
        self._state = _Loop()
        weakref.finalize(self, self._state.shut)

    def run(self, coroutine: Any) -> Any:
        """Run ``coroutine`` on the pool's loop and return its result (call from any thread but
        the loop's own)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._state.start()).result()

    def close(self) -> None:
        """Close the session and stop the loop (a later request starts them again)."""
        self._state.shut()
        self._slots = None

    async def request(  # noqa: PLR0913 - the SDK's signature
        self,
        method: str,
        uri: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        if uri.startswith(TWILIO_API) and self.base_url != TWILIO_API:
            uri = self.base_url + uri[len(TWILIO_API) :]
        session = self._state.session
        if session is None or self._slots is None:  # made on the loop, as aiohttp wants
            self._slots = asyncio.Semaphore(self.pool_size)
            session = self._state.session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.pool_size),
                timeout=aiohttp.ClientTimeout(sock_connect=self.connect_timeout, sock_read=self.read_timeout),
            )
        _last_async_response.set(None)
        async with self._slots:
            await self._pace()
            async with session.request(
                method.upper(),
                uri,
                params=params,
                data=data,
                headers={**(headers or {}), **_basic_auth(auth)},
                allow_redirects=allow_redirects,
            ) as answer:
                response = Response(answer.status, await answer.text(), answer.headers)
        _last_async_response.set(response)
        return response

    async def _pace(self) -> None:
        if not self._gap:
            return
        now = asyncio.get_running_loop().time()
        start = max(now, self._next_start)
        self._next_start = start + self._gap
        if start > now:
            await asyncio.sleep(start - now)


class TwilioSmsProvider:
    """Twilio SMS: one ``POST .../Messages.json`` a message, ``batch_size`` of them at once per
    :meth:`send`. Thread-safe (see the module doc)."""

    name = "twilio"
    channel = "sms"

    def __init__(self, settings: TwilioSettings) -> None:
        self.settings = settings
        self.batch_size = max(1, settings.batch_size)
        # One message a call: the sender's threads make the requests in flight. Batched: each call
        # has its batch in flight already; two calls let one batch be recorded while the next goes.
        self.max_concurrency = settings.max_concurrency if self.batch_size == 1 else 2
        self.rate_per_s = None  # paced per request by the pool, whatever the batch
        timeouts = (settings.connect_timeout_s, settings.timeout_s)
        self.http = PooledTwilioHttpClient(settings.base_url, settings.max_concurrency, timeouts)
        self.pool = AsyncTwilioPool(
            settings.base_url, settings.max_concurrency, timeouts, settings.rate_per_s
        )
        client = Client(settings.account_sid, settings.auth_token, http_client=self.http)
        self._messages = client.api.v2010.account.messages
        sending = Client(settings.account_sid, settings.auth_token, http_client=self.pool)
        self._sending = sending.api.v2010.account.messages

    def close(self) -> None:
        """Shut the sending pool's loop and session (also done when the provider is collected)."""
        self.pool.close()

    @classmethod
    def from_connection(cls, conn_id: str = DEFAULT_CONN_ID) -> TwilioSmsProvider:
        """Login = account SID, password = auth token, host = API base URL (default
        ``https://api.twilio.com``); extras: from_number or messaging_service_sid, timeout_s,
        connect_timeout_s, max_concurrency, rate_per_s, receipt_settle_s, status_settle_s,
        lookback_s, page_size."""
        from huitouke.store.connection import airflow_connection

        return cls(settings_from_connection(airflow_connection(conn_id)))

    # -- sending -------------------------------------------------------------------------------

    def send(self, messages: Sequence[OutgoingMessage]) -> list[SendOutcome]:
        """One request a message, all of them at once (within the pool's limit)."""

        async def all_at_once() -> list[SendOutcome]:
            return list(await asyncio.gather(*(self._send_one(m) for m in messages)))

        return self.pool.run(all_at_once())

    async def _send_one(self, message: OutgoingMessage) -> SendOutcome:
        s = self.settings
        try:
            created = await self._sending.create_async(
                to=message.recipient,
                body=message.body,
                from_=s.from_number or values.unset,
                messaging_service_sid=s.messaging_service_sid or values.unset,
            )
        except TwilioRestException as exc:
            return self._refused(message, exc.status, exc.code)
        except TwilioException as exc:  # TwilioServiceException (RFC 9457 errors) and others
            status, code = getattr(exc, "status", None), getattr(exc, "code", None)
            if status is None:
                return SendOutcome(message.message_id, Fate.UNKNOWN, reason="unreadable answer")
            return self._refused(message, status, code)
        except Exception as exc:
            fate, reason = aiohttp_fate(exc) or (Fate.UNKNOWN, f"unreadable answer: {type(exc).__name__}")
            return SendOutcome(message.message_id, fate, reason=reason)
        segments = _int(created.num_segments)
        return SendOutcome(
            message.message_id, Fate.ACCEPTED, provider_message_id=created.sid, billed_segments=segments
        )

    def _refused(self, message: OutgoingMessage, status: int | None, code: Any) -> SendOutcome:
        code = _int(code)
        fate, text = classify_twilio_error(status, code)
        return SendOutcome(
            message.message_id,
            fate,
            reason=f"twilio {code or status}: {text}",  # Twilio's own text may name the number
            retry_after_s=_retry_after_s(_last_async_response.get()) if fate is Fate.RETRY else None,
            opt_out=code in OPT_OUT_CODES,
        )

    # -- status of a message whose fate is unknown ---------------------------------------------

    def status(self, message: OutgoingMessage, provider_message_id: str | None) -> StatusAnswer:
        """By the SID when known; else the messages To the recipient created since the claim
        (less a minute for clock skew), matched on body and From. NOT_ACCEPTED only when the
        listing succeeded, found nothing, and the claim is at least ``status_settle_s`` old."""
        claimed = message.claimed_at
        if claimed is None and provider_message_id is None:
            return StatusAnswer.UNKNOWN
        try:
            if provider_message_id is not None:
                self._messages(provider_message_id).fetch()
                return StatusAnswer.ACCEPTED
            assert claimed is not None
            since = claimed - timedelta(minutes=1)
            if any(self._is_it(r, message) for r in self._listing(since, to=message.recipient)):
                return StatusAnswer.ACCEPTED
        except Exception as exc:
            log.warning("Twilio status query failed: %s", _error_text(exc))
            return StatusAnswer.UNKNOWN
        if claimed is None or (datetime.now(UTC) - claimed).total_seconds() < self.settings.status_settle_s:
            return StatusAnswer.UNKNOWN
        return StatusAnswer.NOT_ACCEPTED

    def _is_it(self, record: Any, message: OutgoingMessage) -> bool:
        outbound = str(record.direction or "").startswith("outbound")
        same_from = not self.settings.from_number or record.from_ == self.settings.from_number
        return outbound and same_from and record.body == message.body

    def _listing(self, since: datetime, to: str | None = None) -> Iterator[Any]:
        """Messages created at or after ``since``, newest first (Twilio's order), page by page."""
        page = self._messages.page(to=to or values.unset, page_size=self.settings.page_size)
        for _ in range(MAX_PAGES):
            for record in page:
                if record.date_created is not None and record.date_created < since:
                    return
                yield record
            page = page.next_page()
            if page is None:
                return
        raise TwilioException("more messages than the listing pages through")

    # -- receipts and replies ------------------------------------------------------------------

    def receipts(self, cursor: str | None) -> tuple[list[Receipt], str | None]:
        """Final statuses of outbound messages created after the cursor and at least
        ``receipt_settle_s`` ago."""
        upper = datetime.now(UTC) - timedelta(seconds=self.settings.receipt_settle_s)
        found, next_cursor = self._window(cursor, upper, outbound=True)
        receipts = [
            Receipt(
                out_id=None,
                provider_message_id=r.sid,
                delivered=FINAL_STATUSES[r.status],
                code=str(r.error_code) if r.error_code else str(r.status),
                at=r.date_updated,
            )
            for r in found
            if r.status in FINAL_STATUSES
        ]
        return receipts, next_cursor

    def replies(self, cursor: str | None) -> tuple[list[Reply], str | None]:
        """Inbound messages created after the cursor (To the From number when one is set)."""
        found, next_cursor = self._window(cursor, datetime.now(UTC), outbound=False)
        return [
            Reply(sender=r.from_, text=r.body or "", at=r.date_sent or r.date_created) for r in found
        ], next_cursor

    def _window(self, cursor: str | None, upper: datetime, *, outbound: bool) -> tuple[list[Any], str | None]:
        since, seen = _parse_cursor(cursor, datetime.now(UTC) - timedelta(seconds=self.settings.lookback_s))
        to = None if outbound else self.settings.from_number
        try:
            listed = list(self._listing(since, to=to))
        except Exception as exc:  # the next pull tries again from the same cursor
            log.warning("Twilio listing failed (%s); cursor kept", _error_text(exc))
            return [], cursor
        found = [
            r
            for r in listed
            if r.date_created is not None
            and r.date_created <= upper
            and r.sid not in seen
            and str(r.direction or "").startswith("outbound") == outbound
        ]
        if not found:
            return [], cursor
        newest = max(r.date_created for r in found)
        at_newest = {r.sid for r in found if r.date_created == newest} | (seen if newest == since else set())
        return found, _make_cursor(newest, at_newest)


def settings_from_connection(conn: Any) -> TwilioSettings:
    """The provider's settings from an Airflow Connection (see :meth:`TwilioSmsProvider.from_connection`)."""
    extra = getattr(conn, "extra_dejson", None) or {}
    base_url = conn.host or TWILIO_API
    if "://" not in base_url:
        base_url = f"https://{base_url}"
    if conn.port:
        base_url = f"{base_url}:{conn.port}"
    settings = TwilioSettings(account_sid=conn.login or "", auth_token=conn.password or "", base_url=base_url)
    return settings_with_extras(settings, extra, {"account_sid", "auth_token", "base_url"})


def _parse_cursor(cursor: str | None, default: datetime) -> tuple[datetime, set[str]]:
    if not cursor:
        return default, set()
    when, _, sids = cursor.partition("|")
    try:
        since = datetime.fromisoformat(when)
    except ValueError:
        return default, set()
    return since, {s for s in sids.split(",") if s}


def _make_cursor(since: datetime, seen: set[str]) -> str:
    return f"{since.astimezone(UTC).isoformat()}|{','.join(sorted(seen))}"


def _int(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _error_text(exc: Exception) -> str:
    if isinstance(exc, TwilioRestException):
        return f"twilio {exc.code} (HTTP {exc.status})"
    transport = transport_fate(exc)
    return transport[1] if transport else type(exc).__name__
