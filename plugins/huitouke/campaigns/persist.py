"""Stages 3 and 4 at the store's edge: what the planner reads, the plan it stores, the outbox.

The planner (:func:`huitouke.campaigns.plan.plan_day`) and the renderer never touch a database;
this module is the only one that reads or writes ``campaign_entries``, ``campaign_waves``,
``coupons``, ``campaign_days`` and ``outbox``, with bound parameters, in the caller's
transaction. Inserts that may meet a row stored by an earlier run use ``ON CONFLICT DO
NOTHING``: the unique keys are what make a re-run harmless.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Connection, bindparam, func, or_, select, update

from huitouke import records
from huitouke.campaigns.coupons import COUPON_COLUMNS, normalise_code
from huitouke.campaigns.plan import (
    CONTACT_COLUMNS,
    ENTRY_COLUMNS,
    SUPPRESSION_REASONS,
    TREATED,
    WAVE_COLUMNS,
    DayPlan,
)
from huitouke.campaigns.playbook import Playbook
from huitouke.store.rows import chunks, empty_frame, insert_new, read_frame, upsert
from huitouke.store.schema import (
    campaign_days,
    campaign_entries,
    campaign_waves,
    coupons,
    customer_state,
    customers,
    order_lines,
    orders,
    outbox,
    segment_history,
)

QUEUED = "queued"
PLANNED, RENDERED, FAILED = "planned", "queued", "failed"


def _records(frame: pd.DataFrame, columns: Sequence[str]) -> list[dict[str, Any]]:
    """Rows as dicts of plain Python values (None for missing), what DB-API drivers take."""
    columns = list(columns)
    values = [_plain(frame[c]) for c in columns]
    return [dict(zip(columns, row, strict=True)) for row in zip(*values, strict=True)]


def _plain(column: pd.Series) -> list[Any]:
    """A column as plain Python values, None for missing (column by column: 10-20x faster than
    ``astype(object)`` + ``where`` + ``to_dict("records")`` and a check of every value)."""
    dtype = column.dtype
    if isinstance(dtype, np.dtype) and dtype.kind in "biu":
        return column.tolist()
    if isinstance(dtype, np.dtype) and dtype.kind == "M":
        return column.to_numpy(dtype="datetime64[us]").astype(object).tolist()  # NaT: None
    array = column.to_numpy(dtype=object)
    missing = pd.isna(array)
    if missing.any():
        array = array.copy()
        array[missing] = None
    out = array.tolist()
    if any(issubclass(t, np.generic | pd.Timestamp) for t in set(map(type, out))):
        out = [
            v.item() if isinstance(v, np.generic) else v.to_pydatetime() if isinstance(v, pd.Timestamp) else v
            for v in out
        ]
    return out


# ------------------------------------------------------------------------------------ planning


def latest_planned_day(conn: Connection) -> date | None:
    """The latest business date the planner has stored a plan for."""
    return conn.execute(select(func.max(campaign_days.c.business_date))).scalar()


def read_contacts(conn: Connection) -> pd.DataFrame:
    """Addresses, opt-outs and birthdays of every customer (:data:`CONTACT_COLUMNS`)."""
    return read_frame(conn, select(*(customers.c[c] for c in CONTACT_COLUMNS)), CONTACT_COLUMNS)


def read_day_orders(conn: Connection, day: date) -> pd.DataFrame:
    """The paid orders of a business day, with their categories (the planner's ``orders``)."""
    columns = ("order_id", "customer_id", "business_date", "amount_cents", "coupon_code", "status")
    frame = read_frame(
        conn,
        select(*(orders.c[c] for c in columns))
        .where(orders.c.business_date == day)
        .where(orders.c.status.in_(sorted(records.PAID_STATUSES))),
        columns,
    )
    lines = conn.execute(
        select(order_lines.c.order_id, order_lines.c.category)
        .join(orders, orders.c.order_id == order_lines.c.order_id)
        .where(orders.c.business_date == day)
    ).all()
    categories: dict[str, set[str]] = {}
    for order_id, category in lines:
        categories.setdefault(order_id, set()).add(category)
    frame["categories"] = [tuple(sorted(categories.get(o, ()))) for o in frame["order_id"]]
    return frame


def read_entries(conn: Connection, day: date, playbook: Playbook) -> pd.DataFrame:
    """The stored entries :func:`plan_day` needs: open ones, recent ones (re-entry), the day's,
    and every entry of campaigns a customer may enter only once."""
    recent = max((c.reentry_after_days or 0 for c in playbook.campaigns.values()), default=0)
    once = sorted(name for name, c in playbook.campaigns.items() if c.reentry_after_days is None)
    e = campaign_entries.c
    wanted = [e.exited_on.is_(None), e.exited_on >= day, e.entered_on >= day - timedelta(days=recent)]
    if once:
        wanted.append(e.campaign.in_(once))
    condition = or_(*wanted)
    return read_frame(conn, select(*(e[c] for c in ENTRY_COLUMNS)).where(condition), ENTRY_COLUMNS)


def read_contact_history(conn: Connection, day: date, days: int) -> pd.DataFrame:
    """Treated waves of the ``days`` days before ``day``: what the contact caps count."""
    w = campaign_waves.c
    query = (
        select(w.customer_id, w.due_on, w.counts_toward_cap)
        .where(w.outcome == TREATED)
        .where(w.due_on >= day - timedelta(days=days))
        .where(w.due_on < day)
    )
    return read_frame(conn, query, ("customer_id", "contacted_on", "counts_toward_cap"))


def stored_coupons(conn: Connection, day: date) -> pd.DataFrame:
    """Coupons issued on ``day`` (a re-run reuses their codes)."""
    return read_frame(
        conn,
        select(*(coupons.c[c] for c in COUPON_COLUMNS)).where(coupons.c.issued_on == day),
        COUPON_COLUMNS,
    )


def write_plan(conn: Connection, plan: DayPlan, issued: pd.DataFrame, now: datetime) -> None:
    """Store a day's plan: entries (upserted), waves and coupons (inserted once), the summary."""
    entry_rows = _records(plan.entries.assign(planned_at=now), (*ENTRY_COLUMNS, "planned_at"))
    upsert(conn, campaign_entries, entry_rows, ("campaign", "customer_id", "entered_on"))
    wave_columns = [c for c in WAVE_COLUMNS if not c.startswith("coupon_")]
    insert_new(
        conn, campaign_waves, _records(plan.waves.assign(planned_at=now), (*wave_columns, "planned_at"))
    )
    insert_new(conn, coupons, _records(issued.assign(created_at=now), (*COUPON_COLUMNS, "created_at")))
    rows = []
    for row in plan.summary.to_dict("records"):
        figures = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()}
        rows.append(
            {
                "business_date": plan.business_date,
                "campaign": row["campaign"],
                "priority": int(row["priority"]),
                "entered": int(row["entered"]),
                "due": int(row["due"]),
                "treated": int(row["treated"]),
                "held_out": int(row["held_out"]),
                "suppressed": int(sum(row[f"suppressed_{r}"] for r in SUPPRESSION_REASONS)),
                "exited": int(sum(v for k, v in row.items() if k.startswith("exited_"))),
                "messages_planned": int(row["messages"]),
                "messages_queued": 0,
                "status": PLANNED,
                "error": None,
                "figures": json.dumps(figures, ensure_ascii=False, sort_keys=True),
                "planned_at": now,
                "rendered_at": None,
            }
        )
    upsert(conn, campaign_days, rows, ("business_date", "campaign"))


