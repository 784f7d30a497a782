"""Stage 2 of a business day: fold the day's order changes into the customer state, classify
every customer, record the segment changes and the day's KPIs.

:func:`run_day` is one transaction, which is the only writer of ``orders`` until it commits (intake
waits). Re-running the latest computed day recomputes it identically; an older day is left as
computed (later days were built on it) and its stored KPIs are returned. The first run, a change of
the playbook's category groups and a backlog of more than ``persist.REBUILD_ABOVE`` unfolded orders
rebuild the state from every order; otherwise the unfolded orders are folded in
(:mod:`huitouke.segments.fold`: new paid orders added to their customers' rows, customers with a
refund or cancellation recomputed from their orders). The whole state and the open history come
from the previous run's local snapshot when it provably matches the store
(:mod:`huitouke.segments.snapshot`), else from the tables.

The run in phases: the lock and the latest run; the reads (:func:`_pending_orders`,
:func:`_open_rows`, then the path's own), all before the transaction writes anything; the new
state (:func:`_rebuilt_state` or :func:`_folded_state`, each with its own reads, gone when it
returns); the classification, history diff and KPIs (:func:`_record_day`). Every write is handed
to :class:`_DayWrites` as soon as it is known and runs on a background thread while the run
computes; Arrow allocates through :class:`~huitouke.segments.allocator.RunAllocator`; the snapshot
for the next run is published after the commit (:func:`huitouke.segments.snapshot.after_commit`).

**Customer shards** (``scale.shards`` > 1, :mod:`huitouke.shards`): :func:`run_shard` recomputes
one shard's touched customers from their orders and stamps those orders, one transaction per
shard; :func:`reduce_day` then classifies every customer (the R/F/M quintiles are the whole
state's), diffs the history and records the KPIs. One shard is the single transaction above;
:func:`run_day` runs either. The stored result is the same for any shard count (docs/segments.md,
"Shards"). :func:`segments_of_shard` gives one shard's segments as ``classify`` of the whole state
does.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Connection, Engine

from huitouke.calendar.daily import DayRefused
from huitouke.pii import get_logger
from huitouke.segments import persist, snapshot
from huitouke.segments.allocator import RunAllocator
from huitouke.segments.classify import QuintileBounds, classify
from huitouke.segments.fold import FoldedRows, FoldPlan, fold_rows, fold_state, plan_fold
from huitouke.segments.history import SegmentChanges, diff_segments, same_customers
from huitouke.segments.kpis import compute_kpis, format_kpis
from huitouke.segments.settings import SegmentSettings
from huitouke.segments.state import build_state_and_spend
from huitouke.shards import Shard
from huitouke.store.background import BackgroundWrites

__all__ = ["SegmentsDay", "ShardDay", "reduce_day", "run_day", "run_shard", "segments_of_shard"]

log = get_logger(__name__)

_HEADLINE = ("customers", "paid_orders", "churn_rate", "repeat_rate", "lifecycle", "member_tiers")


@dataclass(frozen=True)
class SegmentsDay:
    """What :func:`run_day` did for a day: recomputed it, or kept it as stored (an older day)."""

    day: date
    recomputed: bool
    kpis: dict[str, Any] | None
    how: str = ""
    customers_recomputed: int = 0
    history_rows_closed: int = 0
    history_rows_opened: int = 0

    def as_text(self) -> str:
        if not self.recomputed:
            return f"Segments for {self.day}: kept as computed (a later day builds on them)"
        return (
            f"Segments for {self.day}: {self.how}; {self.history_rows_closed} history rows closed, "
            f"{self.history_rows_opened} opened\n{format_kpis(self.kpis)}"
        )

    def as_dict(self) -> dict[str, Any]:
        """The KPIs worth an XCom: sizes and rates, not the tables."""
        out: dict[str, Any] = {"business_date": self.day.isoformat(), "recomputed": self.recomputed}
        if self.recomputed:
            out["customers_recomputed"] = self.customers_recomputed
            out["history_rows_closed"] = self.history_rows_closed
            out["history_rows_opened"] = self.history_rows_opened
        kpis = self.kpis or {}
        out.update({key: kpis[key] for key in _HEADLINE if key in kpis})
        return out


def run_day(engine: Engine, day: date, rules: SegmentSettings, shards: int = 1) -> SegmentsDay:
    """Fold, classify and record ``day`` (see the module docstring): in one transaction, or, with
    ``shards`` > 1, every customer shard in turn (:func:`run_shard`) then :func:`reduce_day`, the
    same result (what the CLI and backfills run; the DAG runs the shards as mapped tasks)."""
    if shards == 1:
        return _run_whole(engine, day, rules)
    for shard in Shard.all_of(shards):
        run_shard(engine, day, rules, shard)
    return reduce_day(engine, day, rules, shards)


def _run_whole(engine: Engine, day: date, rules: SegmentSettings) -> SegmentsDay:
    """The whole day in one transaction (``scale.shards: 1``)."""
    run = _Run(day, rules, rules.state_fingerprint(), datetime.now(UTC).replace(tzinfo=None))
    with RunAllocator() as allocator, snapshot.after_commit(engine.url) as next_snapshot:
        with engine.begin() as conn:
            locked = persist.lock_store(conn)
            latest = persist.latest_run(conn)
            if latest is not None and day < latest.business_date:
                return _kept(conn, day, latest.business_date)
            saved = _snapshot_for(conn, engine, latest)
            rerun = latest is not None and latest.business_date == day
            # Everything is read before the transaction writes anything: SQLite then serves it
            # from a second, read-only connection (committed=True, see store.rows.read_arrow).
            pending = _pending_orders(conn, run, latest)
            if pending is None:
                allocator.for_rebuild()
            open_rows = _open_rows(conn, run, saved, rerun)
            with _DayWrites(conn, run, rerun=rerun, locked=locked) as writes:
                if pending is None:
                    new = _rebuilt_state(conn, run, writes)
                else:
                    new = _folded_state(conn, run, pending, saved, writes)
                return _record_day(run, new, open_rows, writes, next_snapshot)


def _snapshot_for(
    conn: Connection, engine: Engine, latest: persist.LatestRun | None
) -> snapshot.Snapshot | None:
    """The local snapshot of the latest run, unless a customer shard changed the state since the
    last single-transaction run (then the snapshot may be older than the table, even on a machine
    whose copy the shard could not delete)."""
    saved = snapshot.load_for_run(engine.url, latest)
    if saved is not None and persist.any_shard_run(conn):
        log.info("Customer shards ran since the last whole run: the state is read from the store")
        return None
    return saved


def _kept(conn: Connection, day: date, latest: date) -> SegmentsDay:
    """A day before the latest computed one: its stored segments stay as they are (later days were
    computed on top of them); a day never computed is refused, never "kept"."""
    kpis = persist.stored_kpis(conn, day)
    if kpis is None:
        raise DayRefused(
            f"segments for {day} were never computed, and {latest} was computed without them: "
            "the customer state does not go back"
        )
    log.warning(
        "Segments for %s were computed before %s, which builds on them: kept as computed", day, latest
    )
    return SegmentsDay(day, recomputed=False, kpis=kpis)


@dataclass(frozen=True)
class _Run:
    """The day being computed, by which rules, and when."""

    day: date
    rules: SegmentSettings
    fingerprint: str
    now: datetime


@dataclass(frozen=True)
class _NewState:
    """The day's customer state, and how it came about."""

    state: pd.DataFrame
    how: str
    recomputed: int  # customers whose row was computed again
    open_row_of: np.ndarray | None = None  # the fold's row mapping, for the history diff
    previous_ids: pd.Series | None = None  # the customers of the state before, in its order


