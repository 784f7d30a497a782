"""E-mail over SMTP: one session per batch, one transaction per message, every answer classified
once (:data:`SMTP_FATES`).

Why ``smtplib`` and not Airflow's ``SmtpHook`` (apache-airflow-providers-smtp): the hook's
``send_email_smtp`` retries ``sendmail`` on any exception, up to ``retry_limit`` times, so a
timeout after the message left would send it again — the one thing delivery must never do; it
builds an HTML-only body (no text alternative); and it reports a refusal as an exception, not as
the reply code and stage the classification needs. So this module speaks the SMTP dialogue itself
(MAIL, RCPT, DATA, then the message) to know exactly whether a failure came before the message
left (retry) or after (unknown). It still reads the same kind of Airflow Connection.
"""

from __future__ import annotations

import enum
import re
import smtplib
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from email import headerregistry, policy
from email.message import EmailMessage
from email.utils import formatdate, parseaddr
from typing import Any

from huitouke.deliver.providers.base import (
    Fate,
    OutgoingMessage,
    Receipt,
    Reply,
    SendOutcome,
    StatusAnswer,
)
from huitouke.deliver.unsubscribe import token_from_url
from huitouke.pii import get_logger, mask_text
from huitouke.store.connection import ConnectionConfigError, airflow_connection

log = get_logger(__name__)

DEFAULT_CONN_ID = "huitouke_smtp"


class Stage(enum.StrEnum):
    """Where in the SMTP dialogue an answer came."""

    SESSION = "session"  # greeting, EHLO, STARTTLS, AUTH
    SENDER = "mail"  # MAIL FROM
    RECIPIENT = "rcpt"  # RCPT TO, and the DATA command before the message is sent
    CONTENT = "data"  # the answer after the message was sent


# The one classification of SMTP answers. Keys are tried most specific first: the enhanced status
# class (RFC 3463, "5.7"), the reply code ("554"), its class ("5xx"); each for the stage, then for
# any stage (None).
SMTP_FATES: dict[tuple[Stage | None, str], Fate] = {
    (None, "2xx"): Fate.ACCEPTED,
    (None, "4xx"): Fate.RETRY,  # 421 closing, 450/451/452 try later: nothing was accepted
    (Stage.SESSION, "5xx"): Fate.PAUSE,  # 530/534/535 authentication, 554 no service: the account
    (Stage.SENDER, "5xx"): Fate.PAUSE,  # the From address is refused: every message would be
    (Stage.RECIPIENT, "5xx"): Fate.FAILED,  # 550/551/553 no such mailbox, bad address
    (Stage.CONTENT, "5.1"): Fate.FAILED,  # address status, checked after DATA by some servers
    (Stage.CONTENT, "5.2"): Fate.FAILED,  # mailbox full or disabled
    (Stage.CONTENT, "5.6"): Fate.CAMPAIGN_FAILED,  # the content itself is refused
    (Stage.CONTENT, "5.7"): Fate.CAMPAIGN_FAILED,  # policy: spam, content, signature
    (Stage.CONTENT, "554"): Fate.CAMPAIGN_FAILED,  # "transaction failed" after DATA: the content
    (Stage.CONTENT, "5xx"): Fate.FAILED,
}

_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.\d{1,3}\b")
_ADDRESS_LIKE = re.compile(r"<?[^\s<>@]+@[^\s<>]+>?")
_MSGID_UNSAFE = re.compile(r"[^A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]")
_MAX_REASON = 160


def classify(stage: Stage, code: int, text: str = "") -> Fate:
    """The fate of a message given one SMTP answer at ``stage`` (see :data:`SMTP_FATES`). An
    answer the table does not know is UNKNOWN after the message was sent, RETRY before."""
    enhanced = _ENHANCED.match(text.strip())
    keys = ([f"{enhanced[1]}.{enhanced[2]}"] if enhanced else []) + [str(code), f"{code // 100}xx"]
    for key in keys:
        for where in (stage, None):
            if (where, key) in SMTP_FATES:
                return SMTP_FATES[(where, key)]
    return Fate.UNKNOWN if stage is Stage.CONTENT else Fate.RETRY


def scrub_reason(text: str, recipient: str | None = None) -> str:
    """A server's answer made safe for the outbox and logs: the recipient and anything shaped like
    an address replaced by ``<address>``, phone numbers masked, cut to 160 characters."""
    text = _ADDRESS_LIKE.sub("<address>", text)
    if recipient:
        text = re.sub(re.escape(recipient), "<address>", text, flags=re.IGNORECASE)
    return " ".join(mask_text(text).split())[:_MAX_REASON]


