"""The daily segments step through the CRM store: ``update_segments`` end to end at 1M customers.

``bench/segments.py`` measured the pure in-memory parts of stage 2. This measures the real thing:
:func:`huitouke.pipeline.update_segments` as the daily DAG runs it, in one transaction against the
store named by the ``crm_db`` Connection, on a SQLite file and on PostgreSQL 15. Per database:

1. **store**: the schema by :func:`huitouke.store.migrate.upgrade`; then 1,000,000 customers,
   10,000,000 orders and their ~14.6 million lines (the shop of ``bench/segments.py``'s
   ``generate``) bulk-loaded straight into ``customers``, ``orders`` and ``order_lines``, every
   order with ``state_applied_at`` null. SQLite: ``executemany`` in big transactions under
   ``journal_mode=WAL, synchronous=OFF``, secondary indexes dropped and re-created, then back to
   the default rollback journal and no statistics, as the store is by default. PostgreSQL:
   ``COPY`` (CSV written by pyarrow), secondary indexes and the lines' foreign key dropped and
   re-created, then ``VACUUM ANALYZE`` (what autovacuum would do). Timed for information only.
2. **D0**, the first ``update_segments`` run: every order is unfolded, so it takes the rebuild path
   (every order and line read, the state built in memory and written whole, the first history and
   KPIs) and stamps all 10 million orders applied in one ``UPDATE``; it leaves the snapshot of the
   state and open history in the cache (``HUITOUKE_CACHE_DIR``, here a folder of the work
   directory). ``ANALYZE`` after D0 on PostgreSQL, as autovacuum would. ``BENCH_D0=bulk`` skips
   this run: the orders are loaded as applied and D0's state, history, KPIs and snapshot computed
   in memory and written with the library's functions.
3. **D1 intake**: the real :func:`~huitouke.intake.validate.validate` and
   :func:`~huitouke.intake.load.load_batch` of 20,000 new orders (about 19,000 customers, 1,000
   of them new) and 500 refunds of older paid orders (intake marks them unapplied). The refunded
   orders' ``content_hash`` is set beforehand to what validation computes, as a real intake would
   have stored it.
4. **D1**, the daily step: ``update_segments`` for the next day, the persist, snapshot and pure
   functions wrapped with timers (the readers split into SQL + fetch into Arrow, in
   ``huitouke.store.rows``, and Arrow to pandas). First one run without the snapshot (``HUITOUKE_CACHE_DIR=off``: a worker that did not
   run the previous day reads the state and the open history from the tables), then
   ``BENCH_REPEATS`` runs with the snapshot D0 left. Every run starts from the same store: before
   each, D1's run is undone (its history, KPIs, the state and spend rows of its customers, the
   stamps of its orders and what the state counted of them, the store's snapshot files; not timed).
5. optionally, the **rebuild path** (the category groups changed: every order read), a **check**
   that the stored state equals a full build from the stored orders and that the snapshot equals
   the tables, and the **alternatives** (not library code: the measures behind the design, the
   store's parts of D1 done other ways next to the persist functions).

Each ``update_segments`` and the intake run in a fresh process, as an Airflow task does, and report
their own peak RSS (VmHWM). Goals (issue 3): daily step <= 2 s, full rebuild from the store <= 60 s,
peak memory <= 4 GB.

Run: ``.venv/bin/python bench/segments_store.py``: about 25 minutes at full scale for both
databases; ``BENCH_D0=bulk`` measures the daily step in about 12 minutes. ``BENCH_SCALE`` (1; 0.05
for a quick run of 50,000 customers and 500,000 orders), ``BENCH_DB`` (sqlite, postgres or both:
both), ``BENCH_REPEATS`` (3), ``BENCH_DIR`` (where the SQLite file, the snapshot cache and the D1
input go, kept; default a temporary folder, deleted), ``BENCH_REBUILD`` and ``BENCH_CHECK`` (1
below BENCH_SCALE=0.2), ``BENCH_ALTERNATIVES`` (0). PostgreSQL is started as in the tests
(``tests/pg_server.py``: the installed server binaries, as the ``postgres`` user under root).
"""

from __future__ import annotations

import datetime as dt
import gc
import io
import json
import os
import pickle
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))

from segments import _ids, _lines, generate  # noqa: E402  (bench/segments.py: the same shop)

from huitouke import records  # noqa: E402

SCALE = float(os.environ.get("BENCH_SCALE", "1"))
CUSTOMERS = max(1_000, int(1_000_000 * SCALE))
ORDERS = max(10_000, int(10_000_000 * SCALE))
DAILY_ORDERS = 20_000 if SCALE >= 0.1 else max(200, int(200_000 * SCALE))
DAILY_REFUNDS = DAILY_ORDERS // 40
REPEATS = max(1, int(os.environ.get("BENCH_REPEATS", "3")))
DATABASES = {"both": ("sqlite", "postgres")}.get(
    os.environ.get("BENCH_DB", "both"), (os.environ.get("BENCH_DB", "both"),)
)
CHECK = os.environ.get("BENCH_CHECK", "1" if SCALE < 0.2 else "0") == "1"
REBUILD = os.environ.get("BENCH_REBUILD", "1" if SCALE < 0.2 else "0") == "1"
# The measures behind the store path's design (raw cursors, COPY, snapshot formats, set-based
# writes), next to the library functions: off by default now that the library does them.
ALTERNATIVES = os.environ.get("BENCH_ALTERNATIVES", "0") == "1"
# run: D0 is the first update_segments (every order unfolded: the rebuild path). bulk: the orders
# are loaded as applied and D0's state, history, KPIs and snapshot are computed in memory and
# written with the library's functions, for a quicker measure of the daily step.
D0_MODE = os.environ.get("BENCH_D0", "run")
CHUNK = 1_000_000  # rows per executemany / COPY batch while loading
PLACEHOLDER_HASH = "0" * 64
SOURCE = "bench"
_DAY_NS = 86_400 * 10**9
_SHOP_OFFSET_NS = 8 * 3_600 * 10**9  # Asia/Shanghai, no DST

# The persist functions and the pure functions update_segments calls, in call order, with the
# label each is reported under.
PERSIST_PARTS = (
    ("lock_store", "lock_store"),
    ("latest_run", "latest_run"),
    ("read_pending", "read_pending (the unfolded orders)"),
    ("read_state", "read_state (whole table; no snapshot)"),
    ("read_orders", "read_orders (all orders of recomputed customers)"),
    ("read_spend", "read_spend (added customers)"),
    ("read_lines", "read_lines (added orders)"),
    ("read_open_history", "read_open_history (all open rows; no snapshot)"),
    ("rewind_history", "rewind_history (repeats only)"),
    ("mark_folded", "mark_folded"),
    ("mark_applied", "mark_applied (no lock)"),
    ("replace_state", "replace_state write"),
    ("replace_spend", "replace_spend write"),
    ("write_folded", "write_folded (state and spend rows)"),
    ("write_history", "write_history"),
    ("write_day", "write_day (KPIs, transitions)"),
    ("open_rows_after", "open_rows_after (for the snapshot)"),
)
SNAPSHOT_PARTS = (
    ("load", "snapshot load"),
    ("prepare", "snapshot write (before the commit)"),
    ("publish", "snapshot publish (after the commit)"),
)
PURE_PARTS = (
    ("load_segment_settings", "load_segment_settings"),
    ("build_state_and_spend", "build_state_and_spend (rebuild path)"),
    ("plan_fold", "plan_fold"),
    ("fold_rows", "fold_rows (the touched customers' rows)"),
    ("fold_state", "fold_state (merged into the whole state)"),
    ("classify", "classify"),
    ("diff_segments", "diff_segments"),
    ("compute_kpis", "compute_kpis"),
    ("format_kpis", "format_kpis"),
)