def _pending_orders(conn: Connection, run: _Run, latest: persist.LatestRun | None) -> pd.DataFrame | None:
    """The orders to fold in; None (and why, in the log) when the state is rebuilt from all orders
    instead: the first run, a changed state definition, a backlog over ``persist.REBUILD_ABOVE``."""
    if latest is None:
        log.info("First segments run: building the customer state from all orders")
        return None
    if latest.fingerprint != run.fingerprint:
        log.warning(
            "The customer state's definition changed (the playbook's category groups, or "
            "this version's store format): rebuilding it from all orders"
        )
        return None
    pending = persist.read_pending(conn, persist.REBUILD_ABOVE, committed=True)
    if pending is None:
        log.info(
            "More than %s orders to fold in: rebuilding the customer state from all orders",
            f"{persist.REBUILD_ABOVE:,}",
        )
    return pending


def _open_rows(conn: Connection, run: _Run, saved: snapshot.Snapshot | None, rerun: bool) -> pd.DataFrame:
    """The open history rows the day's segments are compared with: as a re-run's rewind will leave
    them (it only comes once everything is read), from the snapshot when there is one."""
    if saved is None:
        return persist.read_open_history(conn, committed=True, rewinding=run.day if rerun else None)
    return saved.rewound(run.day) if rerun else saved.open_rows


