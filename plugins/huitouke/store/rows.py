"""The store's rows in and out, for every stage: DataFrames and Arrow tables, inserts a re-run can
repeat safely, the bulk reads and writes, the writers' lock. Always bound parameters; SQLite and
PostgreSQL. This is the only module that asks which database it is talking to: the stages' store
modules say what they read and write.

**Bulk paths.** At a million customers the segments run moves a few hundred thousand rows in and
a hundred thousand out, and a rebuild reads every order and line, so the Arrow reads and writes
(:func:`read_arrow`, :func:`read_arrow_by_ids`, :func:`insert_arrow`, :func:`upsert_arrow`, and the
statements over a set of ids) bypass SQLAlchemy's row objects (about 5 µs a row) on the two
stores huitouke supports:

- SQLite: the DB-API cursor's plain tuples, turned into Arrow arrays column by column (dates
  and times, stored as ISO text, are parsed by Arrow in one vectorised cast); a transaction that
  has written nothing yet reads through ADBC's native reader on a second, read-only connection;
  writes by ``executemany`` with values in exactly SQLAlchemy's storage format; a set of ids as one
  JSON array (``IN (SELECT value FROM json_each(?))``);
- PostgreSQL (psycopg2): ``COPY (SELECT ...) TO STDOUT`` read by pyarrow's CSV reader, ``COPY ...
  FROM STDIN`` for inserts, ``= ANY(%s)`` with an array parameter instead of chunked ``IN`` lists or
  one statement per row. Every value is a bound parameter (psycopg2 binds on the client,
  ``mogrify`` is the same binding made visible for ``COPY``, which takes no parameters itself).

Other drivers go through SQLAlchemy (correct, slower).
"""

from __future__ import annotations

import glob
import io
import json
import shutil
import tempfile
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from sqlalchemy import Connection, Table, bindparam, delete, exists, func, insert, select, text, update

from huitouke.pii import get_logger

__all__ = [
    "IN_LIST_SIZE",
    "ArrowSelect",
    "BulkInserts",
    "chunks",
    "delete_by_ids",
    "empty_frame",
    "bulk_inserts",
    "has_rows",
    "insert_arrow",
    "indexes_rebuilt",
    "insert_new",
    "lock_writers",
    "pipelined",
    "prefer_index_reads",
    "read_arrow",
    "read_arrow_by_ids",
    "read_frame",
    "update_arrow",
    "update_by_ids",
    "update_where",
    "upsert",
    "upsert_arrow",
]

log = get_logger(__name__)

IN_LIST_SIZE = 900  # bound parameters per IN (...) list: under SQLite's and every driver's limit
_BATCH = 5000  # rows per executemany
_FETCH = 250_000  # rows per fetchmany from a DB-API cursor, per native batch, per COPY batch
_COPY_CHUNK = 1024**2  # bytes per write into a COPY (psycopg2's default: 8 KiB)
_SPOOL = 64 * 1024**2  # COPY output kept in memory up to this size, then in a temporary file


def chunks(values: Sequence[Any], size: int = IN_LIST_SIZE) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def empty_frame(columns: Sequence[str]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series([], dtype=object) for c in columns})


def read_frame(conn: Connection, query: Any, columns: Sequence[str]) -> pd.DataFrame:
    """A query's rows as a DataFrame with the given column names (object columns when empty)."""
    rows = conn.execute(query).all()
    if not rows:
        return empty_frame(columns)
    # Column-wise from the rows' tuples: pandas' from_records probes each Row object's attributes,
    # several times slower.
    values = list(zip(*rows, strict=True))
    return pd.DataFrame({name: list(column) for name, column in zip(columns, values, strict=True)})


def _dialect_insert(conn: Connection):
    dialect = conn.dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:  # pragma: no cover - the store supports SQLite and PostgreSQL
        raise NotImplementedError(f"the CRM store does not support {dialect}")
    return insert


def insert_new(conn: Connection, table: Table, rows: list[dict[str, Any]]) -> int:
    """Insert rows, skipping those whose key is already stored (ON CONFLICT DO NOTHING); returns
    the number inserted."""
    if not rows:
        return 0
    statement = _dialect_insert(conn)(table).on_conflict_do_nothing()
    if conn.dialect.name == "sqlite":
        done = _sqlite_executemany(conn, statement, table, rows)
        if done is not None:
            return done
    inserted = 0
    for chunk in chunks(rows, _BATCH):
        inserted += max(conn.execute(statement, list(chunk)).rowcount, 0)
    return inserted


def upsert(conn: Connection, table: Table, rows: list[dict[str, Any]], key: Sequence[str]) -> None:
    """Insert rows, or update the stored row with the same ``key`` (its other given columns)."""
    if not rows:
        return
    statement = _dialect_insert(conn)(table)
    changed = {c: statement.excluded[c] for c in rows[0] if c not in key}
    statement = statement.on_conflict_do_update(index_elements=list(key), set_=changed)
    if conn.dialect.name == "sqlite" and _sqlite_executemany(conn, statement, table, rows) is not None:
        return
    for chunk in chunks(rows, _BATCH):
        conn.execute(statement, list(chunk))


