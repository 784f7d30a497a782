"""Stage 5 of a business day: deliver what rendering queued.

:func:`run_day`, in this order:

1. rows still queued from business days older than ``delivery.max_age_days`` end ``expired``;
2. a run that may not send (a backfill, or a business day older than yesterday:
   :func:`huitouke.deliver.policy.run_verdict`) ends its day's queued rows ``stale`` and stops;
3. outside the playbook's send window nothing is sent (the DAG's ``wait_for_send_window`` defers
   on the triggerer until the window opens, so a run normally arrives inside it);
4. each provider's replies and receipts are read first, so a ``T`` received overnight is an
   opt-out before the first batch; then each channel with a provider is drained by a
   :class:`~huitouke.deliver.sender.Sender` until nothing is left, the window closes, or the
   provider pauses, reading the feeds again between batches (every ``feeds_every_s``) and once
   more at the end;
5. the day's calls are written to the call list.

Only the run's ``campaigns`` (the DAG's param; all when None) are claimed, and never a campaign an
operator paused (``huitouke deliver pause``, :mod:`huitouke.deliver.pauses`): their messages stay
queued, and the log ends with what each pause held back.

With ``job.shard`` (one mapped task per channel and customer shard, :mod:`huitouke.shards`) the
sender claims only the shard's rows (``bucket % count = index``); the once-a-day work (the
providers' replies and receipts, the call list) is shard 0's alone, so it is done once, not once
per shard. Steps 1 and 2 close rows of every shard: under the outbox's writers lock, whichever
shard comes first closes them, the others find none.

It returns a :class:`DeliveryResult`: the task log's table per campaign and channel.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, tzinfo
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import Engine, and_

from huitouke.deliver import calls, feeds, pauses, persist
from huitouke.deliver.policy import (
    DeliveryRules,
    next_window_open,
    oldest_sendable,
    run_verdict,
    window_close,
)
from huitouke.deliver.providers.base import Provider
from huitouke.deliver.sender import MessageFactory, Sender, SendOptions, Tally, utcnow
from huitouke.deliver.states import EXPIRED, STALE
from huitouke.pii import get_logger
from huitouke.shards import Shard
from huitouke.store.rows import lock_writers
from huitouke.store.schema import outbox

__all__ = ["DeliveryJob", "DeliveryResult", "DeliverySummary", "run_day", "summarize_day"]

log = get_logger(__name__)
CHANNELS = ("sms", "email", "call")


@dataclass(frozen=True)
class DeliveryJob:
    """Everything one day's delivery needs besides the store."""

    day: date
    run_type: str | None
    owner: str  # the lease owner: the task instance (run id, task, try)
    providers: dict[str, Provider]  # channel -> provider (sms, email)
    message_of: MessageFactory
    rules: DeliveryRules
    window: tuple[time, time]
    tz: tzinfo
    cap_of: persist.CapOf
    call_list_folder: Path | None = None
    clock: Callable[[], datetime] = utcnow
    feeds_every_s: float = 30.0  # during a drain, replies and receipts are read this often
    channels: tuple[str, ...] = CHANNELS  # the DAG maps one task per channel
    campaigns: tuple[str, ...] | None = None  # the run's campaigns param (None: every campaign)
    shard: Shard = Shard.whole()  # ... and customer shard: the rows this job claims

    @property
    def reads_feeds(self) -> bool:
        """Whether this job does the once-a-day work: replies, receipts, the call list."""
        return self.shard.index == 0