def message_id_header(out_id: str, domain: str) -> str:
    """The Message-ID an out-id is sent under: ``htk-12345`` -> ``<htk-12345@shop.example>``."""
    return f"<{_MSGID_UNSAFE.sub('-', out_id)}@{domain}>"


class _UrlListHeader(headerregistry.UnstructuredHeader):
    """``List-Unsubscribe``: angle-bracketed URLs (RFC 2369), folded between them and never
    RFC 2047-encoded (the standard folder encodes a long mailto URL, which clients cannot read)."""

    def fold(self, *, policy: Any) -> str:
        urls = [url.strip() for url in str(self).split(",")]
        return f"{self.name}: " + ("," + policy.linesep + " ").join(urls) + policy.linesep


_HEADERS = headerregistry.HeaderRegistry()
_HEADERS.map_to_type("list-unsubscribe", _UrlListHeader)
# CRLF line ends, 7-bit transfer encodings (base64 for Chinese text: no 8BITMIME needed).
MESSAGE_POLICY = policy.SMTP.clone(cte_type="7bit", header_factory=_HEADERS)


@dataclass(frozen=True)
class SmtpSettings:
    """How to reach the SMTP server and what every message carries. ``from_email`` may have a
    display name (``小店 <shop@example.com>``); ``ssl`` is SMTP over TLS from the start (465),
    ``starttls`` upgrades a plain session (587). ``message_id_domain`` defaults to the From
    domain; ``unsubscribe_mailto`` adds a mailto to List-Unsubscribe; ``ca_file`` is a PEM bundle
    trusted instead of the system's CAs."""

    host: str
    from_email: str
    port: int = 25
    login: str | None = None
    password: str | None = None
    starttls: bool = False
    ssl: bool = False
    timeout_s: float = 30.0
    batch_size: int = 50
    max_concurrency: int = 2
    rate_per_s: float | None = None
    reply_to: str | None = None
    unsubscribe_mailto: str | None = None
    message_id_domain: str | None = None
    ca_file: str | None = None

    def tls_context(self) -> ssl.SSLContext:
        """Certificates verified against the system's CAs, or ``ca_file``'s (an internal relay)."""
        return ssl.create_default_context(cafile=self.ca_file)

    @property
    def envelope_sender(self) -> str:
        return parseaddr(self.from_email)[1]

    @property
    def domain(self) -> str:
        return self.message_id_domain or self.envelope_sender.rpartition("@")[2]