def _sqlite_executemany(
    conn: Connection, statement: Any, table: Table, rows: list[dict[str, Any]]
) -> int | None:
    """One driver ``executemany`` of plain tuples: the statement compiled once, each column
    converted by its type's own bind processor (what SQLAlchemy does row by row, with about
    5 µs of parameter processing per row); returns the rows inserted or updated. None (nothing
    done) when the rows do not all have the same keys or leave a column to its Python default."""
    keys = rows[0].keys()
    if any(row.keys() != keys for row in rows):
        return None
    names = [c.name for c in table.columns if c.name in keys]
    compiled = statement.compile(dialect=conn.dialect, column_keys=names)
    if any(name not in keys for name in compiled.positiontup):
        return None
    columns = []
    for name in compiled.positiontup:
        processor = table.c[name].type.dialect_impl(conn.dialect).bind_processor(conn.dialect)
        values = [row[name] for row in rows]
        if processor is not None:
            values = _processed(values, processor)
        columns.append(values)
    result = conn.exec_driver_sql(str(compiled), list(zip(*columns, strict=True)))
    return max(result.rowcount, 0)


def _processed(values: list[Any], processor: Any) -> list[Any]:
    """``processor`` applied to every value but None, once per distinct value (dates, times and
    flags repeat: a dict lookup is 20x cheaper than formatting a date again)."""
    done: dict[Any, Any] = {None: None}
    try:
        return [done[v] if v in done else done.setdefault(v, processor(v)) for v in values]
    except TypeError:  # unhashable values
        return [None if v is None else processor(v) for v in values]


# ------------------------------------------------------------------------- which database, how


def _kind(conn: Connection) -> str:
    """``sqlite``, ``postgresql`` (the bulk paths) or ``other`` (through SQLAlchemy)."""
    name = conn.dialect.name
    if name == "sqlite":
        return "sqlite"
    if name == "postgresql" and conn.dialect.driver == "psycopg2":
        return "postgresql"
    return "other"


@contextmanager
def _cursor(conn: Connection) -> Iterator[Any]:
    """A DB-API cursor on the connection's own DB-API connection: the same transaction."""
    with closing(conn.connection.dbapi_connection.cursor()) as cursor:
        yield cursor


def _named(sql: str, params: Sequence[Any]) -> tuple[Any, dict[str, Any]]:
    """SQL with ``%s`` placeholders as a SQLAlchemy ``text`` with named parameters (any driver)."""
    pieces = sql.split("%s")
    if len(pieces) != len(params) + 1:
        raise ValueError(f"{len(params)} parameters for {len(pieces) - 1} placeholders: {sql}")
    named = pieces[0] + "".join(f":p{i}{piece}" for i, piece in enumerate(pieces[1:]))
    return text(named), {f"p{i}": value for i, value in enumerate(params)}


def _sqlite_param(value: Any) -> Any:
    """A parameter as SQLAlchemy stores the value in SQLite (dates and times are ISO text)."""
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="microseconds")
    if isinstance(value, date):
        return value.isoformat()
    return value


def lock_writers(conn: Connection, table: Table) -> bool:
    """Make this transaction the only writer of ``table`` until it ends (readers go on).

    Call first, before anything else runs in the transaction. True when the store was locked
    (SQLite: ``BEGIN IMMEDIATE``, the whole file; PostgreSQL: ``LOCK TABLE ... IN SHARE ROW
    EXCLUSIVE MODE``); with another driver nothing is locked and False is returned.
    """
    kind = _kind(conn)
    if kind == "sqlite":
        conn.exec_driver_sql("BEGIN IMMEDIATE")  # the write lock now, not at the first write
        return True
    if kind == "postgresql":
        conn.execute(text(f"LOCK TABLE {table.name} IN SHARE ROW EXCLUSIVE MODE"))
        return True
    return False


def prefer_index_reads(conn: Connection) -> None:
    """On PostgreSQL, for this transaction only: no JIT compilation (it costs more than short
    queries gain), exact bitmaps for a few hundred thousand rows by id, and index reads priced as
    the cached, random-access reads they are (the defaults plan a parallel scan of every order
    line for a few hundred thousand of them). Nothing elsewhere."""
    if _kind(conn) == "postgresql":
        for setting in ("jit = off", "work_mem = '64MB'", "random_page_cost = 1.1"):
            conn.execute(text(f"SET LOCAL {setting}"))


# ----------------------------------------------------------------------------- reading as Arrow


@dataclass(frozen=True)
class ArrowSelect:
    """What to read as Arrow: the columns ``types`` names, of the store's table ``table``, in the
    Arrow types given (dictionary types are encoded), the rows meeting ``where`` (plain SQL with
    ``%s`` placeholders for ``params``), at most ``limit`` of them. ``index``: read through this
    index where the database lets one say so (SQLite's ``INDEXED BY``: without statistics it may
    pick another)."""

    table: str
    types: Mapping[str, pa.DataType]
    where: str = ""
    params: tuple[Any, ...] = ()
    index: str | None = None
    limit: int | None = None

    def tail(self, *, hint: bool, ids: str = "", id_params: Sequence[Any] = ()) -> tuple[str, list[Any]]:
        """`` FROM ... [WHERE ...] [LIMIT %s]`` and its parameters; ``ids``: one more condition."""
        sql = f" FROM {self.table}"
        if hint and self.index:
            sql += f" INDEXED BY {self.index}"
        conditions = [c for c in (self.where, ids) if c]
        if len(conditions) == 2:
            conditions = [f"({c})" for c in conditions]
        if conditions:
            sql += f" WHERE {' AND '.join(conditions)}"
        params = [*self.params, *id_params]
        if self.limit is not None:
            sql += " LIMIT %s"
            params.append(self.limit)
        return sql, params

    def empty(self) -> pa.Table:
        return pa.schema(list(self.types.items())).empty_table()


