"""The gateway simulator's memory: its faults, every message it accepted, its receipts and replies.

One :class:`GatewayState` is shared by every API the simulator speaks (webhook, Aliyun- and
Twilio-shaped), so a test reads one record of what reached "the operator" whatever path it took.
Everything is in memory behind one lock: the per-message path must stay cheap (the delivery
benchmark pushes 100,000 messages through it) and tests read it from another thread.

The simulator does **not** deduplicate by default: a message sent twice with the same ``out_id``
is recorded twice, with ``times_accepted`` counting, so a double send is visible. ``dedupe_ids``
makes it behave like a gateway that honours repeated ids instead.
"""

from __future__ import annotations

import dataclasses
import enum
import gc
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "PROVIDER_ID_FORMATS",
    "AcceptedMessage",
    "CallFault",
    "GatewayFaults",
    "GatewayState",
    "SimReceipt",
    "SimReply",
]

# In a process of its own (``freeze_records``), every this many acceptances the objects made so far
# are moved out of the cyclic garbage collector's sight (gc.freeze, process-wide: not in a test's
# process): the records live until a reset, and each full collection walked them all (at 100,000
# messages, a third of the simulator's CPU). They are still freed when dropped.
FREEZE_EVERY = 10_000
UNDELIVERED_CODES = ("UNDELIV", "MK:0001", "EXPIRED")  # operator codes, China-style
DELIVERED_CODE = "DELIVRD"

# How each API's provider ids look; n counts every acceptance of the simulator from 1.
PROVIDER_ID_FORMATS: dict[str, Callable[[int], str]] = {
    "webhook": lambda n: f"wh-{n:010d}",
    "aliyun": lambda n: f"{n:018d}^0",
    "twilio": lambda n: f"SM{n:032x}",
}


@dataclass(frozen=True)
class GatewayFaults:
    """What goes wrong, and how often. Rates are shares of calls (``rate_5xx``, ``rate_429``,
    ``rate_timeout``, ``rate_drop``: drawn once per call, in that order) or of messages
    (``rate_invalid_number``, ``rate_reply_t``, ``rate_undelivered``).

    - timeout: the gateway hangs ``hang_s`` seconds before answering; a share ``timeout_accepts``
      of those calls records the messages first (a client that gave up cannot tell which);
    - drop: the gateway records the call's messages, then closes the connection without a response;
    - insufficient_balance: every send is answered "out of balance", nothing is accepted.

    ``dedupe_ids`` is behaviour rather than a fault: answer a repeated out_id with its first
    record instead of accepting it again. ``receipt_delay_s``/``reply_delay_s``: how long after
    acceptance receipts and replies become visible.
    """

    latency_ms: float = 0.0
    rate_5xx: float = 0.0
    rate_429: float = 0.0
    retry_after_s: float = 1.0
    rate_timeout: float = 0.0
    hang_s: float = 30.0
    timeout_accepts: float = 0.5
    timeout_accepts_late: float = 0.0  # of the timeouts: accepted only after hanging (a slow backend)
    rate_drop: float = 0.0
    rate_invalid_number: float = 0.0
    rate_reply_t: float = 0.0
    rate_undelivered: float = 0.0
    insufficient_balance: bool = False
    seed: int = 0
    dedupe_ids: bool = False
    receipt_delay_s: float = 0.0
    reply_delay_s: float = 0.0

    def changed(self, **changes: Any) -> GatewayFaults:
        """A copy with ``changes`` (unknown names raise ``TypeError``), values coerced to each
        field's type so JSON from ``POST /_sim/faults`` works."""
        kinds = {f.name: f.type for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - set(kinds))
        if unknown:
            raise TypeError(f"unknown gateway fault settings: {', '.join(unknown)}")
        casts = {"float": float, "int": int, "bool": _as_bool}
        return dataclasses.replace(self, **{k: casts[str(kinds[k])](v) for k, v in changes.items()})

    def describe(self) -> str:
        """The settings that differ from the defaults, for one log line."""
        default = GatewayFaults()
        diffs = [
            f"{f.name}={getattr(self, f.name)}"
            for f in dataclasses.fields(self)
            if getattr(self, f.name) != getattr(default, f.name)
        ]
        return ", ".join(diffs) or "no faults"


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes", "on"}
    return bool(value)


