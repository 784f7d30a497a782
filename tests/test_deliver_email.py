"""The e-mail provider against a real SMTP server (aiosmtpd) started here: the messages as they
arrive, and every kind of answer classified as docs/delivery.md ("E-mail") says."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
from collections.abc import Iterator
from email import message_from_bytes, policy

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from huitouke.deliver.providers.base import Fate, OutgoingMessage, StatusAnswer
from huitouke.deliver.providers.email import (
    SmtpEmailProvider,
    SmtpSettings,
    Stage,
    classify,
    scrub_reason,
)
from huitouke.deliver.unsubscribe import make_token, unsubscribe_url

SECRET = b"0123456789abcdef-test-secret"
# Recipients whose local part makes the relay below answer something other than 250.
RCPT_ANSWERS = {
    "later": "451 4.3.0 <later@example.com> try again later",
    "full": "452 4.2.2 mailbox full",
    "nobody": "550 5.1.1 <nobody@example.com>: Recipient address rejected: User unknown",
    "badaddr": "553 5.1.3 bad address syntax",
    "closing": "421 4.7.0 closing connection",
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Relay:
    """An SMTP relay that answers by recipient (RCPT_ANSWERS), refuses content whose subject
    says SPAM (554 5.7.1), drops the connection after the message for ``drop@``, answers too late
    for ``slow@``, and keeps what it accepted."""

    def __init__(self) -> None:
        self.accepted: list[tuple[str, list[str], bytes]] = []
        self.dropped = 0

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        if address.startswith("blocked@"):
            return "553 5.7.1 sender address not allowed"
        envelope.mail_from = address
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        answer = RCPT_ANSWERS.get(address.partition("@")[0])
        if answer:
            return answer
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        local = envelope.rcpt_tos[0].partition("@")[0]
        if local == "drop":
            self.dropped += 1
            server.transport.abort()
            return "250 OK"
        if local == "slow":
            await asyncio.sleep(1.0)  # longer than the client's timeout below
        if b"SPAM" in message_from_bytes(envelope.content, policy=policy.default)["Subject"].encode():
            return "554 5.7.1 message content rejected as spam"
        self.accepted.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 2.0.0 Ok: queued as 4BCD"


@pytest.fixture(scope="module")
def relay() -> Iterator[tuple[Relay, int]]:
    handler, port = Relay(), _free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    yield handler, port
    controller.stop()


@pytest.fixture
def provider(relay) -> SmtpEmailProvider:
    handler, port = relay
    handler.accepted.clear()
    return SmtpEmailProvider(
        SmtpSettings(
            host="127.0.0.1",
            port=port,
            from_email="小店 <shop@shop.example>",
            timeout_s=0.3,
            reply_to="service@shop.example",
            unsubscribe_mailto="unsubscribe@shop.example",
        )
    )


def _message(message_id: int, recipient: str, **kw) -> OutgoingMessage:
    fields = {
        "message_id": message_id,
        "out_id": f"htk-{message_id}",
        "channel": "email",
        "recipient": recipient,
        "body": "张三，您好：\n.这一行以点开头\n您的优惠券本周末到期。",
        "template": "email/coupon",
        "campaign": "new_customer_coupon",
        "subject": "您的专属优惠券：满100减20",
    }
    fields.update(kw)
    return OutgoingMessage(**fields)


def test_a_message_arrives_with_its_headers_and_both_bodies(provider, relay):
    url = unsubscribe_url("https://shop.example/unsubscribe", make_token(SECRET, 7))
    outcomes = provider.send(
        [_message(7, "zhang.san@example.com", html="<p>张三，您好</p>", unsubscribe_url=url)]
    )

    assert [(o.message_id, o.fate, o.provider_message_id) for o in outcomes] == [
        (7, Fate.ACCEPTED, "<htk-7@shop.example>")
    ]
    mail_from, rcpt_tos, content = relay[0].accepted[0]
    assert (mail_from, rcpt_tos) == ("shop@shop.example", ["zhang.san@example.com"])
    mail = message_from_bytes(content, policy=policy.default)
    assert mail["Subject"] == "您的专属优惠券：满100减20"
    assert mail["From"].addresses[0].display_name == "小店"
    assert mail["To"] == "zhang.san@example.com"
    assert mail["Message-ID"] == "<htk-7@shop.example>"
    assert mail["Reply-To"] == "service@shop.example"
    token = url.rpartition("token=")[2]
    assert " ".join(mail["List-Unsubscribe"].split()) == (
        f"<{url}>, <mailto:unsubscribe@shop.example?subject=unsubscribe-{token}>"
    )
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert mail.get_content_type() == "multipart/alternative"
    text, html = mail.get_body(("plain",)), mail.get_body(("html",))
    # MIME's canonical form: CRLF line ends inside the base64 text
    assert text.get_content().splitlines() == ["张三，您好：", ".这一行以点开头", "您的优惠券本周末到期。"]
    assert html.get_content().splitlines() == ["<p>张三，您好</p>"]
    assert content.isascii()  # 7-bit transfer encodings: no 8BITMIME needed


def test_without_html_or_unsubscribe_link_the_message_is_plain_text(provider, relay):
    [outcome] = provider.send([_message(8, "li.si@example.com", subject="Hello")])

    assert outcome.fate is Fate.ACCEPTED
    mail = message_from_bytes(relay[0].accepted[0][2], policy=policy.default)
    assert mail.get_content_type() == "text/plain"
    assert mail["List-Unsubscribe"] is None and mail["List-Unsubscribe-Post"] is None


def test_one_session_carries_a_batch_and_each_recipient_gets_its_own_outcome(provider, relay):
    messages = [
        _message(1, "a@example.com"),
        _message(2, "later@example.com"),
        _message(3, "full@example.com"),
        _message(4, "nobody@example.com"),
        _message(5, "badaddr@example.com"),
        _message(6, "b@example.com", subject="SPAM offer"),
        _message(7, "not an address"),
        _message(8, "c@example.com", subject="bad\nsubject"),
        _message(9, "d@example.com"),
    ]
    outcomes = {o.message_id: o for o in provider.send(messages)}

    assert {i: o.fate for i, o in outcomes.items()} == {
        1: Fate.ACCEPTED,
        2: Fate.RETRY,
        3: Fate.RETRY,
        4: Fate.FAILED,
        5: Fate.FAILED,
        6: Fate.CAMPAIGN_FAILED,
        7: Fate.FAILED,
        8: Fate.FAILED,
        9: Fate.ACCEPTED,
    }
    assert [rcpt for _, rcpt, _ in relay[0].accepted] == [["a@example.com"], ["d@example.com"]]
    assert outcomes[4].reason.startswith("smtp 550 5.1.1 <address>")
    assert outcomes[6].reason == "smtp 554 5.7.1 message content rejected as spam"
    for outcome, message in zip(outcomes.values(), messages, strict=True):
        assert "@" not in (outcome.reason or "") and message.recipient not in (outcome.reason or "")


def test_a_connection_dropped_after_the_message_left_is_unknown_and_ends_the_batch(provider, relay):
    messages = [_message(1, "a@example.com"), _message(2, "drop@example.com"), _message(3, "b@example.com")]
    outcomes = provider.send(messages)

    assert [(o.message_id, o.fate) for o in outcomes] == [
        (1, Fate.ACCEPTED),
        (2, Fate.UNKNOWN),
        (3, Fate.RETRY),
    ]
    assert outcomes[1].provider_message_id == "<htk-2@shop.example>"
    assert "after the message was sent" in outcomes[1].reason


def test_no_answer_after_the_message_left_is_unknown(provider):
    [outcome] = provider.send([_message(1, "slow@example.com")])

    assert outcome.fate is Fate.UNKNOWN


def test_421_retries_the_message_and_the_rest_of_the_batch(provider, relay):
    outcomes = provider.send([_message(1, "closing@example.com"), _message(2, "a@example.com")])

    assert [o.fate for o in outcomes] == [Fate.RETRY, Fate.RETRY]
    assert relay[0].accepted == []


def test_a_refused_sender_pauses_the_whole_batch(relay):
    settings = SmtpSettings(host="127.0.0.1", port=relay[1], from_email="blocked@shop.example", timeout_s=2)
    outcomes = SmtpEmailProvider(settings).send([_message(1, "a@example.com"), _message(2, "b@example.com")])

    assert [o.fate for o in outcomes] == [Fate.PAUSE, Fate.PAUSE]
    assert outcomes[0].reason == "smtp 553 5.7.1 sender address not allowed"


def test_a_refused_login_pauses_and_a_refused_connection_retries():
    port = _free_port()
    controller = Controller(
        Relay(),
        hostname="127.0.0.1",
        port=port,
        authenticator=lambda *args: AuthResult(success=False, handled=False),
        auth_require_tls=False,
    )
    controller.start()
    try:
        settings = SmtpSettings(
            host="127.0.0.1", port=port, from_email="shop@shop.example", login="shop", password="wrong"
        )
        outcomes = SmtpEmailProvider(settings).send(
            [_message(1, "a@example.com"), _message(2, "b@example.com")]
        )
    finally:
        controller.stop()
    assert [o.fate for o in outcomes] == [Fate.PAUSE, Fate.PAUSE]
    assert outcomes[0].reason.startswith("smtp 535")

    closed = SmtpSettings(host="127.0.0.1", port=_free_port(), from_email="shop@shop.example", timeout_s=2)
    [outcome] = SmtpEmailProvider(closed).send([_message(1, "a@example.com")])
    assert outcome.fate is Fate.RETRY
    assert outcome.reason == "smtp connection failed: ConnectionRefusedError"


@pytest.mark.parametrize(
    ("stage", "code", "text", "fate"),
    [
        (Stage.CONTENT, 250, "2.0.0 Ok", Fate.ACCEPTED),
        (Stage.RECIPIENT, 450, "4.2.0 mailbox busy", Fate.RETRY),
        (Stage.CONTENT, 451, "4.3.0 local error", Fate.RETRY),
        (Stage.SESSION, 421, "service not available", Fate.RETRY),
        (Stage.SESSION, 535, "5.7.8 authentication failed", Fate.PAUSE),
        (Stage.SENDER, 550, "5.7.1 sender rejected", Fate.PAUSE),
        (Stage.RECIPIENT, 550, "5.1.1 user unknown", Fate.FAILED),
        (Stage.RECIPIENT, 554, "5.7.1 relay access denied", Fate.FAILED),
        (Stage.CONTENT, 550, "5.1.1 user unknown", Fate.FAILED),
        (Stage.CONTENT, 552, "5.2.2 mailbox full", Fate.FAILED),
        (Stage.CONTENT, 554, "transaction failed", Fate.CAMPAIGN_FAILED),
        (Stage.CONTENT, 550, "5.7.1 content rejected", Fate.CAMPAIGN_FAILED),
        (Stage.CONTENT, 552, "5.3.4 message too big", Fate.FAILED),
        (Stage.CONTENT, 300, "what", Fate.UNKNOWN),
    ],
)
def test_every_smtp_answer_is_classified_by_the_one_table(stage, code, text, fate):
    assert classify(stage, code, text) is fate


def test_reasons_never_carry_an_address_or_a_full_phone_number():
    text = "550 5.1.1 <Zhang.San@Example.com>: user unknown; other x.y@z.cn; call 13812345678"
    scrubbed = scrub_reason(text, "zhang.san@example.com")
    assert "@" not in scrubbed and "13812345678" not in scrubbed


def test_status_receipts_and_replies_say_nothing(provider):
    message = _message(1, "a@example.com")
    assert provider.status(message, "<htk-1@shop.example>") is StatusAnswer.UNKNOWN
    assert provider.receipts("c1") == ([], "c1")
    assert provider.replies(None) == ([], None)


def test_from_connection_reads_host_credentials_and_extras(monkeypatch):
    extra = {
        "from_email": "小店 <shop@shop.example>",
        "starttls": "true",
        "timeout_s": 5,
        "max_concurrency": 4,
        "rate_per_s": 10,
        "reply_to": "service@shop.example",
    }
    conn = {"conn_type": "smtp", "host": "smtp.shop.example", "port": 587, "login": "shop", "password": "pw"}
    monkeypatch.setenv("AIRFLOW_CONN_HUITOUKE_SMTP", json.dumps({**conn, "extra": extra}))

    provider = SmtpEmailProvider.from_connection()

    s = provider.settings
    assert (s.host, s.port, s.login, s.password, s.starttls, s.ssl) == (
        "smtp.shop.example",
        587,
        "shop",
        "pw",
        True,
        False,
    )
    assert (provider.batch_size, provider.max_concurrency, provider.rate_per_s) == (50, 4, 10.0)
    assert (s.timeout_s, s.reply_to, s.domain) == (5.0, "service@shop.example", "shop.example")


def test_from_connection_without_from_email_says_what_to_add(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_HUITOUKE_SMTP", json.dumps({"conn_type": "smtp", "host": "smtp.x"}))
    with pytest.raises(Exception, match="extra.from_email"):
        SmtpEmailProvider.from_connection()


def _self_signed(tmp_path) -> tuple[str, str]:
    """A certificate for 127.0.0.1 and its key, as PEM files (cryptography comes with Airflow)."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test relay")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "relay.pem", tmp_path / "relay.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return str(cert_file), str(key_file)


