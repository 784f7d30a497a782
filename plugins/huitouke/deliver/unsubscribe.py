"""Per-message unsubscribe tokens: what an e-mail's one-click link (RFC 8058) carries.

A token names one outbox message and nothing else: the outbox row says which customer and channel
it was, so the token needs no personal data, readable or encrypted. It is signed (HMAC-SHA256,
truncated to 96 bits) so that nobody can unsubscribe someone else by guessing ids, and short
(20 to 28 characters, URL-safe base64 without padding) so links stay readable.

Layout before base64: one version byte (1), the message id as a minimal big-endian unsigned
integer (1 to 8 bytes), then the first 12 bytes of HMAC-SHA256(secret, context + version + id).

The secret: the ``password`` of the Airflow Connection ``huitouke_unsubscribe`` (Airflow masks a
Connection's password in logs and the UI), at least 16 bytes, the same for every run. Changing it
invalidates every link already sent. Hand-written over the standard library's ``hmac`` because
``itsdangerous``-style serializers carry a JSON payload and a timestamp: twice the length, and an
expiry an unsubscribe link must not have.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

TOKEN_VERSION = 1
MIN_SECRET_BYTES = 16
_MAC_BYTES = 12
_MAX_ID_BYTES = 8
_CONTEXT = b"huitouke/unsubscribe/"  # keeps these MACs apart from anything else the secret signs
_URLSAFE = re.compile(r"[A-Za-z0-9_-]+")


def _mac(secret: bytes, signed: bytes) -> bytes:
    return hmac.new(secret, _CONTEXT + signed, hashlib.sha256).digest()[:_MAC_BYTES]


def _check_secret(secret: bytes) -> None:
    if not isinstance(secret, bytes | bytearray) or len(secret) < MIN_SECRET_BYTES:
        raise ValueError(f"the unsubscribe secret must be at least {MIN_SECRET_BYTES} bytes")


def make_token(secret: bytes, message_id: int) -> str:
    """The token for outbox message ``message_id`` (a positive integer below 2**64)."""
    _check_secret(secret)
    if not 0 < message_id < 2**64:
        raise ValueError(f"message_id must be a positive 64-bit integer, not {message_id}")
    signed = bytes([TOKEN_VERSION]) + message_id.to_bytes((message_id.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(signed + _mac(secret, signed)).rstrip(b"=").decode("ascii")


def read_token(secret: bytes, token: str) -> int:
    """The message id a token names; ValueError when it is garbled, of an unknown version, or not
    signed with ``secret`` (forged, or made before the secret changed)."""
    _check_secret(secret)
    text = (token or "").strip()
    if not _URLSAFE.fullmatch(text):
        raise ValueError("unsubscribe token is garbled: not URL-safe base64")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("unsubscribe token is garbled: not URL-safe base64") from None
    if not 1 + 1 + _MAC_BYTES <= len(raw) <= 1 + _MAX_ID_BYTES + _MAC_BYTES:
        raise ValueError("unsubscribe token is garbled: wrong length")
    signed, mac = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
    if signed[0] != TOKEN_VERSION:
        raise ValueError(f"unsubscribe token has unknown version {signed[0]}")
    if not hmac.compare_digest(mac, _mac(secret, signed)):
        raise ValueError("unsubscribe token is forged or was signed with another secret")
    return int.from_bytes(signed[1:], "big")


def unsubscribe_url(base_url: str, token: str) -> str:
    """``https://shop.example/unsubscribe`` + token -> ``…/unsubscribe?token=…`` (a query the
    base URL already has is kept)."""
    parts = urlsplit(base_url)
    query = [*parse_qsl(parts.query, keep_blank_values=True), ("token", token)]
    return urlunsplit(parts._replace(query=urlencode(query)))


def token_from_url(url: str) -> str | None:
    """The ``token`` query parameter of an unsubscribe URL, or None."""
    for name, value in parse_qsl(urlsplit(url).query):
        if name == "token":
            return value
    return None