def read_day_summary(conn: Connection, day: date) -> pd.DataFrame:
    """The stored plan summary of a day: one row per campaign, highest priority first."""
    columns = [c.name for c in campaign_days.columns]
    query = (
        select(campaign_days)
        .where(campaign_days.c.business_date == day)
        .order_by(campaign_days.c.priority.desc(), campaign_days.c.campaign)
    )
    return read_frame(conn, query, columns)


def redeem_coupons(conn: Connection, day: date) -> dict[str, int]:
    """Mark redeemed the coupons whose code a paid order of ``day`` carries (first order wins).

    Returns counts: ``orders_with_code``, ``redeemed`` (newly marked), ``already_redeemed``
    (the same order on a re-run, or another order earlier), ``unknown_code``.
    """
    rows = conn.execute(
        select(orders.c.order_id, orders.c.customer_id, orders.c.coupon_code)
        .where(orders.c.business_date == day)
        .where(orders.c.coupon_code.is_not(None))
        .where(orders.c.status.in_(sorted(records.PAID_STATUSES)))
        .order_by(orders.c.order_id)
    ).all()
    counts = {"orders_with_code": len(rows), "redeemed": 0, "already_redeemed": 0, "unknown_code": 0}
    by_code: dict[str, str] = {}
    for order_id, _customer, raw in rows:
        code = normalise_code(raw)
        if code and code not in by_code:
            by_code[code] = order_id
    if not by_code:
        return counts
    known: set[str] = set()
    for chunk in chunks(sorted(by_code)):
        known.update(conn.execute(select(coupons.c.code).where(coupons.c.code.in_(chunk))).scalars())
    counts["unknown_code"] = len(by_code) - len(known)
    statement = (
        update(coupons)
        .where(coupons.c.code == bindparam("b_code"))
        .where(coupons.c.redeemed_order_id.is_(None))
        .values(redeemed_order_id=bindparam("b_order"), redeemed_on=day)
    )
    params = [{"b_code": code, "b_order": by_code[code]} for code in sorted(known)]
    if params:
        result = conn.execute(statement, params)
        counts["redeemed"] = max(result.rowcount, 0)
    counts["already_redeemed"] = len(known) - counts["redeemed"]
    return counts


