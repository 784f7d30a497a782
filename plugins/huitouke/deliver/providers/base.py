"""The contract between the sender (batches, rate, concurrency, outbox states) and a provider
(one API spoken): what goes out, what comes back, and the one classification of every answer.

A provider never touches the store and never retries; it turns one call into one
:class:`SendOutcome` per message and says, by :class:`Fate`, what the sender must do. The sender
(``deliver/sender.py``) alone moves outbox rows between states, so "at most one message per
(campaign, customer, entry, wave, channel)" is enforced in one place.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol


class Fate(enum.StrEnum):
    """What one provider answer means for one message."""

    ACCEPTED = "accepted"  # the provider took it: the row ends `sent`
    RETRY = "retry"  # it certainly did not leave (429, 5xx before acceptance, refused connection)
    PAUSE = "pause"  # the account cannot send (out of balance): stop the batch, keep rows queued
    FAILED = "failed"  # permanent for this message (invalid number, unsubscribed)
    CAMPAIGN_FAILED = "campaign_failed"  # permanent for every message of its template / signature
    UNKNOWN = "unknown"  # it may have left (timeout after sending, dropped connection): never resend blindly


@dataclass(frozen=True)
class OutgoingMessage:
    """One outbox row as a provider needs it. ``out_id`` is ours, unique per message and stable
    across attempts (sent as the provider's client reference where it has one: Aliyun ``OutId``,
    the webhook's ``id``, an e-mail's Message-ID), so a status query can find it again."""

    message_id: int
    out_id: str
    channel: str  # sms | email
    recipient: str  # E.164 phone for SMS, address for e-mail
    body: str
    template: str  # playbook template name, e.g. sms/thank_you
    campaign: str
    subject: str | None = None
    html: str | None = None
    sms_segments: int = 1
    # SMS providers that send only pre-approved templates (Aliyun): the approved code and the
    # parameters it fills, rendered by the same sandbox as the body.
    template_code: str | None = None
    template_params: dict[str, str] = field(default_factory=dict)
    sign_name: str | None = None
    # E-mail: the one-click unsubscribe link's token (RFC 8058).
    unsubscribe_url: str | None = None
    # When the sender claimed the row for the attempt whose fate is in question (timezone-aware):
    # status queries that search by recipient and time (Aliyun, Twilio) start there, and answer
    # UNKNOWN without it.
    claimed_at: datetime | None = None


@dataclass(frozen=True)
class SendOutcome:
    """The provider's answer for one message of a call."""

    message_id: int
    fate: Fate
    provider_message_id: str | None = None
    reason: str | None = None  # provider's code and short text; never a phone number or address
    retry_after_s: float | None = None  # from Retry-After, when the provider said
    opt_out: bool = False  # the provider says the recipient unsubscribed (Twilio 21610)
    billed_segments: int | None = None  # what the provider says it billed


@dataclass(frozen=True)
class Receipt:
    """A delivery report: ``delivered`` or ``undelivered`` with the operator's code."""

    out_id: str | None
    provider_message_id: str | None
    delivered: bool
    code: str | None
    at: datetime | None
    # The number the receipt is for, where the provider's id names a whole call rather than one
    # message (Aliyun's BizId covers every number of a SendBatchSms call): match on both.
    recipient: str | None = None


@dataclass(frozen=True)
class Reply:
    """An inbound message from a customer (``T``, ``退订``, ``STOP``...)."""

    sender: str  # the customer's number or address, as the provider gives it
    text: str
    at: datetime | None


class StatusAnswer(enum.StrEnum):
    """A status query's answer for a message whose fate is unknown."""

    ACCEPTED = "accepted"  # the provider has it: it was sent; do not send again
    NOT_ACCEPTED = "not_accepted"  # the provider confirms it never took it: safe to send again
    UNKNOWN = "unknown"  # the provider cannot say (or has no status query): never resend


class Provider(Protocol):
    """One provider API. ``batch_size`` is how many messages one :meth:`send` call takes (1 for
    one-per-call APIs); ``max_concurrency`` and ``rate_per_s`` bound the sender's calls."""

    name: str
    channel: str
    batch_size: int
    max_concurrency: int
    rate_per_s: float | None

    def send(self, messages: Sequence[OutgoingMessage]) -> list[SendOutcome]:
        """Send one call's messages; one outcome per message, in any order. Never raises for a
        provider's answer (that is a :class:`Fate`); a call that fails whole gives every message
        the same outcome (a timeout after the request left: UNKNOWN)."""
        ...

    def status(self, message: OutgoingMessage, provider_message_id: str | None) -> StatusAnswer:
        """Whether the provider accepted a message whose fate is unknown."""
        ...

    def receipts(self, cursor: str | None) -> tuple[list[Receipt], str | None]:
        """Delivery receipts since ``cursor``, and the next cursor."""
        ...

    def replies(self, cursor: str | None) -> tuple[list[Reply], str | None]:
        """Inbound replies since ``cursor``, and the next cursor."""
        ...