def read_arrow(conn: Connection, select: ArrowSelect, *, committed: bool = False) -> pa.Table:
    """``select``'s rows through the fastest path of the connection's database.

    ``committed``: the transaction has written nothing yet, so a SQLite file may be read by a
    second, read-only connection with a native Arrow reader (:func:`_sqlite_native_table`): 5 to
    10 times faster than Python's driver on whole tables. (Once a SQLite transaction has written
    enough to spill its cache, it holds the file exclusively and no other connection can read.)
    """
    return _read(conn, select, committed=committed)


def read_arrow_by_ids(
    conn: Connection, select: ArrowSelect, column: str, ids: Sequence[Any], *, committed: bool = False
) -> pa.Table:
    """``select``'s rows whose ``column`` is one of ``ids``, in one statement: an array parameter
    on PostgreSQL; on SQLite the ids as one JSON array (``IN (SELECT value FROM json_each(?))``)
    through the native reader when ``committed`` (see :func:`read_arrow`), else a temporary table
    of the ids (``IN (SELECT ...)``: the column's index, whatever the planner thinks of the
    temporary table); chunks elsewhere."""
    ids = list(ids)
    if not ids:
        return select.empty()
    kind = _kind(conn)
    if kind == "postgresql":
        return _read(conn, select, ids=f"{column} = ANY(%s)", id_params=[ids])
    if kind == "sqlite" and committed:
        in_json = f"{column} IN (SELECT value FROM json_each(%s))"
        table = _sqlite_native_table(conn, select.types, *_sqlite_tail(select, in_json, [json.dumps(ids)]))
        if table is not None:
            return table
    if kind == "sqlite":
        with _sqlite_id_table(conn, "huitouke_segment_ids", ids) as temp:
            return _read(conn, select, ids=f"{column} IN (SELECT id FROM {temp})")
    parts = [
        _core_table(conn, select, f"{column} IN ({', '.join(['%s'] * len(chunk))})", chunk)
        for chunk in chunks(ids)
    ]
    return _unified(pa.concat_tables(parts), select.types)


def _read(
    conn: Connection,
    select: ArrowSelect,
    *,
    committed: bool = False,
    ids: str = "",
    id_params: Sequence[Any] = (),
) -> pa.Table:
    kind = _kind(conn)
    columns = f"SELECT {', '.join(select.types)}"
    if kind == "sqlite":
        tail, params = _sqlite_tail(select, ids, id_params)
        if committed:
            table = _sqlite_native_table(conn, select.types, tail, params)
            if table is not None:
                return table
        return _sqlite_table(conn, columns + tail, params, select.types)
    if kind == "postgresql":
        tail, params = select.tail(hint=False, ids=ids, id_params=id_params)
        return _pg_table(conn, columns + tail, params, select.types)
    return _core_table(conn, select, ids, id_params)


def _sqlite_tail(select: ArrowSelect, ids: str = "", id_params: Sequence[Any] = ()) -> tuple[str, list[Any]]:
    """:meth:`ArrowSelect.tail` for SQLite: ``?`` placeholders, values in SQLAlchemy's storage format."""
    tail, params = select.tail(hint=True, ids=ids, id_params=id_params)
    return tail.replace("%s", "?"), [_sqlite_param(p) for p in params]


def _unified(table: pa.Table, types: Mapping[str, pa.DataType]) -> pa.Table:
    """One dictionary per dictionary column across the table's chunks."""
    return table.unify_dictionaries() if any(pa.types.is_dictionary(t) for t in types.values()) else table


def _arrow(values: Sequence[Any], type_: pa.DataType) -> pa.Array:
    """One fetched column (plain Python values) as an Arrow array of ``type_``.

    ISO text (SQLite's dates and times) is parsed by Arrow's cast; dictionary types are encoded."""
    if pa.types.is_dictionary(type_):
        return _arrow(values, type_.value_type).dictionary_encode()
    array = pa.array(values, from_pandas=True)
    return array if array.type == type_ else array.cast(type_)


def _rows_table(rows: Iterator[Sequence[tuple[Any, ...]]], types: Mapping[str, pa.DataType]) -> pa.Table:
    """Batches of fetched rows as one Arrow table with ``types``."""
    schema = pa.schema(list(types.items()))
    batches = []
    for batch in rows:
        if batch:
            batches.append(_rows_batch(batch, schema))
    if not batches:
        return schema.empty_table()
    return _unified(pa.Table.from_batches(batches, schema=schema), types)


def _rows_batch(rows: Sequence[tuple[Any, ...]], schema: pa.Schema) -> pa.RecordBatch:
    """Rows as one record batch, column by column (the rows' tuples go as each column is made)."""
    columns = list(zip(*rows, strict=True))
    arrays = [_arrow(column, field.type) for column, field in zip(columns, schema, strict=True)]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _fetch_batches(cursor: Any) -> Iterator[list[tuple[Any, ...]]]:
    while True:
        rows = cursor.fetchmany(_FETCH)
        if not rows:
            return
        yield rows


def _sqlite_table(
    conn: Connection, sql: str, params: Sequence[Any], types: Mapping[str, pa.DataType]
) -> pa.Table:
    with _cursor(conn) as cursor:
        cursor.execute(sql, tuple(params))
        return _rows_table(_fetch_batches(cursor), types)