def _rebuilt_state(conn: Connection, run: _Run, writes: _DayWrites) -> _NewState:
    """The state built from every order (the orders and lines read go when it returns)."""
    orders, lines = persist.read_orders(conn, committed=True)
    writes.start(orders)
    state, spend = build_state_and_spend(orders, lines, settings=run.rules, until=run.day)
    writes.replace_all(state, spend)
    return _NewState(state, "the state rebuilt from all orders", len(state))


def _folded_state(
    conn: Connection, run: _Run, pending: pd.DataFrame, saved: snapshot.Snapshot | None, writes: _DayWrites
) -> _NewState:
    """The pending orders folded into the state: new paid orders added, refunds and cancellations
    subtracted, the few customers whose first or last order changed recomputed (the rows read
    for them go when it returns)."""
    before = saved.state if saved is not None else persist.read_state(conn, committed=True)
    plan = plan_fold(before, pending, run.day)
    history, history_lines = persist.read_orders(conn, plan.recomputed, committed=True)
    spend = persist.read_spend(conn, plan.added, committed=True)
    added_lines = persist.read_lines(conn, plan.changed_orders, committed=True)
    writes.start(pending)
    folded = fold_rows(
        before, spend, plan, added_lines, history, history_lines, settings=run.rules, until=run.day
    )
    writes.folded(folded, plan)
    state, open_row_of = fold_state(before, folded, plan)
    return _NewState(state, _how_folded(plan), len(plan.touched), open_row_of, before["customer_id"])


def _how_folded(plan: FoldPlan) -> str:
    return (
        f"{len(plan.added):,} customers updated by their changed orders "
        f"({len(plan.additions):,} paid orders added, {len(plan.removals):,} subtracted: refunded or cancelled), "
        f"{len(plan.recomputed):,} recomputed from all their orders "
        "(the first or last order refunded, a late order)"
    )


def _record_day(
    run: _Run,
    new: _NewState,
    open_rows: pd.DataFrame,
    writes: _DayWrites,
    next_snapshot: snapshot.NextSnapshot,
) -> SegmentsDay:
    """Classify the new state, diff it against the open history, count the KPIs; hand over their
    writes and the snapshot the next run starts from."""
    segments = classify(new.state, run.day, run.rules)
    open_row_of = new.open_row_of
    if open_row_of is not None and not same_customers(open_rows["customer_id"], new.previous_ids):
        open_row_of = None  # the open rows are not the previous state's customers in order
    changes = diff_segments(open_rows, segments, run.day, open_row_of)
    writes.history(changes)
    kpis = compute_kpis(segments, run.day, run.rules, changes.transitions)
    writes.day(kpis, changes)
    if next_snapshot.wanted:
        opened, closed = persist.open_rows_after(open_rows, segments, changes, open_row_of)
        this_run = persist.LatestRun(run.day, run.fingerprint, run.now, int(kpis["customers"]))
        next_snapshot.write(this_run, new.state, opened, closed)
    return SegmentsDay(
        run.day,
        recomputed=True,
        kpis=kpis,
        how=new.how,
        customers_recomputed=new.recomputed,
        history_rows_closed=len(changes.close),
        history_rows_opened=len(changes.open),
    )


class _DayWrites:
    """The day's writes, in the order they are handed over, on a background thread while the run
    computes (:class:`~huitouke.store.background.BackgroundWrites`); leaving the ``with`` block
    waits for them. The first is :meth:`start`, once everything is read."""

    def __init__(self, conn: Connection, run: _Run, *, rerun: bool, locked: bool) -> None:
        self._conn, self._run, self._rerun, self._locked = conn, run, rerun, locked
        self._writes = BackgroundWrites()

    def __enter__(self) -> _DayWrites:
        self._writes.__enter__()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self._writes.__exit__(exc_type, exc, tb)

    def start(self, read: pd.DataFrame) -> None:
        """Everything is read: a re-run day's history rewound, then the orders ``read`` stamped
        folded (nothing reads them again)."""
        conn, day, now = self._conn, self._run.day, self._run.now
        if self._rerun:
            self._writes.submit(persist.rewind_history, conn, day)
        if self._locked:
            self._writes.submit(persist.mark_folded, conn, day, now)
        else:  # no lock on this database: stamp exactly the orders read
            due = read["business_date"].isna() | (read["business_date"] <= pd.Timestamp(day))
            self._writes.submit(persist.mark_applied, conn, read.loc[due, "order_id"].tolist(), now)

    def replace_all(self, state: pd.DataFrame, spend: pd.DataFrame) -> None:
        """The rebuilt state and spend rows, replacing every stored row."""
        self._writes.submit(persist.replace_state, self._conn, state, None)
        self._writes.submit(persist.replace_spend, self._conn, spend, None)

    def folded(self, folded: FoldedRows, plan: FoldPlan) -> None:
        """The fold's changed state and spend rows, before they are merged into the whole state."""
        self._writes.submit(persist.write_folded, self._conn, folded, plan)

    def history(self, changes: SegmentChanges) -> None:
        self._writes.submit(persist.write_history, self._conn, changes)

    def day(self, kpis: dict[str, Any], changes: SegmentChanges) -> None:
        """The day's KPIs and transitions, and the run's identity (fingerprint, time)."""
        run = self._run
        self._writes.submit(persist.write_day, self._conn, run.day, kpis, changes, run.fingerprint, run.now)
        self._writes.submit(persist.clear_shard_runs, self._conn)