class CallFault(enum.StrEnum):
    """What happens to one API call, decided before it is handled."""

    NONE = "none"
    INSUFFICIENT_BALANCE = "insufficient_balance"  # answer "out of balance", accept nothing
    SERVER_ERROR = "5xx"  # answer 5xx, accept nothing
    RATE_LIMITED = "429"  # answer 429 with Retry-After, accept nothing
    TIMEOUT = "timeout"  # hang hang_s, accept nothing, then answer an error
    TIMEOUT_ACCEPTED = "timeout_accepted"  # accept, then hang hang_s, then answer normally
    TIMEOUT_LATE = "timeout_late"  # hang hang_s, then accept: finished after the client gave up
    DROP = "drop"  # accept, then close the connection without a response


@dataclass
class AcceptedMessage:
    """One acceptance. ``times_accepted`` is how many times this ``out_id`` had been accepted when
    this record was made (1 for the first); the listing reports the current total."""

    provider_id: str
    api: str
    out_id: str | None
    to: str
    text: str
    accepted_at: float
    times_accepted: int
    delivered: bool
    code: str
    receipt_at: float
    extra: dict[str, Any] = field(default_factory=dict)
    duplicate_answer: bool = False  # dedupe_ids: this is the first record, answered again

    def status(self, now: float | None = None) -> str:
        """``accepted`` until the receipt is visible, then ``delivered``/``undelivered``."""
        if (now or time.time()) < self.receipt_at:
            return "accepted"
        return "delivered" if self.delivered else "undelivered"


@dataclass(frozen=True)
class SimReceipt:
    provider_id: str
    out_id: str | None
    api: str
    to: str
    delivered: bool
    code: str
    at: float


@dataclass(frozen=True)
class SimReply:
    sender: str
    text: str
    at: float
    api: str | None  # None: visible to every API (an injected reply)
    to_provider_id: str | None = None