def _pg_table(
    conn: Connection, sql: str, params: Sequence[Any], types: Mapping[str, pa.DataType]
) -> pa.Table:
    """``COPY (sql) TO STDOUT`` as CSV, parsed by pyarrow. ``sql`` has ``%s`` placeholders whose
    values psycopg2 binds (quotes and escapes) exactly as for any other statement."""
    from psycopg2.extensions import encodings

    with _cursor(conn) as cursor, tempfile.SpooledTemporaryFile(max_size=_SPOOL) as buffer:
        codec = encodings.get(cursor.connection.encoding, "utf_8")
        query = cursor.mogrify(sql, tuple(params)).decode(codec)
        # UTF-8 whatever the client encoding; quoted values may hold newlines.
        cursor.copy_expert(f"COPY ({query}) TO STDOUT WITH (FORMAT csv, ENCODING 'UTF8')", buffer)
        if buffer.tell() == 0:  # no row: pyarrow refuses an empty file
            return pa.schema(list(types.items())).empty_table()
        buffer.seek(0)
        table = _csv_table(buffer, types)
    for i, (name, type_) in enumerate(types.items()):
        if pa.types.is_dictionary(type_):
            table = table.set_column(i, name, pc.dictionary_encode(table[name]))
    return _unified(table, types)


