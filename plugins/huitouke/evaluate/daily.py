"""Stage 6 of a business day: evaluate every campaign wave whose windows matured, and store it.

:func:`run_day` reads what :func:`huitouke.evaluate.waves.evaluate_waves` needs from the
store — the waves of the look-back period with each customer's segment on the wave's day, the
cohort's orders, the outbox, the coupons, the keys already recorded — evaluates, and stores the
new rows under their keys (``evaluations``: once per campaign, wave, due day, window and view;
``evaluation_details`` and ``evaluation_sequences`` replaced for the day). Re-running a day adds
nothing and changes nothing already recorded.

A wave planned on business day D goes out the next morning at the send window's start (the plan
is made after D ends), so its send time is D + 1 at ``shop.send_window.start``, shop time.
"""

from __future__ import annotations

import json
import math
from datetime import date, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Connection, Engine, and_, delete, or_, select

from huitouke.campaigns.playbook import Playbook
from huitouke.evaluate.waves import WaveEvaluation, evaluate_waves, planned_send_time
from huitouke.pii import get_logger
from huitouke.store.rows import insert_new, read_frame, upsert
from huitouke.store.schema import (
    campaign_waves,
    coupons,
    evaluation_details,
    evaluation_sequences,
    evaluations,
    order_lines,
    orders,
    outbox,
    segment_history,
)

log = get_logger(__name__)

__all__ = ["SEGMENT_DIMENSIONS", "lookback_days", "run_day"]

# The segment columns evaluation breaks results down by (the customer's segment on the wave's day).
SEGMENT_DIMENSIONS = ("lifecycle", "member_tier", "value_tier", "category_group")


def lookback_days(playbook: Playbook) -> int:
    """How far back a wave can still have a window to evaluate: the longest sequence of waves plus
    the longest window, plus the day between planning and sending."""
    longest = 0
    for campaign in playbook.campaigns.values():
        waves = campaign.waves
        sequence = waves.first_after_days + (waves.max_waves - 1) * (waves.interval_days or 0)
        longest = max(longest, sequence + max(campaign.evaluation.windows_days))
    return longest + 2


def run_day(
    engine: Engine, day: date, playbook: Playbook, timezone: str, now: datetime | None = None
) -> WaveEvaluation:
    """Evaluate on business day ``day`` and store the new rows (see the module docstring)."""
    now = now or datetime.now()
    since = day - timedelta(days=lookback_days(playbook))
    send_at = playbook.shop.send_window.start
    costs = playbook.shop.unit_costs
    with engine.begin() as conn:
        waves = _read_waves(conn, since, day)
        evaluation = evaluate_waves(
            waves,
            _read_orders(conn, since, day, timezone),
            day,
            windows={n: c.evaluation.windows_days for n, c in playbook.campaigns.items()},
            primary={n: c.evaluation.primary_days for n, c in playbook.campaigns.items()},
            send_time=lambda due: planned_send_time(due + timedelta(days=1), timezone, send_at),
            timezone=timezone,
            messages=_read_messages(conn, since),
            coupons=_read_coupons(conn, since),
            sms_segment_cost_cents=costs.sms_segment_cny * 100,
            email_cost_cents=costs.email_cny * 100,
            call_cost_cents=costs.call_cny * 100,
            segment_columns=SEGMENT_DIMENSIONS,
            recorded=_read_recorded(conn, since),
        )
        _write(conn, evaluation, day, now)
    return evaluation


# ---------------------------------------------------------------------------------------- reads


def _read_waves(conn: Connection, since: date, day: date) -> pd.DataFrame:
    """Waves due in [since, day), with each customer's segment on the due day (history ranges)."""
    w, h = campaign_waves.c, segment_history.c
    columns = (
        "campaign",
        "customer_id",
        "entered_on",
        "wave",
        "due_on",
        "arm",
        "variant",
        "outcome",
        "channels",
    )
    query = (
        select(*(w[c] for c in columns), *(h[c] for c in SEGMENT_DIMENSIONS))
        .outerjoin(
            segment_history,
            and_(
                h.customer_id == w.customer_id,
                h.valid_from <= w.due_on,
                or_(h.valid_to.is_(None), h.valid_to > w.due_on),
            ),
        )
        .where(w.due_on >= since)
        .where(w.due_on < day)
    )
    return read_frame(conn, query, (*columns, *SEGMENT_DIMENSIONS))


def _read_orders(conn: Connection, since: date, day: date, timezone: str) -> pd.DataFrame:
    """Every order of the cohorts' customers paid after the first send and up to the end of
    ``day``, with its categories ("a,b"). Status as it stands now: a refund since is no response."""
    w = campaign_waves.c
    cohort = select(w.customer_id).where(w.due_on >= since).where(w.due_on < day).distinct().subquery()
    first = planned_send_time(since, timezone, datetime.min.time())
    end = planned_send_time(day + timedelta(days=1), timezone, datetime.min.time())
    o = orders.c
    frame = read_frame(
        conn,
        select(o.order_id, o.customer_id, o.paid_at, o.status, o.amount_cents)
        .join(cohort, cohort.c.customer_id == o.customer_id)
        .where(o.paid_at > first)
        .where(o.paid_at < end),
        ("order_id", "customer_id", "paid_at", "status", "amount_cents"),
    )
    if frame.empty:
        return frame.assign(categories=pd.Series([], dtype=object))
    lines = read_frame(
        conn,
        select(order_lines.c.order_id, order_lines.c.category)
        .join(orders, orders.c.order_id == order_lines.c.order_id)
        .join(cohort, cohort.c.customer_id == o.customer_id)
        .where(o.paid_at > first)
        .where(o.paid_at < end),
        ("order_id", "category"),
    )
    categories = lines.groupby("order_id")["category"].agg(lambda c: ",".join(sorted(set(c))))
    frame["categories"] = frame["order_id"].map(categories)
    frame["paid_at"] = pd.to_datetime(frame["paid_at"])
    return frame


