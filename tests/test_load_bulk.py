"""The large-load paths of the intake (SQLite: a staging file and ``INSERT ... SELECT``;
PostgreSQL: indexes and the lines' foreign key made after a first load), forced on small batches:
they store exactly what the plain paths store, and a failure leaves the store as it was."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from zoneinfo import ZoneInfo

import pandas as pd
import pytest
from sqlalchemy import text

from huitouke.intake import persist
from huitouke.intake.load import load_batch
from huitouke.intake.validate import validate
from huitouke.store import rows
from huitouke.store.connection import make_engine
from huitouke.store.errors import StoreError

TZ = ZoneInfo("Asia/Shanghai")
DAY = date(2025, 12, 12)
TABLES = {"customers": "customer_id", "orders": "order_id", "order_lines": "order_id, line_no"}
# Set to the time of the load: compared by their kind of value only.
LOAD_TIMES = {"first_seen_at", "updated_at", "loaded_at", "status_changed_at"}


def export(orders: int, start: int = 0) -> pd.DataFrame:
    """An export of ``orders`` orders (one to three lines each), with every kind of cell: missing
    contact fields, coupons, refunds, birthdays, order ids out of key order."""
    out = []
    for n in range(start, start + orders):
        for line in range(1 + n % 3):
            out.append(
                {
                    "order_id": f"T{(n * 7919) % 100_003}",
                    "customer_id": f"c{n % 17}",
                    "paid_at": f"2025-12-12 {n % 24:02d}:{n % 60:02d}:07",
                    "amount": str(100 * (1 + n % 3)),
                    "status": ("paid", "completed", "refunded")[n % 3],
                    "coupon_code": "C1" if n % 4 == 0 else "",
                    "acquisition_source": "聚划算" if n % 5 == 0 else "",
                    "sku": f"S{line}",
                    "category": ("food", "cosmetics")[line % 2],
                    "quantity": "1",
                    "line_amount": "100",
                    "phone": f"1380000{n % 17:04d}" if n % 2 else "",
                    "email": f"b{n % 17}@example.com" if n % 3 else "",
                    "birthday": "1990-05-04" if n % 17 == 3 else "",
                }
            )
    return pd.DataFrame(out)


def load(engine, frame):
    return load_batch(engine, validate(frame, TZ, DAY), "test", DAY)


@pytest.fixture
def bulk_paths(monkeypatch):
    """Every insert through the large-load paths, whatever its size."""
    monkeypatch.setattr(rows, "_STAGE_MIN_ROWS", 0)
    monkeypatch.setattr(rows, "_REBUILD_MIN_ROWS", 0)


def dump(engine) -> dict[str, list[tuple]]:
    """Every stored row of the intake's tables, in key order; load times as their kind of value
    (SQLite: the storage class of every value too)."""
    out = {}
    with engine.connect() as conn:
        for table, key in TABLES.items():
            names = [
                row[0] for row in conn.execute(text(f"SELECT * FROM {table} LIMIT 0")).cursor.description
            ]
            values = [f"typeof({n})" if n in LOAD_TIMES else n for n in names]
            if engine.dialect.name == "sqlite":
                values += [f"typeof({n})" for n in names]
            else:
                values = [f"pg_typeof({n})::text" if n in LOAD_TIMES else n for n in names]
            out[table] = [
                tuple(r)
                for r in conn.execute(text(f"SELECT {', '.join(values)} FROM {table} ORDER BY {key}"))
            ]
    return out


def empty(engine) -> None:
    with engine.begin() as conn:
        for table in ("order_lines", "orders", "customers", "intake_runs", "quarantine"):
            conn.execute(text(f"DELETE FROM {table}"))


def schema_objects(engine) -> list[tuple]:
    """The indexes and constraints of the intake's tables, as the database describes them."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            query = "SELECT type, name, sql FROM sqlite_master WHERE tbl_name IN ('orders', 'order_lines', 'customers')"
        else:
            query = (
                "SELECT 'index', indexname, indexdef FROM pg_indexes WHERE tablename IN ('orders', 'order_lines', 'customers')"
                " UNION ALL SELECT 'constraint', conname, pg_get_constraintdef(oid) FROM pg_constraint"
                " WHERE conrelid IN ('orders'::regclass, 'order_lines'::regclass, 'customers'::regclass)"
            )
        return sorted(tuple(r) for r in conn.execute(text(query)))


