"""One sender per provider: it claims queued rows in batches, sends them through the provider with
bounded concurrency and rate, and records each call's outcomes as soon as the call returns.

What each answer does to a row is decided once, in :meth:`Sender._changes`, from the provider's
:class:`~huitouke.deliver.providers.base.Fate`. A message whose fate is unknown (a timeout after
the request left, a dropped connection, a sender killed mid-call) stays ``sending`` until its lease
runs out; then :meth:`Sender.recover` asks the provider. Only a provider that confirms it never
took the message lets it go again; otherwise it ends ``unknown``. Aliyun's documentation asks
exactly this of its callers (its SMS API is not idempotent); here it holds for every provider.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

import pandas as pd
from sqlalchemy import Engine, and_, func, select

from huitouke.deliver import persist
from huitouke.deliver.policy import DeliveryRules, backoff
from huitouke.deliver.providers.base import Fate, OutgoingMessage, Provider, SendOutcome, StatusAnswer
from huitouke.deliver.states import FAILED, QUEUED, SENT, UNKNOWN
from huitouke.pii import get_logger
from huitouke.store.rows import lock_writers, prefer_index_reads
from huitouke.store.schema import outbox

__all__ = ["RateLimiter", "SendOptions", "Sender", "Tally"]

log = get_logger(__name__)

WAIT_STEP_S = 1.0  # the longest sleep before looking again whether rows fell due

MessageFactory = Callable[[dict[str, Any]], OutgoingMessage]


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class RateLimiter:
    """At most ``rate_per_s`` calls a second across threads (None: no limit). A few lines rather
    than a dependency: the sender needs nothing more than evenly spaced call starts."""

    def __init__(self, rate_per_s: float | None):
        self._gap = 1.0 / rate_per_s if rate_per_s else 0.0
        self._next = time.monotonic()
        self._lock = threading.Lock()

    def acquire(self) -> None:
        if not self._gap:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self._gap
        if start > now:
            time.sleep(start - now)


@dataclass
class Tally:
    """What happened to each message, by (campaign, channel, outcome, reason): the task log's table."""

    counts: Counter = field(default_factory=Counter)
    opt_outs: int = 0
    paused: str | None = None  # why the provider stopped the run (out of balance, credentials)
    refused: dict[str, str] = field(default_factory=dict)  # campaign -> the provider's refusal

    def add(self, campaign: str, channel: str, outcome: str, reason: str | None = None, n: int = 1) -> None:
        self.counts[(campaign, channel, outcome, reason or "")] += n

    def frame(self) -> pd.DataFrame:
        rows = [(*key, n) for key, n in sorted(self.counts.items())]
        return pd.DataFrame(rows, columns=["campaign", "channel", "outcome", "reason", "messages"])


@dataclass(frozen=True)
class SendOptions:
    """Who is sending (the lease owner: the task instance), until when claims may be made, and the
    rules of retries, leases and caps."""

    owner: str
    closes_at: datetime  # naive UTC: no claim at or after it (the send window's end)
    rules: DeliveryRules
    cap_of: persist.CapOf
    tz: tzinfo
    clock: Callable[[], datetime] = utcnow
    # Called before a claim at most every ``between_claims_every_s``: the day's run reads the
    # providers' replies there, so a stop received mid-drain holds from the next batch on.
    between_claims: Callable[[], None] | None = None
    between_claims_every_s: float = 30.0


class _Flight:
    """The provider calls submitted to the pool and not recorded yet, with their batches."""

    def __init__(self, pool: ThreadPoolExecutor):
        self.pool = pool
        self.pending: dict[Future, list[dict[str, Any]]] = {}
        self.rows = 0

    def add(self, call: Callable[..., Any], batch: list[dict[str, Any]], *args: Any) -> None:
        self.pending[self.pool.submit(call, batch, *args)] = batch
        self.rows += len(batch)

    def wait_some(self) -> list[tuple[list[dict[str, Any]], Sequence[SendOutcome] | None]]:
        """The calls that returned (at least one, waiting for it), with their outcomes; None for
        a call cancelled before it started."""
        done, _ = wait(self.pending, return_when=FIRST_COMPLETED)
        returned = []
        for future in done:
            batch = self.pending.pop(future)
            self.rows -= len(batch)
            returned.append((batch, None if future.cancelled() else future.result()))
        return returned

    def cancel_waiting(self) -> None:
        for future in self.pending:
            future.cancel()