# ----------------------------------------------------------------------------------- rendering

TREATED_WAVE_COLUMNS = ("customer_id", "entered_on", "wave", "variant", "channels")


def read_treated_waves(conn: Connection, campaign: str, day: date) -> pd.DataFrame:
    """The campaign's treated waves of ``day``: one row per message-receiving wave."""
    w = campaign_waves.c
    query = (
        select(*(w[c] for c in TREATED_WAVE_COLUMNS))
        .where(w.campaign == campaign)
        .where(w.due_on == day)
        .where(w.outcome == TREATED)
        .order_by(w.customer_id, w.entered_on)
    )
    return read_frame(conn, query, TREATED_WAVE_COLUMNS)


def read_queued_keys(conn: Connection, campaign: str, day: date) -> set[tuple[str, date, int, str]]:
    """(customer_id, entered_on, wave, channel) of the campaign's messages already in the outbox."""
    o = outbox.c
    rows = conn.execute(
        select(o.customer_id, o.entered_on, o.wave, o.channel)
        .where(o.campaign == campaign)
        .where(o.business_date == day)
    ).all()
    return {(str(c), e, int(w), str(ch)) for c, e, w, ch in rows}


PROFILE_COLUMNS = ("customer_id", "name", "phone", "email", "birthday", "sms_opt_out", "email_opt_out")
STATE_COLUMNS = ("customer_id", "paid_orders", "last_business_date")


def read_profiles(conn: Connection, customer_ids: Sequence[str]) -> pd.DataFrame:
    """Profile and state of the given customers: what a message context needs about them."""
    parts = []
    for chunk in chunks(list(customer_ids)):
        query = (
            select(
                *(customers.c[c] for c in PROFILE_COLUMNS),
                customer_state.c.paid_orders,
                customer_state.c.last_business_date,
            )
            .outerjoin(customer_state, customer_state.c.customer_id == customers.c.customer_id)
            .where(customers.c.customer_id.in_(chunk))
        )
        parts.append(read_frame(conn, query, (*PROFILE_COLUMNS, "paid_orders", "last_business_date")))
    if not parts:
        return empty_frame((*PROFILE_COLUMNS, "paid_orders", "last_business_date"))
    return pd.concat(parts, ignore_index=True)