def test_starttls_and_login_then_send_and_an_untrusted_certificate_pauses(tmp_path):
    cert_file, key_file = _self_signed(tmp_path)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert_file, key_file)
    handler, port = Relay(), _free_port()
    logins = []

    def authenticator(server, session, envelope, mechanism, auth_data):
        logins.append((auth_data.login, auth_data.password))
        return AuthResult(success=True)

    controller = Controller(
        handler,
        hostname="127.0.0.1",
        port=port,
        tls_context=tls,
        require_starttls=True,
        authenticator=authenticator,
        auth_required=True,
    )
    controller.start()
    try:
        settings = SmtpSettings(
            host="127.0.0.1",
            port=port,
            from_email="shop@shop.example",
            login="shop",
            password="secret",
            starttls=True,
            ca_file=cert_file,
        )
        [sent] = SmtpEmailProvider(settings).send([_message(1, "a@example.com")])
        untrusted = SmtpSettings(host="127.0.0.1", port=port, from_email="shop@shop.example", starttls=True)
        [paused] = SmtpEmailProvider(untrusted).send([_message(2, "b@example.com")])
    finally:
        controller.stop()

    assert sent.fate is Fate.ACCEPTED
    assert logins == [(b"shop", b"secret")]
    assert [rcpt for _, rcpt, _ in handler.accepted] == [["a@example.com"]]
    assert (paused.fate, paused.reason) == (Fate.PAUSE, "smtp TLS failed: SSLCertVerificationError")
