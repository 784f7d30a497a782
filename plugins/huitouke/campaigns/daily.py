"""Stage 3 of a business day: plan the day's campaigns once and store the plan.

:func:`run_day` redeems the coupons the day's orders carry, then plans the day once and stores the
plan: entries, waves, coupons, one summary row per campaign. A day already planned is not planned
again (its stored plan is what was decided, and what may already be sent); a day older than the
latest planned day is refused.

Planning splits into customer shards (:mod:`huitouke.shards`, ``scale.shards``): each shard's
candidates (:func:`huitouke.campaigns.plan.plan_candidates` over its customers' segments, contacts,
orders, stored entries and contact history) are everything its customers decide alone; the reduce
(:func:`huitouke.campaigns.plan.decide_day`) decides what needs every customer at once (the entry
limit, the daily global cap) and gives the same plan for any shard count. The daily DAG runs
:func:`plan_shard` once per shard (mapped; each stages its candidates in ``campaign_plan_shards``)
and then :func:`reduce_day`; :func:`run_day` does both in one transaction, in one call (tests and
library callers).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import pandas as pd
from sqlalchemy import Connection, Engine

from huitouke.campaigns import persist
from huitouke.campaigns.coupons import issue_coupons
from huitouke.campaigns.plan import SUMMARY_COLUMNS, Candidates, DayPlan, decide_day, plan_candidates
from huitouke.campaigns.playbook import Playbook
from huitouke.pii import get_logger
from huitouke.shards import Shard

log = get_logger(__name__)


# ------------------------------------------------------------------------------------ planning


@dataclass(frozen=True)
class PlanResult:
    """What :func:`run_day` did for a day."""

    business_date: date
    planned: bool  # False: the stored plan was kept (re-run) or the day was refused (older)
    summary: pd.DataFrame  # SUMMARY_COLUMNS-like, one row per campaign
    redemptions: dict[str, int]
    note: str = ""

    def _plan(self) -> DayPlan:
        """The summary as a plan (for its table and its plain values)."""
        return DayPlan(self.business_date, pd.DataFrame(), pd.DataFrame(), pd.DataFrame(), self.summary)

    def as_text(self) -> str:
        if self.summary.empty:
            table = f"No campaign planned for {self.business_date}."
        else:
            table = self._plan().as_text()
        r = self.redemptions
        lines = [table]
        if self.note:
            lines.append(self.note)
        lines.append(
            f"Coupons: {r.get('redeemed', 0):,} redeemed by the day's orders"
            f" ({r.get('orders_with_code', 0):,} paid orders carried a code,"
            f" {r.get('unknown_code', 0):,} unknown codes, {r.get('already_redeemed', 0):,} already redeemed)"
        )
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        """The day, whether it was planned now, each campaign's figures, the redemptions."""
        return {
            "business_date": self.business_date.isoformat(),
            "planned": self.planned,
            "campaigns": self._plan().as_dict()["campaigns"],
            "redemptions": {k: int(v) for k, v in self.redemptions.items()},
            "note": self.note,
        }

    def campaigns(self) -> list[str]:
        """The campaigns of the day's plan, highest priority first (what the render tasks map over)."""
        return [str(c) for c in self.summary["campaign"]] if len(self.summary) else []


@dataclass(frozen=True)
class ShardResult:
    """What :func:`plan_shard` did for one shard of a day (small: the task's XCom)."""

    business_date: date
    shard: Shard
    staged: bool  # False: the day's stored plan stands, nothing was staged
    figures: dict[str, Any]  # Candidates.figures()
    note: str = ""

    def as_text(self) -> str:
        head = f"Planning candidates for {self.business_date}, {self.shard.label()}"
        if not self.staged:
            return f"{head}: none staged. {self.note}"
        f = self.figures
        return (
            f"{head}: {f['entries']:,} entries touched ({f['fresh']:,} entering, before the entry limits),"
            f" {f['waves']:,} waves due, staged for the reduce"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "business_date": self.business_date.isoformat(),
            "shard": self.shard.index,
            "shards": self.shard.count,
            "staged": self.staged,
            "entries": int(self.figures.get("entries", 0)),
            "waves": int(self.figures.get("waves", 0)),
            "note": self.note,
        }