# --------------------------------------------------------------------------------------------------
# Customer shards (``scale.shards`` > 1; docs/segments.md, "Shards")
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShardDay:
    """What :func:`run_shard` did for one shard of the customers."""

    day: date
    shard: Shard
    how: str
    customers_recomputed: int = 0
    orders_folded: int = 0
    whole: SegmentsDay | None = None  # the whole day's result, when the shard is every customer

    def as_text(self) -> str:
        if self.whole is not None:
            return self.whole.as_text()
        return f"Segments for {self.day}, {self.shard.label()}: {self.how}"

    def as_dict(self) -> dict[str, Any]:
        if self.whole is not None:
            return {**self.whole.as_dict(), "shard": self.shard.label()}
        return {
            "business_date": self.day.isoformat(),
            "shard": self.shard.label(),
            "how": self.how,
            "customers_recomputed": self.customers_recomputed,
            "orders_folded": self.orders_folded,
        }


def run_shard(engine: Engine, day: date, rules: SegmentSettings, shard: Shard) -> ShardDay:
    """The customer state of ``shard``'s customers on ``day``, in one transaction under the store
    lock: the shard's unfolded orders stamped, its touched customers (all of its customers on a
    rebuild: the first run, a changed state definition) recomputed from all their orders. Running
    it again changes nothing (its orders are stamped). The whole (one shard) is :func:`run_day`'s
    single transaction, classification, history and KPIs included."""
    if shard.is_whole:
        return ShardDay(day, shard, "the whole day in one run", whole=_run_whole(engine, day, rules))
    snapshot.forget(engine.url)  # the state changes before the reduce writes a new run
    run = _Run(day, rules, rules.state_fingerprint(), datetime.now(UTC).replace(tzinfo=None))
    with engine.begin() as conn:
        persist.lock_store(conn)
        latest = persist.latest_run(conn)
        if latest is not None and day < latest.business_date:
            _kept(conn, day, latest.business_date)
            return ShardDay(day, shard, "kept as computed (a later day builds on it)")
        rebuild = latest is None or latest.fingerprint != run.fingerprint
        return _fold_shard(conn, run, shard, rebuild)


def _fold_shard(conn: Connection, run: _Run, shard: Shard, rebuild: bool) -> ShardDay:
    """Read the shard's due unfolded orders and the orders of the customers to recompute, then
    replace those customers' state and spend rows and stamp the orders read."""
    pending = persist.read_pending(conn, committed=True)
    due = pending["business_date"].isna() | (pending["business_date"] <= pd.Timestamp(run.day))
    due_orders = pending.loc[due & shard.mask(pending["customer_id"])]
    if rebuild:
        orders, lines = persist.read_orders(conn, committed=True)
        orders = orders.loc[shard.mask(orders["customer_id"])].reset_index(drop=True)
        lines = lines.loc[lines["order_id"].isin(orders["order_id"])].reset_index(drop=True)
        stored = persist.stored_customers(conn, committed=True).to_pandas()
        customers = sorted(set(stored[shard.mask(stored)]) | set(orders["customer_id"]))
        how = "rebuilt from all its customers' orders"
    else:
        customers = sorted(set(due_orders["customer_id"]))
        orders, lines = persist.read_orders(conn, customers, committed=True)
        how = "its customers with changed orders recomputed from all their orders"
    state, spend = build_state_and_spend(orders, lines, settings=run.rules, until=run.day)
    persist.replace_state(conn, state, customers)
    persist.replace_spend(conn, spend, customers)
    persist.mark_applied(conn, due_orders["order_id"].tolist(), run.now)
    persist.record_shard_run(conn, run.day, shard, run.fingerprint, len(customers), len(due_orders), run.now)
    log.info("Segments for %s, %s: %s (%d customers)", run.day, shard.label(), how, len(customers))
    return ShardDay(run.day, shard, how, len(customers), len(due_orders))


