"""Stage 2 through the store (SQLite and PostgreSQL): the bulk read and write paths, the local
snapshot of the state and open history, the rebuild path and the store lock.

Two stores get the same intake day by day; ``update_segments`` runs on one with a snapshot cache and
on the other without. Whatever happens to the snapshot (used, stale, missing, damaged, foreign, a
run that failed after writing it), both stores must hold exactly the same state, history, KPIs and
transitions, and the state must equal a full rebuild from the stored orders.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import sqlite3
from datetime import date, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import select

from huitouke import records
from huitouke.intake.load import load_batch
from huitouke.intake.validate import validate
from huitouke.segments import build_state, build_state_and_spend, load_segment_settings, persist, snapshot
from huitouke.store import rows as store_rows
from huitouke.store.connection import make_engine
from huitouke.store.migrate import upgrade
from huitouke.store.schema import (
    customer_spend,
    customer_state,
    orders,
    segment_history,
    segment_kpis,
    segment_transitions,
)

TZ = ZoneInfo("Asia/Shanghai")
FIRST = date(2025, 3, 1)


# ----------------------------------------------------------------------------------- the shop


class Shop:
    """Intake rows day by day: new orders (new and returning customers, 0-3 lines, ties on the
    payment time) and status moves of earlier orders (shipped, completed, refunded, cancelled)."""

    def __init__(self, seed: int, customers: int = 40):
        self.rng = np.random.default_rng(seed)
        self.customers = customers
        self.orders: dict[str, list[dict]] = {}  # order id -> its rows as first loaded
        self.status: dict[str, str] = {}
        self.serial = 0

    def day(self, day: date) -> pd.DataFrame:
        rng, out = self.rng, []
        for _ in range(int(rng.integers(2, 9))):
            order_id = f"o{self.serial:05d}"
            self.serial += 1
            customer = f"c{int(rng.integers(0, self.customers)):03d}"
            hour = int(rng.integers(0, 24)) if rng.random() > 0.2 else 9  # some equal payment times
            status = str(rng.choice(["pending", "paid", "paid", "paid", "completed"]))
            amount = int(rng.integers(100, 40_000))
            k = int(rng.integers(0, 4))
            split = rng.multinomial(amount, np.ones(k) / k) if k else []
            cats = rng.choice([*records.CATEGORIES[:4], records.UNKNOWN_CATEGORY], k)
            base = {
                "order_id": order_id,
                "customer_id": customer,
                "paid_at": f"{day.isoformat()} {hour:02d}:00:00",
                "amount": f"{amount / 100:.2f}",
                "acquisition_source": str(rng.choice(list(records.ACQUISITION_SOURCES))),
            }
            rows = [
                {**base, "category": str(c), "line_amount": f"{a / 100:.2f}"}
                for c, a in zip(cats, split, strict=True)
            ]
            rows = rows or [dict(base)]
            self.orders[order_id] = rows
            self.status[order_id] = status
            out += [{**r, "status": status} for r in rows]
        for order_id in list(self.orders)[:-1]:
            if rng.random() < 0.08:
                rank = records.STATUS_RANK[self.status[order_id]]
                later = [s for s in records.STATUSES if records.STATUS_RANK[s] > rank]
                if later:
                    self.status[order_id] = str(rng.choice(later))
                    out += [{**r, "status": self.status[order_id]} for r in self.orders[order_id]]
        return pd.DataFrame(out)


def _intake(engine, frame: pd.DataFrame, day: date) -> None:
    batch = validate(frame, TZ, day)
    assert batch.quarantine.empty, batch.quarantine
    load_batch(engine, batch, "test", day)


# ------------------------------------------------------------------------------------- stores


class Store:
    """A migrated CRM store and how the Connection ``crm_db`` names it."""

    def __init__(self, url: str, cache: Path | None):
        self.url, self.cache = url, cache
        self.engine = make_engine(url)
        upgrade(self.engine)
        if url.startswith("sqlite"):
            self.conn = json.dumps({"conn_type": "sqlite", "host": url.removeprefix("sqlite:///")})
        else:
            self.conn = url.replace("postgresql+psycopg2://", "postgresql://")

    def run(self, monkeypatch, day: date) -> dict:
        from huitouke.config import load_settings
        from huitouke.pipeline import day_bounds, update_segments

        monkeypatch.setenv("AIRFLOW_CONN_CRM_DB", self.conn)
        monkeypatch.setenv("HUITOUKE_CACHE_DIR", str(self.cache) if self.cache else "off")
        settings = load_settings()
        return update_segments(day_bounds(day, settings)[0], settings)

    def snapshot_files(self) -> dict[str, Path]:
        return snapshot.paths(self.cache, snapshot.store_id(self.engine.url))

    def dump(self) -> tuple:
        history = [c for c in segment_history.columns if c.name != "segment_id"]
        kpis = [c for c in segment_kpis.columns if c.name != "computed_at"]
        with self.engine.connect() as conn:
            return (
                tuple(conn.execute(select(customer_state).order_by(customer_state.c.customer_id)).all()),
                tuple(conn.execute(select(customer_spend).order_by(*customer_spend.primary_key)).all()),
                tuple(conn.execute(select(*history).order_by(*history[:2])).all()),
                tuple(
                    conn.execute(select(segment_transitions).order_by(*segment_transitions.primary_key)).all()
                ),
                tuple(conn.execute(select(*kpis).order_by(segment_kpis.c.business_date)).all()),
            )

    def check_rebuild(self, day: date) -> None:
        with self.engine.connect() as conn:
            stored = persist.read_state(conn)
            stored_spend = persist.read_spend(conn)
            all_orders, lines = persist.read_orders(conn)
        rebuilt, spend = build_state_and_spend(all_orders, lines, settings=load_segment_settings(), until=day)
        pd.testing.assert_frame_equal(stored, rebuilt)
        pd.testing.assert_frame_equal(stored_spend, spend)


@pytest.fixture
def stores(store_url, request, tmp_path):
    """(with a snapshot cache, without), on the same database kind."""
    if store_url.startswith("sqlite"):
        other = f"sqlite:///{tmp_path / 'crm-b.sqlite'}"
    else:
        name = store_url.rsplit("/", 1)[1]
        other = request.getfixturevalue("postgres_server").create_database(f"{name}_b")
    cached, plain = Store(store_url, tmp_path / "cache"), Store(other, None)
    yield cached, plain
    cached.engine.dispose()
    plain.engine.dispose()


@pytest.fixture
def calls(monkeypatch):
    """How often update_segments read the state and the open history from the tables."""
    counts = {"read_state": 0, "read_open_history": 0}
    for name in counts:
        original = getattr(persist, name)

        def counted(*args, _name=name, _original=original, **kwargs):
            counts[_name] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(persist, name, counted)
    return counts


def _same_day(stores, monkeypatch, shop: Shop, day: date) -> None:
    frame = shop.day(day)
    for store in stores:
        _intake(store.engine, frame, day)
        store.run(monkeypatch, day)
    assert stores[0].dump() == stores[1].dump()


# -------------------------------------------------------------------------------------- tests


def test_runs_with_and_without_the_snapshot_store_the_same_and_equal_a_rebuild(stores, monkeypatch, calls):
    shop = Shop(seed=1)
    cached, plain = stores
    days = [FIRST + timedelta(days=d) for d in range(12)]
    for i, day in enumerate(days):
        _same_day(stores, monkeypatch, shop, day)
        if i in (3, 7):  # the latest day again: history rewound (in memory from the snapshot)
            before = cached.dump()
            for store in stores:
                store.run(monkeypatch, day)
            assert cached.dump() == before == plain.dump()
    # Table reads: every run of the plain store, and only the first run of the cached one.
    runs = len(days) + 2
    assert calls["read_open_history"] == runs + 1
    assert calls["read_state"] == runs - 1  # the first run of each store builds from the orders
    assert all(path.exists() for path in cached.snapshot_files().values())
    cached.check_rebuild(days[-1])


def test_the_daily_fold_through_the_store_equals_a_rebuild_every_day(stores, monkeypatch):
    """New orders, status moves of folded and unfolded orders (paid -> completed, refunds,
    cancellations, pending -> paid): state and spend rows as a rebuild from the stored orders."""
    shop = Shop(seed=5)
    for d in range(10):
        day = FIRST + timedelta(days=d)
        _same_day(stores, monkeypatch, shop, day)
        stores[1].check_rebuild(day)
    with stores[1].engine.connect() as conn:
        moved = conn.scalar(
            select(orders.c.order_id).where(orders.c.status_changed_at > orders.c.loaded_at).limit(1)
        )
    assert moved is not None


def test_the_snapshot_holds_exactly_what_the_tables_hold(stores, monkeypatch):
    shop = Shop(seed=2)
    cached, _ = stores
    for d in range(4):
        _same_day(stores, monkeypatch, shop, FIRST + timedelta(days=d))
    with cached.engine.connect() as conn:
        run = persist.latest_run(conn)
        state, open_rows = persist.read_state(conn), persist.read_open_history(conn)
    key = snapshot.SnapshotKey(
        snapshot.store_id(cached.engine.url),
        run.business_date,
        run.computed_at,
        run.fingerprint,
        run.customers,
    )
    saved = snapshot.load(cached.cache, key)
    assert saved is not None
    pd.testing.assert_frame_equal(saved.state, state)
    pd.testing.assert_frame_equal(saved.open_rows, open_rows)


@pytest.mark.parametrize("damage", ["stale", "missing", "corrupt", "foreign", "other_worker"])
def test_a_snapshot_that_is_not_the_stores_latest_run_is_ignored(
    stores, monkeypatch, calls, tmp_path, damage
):
    shop = Shop(seed=3)
    cached, plain = stores
    days = [FIRST + timedelta(days=d) for d in range(6)]
    for day in days[:3]:
        _same_day(stores, monkeypatch, shop, day)
    files = cached.snapshot_files()
    kept = tmp_path / "kept"
    kept.mkdir()
    for path in files.values():
        shutil.copy(path, kept / path.name)
    if damage == "other_worker":  # day 4 runs on a machine without this cache
        cached_dir, cached.cache = cached.cache, None
        _same_day(stores, monkeypatch, shop, days[3])
        cached.cache = cached_dir
    else:
        _same_day(stores, monkeypatch, shop, days[3])
    if damage == "stale":  # the files of day 3 back in place of day 4's
        for path in files.values():
            shutil.copy(kept / path.name, path)
    elif damage == "missing":
        files["open"].unlink()
    elif damage == "corrupt":
        files["state"].write_bytes(b"ARROW1\x00\x00not really")
    elif damage == "foreign":  # another store's snapshot (same rows, same run) under this store's name
        with cached.engine.connect() as conn:
            run = persist.latest_run(conn)
        key = snapshot.SnapshotKey(
            snapshot.store_id(cached.engine.url),
            run.business_date,
            run.computed_at,
            run.fingerprint,
            run.customers,
        )
        saved = snapshot.load(cached.cache, key)
        other = dataclasses.replace(key, store="f" * 16)
        snapshot.publish(snapshot.prepare(cached.cache, other, saved.state, saved.open_rows, saved.reopen))
        for part, path in snapshot.paths(cached.cache, other.store).items():
            path.replace(files[part])
    before = dict(calls)
    _same_day(stores, monkeypatch, shop, days[4])
    assert calls["read_state"] - before["read_state"] == 2  # both stores read their tables
    assert calls["read_open_history"] - before["read_open_history"] == 2
    _same_day(stores, monkeypatch, shop, days[5])  # and the fresh snapshot is used again
    assert calls["read_state"] - before["read_state"] == 3
    cached.check_rebuild(days[5])


def test_a_run_that_fails_leaves_the_store_and_the_snapshot_as_they_were(stores, monkeypatch):
    shop = Shop(seed=4)
    cached, plain = stores
    days = [FIRST + timedelta(days=d) for d in range(4)]
    for day in days[:2]:
        _same_day(stores, monkeypatch, shop, day)
    frame = shop.day(days[2])
    for store in stores:
        _intake(store.engine, frame, days[2])
    before = cached.dump()
    files = {part: path.read_bytes() for part, path in cached.snapshot_files().items()}
    from sqlalchemy.engine import Connection

    def commit_fails(self):
        raise RuntimeError("the database went away")

    monkeypatch.setattr(Connection, "_commit_impl", commit_fails)  # after the snapshot was prepared
    with pytest.raises(RuntimeError, match="went away"):
        cached.run(monkeypatch, days[2])
    monkeypatch.undo()
    assert cached.dump() == before
    assert {part: path.read_bytes() for part, path in cached.snapshot_files().items()} == files
    assert sorted(p.name for p in cached.cache.iterdir()) == sorted(
        p.name for p in cached.snapshot_files().values()
    )
    for store in stores:
        store.run(monkeypatch, days[2])
    assert cached.dump() == plain.dump()
    _same_day(stores, monkeypatch, shop, days[3])
    cached.check_rebuild(days[3])


def test_a_large_backlog_takes_the_rebuild_path_with_the_same_result(stores, monkeypatch):
    shop = Shop(seed=5)
    cached, plain = stores
    days = [FIRST + timedelta(days=d) for d in range(6)]
    for day in days[:3]:
        _same_day(stores, monkeypatch, shop, day)
    frame = pd.concat([shop.day(days[3]), shop.day(days[4])], ignore_index=True)
    for store in stores:
        _intake(store.engine, frame, days[4])
    monkeypatch.setattr(persist, "REBUILD_ABOVE", 3)
    summary = cached.run(monkeypatch, days[4])
    monkeypatch.setattr(persist, "REBUILD_ABOVE", 10**9)
    plain.run(monkeypatch, days[4])
    assert summary["customers_recomputed"] == summary["customers"]  # everyone: the rebuild path
    assert cached.dump() == plain.dump()
    _same_day(stores, monkeypatch, shop, days[5])
    cached.check_rebuild(days[5])


def test_pending_orders_are_the_unfolded_ones_and_the_stamp_takes_those_due_by_the_day(stores, monkeypatch):
    store, _ = stores
    shop = Shop(seed=6)
    day = FIRST
    _intake(store.engine, shop.day(day), day)
    _intake(store.engine, shop.day(day + timedelta(days=1)), day + timedelta(days=1))
    with store.engine.begin() as conn:
        conn.execute(
            orders.update().where(orders.c.order_id == "o00000").values(business_date=None, paid_at=None)
        )
        rows = conn.execute(select(orders.c.order_id, orders.c.business_date)).all()
        assert sorted(persist.read_pending(conn)["order_id"]) == sorted(o for o, _ in rows)
        assert persist.read_pending(conn, max_orders=len(rows)) is not None
        assert persist.read_pending(conn, max_orders=len(rows) - 1) is None
        assert persist.mark_folded(conn, day, pd.Timestamp("2025-03-05").to_pydatetime()) == sum(
            1 for _, d in rows if d is None or d <= day
        )
        left = persist.read_pending(conn)
        assert sorted(left["order_id"]) == sorted(o for o, d in rows if d is not None and d > day)


def test_while_a_run_holds_the_store_other_writers_wait_and_readers_do_not(stores):
    store, _ = stores
    with store.engine.begin() as conn:
        assert persist.lock_store(conn)
        if store.url.startswith("sqlite"):
            other = sqlite3.connect(store.url.removeprefix("sqlite:///"), timeout=0.2)
            try:
                assert other.execute("SELECT count(*) FROM orders").fetchone() == (0,)
                with pytest.raises(sqlite3.OperationalError, match="locked"):
                    other.execute("UPDATE orders SET status = 'paid'")
            finally:
                other.close()
        else:
            import psycopg2

            other = psycopg2.connect(store.url.replace("postgresql+psycopg2://", "postgresql://"))
            try:
                cursor = other.cursor()
                cursor.execute("SET lock_timeout = '200ms'")
                cursor.execute("SELECT count(*) FROM orders")
                assert cursor.fetchone() == (0,)
                with pytest.raises(psycopg2.errors.LockNotAvailable):
                    cursor.execute("UPDATE orders SET status = 'paid'")
            finally:
                other.close()


def test_sqlite_rows_are_stored_in_sqlalchemys_own_format(store_url, stores, monkeypatch):
    if not store_url.startswith("sqlite"):
        pytest.skip("SQLite only")
    shop = Shop(seed=7)
    for d in range(2):
        _same_day(stores, monkeypatch, shop, FIRST + timedelta(days=d))
    con = sqlite3.connect(store_url.removeprefix("sqlite:///"))
    try:
        state = con.execute(
            "SELECT first_paid_at, last_business_date, typeof(paid_orders) FROM customer_state"
        ).fetchall()
        history = con.execute(
            "SELECT valid_from, valid_to, typeof(r_score), low_value_acquisition FROM segment_history"
        ).fetchall()
        applied = con.execute("SELECT DISTINCT state_applied_at FROM orders").fetchall()
    finally:
        con.close()
    assert state and all(
        re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}", a)
        and re.fullmatch(r"\d{4}-\d\d-\d\d", b)
        and t == "integer"
        for a, b, t in state
    )
    assert history and all(
        re.fullmatch(r"\d{4}-\d\d-\d\d", f)
        and (v is None or re.fullmatch(r"\d{4}-\d\d-\d\d", v))
        and t == "integer"
        and b in (0, 1)
        for f, v, t, b in history
    )
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}", a) for (a,) in applied)


def test_the_cache_directory_follows_the_environment_and_the_store(monkeypatch, tmp_path):
    from sqlalchemy.engine import make_url

    sqlite_url = make_url(f"sqlite:///{tmp_path / 'crm.sqlite'}")
    pg_url = make_url("postgresql+psycopg2://u:secret@db:5432/crm")
    monkeypatch.delenv("HUITOUKE_CACHE_DIR", raising=False)
    assert snapshot.cache_dir_for(sqlite_url) == tmp_path / "cache"
    assert snapshot.cache_dir_for(pg_url).parts[-2:] == ("data", "cache")
    monkeypatch.setenv("HUITOUKE_CACHE_DIR", str(tmp_path / "elsewhere"))
    assert snapshot.cache_dir_for(pg_url) == tmp_path / "elsewhere"
    monkeypatch.setenv("HUITOUKE_CACHE_DIR", "off")
    assert snapshot.cache_dir_for(sqlite_url) is None
    assert snapshot.store_id(pg_url) == snapshot.store_id(
        make_url("postgresql+psycopg2://u:other@db:5432/crm")
    )
    assert snapshot.store_id(pg_url) != snapshot.store_id(
        make_url("postgresql+psycopg2://u:secret@db:5432/crm2")
    )


def test_text_with_commas_quotes_newlines_and_chinese_survives_the_bulk_paths(store_engine):
    from datetime import datetime

    from huitouke.segments import classify, diff_segments, empty_history
    from huitouke.store.schema import order_lines

    ids = ['顾客,"甲"', "line\nbreak", "semi;colon 'q' \\N", " spaced ", "NULL"]
    now = datetime(2025, 3, 2, 1, 2, 3, 456789)
    with store_engine.begin() as conn:
        for i, customer in enumerate(ids):
            conn.execute(
                orders.insert().values(
                    order_id=f'o,"{i}"\n',
                    customer_id=customer,
                    paid_at=now + timedelta(hours=i),
                    business_date=FIRST,
                    status="paid",
                    amount_cents=1_000 + i,
                    acquisition_source="organic",
                    content_hash="x",
                    source="test",
                    loaded_at=now,
                    status_changed_at=now,
                )
            )
            conn.execute(
                order_lines.insert().values(
                    order_id=f'o,"{i}"\n', line_no=1, category=f'类目 "{i}",\n', amount_cents=1_000 + i
                )
            )
    rules = load_segment_settings()
    with store_engine.begin() as conn:
        assert persist.lock_store(conn)
        assert sorted(persist.read_pending(conn)["customer_id"]) == sorted(ids)
        got, lines = persist.read_orders(conn, ids)
        assert sorted(got["customer_id"]) == sorted(ids)
        assert sorted(lines["category"].astype(str)) == sorted(f'类目 "{i}",\n' for i in range(len(ids)))
        assert sorted(got["paid_at"]) == [pd.Timestamp(now + timedelta(hours=i)) for i in range(len(ids))]
        state = build_state(got, lines, settings=rules, until=FIRST)
        persist.replace_state(conn, state, None)
        pd.testing.assert_frame_equal(persist.read_state(conn), state)
        changes = diff_segments(empty_history(), classify(state, FIRST, rules), FIRST)
        persist.write_history(conn, changes)
        assert sorted(persist.read_open_history(conn)["customer_id"]) == sorted(ids)
        assert persist.mark_folded(conn, FIRST, now) == len(ids)


def test_a_store_whose_last_run_kept_an_older_state_format_is_rebuilt_once(stores, monkeypatch):
    """A store migrated from revision 0004 has no spend rows: its last run's fingerprint is of
    the old format, so the next run rebuilds the state and the spend rows from every order."""
    shop = Shop(seed=9)
    _, plain = stores
    days = [FIRST + timedelta(days=d) for d in range(4)]
    for day in days[:3]:
        _intake(plain.engine, shop.day(day), day)
        plain.run(monkeypatch, day)
    with plain.engine.begin() as conn:
        conn.execute(customer_spend.delete())
        conn.execute(segment_kpis.update().values(state_fingerprint="0123456789abcdef"))
    _intake(plain.engine, shop.day(days[3]), days[3])
    result = plain.run(monkeypatch, days[3])
    assert result["customers_recomputed"] == result["customers"] > 5  # everyone: the rebuild path
    plain.check_rebuild(days[3])


def test_reads_of_committed_rows_equal_the_cursor_reads(store_engine, store_url, monkeypatch):
    """SQLite's native Arrow reader (a second, read-only connection) gives what the transaction's
    own cursor gives: text with commas, quotes, newlines and Chinese, null payment times and dates,
    lines without an amount, null / true / false folded_as_paid, whole tables and rows by id."""
    from datetime import datetime

    from huitouke.segments import classify, diff_segments, empty_history
    from huitouke.store.schema import order_lines

    now = datetime(2025, 3, 2, 1, 2, 3, 456789)
    with store_engine.begin() as conn:
        for i in range(2_100):  # more than one batch of the native reader, nulls first
            conn.execute(
                orders.insert().values(
                    order_id=f'o,"{i:05d}"\n',
                    customer_id=f'顾客,"{i % 700}"',
                    paid_at=None if i < 1_500 else now + timedelta(minutes=i),
                    business_date=None if i < 1_500 else FIRST,
                    status="paid" if i % 3 else "refunded",
                    amount_cents=1_000 + i,
                    acquisition_source="organic" if i % 2 else "flash_sale",
                    content_hash="x",
                    source="test",
                    loaded_at=now,
                    status_changed_at=now,
                    folded_as_paid=(True, False, None)[i % 3],
                )
            )
            conn.execute(
                order_lines.insert().values(
                    order_id=f'o,"{i:05d}"\n',
                    line_no=1,
                    category=f'类目 "{i % 5}",\n',
                    amount_cents=None if i < 1_200 else 1_000 + i,
                )
            )
    native_reads = []
    original = store_rows._sqlite_native_table

    def spy(*args, **kwargs):
        table = original(*args, **kwargs)
        native_reads.append(table is not None)
        return table

    monkeypatch.setattr(store_rows, "_sqlite_native_table", spy)
    monkeypatch.setattr(store_rows, "_FETCH", 500)  # several batches, the first ones without a time
    rules = load_segment_settings()
    with store_engine.begin() as conn:
        native = persist.read_orders(conn, committed=True)
        cursor = persist.read_orders(conn)
        for a, b in zip(native, cursor, strict=True):
            pd.testing.assert_frame_equal(a, b)
        assert native[0]["paid_at"].isna().sum() == 1_500
        # Reads by id (the ids as one JSON array on SQLite), and the pending orders with what the
        # state counted of them (a nullable boolean).
        some = [f'顾客,"{i}"' for i in range(0, 700, 3)]
        by_order = ["order_id", "category", "amount_cents"]
        for a, b in zip(
            persist.read_orders(conn, some, committed=True), persist.read_orders(conn, some), strict=True
        ):
            assert len(a) > 500
            pd.testing.assert_frame_equal(_by(a, by_order), _by(b, by_order))
        lines_of = list(native[0]["order_id"][::4])
        pd.testing.assert_frame_equal(
            _by(persist.read_lines(conn, lines_of, committed=True), by_order),
            _by(persist.read_lines(conn, lines_of), by_order),
        )
        pending = persist.read_pending(conn, committed=True)
        pd.testing.assert_frame_equal(
            _by(pending, ["order_id"]), _by(persist.read_pending(conn), ["order_id"])
        )
        assert pending["folded_as_paid"].value_counts(dropna=False).to_dict() == {
            True: 700,
            False: 700,
            pd.NA: 700,
        }
        state, spend = build_state_and_spend(native[0], native[1], settings=rules, until=FIRST)
        persist.replace_state(conn, state, None)
        persist.replace_spend(conn, spend, None)
        changes = diff_segments(empty_history(), classify(state, FIRST, rules), FIRST)
        persist.write_history(conn, changes)
    with store_engine.begin() as conn:
        pd.testing.assert_frame_equal(persist.read_state(conn, committed=True), persist.read_state(conn))
        pd.testing.assert_frame_equal(
            persist.read_open_history(conn, committed=True), persist.read_open_history(conn)
        )
        spenders = list(spend["customer_id"].unique()[::2])
        pd.testing.assert_frame_equal(
            persist.read_spend(conn, spenders, committed=True), persist.read_spend(conn, spenders)
        )
        assert len(persist.read_spend(conn, spenders)) >= len(spenders) > 100
    assert native_reads == ([True] * 9 if store_url.startswith("sqlite") else [])


def _by(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Rows read by id come in the database's order: compared sorted."""
    return frame.sort_values([k for k in keys if k in frame.columns], ignore_index=True)