def _stored_summary(conn: Connection, day: date) -> pd.DataFrame:
    """The stored plan summary of a day in :data:`SUMMARY_COLUMNS` (from the rows' figures)."""
    import json

    stored = persist.read_day_summary(conn, day)
    rows = [json.loads(f) for f in stored["figures"]] if len(stored) else []
    frame = pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))
    if len(stored):
        frame["messages_queued"] = stored["messages_queued"].to_numpy()
        frame["status"] = stored["status"].to_numpy()
    return frame


def stored_plan_text(conn: Connection, day: date, campaign: str | None = None) -> str:
    """The stored plan summary of ``day`` (or of one campaign) as the plan task logged it, with
    the messages queued."""
    summary = _stored_summary(conn, day)
    if campaign is not None:
        summary = summary[summary["campaign"] == campaign].reset_index(drop=True)
    if summary.empty:
        return f"No campaign planned for {day}."
    text = DayPlan(day, pd.DataFrame(), pd.DataFrame(), pd.DataFrame(), summary).as_text()
    queued = ", ".join(
        f"{c} {int(n):,}" for c, n in zip(summary["campaign"], summary["messages_queued"], strict=True)
    )
    return f"{text}\nQueued in the outbox: {queued}"


def run_day(
    engine: Engine,
    day: date,
    playbook: Playbook,
    segments: pd.DataFrame | None = None,
    now: datetime | None = None,
    shards: int = 1,
) -> PlanResult:
    """Plan ``day`` once and store the plan (see the module docstring): every shard's candidates,
    then the reduce, in one transaction. ``segments`` is the day's classification of every
    customer (read from the store's state when not given: stage 2 must have computed the day)."""
    now = now or datetime.now()
    with engine.begin() as conn:
        redemptions, kept = _redeemed_or_kept(conn, day)
        if kept is not None:
            return kept
        if segments is None:
            segments = _segments_of(conn, day, playbook)
        parts = [_candidates_of(conn, day, playbook, shard, segments) for shard in Shard.all_of(shards)]
        plan = _store_plan(conn, decide_day(playbook, day, parts), playbook, now)
    return _planned(plan, redemptions)


def plan_shard(
    engine: Engine,
    day: date,
    playbook: Playbook,
    shard: Shard,
    segments: pd.DataFrame | None = None,
    now: datetime | None = None,
) -> ShardResult:
    """One shard's candidates of ``day``, staged for :func:`reduce_day` (a re-run stages them
    again, the same from the same inputs). A day already planned stages nothing."""
    now = now or datetime.now()
    with engine.begin() as conn:
        kept = _why_kept(conn, day)
        if kept is not None:
            return ShardResult(day, shard, False, {}, kept)
        candidates = _candidates_of(conn, day, playbook, shard, segments)
        persist.stage_candidates(
            conn, shard, candidates, now, None if segments is not None else _inputs(conn)
        )
    return ShardResult(day, shard, True, candidates.figures())


def reduce_day(
    engine: Engine, day: date, playbook: Playbook, shards: int, now: datetime | None = None
) -> PlanResult:
    """The day's plan from the staged candidates of its ``shards`` shards, stored as
    :func:`run_day` stores it (coupons redeemed first; a day already planned keeps its plan);
    the staged candidates are then dropped. Raises :class:`persist.MissingShards` when a shard
    staged nothing, or staged candidates planned on segments stage 2 has computed again since."""
    now = now or datetime.now()
    with engine.begin() as conn:
        redemptions, kept = _redeemed_or_kept(conn, day)
        if kept is not None:
            return kept
        parts = persist.staged_candidates(conn, day, shards, _inputs(conn))
        plan = _store_plan(conn, decide_day(playbook, day, parts), playbook, now)
        persist.drop_staged(conn, day)
    return _planned(plan, redemptions)


