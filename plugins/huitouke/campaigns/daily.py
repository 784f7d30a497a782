"""Stage 3 of a business day: plan the day's campaigns once and store the plan.

:func:`run_day` redeems the coupons the day's orders carry, then plans the day once
(:func:`huitouke.campaigns.plan.plan_day` over the day's segments, contacts, orders, stored
entries and contact history) and stores the plan: entries, waves, coupons, one summary row per
campaign. A day already planned is not planned again (its stored plan is what was decided, and
what may already be sent); a day older than the latest planned day is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import pandas as pd
from sqlalchemy import Connection, Engine

from huitouke.campaigns import persist
from huitouke.campaigns.coupons import issue_coupons
from huitouke.campaigns.plan import SUMMARY_COLUMNS, DayPlan, plan_day
from huitouke.campaigns.playbook import Playbook
from huitouke.pii import get_logger

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
) -> PlanResult:
    """Plan ``day`` once and store the plan (see the module docstring). ``segments`` is the day's
    classification (read from the store's state when not given: stage 2 must have computed the day)."""
    now = now or datetime.now()
    with engine.begin() as conn:
        redemptions = persist.redeem_coupons(conn, day)
        kept = _why_kept(conn, day)
        if kept is not None:
            return PlanResult(day, False, _stored_summary(conn, day), redemptions, kept)
        plan = _plan(conn, day, playbook, segments)
        issued = issue_coupons(plan.waves, playbook, persist.stored_coupons(conn, day))
        persist.write_plan(conn, plan, issued, now)
    summary = plan.summary.assign(messages_queued=0, status=persist.PLANNED)
    return PlanResult(day, True, summary, redemptions, "\n".join(plan.notes))


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


def _plan(conn: Connection, day: date, playbook: Playbook, segments: pd.DataFrame | None) -> DayPlan:
    """The day's plan from the stored inputs (the day's segments recomputed when not given)."""
    if segments is None:
        segments = _segments_of(conn, day, playbook)
    return plan_day(
        playbook,
        day,
        segments,
        contacts=persist.read_contacts(conn),
        orders=persist.read_day_orders(conn, day),
        entries=persist.read_entries(conn, day, playbook),
        history=persist.read_contact_history(conn, day, playbook.contact_pressure.longest_window_days),
    )


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
