"""The e-mail path through stage 5 against a real local SMTP server (aiosmtpd), on SQLite and
PostgreSQL: every queued e-mail arrives once, with the one-click unsubscribe headers (RFC 8058)
whose token names the message; an opted-out customer gets none; a re-run sends nothing again."""

from __future__ import annotations

import socket
from email import message_from_bytes, policy

import pytest
from aiosmtpd.controller import Controller
from deliver_rows import job, seed, statuses

from huitouke.deliver.daily import run_day
from huitouke.deliver.providers.email import SmtpEmailProvider, SmtpSettings
from huitouke.deliver.unsubscribe import read_token, token_from_url
from huitouke.deliver.wiring import message_factory

SECRET = b"a-test-secret-of-enough-bytes"


class Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[list[str], bytes]] = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append((list(envelope.rcpt_tos), envelope.content))
        return "250 2.0.0 Ok: queued"


@pytest.fixture(scope="module")
def smtp():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield inbox, port
    controller.stop()


def test_each_email_arrives_once_with_its_unsubscribe_headers(store_engine, smtp):
    inbox, port = smtp
    inbox.messages.clear()
    ids = seed(store_engine, 12, channel="email", opted_out={3})
    provider = SmtpEmailProvider(
        SmtpSettings(host="127.0.0.1", port=port, from_email="小店 <shop@shop.example>")
    )
    factory = message_factory(SECRET, "https://shop.example/unsubscribe", "小店")
    day_job = job({"email": provider}, message_of=factory)
    run_day(store_engine, day_job)
    run_day(store_engine, day_job)  # again: nothing more
    final = statuses(store_engine)
    assert sorted(s for s, _ in final.values()).count("sent") == 11
    recipients = [to for tos, _ in inbox.messages for to in tos]
    assert len(recipients) == len(set(recipients)) == 11 and "c3@example.com" not in recipients
    for _, raw in inbox.messages:
        mail = message_from_bytes(raw, policy=policy.default)
        assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        link = str(mail["List-Unsubscribe"]).strip("<>").split(">")[0]
        assert read_token(SECRET, token_from_url(link)) in ids
        assert mail["Subject"] == "优惠券"