def test_the_open_rows_after_a_rewind_can_be_read_before_it(stores, monkeypatch):
    """A re-run reads the history as the rewind will leave it before rewinding (whole tables are
    read before the transaction writes anything)."""
    shop = Shop(seed=12)
    _, plain = stores
    days = [FIRST + timedelta(days=d) for d in range(5)]
    for day in days:
        _intake(plain.engine, shop.day(day), day)
        plain.run(monkeypatch, day)
    with plain.engine.connect() as conn:
        ahead = persist.read_open_history(conn, committed=True, rewinding=days[-1])
        transaction = conn.begin()
        persist.rewind_history(conn, days[-1])
        after = persist.read_open_history(conn)
        transaction.rollback()
    pd.testing.assert_frame_equal(ahead, after)
    assert len(ahead) > 5


def test_partial_refunds_reduce_the_spend_the_state_counts_as_a_rebuild_does(stores, monkeypatch):
    """A paid order counts its amount less its refund (orders.refunded_cents): the daily fold
    (such customers on the exact path) equals a rebuild, and the refund shows in the totals."""
    _, store = stores
    shop = Shop(seed=7)
    days = [FIRST + timedelta(days=d) for d in range(3)]
    frames = [shop.day(day) for day in days]
    for day, frame in zip(days[:2], frames[:2], strict=True):
        _intake(store.engine, frame, day)
        store.run(monkeypatch, day)
    with store.engine.connect() as conn:
        before = persist.read_state(conn).set_index("customer_id")["total_cents"]
        paid = conn.execute(
            select(orders.c.order_id, orders.c.customer_id, orders.c.amount_cents)
            .where(orders.c.status.in_(sorted(records.PAID_STATUSES)))
            .order_by(orders.c.order_id)
            .limit(3)
        ).all()
    refunds = {order_id: amount // 4 for order_id, _, amount in paid}
    again = pd.concat([frames[0], frames[1]]).drop_duplicates()
    batch = validate(again, TZ, days[2])
    batch.orders["refunded_cents"] = batch.orders["order_id"].map(refunds).fillna(0).astype("int64")
    assert load_batch(store.engine, batch, "test", days[2]).updated >= len(refunds)
    _intake(store.engine, frames[2], days[2])
    store.run(monkeypatch, days[2])
    store.check_rebuild(days[2])
    with store.engine.connect() as conn:
        after = persist.read_state(conn).set_index("customer_id")["total_cents"]
    new_orders = validate(frames[2], TZ, days[2]).orders
    new_paid = new_orders[new_orders["status"].isin(sorted(records.PAID_STATUSES))]
    added = new_paid.groupby("customer_id")["amount_cents"].sum()
    for _, customer, _ in paid:
        refunded = sum(refunds[o] for o, c, _ in paid if c == customer)
        assert after[customer] == before[customer] - refunded + added.get(customer, 0)