@dataclass
class DeliveryResult:
    """What delivery did for the day: per campaign and channel, messages by outcome and reason."""

    day: date
    tally: Tally = field(default_factory=Tally)
    feeds: dict[str, feeds.FeedCounts] = field(default_factory=dict)
    call_list: str | None = None
    calls_listed: int = 0
    receipts: pd.DataFrame | None = None  # the sent messages of the days drained, by receipt
    note: str | None = None  # why nothing was sent, when nothing could be
    held: pd.DataFrame | None = None  # campaign, channel, messages: queued, held by a pause
    log_level: int = 20
    shard: str = ""  # the customer shard delivered ("shard 2/3"); "" for every customer

    def as_text(self) -> str:
        of = f" ({self.shard})" if self.shard else ""
        lines = [f"Delivery for {self.day}{of}" + (f": {self.note}" if self.note else "")]
        table = self.tally.frame()
        if not table.empty:
            lines.append(table.to_string(index=False))
        for name, got in self.feeds.items():
            lines.append(
                f"{name}: {got.receipts} receipts ({got.delivered} delivered, {got.undelivered} undelivered), "
                f"{got.replies} replies, {got.opt_outs} new opt-outs"
            )
        if self.receipts is not None and not self.receipts.empty:
            lines.append("Receipts of the messages sent for these days so far:")
            wide = self.receipts.pivot_table(
                index=["campaign", "channel"], columns="receipt", values="rows", aggfunc="sum", fill_value=0
            )
            lines.append(wide.to_string())
        if self.tally.opt_outs:
            lines.append(f"opt-outs recorded from providers' refusals: {self.tally.opt_outs}")
        if self.calls_listed:
            lines.append(f"call list: {self.calls_listed} calls in {self.call_list}")
        if self.tally.paused:
            lines.append(f"SENDING PAUSED: {self.tally.paused} (the rest stays queued)")
        for campaign, n in self.held_by_campaign().items():
            lines.append(
                f"campaign {campaign} is paused: {n:,} messages stay queued "
                f"(huitouke deliver resume --campaign {campaign})"
            )
        return "\n".join(lines)

    def held_by_campaign(self) -> dict[str, int]:
        """Queued messages held back by a pause, per paused campaign."""
        if self.held is None or self.held.empty:
            return {}
        return {str(c): int(n) for c, n in self.held.groupby("campaign")["messages"].sum().items()}

    def as_dict(self) -> dict[str, Any]:
        by_outcome: dict[str, int] = {}
        for (_, _, outcome, _), n in self.tally.counts.items():
            by_outcome[outcome] = by_outcome.get(outcome, 0) + n
        return {
            "business_date": self.day.isoformat(),
            "outcomes": by_outcome,
            "opt_outs": self.tally.opt_outs + sum(f.opt_outs for f in self.feeds.values()),
            "calls_listed": self.calls_listed,
            "paused": self.tally.paused,
            "held_by_pause": self.held_by_campaign(),
            "note": self.note,
            "shard": self.shard,
            "table": [[*key, n] for key, n in sorted(self.tally.counts.items())],
        }


def _close_old_and_stale(engine: Engine, job: DeliveryJob, today: date, result: DeliveryResult) -> bool:
    """Steps 1 and 2; True when the run may go on to send."""
    o = outbox.c
    oldest = oldest_sendable(job.day, job.rules)
    verdict = run_verdict(job.run_type, job.day, today)
    with engine.begin() as conn:
        lock_writers(conn, outbox)
        expired = persist.close_queued(
            conn,
            job.channels,
            o.business_date < oldest,
            EXPIRED,
            f"still queued after {job.rules.max_age_days} days",
        )
        stale = (
            persist.close_queued(
                conn, job.channels, and_(o.business_date == job.day), STALE, verdict.reason or ""
            )
            if not verdict.sends
            else pd.DataFrame(columns=["campaign", "channel"])
        )
    for outcome, rows, reason in ((EXPIRED, expired, "too old"), (STALE, stale, verdict.reason)):
        for (campaign, channel), n in rows.groupby(["campaign", "channel"]).size().items():
            result.tally.add(campaign, channel, outcome, reason, int(n))
    if not verdict.sends:
        result.note = f"nothing sent: {verdict.reason}"
    return verdict.sends


def run_day(engine: Engine, job: DeliveryJob) -> DeliveryResult:
    """Deliver the day (see the module docstring)."""
    result = DeliveryResult(job.day, shard=job.shard.tag())
    now = job.clock()
    aware_now = now.replace(tzinfo=UTC)
    today = aware_now.astimezone(job.tz).date()
    if not _close_old_and_stale(engine, job, today, result):
        return result
    start, end = job.window
    opens = next_window_open(aware_now, start, end, job.tz)
    if opens is not None:
        result.note = (
            f"outside the send window ({start:%H:%M}-{end:%H:%M} shop time): nothing sent, rows stay queued"
        )
        return result
    closes_at = window_close(aware_now, end, job.tz).replace(tzinfo=None)
    selection_days = (oldest_sendable(job.day, job.rules), job.day)
    _note_unserved(engine, job, selection_days, result)
    _pull_all(engine, job, result)
    for channel, provider in job.providers.items():
        selection = persist.Selection((channel,), *selection_days, campaigns=job.campaigns, shard=job.shard)
        options = SendOptions(
            job.owner,
            closes_at,
            job.rules,
            job.cap_of,
            job.tz,
            job.clock,
            between_claims=lambda: _pull_all(engine, job, result),
            between_claims_every_s=job.feeds_every_s,
        )
        Sender(engine, provider, selection, options, job.message_of, result.tally).drain()
    _pull_all(engine, job, result)
    _list_calls(engine, job, selection_days, result)
    if job.reads_feeds:  # once a day: shard 0 reads the day's receipts and what the pauses held
        with engine.connect() as conn:
            result.receipts = persist.receipts_by(conn, *selection_days)
            result.held = pauses.queued_of_paused(conn, job.channels, *selection_days)
        for campaign, n in result.held_by_campaign().items():
            log.warning("campaign %s is paused: %d messages stay queued", campaign, n)
    return result


