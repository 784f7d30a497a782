"""The generic JSON webhook (docs/delivery.md): any SMS gateway a shop puts behind this documented
API. One batched ``POST {base}/messages`` per call; every answer classified once, here.

Hand-written over ``requests`` (there is no SDK: the API is ours). A ``requests.Session`` pools
connections (at least ``max_concurrency`` of them) and is shared by the sender's threads.

What "the request left" means: only a failure urllib3 raises while *opening* the connection
(refused, name not resolved, connect timeout: :class:`urllib3.exceptions.ConnectTimeoutError` and
its subclass ``NewConnectionError``) proves the request was never written, so only that is RETRY.
Every other transport failure (read timeout, the connection closed or reset after the request
was written, a broken response) may hide an acceptance: UNKNOWN, for the status query to settle.
"""

from __future__ import annotations

import email.utils
import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit

import requests
from urllib3.exceptions import ConnectTimeoutError

from huitouke.deliver.providers.base import (
    Fate,
    OutgoingMessage,
    Receipt,
    Reply,
    SendOutcome,
    StatusAnswer,
)
from huitouke.deliver.providers.transport import provider_session
from huitouke.pii import get_logger, mask_phone, mask_text

__all__ = ["DEFAULT_CONN_ID", "MAX_BATCH_SIZE", "WebhookConfigError", "WebhookProvider"]

log = get_logger(__name__)

DEFAULT_CONN_ID = "huitouke_sms_webhook"
MAX_BATCH_SIZE = 1000
REASON_CHARS = 200

# A rejected message's code -> (fate, opt_out).
REJECTION_FATES: dict[str, tuple[Fate, bool]] = {
    "invalid_number": (Fate.FAILED, False),
    "unsubscribed": (Fate.FAILED, True),
    "template_refused": (Fate.CAMPAIGN_FAILED, False),
    "rate_limited": (Fate.RETRY, False),
}
# Whole-call answers other than 200.
CONFIG_STATUSES = {401, 403, 404, 405, 413}  # the Connection is wrong: pause, keep rows queued
PROXY_TIMEOUTS = {502, 504}  # an intermediary's "the gateway did not answer": it may have accepted


class WebhookConfigError(ValueError):
    """The Connection (or the arguments) do not describe a usable webhook; the message says why."""