def iso(ts: float) -> str:
    """A timestamp as ISO 8601 with its offset (UTC)."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


class GatewayState:
    """The simulator's records and fault dice, shared by its APIs; every method takes the lock."""

    def __init__(
        self, faults: GatewayFaults | None = None, token: str = "test-token", freeze_records: bool = False
    ) -> None:
        self._lock = threading.Lock()
        self.freeze_records = freeze_records
        self.faults = faults or GatewayFaults()
        self.token = token  # the credential every API of the simulator checks (webhook: Bearer)
        self._reset_records()

    # -- configuration -------------------------------------------------------------------------

    def _reset_records(self) -> None:
        self.random = random.Random(self.faults.seed)
        self.messages: list[AcceptedMessage] = []
        self._by_out_id: dict[str, list[AcceptedMessage]] = {}
        self._by_provider_id: dict[str, AcceptedMessage] = {}
        self.receipts: list[SimReceipt] = []
        self.replies: list[SimReply] = []
        self._repliers: set[str] = set()
        self._invalid_numbers: dict[str, bool] = {}
        self.forced_rejections: dict[str, str] = {}
        self._accepted_total = 0
        self._duplicates = 0  # out_ids accepted more than once
        self._deduplicated = 0  # repeats answered with their first record (dedupe_ids)
        self.rejected: Counter[str] = Counter()
        self.faults_injected: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()

    def reset(self, faults: GatewayFaults | None = None) -> None:
        """Forget every record and counter (and take new ``faults`` if given); re-seed the dice."""
        with self._lock:
            if faults is not None:
                self.faults = faults
            self._reset_records()

    def set_faults(self, **changes: Any) -> GatewayFaults:
        """Change faults at run time (``seed`` re-seeds the dice)."""
        with self._lock:
            self.faults = self.faults.changed(**changes)
            if "seed" in changes:
                self.random = random.Random(self.faults.seed)
            if "rate_invalid_number" in changes:
                self._invalid_numbers.clear()
            return self.faults

    # -- per call and per message decisions ----------------------------------------------------

    def decide_call_fault(self, api: str = "webhook") -> CallFault:
        """Draw this call's fault from the rates (and count the call and the fault)."""
        with self._lock:
            self.calls[api] += 1
            fault = self._draw_call_fault()
            if fault is not CallFault.NONE:
                self.faults_injected[fault.value] += 1
            return fault

    def _draw_call_fault(self) -> CallFault:
        f = self.faults
        if f.insufficient_balance:
            return CallFault.INSUFFICIENT_BALANCE
        draw = self.random.random()
        for rate, fault in (
            (f.rate_5xx, CallFault.SERVER_ERROR),
            (f.rate_429, CallFault.RATE_LIMITED),
            (f.rate_timeout, None),
            (f.rate_drop, CallFault.DROP),
        ):
            if draw < rate:
                if fault is None:
                    kind = self.random.random()
                    if kind < f.timeout_accepts:
                        return CallFault.TIMEOUT_ACCEPTED
                    if kind < f.timeout_accepts + f.timeout_accepts_late:
                        return CallFault.TIMEOUT_LATE
                    return CallFault.TIMEOUT
                return fault
            draw -= rate
        return CallFault.NONE

    def decide_rejection(self, to: str) -> str | None:
        """The rejection code for a message to ``to`` (counted), else None: a code a test set for
        this number (:meth:`reject_number`), or ``"invalid_number"`` for a share
        ``rate_invalid_number`` of recipients, drawn once per number like an operator's: a
        number found invalid stays invalid on every later attempt."""
        with self._lock:
            forced = self.forced_rejections.get(to)
            if forced is not None:
                self.rejected[forced] += 1
                return forced
            invalid = self._invalid_numbers.get(to)
            if invalid is None:
                invalid = self._invalid_numbers[to] = self.random.random() < self.faults.rate_invalid_number
            if invalid:
                self.rejected["invalid_number"] += 1
                return "invalid_number"
            return None

    def reject_number(self, to: str, code: str | None) -> None:
        """Reject every message to ``to`` with ``code`` from now on (None: stop). API modules
        translate the generic codes (invalid_number, unsubscribed, template_refused,
        rate_limited) into their own."""
        with self._lock:
            if code is None:
                self.forced_rejections.pop(to, None)
            else:
                self.forced_rejections[to] = code

    def note_rejected(self, code: str) -> None:
        """Count a rejection an API module decided itself (e.g. a template it refuses)."""
        with self._lock:
            self.rejected[code] += 1

    # -- records -------------------------------------------------------------------------------

    def accept(self, api: str, out_id: str | None, to: str, text: str, **extra: Any) -> AcceptedMessage:
        """Record one accepted message: its provider id, receipt and (maybe) the recipient's
        reply ``T``. A repeated ``out_id`` is accepted again and counted, unless ``dedupe_ids``."""
        with self._lock:
            earlier = self._by_out_id.get(out_id) if out_id is not None else None
            if earlier and self.faults.dedupe_ids:
                self._deduplicated += 1
                return dataclasses.replace(earlier[0], duplicate_answer=True)
            return self._record(api, out_id, to, text, extra, len(earlier or ()) + 1)

    def _record(
        self, api: str, out_id: str | None, to: str, text: str, extra: dict[str, Any], times: int
    ) -> AcceptedMessage:
        f, now = self.faults, time.time()
        self._accepted_total += 1
        make_id = PROVIDER_ID_FORMATS.get(api, lambda n: f"{api}-{n:010d}")
        delivered = self.random.random() >= f.rate_undelivered
        code = DELIVERED_CODE if delivered else self.random.choice(UNDELIVERED_CODES)
        message = AcceptedMessage(
            make_id(self._accepted_total), api, out_id, to, text, now, times,
            delivered, code, now + f.receipt_delay_s, extra,
        )  # fmt: skip
        self.messages.append(message)
        if out_id is not None:
            self._by_out_id.setdefault(out_id, []).append(message)
            self._duplicates += times == 2
        self._by_provider_id[message.provider_id] = message
        if self.freeze_records and self._accepted_total % FREEZE_EVERY == 0:
            gc.freeze()
        self.receipts.append(
            SimReceipt(message.provider_id, out_id, api, to, delivered, code, message.receipt_at)
        )
        if to not in self._repliers and self.random.random() < f.rate_reply_t:
            self._repliers.add(to)
            self.replies.append(SimReply(to, "T", now + f.reply_delay_s, api, message.provider_id))
        return message

    def add_reply(self, sender: str, text: str, api: str | None = None) -> SimReply:
        """An inbound message, as a test injects it (visible to every API unless ``api``)."""
        with self._lock:
            reply = SimReply(sender, text, time.time(), api)
            self.replies.append(reply)
            return reply

    def lookup(self, out_id: str | None = None, provider_id: str | None = None) -> AcceptedMessage | None:
        """The first record of a message by our out_id or the provider's id; None: never accepted."""
        with self._lock:
            if provider_id is not None:
                return self._by_provider_id.get(provider_id)
            records = self._by_out_id.get(out_id) if out_id is not None else None
            return records[0] if records else None

    def times_accepted(self, out_id: str) -> int:
        with self._lock:
            return len(self._by_out_id.get(out_id, ()))

    # -- cursors -------------------------------------------------------------------------------

    def receipts_since(
        self, cursor: int, api: str | None = None, limit: int = 1000
    ) -> tuple[list[SimReceipt], int]:
        """Visible receipts after ``cursor`` (an index), for ``api`` (None: all), and the next cursor."""
        with self._lock:
            return _since(self.receipts, cursor, limit, lambda r: api is None or r.api == api)

    def replies_since(
        self, cursor: int, api: str | None = None, limit: int = 1000
    ) -> tuple[list[SimReply], int]:
        """Visible replies after ``cursor``: this API's and the injected ones."""
        with self._lock:
            return _since(self.replies, cursor, limit, lambda r: api is None or r.api in (None, api))

    # -- introspection -------------------------------------------------------------------------

    def accepted(self) -> list[dict[str, Any]]:
        """Every acceptance, with ``times_accepted`` = how often its out_id was accepted in all."""
        with self._lock:
            return [
                {
                    "provider_id": m.provider_id,
                    "api": m.api,
                    "out_id": m.out_id,
                    "to": m.to,
                    "text": m.text,
                    "accepted_at": iso(m.accepted_at),
                    "attempt": m.times_accepted,
                    "times_accepted": len(self._by_out_id[m.out_id]) if m.out_id is not None else 1,
                    "status": m.status(),
                    "code": m.code,
                    "extra": m.extra,
                }
                for m in self.messages
            ]

    def stats(self) -> dict[str, Any]:
        """Counts: acceptances, distinct out_ids, duplicates (out_ids accepted more than once),
        deduplicated repeats (``dedupe_ids``), rejections by code, faults by kind, calls by API."""
        with self._lock:
            return {
                "accepted": len(self.messages),
                "distinct_out_ids": len(self._by_out_id),
                "duplicates": self._duplicates,
                "deduplicated": self._deduplicated,
                "rejected": dict(self.rejected),
                "faults": dict(self.faults_injected),
                "calls": dict(self.calls),
                "receipts": len(self.receipts),
                "replies": len(self.replies),
            }


def _since(items: list, cursor: int, limit: int, wanted: Callable[[Any], bool]) -> tuple[list, int]:
    """Items after ``cursor`` that are visible now (``at`` passed) and wanted, up to ``limit``.
    Visibility times grow with the index (one constant delay), so the first not yet visible ends
    the scan and the cursor stops before it."""
    now, found, index = time.time(), [], max(cursor, 0)
    while index < len(items) and len(found) < limit:
        item = items[index]
        if item.at > now:
            break
        if wanted(item):
            found.append(item)
        index += 1
    return found, index