@dataclass(frozen=True)
class DeliverySummary:
    """The day's delivery over all its tasks (channels and shards): the reduce step's log."""

    day: date
    tasks: int  # the delivery results summed (a task that failed gave none)
    tally: Tally
    receipts: pd.DataFrame
    paused: tuple[str, ...] = ()
    log_level: int = 20

    def as_text(self) -> str:
        result = DeliveryResult(self.day, self.tally, receipts=self.receipts)
        lines = result.as_text().splitlines()
        lines[0] = f"Delivery for {self.day}, every channel and shard ({self.tasks} tasks reported)"
        lines += [f"SENDING PAUSED: {why}" for why in self.paused]
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {
            **DeliveryResult(self.day, self.tally).as_dict(),
            "tasks": self.tasks,
            "paused": list(self.paused),
        }


def summarize_day(
    engine: Engine, day: date, rules: DeliveryRules, results: list[dict[str, Any]]
) -> DeliverySummary:
    """The reduce step after the delivery tasks: their tables (``DeliveryResult.as_dict()["table"]``)
    summed, and the receipts of the days drained read once."""
    tally = Tally()
    for got in results:
        for campaign, channel, outcome, reason, n in got.get("table") or ():
            tally.add(campaign, channel, outcome, reason, int(n))
    with engine.connect() as conn:
        receipts = persist.receipts_by(conn, oldest_sendable(day, rules), day)
    paused = tuple(sorted({str(r["paused"]) for r in results if r.get("paused")}))
    return DeliverySummary(day, len(results), tally, receipts, paused)


def _note_unserved(engine: Engine, job: DeliveryJob, days: tuple[date, date], result: DeliveryResult) -> None:
    """A channel without a provider: its queued messages wait (and expire); say so (shard 0: the
    count is every shard's)."""
    unserved = [ch for ch in job.channels if ch != "call" and ch not in job.providers]
    if not unserved or not job.reads_feeds:
        return
    with engine.connect() as conn:
        waiting = persist.count_queued(conn, unserved, *days)
    if waiting:
        result.note = (
            f"no provider configured for {', '.join(unserved)} (include/huitouke.yaml, delivery:): "
            f"{waiting:,} messages stay queued until they expire"
        )
        log.warning("%s", result.note)


def _pull_all(engine: Engine, job: DeliveryJob, result: DeliveryResult) -> None:
    if not job.reads_feeds:
        return
    for provider in job.providers.values():
        try:
            got = feeds.pull_feeds(engine, provider, job.clock())
        except Exception as exc:  # noqa: BLE001 - a feed that fails is read again next time
            log.warning("reading %s's receipts and replies failed: %s", provider.name, type(exc).__name__)
            continue
        seen = result.feeds.setdefault(provider.name, feeds.FeedCounts())
        for name in ("receipts", "delivered", "undelivered", "replies", "opt_outs"):
            setattr(seen, name, getattr(seen, name) + getattr(got, name))


def _list_calls(engine: Engine, job: DeliveryJob, days: tuple[date, date], result: DeliveryResult) -> None:
    if job.call_list_folder is None or "call" not in job.channels or not job.reads_feeds:
        return
    checks = calls.CallChecks(job.cap_of, job.tz, job.clock())
    selection = persist.Selection(("call",), *days, campaigns=job.campaigns)
    path, listed = calls.list_calls(engine, selection, job.call_list_folder, checks)
    result.call_list, result.calls_listed = (str(path) if path else None), listed