def _csv_table(buffer: Any, types: Mapping[str, pa.DataType]) -> pa.Table:
    """PostgreSQL's CSV of ``types``' columns (no header), dictionary columns as plain values."""
    plain = {name: (t.value_type if pa.types.is_dictionary(t) else t) for name, t in types.items()}
    return pacsv.read_csv(
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


def _core_table(conn: Connection, select: ArrowSelect, ids: str, id_params: Sequence[Any]) -> pa.Table:
    """Through SQLAlchemy (other drivers)."""
    tail, params = select.tail(hint=False, ids=ids, id_params=id_params)
    statement, named = _named(f"SELECT {', '.join(select.types)}{tail}", params)
    result = conn.execute(statement, named)

    def batches() -> Iterator[list[tuple[Any, ...]]]:
        while True:
            rows = result.fetchmany(_FETCH)
            if not rows:
                return
            yield [tuple(row) for row in rows]

    return _rows_table(batches(), select.types)


def _sqlite_native_table(
    conn: Connection, types: Mapping[str, pa.DataType], tail: str, params: Sequence[Any]
) -> pa.Table | None:
    """``SELECT <types' columns><tail>`` of a SQLite file through ADBC's SQLite driver (Arrow
    batches straight from C), on its own read-only connection; None when the store is not a file
    or the driver is not installed (the caller reads through the DB-API cursor then).

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
    wrapped = ", ".join(
        f"coalesce({name}, {_NATIVE_NULL[_native_kind(t)]}) AS {name}" for name, t in types.items()
    )
    schema = pa.schema(list(types.items()))
    batches = []
    try:
        with adbc.connect(f"file:{quote(str(Path(database).resolve()))}?mode=ro") as native:
            with native.cursor() as cursor:
                cursor.adbc_statement.set_options(**{"adbc.sqlite.query.batch_rows": str(_FETCH)})
                cursor.execute(f"SELECT {wrapped}{tail}", tuple(params) or None)
                # Batch by batch: the text of dates and times never exists for the whole table.
                for batch in cursor.fetch_record_batch():
                    batches.append(_typed_batch(batch, schema))
    except adbc.Error as exc:  # e.g. the transaction wrote enough to hold the file exclusively
        log.warning("SQLite's native reader could not read (%s): reading through the transaction", exc)
        return None
    if not batches:
        return schema.empty_table()
    return _unified(pa.Table.from_batches(batches, schema=schema), types)


def _typed_batch(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """A batch of the native reader in the store's types ('' was a null time or date), in memory
    of its own: one column kept as the driver gave it would keep the driver's whole batch alive
    (the text of every time and date with it; measured 1.3 GB more for 10 million orders)."""
    return pa.RecordBatch.from_arrays(
        [_typed_column(batch.column(field.name), field.type) for field in schema], schema=schema
    )


def _typed_column(column: pa.Array, type_: pa.DataType) -> pa.Array:
    kind = _native_kind(type_)
    if kind == "bool":
        number = column.cast(pa.int64())
        null = pc.equal(number, -1)
        return pc.if_else(null, pa.scalar(None, pa.bool_()), pc.not_equal(number, 0))
    if kind == "number":
        return pa.concat_arrays([column.cast(type_)])  # concat: a copy
    text_ = column.cast(pa.string())
    if pa.types.is_dictionary(type_):
        return pc.dictionary_encode(text_)
    if pa.types.is_string(type_):
        return pa.concat_arrays([text_])
    # times and dates: '' was null
    return pc.if_else(pc.equal(text_, ""), pa.scalar(None, pa.string()), text_).cast(type_)


_NATIVE_NULL = {"bool": "-1", "number": "0", "text": "''"}


def _native_kind(type_: pa.DataType) -> str:
    """How the native reader reads a column of ``type_``: see :func:`_sqlite_native_table`."""
    if pa.types.is_boolean(type_):
        return "bool"
    return "number" if pa.types.is_integer(type_) or pa.types.is_floating(type_) else "text"


@contextmanager
def _sqlite_id_table(conn: Connection, name: str, ids: list[Any]) -> Iterator[str]:
    """A temporary table ``name`` (a constant) holding exactly ``ids`` while the block runs; its
    qualified name. Emptied afterwards."""
    _fill_sqlite_ids(conn, name, ids)
    try:
        yield f"temp.{name}"
    finally:
        _fill_sqlite_ids(conn, name, [])


def _fill_sqlite_ids(conn: Connection, name: str, ids: list[Any]) -> None:
    with _cursor(conn) as cursor:
        cursor.execute(f"CREATE TEMP TABLE IF NOT EXISTS {name} (id TEXT PRIMARY KEY)")
        cursor.execute(f"DELETE FROM temp.{name}")
        if ids:
            cursor.executemany(
                f"INSERT OR IGNORE INTO temp.{name} (id) VALUES (?)", ((i,) for i in sorted(ids))
            )


# --------------------------------------------------------------------------- writing from Arrow


def insert_arrow(conn: Connection, table: Table, rows: pa.Table) -> None:
    """Insert Arrow rows into ``table`` (columns named as in ``rows``)."""
    if rows.num_rows == 0:
        return
    columns = ", ".join(rows.column_names)
    kind = _kind(conn)
    if kind == "postgresql":
        with _cursor(conn) as cursor:
            _pg_copy_in(cursor, table.name, columns, rows)
    elif kind == "sqlite":
        marks = ", ".join("?" * rows.num_columns)
        _sqlite_insert(conn, f"INSERT INTO {table.name} ({columns}) VALUES ({marks})", rows)
    else:
        for batch in rows.to_batches(_BATCH):
            conn.execute(insert(table), batch.to_pylist())


def upsert_arrow(conn: Connection, table: Table, rows: pa.Table, key: Sequence[str]) -> None:
    """Insert Arrow rows into ``table``, updating the rows whose ``key`` is stored (``INSERT ...
    ON CONFLICT (key) DO UPDATE``)."""
    if rows.num_rows == 0:
        return
    columns = ", ".join(rows.column_names)
    updates = ", ".join(f"{c} = excluded.{c}" for c in rows.column_names if c not in key)
    conflict = f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}"
    kind = _kind(conn)
    if kind == "sqlite":
        marks = ", ".join("?" * rows.num_columns)
        _sqlite_insert(conn, f"INSERT INTO {table.name} ({columns}) VALUES ({marks}) {conflict}", rows)
    elif kind == "postgresql":
        # COPY into a temporary copy of the table, then one INSERT ... SELECT.
        staging = f"huitouke_upsert_{table.name}"
        with _cursor(conn) as cursor:
            cursor.execute(
                f"CREATE TEMP TABLE IF NOT EXISTS {staging} (LIKE {table.name}) ON COMMIT DELETE ROWS"
            )
            cursor.execute(f"TRUNCATE {staging}")
            _pg_copy_in(cursor, staging, columns, rows)
            cursor.execute(f"INSERT INTO {table.name} ({columns}) SELECT {columns} FROM {staging} {conflict}")
    else:
        upsert(conn, table, rows.to_pylist(), key)


def _sqlite_insert(conn: Connection, sql: str, rows: pa.Table) -> None:
    with _cursor(conn) as cursor:
        for batch in rows.to_batches(_FETCH):
            cursor.executemany(sql, zip(*(_sqlite_values(c) for c in batch.columns), strict=True))


def _pg_copy_in(cursor: Any, name: str, columns: str, rows: pa.Table) -> None:
    """``COPY name (columns) FROM STDIN``, one batch of rows at a time: the CSV of a few million
    rows never sits in memory whole."""
    for batch in rows.to_batches(_FETCH):
        buffer = io.BytesIO()
        pacsv.write_csv(batch, buffer, pacsv.WriteOptions(include_header=False))
        buffer.seek(0)
        sql = f"COPY {name} ({columns}) FROM STDIN WITH (FORMAT csv, ENCODING 'UTF8')"
        cursor.copy_expert(sql, buffer, size=_COPY_CHUNK)


def _sqlite_values(column: pa.Array) -> list[Any]:
    """A column as SQLAlchemy stores it in SQLite: DateTime 'YYYY-MM-DD HH:MM:SS.ffffff', Date
    'YYYY-MM-DD', Boolean 0/1."""
    if pa.types.is_timestamp(column.type):
        # The cast prints naive times as 'YYYY-MM-DD HH:MM:SS.ffffff' (25x faster than strftime).
        column = column.cast(pa.timestamp("us")).cast(pa.string())
    elif pa.types.is_date(column.type):
        column = column.cast(pa.string())
    elif pa.types.is_boolean(column.type):
        column = column.cast(pa.int8())
    return column.to_pylist()


# --------------------------------------------------------------- large inserts of one transaction

_STAGE_MIN_ROWS = 20_000  # rows from which a SQLite insert goes through a staging file
_LOAD_CACHE_KIB = 256 * 1024  # SQLite's page cache during a load (random index inserts, updates)
_REBUILD_MIN_ROWS = 50_000  # rows from which PostgreSQL's empty tables get their indexes afterwards


class BulkInserts:
    """The large inserts of one transaction on ``conn``, by the fastest path of its database.

    SQLite (a file, ADBC's SQLite driver installed, at least ``_STAGE_MIN_ROWS`` rows): the rows go
    by ADBC's bulk ingest (Arrow straight from C, 5x faster than ``executemany``) into a scratch
    file of their own beside the store (``.<store file>.load-*``), which the transaction's
    connection attaches and copies from with one ``INSERT ... SELECT`` (C). PostgreSQL: ``COPY``
    of the rows' CSV. That copy runs in a worker thread (SQLite and the server do it without
    Python's lock) while the caller prepares and stages the next table; :meth:`wait` (and
    :func:`pipelined`) waits for it: nothing else may use the connection meanwhile. The store
    itself is written only by the transaction: a failure leaves nothing behind but the scratch
    files, which :meth:`close` deletes after detaching them (SQLite detaches only outside a
    transaction, so :func:`bulk_inserts` wraps the transaction). Elsewhere, and for fewer rows,
    :func:`insert_arrow`, in the caller's thread. SQLite's page cache is ``_LOAD_CACHE_KIB`` while
    the block runs (:meth:`open`).
    """

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._folder: Path | None = None
        self._staged_files = 0
        self._attached: list[str] = []
        self._cache_kib: int | None = None
        self._worker: ThreadPoolExecutor | None = None
        self._copying: Future[None] | None = None

    def insert(self, table: Table, rows: pa.Table) -> None:
        """Insert Arrow rows into ``table`` (columns named as in ``rows``); on the large-insert paths
        the rows are in the table once :meth:`wait` returns."""
        copy = None
        if rows.num_rows >= _STAGE_MIN_ROWS:
            kind = _kind(self.conn)
            copy = self._staged(table, rows) if kind == "sqlite" else None
            copy = self._pg_csv(table, rows) if kind == "postgresql" else copy
        self.wait()
        if copy is None:
            insert_arrow(self.conn, table, rows)
            return
        self._worker = self._worker or ThreadPoolExecutor(1, thread_name_prefix="huitouke-load")
        self._copying = self._worker.submit(copy, self.conn.connection.dbapi_connection)

    def _staged(self, table: Table, rows: pa.Table) -> Callable[[Any], None] | None:
        """SQLite: ``rows`` written into a scratch file; what copies them into ``table`` (None: no
        file store or no ADBC driver)."""
        native = _adbc_sqlite() if self._scratch_folder() else None
        if native is None:
            return None
        alias = f"huitouke_stage_{self._staged_files}"
        self._staged_files += 1
        path = self._scratch_folder() / f"{alias}.sqlite"
        stored = pa.table([_sqlite_storage(c) for c in rows.columns], names=rows.column_names)
        with native.connect(str(path), autocommit=True) as scratch, scratch.cursor() as cursor:
            cursor.execute("PRAGMA journal_mode = OFF")  # scratch rows: nothing to roll back or keep
            cursor.execute("PRAGMA synchronous = OFF")
            cursor.adbc_ingest("staged", stored, mode="create")
        columns = ", ".join(rows.column_names)

        def copy(dbapi: Any) -> None:
            with closing(dbapi.cursor()) as cursor:
                cursor.execute(f"ATTACH DATABASE ? AS {alias}", (str(path),))
                self._attached.append(alias)
                cursor.execute(
                    f"INSERT INTO main.{table.name} ({columns}) SELECT {columns} FROM {alias}.staged"
                )

        return copy

    @staticmethod
    def _pg_csv(table: Table, rows: pa.Table) -> Callable[[Any], None]:
        """PostgreSQL: ``rows`` as CSV; what ``COPY``s them into ``table``."""
        buffer = io.BytesIO()
        pacsv.write_csv(rows, buffer, pacsv.WriteOptions(include_header=False, batch_size=_FETCH))
        sql = f"COPY {table.name} ({', '.join(rows.column_names)}) FROM STDIN WITH (FORMAT csv, ENCODING 'UTF8')"

        def copy(dbapi: Any) -> None:
            buffer.seek(0)
            with closing(dbapi.cursor()) as cursor:
                cursor.copy_expert(sql, buffer, size=_COPY_CHUNK)

        return copy

    def wait(self) -> None:
        """Wait for the insert still running (its error raised here)."""
        copying, self._copying = self._copying, None
        if copying is not None:
            copying.result()

    def _scratch_folder(self) -> Path | None:
        """The folder of the scratch files (made at first use, beside the store); None: no file store."""
        if self._folder is None and _kind(self.conn) == "sqlite":
            database = self.conn.engine.url.database
            if database and database != ":memory:" and not database.startswith("file:"):
                self._folder = _scratch_folder_of(Path(database))
        return self._folder

    def open(self) -> None:
        """SQLite: a page cache of ``_LOAD_CACHE_KIB`` for the load (its inserts and updates land
        all over the tables' and indexes' pages; the default 2 MB spills them to the file and the
        journal again and again). Before the transaction."""
        if _kind(self.conn) == "sqlite":
            with _cursor(self.conn) as cursor:
                self._cache_kib = int(cursor.execute("PRAGMA cache_size").fetchone()[0])
                cursor.execute(f"PRAGMA cache_size = -{_LOAD_CACHE_KIB}")

    def close(self) -> None:
        """Detach and delete the scratch files, give the connection its page cache back (after the
        transaction); a connection that cannot be put back as it was is discarded."""
        if self._worker is not None:
            self._worker.shutdown(wait=True)
            self._worker = None
        if not self._attached and self._cache_kib is None:
            return
        try:
            with _cursor(self.conn) as cursor:
                for alias in self._attached:
                    cursor.execute(f"DETACH DATABASE {alias}")
                if self._cache_kib is not None:
                    cursor.execute(f"PRAGMA cache_size = {self._cache_kib}")
        except Exception:  # noqa: BLE001 - the pool must not hand this connection out again
            self.conn.invalidate()
        finally:
            if self._folder is not None:
                shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None


@contextmanager
def pipelined(bulk: BulkInserts) -> Iterator[BulkInserts]:
    """``bulk`` for the block's inserts, every one of them done at its end (failed or not: the
    connection is free again when the block is left)."""
    try:
        yield bulk
    except BaseException:
        with suppress(Exception):
            bulk.wait()
        raise
    bulk.wait()


@contextmanager
def bulk_inserts(conn: Connection) -> Iterator[BulkInserts]:
    """A :class:`BulkInserts` for the transactions run on ``conn`` inside the block."""
    bulk = BulkInserts(conn)
    try:
        bulk.open()
        yield bulk
    finally:
        bulk.close()


def _scratch_folder_of(store: Path) -> Path:
    """A new scratch folder beside the SQLite file ``store``. Made while the transaction holds the
    store's write lock, so any older one of this store was left by a load that was killed: it goes
    (it holds the rows of that load, personal data among them)."""
    prefix = f".{store.name}.load-"
    for stale in store.parent.glob(f"{glob.escape(prefix)}*"):
        shutil.rmtree(stale, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=store.parent))


def _adbc_sqlite() -> Any:
    try:
        import adbc_driver_sqlite.dbapi as native
    except ImportError:  # pragma: no cover - a dependency; executemany still works
        return None
    return native


def _sqlite_storage(column: pa.ChunkedArray) -> pa.Array:
    """A column in SQLAlchemy's SQLite storage format, as Arrow (see :func:`_sqlite_values`)."""
    column = column.combine_chunks()
    if pa.types.is_timestamp(column.type):
        return column.cast(pa.timestamp("us")).cast(pa.string())
    if pa.types.is_date(column.type):
        return column.cast(pa.string())
    if pa.types.is_boolean(column.type):
        return column.cast(pa.int8())
    return column


