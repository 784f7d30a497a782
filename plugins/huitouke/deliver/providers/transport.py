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

from collections.abc import Iterator

import requests
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
