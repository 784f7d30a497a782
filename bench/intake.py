"""Order intake into the store at scale: read, validate and load a big export, SQLite and PostgreSQL.

A synthetic export in the canonical columns (one row per order line: ``BENCH_LINES`` lines, default
1,000,000: about 636,000 orders of about 200,000 customers, 3% refunded, 1% cancelled, one to three
lines per order, names, phones and e-mails) is written as one CSV file, and a second export of the
same orders a week later (5% of the paid orders refunded). Each is read by
:class:`~huitouke.intake.files.FileOrderSource` (``read``) and validated by
:func:`~huitouke.intake.validate.validate` (``validate``) once, as :func:`huitouke.intake.daily.run_day`
does. Then, per database, ``BENCH_REPEATS`` times into a fresh store (the schema by
:func:`huitouke.store.migrate.upgrade`): :func:`~huitouke.intake.load.load_batch` of the first
export (``first``: every order new), of the same export again (``re-run``: every order unchanged)
and of the second (``moves``: refunds move 5% of the orders).

Printed per load: lines/s end to end (read + validate + load), the split, the load alone; and the
anchor, measured in the same run: the same new rows written into a fresh store by the bare driver
with every value already in its format (SQLite: one ``executemany`` of tuples per table in one
transaction; PostgreSQL: ``COPY`` of CSV written beforehand): the floor of any first load. Best
of the repeats. Goal (issue 14): >= 100,000 order lines a second end to end.

Run: ``.venv/bin/python bench/intake.py``; ``BENCH_LINES`` (1,000,000; 100,000 for a quick run),
``BENCH_DB`` (sqlite, postgres or both: both), ``BENCH_REPEATS`` (3), ``BENCH_DIR`` (where the
CSV and the SQLite file go; default a temporary folder, deleted). PostgreSQL is started as in the
tests (``tests/pg_server.py``: the installed server binaries, as the ``postgres`` user under root).
"""

from __future__ import annotations

import datetime as dt
import io
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pyarrow.csv as pacsv

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))
sys.path.insert(0, str(ROOT / "tests"))

from huitouke.intake import load as intake_load  # noqa: E402
from huitouke.intake import persist  # noqa: E402
from huitouke.intake.files import FileOrderSource  # noqa: E402
from huitouke.intake.load import load_batch  # noqa: E402
from huitouke.intake.validate import validate  # noqa: E402
from huitouke.store import rows as store_rows  # noqa: E402
from huitouke.store.connection import make_engine  # noqa: E402
from huitouke.store.migrate import upgrade  # noqa: E402

LINES = int(os.environ.get("BENCH_LINES", "1000000"))
REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))
DATABASES = {"both": ("sqlite", "postgres")}.get(
    os.environ.get("BENCH_DB", "both"), (os.environ.get("BENCH_DB", "both"),)
)
GOAL = 100_000
TZ = ZoneInfo("Asia/Shanghai")
DAY = dt.date(2025, 11, 11)
CATEGORIES = np.array(
    ["food", "kids_clothing", "daily_goods", "durables", "womens_clothing", "cosmetics", "3c"]
)