@contextmanager
def indexes_rebuilt(conn: Connection, tables: Sequence[Table], rows: int) -> Iterator[None]:
    """On PostgreSQL, when ``tables`` are all empty and ``rows`` (about to be inserted) are at least
    ``_REBUILD_MIN_ROWS``: their secondary indexes and foreign keys dropped for the block and made
    again after it, from their definitions as stored, in the same transaction (one sort per index
    and one join per key instead of a B-tree insert and a trigger per row: 2-3x faster). A failure
    rolls the drops back with the rest. The drops lock the tables against readers until the
    transaction ends: only for a first load. Elsewhere nothing."""
    if _kind(conn) != "postgresql" or rows < _REBUILD_MIN_ROWS or any(has_rows(conn, t) for t in tables):
        yield
        return
    found = _pg_dropped_keys_and_indexes(conn, [t.name for t in tables])
    yield
    with _cursor(conn) as cursor:
        for kind, table, name, definition in reversed(found):
            cursor.execute(
                f"ALTER TABLE {table} ADD CONSTRAINT {name} {definition}" if kind == "key" else definition
            )


def _pg_dropped_keys_and_indexes(conn: Connection, names: list[str]) -> list[tuple[str, str, str, str]]:
    """Drop the plain indexes and foreign keys of tables ``names``; what was dropped. A role that
    may not drop them (not the tables' owner) drops nothing: the load goes on, row by row."""
    import psycopg2

    with _cursor(conn) as cursor:
        cursor.execute(_PG_KEYS_AND_INDEXES, (names, names))
        found = cursor.fetchall()
        cursor.execute("SAVEPOINT huitouke_rebuild")
        try:
            for kind, table, name, _ in found:
                cursor.execute(
                    f"ALTER TABLE {table} DROP CONSTRAINT {name}" if kind == "key" else f"DROP INDEX {name}"
                )
        except psycopg2.Error as exc:
            cursor.execute("ROLLBACK TO SAVEPOINT huitouke_rebuild")
            log.warning("Indexes kept during the load (%s): inserted row by row", type(exc).__name__)
            found = []
        cursor.execute("RELEASE SAVEPOINT huitouke_rebuild")
    return found


