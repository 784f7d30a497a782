"""Stage 3 at the store's edge: what the planner reads, and the plan it stores.

The planner (:func:`huitouke.campaigns.plan.plan_day`) never touches a database; this module
reads its inputs and writes ``campaign_entries``, ``campaign_waves``, ``coupons`` and
``campaign_days``, with bound parameters, in the caller's transaction. Inserts that may meet a
row stored by an earlier run use ``ON CONFLICT DO NOTHING`` and upserts the table's own unique
key (:func:`huitouke.campaigns.tables.unique_key`): the unique keys are what make a re-run
harmless. Rendering reads and writes at its own edge, :mod:`huitouke.render.persist`.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import Connection, bindparam, delete, func, insert, or_, select, update

from huitouke import records
from huitouke.campaigns.coupons import COUPON_COLUMNS, normalise_code
from huitouke.campaigns.plan import (
    CANDIDATE_ENTRY_COLUMNS,
    CANDIDATE_WAVE_COLUMNS,
    CONTACT_COLUMNS,
    ENTRY_COLUMNS,
    STORED_WAVE_COLUMNS,
    SUPPRESSION_REASONS,
    TREATED,
    Candidates,
    DayPlan,
)
from huitouke.campaigns.playbook import Playbook
from huitouke.campaigns.tables import columns_of, unique_key
from huitouke.shards import Shard
from huitouke.store.rows import chunks, insert_new, read_frame, upsert
from huitouke.store.schema import (
    campaign_days,
    campaign_entries,
    campaign_plan_shards,
    campaign_waves,
    coupons,
    customers,
    order_lines,
    orders,
)

# A campaign's day row (campaign_days.status): planned, then its messages queued, or failed.
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


# ------------------------------------------------------------------------------ shard candidates


class MissingShards(RuntimeError):
    """The reduce step found shards of the day without staged candidates, or with candidates
    planned on other inputs than the store's."""


def stage_candidates(
    conn: Connection, shard: Shard, candidates: Candidates, now: datetime, inputs: str | None = None
) -> None:
    """Keep one shard's candidates of the day until the reduce step (replacing what an earlier
    run of the same shard staged). ``inputs`` names the inputs they were planned on (the stage-2
    run of the day's segments; None: segments given by the caller)."""
    key = _shard_key(candidates.business_date, shard.count)
    conn.execute(delete(campaign_plan_shards).where(*key, campaign_plan_shards.c.shard == shard.index))
    conn.execute(
        insert(campaign_plan_shards),
        {
            "business_date": candidates.business_date,
            "shard_count": shard.count,
            "shard": shard.index,
            "figures": json.dumps({**candidates.figures(), "inputs": inputs}, sort_keys=True),
            "entries": _parquet(candidates.entries, CANDIDATE_ENTRY_COLUMNS),
            "waves": _parquet(candidates.waves, CANDIDATE_WAVE_COLUMNS),
            "staged_at": now,
        },
    )


def staged_candidates(conn: Connection, day: date, count: int, inputs: str | None = None) -> list[Candidates]:
    """The staged candidates of every shard of ``count`` for ``day``, by shard; raises
    :class:`MissingShards` naming the shards that staged nothing, or (``inputs`` given) that
    staged candidates planned on other inputs."""
    s = campaign_plan_shards.c
    rows = conn.execute(
        select(s.shard, s.figures, s.entries, s.waves).where(*_shard_key(day, count)).order_by(s.shard)
    ).all()
    figures = {r.shard: json.loads(r.figures) for r in rows}
    missing = sorted(set(range(count)) - set(figures))
    if missing:
        names = ", ".join(Shard(i, count).label() for i in missing)
        raise MissingShards(f"planning candidates of {day} are missing for {names}: run those shards first")
    stale = [i for i, f in figures.items() if inputs is not None and f.get("inputs") not in (None, inputs)]
    if stale:
        names = ", ".join(Shard(i, count).label() for i in stale)
        raise MissingShards(
            f"planning candidates of {day} for {names} were planned on earlier segments (stage 2 ran "
            "again since): run those shards again"
        )
    return [
        Candidates.of(
            figures[r.shard],
            _frame(r.entries, CANDIDATE_ENTRY_COLUMNS),
            _frame(r.waves, CANDIDATE_WAVE_COLUMNS),
        )
        for r in rows
    ]


def drop_staged(conn: Connection, day: date) -> None:
    """Forget the staged candidates of ``day`` and of every day before it (any shard count)."""
    conn.execute(delete(campaign_plan_shards).where(campaign_plan_shards.c.business_date <= day))


def _shard_key(day: date, count: int) -> tuple[Any, ...]:
    s = campaign_plan_shards.c
    return (s.business_date == day, s.shard_count == count)


def _parquet(frame: pd.DataFrame, columns: Sequence[str]) -> bytes:
    """A candidate frame as Parquet bytes."""
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(frame[list(columns)], preserve_index=False), sink)
    return sink.getvalue()


def _frame(data: bytes, columns: Sequence[str]) -> pd.DataFrame:
    """A candidate frame back from Parquet: text columns as objects with None for missing, as
    :func:`huitouke.campaigns.plan.plan_candidates` makes them."""
    frame = pq.read_table(io.BytesIO(data)).to_pandas()
    for column in columns:
        values = frame[column]
        if not (pd.api.types.is_integer_dtype(values.dtype) or pd.api.types.is_bool_dtype(values.dtype)):
            array = values.to_numpy(dtype=object, copy=True)
            missing = pd.isna(array)
            if missing.any():
                array[missing] = None
            frame[column] = pd.Series(array, dtype=object)
    return frame[list(columns)]


def write_plan(conn: Connection, plan: DayPlan, issued: pd.DataFrame, now: datetime) -> None:
    """Store a day's plan: entries (upserted), waves and coupons (inserted once), the summary."""
    entry_rows = _records(plan.entries.assign(planned_at=now), (*ENTRY_COLUMNS, "planned_at"))
    upsert(conn, campaign_entries, entry_rows, unique_key(campaign_entries))
    insert_new(
        conn,
        campaign_waves,
        _records(plan.waves.assign(planned_at=now), (*STORED_WAVE_COLUMNS, "planned_at")),
    )
    insert_new(conn, coupons, _records(issued.assign(created_at=now), (*COUPON_COLUMNS, "created_at")))
    upsert(conn, campaign_days, _day_rows(plan, now), unique_key(campaign_days))


def _day_rows(plan: DayPlan, now: datetime) -> list[dict[str, Any]]:
    """The ``campaign_days`` rows of a plan: its summary's headline figures, all of them in
    ``figures`` (JSON), status planned."""
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
    return rows


def read_day_summary(conn: Connection, day: date) -> pd.DataFrame:
    """The stored plan summary of a day: one row per campaign, highest priority first."""
    columns = columns_of(campaign_days)
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
