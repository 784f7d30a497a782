"""Stage 2 at the store's edge: reading orders and state, writing state, history and KPIs.

The pure functions of this package never touch a database; this module is the only one that
reads or writes ``customer_state``, ``segment_history``, ``segment_kpis`` and
``segment_transitions``, always with bound parameters and in the caller's transaction.

Which customers a day touches is recorded on the orders themselves: ``orders.state_applied_at``
is null for an order that intake inserted or whose status it moved, until this stage folds it
into the customer's state. That makes the daily update independent of clocks and run times: an
order loaded late, or a refund of a year-old order, is picked up by the next run.

**Speed.** At a million customers the daily run moves a few hundred thousand rows in and a
hundred thousand out, and a rebuild reads every order and line, so the bulk paths bypass
SQLAlchemy's row objects (about 5 µs a row) on the two stores huitouke supports:

- SQLite: the DB-API cursor's plain tuples, turned into Arrow arrays column by column (dates
  and times, stored as ISO text, are parsed by Arrow in one vectorised cast); writes by
  ``executemany`` with values in exactly SQLAlchemy's storage format;
- PostgreSQL: ``COPY (SELECT ...) TO STDOUT`` read by pyarrow's CSV reader, ``COPY ... FROM
  STDIN`` for inserts, ``= ANY(%s)`` with an array parameter instead of chunked ``IN`` lists or one
  statement per row. Every value is a bound parameter (psycopg2 binds on the client, ``mogrify``
  is the same binding made visible for ``COPY``, which takes no parameters itself).

Other databases go through SQLAlchemy Core as before (correct, slower).

**Concurrency.** :func:`lock_store` makes the run's transaction the only writer of ``orders`` until
it commits (PostgreSQL ``LOCK TABLE orders IN SHARE ROW EXCLUSIVE MODE``, SQLite ``BEGIN
IMMEDIATE``; readers are not blocked). An intake that wants to write meanwhile waits. Under that
lock the orders read are exactly the orders :func:`mark_folded` stamps, so it stamps them with one
statement; without it (other databases) orders are stamped by id and only while their status is
the one that was read.
"""

from __future__ import annotations

import io
import json
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from sqlalchemy import Connection, bindparam, delete, func, insert, or_, select, text, update

from huitouke.pii import get_logger
from huitouke.segments.classify import SEGMENT_COLUMNS
from huitouke.segments.fold import PENDING_COLUMNS, FoldedRows, FoldPlan
from huitouke.segments.history import LABEL_COLUMNS, SegmentChanges, canonical_labels
from huitouke.segments.state import (
    LINE_INPUT_COLUMNS,
    ORDER_INPUT_COLUMNS,
    SPEND_COLUMNS,
    STATE_COLUMNS,
    empty_spend,
    empty_state,
    string_array,
)
from huitouke.store.schema import (
    customer_spend,
    customer_state,
    order_lines,
    orders,
    segment_history,
    segment_kpis,
    segment_transitions,
)

log = get_logger(__name__)

_CHUNK = 900  # bound parameters per IN (...) list: under SQLite's and every driver's limit
_FETCH = 250_000  # rows per fetchmany from a DB-API cursor
_SPOOL = 64 * 1024**2  # COPY output kept in memory up to this size, then in a temporary file
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
}
_PENDING_TYPES = {**_ORDER_TYPES, "folded_as_paid": pa.bool_()}
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