# The foreign keys of the tables named by the first array, the plain (not unique, not primary key)
# indexes of those named by the second: (kind, table, name, definition); indexes first.
_PG_KEYS_AND_INDEXES = """
SELECT 'index', t.relname, i.relname, pg_get_indexdef(x.indexrelid)
FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid
WHERE t.relname = ANY(%s) AND t.relnamespace = to_regnamespace(current_schema())
  AND NOT x.indisunique AND NOT x.indisprimary
UNION ALL
SELECT 'key', t.relname, c.conname, pg_get_constraintdef(c.oid)
FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid
WHERE c.contype = 'f' AND t.relname = ANY(%s) AND t.relnamespace = to_regnamespace(current_schema())
"""


# ----------------------------------------------------------------------- statements over rows


def delete_by_ids(conn: Connection, table: Table, column: str, ids: Sequence[Any]) -> None:
    """Delete the rows of ``table`` whose ``column`` is one of ``ids``."""
    if not ids:
        return
    kind = _kind(conn)
    if kind == "postgresql":
        with _cursor(conn) as cursor:
            cursor.execute(f"DELETE FROM {table.name} WHERE {column} = ANY(%s)", (list(ids),))
    elif kind == "sqlite":
        with _cursor(conn) as cursor:
            cursor.executemany(f"DELETE FROM {table.name} WHERE {column} = ?", ((i,) for i in ids))
    else:
        for chunk in chunks(list(ids)):
            conn.execute(delete(table).where(table.c[column].in_(chunk)))