class WebhookProvider:
    """The generic webhook, batched (:class:`huitouke.deliver.providers.base.Provider`)."""

    name = "webhook"
    channel = "sms"

    def __init__(
        self,
        base_url: str,
        token: str,
        batch_size: int = 100,
        timeout_s: float = 10.0,
        max_concurrency: int = 4,
        rate_per_s: float | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in {"http", "https"} or not parts.netloc:
            raise WebhookConfigError(
                f"webhook base URL must be http(s)://host[:port][/path], got {base_url!r}"
            )
        if not 1 <= int(batch_size) <= MAX_BATCH_SIZE:
            raise WebhookConfigError(f"webhook batch_size must be 1..{MAX_BATCH_SIZE}, got {batch_size}")
        if int(max_concurrency) < 1 or float(timeout_s) <= 0:
            raise WebhookConfigError("webhook max_concurrency must be >= 1 and timeout_s > 0")
        self.base_url = base_url.rstrip("/")
        self.batch_size = int(batch_size)
        self.timeout_s = float(timeout_s)
        self.max_concurrency = int(max_concurrency)
        self.rate_per_s = float(rate_per_s) if rate_per_s else None
        self.session = provider_session(self.base_url, self.max_concurrency)
        self.session.headers.update({"Authorization": f"Bearer {token}", "Accept": "application/json"})

    @classmethod
    def from_connection(cls, conn_id: str = DEFAULT_CONN_ID) -> WebhookProvider:
        """The provider an Airflow Connection describes (docs/delivery.md, "The webhook provider's
        Connection"): host = base URL, password = bearer token, settings in the extras."""
        return cls.from_connection_fields(_airflow_connection(conn_id))

    @classmethod
    def from_connection_fields(cls, conn: Any) -> WebhookProvider:
        """As :meth:`from_connection`, from a Connection object already fetched."""
        extra = getattr(conn, "extra_dejson", None) or {}
        if not conn.password:
            raise WebhookConfigError(
                f"Connection {conn.conn_id!r} needs password = the webhook's bearer token"
            )
        return cls(
            base_url_from_connection(conn),
            conn.password,
            batch_size=int(extra.get("batch_size", 100)),
            timeout_s=float(extra.get("timeout_s", 10.0)),
            max_concurrency=int(extra.get("max_concurrency", 4)),
            rate_per_s=extra.get("rate_per_s"),
        )

    def close(self) -> None:
        self.session.close()

    # -- send ----------------------------------------------------------------------------------

    def send(self, messages: Sequence[OutgoingMessage]) -> list[SendOutcome]:
        """One ``POST {base}/messages``; one outcome per message (never raises for an answer)."""
        if not messages:
            return []
        if len(messages) > self.batch_size:
            raise ValueError(f"{len(messages)} messages in one call; batch_size is {self.batch_size}")
        body = {"messages": [_wire_message(m) for m in messages]}
        try:
            response = self.session.post(
                f"{self.base_url}/messages",
                data=json.dumps(body, ensure_ascii=False).encode("utf-8"),
                headers={"Content-Type": "application/json; charset=utf-8"},
                timeout=self.timeout_s,
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            fate, reason = _transport_fate(exc)
            return [SendOutcome(m.message_id, fate, reason=reason) for m in messages]
        if response.status_code == 200:
            return _per_message(messages, response)
        return _whole_call(messages, response)

    # -- status, receipts, replies ---------------------------------------------------------------

    def status(self, message: OutgoingMessage, provider_message_id: str | None) -> StatusAnswer:
        """``GET {base}/messages/{out_id}``: 200 → ACCEPTED; a 404 naming the id → NOT_ACCEPTED;
        anything else (a bare 404 too: the route may simply not exist) → UNKNOWN."""
        try:
            response = self.session.get(
                f"{self.base_url}/messages/{quote(message.out_id, safe='')}", timeout=self.timeout_s
            )
        except requests.RequestException:
            return StatusAnswer.UNKNOWN
        if response.status_code == 200:
            return StatusAnswer.ACCEPTED
        if response.status_code == 404 and _json(response).get("id") == message.out_id:
            return StatusAnswer.NOT_ACCEPTED
        return StatusAnswer.UNKNOWN

    def receipts(self, cursor: str | None) -> tuple[list[Receipt], str | None]:
        """``GET {base}/receipts?cursor=C``. A failed pull returns nothing and the same cursor
        (logged): the next pull asks again, nothing is skipped."""
        page = self._pull("receipts", cursor)
        if page is None:
            return [], cursor
        receipts = [_receipt(item) for item in page.get("receipts") or () if isinstance(item, dict)]
        return [r for r in receipts if r is not None], _next_cursor(page, cursor)

    def replies(self, cursor: str | None) -> tuple[list[Reply], str | None]:
        """``GET {base}/replies?cursor=C``, as :meth:`receipts`."""
        page = self._pull("replies", cursor)
        if page is None:
            return [], cursor
        replies = [
            Reply(str(item["from"]), str(item.get("text", "")), _parse_time(item.get("at")))
            for item in page.get("replies") or ()
            if isinstance(item, dict) and item.get("from")
        ]
        return replies, _next_cursor(page, cursor)

    def _pull(self, what: str, cursor: str | None) -> dict[str, Any] | None:
        params = {"cursor": cursor} if cursor else None
        try:
            response = self.session.get(f"{self.base_url}/{what}", params=params, timeout=self.timeout_s)
        except requests.RequestException as exc:
            log.warning(
                "webhook %s pull failed (%s); will ask again from the same cursor", what, type(exc).__name__
            )
            return None
        page = _json(response)
        if response.status_code != 200 or not page:
            log.warning("webhook %s pull answered HTTP %s; will ask again", what, response.status_code)
            return None
        return page


def base_url_from_connection(conn: Any) -> str:
    """The base URL from a Connection: ``host`` as a full URL (``http://gw:8765/webhook``, a
    separate ``port`` filling in a missing one), or ``host`` + ``port`` with the scheme from
    ``extra.scheme`` or ``schema`` when that is http/https (Airflow's http provider's habit), the
    path from ``extra.path`` or else ``schema`` (what a URI ``http://:token@gw:8765/webhook`` gives)."""
    extra = getattr(conn, "extra_dejson", None) or {}
    host = (conn.host or "").strip()
    if not host:
        raise WebhookConfigError(f"Connection {conn.conn_id!r} needs host = the webhook's base URL")
    if "://" in host:
        parts = urlsplit(host)
        netloc = parts.netloc if parts.port or not conn.port else f"{parts.netloc}:{conn.port}"
        return f"{parts.scheme}://{netloc}{parts.path}".rstrip("/")
    schema = (conn.schema or "").strip("/")
    scheme = extra.get("scheme") or (schema if schema in {"http", "https"} else "http")
    path = str(extra.get("path") or ("" if schema in {"", "http", "https"} else schema)).strip("/")
    netloc = f"{host}:{conn.port}" if conn.port else host
    return f"{scheme}://{netloc}/{path}".rstrip("/")


def _airflow_connection(conn_id: str) -> Any:
    from airflow.sdk import BaseHook

    try:
        return BaseHook.get_connection(conn_id)
    except Exception as exc:  # AirflowNotFoundException and friends
        env = f"AIRFLOW_CONN_{conn_id.upper()}"
        raise WebhookConfigError(
            f"Airflow Connection {conn_id!r} is not defined: add it (Admin > Connections) or set {env}, e.g. "
            f'{env}=\'{{"conn_type": "http", "host": "http://127.0.0.1:8765/webhook", "password": "TOKEN"}}\' '
            f"({type(exc).__name__})"
        ) from None


def _wire_message(m: OutgoingMessage) -> dict[str, Any]:
    return {"id": m.out_id, "to": m.recipient, "text": m.body, "campaign": m.campaign, "template": m.template}


# -- classification -----------------------------------------------------------------------------


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """The exception and everything it wraps (args, ``reason``, cause, context), once each."""
    stack: list[Any] = [exc]
    seen: set[int] = set()
    while stack:
        current = stack.pop()
        if not isinstance(current, BaseException) or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        stack.extend(
            [*current.args, getattr(current, "reason", None), current.__cause__, current.__context__]
        )


def _transport_fate(exc: requests.RequestException) -> tuple[Fate, str]:
    """RETRY only when the connection was never opened; UNKNOWN for anything after that."""
    kind = type(exc).__name__
    if any(isinstance(e, ConnectTimeoutError) for e in _causes(exc)):
        return Fate.RETRY, f"could not connect to the webhook ({kind}); nothing was sent"
    if isinstance(exc, requests.Timeout):
        return Fate.UNKNOWN, f"no answer within the timeout after the request was sent ({kind})"
    return Fate.UNKNOWN, f"connection lost after the request was sent ({kind})"


def _retry_after(response: requests.Response) -> float | None:
    """Retry-After in seconds: a number or an HTTP date."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max((when - datetime.now(UTC)).total_seconds(), 0.0)


def _whole_call(messages: Sequence[OutgoingMessage], response: requests.Response) -> list[SendOutcome]:
    """A non-200 answer: the same outcome for every message of the call."""
    code = response.status_code
    detail = _detail(response)
    retry_after = None
    if code == 429:
        fate, retry_after = Fate.RETRY, _retry_after(response)
    elif code == 402:
        fate = Fate.PAUSE
        log.warning("webhook: the account is out of balance (HTTP 402); sending paused")
    elif code in CONFIG_STATUSES:
        fate = Fate.PAUSE
        log.warning("webhook answered HTTP %s: check the Connection (URL, token, batch_size); paused", code)
    elif code in PROXY_TIMEOUTS:
        fate = Fate.UNKNOWN
    elif 500 <= code < 600:
        fate = Fate.RETRY
    elif 400 <= code < 500:  # one bad message refuses the call: its messages fail, not their campaigns
        fate = Fate.FAILED
    else:  # 1xx, 3xx, other 2xx: not this API's answer; the gateway may have taken it
        fate = Fate.UNKNOWN
    reason = f"HTTP {code}{': ' + detail if detail else ''}"
    return [SendOutcome(m.message_id, fate, reason=reason, retry_after_s=retry_after) for m in messages]


def _per_message(messages: Sequence[OutgoingMessage], response: requests.Response) -> list[SendOutcome]:
    """A 200: one result per message, matched by id; a message the answer omits is UNKNOWN."""
    results = _json(response).get("results")
    by_id = {}
    if isinstance(results, list):
        by_id = {str(r.get("id")): r for r in results if isinstance(r, dict)}
    else:
        log.warning("webhook answered 200 without a results list; the call's messages are unknown")
    return [_message_outcome(m, by_id.get(m.out_id)) for m in messages]


def _message_outcome(message: OutgoingMessage, result: dict[str, Any] | None) -> SendOutcome:
    if result is None:
        return SendOutcome(message.message_id, Fate.UNKNOWN, reason="not in the webhook's answer")
    status = result.get("status")
    if status == "accepted":
        provider_id = result.get("provider_id")
        segments = result.get("segments")
        return SendOutcome(
            message.message_id,
            Fate.ACCEPTED,
            provider_message_id=str(provider_id) if provider_id is not None else None,
            billed_segments=int(segments) if isinstance(segments, int) else None,
        )
    if status != "rejected":
        return SendOutcome(message.message_id, Fate.UNKNOWN, reason=f"status {_safe(str(status), message)}")
    code = str(result.get("code") or "rejected")
    fate, opt_out = REJECTION_FATES.get(code, (Fate.FAILED, False))
    text = result.get("message")
    reason = _safe(f"{code}: {text}" if text else code, message)
    return SendOutcome(message.message_id, fate, reason=reason, opt_out=opt_out)


def _safe(text: str, message: OutgoingMessage | None = None) -> str:
    """A reason fit for the outbox and logs: the recipient and anything like a phone number or
    e-mail address masked, cut to REASON_CHARS."""
    if message is not None and message.recipient:
        text = text.replace(message.recipient, mask_phone(message.recipient))
    return mask_text(text)[:REASON_CHARS]


def _detail(response: requests.Response) -> str:
    body = _json(response)
    detail = " ".join(str(body[k]) for k in ("code", "message") if body.get(k))
    return _safe(detail or response.text[:REASON_CHARS].strip())


def _json(response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


# -- receipts and replies -----------------------------------------------------------------------


def _parse_time(value: Any) -> datetime | None:
    """ISO 8601 with its offset → an aware datetime; a time without offset is taken as UTC."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _receipt(item: dict[str, Any]) -> Receipt | None:
    status = item.get("status")
    if status not in {"delivered", "undelivered"}:
        return None
    provider_id = item.get("provider_id")
    return Receipt(
        out_id=str(item["id"]) if item.get("id") is not None else None,
        provider_message_id=str(provider_id) if provider_id is not None else None,
        delivered=status == "delivered",
        code=str(item["code"]) if item.get("code") is not None else None,
        at=_parse_time(item.get("at")),
    )


def _next_cursor(page: dict[str, Any], cursor: str | None) -> str | None:
    value = page.get("cursor")
    return str(value) if value not in (None, "") else cursor