def _flag(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes", "on"}
    return bool(value)


def settings_from_connection(conn: Any) -> SmtpSettings:
    """Settings from an Airflow Connection: host, port, login, password; extras ``from_email``
    (required), ``starttls``, ``ssl``, ``timeout_s``, ``batch_size``, ``max_concurrency``,
    ``rate_per_s``, ``reply_to``, ``unsubscribe_mailto``, ``message_id_domain``, ``ca_file``."""
    extra = dict(conn.extra_dejson or {})
    conn_id = getattr(conn, "conn_id", DEFAULT_CONN_ID)
    from_email = extra.get("from_email")
    if not from_email or "@" not in parseaddr(str(from_email))[1]:
        raise ConnectionConfigError(
            f"Airflow Connection {conn_id!r} needs extra.from_email, e.g. "
            '{"from_email": "小店 <shop@example.com>"}'
        )
    if not conn.host:
        raise ConnectionConfigError(f"Airflow Connection {conn_id!r} has no host (the SMTP server)")
    use_ssl = _flag(extra.get("ssl", False))
    rate = extra.get("rate_per_s")
    return SmtpSettings(
        host=conn.host,
        port=int(conn.port or (465 if use_ssl else 25)),
        login=conn.login or None,
        password=conn.password or None,
        from_email=str(from_email),
        starttls=_flag(extra.get("starttls", False)),
        ssl=use_ssl,
        timeout_s=float(extra.get("timeout_s", 30.0)),
        batch_size=int(extra.get("batch_size", 50)),
        max_concurrency=int(extra.get("max_concurrency", 2)),
        rate_per_s=float(rate) if rate not in (None, "") else None,
        reply_to=extra.get("reply_to") or None,
        unsubscribe_mailto=extra.get("unsubscribe_mailto") or None,
        message_id_domain=extra.get("message_id_domain") or None,
        ca_file=extra.get("ca_file") or None,
    )


class _BatchStopped(Exception):
    """The session cannot take the rest of the batch: ``outcome`` is this message's, ``rest``
    (and ``reason``) every later one's."""

    def __init__(self, outcome: SendOutcome, rest: Fate, reason: str) -> None:
        super().__init__(reason)
        self.outcome, self.rest, self.reason = outcome, rest, reason


def session_failure(exc: BaseException) -> tuple[Fate, str]:
    """The fate of every message of a batch whose session could not be opened."""
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return Fate.PAUSE, f"smtp server does not support what the Connection asks ({exc})"
    if isinstance(exc, smtplib.SMTPResponseException):  # greeting, EHLO, STARTTLS, AUTH refused
        text = exc.smtp_error.decode("utf-8", "replace") if isinstance(exc.smtp_error, bytes) else ""
        return classify(Stage.SESSION, exc.smtp_code, text), f"smtp {exc.smtp_code} {scrub_reason(text)}"
    if isinstance(exc, FileNotFoundError | IsADirectoryError | PermissionError):
        return Fate.PAUSE, f"smtp TLS: cannot read the Connection's ca_file ({exc.__class__.__name__})"
    if isinstance(exc, ssl.SSLError | ssl.CertificateError):
        return Fate.PAUSE, f"smtp TLS failed: {exc.__class__.__name__}"
    if isinstance(exc, smtplib.SMTPException) and not isinstance(exc, smtplib.SMTPServerDisconnected):
        return Fate.PAUSE, f"smtp session refused: {scrub_reason(str(exc))}"  # e.g. no AUTH method
    # refused or timed-out connection, a dropped session: nothing was sent
    return Fate.RETRY, f"smtp connection failed: {exc.__class__.__name__}"


class SmtpEmailProvider:
    """The e-mail provider (channel ``email``): :class:`SmtpSettings`, or an Airflow Connection
    through :meth:`from_connection`. See :mod:`huitouke.deliver.providers.base` for the contract."""

    name = "smtp"
    channel = "email"

    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings
        self.batch_size = settings.batch_size
        self.max_concurrency = settings.max_concurrency
        self.rate_per_s = settings.rate_per_s

    @classmethod
    def from_connection(cls, conn_id: str = DEFAULT_CONN_ID) -> SmtpEmailProvider:
        return cls(settings_from_connection(airflow_connection(conn_id)))

    def message_id(self, message: OutgoingMessage) -> str:
        return message_id_header(message.out_id, self.settings.domain)

    def build_message(self, message: OutgoingMessage) -> EmailMessage:
        """The MIME message: text/plain, plus text/html as a multipart/alternative when there is
        HTML; List-Unsubscribe and List-Unsubscribe-Post (RFC 8058) when it has an unsubscribe URL."""
        mail = EmailMessage(policy=MESSAGE_POLICY)
        mail["Subject"] = message.subject or ""
        mail["From"] = self.settings.from_email
        mail["To"] = message.recipient
        mail["Date"] = formatdate(usegmt=True)
        mail["Message-ID"] = self.message_id(message)
        if self.settings.reply_to:
            mail["Reply-To"] = self.settings.reply_to
        if message.unsubscribe_url:
            mail["List-Unsubscribe"] = self._list_unsubscribe(message.unsubscribe_url)
            mail["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        mail.set_content(message.body)
        if message.html:
            mail.add_alternative(message.html, subtype="html")
        return mail

    def _list_unsubscribe(self, url: str) -> str:
        token = token_from_url(url)
        mailto = self.settings.unsubscribe_mailto
        if mailto and token:
            return f"<{url}>, <mailto:{mailto}?subject=unsubscribe-{token}>"
        return f"<{url}>"

    def send(self, messages: Sequence[OutgoingMessage]) -> list[SendOutcome]:
        """One SMTP session for the batch, one transaction per message. A session that cannot
        open gives every message its fate; one lost midway ends the batch: the message in flight
        is UNKNOWN if its content was sent (RETRY otherwise), the rest RETRY; a PAUSE (account or
        sender refused) pauses the rest."""
        if not messages:
            return []
        try:
            client = self._open()
        except (smtplib.SMTPException, OSError) as exc:
            fate, reason = session_failure(exc)
            log.warning(
                "SMTP session to %s:%s failed (%s): %s", self.settings.host, self.settings.port, fate, reason
            )
            return [SendOutcome(m.message_id, fate, reason=reason) for m in messages]
        outcomes: list[SendOutcome] = []
        try:
            for message in messages:
                outcomes.append(self._send_one(client, message))
        except _BatchStopped as stop:
            outcomes.append(stop.outcome)
            rest = messages[len(outcomes) :]
            outcomes.extend(SendOutcome(m.message_id, stop.rest, reason=stop.reason) for m in rest)
        finally:
            _close(client)
        return outcomes

    def _open(self) -> smtplib.SMTP:
        s = self.settings
        if s.ssl:
            client: smtplib.SMTP = smtplib.SMTP_SSL(
                s.host, s.port, timeout=s.timeout_s, context=s.tls_context()
            )
        else:
            client = smtplib.SMTP(s.host, s.port, timeout=s.timeout_s)
        try:
            client.ehlo()
            if s.starttls:
                client.starttls(context=s.tls_context())
                client.ehlo()
            if s.login:
                client.login(s.login, s.password or "")
        except BaseException:
            _close(client)
            raise
        return client

    def _send_one(self, client: smtplib.SMTP, message: OutgoingMessage) -> SendOutcome:
        """MAIL, RCPT, DATA, then the message; the answer after it decides (or a refusal before)."""
        recipient = parseaddr(message.recipient)[1]
        if not _sendable_address(recipient):
            return SendOutcome(message.message_id, Fate.FAILED, reason="invalid e-mail address")
        try:
            data = _dot_stuffed(self.build_message(message).as_bytes())
        except (ValueError, TypeError, UnicodeError) as exc:  # e.g. a line break in the subject
            return SendOutcome(
                message.message_id, Fate.FAILED, reason=f"message not buildable: {exc.__class__.__name__}"
            )
        try:
            for stage, command, ok in (
                (Stage.SENDER, lambda: client.mail(self.settings.envelope_sender), (250,)),
                (Stage.RECIPIENT, lambda: client.rcpt(recipient), (250, 251)),
                (Stage.RECIPIENT, lambda: client.docmd("DATA"), (354,)),
            ):
                code, text = command()
                if code not in ok:
                    return self._refused(client, message, stage, code, _text(text))
        except (smtplib.SMTPException, OSError) as exc:
            reason = f"smtp connection lost before the message was sent: {exc.__class__.__name__}"
            raise _BatchStopped(
                SendOutcome(message.message_id, Fate.RETRY, reason=reason), Fate.RETRY, reason
            ) from None
        try:
            client.send(data)
            code, text = client.getreply()
        except (smtplib.SMTPException, OSError) as exc:
            outcome = SendOutcome(
                message.message_id,
                Fate.UNKNOWN,
                provider_message_id=self.message_id(message),
                reason=f"smtp connection lost after the message was sent: {exc.__class__.__name__}",
            )
            raise _BatchStopped(outcome, Fate.RETRY, "smtp session lost earlier in the batch") from None
        if 200 <= code < 300:
            return SendOutcome(
                message.message_id, Fate.ACCEPTED, provider_message_id=self.message_id(message)
            )
        return self._refused(client, message, Stage.CONTENT, code, _text(text))

    def _refused(
        self, client: smtplib.SMTP, message: OutgoingMessage, stage: Stage, code: int, text: str
    ) -> SendOutcome:
        """A refusal's outcome; the transaction reset for the next message, or the batch stopped
        (421: the server closes the session; PAUSE: nothing else can go)."""
        fate = classify(stage, code, text)
        reason = f"smtp {code} {scrub_reason(text, message.recipient)}".strip()
        outcome = SendOutcome(message.message_id, fate, reason=reason)
        if code == 421:
            raise _BatchStopped(outcome, Fate.RETRY, "smtp server closed the session earlier in the batch")
        if fate is Fate.PAUSE:
            raise _BatchStopped(outcome, Fate.PAUSE, reason)
        try:
            client.rset()
        except (smtplib.SMTPException, OSError):
            raise _BatchStopped(outcome, Fate.RETRY, "smtp session lost earlier in the batch") from None
        return outcome

    def status(self, message: OutgoingMessage, provider_message_id: str | None) -> StatusAnswer:
        """SMTP has no status query: always UNKNOWN, so an e-mail whose fate is unknown is never
        sent again."""
        return StatusAnswer.UNKNOWN

    def receipts(self, cursor: str | None) -> tuple[list[Receipt], str | None]:
        """None over SMTP: bounces arrive as mail, not through an API (docs/delivery.md)."""
        return [], cursor

    def replies(self, cursor: str | None) -> tuple[list[Reply], str | None]:
        """None over SMTP: opt-outs come back through unsubscribe tokens and ``optouts import``."""
        return [], cursor


def _text(answer: bytes | str) -> str:
    return answer.decode("utf-8", "replace") if isinstance(answer, bytes) else str(answer)


def _sendable_address(address: str) -> bool:
    local, at, domain = address.rpartition("@")
    return bool(
        at and local and "." in domain and address.isascii() and not any(c.isspace() for c in address)
    )


def _dot_stuffed(data: bytes) -> bytes:
    """The message as DATA sends it (RFC 5321 4.5.2): a leading dot doubled on every line, ended
    by CRLF.CRLF. ``data`` already has CRLF line ends (MESSAGE_POLICY)."""
    body = re.sub(rb"(?m)^\.", b"..", data)
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    return body + b".\r\n"


def _close(client: smtplib.SMTP) -> None:
    """QUIT politely, then close whatever happens."""
    try:
        client.quit()
    except (smtplib.SMTPException, OSError):
        pass
    finally:
        client.close()
