"""What a failed HTTP exchange means for the messages it carried, for providers whose SDKs speak
through ``requests`` (Aliyun's Tea runtime, Twilio's ``TwilioHttpClient``).

The one question is whether the request may have reached the provider. A connection that was never
made (refused, DNS failure, connect timeout) certainly carried nothing: the message may be sent
again. A read timeout or a connection dropped after the request was written may have left the
message accepted on the other side: its fate is unknown, and it is never sent again blindly.

The SDKs wrap the ``requests`` error (Tea re-raises it as a ``RetryError`` inside an
``UnretryableException``), so the chain is walked: ``__cause__``, ``__context__`` and Tea's
``inner_exception``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import NewConnectionError

from huitouke.deliver.providers.base import Fate


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo.extend(
            [
                getattr(current, "inner_exception", None),
                current.__cause__,
                current.__context__,
            ]
        )


def _never_connected(exc: requests.ConnectionError) -> bool:
    if isinstance(exc, requests.ConnectTimeout):
        return True
    reason = exc.args[0] if exc.args else None
    reason = getattr(reason, "reason", reason)  # urllib3's MaxRetryError carries the cause
    return isinstance(reason, NewConnectionError)


def transport_fate(exc: BaseException) -> tuple[Fate, str] | None:
    """The fate and a short reason for a ``requests`` failure found in ``exc``'s chain, or ``None``
    when ``exc`` is not a transport failure."""
    for current in _chain(exc):
        if isinstance(current, requests.ConnectionError) and _never_connected(current):
            return Fate.RETRY, "could not connect"
        if isinstance(current, requests.Timeout):  # a read timeout: the request had left
            return Fate.UNKNOWN, "no answer before the read timeout"
        if isinstance(current, requests.ConnectionError):
            return Fate.UNKNOWN, "connection dropped after the request was sent"
        if isinstance(current, requests.RequestException):
            return Fate.UNKNOWN, "the exchange broke off after the request was sent"
    return None


def provider_session(base_url: str, pool_size: int) -> requests.Session:
    """A ``requests.Session`` for one provider's endpoint: a connection pool of ``pool_size``, no
    retries of its own (the sender decides), and the environment's proxy and CA bundle read once
    here rather than on every request (requests reads the whole environment per request when
    ``trust_env`` is on: a third of a batched call's client time)."""
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=2, pool_maxsize=max(pool_size, 4), max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.proxies.update(requests.utils.get_environ_proxies(base_url))
    session.verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
    session.trust_env = False
    return session