def reduce_day(engine: Engine, day: date, rules: SegmentSettings, shards: int = 1) -> SegmentsDay:
    """After :func:`run_shard` of every one of ``shards`` shards: what needs all customers at once,
    in one transaction under the store lock: every customer classified (the R/F/M quintiles are
    the whole state's), the history diff, the KPIs, the day's run recorded. Running it again
    recomputes the day identically (the history is rewound first). With one shard the shard's run
    recorded all of it: the stored result is returned."""
    with engine.begin() as conn:
        persist.lock_store(conn)
        latest = persist.latest_run(conn)
        if latest is not None and day < latest.business_date:
            return _kept(conn, day, latest.business_date)
        if shards == 1:
            return _recorded(conn, day)
        run = _Run(day, rules, rules.state_fingerprint(), datetime.now(UTC).replace(tzinfo=None))
        recomputed = _shards_done(conn, run, shards)
        rerun = latest is not None and latest.business_date == day
        state = persist.read_state(conn, committed=True)
        open_rows = persist.read_open_history(conn, committed=True, rewinding=day if rerun else None)
        result = _record_shards(conn, run, state, open_rows, rerun, shards)
        return dataclasses.replace(result, customers_recomputed=recomputed)


def _shards_done(conn: Connection, run: _Run, shards: int) -> int:
    """Refuse the reduce until every shard has folded the day by this state definition and no
    order of the day is left unfolded; the customers the shards recomputed."""
    done, recomputed = persist.shards_run(conn, run.day, shards, run.fingerprint)
    missing = [shard.label() for shard in Shard.all_of(shards) if shard.index not in done]
    if missing:
        raise RuntimeError(
            f"segments for {run.day}: {', '.join(missing)} not run (by this state definition); "
            "run update_segments for every shard first"
        )
    unfolded = persist.count_unfolded(conn, run.day)
    if unfolded:
        raise RuntimeError(
            f"segments for {run.day}: {unfolded} orders of the day are not folded into the state yet "
            "(loaded after the shards ran); run update_segments for every shard again"
        )
    return recomputed


def _record_shards(
    conn: Connection, run: _Run, state: pd.DataFrame, open_rows: pd.DataFrame, rerun: bool, shards: int
) -> SegmentsDay:
    """Classify the whole state, diff it against the open history, count and store the KPIs."""
    segments = classify(state, run.day, run.rules)
    changes = diff_segments(open_rows, segments, run.day)
    kpis = compute_kpis(segments, run.day, run.rules, changes.transitions)
    if rerun:
        persist.rewind_history(conn, run.day)
    persist.write_history(conn, changes)
    persist.write_day(conn, run.day, kpis, changes, run.fingerprint, run.now)
    return SegmentsDay(
        run.day,
        recomputed=True,
        kpis=kpis,
        how=f"the state of {shards} customer shards classified and recorded",
        history_rows_closed=len(changes.close),
        history_rows_opened=len(changes.open),
    )


def _recorded(conn: Connection, day: date) -> SegmentsDay:
    """The day as its single shard's run recorded it."""
    kpis = persist.stored_kpis(conn, day)
    if kpis is None:
        raise RuntimeError(f"segments for {day} were not computed: run update_segments first")
    closed, opened = persist.stored_history_counts(conn, day)
    return SegmentsDay(
        day,
        recomputed=True,
        kpis=kpis,
        how="recorded by the day's single run",
        history_rows_closed=closed,
        history_rows_opened=opened,
    )


def segments_of_shard(conn: Connection, day: date, rules: SegmentSettings, shard: Shard) -> pd.DataFrame:
    """The day's segments of ``shard``'s customers: ``classify`` of the whole stored state restricted
    to them (same rows, same order), scored against the whole state's R/F/M cut points; the day
    must be the latest computed one (the state is the latest day's)."""
    latest = persist.latest_run(conn)
    if latest is None or latest.business_date != day:
        raise RuntimeError(
            f"segments for {day} are not the latest computed (latest: {latest.business_date if latest else 'none'})"
        )
    state = persist.read_state(conn)
    bounds = QuintileBounds.of(state)
    mine = state.loc[shard.mask(state["customer_id"])]
    return classify(mine.reset_index(drop=True), day, rules, bounds)