def _chunks(values: Sequence[Any], size: int = _CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _kind(conn: Connection) -> str:
    """``sqlite``, ``postgresql`` (the bulk paths) or ``other`` (SQLAlchemy Core)."""
    name = conn.dialect.name
    if name == "sqlite":
        return "sqlite"
    if name == "postgresql" and conn.dialect.driver == "psycopg2":
        return "postgresql"
    return "other"


def _cursor(conn: Connection) -> Any:
    """A DB-API cursor on the connection's own DB-API connection: the same transaction."""
    return conn.connection.dbapi_connection.cursor()


# ----------------------------------------------------------------------------- reading as Arrow


def _arrow(values: Sequence[Any], type_: pa.DataType) -> pa.Array:
    """One fetched column (plain Python values) as an Arrow array of ``type_``.

    ISO text (SQLite's dates and times) is parsed by Arrow's cast; dictionary types are encoded."""
    if pa.types.is_dictionary(type_):
        return _arrow(values, type_.value_type).dictionary_encode()
    array = pa.array(values, from_pandas=True)
    return array if array.type == type_ else array.cast(type_)


def _rows_table(rows: Iterator[Sequence[tuple[Any, ...]]], types: dict[str, pa.DataType]) -> pa.Table:
    """Batches of fetched rows as one Arrow table with ``types``."""
    schema = pa.schema([(name, type_) for name, type_ in types.items()])
    batches = []
    for batch in rows:
        if not batch:
            continue
        columns = list(zip(*batch, strict=True))
        del batch
        arrays = [_arrow(column, type_) for column, type_ in zip(columns, types.values(), strict=True)]
        del columns
        batches.append(pa.RecordBatch.from_arrays(arrays, schema=schema))
    if not batches:
        return schema.empty_table()
    table = pa.Table.from_batches(batches, schema=schema)
    return table.unify_dictionaries() if any(pa.types.is_dictionary(t) for t in types.values()) else table


def _fetch_batches(cursor: Any) -> Iterator[list[tuple[Any, ...]]]:
    while True:
        rows = cursor.fetchmany(_FETCH)
        if not rows:
            return
        yield rows


def _sqlite_table(
    conn: Connection, sql: str, params: Sequence[Any], types: dict[str, pa.DataType]
) -> pa.Table:
    cursor = _cursor(conn)
    try:
        cursor.execute(sql, tuple(params))
        return _rows_table(_fetch_batches(cursor), types)
    finally:
        cursor.close()


def _pg_table(conn: Connection, sql: str, params: Sequence[Any], types: dict[str, pa.DataType]) -> pa.Table:
    """``COPY (sql) TO STDOUT`` as CSV, parsed by pyarrow. ``sql`` has ``%s`` placeholders whose
    values psycopg2 binds (quotes and escapes) exactly as for any other statement."""
    from psycopg2.extensions import encodings

    cursor = _cursor(conn)
    try:
        codec = encodings.get(cursor.connection.encoding, "utf_8")
        query = cursor.mogrify(sql, tuple(params)).decode(codec)
        with tempfile.SpooledTemporaryFile(max_size=_SPOOL) as buffer:
            # UTF-8 whatever the client encoding; quoted values may hold newlines.
            cursor.copy_expert(f"COPY ({query}) TO STDOUT WITH (FORMAT csv, ENCODING 'UTF8')", buffer)
            if buffer.tell() == 0:  # no row: pyarrow refuses an empty file
                return pa.schema(list(types.items())).empty_table()
            buffer.seek(0)
            plain = {name: (t.value_type if pa.types.is_dictionary(t) else t) for name, t in types.items()}
            table = pacsv.read_csv(
                buffer,
                read_options=pacsv.ReadOptions(column_names=list(types), block_size=16 * 1024**2),
                parse_options=pacsv.ParseOptions(newlines_in_values=True),
                convert_options=pacsv.ConvertOptions(
                    column_types=plain,
                    null_values=[""],  # PostgreSQL's CSV null: unquoted and empty, nothing else
                    strings_can_be_null=True,
                    quoted_strings_can_be_null=False,
                    true_values=["t"],
                    false_values=["f"],
                ),
            )
    finally:
        cursor.close()
    for i, (name, type_) in enumerate(types.items()):
        if pa.types.is_dictionary(type_):
            table = table.set_column(i, name, pc.dictionary_encode(table[name]))
    return table.unify_dictionaries() if any(pa.types.is_dictionary(t) for t in types.values()) else table


def _core_table(conn: Connection, query: Any, types: dict[str, pa.DataType]) -> pa.Table:
    result = conn.execute(query)

    def batches() -> Iterator[list[tuple[Any, ...]]]:
        while True:
            rows = result.fetchmany(_FETCH)
            if not rows:
                return
            yield [tuple(row) for row in rows]

    return _rows_table(batches(), types)


def _read(
    conn: Connection,
    sql: str,
    params: Sequence[Any],
    types: dict[str, pa.DataType],
    core: Any,
    *,
    committed: bool = False,
) -> pa.Table:
    """``sql`` (written with ``%s`` placeholders) through the fastest path of the connection's
    database; ``core`` is the same query as SQLAlchemy Core for any other database.

    ``committed``: the transaction has written nothing yet, so a SQLite file may be read by a
    second, read-only connection with a native Arrow reader (:func:`_sqlite_native_table`): 5 to
    10 times faster than Python's driver on whole tables. (Once a SQLite transaction has written
    enough to spill its cache, it holds the file exclusively and no other connection can read.)
    """
    kind = _kind(conn)
    if kind == "sqlite":
        params = [_sqlite_param(p) for p in params]
        if committed:
            table = _sqlite_native_table(conn, sql.replace("%s", "?"), params, types)
            if table is not None:
                return table
        return _sqlite_table(conn, sql.replace("%s", "?"), params, types)
    if kind == "postgresql":
        return _pg_table(conn, sql, params, types)
    return _core_table(conn, core, types)


def _sqlite_param(value: Any) -> Any:
    """A parameter as SQLAlchemy stores the value in SQLite (dates and times are ISO text)."""
    if isinstance(value, datetime):
        return _sqlite_time(value)
    if isinstance(value, date):
        return value.isoformat()
    return value


def _sqlite_native_table(
    conn: Connection, sql: str, params: Sequence[Any], types: dict[str, pa.DataType]
) -> pa.Table | None:
    """A whole-table read of a SQLite file through ADBC's SQLite driver (Arrow batches straight
    from C), on its own read-only connection; None when the store is not a file or the driver is
    not installed (the caller reads through the DB-API cursor then).

    The driver types a column by its first values, so a column that starts with nulls is read
    with nulls as a value of its own (``coalesce``) and turned back here: times and dates as text
    ('' is null, then Arrow's cast), booleans as 0/1 (-1 is null); integers have no null in these
    tables (0).
    """
    database = conn.engine.url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    try:
        import adbc_driver_sqlite.dbapi as adbc
    except ImportError:  # pragma: no cover - a dependency; the slower path still works
        return None
    select_list, rest = sql.split(" FROM ", 1)
    if [c.strip() for c in select_list.removeprefix("SELECT ").split(",")] != list(types):
        raise ValueError(f"the query does not select {list(types)}: {sql}")
    wrapped = ", ".join(
        f"coalesce({name}, {_NATIVE_NULL[_native_kind(t)]}) AS {name}" for name, t in types.items()
    )
    path = Path(database).resolve()
    schema = pa.schema(list(types.items()))
    batches = []
    try:
        with adbc.connect(f"file:{quote(str(path))}?mode=ro") as native, native.cursor() as cursor:
            cursor.adbc_statement.set_options(**{"adbc.sqlite.query.batch_rows": str(_FETCH)})
            cursor.execute(f"SELECT {wrapped} FROM {rest}", tuple(params) or None)
            # Batch by batch: the text of dates and times never exists for the whole table.
            for batch in cursor.fetch_record_batch():
                batches.append(_typed_batch(batch, schema))
    except adbc.Error as exc:  # e.g. the transaction wrote enough to hold the file exclusively
        log.warning("SQLite's native reader could not read (%s): reading through the transaction", exc)
        return None
    if not batches:
        return schema.empty_table()
    table = pa.Table.from_batches(batches, schema=schema)
    return table.unify_dictionaries() if any(pa.types.is_dictionary(t) for t in types.values()) else table


def _typed_batch(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """A batch of the native reader in the store's types ('' was a null time or date), in memory
    of its own: one column kept as the driver gave it would keep the driver's whole batch alive
    (the text of every time and date with it; measured 1.3 GB more for 10 million orders)."""
    arrays = []
    for field in schema:
        column, type_ = batch.column(field.name), field.type
        kind = _native_kind(type_)
        if kind == "bool":
            number = column.cast(pa.int64())
            null = pc.equal(number, -1)
            arrays.append(pc.if_else(null, pa.scalar(None, pa.bool_()), pc.not_equal(number, 0)))
            continue
        if kind == "number":
            arrays.append(pa.concat_arrays([column.cast(type_)]))  # concat: a copy
            continue
        text = column.cast(pa.string())
        if pa.types.is_dictionary(type_):
            arrays.append(pc.dictionary_encode(text))
        elif pa.types.is_string(type_):
            arrays.append(pa.concat_arrays([text]))
        else:  # times and dates: '' was null
            arrays.append(pc.if_else(pc.equal(text, ""), pa.scalar(None, pa.string()), text).cast(type_))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


_NATIVE_NULL = {"bool": "-1", "number": "0", "text": "''"}


def _native_kind(type_: pa.DataType) -> str:
    """How the native reader reads a column of ``type_``: see :func:`_sqlite_native_table`."""
    if pa.types.is_boolean(type_):
        return "bool"
    return "number" if pa.types.is_integer(type_) or pa.types.is_floating(type_) else "text"


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


# ------------------------------------------------------------------------------------- locking


def lock_store(conn: Connection) -> bool:
    """Make this transaction the only writer of ``orders`` until it ends (readers go on).

    Call first, before anything else runs in the transaction. True when the store was locked
    (SQLite and PostgreSQL); another database is left as it is and False is returned.
    """
    kind = _kind(conn)
    if kind == "sqlite":
        conn.exec_driver_sql("BEGIN IMMEDIATE")  # the write lock now, not at the first write
        return True
    if kind == "postgresql":
        conn.execute(text("LOCK TABLE orders IN SHARE ROW EXCLUSIVE MODE"))
        # For this transaction only: no JIT compilation (it costs more than the run's short
        # queries gain), exact bitmaps for the pending customers' orders, and index reads priced
        # as the cached, random-access reads they are here (the defaults plan a parallel scan of
        # every order line for a few hundred thousand of them).
        for setting in ("jit = off", "work_mem = '64MB'", "random_page_cost = 1.1"):
            conn.execute(text(f"SET LOCAL {setting}"))
        return True
    return False


# ------------------------------------------------------------------------------------- orders


def _unapplied(until: date) -> Any:
    return (orders.c.state_applied_at.is_(None)) & or_(
        orders.c.business_date <= until, orders.c.business_date.is_(None)
    )


def read_pending(
    conn: Connection, max_orders: int | None = None, *, committed: bool = False
) -> pd.DataFrame | None:
    """Every order not folded into the state yet (:data:`~huitouke.segments.fold.PENDING_COLUMNS`,
    dtypes as :func:`read_orders`, ``folded_as_paid`` as pandas ``boolean``), or None when there
    are more than ``max_orders`` (a rebuild is cheaper then). ``committed``: as for :func:`_read`.

    Read through ``ix_orders_unapplied_customer_id``, the partial index of exactly these orders
    (SQLite is told so: without statistics it would rather scan the business-date index).
    """
    limit = "" if max_orders is None else " LIMIT %s"
    params: list[Any] = [] if max_orders is None else [max_orders + 1]
    hint = " INDEXED BY ix_orders_unapplied_customer_id" if _kind(conn) == "sqlite" else ""
    core = select(*(orders.c[name] for name in PENDING_COLUMNS)).where(orders.c.state_applied_at.is_(None))
    if max_orders is not None:
        core = core.limit(max_orders + 1)
    table = _read(
        conn,
        f"SELECT {', '.join(PENDING_COLUMNS)} FROM orders{hint} WHERE state_applied_at IS NULL{limit}",
        params,
        _PENDING_TYPES,
        core,
        committed=committed,
    )
    if max_orders is not None and table.num_rows > max_orders:
        return None
    frame = _to_pandas(table)
    frame["folded_as_paid"] = frame["folded_as_paid"].astype("boolean")
    return frame


def read_lines(conn: Connection, order_ids: Sequence[str], *, committed: bool = False) -> pd.DataFrame:
    """The lines of the given orders, as :func:`read_orders` gives them. ``committed``: as for
    :func:`_read`."""
    return _line_frame(_lines_of(conn, list(order_ids), committed=committed))


def read_spend(
    conn: Connection, customer_ids: Sequence[str] | None = None, *, committed: bool = False
) -> pd.DataFrame:
    """The spend rows (:data:`~huitouke.segments.state.SPEND_COLUMNS`) of the given customers
    (None: everyone), sorted by customer and group. ``committed``: as for :func:`_read`."""
    sql = f"SELECT {', '.join(SPEND_COLUMNS)} FROM customer_spend"
    core = select(*(customer_spend.c[c] for c in SPEND_COLUMNS))
    if customer_ids is None:
        table = _read(conn, sql, [], _SPEND_TYPES, core, committed=committed)
    else:
        table = _by_ids(
            conn,
            sql,
            "customer_id",
            list(customer_ids),
            _SPEND_TYPES,
            core,
            customer_spend.c.customer_id,
            committed=committed,
        )
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
        _delete_by_customer(conn, customer_spend, [str(i) for i in customer_ids])
    _insert(conn, customer_spend.name, _spend_table(spend))


def write_folded(conn: Connection, folded: FoldedRows, plan: FoldPlan) -> None:
    """Write what :func:`~huitouke.segments.fold.fold_rows` changed: the touched customers' state
    rows, and the spend rows to write (those of :attr:`FoldPlan.replaced` customers replaced whole,
    as a refund may empty a group; other customers' rows only grow, and are upserted)."""
    if _kind(conn) == "other":
        replace_state(conn, folded.rows, plan.touched)
        replace_spend(conn, folded.spend, plan.touched)
        return
    _delete_by_customer(conn, customer_state, list(plan.recomputed))
    _upsert(conn, customer_state.name, _state_table(folded.rows), ("customer_id",))
    _delete_by_customer(conn, customer_spend, plan.replaced)
    _upsert(conn, customer_spend.name, _spend_table(folded.spend_changed), ("customer_id", "category_group"))


def _upsert(conn: Connection, name: str, table: pa.Table, key: tuple[str, ...]) -> None:
    """Insert Arrow rows into the store's table ``name``, updating the rows whose ``key`` exists
    (SQLite and PostgreSQL: ``INSERT ... ON CONFLICT (key) DO UPDATE``)."""
    if table.num_rows == 0:
        return
    columns = ", ".join(table.column_names)
    updates = ", ".join(f"{c} = excluded.{c}" for c in table.column_names if c not in key)
    conflict = f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}"
    cursor = _cursor(conn)
    try:
        if _kind(conn) == "sqlite":
            marks = ", ".join("?" * table.num_columns)
            sql = f"INSERT INTO {name} ({columns}) VALUES ({marks}) {conflict}"
            for batch in table.to_batches(_FETCH):
                cursor.executemany(sql, zip(*(_sqlite_values(c) for c in batch.columns), strict=True))
            return
        # PostgreSQL: COPY into a temporary copy of the table, then one INSERT ... SELECT.
        staging = f"huitouke_upsert_{name}"
        cursor.execute(f"CREATE TEMP TABLE IF NOT EXISTS {staging} (LIKE {name}) ON COMMIT DELETE ROWS")
        cursor.execute(f"TRUNCATE {staging}")
        _pg_copy_in(cursor, staging, columns, table)
        cursor.execute(f"INSERT INTO {name} ({columns}) SELECT {columns} FROM {staging} {conflict}")
    finally:
        cursor.close()


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


def _by_ids(
    conn: Connection,
    sql: str,
    column: str,
    ids: list[str],
    types: dict[str, pa.DataType],
    core: Any,
    core_column: Any,
    *,
    committed: bool = False,
) -> pa.Table:
    """``sql`` restricted to rows whose ``column`` is one of ``ids``, in one statement: an array
    parameter on PostgreSQL; on SQLite the ids as one JSON array (``IN (SELECT value FROM
    json_each(?))``) through the native reader when ``committed`` (see :func:`_read`), else a
    temporary table of the ids (``IN (SELECT ...)``: the column's index, whatever the planner
    thinks of the temporary table); chunks elsewhere."""
    if not ids:
        return pa.schema(list(types.items())).empty_table()
    kind = _kind(conn)
    if kind == "postgresql":
        return _pg_table(conn, f"{sql} WHERE {column} = ANY(%s)", [ids], types)
    if kind == "sqlite" and committed:
        where = f"{sql} WHERE {column} IN (SELECT value FROM json_each(?))"
        table = _sqlite_native_table(conn, where, [json.dumps(ids)], types)
        if table is not None:
            return table
    if kind == "sqlite":
        temp = _sqlite_ids(conn, "huitouke_segment_ids", ids)
        try:
            return _sqlite_table(conn, f"{sql} WHERE {column} IN (SELECT id FROM {temp})", [], types)
        finally:
            _sqlite_ids(conn, "huitouke_segment_ids", [])
    parts = [_core_table(conn, core.where(core_column.in_(chunk)), types) for chunk in _chunks(ids)]
    table = pa.concat_tables(parts)
    return table.unify_dictionaries() if any(pa.types.is_dictionary(t) for t in types.values()) else table


def _lines_of(conn: Connection, order_ids: list[str], *, committed: bool = False) -> pa.Table:
    """The lines of the given orders (by the lines' primary key)."""
    return _by_ids(
        conn,
        f"SELECT {', '.join(LINE_INPUT_COLUMNS)} FROM order_lines",
        "order_id",
        order_ids,
        _LINE_TYPES,
        select(*(order_lines.c[c] for c in LINE_INPUT_COLUMNS)),
        order_lines.c.order_id,
        committed=committed,
    )


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
    del order_table
    line_frame = _line_frame(line_table)
    del line_table
    return order_frame, line_frame


def read_order_tables(
    conn: Connection, customer_ids: Sequence[str] | None = None, *, committed: bool = False
) -> tuple[pa.Table, pa.Table]:
    """:func:`read_orders` as Arrow tables. ``committed``: the transaction has written nothing yet
    (see :func:`_read`)."""
    order_sql = f"SELECT {', '.join(ORDER_INPUT_COLUMNS)} FROM orders"
    line_sql = f"SELECT {', '.join(LINE_INPUT_COLUMNS)} FROM order_lines"
    order_cols = [orders.c[name] for name in ORDER_INPUT_COLUMNS]
    line_cols = [order_lines.c[name] for name in LINE_INPUT_COLUMNS]
    if customer_ids is None:
        return (
            _read(conn, order_sql, [], _ORDER_TYPES, select(*order_cols), committed=committed),
            _read(conn, line_sql, [], _LINE_TYPES, select(*line_cols), committed=committed),
        )
    ids = list(customer_ids)
    order_table = _by_ids(
        conn,
        order_sql,
        "customer_id",
        ids,
        _ORDER_TYPES,
        select(*order_cols),
        orders.c.customer_id,
        committed=committed,
    )
    # The lines by the orders' ids (primary key): joined to orders by customer, a planner may
    # hash-join every order line instead.
    return order_table, _lines_of(conn, order_table["order_id"].to_pylist(), committed=committed)


def _sqlite_ids(conn: Connection, name: str, ids: list[str]) -> str:
    """A temporary table ``name`` (a constant) holding exactly ``ids``; its qualified name."""
    cursor = _cursor(conn)
    try:
        cursor.execute(f"CREATE TEMP TABLE IF NOT EXISTS {name} (id TEXT PRIMARY KEY)")
        cursor.execute(f"DELETE FROM temp.{name}")
        if ids:
            cursor.executemany(
                f"INSERT OR IGNORE INTO temp.{name} (id) VALUES (?)", ((i,) for i in sorted(ids))
            )
    finally:
        cursor.close()
    return f"temp.{name}"


def mark_applied(conn: Connection, order_ids: Sequence[str], now: datetime) -> int:
    """Record that exactly these orders (the ones just read and folded in) are in the state.

    Marking by order id, not by customer, means an order committed by another writer after the
    read is left unmarked and picked up by the next run, never stamped without being counted.
    """
    ids = [str(i) for i in order_ids]
    if not ids:
        return 0
    if _kind(conn) == "postgresql":
        cursor = _cursor(conn)
        try:
            cursor.execute(
                "UPDATE orders SET state_applied_at = %s, folded_as_paid = NULL"
                " WHERE state_applied_at IS NULL AND order_id = ANY(%s)",
                (now, ids),
            )
        finally:
            cursor.close()
        return len(ids)
    statement = (
        update(orders)
        .where(orders.c.order_id == bindparam("b_order_id"))
        .where(orders.c.state_applied_at.is_(None))
        .values(state_applied_at=now, folded_as_paid=None)
    )
    for chunk in _chunks(ids, 5_000):
        conn.execute(statement, [{"b_order_id": i} for i in chunk])
    return len(ids)


def mark_folded(conn: Connection, until: date, now: datetime) -> int:
    """Stamp every unfolded order paid on or before ``until`` (or without a business date): with
    :func:`lock_store` held, exactly the orders this run read and folded in. Returns the count.

    Through the partial index of unfolded orders (SQLite is told so; it would otherwise walk the
    business-date index over every order: 1.5 s at 10 million)."""
    if _kind(conn) == "sqlite":
        cursor = _cursor(conn)
        try:
            cursor.execute(
                "UPDATE orders INDEXED BY ix_orders_unapplied_customer_id"
                " SET state_applied_at = ?, folded_as_paid = NULL"
                " WHERE state_applied_at IS NULL AND (business_date <= ? OR business_date IS NULL)",
                (_sqlite_time(now), until.isoformat()),
            )
            return int(cursor.rowcount)
        finally:
            cursor.close()
    result = conn.execute(
        update(orders).where(_unapplied(until)).values(state_applied_at=now, folded_as_paid=None)
    )
    return int(result.rowcount or 0)


def _sqlite_time(value: datetime) -> str:
    """A naive datetime as SQLAlchemy stores it in SQLite."""
    return value.isoformat(sep=" ", timespec="microseconds")


# -------------------------------------------------------------------------------------- state


def read_state(conn: Connection, *, committed: bool = False) -> pd.DataFrame:
    """The stored customer state, with the dtypes :func:`~huitouke.segments.state.build_state` gives.
    ``committed``: the transaction has written nothing yet (see :func:`_read`)."""
    table = _read(
        conn,
        f"SELECT {', '.join(STATE_COLUMNS)} FROM customer_state",
        [],
        _STATE_TYPES,
        select(*(customer_state.c[c] for c in STATE_COLUMNS)),
        committed=committed,
    )
    if table.num_rows == 0:
        return empty_state()
    table = table.take(pc.sort_indices(table["customer_id"]))
    return _to_pandas(table)


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


def replace_state(conn: Connection, rows: pd.DataFrame, customer_ids: Sequence[str] | None) -> None:
    """Replace the state rows of ``customer_ids`` (None: every row) by ``rows``, which hold every
    row those customers have now (a customer without one leaves the state)."""
    if customer_ids is None:
        conn.execute(delete(customer_state))
    else:
        _delete_by_customer(conn, customer_state, [str(i) for i in customer_ids])
    _insert(conn, customer_state.name, _state_table(rows))


def _delete_by_customer(conn: Connection, table: Any, ids: list[str]) -> None:
    if not ids:
        return
    kind = _kind(conn)
    if kind == "postgresql":
        cursor = _cursor(conn)
        try:
            cursor.execute(f"DELETE FROM {table.name} WHERE customer_id = ANY(%s)", (ids,))
        finally:
            cursor.close()
    elif kind == "sqlite":
        cursor = _cursor(conn)
        try:
            cursor.executemany(f"DELETE FROM {table.name} WHERE customer_id = ?", ((i,) for i in ids))
        finally:
            cursor.close()
    else:
        for chunk in _chunks(ids):
            conn.execute(delete(table).where(table.c.customer_id.in_(chunk)))


def _insert(conn: Connection, name: str, table: pa.Table) -> None:
    """Insert Arrow rows into the store's table ``name`` (columns named as in the table)."""
    if table.num_rows == 0:
        return
    columns = ", ".join(table.column_names)
    kind = _kind(conn)
    if kind == "postgresql":
        cursor = _cursor(conn)
        try:
            _pg_copy_in(cursor, name, columns, table)
        finally:
            cursor.close()
        return
    if kind == "sqlite":
        cursor = _cursor(conn)
        try:
            marks = ", ".join("?" * table.num_columns)
            sql = f"INSERT INTO {name} ({columns}) VALUES ({marks})"
            for batch in table.to_batches(_FETCH):
                cursor.executemany(sql, zip(*(_sqlite_values(c) for c in batch.columns), strict=True))
        finally:
            cursor.close()
        return
    target = {
        "customer_state": customer_state,
        "segment_history": segment_history,
        "customer_spend": customer_spend,
    }[name]
    for batch in table.to_batches(5_000):
        conn.execute(insert(target), batch.to_pylist())


def _pg_copy_in(cursor: Any, name: str, columns: str, table: pa.Table) -> None:
    """``COPY name (columns) FROM STDIN``, one batch of rows at a time: the CSV of a few million
    rows never sits in memory whole."""
    for batch in table.to_batches(_FETCH):
        buffer = io.BytesIO()
        pacsv.write_csv(batch, buffer, pacsv.WriteOptions(include_header=False))
        buffer.seek(0)
        cursor.copy_expert(f"COPY {name} ({columns}) FROM STDIN WITH (FORMAT csv, ENCODING 'UTF8')", buffer)


def _sqlite_values(column: pa.Array) -> list[Any]:
    """A column as SQLAlchemy stores it in SQLite: DateTime 'YYYY-MM-DD HH:MM:SS.ffffff', Date
    'YYYY-MM-DD', Boolean 0/1."""
    if pa.types.is_timestamp(column.type):
        column = pc.strftime(column.cast(_TS), format="%Y-%m-%d %H:%M:%S")
    elif pa.types.is_date(column.type):
        column = column.cast(pa.string())
    elif pa.types.is_boolean(column.type):
        column = column.cast(pa.int8())
    return column.to_pylist()


# ------------------------------------------------------------------------------------ history


def read_open_history(
    conn: Connection, *, committed: bool = False, rewinding: date | None = None
) -> pd.DataFrame:
    """The open segment rows (``valid_to`` null): customer_id, valid_from and the segment, sorted
    by customer. ``committed``: the transaction has written nothing yet (see :func:`_read`).
    ``rewinding``: the rows that will be open once :func:`rewind_history` has rewound that day,
    read before it does (those opened before the day and not closed before it)."""
    types = {name: _HISTORY_TYPES[name] for name in _OPEN_COLUMNS}
    columns = select(*(segment_history.c[c] for c in _OPEN_COLUMNS))
    if rewinding is None:
        where, params = "valid_to IS NULL", []
        core = columns.where(segment_history.c.valid_to.is_(None))
    else:
        where, params = "valid_from < %s AND (valid_to IS NULL OR valid_to >= %s)", [rewinding, rewinding]
        core = columns.where(segment_history.c.valid_from < rewinding).where(
            segment_history.c.valid_to.is_(None) | (segment_history.c.valid_to >= rewinding)
        )
    table = _read(
        conn,
        f"SELECT {', '.join(_OPEN_COLUMNS)} FROM segment_history WHERE {where}",
        params,
        types,
        core,
        committed=committed,
    )
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
    """Close the rows that ended (each customer's open row) and open the new ones."""
    day = changes.business_date
    closing = changes.close["customer_id"].astype("str").tolist()
    kind = _kind(conn)
    if closing and kind == "postgresql":
        cursor = _cursor(conn)
        try:
            cursor.execute(
                "UPDATE segment_history SET valid_to = %s WHERE valid_to IS NULL AND customer_id = ANY(%s)",
                (day, closing),
            )
        finally:
            cursor.close()
    elif closing and kind == "sqlite":
        # One statement for all of them (the ids as one JSON array): SQLite runs it without
        # holding Python's lock, while the run goes on computing; through the customer index.
        cursor = _cursor(conn)
        try:
            cursor.execute(
                "UPDATE segment_history INDEXED BY ix_segment_history_customer_id_valid_from"
                " SET valid_to = ? WHERE valid_to IS NULL AND customer_id IN (SELECT value FROM json_each(?))",
                (day.isoformat(), json.dumps(closing)),
            )
        finally:
            cursor.close()
    elif closing:
        statement = (
            update(segment_history)
            .where(segment_history.c.customer_id == bindparam("b_customer"))
            .where(segment_history.c.valid_to.is_(None))
            .values(valid_to=day)
        )
        for chunk in _chunks(closing, 5_000):
            conn.execute(statement, [{"b_customer": c} for c in chunk])
    if len(changes.open):
        _insert(conn, segment_history.name, _history_table(changes.open, day))


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