def generate(lines: int, seed: int = 14) -> pd.DataFrame:
    """An export of ``lines`` order lines (all text, as a CSV holds it), one business day."""
    rng = np.random.default_rng(seed)
    per_order = rng.choice([1, 1, 1, 1, 2, 2, 3], size=int(lines / 1.4) + 10)
    per_order = per_order[: np.searchsorted(np.cumsum(per_order), lines) + 1]
    per_order[-1] -= per_order.sum() - lines
    per_order = per_order[per_order > 0]
    n_orders = len(per_order)
    customers = rng.integers(0, max(n_orders // 3, 1), n_orders)
    order_ids = np.char.add("T2025111", np.arange(n_orders).astype(str).astype("U12"))
    seconds = np.sort(rng.integers(0, 86_400, n_orders))
    paid = pd.Timestamp(DAY) + pd.to_timedelta(seconds, unit="s")
    status = rng.choice(
        ["交易成功", "等待卖家发货", "退款成功", "交易关闭"], n_orders, p=[0.66, 0.30, 0.03, 0.01]
    )
    line_cents = rng.integers(500, 50_000, lines)
    order_of_line = np.repeat(np.arange(n_orders), per_order)
    amount = np.bincount(order_of_line, weights=line_cents, minlength=n_orders).astype(np.int64)
    cust = customers[order_of_line]
    sku = rng.integers(0, 5000, lines)
    frame = pd.DataFrame(
        {
            "order_id": order_ids[order_of_line],
            "customer_id": np.char.add("buyer_", cust.astype(str)),
            "paid_at": paid.strftime("%Y-%m-%d %H:%M:%S").to_numpy()[order_of_line],
            "amount": (pd.Series(amount[order_of_line]) / 100).map("{:.2f}".format),
            "status": status[order_of_line],
            "acquisition_source": rng.choice(["", "聚划算", "淘金币"], lines, p=[0.9, 0.07, 0.03]),
            "coupon_code": "",
            "updated_at": "",
            "customer_name": np.char.add("顾客", cust.astype(str)),
            "phone": np.char.add("138", (cust % 100_000_000).astype(str).astype("U8")),
            "email": np.char.add(np.char.add("b", cust.astype(str)), "@example.com"),
            "birthday": "",
            "sku": np.char.add("SKU", sku.astype(str)),
            "product_name": np.char.add("商品", sku.astype(str)),
            "category": CATEGORIES[sku % len(CATEGORIES)],
            "quantity": "1",
            "line_amount": (pd.Series(line_cents) / 100).map("{:.2f}".format),
        }
    )
    return frame


def moved(frame: pd.DataFrame, seed: int = 15) -> pd.DataFrame:
    """The same export a week later: 5% of the paid orders refunded (every line of them)."""
    rng = np.random.default_rng(seed)
    ids = frame["order_id"].unique()
    refunded = set(rng.choice(ids, size=len(ids) // 20, replace=False))
    paid = frame["status"].isin(["交易成功", "等待卖家发货"])
    out = frame.copy()
    out.loc[paid & frame["order_id"].isin(refunded), "status"] = "退款成功"
    return out


def read_and_validate(folder: Path) -> dict[str, Any]:
    """Read and validate one day's export as run_day does: the timed parts before the load."""
    source = FileOrderSource(folder, pattern="orders_{ds}.csv", timezone=str(TZ))
    start = dt.datetime.combine(DAY, dt.time(), TZ)
    t0 = time.perf_counter()
    raw = source.read(start, start + dt.timedelta(days=1))
    t1 = time.perf_counter()
    batch = validate(raw, TZ, DAY)
    t2 = time.perf_counter()
    return {"rows": len(raw), "read": t1 - t0, "validate": t2 - t1, "batch": batch}


def load(engine, day: dict[str, Any]) -> dict[str, Any]:
    """Load one validated day: the timed load, the day's read and validation figures with it."""
    t0 = time.perf_counter()
    summary = load_batch(engine, day["batch"], "files", DAY)
    seconds = time.perf_counter() - t0
    return {
        **day,
        "load": seconds,
        "total": day["read"] + day["validate"] + seconds,
        "inserted": summary.inserted,
        "updated": summary.updated,
        "unchanged": summary.unchanged,
        "quarantined": summary.quarantined,
    }


def floor(kind: str, engine, batch) -> float:
    """The anchor: the same new rows (customers, orders, lines) written by the bare driver into a
    fresh store, every value already in the driver's format (SQLite: one ``executemany`` of tuples
    per table in one transaction; PostgreSQL: ``COPY`` of CSV already written). What any load of
    these rows costs at least; load_batch's first load is measured against it."""
    now = dt.datetime(2026, 1, 1)
    tables = [
        (
            "customers",
            persist.arrow_table(
                batch.customers,
                persist._CUSTOMER_TYPES,
                sms_opt_out=False,
                email_opt_out=False,
                first_seen_at=now,
                updated_at=now,
            ),
        ),
        (
            "orders",
            persist.arrow_table(
                intake_load.with_refunds(batch.orders),
                persist._ORDER_TYPES,
                source="files",
                loaded_at=now,
                status_changed_at=now,
            ),
        ),
        ("order_lines", persist.arrow_table(batch.lines, persist._LINE_TYPES)),
    ]
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        if kind == "sqlite":
            prepared = [
                (
                    name,
                    table.column_names,
                    list(zip(*(store_rows._sqlite_values(c) for c in table.columns), strict=True)),
                )
                for name, table in tables
            ]
            t0 = time.perf_counter()
            cursor.execute("BEGIN")
            for name, columns, values in prepared:
                marks = ", ".join("?" * len(columns))
                cursor.executemany(f"INSERT INTO {name} ({', '.join(columns)}) VALUES ({marks})", values)
        else:
            prepared = []
            for name, table in tables:
                buffer = io.BytesIO()
                pacsv.write_csv(table, buffer, pacsv.WriteOptions(include_header=False))
                prepared.append((name, table.column_names, buffer.getvalue()))
            t0 = time.perf_counter()
            for name, columns, data in prepared:
                cursor.copy_expert(
                    f"COPY {name} ({', '.join(columns)}) FROM STDIN WITH (FORMAT csv)", io.BytesIO(data)
                )
        raw.commit()
        return time.perf_counter() - t0
    finally:
        raw.close()


def fresh_store(kind: str, work: Path, server, run: int):
    if kind == "sqlite":
        path = work / f"crm_{run}.sqlite"
        path.unlink(missing_ok=True)
        url = f"sqlite:///{path}"
    else:
        url = server.create_database(f"crm_bench_{run}")
    engine = make_engine(url)
    upgrade(engine)
    return engine


def report(kind: str, label: str, figures: dict[str, float]) -> None:
    rate = figures["rows"] / figures["total"]
    load_rate = figures["rows"] / figures["load"]
    verdict = "PASS" if rate >= GOAL else "FAIL"
    print(
        f"{kind:<8} {label:<9} {figures['rows']:>9,} lines  {rate:>9,.0f} lines/s end to end "
        f"(goal {GOAL:,}: {verdict})  read {figures['read']:.2f} s  validate {figures['validate']:.2f} s  "
        f"load {figures['load']:.2f} s ({load_rate:,.0f} lines/s)  "
        f"[ins {figures['inserted']:,} upd {figures['updated']:,} same {figures['unchanged']:,} "
        f"quar {figures['quarantined']:,}]",
        flush=True,
    )


def run_database(kind: str, work: Path, server, days: dict[str, dict[str, Any]]) -> None:
    best: dict[str, dict[str, Any]] = {}
    floors = []
    for run in range(REPEATS):
        engine = fresh_store(kind, work, server, run)
        try:
            for label, day in (("first", days["day1"]), ("re-run", days["day1"]), ("moves", days["day2"])):
                figures = load(engine, day)
                report(kind, label, figures)
                if label not in best or figures["load"] < best[label]["load"]:
                    best[label] = figures
        finally:
            engine.dispose()
        anchor = fresh_store(kind, work, server, run + 100)
        floors.append(floor(kind, anchor, days["day1"]["batch"]))
        anchor.dispose()
        print(
            f"{kind:<8} anchor    the bare driver writes the first load's rows in {floors[-1]:.2f} s",
            flush=True,
        )
    for label, figures in best.items():
        report(kind, f"{label}*", figures)
    load_s, anchor_s = best["first"]["load"], min(floors)
    print(
        f"{kind:<8} first load {load_s:.2f} s against the bare driver's {anchor_s:.2f} s: "
        f"{load_s / anchor_s:.2f}x (best of {REPEATS} each)",
        flush=True,
    )


def main() -> None:
    work = Path(os.environ.get("BENCH_DIR") or tempfile.mkdtemp(prefix="huitouke-intake-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    export = generate(LINES)
    for folder, frame in (("day1", export), ("day2", moved(export))):
        (work / folder).mkdir(exist_ok=True)
        frame.to_csv(work / folder / f"orders_{DAY.isoformat()}.csv", index=False)
    print(
        f"export: {len(export):,} lines, {export['order_id'].nunique():,} orders, "
        f"{export['customer_id'].nunique():,} customers ({time.perf_counter() - t0:.1f} s to generate)"
    )
    days = {}
    for folder in ("day1", "day2"):
        days[folder] = read_and_validate(work / folder)
        figures = days[folder]
        print(
            f"{folder}: read {figures['read']:.2f} s, validate {figures['validate']:.2f} s "
            f"({figures['rows'] / (figures['read'] + figures['validate']):,.0f} lines/s before the load)",
            flush=True,
        )
    server = None
    try:
        for kind in DATABASES:
            if kind == "postgres" and server is None:
                from pg_server import start_postgres

                server = start_postgres()
            run_database(kind, work, server, days)
    finally:
        if server is not None:
            server.stop()
        if not os.environ.get("BENCH_DIR"):
            shutil.rmtree(work, ignore_errors=True)
    print("(* best of the runs)")


if __name__ == "__main__":
    main()