def scratch_left(engine) -> list[Path]:
    if engine.dialect.name != "sqlite":
        return []
    return sorted(Path(engine.url.database).parent.glob(f".{Path(engine.url.database).name}.load-*"))


def test_a_first_load_through_the_large_load_paths_stores_exactly_what_the_plain_paths_store(
    store_engine, monkeypatch
):
    frame = export(60)
    before = schema_objects(store_engine)
    plain = load(store_engine, frame)
    expected = dump(store_engine)
    empty(store_engine)
    monkeypatch.setattr(rows, "_STAGE_MIN_ROWS", 0)
    monkeypatch.setattr(rows, "_REBUILD_MIN_ROWS", 0)
    bulk = load(store_engine, frame)
    assert bulk.as_dict() == plain.as_dict()
    assert dump(store_engine) == expected
    assert schema_objects(store_engine) == before  # every index and key made again as it was
    assert scratch_left(store_engine) == []


def test_loads_through_the_large_load_paths_rerun_and_move_as_the_plain_ones(store_engine, bulk_paths):
    first = load(store_engine, export(40))
    assert first.inserted == 40
    stored = dump(store_engine)
    again = load(store_engine, export(40))
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, 40)
    assert dump(store_engine) == stored
    more = load(store_engine, pd.concat([export(40), export(20, start=40)]))
    assert (more.inserted, more.unchanged) == (20, 40)
    assert scratch_left(store_engine) == []


def test_a_failed_large_load_leaves_the_store_its_indexes_and_no_scratch_file(
    store_engine, bulk_paths, monkeypatch
):
    before = schema_objects(store_engine)

    def broken(conn, row):
        raise RuntimeError("the run's row cannot be written")

    monkeypatch.setattr(persist, "record_run", broken)
    with pytest.raises((StoreError, RuntimeError)):
        load(store_engine, export(30))
    assert all(not rows_ for rows_ in dump(store_engine).values())
    assert schema_objects(store_engine) == before
    assert scratch_left(store_engine) == []
    monkeypatch.undo()
    monkeypatch.setattr(rows, "_STAGE_MIN_ROWS", 0)
    monkeypatch.setattr(rows, "_REBUILD_MIN_ROWS", 0)
    assert load(store_engine, export(30)).inserted == 30  # the pooled connection works on


def test_the_scratch_files_of_a_killed_load_go_with_the_next_large_load(store_engine, bulk_paths):
    if store_engine.dialect.name != "sqlite":
        pytest.skip("scratch files are SQLite's")
    store = Path(store_engine.url.database)
    stale = store.parent / f".{store.name}.load-killed"
    stale.mkdir()
    (stale / "huitouke_stage_0.sqlite").write_bytes(b"rows of a killed load")
    assert load(store_engine, export(10)).inserted == 10
    assert scratch_left(store_engine) == []


def test_a_role_that_may_not_drop_the_indexes_loads_row_by_row(store_engine, bulk_paths):
    if store_engine.dialect.name != "postgresql":
        pytest.skip("the indexes are made after a first load on PostgreSQL only")
    role = f"loader_{store_engine.url.database}"
    with store_engine.begin() as conn:
        conn.execute(text(f"CREATE ROLE {role} LOGIN"))
        conn.execute(text(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}"))
    before = schema_objects(store_engine)
    loader = make_engine(store_engine.url.set(username=role))
    try:
        assert load(loader, export(30)).inserted == 30
    finally:
        loader.dispose()
        with store_engine.begin() as conn:
            conn.execute(text(f"DROP OWNED BY {role}"))
            conn.execute(text(f"DROP ROLE {role}"))
    assert schema_objects(store_engine) == before
    assert len(dump(store_engine)["order_lines"]) == 60