@dataclass
class _Returned:
    """The outcomes of returned calls not written yet: row changes, opt-outs, refused campaigns."""

    changes: list[dict[str, Any]] = field(default_factory=list)
    opt_outs: list[dict[str, Any]] = field(default_factory=list)
    refused: list[tuple[str, str, str]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.changes or self.opt_outs or self.refused)


class Sender:
    """Drains a :class:`persist.Selection` through one provider (module docstring)."""

    def __init__(
        self,
        engine: Engine,
        provider: Provider,
        selection: persist.Selection,
        options: SendOptions,
        message_of: MessageFactory,
        tally: Tally | None = None,
    ):
        self.engine, self.provider, self.selection, self.options = engine, provider, selection, options
        self.message_of = message_of
        self.tally = tally or Tally()
        self._limiter = RateLimiter(provider.rate_per_s)
        self._last_between = time.monotonic()
        self.paused: str | None = None  # this provider's pause (the tally keeps the first for the log)
        self._after = 0  # a shard's next claim starts at this bucket (persist.claim)

    # ------------------------------------------------------------------------------ the drain

    def drain(self) -> Tally:
        """Recover expired leases, then claim and send until nothing is claimable, the window
        closes or the provider pauses; finally settle this sender's unknowns. Up to
        ``rules.claims_ahead`` claims are made while earlier claims' calls are still out, so that
        claiming overlaps sending. The outcomes of the calls that returned since the last claim
        are written in the next claim's transaction (one commit, not two: a commit is the dearest
        part of a small transaction on SQLite)."""
        self.recover()
        workers = max(self.provider.max_concurrency, 1)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="huitouke-send") as pool:
            flight, returned = _Flight(pool), _Returned()
            while self.paused is None and self.options.clock() < self.options.closes_at:
                self._between_claims()
                claimed = self._claim(ahead=flight.rows, returned=returned)
                returned = _Returned()
                if claimed.rows:
                    self._submit(flight, claimed.rows, ahead=flight.rows)
                    self._record_until(flight, self._claim_size() * self.options.rules.claims_ahead, returned)
                elif flight.rows:
                    self._record_until(flight, 0, returned)  # nothing claimable now: see what comes back
                elif not claimed.suppressed and not self._wait_for_more():
                    break
            self._record_until(flight, 0, returned)
            self._write(returned)
        self._settle()
        return self.tally

    def _between_claims(self) -> None:
        hook = self.options.between_claims
        if hook and time.monotonic() - self._last_between >= self.options.between_claims_every_s:
            hook()
            self._last_between = time.monotonic()

    def _claim_rounds(self) -> int:
        """Rounds of ``batch_size * max_concurrency`` one claim takes: ``rules.claim_rows`` worth
        (at least one), and no more calls than the provider's rate allows in half a lease."""
        workers = max(self.provider.max_concurrency, 1)
        rounds = max(1, self.options.rules.claim_rows // (self.provider.batch_size * workers))
        if self.provider.rate_per_s:
            calls = self.provider.rate_per_s * self.options.rules.lease_seconds / 2
            rounds = min(rounds, max(1, int(calls // workers)))
        return rounds

    def _round_rows(self) -> int:
        return self.provider.batch_size * max(self.provider.max_concurrency, 1)

    def _claim_size(self) -> int:
        return self._round_rows() * self._claim_rounds()

    def _claim(self, ahead: int = 0, returned: _Returned | None = None) -> persist.Claim:
        """One claim of up to :meth:`_claim_rounds` rounds, leased for ``rules.lease_seconds`` a
        round taken and a round of the ``ahead`` rows still out before them (:meth:`_submit`
        starts no batch with less than half a round's lease left). The ``returned`` calls'
        outcomes are written first, in the same transaction (the claim's checks see them)."""
        round_rows = self._round_rows()
        with self.engine.begin() as conn:
            lock_writers(conn, outbox)
            # PostgreSQL without fresh statistics (a day's rows just rendered) scanned the outbox
            # for the claim's UPDATE by ids; priced as the cached reads they are, it probes its key.
            prefer_index_reads(conn)
            if returned:
                self._write_in(conn, returned)
            claimed = persist.claim(
                conn,
                replace(self.selection, from_bucket=self._after),
                self._claim_size(),
                persist.Lease(
                    self.options.owner,
                    timedelta(seconds=self.options.rules.lease_seconds),
                    round_rows,
                    ahead_rows=ahead,
                ),
                self.options.clock(),
                self.options.cap_of,
                self.options.tz,
                locked=True,
            )
        self._after = claimed.next_bucket
        for campaign, channel, reason in claimed.suppressed:
            self.tally.add(campaign, channel, "suppressed", reason)
        return claimed

    def _wait_for_more(self) -> bool:
        """Sleep until the earliest retry or lease falls due, if that is before the window closes
        and within ``rules.max_wait_seconds`` (a worker slot is held meanwhile: rows due later go
        out with the next run); False when there is nothing left to wait for."""
        due = self._next_due()
        if due is None or due >= self.options.closes_at:
            return False
        if (due - self.options.clock()).total_seconds() > self.options.rules.max_wait_seconds:
            return False
        # In steps: another sender's claim (leased for all its rounds) may be done long before.
        time.sleep(min(max((due - self.options.clock()).total_seconds(), 0.0) + 0.01, WAIT_STEP_S))
        self.recover()
        return True

    def _next_due(self) -> datetime | None:
        o = outbox.c
        mine = and_(*self.selection.mine())
        with self.engine.connect() as conn:
            retry = conn.scalar(select(func.min(o.next_attempt_at)).where(mine).where(o.status == QUEUED))
            lease = conn.scalar(select(func.min(o.lease_until)).where(mine).where(o.status == "sending"))
        dues = [d for d in (retry, lease) if d is not None]
        return min(dues) if dues else None

    def _settle(self) -> None:
        """This sender's messages of unknown fate: wait out their settle time, then ask."""
        deadline = self.options.clock() + timedelta(seconds=self.options.rules.settle_seconds + 1)
        while self.options.clock() < deadline:
            due = self._next_lease()
            if due is None:
                return
            time.sleep(max(min((due - self.options.clock()).total_seconds(), 1.0), 0.0) + 0.01)
            self.recover()

    def _next_lease(self) -> datetime | None:
        o = outbox.c
        with self.engine.connect() as conn:
            return conn.scalar(
                select(func.min(o.lease_until))
                .where(o.status == "sending")
                .where(o.claimed_by == self.options.owner)
            )

    # ------------------------------------------------------------------------------ sending

    def _submit(self, flight: _Flight, records: list[dict[str, Any]], ahead: int) -> None:
        """The claimed rows in batches onto the pool (``max_concurrency`` threads), behind the
        ``ahead`` rows already out. A batch whose call would start with less than half a
        ``lease_seconds`` of the claim's lease left is not sent: it goes back queued."""
        size = self.provider.batch_size
        rounds = -(-(len(records) + ahead) // self._round_rows())  # as the claim leased them
        lease = timedelta(seconds=self.options.rules.lease_seconds)
        start_by = records[0]["claimed_at"] + lease * (rounds - 0.5)
        for i in range(0, len(records), size):
            batch = records[i : i + size]
            flight.add(self._call_in_lease, batch, start_by)

    def _record_until(self, flight: _Flight, rows_left: int, returned: _Returned) -> None:
        """Take the outcomes of calls as they return into ``returned`` until at most ``rows_left``
        rows are still out. Once the provider paused, the calls not started yet are not made:
        their rows go back queued."""
        while flight.rows > rows_left:
            if self.paused is not None:
                flight.cancel_waiting()
            self._record(flight.wait_some(), returned)

    def _call_in_lease(self, batch: list[dict[str, Any]], start_by: datetime) -> list[SendOutcome] | None:
        """:meth:`_call`, if it starts by ``start_by``; None (not sent) after."""
        if self.options.clock() > start_by:
            return None
        return self._call(batch)

    def _call(self, batch: list[dict[str, Any]]) -> list[SendOutcome]:
        """One provider call. A provider that raises (a bug, not an answer) leaves every message's
        fate unknown: it may have left."""
        self._limiter.acquire()
        messages = [self.message_of(row) for row in batch]
        try:
            return self.provider.send(messages)
        except Exception as exc:  # noqa: BLE001 - whatever it was, the messages may have left
            log.error("provider %s raised %s during a send call", self.provider.name, type(exc).__name__)
            reason = f"provider error: {type(exc).__name__}"
            return [SendOutcome(m.message_id, Fate.UNKNOWN, reason=reason) for m in messages]

    def _record(
        self, calls: list[tuple[list[dict[str, Any]], Sequence[SendOutcome] | None]], returned: _Returned
    ) -> None:
        """What the outcomes of the calls that have returned do to their rows, added to
        ``returned`` (written by the next claim's transaction, or :meth:`_write`). A batch never
        sent (None: its lease ran short, or the provider paused before its call) goes back
        queued, its attempt uncounted."""
        by_id = {o.message_id: o for _, outcomes in calls for o in outcomes or ()}
        now = self.options.clock()
        unsent = [_unclaimed(row) for batch, outcomes in calls if outcomes is None for row in batch]
        if unsent:
            log.info(
                "%d claimed messages not sent (their lease ran short, or the provider paused): queued again",
                len(unsent),
            )
        returned.changes += unsent
        for row in (row for batch, outcomes in calls if outcomes is not None for row in batch):
            outcome = by_id.get(row["message_id"]) or SendOutcome(
                row["message_id"], Fate.UNKNOWN, reason="no answer for this message in the provider's reply"
            )
            returned.changes.append(self._changes(row, outcome, now))
            if outcome.opt_out:
                returned.opt_outs.append(self._opt_out(row, now))
            if outcome.fate is Fate.CAMPAIGN_FAILED:
                returned.refused.append((row["campaign"], row["channel"], outcome.reason or "refused"))

    def _write(self, returned: _Returned) -> None:
        """``returned`` into the outbox, in a transaction of its own (no claim follows)."""
        if returned:
            with self.engine.begin() as conn:
                self._write_in(conn, returned)

    def _write_in(self, conn: Any, returned: _Returned) -> None:
        moved = persist.move(conn, self.options.owner, returned.changes)
        if moved < len(returned.changes):
            log.warning(
                "%d of %d outcomes from %s found their row claimed by someone else (a lease ran out "
                "during the call: raise delivery.lease_seconds above the provider's timeouts)",
                len(returned.changes) - moved,
                len(returned.changes),
                self.provider.name,
            )
        self.tally.opt_outs += persist.record_opt_outs(conn, returned.opt_outs, self.options.clock())
        for campaign, channel, reason in returned.refused:
            self._refuse_campaign(conn, campaign, channel, reason)

    def _changes(self, row: dict[str, Any], outcome: SendOutcome, now: datetime) -> dict[str, Any]:
        """What one outcome does to its row: the one place the fates are applied."""
        fate, reason = outcome.fate, outcome.reason
        done = {"message_id": row["message_id"], "claimed_by": None, "lease_until": None}
        self.tally.add(
            row["campaign"], row["channel"], _TALLIED[fate], reason if fate is not Fate.ACCEPTED else None
        )
        if fate is Fate.ACCEPTED:
            return done | self._sent(row, outcome.provider_message_id, now, outcome.billed_segments)
        if fate is Fate.RETRY:
            return done | self._retry(row, reason, now, outcome.retry_after_s)
        if fate is Fate.PAUSE:
            self.paused = self.paused or reason or "the provider paused sending"
            self.tally.paused = self.tally.paused or f"{self.provider.name}: {self.paused}"
            return done | {"status": QUEUED, "attempts": row["attempts"] - 1, "last_error": reason}
        if fate in (Fate.FAILED, Fate.CAMPAIGN_FAILED):
            return done | {"status": FAILED, "last_error": reason, "provider": self.provider.name}
        # UNKNOWN: keep the row claimed until the settle time has passed, then ask (recover). The
        # settle time counts from now, not from the claim: a request still being processed when
        # the answer was lost (a proxy's 504, a read timeout) must have finished before a
        # "never took it" can be believed. Providers that search by time start from claimed_at.
        settle = timedelta(seconds=self.options.rules.settle_seconds)
        return {
            "message_id": row["message_id"],
            "claimed_at": now,
            "lease_until": now + settle,
            "last_error": reason,
        }

    def _sent(
        self, row: dict[str, Any], provider_id: str | None, now: datetime, billed: int | None
    ) -> dict[str, Any]:
        return {
            "status": SENT,
            "sent_at": now,
            "provider": self.provider.name,
            "provider_message_id": provider_id,
            "billed_segments": billed if billed is not None else row.get("sms_segments"),
            "last_error": None,
            "next_attempt_at": None,
        }

    def _retry(
        self, row: dict[str, Any], reason: str | None, now: datetime, after: float | None
    ) -> dict[str, Any]:
        rules = self.options.rules
        if row["attempts"] >= rules.max_attempts:
            return {"status": FAILED, "last_error": f"gave up after {row['attempts']} attempts: {reason}"}
        return {
            "status": QUEUED,
            "last_error": reason,
            "next_attempt_at": now + backoff(row["attempts"], rules, after),
        }

    def _opt_out(self, row: dict[str, Any], now: datetime) -> dict[str, Any]:
        return {
            "customer_id": row["customer_id"],
            "channel": row["channel"],
            "source": "provider",
            "received_at": now,
            "message_id": row["message_id"],
        }

    def _refuse_campaign(self, conn: Any, campaign: str, channel: str, reason: str) -> None:
        """The provider refuses the campaign's template or signature: its other queued messages on
        the channel end failed with that reason, and one error says so."""
        closed = persist.close_queued(
            conn,
            [channel],
            and_(
                outbox.c.campaign == campaign,
                outbox.c.business_date.between(self.selection.oldest, self.selection.day),
            ),
            FAILED,
            f"campaign refused by {self.provider.name}: {reason}",
        )
        if campaign not in self.tally.refused:
            log.error("%s refused campaign %s on %s: %s", self.provider.name, campaign, channel, reason)
            self.tally.refused[campaign] = reason
        if not closed.empty:
            self.tally.add(campaign, channel, "failed", f"campaign refused: {reason}", len(closed))

    # ------------------------------------------------------------------------------ recovery

    def recover(self) -> int:
        """Rows ``sending`` past their lease (this sender's unknowns, or a dead sender's claims):
        the provider's status query decides; nothing is sent again unless it says it never took it."""
        now = self.options.clock()
        with self.engine.connect() as conn:
            stuck = persist.expired_leases(conn, self.selection.channels, now, self.selection.shard)
        if stuck.empty:
            return 0
        changes = [self._resolved(row, now) for row in persist.records(stuck)]
        with self.engine.begin() as conn:
            return persist.move(conn, None, changes)

    def _resolved(self, row: dict[str, Any], now: datetime) -> dict[str, Any]:
        answer = self._status(row)
        done = {
            "message_id": row["message_id"],
            "claimed_by": None,
            "lease_until": None,
            "expect_lease": row["lease_until"],
        }
        if answer is StatusAnswer.ACCEPTED:
            self.tally.add(row["campaign"], row["channel"], "sent")
            return done | self._sent(row, row.get("provider_message_id"), now, None)
        if answer is StatusAnswer.NOT_ACCEPTED:
            self.tally.add(
                row["campaign"], row["channel"], "retried", "the provider confirmed it never took it"
            )
            return done | self._retry(row, "not accepted (confirmed by the provider's status)", now, 0.0)
        reason = f"fate unknown ({row.get('last_error') or 'the sender stopped mid-call'}); the provider cannot confirm"
        self.tally.add(row["campaign"], row["channel"], UNKNOWN, reason)
        return done | {"status": UNKNOWN, "last_error": reason, "provider": self.provider.name}

    def _status(self, row: dict[str, Any]) -> StatusAnswer:
        try:
            return self.provider.status(self.message_of(row), row.get("provider_message_id"))
        except Exception as exc:  # noqa: BLE001 - a failed status query answers nothing
            log.warning("status query at %s failed: %s", self.provider.name, type(exc).__name__)
            return StatusAnswer.UNKNOWN


def _unclaimed(row: dict[str, Any]) -> dict[str, Any]:
    """A claimed row that was never sent, back to queued as it was."""
    return {
        "message_id": row["message_id"],
        "claimed_by": None,
        "lease_until": None,
        "status": QUEUED,
        "attempts": row["attempts"] - 1,
    }


# How the task log's table counts each fate.
_TALLIED = {
    Fate.ACCEPTED: "sent",
    Fate.RETRY: "retried",
    Fate.PAUSE: "paused",
    Fate.FAILED: "failed",
    Fate.CAMPAIGN_FAILED: "failed",
    Fate.UNKNOWN: "unsettled",
}
