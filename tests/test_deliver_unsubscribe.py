"""Per-message unsubscribe tokens: compact, opaque, signed (docs/delivery.md, "Opt-outs")."""

from __future__ import annotations

import base64

import pytest

from huitouke.deliver.unsubscribe import make_token, read_token, token_from_url, unsubscribe_url

SECRET = b"0123456789abcdef-test-secret"


@pytest.mark.parametrize("message_id", [1, 255, 256, 12345, 2**40 + 7, 2**64 - 1])
def test_a_token_names_its_message(message_id):
    token = make_token(SECRET, message_id)

    assert read_token(SECRET, token) == message_id
    assert token.replace("-", "").replace("_", "").isalnum()  # URL-safe, no padding
    assert len(token) <= 28


def test_tokens_are_short_and_carry_no_readable_id():
    token = make_token(SECRET, 12345)
    assert len(token) == 20  # 1 version byte + 2 id bytes + 12 MAC bytes
    assert "12345" not in token


@pytest.mark.parametrize(
    ("token", "message"),
    [
        ("", "garbled"),
        ("not a token!", "garbled"),
        ("AQ", "wrong length"),
        ("A" * 60, "wrong length"),
    ],
)
def test_a_garbled_token_is_refused(token, message):
    with pytest.raises(ValueError, match=message):
        read_token(SECRET, token)


def test_a_forged_or_foreign_token_is_refused():
    token = make_token(SECRET, 12345)
    raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    raw[2] ^= 1  # another message id, the old signature
    forged = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()

    with pytest.raises(ValueError, match="forged"):
        read_token(SECRET, forged)
    with pytest.raises(ValueError, match="forged"):
        read_token(b"another-secret-of-16-bytes", token)


def test_a_token_of_another_version_is_refused():
    raw = bytearray(base64.urlsafe_b64decode(make_token(SECRET, 5) + "=="))
    raw[0] = 2
    with pytest.raises(ValueError, match="unknown version 2"):
        read_token(SECRET, base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode())


def test_secrets_and_ids_are_checked():
    with pytest.raises(ValueError, match="at least 16 bytes"):
        make_token(b"short", 1)
    with pytest.raises(ValueError, match="positive"):
        make_token(SECRET, 0)


def test_the_url_carries_the_token_and_keeps_the_base_query():
    token = make_token(SECRET, 9)
    assert unsubscribe_url("https://shop.example/unsubscribe", token) == (
        f"https://shop.example/unsubscribe?token={token}"
    )
    url = unsubscribe_url("https://shop.example/u?shop=7", token)
    assert url == f"https://shop.example/u?shop=7&token={token}"
    assert token_from_url(url) == token
    assert token_from_url("https://shop.example/u") is None