def _redeemed_or_kept(conn: Connection, day: date) -> tuple[dict[str, int], PlanResult | None]:
    """The coupons the day's orders redeemed (always marked first), and the stored plan's result
    when the day is not to be planned (planned before, or later days planned on it)."""
    redemptions = persist.redeem_coupons(conn, day)
    kept = _why_kept(conn, day)
    if kept is None:
        return redemptions, None
    return redemptions, PlanResult(day, False, _stored_summary(conn, day), redemptions, kept)


def _store_plan(conn: Connection, plan: DayPlan, playbook: Playbook, now: datetime) -> DayPlan:
    """Issue the plan's coupons (reusing codes stored for the day) and store the plan."""
    issued = issue_coupons(plan.waves, playbook, persist.stored_coupons(conn, plan.business_date))
    persist.write_plan(conn, plan, issued, now)
    return plan


def _planned(plan: DayPlan, redemptions: dict[str, int]) -> PlanResult:
    summary = plan.summary.assign(messages_queued=0, status=persist.PLANNED)
    return PlanResult(plan.business_date, True, summary, redemptions, "\n".join(plan.notes))


def _why_kept(conn: Connection, day: date) -> str | None:
    """Why the stored plan of ``day`` stands (planned before, or later days planned on it);
    None when the day is to be planned."""
    latest = persist.latest_planned_day(conn)
    if latest is not None and day < latest:
        note = (
            f"{day} is before the latest planned day {latest}: its plan is kept as stored "
            "(later days were planned on it)"
        )
        log.warning("%s", note)
        return note
    if latest == day:
        note = f"{day} was planned before: the stored plan is kept, only missing messages are queued"
        log.info("%s", note)
        return note
    return None


def _candidates_of(
    conn: Connection, day: date, playbook: Playbook, shard: Shard, segments: pd.DataFrame | None
) -> Candidates:
    """A shard's candidates from the stored inputs: its customers' rows of the day's segments
    (every customer classified, then the shard's taken: RFM quintiles need them all), contacts,
    orders, stored entries and contact history."""
    if segments is None:
        segments = _segments_of(conn, day, playbook)

    def mine(frame: pd.DataFrame) -> pd.DataFrame:
        if shard.is_whole:
            return frame
        return frame[shard.mask(frame["customer_id"].astype(str).to_numpy(dtype=object))].reset_index(
            drop=True
        )

    return plan_candidates(
        playbook,
        day,
        mine(segments),
        contacts=mine(persist.read_contacts(conn)),
        orders=mine(persist.read_day_orders(conn, day)),
        entries=mine(persist.read_entries(conn, day, playbook)),
        history=mine(persist.read_contact_history(conn, day, playbook.contact_pressure.longest_window_days)),
    )


def _inputs(conn: Connection) -> str | None:
    """What the shards' candidates are planned on, as staged with them: the latest stage-2 run
    (its time: a re-run of the day stamps it anew). None: no run yet."""
    from huitouke.segments import persist as segment_store

    latest = segment_store.latest_run(conn)
    return None if latest is None else f"segments {latest.business_date} computed at {latest.computed_at}"


def _segments_of(conn: Connection, day: date, playbook: Playbook) -> pd.DataFrame:
    """The day's segments: stage 2's classification of the stored state, recomputed (the same
    function of the same state). The state comes from stage 2's snapshot when it provably is the
    store's (:mod:`huitouke.segments.snapshot`), else from the table."""
    from huitouke.segments import classify, snapshot
    from huitouke.segments import persist as segment_store

    latest = segment_store.latest_run(conn)
    if latest is None or latest.business_date < day:
        raise RuntimeError(
            f"segments for {day} have not been computed (latest: {latest.business_date if latest else 'none'}): "
            "run update_segments for that day first"
        )
    saved = snapshot.load_for_run(conn.engine.url, latest)
    state = saved.state if saved is not None else segment_store.read_state(conn)
    return classify(state, day, playbook.segments)