def read_last_orders(conn: Connection, customer_ids: Sequence[str], day: date) -> pd.DataFrame:
    """Each customer's latest paid order on or before ``day`` (id, date, amount, categories).

    The latest day is a window over each customer's own orders, so the query is planned on
    ``ix_orders_customer_id`` alone (joining on ``business_date = max(business_date)`` let SQLite,
    without statistics, probe ``ix_orders_business_date``: every order of each customer's last day,
    60 s per 900 customers at 1M customers)."""
    o = orders.c
    rows: list[tuple[Any, ...]] = []
    for chunk in chunks(list(customer_ids)):
        mine = (
            select(
                o.customer_id,
                o.order_id,
                o.business_date,
                o.amount_cents,
                func.max(o.business_date).over(partition_by=o.customer_id).label("last_day"),
            )
            .where(o.customer_id.in_(chunk))
            .where(o.business_date <= day)
            .where(o.status.in_(sorted(records.PAID_STATUSES)))
            .subquery()
        )
        query = (
            select(
                mine.c.customer_id,
                mine.c.order_id,
                mine.c.business_date,
                mine.c.amount_cents,
                order_lines.c.category,
            )
            .where(mine.c.business_date == mine.c.last_day)
            .outerjoin(order_lines, order_lines.c.order_id == mine.c.order_id)
        )
        rows.extend(map(tuple, conn.execute(query).all()))
    columns = ("customer_id", "order_id", "business_date", "amount_cents", "categories")
    if not rows:
        return empty_frame(columns)
    # One row per line. Several paid orders on the last day: the largest (then the last id) is
    # "the" order.
    categories: dict[tuple[str, str], set[str]] = {}
    best: dict[str, tuple[Any, Any, Any]] = {}  # customer -> (amount, order id, business date)
    for customer_id, order_id, business_date, amount, category in rows:
        found = categories.get((customer_id, order_id))
        if found is None:
            found = categories[(customer_id, order_id)] = set()
            current = best.get(customer_id)
            if current is None or (amount, order_id) > current[:2]:
                best[customer_id] = (amount, order_id, business_date)
        if category is not None:
            found.add(category)
    chosen = sorted(best.items())
    return pd.DataFrame(
        {
            "customer_id": [c for c, _ in chosen],
            "order_id": [o for _, (_, o, _) in chosen],
            "business_date": [d for _, (_, _, d) in chosen],
            "amount_cents": [a for _, (a, _, _) in chosen],
            "categories": [sorted(categories[(c, o)]) for c, (_, o, _) in chosen],
        }
    )


SEGMENT_FIELDS = ("customer_id", "lifecycle", "member_tier", "value_tier", "category_group")


def read_segments(conn: Connection, customer_ids: Sequence[str], day: date) -> pd.DataFrame:
    """The segment fields a message context reads (:data:`SEGMENT_FIELDS`) of the given customers,
    valid on ``day``; text columns as ``segments_on`` gives them (missing: NaN)."""
    h = segment_history.c
    rows: list[tuple[Any, ...]] = []
    for chunk in chunks(list(customer_ids)):
        query = (
            select(*(h[c] for c in SEGMENT_FIELDS))
            .where(h.customer_id.in_(chunk))
            .where(h.valid_from <= day)
            .where(h.valid_to.is_(None) | (h.valid_to > day))
        )
        rows.extend(map(tuple, conn.execute(query).all()))
    if not rows:
        return empty_frame(SEGMENT_FIELDS)
    return pd.DataFrame.from_records(rows, columns=list(SEGMENT_FIELDS)).astype("str")


def read_coupons_of(conn: Connection, campaign: str, day: date) -> pd.DataFrame:
    """The campaign's coupons issued on ``day``."""
    return read_frame(
        conn,
        select(*(coupons.c[c] for c in COUPON_COLUMNS))
        .where(coupons.c.campaign == campaign)
        .where(coupons.c.issued_on == day),
        COUPON_COLUMNS,
    )


OUTBOX_COLUMNS = (
    "campaign",
    "customer_id",
    "entered_on",
    "wave",
    "variant",
    "channel",
    "template",
    "business_date",
    "status",
    "recipient",
    "subject",
    "body",
    "html",
    "sms_segments",
    "coupon_code",
    "attempts",
    "created_at",
)


def queue_messages(conn: Connection, messages: list[dict[str, Any]]) -> int:
    """Insert rendered messages (:data:`OUTBOX_COLUMNS`) as queued; an already stored key is
    skipped. Returns the number inserted."""
    return insert_new(conn, outbox, messages)


def record_rendering(
    conn: Connection, day: date, campaign: str, status: str, queued: int, error: str | None, now: datetime
) -> None:
    """Record on the campaign's day row whether its messages were queued, or why not."""
    total = conn.execute(
        select(func.count())
        .select_from(outbox)
        .where(outbox.c.campaign == campaign)
        .where(outbox.c.business_date == day)
    ).scalar_one()
    conn.execute(
        update(campaign_days)
        .where(campaign_days.c.business_date == day)
        .where(campaign_days.c.campaign == campaign)
        .values(status=status, error=error, messages_queued=total, rendered_at=now)
    )
