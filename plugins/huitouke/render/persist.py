"""Stage 4 at the store's edge: what rendering reads (the day's treated waves, the customers'
profiles, segments, latest orders and coupons) and writes (the outbox, the campaign's day row).

:mod:`huitouke.render.daily` never touches a database but through this module; every read and
write uses bound parameters in the caller's transaction. The outbox's unique key (``store/schema.py``)
is what makes a re-run harmless: a message already queued is skipped, by the key read here
(:data:`MESSAGE_KEY`) and by the insert's ``ON CONFLICT DO NOTHING``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

import pandas as pd
from sqlalchemy import Connection, Select, and_, func, select, update

from huitouke import records
from huitouke.campaigns.coupons import COUPON_COLUMNS
from huitouke.campaigns.persist import FAILED, RENDERED
from huitouke.campaigns.plan import TREATED
from huitouke.campaigns.tables import columns_of, unique_key
from huitouke.deliver.states import out_id_of
from huitouke.shards import Shard
from huitouke.store.rows import chunks, empty_frame, insert_new, read_frame
from huitouke.store.schema import (
    campaign_days,
    campaign_waves,
    coupons,
    customer_state,
    customers,
    order_lines,
    orders,
    outbox,
    segment_history,
)

QUEUED = "queued"  # an outbox row's status when rendering stores it
# The outbox columns rendering writes (delivery fills the others); the outbox's unique key; and
# the key of a campaign's message of a day within it.
OUTBOX_COLUMNS: tuple[str, ...] = columns_of(
    outbox,
    without=(
        "message_id",
        "last_error",
        "provider_message_id",
        "sent_at",
        "provider",
        "out_id",
        "claimed_by",
        "claimed_at",
        "lease_until",
        "next_attempt_at",
        "billed_segments",
        "receipt",
        "receipt_code",
        "receipt_at",
        "feedback",
    ),
)
OUTBOX_KEY: tuple[str, ...] = unique_key(outbox)
MESSAGE_KEY: tuple[str, ...] = tuple(c for c in OUTBOX_KEY if c != "campaign")

TREATED_WAVE_COLUMNS = ("customer_id", "entered_on", "wave", "variant", "channels")
PROFILE_COLUMNS = ("customer_id", "name", "phone", "email", "birthday", "sms_opt_out", "email_opt_out")
STATE_COLUMNS = ("paid_orders", "last_business_date")  # of customer_state, joined to the profile
SEGMENT_FIELDS = ("customer_id", "lifecycle", "member_tier", "value_tier", "category_group")
LAST_ORDER_COLUMNS = ("customer_id", "order_id", "business_date", "amount_cents", "categories")


# ------------------------------------------------------------------------------ the day's work


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


def read_queued_keys(conn: Connection, campaign: str, day: date) -> set[tuple[Any, ...]]:
    """The :data:`MESSAGE_KEY` (customer_id, entered_on, wave, channel) of each of the campaign's
    messages of ``day`` already in the outbox."""
    o = outbox.c
    rows = conn.execute(
        select(*(o[c] for c in MESSAGE_KEY)).where(o.campaign == campaign).where(o.business_date == day)
    ).all()
    return {tuple(row) for row in rows}


def read_coupons_of(conn: Connection, campaign: str, day: date) -> pd.DataFrame:
    """The campaign's coupons issued on ``day``."""
    return read_frame(
        conn,
        select(*(coupons.c[c] for c in COUPON_COLUMNS))
        .where(coupons.c.campaign == campaign)
        .where(coupons.c.issued_on == day),
        COUPON_COLUMNS,
    )


# ---------------------------------------------------------------------------- the customers


def read_profiles(conn: Connection, customer_ids: Sequence[str]) -> pd.DataFrame:
    """Profile and state of the given customers: what a message context needs about them."""
    columns = (*PROFILE_COLUMNS, *STATE_COLUMNS)
    parts = []
    for chunk in chunks(list(customer_ids)):
        query = (
            select(
                *(customers.c[c] for c in PROFILE_COLUMNS),
                *(customer_state.c[c] for c in STATE_COLUMNS),
            )
            .outerjoin(customer_state, customer_state.c.customer_id == customers.c.customer_id)
            .where(customers.c.customer_id.in_(chunk))
        )
        parts.append(read_frame(conn, query, columns))
    if not parts:
        return empty_frame(columns)
    return pd.concat(parts, ignore_index=True)


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


