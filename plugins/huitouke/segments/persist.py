"""Stage 2 at the store's edge: reading orders and state, writing state, history and KPIs.

The pure functions of this package never touch a database; this module is the only one that
reads or writes ``customer_state``, ``customer_spend``, ``segment_history``, ``segment_kpis`` and
``segment_transitions``, always with bound parameters and in the caller's transaction. It says
what is read and written; how, on each database, is :mod:`huitouke.store.rows`'s business (the
bulk paths: Arrow straight from SQLite's native reader or PostgreSQL's ``COPY``, the ids of a
statement as one array).

Which customers a day touches is recorded on the orders themselves: ``orders.state_applied_at``
is null for an order that intake inserted or whose status it moved, until this stage folds it
into the customer's state. That makes the daily update independent of clocks and run times: an
order loaded late, or a refund of a year-old order, is picked up by the next run.

**Concurrency.** :func:`lock_store` makes the run's transaction the only writer of ``orders`` until
it commits (:func:`huitouke.store.rows.lock_writers`; readers are not blocked). An intake that
wants to write meanwhile waits. Under that lock the orders read are exactly the orders
:func:`mark_folded` stamps, so it stamps them with one statement; without it (other drivers)
orders are stamped by id and only while their status is the one that was read.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import Connection, delete, func, insert, select, update

from huitouke.segments.classify import SEGMENT_COLUMNS
from huitouke.segments.fold import PENDING_COLUMNS, FoldedRows, FoldPlan
from huitouke.segments.history import LABEL_COLUMNS, SegmentChanges, canonical_labels
from huitouke.segments.state import (
    LINE_INPUT_COLUMNS,
    ORDER_INPUT_COLUMNS,
    REFUND_COLUMN,
    SPEND_COLUMNS,
    STATE_COLUMNS,
    empty_spend,
    empty_state,
    string_array,
)
from huitouke.shards import Shard
from huitouke.store import rows
from huitouke.store.rows import ArrowSelect
from huitouke.store.schema import (
    customer_spend,
    customer_state,
    order_lines,
    orders,
    segment_history,
    segment_kpis,
    segment_shard_runs,
    segment_transitions,
)

# More unfolded orders than this (a first load, a large backfill): rebuilding the state from
# every order is cheaper than reading the pending customers' histories one by one.
REBUILD_ABOVE = 500_000

_TS = pa.timestamp("us")
_CAT = pa.dictionary(pa.int32(), pa.string())
_ORDER_TYPES = {
    "order_id": pa.string(),
    "customer_id": pa.string(),
    "paid_at": _TS,
    "business_date": pa.date32(),
    "status": _CAT,
    "amount_cents": pa.int64(),
    "acquisition_source": _CAT,
    REFUND_COLUMN: pa.int64(),
}
_PENDING_TYPES = {**_ORDER_TYPES, "folded_as_paid": pa.bool_()}
# Orders are read with their refund: the state counts a paid order's amount less it.
_ORDER_COLUMNS = (*ORDER_INPUT_COLUMNS, REFUND_COLUMN)
_LINE_TYPES = {"order_id": pa.string(), "category": _CAT, "amount_cents": pa.int64()}
_SPEND_TYPES = {
    "customer_id": pa.string(),
    "category_group": pa.string(),
    "spend_cents": pa.int64(),
    "paid_lines": pa.int64(),
}
_STATE_TYPES = {
    "customer_id": pa.string(),
    "first_paid_at": _TS,
    "last_paid_at": _TS,
    "first_business_date": pa.date32(),
    "last_business_date": pa.date32(),
    "paid_orders": pa.int64(),
    "total_cents": pa.int64(),
    "aov_cents": pa.int64(),
    "main_category_group": pa.string(),
    "acquisition_source": pa.string(),
}
_OPEN_COLUMNS = ("customer_id", "valid_from", *SEGMENT_COLUMNS)
_HISTORY_TYPES = {
    "customer_id": pa.string(),
    "valid_from": pa.date32(),
    "valid_to": pa.date32(),
    "lifecycle": pa.string(),
    "r_score": pa.int64(),
    "f_score": pa.int64(),
    "m_score": pa.int64(),
    "member_tier": pa.string(),
    "value_tier": pa.string(),
    "low_value_acquisition": pa.bool_(),
    "category_group": pa.string(),
}
_HISTORY_TEXT = ("customer_id", "lifecycle", "member_tier", "value_tier", "category_group")

_ORDERS = ArrowSelect(orders.name, {name: _ORDER_TYPES[name] for name in _ORDER_COLUMNS})
_LINES = ArrowSelect(order_lines.name, {name: _LINE_TYPES[name] for name in LINE_INPUT_COLUMNS})
_SPEND = ArrowSelect(customer_spend.name, {name: _SPEND_TYPES[name] for name in SPEND_COLUMNS})
_STATE = ArrowSelect(customer_state.name, {name: _STATE_TYPES[name] for name in STATE_COLUMNS})
# The unfolded orders, through ``ix_orders_unapplied_customer_id``, the partial index of exactly
# these orders (SQLite without statistics would rather scan the business-date index).
_UNAPPLIED_INDEX = "ix_orders_unapplied_customer_id"
_PENDING = ArrowSelect(
    orders.name,
    {name: _PENDING_TYPES[name] for name in (*PENDING_COLUMNS, REFUND_COLUMN)},
    where="state_applied_at IS NULL",
    index=_UNAPPLIED_INDEX,
)


def _to_pandas(table: pa.Table) -> pd.DataFrame:
    """Arrow → pandas: text as ``str``, dictionaries as categoricals, dates and times as
    datetime64[ns], integers as int64."""
    columns: dict[str, Any] = {}
    for name in table.column_names:
        column = table[name]
        if pa.types.is_date(column.type):
            column = column.cast(pa.timestamp("ns"))
        elif pa.types.is_timestamp(column.type) and column.type.unit != "ns":
            column = column.cast(pa.timestamp("ns"))
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            columns[name] = pd.Series(column.to_pandas(), dtype="str")
        else:
            columns[name] = column.to_pandas()
    return pd.DataFrame(columns, copy=False)  # a block per column, not copied into 2-D blocks


def lock_store(conn: Connection) -> bool:
    """Make this transaction the only writer of ``orders`` until it ends (readers go on), its
    reads of rows by id planned as index reads. Call first, before anything else runs in the
    transaction. True when the store was locked (SQLite and PostgreSQL); False with other drivers.
    """
    locked = rows.lock_writers(conn, orders)
    rows.prefer_index_reads(conn)
    return locked


# ------------------------------------------------------------------------------------- orders


def read_pending(
    conn: Connection, max_orders: int | None = None, *, committed: bool = False
) -> pd.DataFrame | None:
    """Every order not folded into the state yet (:data:`~huitouke.segments.fold.PENDING_COLUMNS`,
    dtypes as :func:`read_orders`, ``folded_as_paid`` as pandas ``boolean``), or None when there
    are more than ``max_orders`` (a rebuild is cheaper then). ``committed``: the transaction has
    written nothing yet (see :func:`huitouke.store.rows.read_arrow`)."""
    query = _PENDING if max_orders is None else dataclasses.replace(_PENDING, limit=max_orders + 1)
    table = rows.read_arrow(conn, query, committed=committed)
    if max_orders is not None and table.num_rows > max_orders:
        return None
    frame = _to_pandas(table)
    frame["folded_as_paid"] = frame["folded_as_paid"].astype("boolean")
    return frame


def read_lines(conn: Connection, order_ids: Sequence[str], *, committed: bool = False) -> pd.DataFrame:
    """The lines of the given orders, as :func:`read_orders` gives them. ``committed``: as for
    :func:`read_pending`."""
    return _line_frame(_lines_of(conn, list(order_ids), committed=committed))


def _lines_of(conn: Connection, order_ids: list[str], *, committed: bool = False) -> pa.Table:
    """The lines of the given orders (by the lines' primary key)."""
    return rows.read_arrow_by_ids(conn, _LINES, "order_id", order_ids, committed=committed)


def _line_frame(table: pa.Table) -> pd.DataFrame:
    frame = _to_pandas(table)
    frame["amount_cents"] = frame["amount_cents"].fillna(0).astype("int64")
    return frame


def read_orders(
    conn: Connection, customer_ids: Sequence[str] | None = None, *, committed: bool = False
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """All orders (any status) and their lines, of the given customers or of everyone.

    Ids and text as ``str``; status, source and category as categoricals; times and dates as
    datetime64[ns]; amounts as int64 (a line without an amount counts 0).
    """
    order_table, line_table = read_order_tables(conn, customer_ids, committed=committed)
    order_frame = _to_pandas(order_table)
    del order_table  # the Arrow copy goes before the lines are converted
    line_frame = _line_frame(line_table)
    return order_frame, line_frame


def read_order_tables(
    conn: Connection, customer_ids: Sequence[str] | None = None, *, committed: bool = False
) -> tuple[pa.Table, pa.Table]:
    """:func:`read_orders` as Arrow tables. ``committed``: as for :func:`read_pending`."""
    if customer_ids is None:
        return (
            rows.read_arrow(conn, _ORDERS, committed=committed),
            rows.read_arrow(conn, _LINES, committed=committed),
        )
    order_table = rows.read_arrow_by_ids(
        conn, _ORDERS, "customer_id", list(customer_ids), committed=committed
    )
    # The lines by the orders' ids (primary key): joined to orders by customer, a planner may
    # hash-join every order line instead.
    return order_table, _lines_of(conn, order_table["order_id"].to_pylist(), committed=committed)


def mark_applied(conn: Connection, order_ids: Sequence[str], now: datetime) -> int:
    """Record that exactly these orders (the ones just read and folded in) are in the state.

    Marking by order id, not by customer, means an order committed by another writer after the
    read is left unmarked and picked up by the next run, never stamped without being counted.
    """
    ids = [str(i) for i in order_ids]
    stamp = {"state_applied_at": now, "folded_as_paid": None}
    rows.update_by_ids(conn, orders, stamp, "order_id", ids, where="state_applied_at IS NULL")
    return len(ids)


def mark_folded(conn: Connection, until: date, now: datetime) -> int:
    """Stamp every unfolded order paid on or before ``until`` (or without a business date): with
    :func:`lock_store` held, exactly the orders this run read and folded in. Returns the count.

    Through the partial index of unfolded orders (SQLite is told so; it would otherwise walk the
    business-date index over every order: 1.5 s at 10 million)."""
    return rows.update_where(
        conn,
        orders,
        {"state_applied_at": now, "folded_as_paid": None},
        "state_applied_at IS NULL AND (business_date <= %s OR business_date IS NULL)",
        [until],
        index=_UNAPPLIED_INDEX,
    )


def count_unfolded(conn: Connection, until: date) -> int:
    """The orders :func:`mark_folded` would stamp for ``until``: unfolded, paid on or before it or
    without a business date (0 once every customer shard has folded the day)."""
    due = (orders.c.business_date <= until) | orders.c.business_date.is_(None)
    query = select(func.count()).select_from(orders).where(orders.c.state_applied_at.is_(None)).where(due)
    return int(conn.scalar(query) or 0)


# -------------------------------------------------------------------------------------- state


def stored_customers(conn: Connection, *, committed: bool = False) -> pa.Array:
    """Every customer with a state or a spend row (ids as Arrow strings, unsorted)."""
    ids = [
        rows.read_arrow(conn, ArrowSelect(table.name, {"customer_id": pa.string()}), committed=committed)[
            "customer_id"
        ]
        for table in (customer_state, customer_spend)
    ]
    return pc.unique(pa.chunked_array([*ids[0].chunks, *ids[1].chunks], type=pa.string()))


def read_state(conn: Connection, *, committed: bool = False) -> pd.DataFrame:
    """The stored customer state, with the dtypes :func:`~huitouke.segments.state.build_state` gives.
    ``committed``: as for :func:`read_pending`."""
    table = rows.read_arrow(conn, _STATE, committed=committed)
    if table.num_rows == 0:
        return empty_state()
    table = table.take(pc.sort_indices(table["customer_id"]))
    return _to_pandas(table)


def replace_state(conn: Connection, state: pd.DataFrame, customer_ids: Sequence[str] | None) -> None:
    """Replace the state rows of ``customer_ids`` (None: every row) by ``state``'s rows, which
    hold every row those customers have now (a customer without one leaves the state)."""
    if customer_ids is None:
        conn.execute(delete(customer_state))
    else:
        rows.delete_by_ids(conn, customer_state, "customer_id", [str(i) for i in customer_ids])
    rows.insert_arrow(conn, customer_state, _state_table(state))


def read_spend(
    conn: Connection, customer_ids: Sequence[str] | None = None, *, committed: bool = False
) -> pd.DataFrame:
    """The spend rows (:data:`~huitouke.segments.state.SPEND_COLUMNS`) of the given customers
    (None: everyone), sorted by customer and group. ``committed``: as for :func:`read_pending`."""
    if customer_ids is None:
        table = rows.read_arrow(conn, _SPEND, committed=committed)
    else:
        table = rows.read_arrow_by_ids(conn, _SPEND, "customer_id", list(customer_ids), committed=committed)
    if table.num_rows == 0:
        return empty_spend()
    table = table.sort_by([("customer_id", "ascending"), ("category_group", "ascending")])
    return _to_pandas(table)


def replace_spend(conn: Connection, spend: pd.DataFrame, customer_ids: Sequence[str] | None) -> None:
    """Write the spend rows of ``customer_ids`` (None: all) from ``spend``, which holds every spend
    row of those customers (a customer without rows in it has none left)."""
    if customer_ids is None:
        conn.execute(delete(customer_spend))
    else:
        rows.delete_by_ids(conn, customer_spend, "customer_id", [str(i) for i in customer_ids])
    rows.insert_arrow(conn, customer_spend, _spend_table(spend))


def write_folded(conn: Connection, folded: FoldedRows, plan: FoldPlan) -> None:
    """Write what :func:`~huitouke.segments.fold.fold_rows` changed: the touched customers' state
    rows, and the spend rows to write (those of :attr:`FoldPlan.replaced` customers replaced whole,
    as a refund may empty a group; other customers' rows only grow, and are upserted)."""
    rows.delete_by_ids(conn, customer_state, "customer_id", list(plan.recomputed))
    rows.upsert_arrow(conn, customer_state, _state_table(folded.rows), ("customer_id",))
    rows.delete_by_ids(conn, customer_spend, "customer_id", plan.replaced)
    rows.upsert_arrow(
        conn, customer_spend, _spend_table(folded.spend_changed), ("customer_id", "category_group")
    )


def _spend_table(spend: pd.DataFrame) -> pa.Table:
    return pa.Table.from_arrays(
        [
            string_array(spend["customer_id"]),
            string_array(spend["category_group"]),
            pa.array(spend["spend_cents"].to_numpy(dtype=np.int64)),
            pa.array(spend["paid_lines"].to_numpy(dtype=np.int64)),
        ],
        names=list(SPEND_COLUMNS),
    )


def _state_table(state: pd.DataFrame) -> pa.Table:
    """State rows as Arrow, in the store's column types (times to the microsecond)."""
    arrays = []
    for name, type_ in _STATE_TYPES.items():
        column = state[name]
        if type_ == _TS or pa.types.is_date(type_):
            array = pa.array(column.to_numpy(dtype="datetime64[ns]")).cast(_TS)
            arrays.append(array.cast(pa.date32()) if pa.types.is_date(type_) else array)
        elif pa.types.is_integer(type_):
            arrays.append(pa.array(column.to_numpy(dtype=np.int64)))
        else:
            arrays.append(string_array(column))
    return pa.Table.from_arrays(arrays, names=list(_STATE_TYPES))


# ------------------------------------------------------------------------------------ history


def read_open_history(
    conn: Connection, *, committed: bool = False, rewinding: date | None = None
) -> pd.DataFrame:
    """The open segment rows (``valid_to`` null): customer_id, valid_from and the segment, sorted
    by customer. ``committed``: as for :func:`read_pending`. ``rewinding``: the rows that will be
    open once :func:`rewind_history` has rewound that day, read before it does (those opened
    before the day and not closed before it)."""
    types = {name: _HISTORY_TYPES[name] for name in _OPEN_COLUMNS}
    if rewinding is None:
        query = ArrowSelect(segment_history.name, types, where="valid_to IS NULL")
    else:
        where = "valid_from < %s AND (valid_to IS NULL OR valid_to >= %s)"
        query = ArrowSelect(segment_history.name, types, where=where, params=(rewinding, rewinding))
    table = rows.read_arrow(conn, query, committed=committed)
    table = table.take(pc.sort_indices(table["customer_id"]))
    return _open_labels(_history_dtypes(_to_pandas(table)))


def _open_labels(frame: pd.DataFrame) -> pd.DataFrame:
    """Open rows hold their labels as categoricals (:func:`~huitouke.segments.history.canonical_labels`)."""
    for column in LABEL_COLUMNS:
        frame[column] = canonical_labels(frame[column])
    return frame


def _history_dtypes(frame: pd.DataFrame) -> pd.DataFrame:
    for column in ("r_score", "f_score", "m_score"):
        frame[column] = frame[column].astype("int8")
    frame["low_value_acquisition"] = frame["low_value_acquisition"].astype(bool)
    for column in _HISTORY_TEXT:
        frame[column] = frame[column].astype("str")
    return frame


def rewind_history(conn: Connection, day: date) -> None:
    """Undo what runs for ``day`` and later wrote to the history, so ``day`` can be computed again."""
    conn.execute(delete(segment_history).where(segment_history.c.valid_from >= day))
    conn.execute(update(segment_history).where(segment_history.c.valid_to >= day).values(valid_to=None))
    conn.execute(delete(segment_transitions).where(segment_transitions.c.business_date >= day))
    conn.execute(delete(segment_kpis).where(segment_kpis.c.business_date >= day))


def write_history(conn: Connection, changes: SegmentChanges) -> None:
    """Close the rows that ended (each customer's open row, in one statement: through the
    customer index) and open the new ones."""
    day = changes.business_date
    closing = changes.close["customer_id"].astype("str").tolist()
    rows.update_by_ids(
        conn,
        segment_history,
        {"valid_to": day},
        "customer_id",
        closing,
        where="valid_to IS NULL",
        index="ix_segment_history_customer_id_valid_from",
    )
    if len(changes.open):
        rows.insert_arrow(conn, segment_history, _history_table(changes.open, day))


def _history_table(opened: pd.DataFrame, day: date) -> pa.Table:
    n = len(opened)
    arrays = {
        "customer_id": string_array(opened["customer_id"]),
        "valid_from": pa.array(np.full(n, np.datetime64(day, "D"))).cast(pa.date32()),
        "valid_to": pa.nulls(n, pa.date32()),
    }
    for column in SEGMENT_COLUMNS:
        values = opened[column]
        if column in _HISTORY_TEXT:
            arrays[column] = string_array(values)
        elif column == "low_value_acquisition":
            arrays[column] = pa.array(values.to_numpy(dtype=bool))
        else:
            arrays[column] = pa.array(values.to_numpy(dtype=np.int64))
    return pa.table(arrays)


def open_rows_after(
    open_rows: pd.DataFrame,
    segments: pd.DataFrame,
    changes: SegmentChanges,
    open_row_of: np.ndarray | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The open rows once ``changes`` are written, as :func:`read_open_history` would read them, and
    the rows they close (what a rewind of the day opens again).

    After the day every customer of ``segments`` has exactly one open row, holding the day's
    segment (an unchanged row holds equal values), opened on the business date or, unchanged, when
    it was opened. ``open_row_of``: as for :func:`~huitouke.segments.history.diff_segments`."""
    today = string_array(segments["customer_id"])
    before = string_array(open_rows["customer_id"])
    opened = string_array(changes.open["customer_id"])
    if open_row_of is None:
        position = pc.fill_null(pc.index_in(today, value_set=before), -1).to_numpy(zero_copy_only=False)
    else:
        position = np.asarray(open_row_of, dtype=np.int64)
    fresh = pc.is_in(today, value_set=opened).to_numpy(zero_copy_only=False) | (position < 0)
    if len(open_rows):
        since = open_rows["valid_from"].to_numpy(dtype="datetime64[ns]")[np.maximum(position, 0)]
    else:
        since = np.empty(len(position), dtype="datetime64[ns]")
    since[fresh] = np.datetime64(changes.business_date, "ns")
    after = segments.loc[:, ["customer_id", *SEGMENT_COLUMNS]].reset_index(drop=True)
    after.insert(1, "valid_from", since)
    closing = pc.is_in(before, value_set=string_array(changes.close["customer_id"])).to_numpy(
        zero_copy_only=False
    )
    closed = open_rows.loc[closing, list(_OPEN_COLUMNS)]
    return _open_dtypes(after), _open_dtypes(closed)


def _open_dtypes(frame: pd.DataFrame) -> pd.DataFrame:
    """The dtypes :func:`read_open_history` gives, converting only what differs."""
    frame = frame.reset_index(drop=True)
    wanted = {"customer_id": "str", "valid_from": "datetime64[ns]", "low_value_acquisition": "bool"}
    wanted |= {column: "int8" for column in ("r_score", "f_score", "m_score")}
    for column, dtype in wanted.items():
        if str(frame[column].dtype) != dtype:
            frame[column] = frame[column].astype(dtype)
    return _open_labels(frame)


def segments_on(conn: Connection, day: date, customer_ids: Sequence[str] | None = None) -> pd.DataFrame:
    """Every customer's segment on a past (or the current) business date, from the history."""
    columns = ("customer_id", "valid_from", "valid_to", *SEGMENT_COLUMNS)
    query = (
        select(*(segment_history.c[c] for c in columns))
        .where(segment_history.c.valid_from <= day)
        .where(segment_history.c.valid_to.is_(None) | (segment_history.c.valid_to > day))
        .order_by(segment_history.c.customer_id)
    )
    if customer_ids is not None:
        query = query.where(segment_history.c.customer_id.in_(list(customer_ids)))
    result = conn.execute(query)
    return _history_dtypes(pd.DataFrame(result.fetchall(), columns=list(columns)))


# --------------------------------------------------------------------------------------- KPIs


@dataclass(frozen=True)
class LatestRun:
    """The latest stored run: its business date and what identifies it."""

    business_date: date
    fingerprint: str
    computed_at: datetime
    customers: int


def latest_run(conn: Connection) -> LatestRun | None:
    """The latest business date with stored KPIs (None: no run yet)."""
    latest = conn.scalar(select(func.max(segment_kpis.c.business_date)))
    if latest is None:
        return None
    row = conn.execute(
        select(segment_kpis.c.state_fingerprint, segment_kpis.c.computed_at, segment_kpis.c.customers).where(
            segment_kpis.c.business_date == latest
        )
    ).one()
    return LatestRun(latest, row.state_fingerprint, row.computed_at, int(row.customers))


def last_run(conn: Connection) -> tuple[date | None, str | None]:
    """The latest business date with stored KPIs, and the state fingerprint it used."""
    run = latest_run(conn)
    return (None, None) if run is None else (run.business_date, run.fingerprint)


def write_day(
    conn: Connection,
    day: date,
    kpis: dict[str, Any],
    changes: SegmentChanges,
    fingerprint: str,
    now: datetime,
) -> None:
    """Store the day's KPIs and lifecycle transitions (replacing any earlier result for the day)."""
    conn.execute(delete(segment_kpis).where(segment_kpis.c.business_date == day))
    conn.execute(delete(segment_transitions).where(segment_transitions.c.business_date == day))
    conn.execute(
        insert(segment_kpis).values(
            business_date=day,
            customers=int(kpis["customers"]),
            paid_orders=int(kpis["paid_orders"]),
            gmv_cents=int(kpis["gmv_cents"]),
            churned_customers=int(kpis["churned_customers"]),
            churn_rate=float(kpis["churn_rate"]),
            repeat_customers=int(kpis["repeat_customers"]),
            repeat_rate=float(kpis["repeat_rate"]),
            history_rows_closed=len(changes.close),
            history_rows_opened=len(changes.open),
            state_fingerprint=fingerprint,
            figures=json.dumps(kpis, ensure_ascii=False, default=_json_default),
            computed_at=now,
        )
    )
    transitions = [
        {"business_date": day, "from_lifecycle": a, "to_lifecycle": b, "customers": n}
        for (a, b), n in changes.transition_counts().items()
        if n
    ]
    if transitions:
        conn.execute(insert(segment_transitions), transitions)


# ------------------------------------------------------------------------------- shard runs


def record_shard_run(
    conn: Connection, day: date, shard: Shard, fingerprint: str, customers: int, folded: int, now: datetime
) -> None:
    """Record that ``shard`` folded its customers' orders for ``day`` (replacing an earlier try's row)."""
    key = (
        (segment_shard_runs.c.business_date == day)
        & (segment_shard_runs.c.shard_count == shard.count)
        & (segment_shard_runs.c.shard_index == shard.index)
    )
    conn.execute(delete(segment_shard_runs).where(key))
    conn.execute(
        insert(segment_shard_runs).values(
            business_date=day,
            shard_count=shard.count,
            shard_index=shard.index,
            state_fingerprint=fingerprint,
            customers_recomputed=customers,
            orders_folded=folded,
            computed_at=now,
        )
    )


def shards_run(conn: Connection, day: date, count: int, fingerprint: str) -> tuple[set[int], int]:
    """The shard indexes of ``count`` recorded for ``day`` by this state definition, and the
    customers they recomputed."""
    result = conn.execute(
        select(segment_shard_runs.c.shard_index, segment_shard_runs.c.customers_recomputed)
        .where(segment_shard_runs.c.business_date == day)
        .where(segment_shard_runs.c.shard_count == count)
        .where(segment_shard_runs.c.state_fingerprint == fingerprint)
    ).all()
    return {int(r.shard_index) for r in result}, sum(int(r.customers_recomputed) for r in result)


def any_shard_run(conn: Connection) -> bool:
    """Whether a shard's run is recorded since the last single-transaction run cleared them."""
    return conn.scalar(select(segment_shard_runs.c.business_date).limit(1)) is not None


def clear_shard_runs(conn: Connection) -> None:
    """A single-transaction run: the state is wholly its own again."""
    conn.execute(delete(segment_shard_runs))


def stored_history_counts(conn: Connection, day: date) -> tuple[int, int]:
    """The history rows the stored run of ``day`` closed and opened."""
    row = conn.execute(
        select(segment_kpis.c.history_rows_closed, segment_kpis.c.history_rows_opened).where(
            segment_kpis.c.business_date == day
        )
    ).one()
    return int(row.history_rows_closed), int(row.history_rows_opened)


def stored_kpis(conn: Connection, day: date) -> dict[str, Any] | None:
    figures = conn.scalar(select(segment_kpis.c.figures).where(segment_kpis.c.business_date == day))
    return json.loads(figures) if figures else None


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
