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
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import pandas as pd
import pyarrow as pa
from sqlalchemy import Engine

from huitouke.pii import get_logger
from huitouke.segments import persist, snapshot
from huitouke.segments.classify import classify
from huitouke.segments.fold import fold_rows, fold_state, plan_fold
from huitouke.segments.history import diff_segments, same_customers
from huitouke.segments.kpis import compute_kpis, format_kpis
from huitouke.segments.settings import SegmentSettings
from huitouke.segments.state import build_state_and_spend
from huitouke.store.background import BackgroundWrites

__all__ = ["SegmentsDay", "run_day"]

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


def run_day(engine: Engine, day: date, rules: SegmentSettings) -> SegmentsDay:
    """Fold, classify and record ``day`` (see the module docstring)."""
    default_pool = pa.default_memory_pool()
    pa.set_memory_pool(pa.system_memory_pool())

    fingerprint = rules.state_fingerprint()
    now = datetime.now(UTC).replace(tzinfo=None)
    cache = snapshot.cache_dir_for(engine.url)
    store = snapshot.store_id(engine.url)
    prepared = None
    try:
        with engine.begin() as conn:
            locked = persist.lock_store(conn)
            latest = persist.latest_run(conn)
            if latest is not None and day < latest.business_date:
                log.warning(
                    "Segments for %s were computed before %s, which builds on them: kept as they are",
                    day,
                    latest.business_date,
                )
                return SegmentsDay(day, recomputed=False, kpis=persist.stored_kpis(conn, day))
            saved = None
            if cache is not None and latest is not None:
                key = snapshot.SnapshotKey(
                    store, latest.business_date, latest.computed_at, latest.fingerprint, latest.customers
                )
                saved = snapshot.load(cache, key)
            rerun = latest is not None and latest.business_date == day
            pending = None
            previous_ids = open_row_of = None  # the fold's row mapping, for the history diff
            if latest is None:
                log.info("First segments run: building the customer state from all orders")
            elif latest.fingerprint != fingerprint:
                log.warning(
                    "The customer state's definition changed (the playbook's category groups, or "
                    "this version's store format): rebuilding it from all orders"
                )
            else:
                pending = persist.read_pending(conn, persist.REBUILD_ABOVE, committed=True)
                if pending is None:
                    log.info(
                        "More than %s orders to fold in: rebuilding the customer state from all orders",
                        f"{persist.REBUILD_ABOVE:,}",
                    )
            # Everything is read before the transaction writes anything: SQLite then serves it
            # from a second, read-only connection (persist._read, committed=True).
            if pending is None:
                pa.set_memory_pool(default_pool)
                orders, lines = persist.read_orders(conn, committed=True)
            else:
                before = saved.state if saved is not None else persist.read_state(conn, committed=True)
                plan = plan_fold(before, pending, day)
                history, history_lines = persist.read_orders(conn, plan.recomputed, committed=True)
                spend = persist.read_spend(conn, plan.added, committed=True)
                added_lines = persist.read_lines(conn, plan.changed_orders, committed=True)
            if saved is None:  # as after the rewind of a re-run day, which only comes next
                open_rows = persist.read_open_history(conn, committed=True, rewinding=day if rerun else None)
            else:
                open_rows = saved.rewound(day) if rerun else saved.open_rows
            writes = BackgroundWrites()  # the run's writes overlap its computing (see store.background)
            with writes:
                if rerun:
                    writes.submit(persist.rewind_history, conn, day)
                # The orders read are stamped first (nothing reads them again), while the run computes.
                if locked:
                    writes.submit(persist.mark_folded, conn, day, now)
                else:  # no lock on this database: stamp exactly the orders read
                    read = orders if pending is None else pending
                    due = read["business_date"].isna() | (read["business_date"] <= pd.Timestamp(day))
                    writes.submit(persist.mark_applied, conn, read.loc[due, "order_id"].tolist(), now)
                    del read, due
                if pending is None:  # the rebuild path: every order
                    state, spend = build_state_and_spend(orders, lines, settings=rules, until=day)
                    del lines, orders
                    writes.submit(persist.replace_state, conn, state, None)
                    writes.submit(persist.replace_spend, conn, spend, None)
                    del spend
                    recomputed = len(state)
                    how = "the state rebuilt from all orders"
                else:  # the daily fold: the pending orders, and what they touch
                    folded = fold_rows(
                        before, spend, plan, added_lines, history, history_lines, settings=rules, until=day
                    )
                    writes.submit(persist.write_folded, conn, folded, plan)
                    del spend, added_lines, history, history_lines
                    state, open_row_of = fold_state(before, folded, plan)
                    previous_ids = before["customer_id"]
                    del before
                    recomputed = len(plan.touched)
                    how = (
                        f"{len(plan.added):,} customers updated by their changed orders "
                        f"({len(plan.additions):,} paid orders added, {len(plan.removals):,} subtracted: refunded or cancelled), "
                        f"{len(plan.recomputed):,} recomputed from all their orders "
                        "(the first or last order refunded, a late order)"
                    )

                segments = classify(state, day, rules)
                if open_row_of is not None and not same_customers(open_rows["customer_id"], previous_ids):
                    open_row_of = None  # the open rows are not the previous state's customers in order
                del previous_ids
                changes = diff_segments(open_rows, segments, day, open_row_of)
                writes.submit(persist.write_history, conn, changes)
                kpis = compute_kpis(segments, day, rules, changes.transitions)
                writes.submit(persist.write_day, conn, day, kpis, changes, fingerprint, now)
                if cache is not None:
                    opened, closed = persist.open_rows_after(open_rows, segments, changes, open_row_of)
                    key = snapshot.SnapshotKey(store, day, now, fingerprint, int(kpis["customers"]))
                    prepared = snapshot.prepare(cache, key, state, opened, closed)
    except BaseException:
        snapshot.discard(prepared)
        raise
    finally:
        pa.set_memory_pool(default_pool)
    snapshot.publish(prepared)  # only now: the snapshot is the committed run's
    return SegmentsDay(
        day,
        recomputed=True,
        kpis=kpis,
        how=how,
        customers_recomputed=recomputed,
        history_rows_closed=len(changes.close),
        history_rows_opened=len(changes.open),
    )