def rss_gb() -> float:
    """Peak resident memory of this process image so far, in GB.

    VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec, so a child would report at least
    the RSS of the (big) parent it was forked from."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024**2
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def say(text: str) -> None:
    print(text, flush=True)


# ------------------------------------------------------------------------------ the shop's rows


def _const(value: Any, n: int, type_: pa.DataType) -> pa.Array:
    return pa.repeat(pa.scalar(value, type=type_), n)


def _text_of(values: pd.Series) -> pa.Array:
    array = pa.array(values)
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    return array.cast(pa.string())


def orders_table(part: pd.DataFrame, now: np.datetime64, applied: bool) -> pa.Table:
    """Rows of ``orders`` for a slice of the generated orders (columns as in the store)."""
    n = len(part)
    ts = pa.timestamp("us")
    return pa.table(
        {
            "order_id": _text_of(part["order_id"]),
            "customer_id": _text_of(part["customer_id"]),
            "paid_at": pa.array(part["paid_at"].to_numpy().astype("datetime64[us]")),
            "business_date": pa.array(part["business_date"].to_numpy().astype("datetime64[D]")),
            "status": _text_of(part["status"]),
            "amount_cents": pa.array(part["amount_cents"].to_numpy()),
            "acquisition_source": _text_of(part["acquisition_source"]),
            "coupon_code": pa.nulls(n, pa.string()),
            "content_hash": _const(PLACEHOLDER_HASH, n, pa.string()),
            "source": _const(SOURCE, n, pa.string()),
            "source_updated_at": pa.nulls(n, ts),
            "loaded_at": _const(now.astype("datetime64[us]").item(), n, ts),
            "status_changed_at": _const(now.astype("datetime64[us]").item(), n, ts),
            "state_applied_at": _const(now.astype("datetime64[us]").item(), n, ts)
            if applied
            else pa.nulls(n, ts),
        }
    )


def lines_table(part: pd.DataFrame, line_no: np.ndarray) -> pa.Table:
    n = len(part)
    return pa.table(
        {
            "order_id": _text_of(part["order_id"]),
            "line_no": pa.array(line_no, pa.int32()),
            "sku": pa.nulls(n, pa.string()),
            "product_name": pa.nulls(n, pa.string()),
            "category": _text_of(part["category"]),
            "quantity": pa.nulls(n, pa.int32()),
            "amount_cents": pa.array(part["amount_cents"].to_numpy()),
        }
    )


def customers_table(ids: pa.Array, now: np.datetime64) -> pa.Table:
    n = len(ids)
    ts = pa.timestamp("us")
    return pa.table(
        {
            "customer_id": ids,
            "name": pa.nulls(n, pa.string()),
            "phone": pa.nulls(n, pa.string()),
            "email": pa.nulls(n, pa.string()),
            "birthday": pa.nulls(n, pa.date32()),
            "sms_opt_out": _const(False, n, pa.bool_()),
            "email_opt_out": _const(False, n, pa.bool_()),
            "first_seen_at": _const(now.astype("datetime64[us]").item(), n, ts),
            "updated_at": _const(now.astype("datetime64[us]").item(), n, ts),
        }
    )


def line_numbers(order_ids: pd.Series) -> np.ndarray:
    """1, 2, 3 within each order (the generator writes an order's lines next to each other)."""
    ids = _text_of(order_ids)
    n = len(ids)
    new = np.ones(n, dtype=bool)
    if n > 1:
        new[1:] = pc.not_equal(ids.slice(1), ids.slice(0, n - 1)).to_numpy(zero_copy_only=False)
    start = np.maximum.accumulate(np.where(new, np.arange(n), 0))
    return np.arange(n) - start + 1


def table_batches(
    orders: pd.DataFrame, lines: pd.DataFrame, now: np.datetime64
) -> Iterator[tuple[str, pa.Table]]:
    """(table name, a batch of its rows) for customers, orders and order_lines, CHUNK rows at a time."""
    customer_ids = pc.unique(_text_of(orders["customer_id"]))
    customer_ids = customer_ids.take(pc.array_sort_indices(customer_ids))
    for start in range(0, len(customer_ids), CHUNK):
        yield "customers", customers_table(customer_ids.slice(start, CHUNK), now)
    for start in range(0, len(orders), CHUNK):
        yield "orders", orders_table(orders.iloc[start : start + CHUNK], now, D0_MODE == "bulk")
    numbers = line_numbers(lines["order_id"])
    for start in range(0, len(lines), CHUNK):
        yield "order_lines", lines_table(lines.iloc[start : start + CHUNK], numbers[start : start + CHUNK])


# ------------------------------------------------------------------------------------ loading


def _sqlite_values(table: pa.Table) -> Iterator[tuple[Any, ...]]:
    """Rows as SQLAlchemy stores them in SQLite: DateTime 'YYYY-MM-DD HH:MM:SS.ffffff', Date
    'YYYY-MM-DD', Boolean 0/1."""
    columns = []
    for column in table.columns:
        if pa.types.is_timestamp(column.type):
            column = pc.strftime(column, format="%Y-%m-%d %H:%M:%S")
        elif pa.types.is_date(column.type):
            column = column.cast(pa.string())
        elif pa.types.is_boolean(column.type):
            column = column.cast(pa.int8())
        columns.append(column.to_pylist())
    return zip(*columns, strict=True)


def load_sqlite(path: Path, orders: pd.DataFrame, lines: pd.DataFrame, now: np.datetime64) -> dict[str, Any]:
    from huitouke.store.connection import make_engine
    from huitouke.store.migrate import upgrade

    started = time.perf_counter()
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=OFF")
    con.execute("PRAGMA cache_size=-1000000")
    indexes = con.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL "
        "AND tbl_name IN ('customers', 'orders', 'order_lines')"
    ).fetchall()
    for name, _ in indexes:
        con.execute(f'DROP INDEX "{name}"')
    marks: dict[str, float] = defaultdict(float)
    for name, table in table_batches(orders, lines, now):
        t0 = time.perf_counter()
        sql = f"INSERT INTO {name} ({', '.join(table.column_names)}) VALUES ({', '.join('?' * table.num_columns)})"
        con.execute("BEGIN")
        con.executemany(sql, _sqlite_values(table))
        con.execute("COMMIT")
        marks[name] += time.perf_counter() - t0
    t0 = time.perf_counter()
    for _, sql in indexes:
        con.execute(sql)
    marks["indexes"] = time.perf_counter() - t0
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.execute("PRAGMA journal_mode=DELETE")  # the store's default, as make_engine leaves it
    con.close()
    marks["total"] = time.perf_counter() - started
    marks["size_gb"] = path.stat().st_size / 1024**3
    return dict(marks)