def _read_messages(conn: Connection, since: date) -> pd.DataFrame:
    columns = ("campaign", "customer_id", "entered_on", "wave", "channel", "status", "sms_segments")
    return read_frame(
        conn, select(*(outbox.c[c] for c in columns)).where(outbox.c.business_date >= since), columns
    )


def _read_coupons(conn: Connection, since: date) -> pd.DataFrame:
    columns = ("campaign", "customer_id", "entered_on", "wave", "value_cents", "redeemed_order_id")
    return read_frame(
        conn, select(*(coupons.c[c] for c in columns)).where(coupons.c.issued_on >= since), columns
    )


def _read_recorded(conn: Connection, since: date) -> pd.DataFrame:
    columns = ("campaign", "wave", "due_on", "window_days")
    return read_frame(
        conn,
        select(*(evaluations.c[c] for c in columns)).where(evaluations.c.due_on >= since).distinct(),
        columns,
    )


# --------------------------------------------------------------------------------------- writes


def _plain(value: Any) -> Any:
    """A JSON- and driver-friendly scalar: numpy -> Python, NaN/NaT -> None, dates -> ISO text."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NaT:
        return None
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    return value


def _json(records: list[dict[str, Any]]) -> str:
    def default(value: Any) -> Any:
        if isinstance(value, (date, datetime, pd.Timestamp)):
            return value.isoformat()
        return str(value)

    clean = [{k: _plain(v) for k, v in r.items()} for r in records]
    return json.dumps(clean, ensure_ascii=False, sort_keys=True, default=default)


def _cents(value: Any) -> int | None:
    value = _plain(value)
    return None if value is None else int(round(value))


def _write(conn: Connection, ev: WaveEvaluation, day: date, now: datetime) -> None:
    rows = []
    for r in ev.results.to_dict("records"):
        rows.append(
            {
                "campaign": r["campaign"],
                "wave": int(r["wave"]),
                "due_on": r["due_on"],
                "window_days": int(r["window_days"]),
                "view": r["view"],
                "evaluated_on": day,
                "primary_window": bool(r["primary"]),
                "send_time": _plain(r["send_time"]),
                "customers": int(r["customers"]),
                "control_customers": int(r["control_customers"]),
                "responders": int(r["responders"]),
                "control_responders": int(r["control_responders"]),
                "response_rate": _plain(r["response_rate"]),
                "control_rate": _plain(r["control_rate"]),
                "lift": _plain(r["lift"]),
                "lift_low": _plain(r["lift_low"]),
                "lift_high": _plain(r["lift_high"]),
                "p_value": _plain(r["p_value"]),
                "incremental_revenue_cents": _cents(r["incremental_revenue_cents"]),
                "cost_cents": _cents(r["cost_cents"]),
                "incremental_roi": _plain(r["incremental_roi"]),
                "naive_roi": _plain(r["naive_roi"]),
                "verdict": str(r["verdict"]),
                "figures": _json([r]),
                "computed_at": now,
            }
        )
    insert_new(conn, evaluations, rows)

    details = []
    key = ["campaign", "wave", "due_on", "window_days"]
    for kind, frame in (("breakdowns", ev.breakdowns), ("categories", ev.categories)):
        for (campaign, wave, due_on, window), part in frame.groupby(key, sort=True):
            details.append((campaign, wave, due_on, window, kind, part))
    for (campaign, wave, due_on), part in ev.curves.groupby(["campaign", "wave", "due_on"], sort=True):
        details.append((campaign, wave, due_on, 0, "curve", part))
    upsert(
        conn,
        evaluation_details,
        [
            {
                "campaign": c,
                "wave": int(w),
                "due_on": d,
                "window_days": int(win),
                "kind": kind,
                "evaluated_on": day,
                "figures": _json(part.to_dict("records")),
            }
            for c, w, d, win, kind, part in details
        ],
        ("campaign", "wave", "due_on", "window_days", "kind"),
    )

    conn.execute(delete(evaluation_sequences).where(evaluation_sequences.c.evaluated_on == day))
    insert_new(
        conn,
        evaluation_sequences,
        [
            {
                "campaign": r["campaign"],
                "through_wave": int(r["through_wave"]),
                "window_days": int(r["window_days"]),
                "view": r["view"],
                "evaluated_on": day,
                "customers": int(r["customers"]),
                "control_customers": int(r["control_customers"]),
                "lift": _plain(r["lift"]),
                "lift_low": _plain(r["lift_low"]),
                "lift_high": _plain(r["lift_high"]),
                "verdict": str(r["verdict"]),
                "figures": _json([r]),
            }
            for r in ev.cumulative.to_dict("records")
        ],
    )