def update_by_ids(
    conn: Connection,
    table: Table,
    values: Mapping[str, Any],
    column: str,
    ids: Sequence[Any],
    *,
    where: str = "",
    index: str | None = None,
) -> None:
    """``UPDATE table SET values WHERE [where AND] column IN ids`` in one statement (elsewhere
    than SQLite and PostgreSQL: one per id). ``where``: SQL without parameters. ``index``: as for
    :class:`ArrowSelect` (SQLite runs the statement without holding Python's lock, so the caller
    may go on computing meanwhile)."""
    ids = list(ids)
    if not ids:
        return
    sets = ", ".join(f"{name} = %s" for name in values)
    condition = f"{where} AND " if where else ""
    kind = _kind(conn)
    if kind == "postgresql":
        with _cursor(conn) as cursor:
            sql = f"UPDATE {table.name} SET {sets} WHERE {condition}{column} = ANY(%s)"
            cursor.execute(sql, (*values.values(), ids))
    elif kind == "sqlite":
        hint = f" INDEXED BY {index}" if index else ""
        in_json = f"{column} IN (SELECT value FROM json_each(%s))"
        sql = f"UPDATE {table.name}{hint} SET {sets} WHERE {condition}{in_json}"
        with _cursor(conn) as cursor:
            cursor.execute(sql.replace("%s", "?"), (*map(_sqlite_param, values.values()), json.dumps(ids)))
    else:
        sql = f"UPDATE {table.name} SET {sets} WHERE {condition}{column} = %s"
        statement, fixed = _named(sql, [*values.values(), None])
        for chunk in chunks(ids, _BATCH):
            conn.execute(statement, [{**fixed, f"p{len(values)}": i} for i in chunk])


def update_where(
    conn: Connection,
    table: Table,
    values: Mapping[str, Any],
    where: str,
    params: Sequence[Any] = (),
    *,
    index: str | None = None,
) -> int:
    """``UPDATE table SET values WHERE where`` (plain SQL with ``%s`` placeholders for
    ``params``); the number of rows updated. ``index``: as for :class:`ArrowSelect`."""
    sets = ", ".join(f"{name} = %s" for name in values)
    if _kind(conn) == "sqlite":
        hint = f" INDEXED BY {index}" if index else ""
        sql = f"UPDATE {table.name}{hint} SET {sets} WHERE {where}".replace("%s", "?")
        with _cursor(conn) as cursor:
            cursor.execute(sql, tuple(_sqlite_param(p) for p in (*values.values(), *params)))
            return int(cursor.rowcount)
    statement, named = _named(f"UPDATE {table.name} SET {sets} WHERE {where}", [*values.values(), *params])
    return int(conn.execute(statement, named).rowcount or 0)


def has_rows(conn: Connection, table: Table) -> bool:
    """Whether ``table`` holds any row (an empty store takes the fast path of a first load)."""
    return bool(conn.scalar(select(exists().select_from(table))))


def update_arrow(
    conn: Connection,
    table: Table,
    rows: pa.Table,
    key: str,
    *,
    constants: Mapping[str, Any] | None = None,
    keep_stored: Sequence[str] = (),
) -> None:
    """Update the stored rows of ``table`` whose ``key`` is one of ``rows``' keys: each other column
    of ``rows`` to the row's value (a null in a ``keep_stored`` column keeps the stored value), and
    the ``constants`` columns to their value. SQLite: one ``executemany``; PostgreSQL: ``COPY`` into
    a temporary table, then one ``UPDATE ... FROM``."""
    if rows.num_rows == 0:
        return
    constants = dict(constants or {})
    names = [c for c in rows.column_names if c != key]
    kind = _kind(conn)
    if kind == "sqlite":
        sets = [f"{c} = coalesce(?, {c})" if c in keep_stored else f"{c} = ?" for c in names]
        sets += [f"{c} = ?" for c in constants]
        sql = f"UPDATE {table.name} SET {', '.join(sets)} WHERE {key} = ?"
        fixed = [_sqlite_param(v) for v in constants.values()]
        with _cursor(conn) as cursor:
            for batch in rows.select([*names, key]).to_batches(_FETCH):
                columns = [_sqlite_values(c) for c in batch.columns]
                values = ((*row[:-1], *fixed, row[-1]) for row in zip(*columns, strict=True))
                cursor.executemany(sql, values)
    elif kind == "postgresql":
        _pg_update(conn, table, rows, key, names, constants, keep_stored)
    else:
        _core_update(conn, table, rows, key, names, constants, keep_stored)


def _pg_update(
    conn: Connection,
    table: Table,
    rows: pa.Table,
    key: str,
    names: list[str],
    constants: Mapping[str, Any],
    keep_stored: Sequence[str],
) -> None:
    columns = ", ".join([key, *names])
    staging = f"huitouke_update_{table.name}_{zlib.crc32(columns.encode()):08x}"
    sets = [f"{c} = coalesce(s.{c}, t.{c})" if c in keep_stored else f"{c} = s.{c}" for c in names]
    sets += [f"{c} = %s" for c in constants]
    with _cursor(conn) as cursor:
        cursor.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {staging} ON COMMIT DELETE ROWS AS "
            f"SELECT {columns} FROM {table.name} WITH NO DATA"
        )
        cursor.execute(f"TRUNCATE {staging}")
        _pg_copy_in(cursor, staging, columns, rows.select([key, *names]))
        cursor.execute(
            f"UPDATE {table.name} AS t SET {', '.join(sets)} FROM {staging} AS s WHERE t.{key} = s.{key}",
            tuple(constants.values()),
        )


def _core_update(
    conn: Connection,
    table: Table,
    rows: pa.Table,
    key: str,
    names: list[str],
    constants: Mapping[str, Any],
    keep_stored: Sequence[str],
) -> None:
    """Through SQLAlchemy, one statement per row (other drivers)."""
    values: dict[str, Any] = {
        c: func.coalesce(bindparam(f"b_{c}"), table.c[c]) if c in keep_stored else bindparam(f"b_{c}")
        for c in names
    }
    statement = update(table).where(table.c[key] == bindparam("b_key")).values(**values, **constants)
    for batch in rows.to_batches(_BATCH):
        conn.execute(
            statement, [{"b_key": r[key], **{f"b_{c}": r[c] for c in names}} for r in batch.to_pylist()]
        )