def load_postgres(url: str, orders: pd.DataFrame, lines: pd.DataFrame, now: np.datetime64) -> dict[str, Any]:
    import psycopg2

    from huitouke.store.connection import make_engine
    from huitouke.store.migrate import upgrade

    started = time.perf_counter()
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    dsn = url.replace("postgresql+psycopg2://", "postgresql://")
    con = psycopg2.connect(dsn)
    cur = con.cursor()
    tables = ("customers", "orders", "order_lines")
    cur.execute(
        "SELECT i.indexname, i.indexdef FROM pg_indexes i LEFT JOIN pg_constraint c ON c.conname = i.indexname "
        "WHERE i.tablename = ANY(%s) AND c.conname IS NULL",
        (list(tables),),
    )
    indexes = cur.fetchall()
    cur.execute(
        "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE contype = 'f' AND conrelid::regclass::text = ANY(%s)",
        (list(tables),),
    )
    foreign_keys = cur.fetchall()
    for table, name, _ in foreign_keys:
        cur.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
    for name, _ in indexes:
        cur.execute(f'DROP INDEX "{name}"')
    con.commit()
    marks: dict[str, float] = defaultdict(float)
    options = pacsv.WriteOptions(include_header=False)
    for name, table in table_batches(orders, lines, now):
        t0 = time.perf_counter()
        buffer = io.BytesIO()
        pacsv.write_csv(table, buffer, options)
        buffer.seek(0)
        cur.copy_expert(f"COPY {name} ({', '.join(table.column_names)}) FROM STDIN WITH (FORMAT csv)", buffer)
        con.commit()
        marks[name] += time.perf_counter() - t0
    t0 = time.perf_counter()
    for _, sql in indexes:
        cur.execute(sql)
    for table, name, definition in foreign_keys:
        cur.execute(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')
    con.commit()
    marks["indexes"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    con.autocommit = True
    cur.execute("VACUUM ANALYZE")
    marks["analyze"] = time.perf_counter() - t0
    cur.execute("SELECT pg_database_size(current_database())")
    marks["size_gb"] = cur.fetchone()[0] / 1024**3
    con.close()
    marks["total"] = time.perf_counter() - started
    return dict(marks)


# ------------------------------------------------------------------------------- D1's intake


def raw_rows(
    orders: pd.DataFrame, lines: pd.DataFrame, status: str, updated: pd.Series | None
) -> pd.DataFrame:
    """Canonical source rows (records.ALL_COLUMNS), one per line, for these orders and their lines."""
    head = pd.DataFrame(
        {
            "order_id": orders["order_id"].astype("str").to_numpy(dtype=object),
            "customer_id": orders["customer_id"].astype("str").to_numpy(dtype=object),
            "paid_at": pd.Series(orders["paid_at"].to_numpy()).dt.tz_localize("UTC"),
            "amount": orders["amount_cents"].to_numpy() / 100,
            "status": status,
            "acquisition_source": orders["acquisition_source"].astype("str").to_numpy(dtype=object),
            "updated_at": pd.Series(
                updated.to_numpy() if updated is not None else orders["paid_at"].to_numpy()
            )
            .dt.tz_localize("UTC")
            .to_numpy(),
        }
    )
    body = pd.DataFrame(
        {
            "order_id": lines["order_id"].astype("str").to_numpy(dtype=object),
            "category": lines["category"].astype("str").to_numpy(dtype=object),
            "line_amount": lines["amount_cents"].to_numpy() / 100,
        }
    )
    rows = head.merge(body, on="order_id", how="left", sort=False)
    rows["category"] = rows["category"].astype(object).where(rows["category"].notna(), None)
    for column in (
        "coupon_code",
        "customer_name",
        "phone",
        "email",
        "birthday",
        "sku",
        "product_name",
        "quantity",
    ):
        rows[column] = None
    return rows


def intake_input(
    orders: pd.DataFrame, lines: pd.DataFrame, day: np.datetime64, rng: np.random.Generator
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """D1's source rows (new orders + refunds), and the refunded orders' rows as they were paid
    (to compute the content hash a real intake would have stored for them)."""
    customers = orders["customer_id"].unique()
    returning = customers[
        rng.choice(len(customers), DAILY_ORDERS * 9 // 10 - DAILY_ORDERS // 20, replace=False)
    ]
    new = _ids("n", np.arange(DAILY_ORDERS // 20), 7).to_numpy()
    buyers = np.concatenate([np.asarray(returning, dtype=object), new])
    who = np.concatenate([buyers, buyers[rng.integers(0, buyers.size, DAILY_ORDERS - buyers.size)]])
    local = day.astype("datetime64[ns]").astype(np.int64) + rng.integers(0, _DAY_NS, DAILY_ORDERS)
    amount = np.round(rng.lognormal(np.log(8_500), 0.7, DAILY_ORDERS)).astype(np.int64)
    today = pd.DataFrame(
        {
            "order_id": _ids("D", np.arange(DAILY_ORDERS), 10),
            "customer_id": pd.Series(who, dtype="str"),
            "paid_at": (local - _SHOP_OFFSET_NS).astype("datetime64[ns]"),
            "amount_cents": amount,
            "acquisition_source": records.ORGANIC,
        }
    )
    today_lines = _lines(rng, today["order_id"], amount)
    new_rows = raw_rows(today, today_lines, records.PAID, None)

    paid = np.flatnonzero(orders["status"].isin(sorted(records.PAID_STATUSES)).to_numpy())
    chosen = orders.iloc[np.sort(rng.choice(paid, DAILY_REFUNDS, replace=False))]
    mask = pc.is_in(_text_of(lines["order_id"]), value_set=_text_of(chosen["order_id"]))
    chosen_lines = lines[mask.to_numpy(zero_copy_only=False)]
    refund_time = pd.Series(
        (
            day.astype("datetime64[ns]").astype(np.int64)
            + rng.integers(0, _DAY_NS, len(chosen))
            - _SHOP_OFFSET_NS
        ).astype("datetime64[ns]")
    )
    refunds = raw_rows(chosen, chosen_lines, records.REFUNDED, refund_time)
    as_paid = raw_rows(chosen, chosen_lines, records.PAID, None)
    return pd.concat([new_rows, refunds], ignore_index=True), as_paid


def stored_hashes(as_paid: pd.DataFrame, day: dt.date) -> list[tuple[str, str]]:
    """(content_hash, order_id) that validation gives the refunded orders as first loaded."""
    from huitouke.config import load_settings
    from huitouke.intake.validate import validate

    batch = validate(as_paid, load_settings().tz, day)
    if len(batch.quarantine):
        raise RuntimeError(f"refund rows quarantined: {batch.quarantine['reason'].value_counts().to_dict()}")
    return list(zip(batch.orders["content_hash"], batch.orders["order_id"], strict=True))


# ------------------------------------------------------------------- the child: one timed task


def instrument() -> tuple[dict[str, float], dict[str, int]]:
    """Wrap what update_segments calls with timers (module attributes, looked up at call time)."""
    import functools

    import huitouke.segments as seg
    from huitouke.segments import persist, snapshot
    from huitouke.store import rows as store_rows

    marks: dict[str, float] = defaultdict(float)
    rows: dict[str, int] = defaultdict(int)
    stack: list[str] = []

    def wrap(owner: Any, name: str, label: str) -> None:
        original = getattr(owner, name)

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            stack.append(label)
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                marks[label] += time.perf_counter() - started
                stack.pop()

        setattr(owner, name, timed)

    for name, label in PERSIST_PARTS:
        wrap(persist, name, label)
    for name, label in SNAPSHOT_PARTS:
        wrap(snapshot, name, label)
    for name, label in PURE_PARTS:
        wrap(seg, name, label)

    def split(owner: Any, name: str, label: str) -> None:
        # The store's Arrow readers (store/rows.py) and persist's conversion to pandas, timed inside
        # the part that calls them: SQL + fetch into Arrow, and Arrow -> pandas.
        original = getattr(owner, name)

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            where = stack[-1] if stack else "?"
            started = time.perf_counter()
            result = original(*args, **kwargs)
            marks[f"{where} | {label}"] += time.perf_counter() - started
            if isinstance(result, pa.Table):
                rows[where] += result.num_rows
            return result

        setattr(owner, name, timed)

    for name in ("_sqlite_native_table", "_sqlite_table", "_pg_table", "_core_table"):
        split(store_rows, name, "SQL + fetch into Arrow")
    split(persist, "_to_pandas", "Arrow -> pandas")

    from sqlalchemy.engine import Connection

    commit = Connection._commit_impl

    def timed_commit(self: Any) -> None:
        t0 = time.perf_counter()
        try:
            commit(self)
        finally:
            marks["COMMIT"] += time.perf_counter() - t0

    Connection._commit_impl = timed_commit
    return marks, rows


def child(task: dict[str, Any]) -> dict[str, Any]:
    import logging

    logging.basicConfig(level=logging.WARNING)
    from huitouke.config import load_settings
    from huitouke.store.connection import url_for

    settings = load_settings()
    url_for(settings.store.conn_id)  # import Airflow and resolve the Connection once (a task has both)
    day = dt.date.fromisoformat(task["day"])
    start = dt.datetime(day.year, day.month, day.day, tzinfo=settings.tz)
    out: dict[str, Any] = {}
    if task["step"] == "segments":
        from huitouke.pipeline import update_segments

        marks, rows = instrument()
        t0 = time.perf_counter()
        summary = update_segments(start, settings)
        marks["total"] = time.perf_counter() - t0
        out = {"marks": dict(marks), "rows": dict(rows), "summary": summary}
    elif task["step"] == "intake":
        from huitouke.intake.load import load_batch
        from huitouke.intake.validate import validate
        from huitouke.store.connection import engine_for

        with open(task["rows"], "rb") as handle:
            raw = pickle.load(handle)
        t0 = time.perf_counter()
        batch = validate(raw, settings.tz, day)
        t1 = time.perf_counter()
        summary = load_batch(engine_for(settings.store.conn_id), batch, SOURCE, day)
        t2 = time.perf_counter()
        out = {
            "marks": {"validate": t1 - t0, "load_batch": t2 - t1, "total": t2 - t0},
            "summary": summary.as_dict(),
        }
    elif task["step"] == "check":
        from huitouke.segments import build_state_and_spend, load_segment_settings, persist, snapshot
        from huitouke.store.connection import engine_for

        engine = engine_for(settings.store.conn_id)
        with engine.connect() as conn:
            orders, lines = persist.read_orders(conn)
            stored = persist.read_state(conn)
            stored_spend = persist.read_spend(conn)
            history = persist.read_open_history(conn)
            run = persist.latest_run(conn)
        full, spend = build_state_and_spend(orders, lines, settings=load_segment_settings(), until=day)
        del orders, lines
        same = all(
            len(a) == len(b)
            and all(
                a[c].astype(str).reset_index(drop=True).equals(b[c].astype(str).reset_index(drop=True))
                for c in a
            )
            for a, b in ((full, stored), (spend, stored_spend))
        )
        key = snapshot.SnapshotKey(
            snapshot.store_id(engine.url), run.business_date, run.computed_at, run.fingerprint, run.customers
        )
        folder = snapshot.cache_dir_for(engine.url)
        saved = snapshot.load(folder, key) if folder is not None else None
        same_snapshot = saved is not None and saved.state.equals(stored) and saved.open_rows.equals(history)
        out = {
            "same_state": bool(same),  # and the same spend rows
            "same_snapshot": bool(same_snapshot),
            "customers": len(full),
            "open_history": len(history),
        }
    elif task["step"] == "alternatives":
        out = alternatives(day)
    out["rss_gb"] = rss_gb()
    return out


def run_child(step: str, conn: str, day: dt.date, cache: bool = True, **extra: Any) -> dict[str, Any]:
    env = dict(os.environ, AIRFLOW_CONN_CRM_DB=conn)
    if not cache:
        env["HUITOUKE_CACHE_DIR"] = "off"  # as on a worker that did not run the previous day
    task = {"step": step, "day": day.isoformat(), **extra}
    result = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(task)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"{step} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    for line in result.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    raise RuntimeError(f"{step}: no result\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")


# ------------------------------------------------- alternatives (not library code: for the proposals)

_ORDER_SQL = "SELECT order_id, customer_id, paid_at, business_date, status, amount_cents, acquisition_source FROM orders"
_LINE_SQL = (
    "SELECT order_lines.order_id, order_lines.category, order_lines.amount_cents FROM order_lines "
    "JOIN orders ON orders.order_id = order_lines.order_id"
)
# D1's touched customers, after the run: the customers of the orders its mark_applied stamped. The
# daily query would say "state_applied_at IS NULL AND business_date <= :day" instead.
_TOUCHED_SQL = (
    "SELECT customer_id FROM orders WHERE state_applied_at = (SELECT max(state_applied_at) FROM orders)"
)
_STATE_SQL = (
    "SELECT customer_id, first_paid_at, last_paid_at, first_business_date, last_business_date, paid_orders, "
    "total_cents, aov_cents, main_category_group, acquisition_source FROM customer_state"
)
_HISTORY_COLUMNS = (
    "customer_id, valid_from, valid_to, lifecycle, r_score, f_score, m_score, member_tier, value_tier, "
    "low_value_acquisition, category_group"
)
_OPEN_SQL = f"SELECT segment_id, {_HISTORY_COLUMNS} FROM segment_history WHERE valid_to IS NULL"


def _timed(marks: dict[str, float], label: str, fn: Callable[[], Any]) -> Any:
    t0 = time.perf_counter()
    result = fn()
    marks[label] = time.perf_counter() - t0
    return result


def _dates(frame: pd.DataFrame, columns: tuple[str, ...]) -> pd.DataFrame:
    """Vectorised text -> datetime64 (SQLite returns dates and times as ISO text to a raw cursor)."""
    for column in columns:
        frame[column] = pd.to_datetime(frame[column], format="ISO8601").astype("datetime64[ns]")
    return frame


def _raw_frame(cur: Any, sql: str, params: Any = ()) -> pd.DataFrame:
    cur.execute(sql, params)
    names = [d[0] for d in cur.description]
    return pd.DataFrame.from_records(cur.fetchall(), columns=names)


def _copy_frame(cur: Any, sql: str, params: Any = ()) -> pd.DataFrame:
    """PostgreSQL: COPY (query) TO STDOUT as CSV, parsed by pyarrow (strings stay arrow-backed)."""
    buffer = io.BytesIO()
    cur.copy_expert(
        f"COPY ({cur.mogrify(sql, params).decode()}) TO STDOUT WITH (FORMAT csv, HEADER true)", buffer
    )
    buffer.seek(0)
    table = pacsv.read_csv(buffer, convert_options=pacsv.ConvertOptions(strings_can_be_null=True))
    return table.to_pandas(types_mapper={pa.string(): pd.StringDtype("pyarrow", na_value=np.nan)}.get)


def alternatives(day: dt.date) -> dict[str, Any]:
    """The store's parts of D1 done other ways, next to the persist function, in one process."""
    from huitouke.config import load_settings
    from huitouke.segments import persist
    from huitouke.store.connection import engine_for

    engine = engine_for(load_settings().store.conn_id)
    pg = engine.dialect.name == "postgresql"
    q = "%s" if pg else "?"
    marks: dict[str, float] = {}
    sizes: dict[str, float] = {}
    with engine.connect() as conn:
        raw = conn.connection.dbapi_connection
        cur = raw.cursor()
        cur.execute(_TOUCHED_SQL)
        touched = sorted({row[0] for row in cur.fetchall()})
        sizes["touched customers"] = len(touched)

        # 1. All orders and lines of the touched customers.
        orders, lines = _timed(
            marks, "orders+lines of touched: persist.read_orders", lambda: persist.read_orders(conn, touched)
        )
        sizes["orders of touched"], sizes["lines of touched"] = len(orders), len(lines)

        def chunked_raw() -> tuple[pd.DataFrame, pd.DataFrame]:
            o_parts, l_parts = [], []
            for start in range(0, len(touched), 900):
                chunk = touched[start : start + 900]
                marks_in = ", ".join([q] * len(chunk))
                o_parts.append(_raw_frame(cur, f"{_ORDER_SQL} WHERE customer_id IN ({marks_in})", chunk))
                l_parts.append(
                    _raw_frame(cur, f"{_LINE_SQL} WHERE orders.customer_id IN ({marks_in})", chunk)
                )
            return _dates(pd.concat(o_parts, ignore_index=True), ("paid_at", "business_date")), pd.concat(
                l_parts
            )

        _timed(
            marks, "orders+lines of touched: raw cursor, same 900-id chunks, vectorised dates", chunked_raw
        )

        def one_statement() -> tuple[pd.DataFrame, pd.DataFrame]:
            where = f" WHERE orders.customer_id IN ({_TOUCHED_SQL})"
            if pg:
                return _copy_frame(cur, _ORDER_SQL + where), _copy_frame(cur, _LINE_SQL + where)
            return _dates(_raw_frame(cur, _ORDER_SQL + where), ("paid_at", "business_date")), _raw_frame(
                cur, _LINE_SQL + where
            )

        label = "COPY TO STDOUT + pyarrow csv" if pg else "raw cursor"
        _timed(marks, f"orders+lines of touched: one statement (IN subquery), {label}", one_statement)

        # 2. The whole state and the open history rows.
        state = _timed(marks, "state: persist.read_state", lambda: persist.read_state(conn))
        history = _timed(
            marks, "open history: persist.read_open_history", lambda: persist.read_open_history(conn)
        )
        if pg:
            _timed(marks, "state: COPY TO STDOUT + pyarrow csv", lambda: _copy_frame(cur, _STATE_SQL))
            _timed(marks, "open history: COPY TO STDOUT + pyarrow csv", lambda: _copy_frame(cur, _OPEN_SQL))
        else:
            state_dates = ("first_paid_at", "last_paid_at", "first_business_date", "last_business_date")
            _timed(
                marks,
                "state: raw cursor, vectorised dates",
                lambda: _dates(_raw_frame(cur, _STATE_SQL), state_dates),
            )
            _timed(marks, "open history: raw cursor", lambda: _raw_frame(cur, _OPEN_SQL))
        _timed(
            marks,
            "state: pd.read_sql_query(dtype_backend=pyarrow) on the raw connection",
            lambda: pd.read_sql_query(_STATE_SQL, raw, dtype_backend="pyarrow"),
        )

        # 3. A Parquet snapshot of both, as the run could leave it for the next one.
        folder = Path(tempfile.mkdtemp(prefix="huitouke-snapshot-"))
        try:
            hist = history.assign(valid_from=pd.to_datetime(history["valid_from"]).astype("datetime64[s]"))
            hist = hist.drop(columns=["valid_to"])

            def write() -> None:
                state.to_parquet(folder / "state.parquet", index=False)
                hist.to_parquet(folder / "open_history.parquet", index=False)

            _timed(marks, "snapshot: write state + open history to Parquet", write)
            sizes["snapshot MB"] = sum(f.stat().st_size for f in folder.iterdir()) / 1024**2

            def read() -> tuple[pd.DataFrame, pd.DataFrame]:
                return pd.read_parquet(folder / "state.parquet"), pd.read_parquet(
                    folder / "open_history.parquet"
                )

            back, _ = _timed(marks, "snapshot: read state + open history from Parquet", read)
            sizes["snapshot state rows"] = len(back)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

        # 4. D1's writes again, other ways, rolled back: close the rows D1 closed, insert the rows it
        # opened, replace the touched customers' state rows.
        cur.execute(f"SELECT segment_id FROM segment_history WHERE valid_to = {q}", (day.isoformat(),))
        closed = [row[0] for row in cur.fetchall()]
        opened = _raw_frame(
            cur, f"SELECT {_HISTORY_COLUMNS} FROM segment_history WHERE valid_from = {q}", (day.isoformat(),)
        )
        touched_state = state[state["customer_id"].isin(touched)]
        sizes["history rows closed"], sizes["history rows opened"] = len(closed), len(opened)
        raw.rollback()
        if pg:

            def writes() -> None:
                cur.execute(
                    "UPDATE segment_history SET valid_to = %s WHERE segment_id = ANY(%s)", (day, closed)
                )
                buffer = io.BytesIO()
                opened.to_csv(buffer, index=False, header=False)
                buffer.seek(0)
                cur.copy_expert(
                    f"COPY segment_history ({_HISTORY_COLUMNS}) FROM STDIN WITH (FORMAT csv)", buffer
                )
                cur.execute("DELETE FROM customer_state WHERE customer_id = ANY(%s)", (touched,))
                buffer = io.BytesIO()
                touched_state.to_csv(buffer, index=False, header=False)
                buffer.seek(0)
                cur.copy_expert("COPY customer_state FROM STDIN WITH (FORMAT csv)", buffer)

            label = "writes: UPDATE .. = ANY(array) + COPY history, DELETE = ANY + COPY state (rolled back)"
        else:

            def writes() -> None:
                cur.execute("BEGIN")
                cur.executemany(
                    "UPDATE segment_history SET valid_to = ? WHERE segment_id = ?",
                    [(day.isoformat(), i) for i in closed],
                )
                cur.executemany(
                    f"INSERT INTO segment_history ({_HISTORY_COLUMNS}) VALUES ({', '.join('?' * 11)})",
                    opened.astype(object).where(opened.notna(), None).itertuples(index=False, name=None),
                )
                cur.executemany("DELETE FROM customer_state WHERE customer_id = ?", [(c,) for c in touched])
                dates = ("first_paid_at", "last_paid_at", "first_business_date", "last_business_date")
                rows = touched_state.astype({c: str for c in dates}).astype(object)
                cur.executemany(
                    f"INSERT INTO customer_state VALUES ({', '.join('?' * 10)})",
                    rows.itertuples(index=False, name=None),
                )

            label = "writes: raw executemany, history + state (rolled back)"
        _timed(marks, label, writes)
        raw.rollback()
    return {"marks": marks, "sizes": sizes}


# --------------------------------------------------------------------- SQL run on the side


class Store:
    """One database under test: its Connection (as Airflow sees it) and raw SQL for the set-up."""

    def __init__(self, kind: str, conn: str, url: str) -> None:
        self.kind, self.conn, self.url = kind, conn, url

    def execute(
        self, sql: str, params: Any = (), many: bool = False, fetch: bool = False, autocommit: bool = False
    ) -> list[Any]:
        if self.kind == "sqlite":
            con = sqlite3.connect(self.url.removeprefix("sqlite:///"))
            sql = sql.replace("%s", "?")
        else:
            import psycopg2

            con = psycopg2.connect(self.url.replace("postgresql+psycopg2://", "postgresql://"))
            con.autocommit = autocommit
        try:
            cur = con.cursor()
            (cur.executemany if many else cur.execute)(sql, params)
            rows = cur.fetchall() if fetch else []
            con.commit()
            return rows
        finally:
            con.close()


# ------------------------------------------------------------------------------------- main


def d0_in_memory(orders: pd.DataFrame, lines: pd.DataFrame, d0: dt.date) -> tuple[Any, ...]:
    """BENCH_D0=bulk: what the first update_segments computes, in memory."""
    from huitouke.segments import (
        build_state_and_spend,
        classify,
        compute_kpis,
        diff_segments,
        empty_history,
        load_segment_settings,
    )

    t0 = time.perf_counter()
    rules = load_segment_settings()
    state, spend = build_state_and_spend(orders, lines, settings=rules, until=d0)
    segments = classify(state, d0, rules)
    changes = diff_segments(empty_history(), segments, d0)
    kpis = compute_kpis(segments, d0, rules, changes.transitions)
    say(f"D0 computed in memory (BENCH_D0=bulk) in {time.perf_counter() - t0:.1f} s")
    return state, spend, segments, changes, kpis, rules.state_fingerprint()


def write_d0(
    url: str,
    d0: dt.date,
    state: pd.DataFrame,
    spend: pd.DataFrame,
    segments: pd.DataFrame,
    changes: Any,
    kpis: dict[str, Any],
    fingerprint: str,
) -> None:
    """BENCH_D0=bulk: D0's state, history and KPIs written with the persist functions, and the
    snapshot a D0 run would have left in the cache."""
    from sqlalchemy.engine import make_url

    from huitouke.segments import empty_history, persist, snapshot
    from huitouke.store.connection import make_engine

    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    engine = make_engine(url)
    with engine.begin() as conn:
        persist.replace_state(conn, state, None)
        persist.replace_spend(conn, spend, None)
        persist.write_history(conn, changes)
        persist.write_day(conn, d0, kpis, changes, fingerprint, now)
    engine.dispose()
    folder = snapshot.cache_dir_for(make_url(url))
    if folder is not None:
        empty = empty_history().drop(columns=["valid_to"])
        empty["valid_from"] = empty["valid_from"].astype("datetime64[ns]")
        opened, closed = persist.open_rows_after(empty, segments, changes)
        key = snapshot.SnapshotKey(snapshot.store_id(make_url(url)), d0, now, fingerprint, len(state))
        snapshot.publish(snapshot.prepare(folder, key, state, opened, closed))


def bench_store(
    store: Store, d0: dt.date, d1: dt.date, work: Path, refunds: list[tuple[str, str]]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if D0_MODE == "bulk":
        if store.kind == "postgres":
            store.execute("ANALYZE")
        return bench_d1(store, d1, work, refunds, out)
    say(f"  D0: the first update_segments ({d0}): every order unfolded, so the rebuild path ...")
    out["d0"] = run_child("segments", store.conn, d0)
    _print_run(out["d0"])
    if store.kind == "postgres":
        # What autovacuum does soon after D0 rewrote every order: without it the 10 million dead
        # row versions stay in the indexes and the next pending query walks them (3 s instead of 0.05).
        t0 = time.perf_counter()
        store.execute("VACUUM ANALYZE", autocommit=True)
        say(f"  VACUUM ANALYZE after D0 (as autovacuum would): {time.perf_counter() - t0:.1f} s")
    return bench_d1(store, d1, work, refunds, out)


def bench_d1(
    store: Store, d1: dt.date, work: Path, refunds: list[tuple[str, str]], out: dict[str, Any]
) -> dict[str, Any]:
    """D1's intake, D1's update_segments (REPEATS runs with the snapshot, one without), the
    alternatives, the rebuild, the check."""
    store.execute("UPDATE orders SET content_hash = %s WHERE order_id = %s", refunds, many=True)
    out["intake"] = run_child("intake", store.conn, d1, rows=str(work / "d1_rows.pickle"))
    s = out["intake"]["summary"]
    say(
        f"  D1 intake: validate {out['intake']['marks']['validate']:.2f} s + load_batch "
        f"{out['intake']['marks']['load_batch']:.2f} s: {s['inserted']:,} inserted, {s['updated']:,} updated "
        f"(refunds), {s['quarantined']:,} quarantined, {s['customers_new']:,} new customers; "
        f"peak RSS {out['intake']['rss_gb']:.2f} GB"
    )
    out["d1"] = []
    save_before_d1(store)
    # The run without the snapshot first, so that the store ends as a run with the snapshot left
    # it (the check compares the snapshot with the tables); every run starts from the same store.
    for repeat, cached in enumerate([False] + [True] * REPEATS):
        if repeat:
            reset_to_before_d1(store, d1)
        how = "with the snapshot" if cached else "without the snapshot (tables read)"
        say(f"  D1: update_segments ({d1}), run {repeat + 1} of {REPEATS + 1}, {how} ...")
        run = run_child("segments", store.conn, d1, cache=cached)
        _print_run(run)
        (out["d1"] if cached else out.setdefault("d1_cold", [])).append(run)
    if ALTERNATIVES:
        say("  the store's parts of D1 done other ways (not library code):")
        out["alternatives"] = run_child("alternatives", store.conn, d1)
        for label, seconds in out["alternatives"]["marks"].items():
            say(f"    {label:<100} {seconds:7.2f} s")
        say("    " + ", ".join(f"{k}: {v:,.0f}" for k, v in out["alternatives"]["sizes"].items()))
    if REBUILD:
        # The rebuild path (the playbook's category groups changed): every order read.
        store.execute(
            "UPDATE segment_kpis SET state_fingerprint = 'changed' WHERE business_date = %s",
            (d1.isoformat(),),
        )
        say(f"  rebuild: update_segments ({d1}) after a change of the category groups ...")
        out["rebuild"] = run_child("segments", store.conn, d1)
        _print_run(out["rebuild"])
    if CHECK:
        out["check"] = run_child("check", store.conn, d1)
        say(
            f"  check: stored state == full build from the stored orders: {out['check']['same_state']}; "
            f"snapshot == tables: {out['check']['same_snapshot']}"
        )
    return out


def _cache_files(store: Store, suffix: str = ".arrow") -> list[Path]:
    """The store's own snapshot files (the other database's stay as they are)."""
    from sqlalchemy.engine import make_url

    from huitouke.segments import snapshot

    name = snapshot.store_id(make_url(store.url))
    return list(Path(os.environ["HUITOUKE_CACHE_DIR"]).glob(f"segments-{name}.*{suffix}"))


def save_before_d1(store: Store) -> None:
    """What D1 changes, saved so that every repeat starts from the store the first run found: the
    unfolded orders (and what the state counted of them), their customers' state and spend rows,
    the snapshot files."""
    for sql in (
        "DROP TABLE IF EXISTS bench_pending",
        "CREATE TABLE bench_pending AS SELECT order_id, customer_id, folded_as_paid FROM orders "
        "WHERE state_applied_at IS NULL",
        "DROP TABLE IF EXISTS bench_state",
        "CREATE TABLE bench_state AS SELECT * FROM customer_state "
        "WHERE customer_id IN (SELECT customer_id FROM bench_pending)",
        "DROP TABLE IF EXISTS bench_spend",
        "CREATE TABLE bench_spend AS SELECT * FROM customer_spend "
        "WHERE customer_id IN (SELECT customer_id FROM bench_pending)",
    ):
        store.execute(sql)
    for path in _cache_files(store):
        shutil.copyfile(path, path.with_suffix(".before-d1"))


def reset_to_before_d1(store: Store, d1: dt.date) -> None:
    """Undo D1's update_segments (not timed): its history, KPIs, state and spend rows, the stamps
    of its orders, its snapshot. A re-run of the same day in production keeps the stamps (nothing
    is folded twice); here the repeat must fold the same orders again."""
    day = d1.isoformat()
    for sql, params in (
        ("DELETE FROM segment_history WHERE valid_from >= %s", (day,)),
        ("UPDATE segment_history SET valid_to = NULL WHERE valid_to >= %s", (day,)),
        ("DELETE FROM segment_transitions WHERE business_date >= %s", (day,)),
        ("DELETE FROM segment_kpis WHERE business_date >= %s", (day,)),
        ("DELETE FROM customer_state WHERE customer_id IN (SELECT customer_id FROM bench_pending)", ()),
        ("INSERT INTO customer_state SELECT * FROM bench_state", ()),
        ("DELETE FROM customer_spend WHERE customer_id IN (SELECT customer_id FROM bench_pending)", ()),
        ("INSERT INTO customer_spend SELECT * FROM bench_spend", ()),
        (
            "UPDATE orders SET state_applied_at = NULL, folded_as_paid = "
            "(SELECT p.folded_as_paid FROM bench_pending p WHERE p.order_id = orders.order_id) "
            "WHERE order_id IN (SELECT order_id FROM bench_pending)",
            (),
        ),
    ):
        store.execute(sql, params)
    for path in _cache_files(store, ".before-d1"):
        shutil.copyfile(path, path.with_suffix(".arrow"))


def _step_total(run: dict[str, Any]) -> float:
    """update_segments' time without the rewind that only repeats do."""
    return run["marks"]["total"] - run["marks"].get("rewind_history (repeats only)", 0.0)


def _print_run(run: dict[str, Any]) -> None:
    marks, summary = run["marks"], run["summary"]
    say(
        f"    {marks['total']:.2f} s; {summary.get('customers_recomputed', 0):,} customers recomputed, "
        f"{summary.get('history_rows_closed', 0):,} history rows closed, "
        f"{summary.get('history_rows_opened', 0):,} opened; peak RSS {run['rss_gb']:.2f} GB"
    )
    for label, seconds in marks.items():
        if label != "total" and seconds >= 0.05:
            say(f"      {label:<62} {seconds:8.2f} s")


def main() -> int:
    say(
        f"update_segments through the store: {CUSTOMERS:,} customers, {ORDERS:,} orders "
        f"(BENCH_SCALE={SCALE:g}), databases: {', '.join(DATABASES)}, {REPEATS} D1 runs"
    )
    import sqlalchemy

    say(
        f"numpy {np.__version__}, pandas {pd.__version__}, pyarrow {pa.__version__}, SQLAlchemy "
        f"{sqlalchemy.__version__}, SQLite {sqlite3.sqlite_version}, {os.cpu_count()} cores"
    )
    keep = "BENCH_DIR" in os.environ
    work = Path(os.environ["BENCH_DIR"]) if keep else Path(tempfile.mkdtemp(prefix="huitouke-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HUITOUKE_HOME", str(ROOT))
    os.environ.setdefault("AIRFLOW_HOME", str(work / "airflow"))
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("HUITOUKE_CACHE_DIR", str(work / "cache"))  # the snapshot, for every run
    server = None
    results: dict[str, dict[str, Any]] = {}
    try:
        t0 = time.perf_counter()
        orders, lines = generate(CUSTOMERS, ORDERS)
        say(f"generated {len(orders):,} orders and {len(lines):,} lines in {time.perf_counter() - t0:.1f} s")
        d0_np = orders["business_date"].max().to_datetime64().astype("datetime64[D]")
        d0 = dt.date.fromisoformat(str(d0_np))
        d1 = d0 + dt.timedelta(days=1)
        now = np.datetime64(dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0), "us")
        raw, as_paid = intake_input(orders, lines, np.datetime64(d1, "D"), np.random.default_rng(1))
        with open(work / "d1_rows.pickle", "wb") as handle:
            pickle.dump(raw, handle)
        refunds = stored_hashes(as_paid, d1)
        say(f"D1 intake input: {raw['order_id'].nunique():,} orders in {len(raw):,} source rows")

        d0_bulk = d0_in_memory(orders, lines, d0) if D0_MODE == "bulk" else None
        for kind in DATABASES:
            say(f"loading the {kind} store ...")
            if kind == "sqlite":
                path = work / "crm.sqlite"
                path.unlink(missing_ok=True)
                store = Store(
                    kind, json.dumps({"conn_type": "sqlite", "host": str(path)}), f"sqlite:///{path}"
                )
                loaded = load_sqlite(path, orders, lines, now)
            elif kind == "postgres":
                from pg_server import start_postgres

                if server is None:
                    server = start_postgres()
                url = server.create_database("crm_bench")
                version = Store(kind, "", url).execute("SHOW server_version", fetch=True)[0][0]
                say(f"  PostgreSQL {version} on port {server.port}")
                store = Store(kind, f"postgresql://postgres@127.0.0.1:{server.port}/crm_bench", url)
                loaded = load_postgres(url, orders, lines, now)
            else:
                raise SystemExit(f"BENCH_DB={kind}: use sqlite, postgres or both")
            say(
                "  loaded in {total:.0f} s: customers {customers:.0f} s, orders {orders:.0f} s, lines "
                "{order_lines:.0f} s, indexes {indexes:.0f} s; {size_gb:.1f} GB".format(**loaded)
            )
            results[kind] = {"load": loaded}
            if d0_bulk is not None:
                t0 = time.perf_counter()
                write_d0(store.url, d0, *d0_bulk)
                results[kind]["d0_bulk_s"] = time.perf_counter() - t0
                say(
                    f"  D0 state, history and KPIs written with the persist functions in {results[kind]['d0_bulk_s']:.0f} s"
                )
            # Each store is measured before the next is loaded: a freshly loaded PostgreSQL
            # vacuums and analyses its tables for minutes, next to the other store's runs.
            say(f"{store.kind}:")
            results[store.kind].update(bench_store(store, d0, d1, work, refunds))
        del orders, lines, raw, as_paid, d0_bulk
        gc.collect()
    finally:
        if server is not None and os.environ.get("BENCH_KEEP_SERVER") == "1":  # to look at it after
            say(f"PostgreSQL left running: {server.url('crm_bench')} (data in {server.root})")
        elif server is not None:
            server.stop()
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    report(results)
    return 0


def report(results: dict[str, dict[str, Any]]) -> None:
    kinds = list(results)
    say("")
    say(f"summary ({CUSTOMERS:,} customers, {ORDERS:,} orders, BENCH_SCALE={SCALE:g})")
    header = f"  {'':<66}" + "".join(f"{k:>13}" for k in kinds) + "      goal"
    say(header)

    def row(label: str, values: list[str], goal: str = "") -> None:
        say(f"  {label:<66}" + "".join(f"{v:>13}" for v in values) + f"      {goal}")

    def get(fn: Callable[[dict[str, Any]], float], fmt: str) -> list[str]:
        out = []
        for k in kinds:
            try:
                out.append(fmt.format(fn(results[k])))
            except (KeyError, IndexError):
                out.append("-")
        return out

    row("bulk load of the store (not the pipeline)", get(lambda r: r["load"]["total"], "{:.0f} s"))
    row(
        "D0: first update_segments (rebuild path, every order to stamp)",
        get(lambda r: r["d0"]["marks"]["total"], "{:.1f} s"),
        "<= 60 s",
    )
    row("  ... of which mark_folded", get(lambda r: r["d0"]["marks"]["mark_folded"], "{:.1f} s"))
    row("D0 peak RSS", get(lambda r: r["d0"]["rss_gb"], "{:.2f} GB"), "<= 4 GB")
    row("D0 written in bulk instead (BENCH_D0=bulk)", get(lambda r: r["d0_bulk_s"], "{:.0f} s"))
    row(
        "rebuild path (category groups changed): update_segments",
        get(lambda r: r["rebuild"]["marks"]["total"], "{:.1f} s"),
        "<= 60 s",
    )
    row("rebuild path peak RSS", get(lambda r: r["rebuild"]["rss_gb"], "{:.2f} GB"), "<= 4 GB")
    row("D1 intake: validate + load_batch", get(lambda r: r["intake"]["marks"]["total"], "{:.2f} s"))
    row("D1: update_segments, first run", get(lambda r: r["d1"][0]["marks"]["total"], "{:.2f} s"), "<= 2 s")
    row(
        f"D1: update_segments, best of {REPEATS} (without the rewind)",
        get(lambda r: min(_step_total(x) for x in r["d1"]), "{:.2f} s"),
        "<= 2 s",
    )
    row(
        "D1: update_segments without the snapshot (without the rewind)",
        get(lambda r: min(_step_total(x) for x in r["d1_cold"]), "{:.2f} s"),
        "<= 2 s",
    )
    row(
        "D1 peak RSS", get(lambda r: max(x["rss_gb"] for x in r["d1"] + r["d1_cold"]), "{:.2f} GB"), "<= 4 GB"
    )

    say("")
    say("D1 breakdown (first run with the snapshot, best re-run with it, run without it; seconds)")
    best = {}
    for k in kinds:
        if results[k].get("d1"):
            short = {"sqlite": "SQLite", "postgres": "PG"}.get(k, k)
            best[f"{short} 1st"] = results[k]["d1"][0]
            if len(results[k]["d1"]) > 1:
                best[f"{short} rerun"] = min(results[k]["d1"][1:], key=_step_total)
            best[f"{short} cold"] = results[k]["d1_cold"][0]
    labels: list[str] = []
    for k in best:
        for label in best[k]["marks"]:
            if label not in labels and label != "total":
                labels.append(label)
    for label in labels:
        values = [f"{best[k]['marks'][label]:.2f}" if label in best[k]["marks"] else "-" for k in best]
        row(label, values)
    row("", list(best))
    row("total", [f"{best[k]['marks']['total']:.2f}" for k in best], "<= 2 s")
    for k in best:
        say(f"  {k} rows fetched: " + ", ".join(f"{w}: {n:,}" for w, n in best[k]["rows"].items()))
    for k in kinds:
        if "alternatives" in results[k]:
            say("")
            say(f"{k}: the store's parts of D1 done other ways (seconds; not library code)")
            for label, seconds in results[k]["alternatives"]["marks"].items():
                say(f"  {label:<100} {seconds:7.2f}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        print("RESULT " + json.dumps(child(json.loads(sys.argv[2])), default=str), flush=True)
        raise SystemExit(0)
    raise SystemExit(main())
