"""Intake's store edge: the stored orders, customers and quarantine keys a batch names, and the
writes of one load (customers, new orders and their lines, status and refund moves, quarantine
rows, the run's row). DataFrames in and out; what to write is decided in
:mod:`huitouke.intake.load`.

Everything goes through the store's bulk paths (:mod:`huitouke.store.rows`): the rows a batch
names are read in one statement as Arrow (SQLite's native reader, PostgreSQL's ``COPY``), and
written column by column in key order (a few rows: SQLite one ``executemany`` of plain tuples per
table, PostgreSQL ``COPY``; many: :class:`~huitouke.store.rows.BulkInserts`, SQLite through a
scratch file and ``INSERT ... SELECT``, each table copied in a worker thread while the next is
prepared; ``UPDATE ... FROM`` a temporary table for the moves on PostgreSQL), never one Python
dict or SQLAlchemy parameter set per row. A first load on PostgreSQL makes the orders' indexes
and the lines' foreign key after its rows (:func:`inserting`).

**Concurrency.** :func:`lock_intake` makes a load's transaction the only writer of ``orders`` (the
segments run takes the same lock): a second intake of the same day waits for the first to commit,
then reads its orders as stored and finds them unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from datetime import date, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from sqlalchemy import Connection, func, insert, select

from huitouke import records
from huitouke.store import rows
from huitouke.store.rows import ArrowSelect
from huitouke.store.schema import customers, intake_runs, order_lines, orders, quarantine

_TS = pa.timestamp("us")
# The store's columns a load reads or writes, in the Arrow types they travel in.
_ORDER_TYPES: dict[str, pa.DataType] = {
    "order_id": pa.string(),
    "customer_id": pa.string(),
    "paid_at": _TS,
    "business_date": pa.date32(),
    "status": pa.string(),
    "amount_cents": pa.int64(),
    "refunded_cents": pa.int64(),
    "acquisition_source": pa.string(),
    "coupon_code": pa.string(),
    "source_updated_at": _TS,
    "content_hash": pa.string(),
    "state_applied_at": _TS,
    "folded_as_paid": pa.bool_(),
    "source": pa.string(),
    "loaded_at": _TS,
    "status_changed_at": _TS,
}
_LINE_TYPES: dict[str, pa.DataType] = {
    "order_id": pa.string(),
    "line_no": pa.int64(),
    "sku": pa.string(),
    "product_name": pa.string(),
    "category": pa.string(),
    "quantity": pa.int64(),
    "amount_cents": pa.int64(),
}
_CUSTOMER_TYPES: dict[str, pa.DataType] = {
    "customer_id": pa.string(),
    "name": pa.string(),
    "phone": pa.string(),
    "email": pa.string(),
    "birthday": pa.date32(),
    "sms_opt_out": pa.bool_(),
    "email_opt_out": pa.bool_(),
    "first_seen_at": _TS,
    "updated_at": _TS,
}

# What the sort needs of a stored order: what may not change, its content hash, status and refund,
# and whether (and how) the customer state has counted it.
STORED_ORDER_COLUMNS: tuple[str, ...] = (
    "order_id",
    *records.FIXED_ORDER_FIELDS,
    "status",
    "refunded_cents",
    "content_hash",
    "state_applied_at",
    "folded_as_paid",
)
STORED_CUSTOMER_COLUMNS: tuple[str, ...] = ("customer_id", *records.CONTACT_FIELDS)
# The orders' columns a new order is inserted with (state_applied_at, folded_as_paid: null).
_NEW_ORDER_COLUMNS = (*records.ORDER_FIELDS, "refunded_cents", "source", "loaded_at", "status_changed_at")
MOVE_COLUMNS: tuple[str, ...] = (
    "order_id",
    "status",
    "source_updated_at",
    "refunded_cents",
    "folded_as_paid",
)

_STORED_ORDERS = ArrowSelect(orders.name, {c: _ORDER_TYPES[c] for c in STORED_ORDER_COLUMNS})
_STORED_CUSTOMERS = ArrowSelect(customers.name, {c: _CUSTOMER_TYPES[c] for c in STORED_CUSTOMER_COLUMNS})
_QUARANTINE_KEYS = ArrowSelect(quarantine.name, {"row_key": pa.string()})
_SOURCE_REF_LENGTH = quarantine.c.source_ref.type.length


def lock_intake(conn: Connection) -> None:
    """Make this transaction the only writer of ``orders`` until it ends (see the module doc).
    Call first in the transaction."""
    rows.lock_writers(conn, orders)


def arrow_table(frame: pd.DataFrame, types: Mapping[str, pa.DataType], **constants: Any) -> pa.Table:
    """``frame``'s columns named in ``types`` (and ``constants``, one value for every row) as an
    Arrow table in those types: text as strings, times as naive microseconds, dates as dates."""
    arrays, names = [], []
    for name, type_ in types.items():
        if name in constants:
            arrays.append(pa.repeat(pa.scalar(constants[name], type_), len(frame)))
        elif name in frame.columns:
            arrays.append(_arrow_column(frame[name], type_))
        else:
            continue
        names.append(name)
    return pa.Table.from_arrays(arrays, names=names)


def _arrow_column(series: pd.Series, type_: pa.DataType) -> pa.Array:
    if pa.types.is_date(type_) and pd.api.types.is_datetime64_any_dtype(series.dtype):
        series = series.dt.normalize()
    array = pa.array(series, from_pandas=True)
    if isinstance(array, pa.ChunkedArray):  # pragma: no cover - arrow-backed columns
        array = array.combine_chunks()
    if pa.types.is_integer(type_) and pa.types.is_floating(array.type):
        return array.cast(type_, safe=True)
    return array.cast(type_, safe=False)


def _frame(table: pa.Table) -> pd.DataFrame:
    """An Arrow table read from the store as pandas: text as objects, dates as datetime.date."""
    return table.to_pandas(date_as_object=True, types_mapper=None)


def _read_by_ids(
    conn: Connection, select_: ArrowSelect, column: str, ids: Iterable[Any], table: Any
) -> pd.DataFrame:
    """The stored rows of ``select_`` whose ``column`` is one of ``ids`` (none at all read when
    the table is empty: a first load)."""
    wanted = pd.unique(np.asarray(list(ids) if not isinstance(ids, pd.Series) else ids, dtype=object))
    if len(wanted) == 0 or not rows.has_rows(conn, table):
        return _frame(select_.empty())
    return _frame(rows.read_arrow_by_ids(conn, select_, column, list(wanted), committed=True))


def read_orders(conn: Connection, order_ids: Iterable[str]) -> pd.DataFrame:
    """The stored orders among ``order_ids`` (STORED_ORDER_COLUMNS), one row each."""
    return _read_by_ids(conn, _STORED_ORDERS, "order_id", order_ids, orders)


def read_customers(conn: Connection, customer_ids: Iterable[str]) -> pd.DataFrame:
    """The stored customers among ``customer_ids`` with their contact fields (STORED_CUSTOMER_COLUMNS)."""
    return _read_by_ids(conn, _STORED_CUSTOMERS, "customer_id", customer_ids, customers)


def read_quarantine_keys(conn: Connection, row_keys: Iterable[str]) -> set[str]:
    """The quarantine row keys among ``row_keys`` that an earlier run stored."""
    return set(_read_by_ids(conn, _QUARANTINE_KEYS, "row_key", row_keys, quarantine)["row_key"])


def insert_customers(bulk: rows.BulkInserts, new: pd.DataFrame, now: datetime) -> None:
    """Insert the new customers (opted in), in key order."""
    if len(new):
        table = arrow_table(
            new, _CUSTOMER_TYPES, sms_opt_out=False, email_opt_out=False, first_seen_at=now, updated_at=now
        )
        bulk.insert(customers, _in_key_order(table, "customer_id"))


def _in_key_order(table: pa.Table, *key: str) -> pa.Table:
    """Rows sorted by their primary key: appended to the key's B-tree instead of inserted all over
    it (SQLite and PostgreSQL alike; 1.5x faster for a first load)."""
    return table.sort_by([(name, "ascending") for name in key])


def update_customers(conn: Connection, changed: pd.DataFrame, now: datetime) -> None:
    """Set the contact fields ``changed`` gives (customer_id and CONTACT_FIELDS; None: keep the
    stored value) of stored customers."""
    if len(changed):
        table = arrow_table(changed, {c: _CUSTOMER_TYPES[c] for c in STORED_CUSTOMER_COLUMNS})
        table = _in_key_order(table, "customer_id")
        rows.update_arrow(
            conn,
            customers,
            table,
            "customer_id",
            constants={"updated_at": now},
            keep_stored=records.CONTACT_FIELDS,
        )


def insert_orders(
    bulk: rows.BulkInserts, new: pd.DataFrame, lines: pd.DataFrame, source: str, now: datetime
) -> None:
    """Insert new orders (from ``source``, loaded ``now``) and their lines, in key order."""
    if not len(new):
        return
    constants = {"source": source, "loaded_at": now, "status_changed_at": now}
    table = arrow_table(new, {c: _ORDER_TYPES[c] for c in _NEW_ORDER_COLUMNS}, **constants)
    bulk.insert(orders, _in_key_order(table, "order_id"))
    if len(lines):
        bulk.insert(order_lines, _in_key_order(arrow_table(lines, _LINE_TYPES), "order_id", "line_no"))


def bulk_inserts(conn: Connection) -> AbstractContextManager[rows.BulkInserts]:
    """The inserts of the load run on ``conn`` (rows.bulk_inserts): enter before its transaction,
    leave after it (scratch files are detached and deleted then)."""
    return rows.bulk_inserts(conn)


@contextmanager
def inserting(conn: Connection, bulk: rows.BulkInserts, new_rows: int) -> Iterator[rows.BulkInserts]:
    """The block that inserts a load's ``new_rows`` orders and lines through ``bulk``: on a first
    load the secondary indexes and the lines' foreign key are made after the rows where that is
    faster (rows.indexes_rebuilt: PostgreSQL, empty tables); every insert is done when it ends."""
    with rows.indexes_rebuilt(conn, (orders, order_lines), new_rows), rows.pipelined(bulk):
        yield bulk


def move_orders(conn: Connection, moves: pd.DataFrame, now: datetime) -> None:
    """Move stored orders forward (``moves``: MOVE_COLUMNS: the later status, the larger refund,
    and what the state counted of the order). Stage 2 must fold them into the customer state again,
    knowing what it counted before (``folded_as_paid``)."""
    if len(moves):
        table = _in_key_order(arrow_table(moves, {c: _ORDER_TYPES[c] for c in MOVE_COLUMNS}), "order_id")
        constants = {"status_changed_at": now, "state_applied_at": None}
        rows.update_arrow(conn, orders, table, "order_id", constants=constants)


def insert_quarantine(
    conn: Connection, new_rows: pd.DataFrame, source: str, business_date: date, now: datetime
) -> int:
    """Insert quarantine rows (with their row_key) for ``business_date``; returns how many are new
    (a row_key already stored is skipped)."""
    if not len(new_rows):
        return 0
    columns = ["row_key", "reason", "detail", "order_id", "source_ref", "raw"]
    values = new_rows[columns].astype(object).where(new_rows[columns].notna(), None)
    refs = values["source_ref"].map(lambda ref: (ref or "")[:_SOURCE_REF_LENGTH])
    plain = values.assign(source_ref=refs, business_date=business_date, source=source, quarantined_at=now)
    return rows.insert_new(conn, quarantine, plain.to_dict(orient="records"))


def record_run(conn: Connection, row: dict[str, Any]) -> int:
    """Record an intake in ``intake_runs`` as the next attempt for its day and source (the rows of
    earlier attempts stay: the audit of a re-run or a backfill). Returns the attempt's number."""
    key = (intake_runs.c.business_date == row["business_date"]) & (intake_runs.c.source == row["source"])
    attempt = (conn.scalar(select(func.max(intake_runs.c.attempt)).where(key)) or 0) + 1
    conn.execute(insert(intake_runs).values(**row, attempt=attempt))
    return attempt


def daily_orders_before(conn: Connection, source: str, day: date, days: int) -> list[int]:
    """Orders read by the daily intakes of ``source`` on the ``days`` business days before ``day``
    (the latest attempt of each), oldest first: what a complete day is measured against."""
    runs = intake_runs.c
    found = conn.execute(
        select(runs.business_date, runs.attempt, runs.orders_read)
        .where(runs.source == source)
        .where(runs.business_date < day)
        .where(runs.business_date >= day - timedelta(days=days))
        .where(runs.last_business_date == runs.business_date)
        .order_by(runs.business_date, runs.attempt)
    ).all()
    latest = {row.business_date: int(row.orders_read) for row in found}  # the last attempt wins
    return [latest[d] for d in sorted(latest)]