def _last_day_lines(chunk: Sequence[str], day: date) -> Select:
    """One row per line of each customer's paid orders of their last day on or before ``day``
    (customer_id, order_id, business_date, amount_cents, category).

    The latest day is a window over each customer's own orders, so the query is planned on
    ``ix_orders_customer_id`` alone (joining on ``business_date = max(business_date)`` let SQLite,
    without statistics, probe ``ix_orders_business_date``: every order of each customer's last day,
    60 s per 900 customers at 1M customers)."""
    o = orders.c
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
    return (
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


def _the_last_orders(rows: list[tuple[Any, ...]]) -> pd.DataFrame:
    """From the lines of each customer's last day, "the" order: the largest (then the last id),
    with the sorted categories of its lines (:data:`LAST_ORDER_COLUMNS`)."""
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
    values = (
        [c for c, _ in chosen],
        [o for _, (_, o, _) in chosen],
        [d for _, (_, _, d) in chosen],
        [a for _, (a, _, _) in chosen],
        [sorted(categories[(c, o)]) for c, (_, o, _) in chosen],
    )
    return pd.DataFrame(dict(zip(LAST_ORDER_COLUMNS, values, strict=True)))


def read_last_orders(conn: Connection, customer_ids: Sequence[str], day: date) -> pd.DataFrame:
    """Each customer's latest paid order on or before ``day`` (:data:`LAST_ORDER_COLUMNS`: id,
    date, amount, categories); several paid orders on that day: the largest."""
    rows: list[tuple[Any, ...]] = []
    for chunk in chunks(list(customer_ids)):
        rows.extend(map(tuple, conn.execute(_last_day_lines(chunk, day)).all()))
    if not rows:
        return empty_frame(LAST_ORDER_COLUMNS)
    return _the_last_orders(rows)


# ------------------------------------------------------------------------------------ writes


def queue_messages(conn: Connection, messages: list[dict[str, Any]]) -> int:
    """Insert rendered messages (:data:`OUTBOX_COLUMNS`) as queued, each with its id at the
    provider (:func:`~huitouke.deliver.states.out_id_of`); an already stored key is skipped.
    Returns the number inserted."""
    return insert_new(conn, outbox, [{**m, "out_id": out_id_of(m)} for m in messages])


def _record(
    conn: Connection, day: date, campaign: str, shard: Shard, error: str | None, now: datetime
) -> None:
    """The campaign's day row after one shard's render: the messages the outbox holds for it (all
    shards'), and failed while any shard's last render failed. The row is locked first (PostgreSQL:
    ``FOR UPDATE``; SQLite's writers are one at a time), so the count, a statement after the lock,
    sees every shard that recorded before, and the last to record leaves the right figures
    whatever the order the shards end in."""
    d = campaign_days.c
    mine = and_(d.business_date == day, d.campaign == campaign)
    current = conn.execute(select(d.status, d.error).where(mine).with_for_update()).first()
    if current is None:
        return
    standing = shard_failures(current.error if current.status == FAILED else None, shard)
    if error is not None:
        standing[shard] = error
    total = conn.execute(
        select(func.count())
        .select_from(outbox)
        .where(outbox.c.campaign == campaign)
        .where(outbox.c.business_date == day)
    ).scalar_one()
    conn.execute(
        update(campaign_days)
        .where(mine)
        .values(
            status=FAILED if standing else RENDERED,
            error=_failures_text(standing),
            messages_queued=total,
            rendered_at=now,
        )
    )


_SHARD_LINE = re.compile(r"^shard (\d+)/(\d+): ", re.MULTILINE)


def shard_failures(error: str | None, shard: Shard) -> dict[Shard, str]:
    """The failures recorded on a campaign's day row (``error``) that still stand beside ``shard``'s
    new outcome: the other shards' of the same count (a failure of shard 2 of 3 is a line
    ``shard 2/3: why``); none when ``shard`` is every customer, or of a row recorded with
    another shard count (a re-run with another count renders every customer again)."""
    if not error or shard.is_whole:
        return {}
    marks = list(_SHARD_LINE.finditer(error))
    found: dict[Shard, str] = {}
    for mark, after in zip(marks, [*marks[1:], None], strict=True):
        index, count = int(mark.group(1)) - 1, int(mark.group(2))
        if count == shard.count and index != shard.index and 0 <= index < count:
            end = after.start() if after else len(error)
            found[Shard(index, count)] = error[mark.end() : end].rstrip("\n")
    return found


def _failures_text(failures: dict[Shard, str]) -> str | None:
    if not failures:
        return None
    if len(failures) == 1 and next(iter(failures)).is_whole:
        return next(iter(failures.values()))
    return "\n".join(f"{s.label()}: {why}" for s, why in sorted(failures.items(), key=lambda i: i[0].index))


def record_queued(
    conn: Connection, day: date, campaign: str, now: datetime, shard: Shard | None = None
) -> None:
    """Record on the campaign's day row that ``shard``'s messages are queued (default: every
    customer's), and how many the outbox holds. Call after the messages' own commit."""
    _record(conn, day, campaign, shard or Shard.whole(), None, now)


def record_failure(
    conn: Connection, day: date, campaign: str, error: str, now: datetime, shard: Shard | None = None
) -> None:
    """Record on the campaign's day row why ``shard``'s messages could not be queued."""
    _record(conn, day, campaign, shard or Shard.whole(), error, now)
