"""``huitouke analyze`` of a 1,000,000-row order export, side by side with DuckDB on the same file.

A realistic export is generated once with numpy (canonical headers, one row per order line, three
years of orders of 200,000 buyers) with the quirks of Taobao/Tmall exports: Excel-wrapped order ids
(``="3021..."``), amounts as ``¥1,299.00``, slash-separated times, Chinese status words
(交易成功, 退款成功, 交易关闭), a few remarks spanning two lines, 3% refunded and 1% cancelled
orders, and a few garbage rows (an amount ``abc``, a missing buyer).

Then, in one run:

1. **DuckDB** reads the file (``read_csv``, all columns as text) and computes the aggregate
   ``analyze``'s customer state needs: per buyer, the paid orders, their total and the first and
   last business date (the same cleaning of ids, amounts, times and statuses in SQL);
2. **huitouke** runs :func:`huitouke.analyze.analyze_export` on the same file in a fresh process
   (reading, validation, state, segments, KPIs) and reports its time, its peak RSS (``ru_maxrss``)
   and a cProfile breakdown of one more run by module (reading / validation / segments);
3. both per-buyer tables are checked equal (counts, totals in cents, first and last date).

Goal (issue 14): ``analyze`` <= 5x DuckDB, peak RSS <= 1.5 GB. Run:
``.venv/bin/python bench/analyze.py``; ``BENCH_ROWS`` (1,000,000) rows, ``BENCH_REPEATS`` (3) runs
of each side (the best is reported), ``BENCH_PROFILE=0`` to skip the profile. The file is cached
in ``$BENCH_DIR`` (default: the system's temp folder) between runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

ROOT = Path(__file__).resolve().parents[1]
ROWS = int(os.environ.get("BENCH_ROWS", "1000000"))
REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))
PROFILE = os.environ.get("BENCH_PROFILE", "1") == "1"
FOLDER = Path(os.environ.get("BENCH_DIR", tempfile.gettempdir())) / "huitouke-bench-analyze"
SEED = 14
FIRST_DAY = np.datetime64("2023-01-01T00:00:00", "s")
HISTORY_SECONDS = 3 * 365 * 86_400

# status word -> canonical status, and its share of orders
STATUS_WORDS: dict[str, tuple[str, float]] = {
    "交易成功": ("completed", 0.50),
    "completed": ("completed", 0.20),
    "买家已付款，等待卖家发货": ("paid", 0.10),
    "paid": ("paid", 0.08),
    "卖家已发货，等待买家确认": ("shipped", 0.08),
    "退款成功": ("refunded", 0.02),
    "refunded": ("refunded", 0.01),
    "交易关闭": ("cancelled", 0.01),
}
PAID = ("paid", "shipped", "completed")
CATEGORIES = ("food", "kids_clothing", "daily_goods", "durables", "womens_clothing", "cosmetics", "3c")
SURNAMES = np.array(list("王李张刘陈杨黄赵吴周"))


def _text(values: np.ndarray) -> pa.Array:
    return pa.array(values).cast(pa.string())


def _join(*parts: pa.Array | str) -> pa.Array:
    return pc.binary_join_element_wise(*parts, "")


def generate(path: Path, rows: int, seed: int = SEED) -> None:
    """Write the export: ``rows`` order lines of about 0.8 * rows orders (numpy and Arrow, no loop
    over rows)."""
    rng = np.random.default_rng(seed)
    buyers = max(100, rows // 5)
    orders = int(rows / 1.2)
    lines_per_order = np.ones(orders, dtype=np.int64)
    lines_per_order[rng.choice(orders, size=rows - orders, replace=False)] = 2
    # skewed orders per buyer: a few buy often, most once or twice
    buyer = (buyers * rng.power(0.35, orders)).astype(np.int64)
    paid_s = np.sort(rng.integers(0, HISTORY_SECONDS, orders))
    paid = FIRST_DAY + paid_s.astype("timedelta64[s]")
    words = np.array(list(STATUS_WORDS))
    shares = np.array([share for _, share in STATUS_WORDS.values()])
    status = words[rng.choice(len(words), orders, p=shares / shares.sum())]
    amount_cents = np.round(rng.lognormal(4.8, 0.9, orders) * 100).astype(np.int64)

    order_id = _text(3_021_498_700_000_000 + np.arange(orders) * 7)
    excel = rng.random(orders) < 0.3
    order_id = pc.if_else(pa.array(excel), _join('="', order_id, '"'), order_id)
    customer_id = pc.if_else(
        pa.array(rng.random(orders) < 0.7),
        _join("tb_", _text(buyer)),
        _join("买家", _text(buyer)),
    )
    paid_text = pa.array(np.datetime_as_string(paid, unit="s")).cast(pa.string())
    paid_text = pc.replace_substring(paid_text, "T", " ")
    slashes = pa.array(rng.random(orders) < 0.2)
    paid_text = pc.if_else(slashes, pc.replace_substring(paid_text, "-", "/"), paid_text)
    cancelled = pa.array(status == "交易关闭")
    paid_text = pc.if_else(cancelled, pa.scalar(None, pa.string()), paid_text)
    yuan = amount_cents // 100
    plain = _join(_text(yuan), ".", pc.utf8_lpad(_text(amount_cents % 100), width=2, padding="0"))
    with_comma = _join(
        "¥",
        pc.if_else(
            pa.array(yuan >= 1000),
            _join(_text(yuan // 1000), ",", pc.utf8_lpad(_text(yuan % 1000), width=3, padding="0")),
            _text(yuan),
        ),
        ".",
        pc.utf8_lpad(_text(amount_cents % 100), width=2, padding="0"),
    )
    amount = pc.if_else(pa.array(rng.random(orders) < 0.3), with_comma, plain)
    refunded = np.isin(status, ["退款成功", "refunded"])
    updated = paid + rng.integers(86_400, 20 * 86_400, orders).astype("timedelta64[s]")
    updated_text = pc.replace_substring(
        pa.array(np.datetime_as_string(updated, unit="s")).cast(pa.string()), "T", " "
    )
    updated_text = pc.if_else(pa.array(refunded), updated_text, pa.scalar(None, pa.string()))
    source = np.where(rng.random(orders) < 0.05, "聚划算", "")
    name = SURNAMES[rng.integers(0, len(SURNAMES), orders)].astype(object) + "先生"
    phone = _join("138", pc.utf8_lpad(_text(rng.integers(0, 10**8, orders)), width=8, padding="0"))

    # garbage: 0.05% unreadable amounts, 0.05% missing buyers (single-line orders)
    single = np.flatnonzero(lines_per_order == 1)
    bad = rng.choice(single, size=max(2, orders // 1000), replace=False)
    bad_amount, no_buyer = bad[: len(bad) // 2], bad[len(bad) // 2 :]
    amount = pc.if_else(pa.array(np.isin(np.arange(orders), bad_amount)), pa.scalar("abc"), amount)
    customer_id = pc.if_else(
        pa.array(np.isin(np.arange(orders), no_buyer)), pa.scalar(None, pa.string()), customer_id
    )

    line_order = np.repeat(np.arange(orders), lines_per_order)
    category = np.array(CATEGORIES)[rng.integers(0, len(CATEGORIES), rows)]
    sku = _join("SKU-", _text(rng.integers(0, 5_000, rows)))
    product = _join(pa.array(category).cast(pa.string()), " 宝贝 ", _text(rng.integers(0, 500, rows)))
    remark = rng.random(rows) < 0.0005  # a buyer's remark spanning two lines, with a comma
    product = pc.if_else(pa.array(remark), _join(product, "\n备注: 尽快发货, 谢谢"), product)
    quantity = rng.integers(1, 4, rows)
    take = pa.array(line_order)
    table = pa.table(
        {
            "order_id": order_id.take(take),
            "customer_id": customer_id.take(take),
            "paid_at": paid_text.take(take),
            "amount": amount.take(take),
            "status": pa.array(status).take(take),
            "updated_at": updated_text.take(take),
            "acquisition_source": pa.array(source).take(take),
            "customer_name": pa.array(name.astype(str)).take(take),
            "phone": phone.take(take),
            "sku": sku,
            "product_name": product,
            "category": pa.array(category),
            "quantity": _text(quantity),
            "line_amount": _text(np.round(amount_cents[line_order] / lines_per_order[line_order] / 100, 2)),
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    # as a spreadsheet saves it: quotes only around cells that need them (pyarrow would quote every string)
    table.to_pandas().to_csv(tmp, index=False, encoding="utf-8")
    tmp.replace(path)


DUCKDB_SQL = r"""
WITH raw AS (
    SELECT * FROM read_csv(?, header = true, all_varchar = true, quote = '"', escape = '"')
), parsed AS (
    SELECT trim(replace(replace(order_id, '="', ''), '"', '')) AS order_id,
           nullif(trim(customer_id), '') AS customer_id,
           try_strptime(paid_at, ['%Y-%m-%d %H:%M:%S', '%Y/%m/%d %H:%M:%S']) AS paid_at,
           TRY_CAST(replace(replace(amount, '¥', ''), ',', '') AS DECIMAL(18, 2)) AS amount,
           CASE status WHEN '交易成功' THEN 'completed' WHEN '买家已付款，等待卖家发货' THEN 'paid'
                       WHEN '卖家已发货，等待买家确认' THEN 'shipped' WHEN '退款成功' THEN 'refunded'
                       WHEN '交易关闭' THEN 'cancelled' ELSE status END AS status
    FROM raw
), good_orders AS (
    SELECT order_id FROM parsed GROUP BY order_id
    HAVING bool_and(customer_id IS NOT NULL AND amount IS NOT NULL)
), orders AS (
    SELECT DISTINCT p.order_id, customer_id, paid_at, amount, status
    FROM parsed p SEMI JOIN good_orders g ON p.order_id = g.order_id
)
SELECT customer_id, count(*) AS paid_orders, sum(amount * 100)::BIGINT AS total_cents,
       min(paid_at)::DATE AS first_order_date, max(paid_at)::DATE AS last_order_date
FROM orders WHERE status IN ('paid', 'shipped', 'completed')
GROUP BY customer_id ORDER BY customer_id
"""


# A lower bound: the file read and grouped without any cleaning (not the same figures: ids, amounts
# and times are taken as they are).
DUCKDB_PLAIN = """
SELECT customer_id, count(DISTINCT order_id) AS orders, sum(TRY_CAST(amount AS DOUBLE)) AS total,
       min(paid_at) AS first_paid, max(paid_at) AS last_paid
FROM read_csv(?, header = true, all_varchar = true) GROUP BY customer_id
"""


def duckdb_side(path: Path, sql: str = DUCKDB_SQL, repeats: int = 1) -> tuple[pd.DataFrame, list[float]]:
    import duckdb

    times: list[float] = []
    result = pd.DataFrame()
    for _ in range(repeats):
        con = duckdb.connect()
        started = time.perf_counter()
        result = con.execute(sql, [str(path)]).df()
        times.append(time.perf_counter() - started)
        con.close()
    return result, times


# Runs in a fresh process: one analyze_export, its time, its parts (reading, validation, segments:
# the three calls it makes, timed by wrappers) and the process's peak RSS.
CHILD = r"""
import json, resource, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import huitouke.analyze as analyze_module
import huitouke.intake.files as files_module
parts = {}
def timed(name, fn):
    def run(*args, **kwargs):
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            parts[name] = time.perf_counter() - started
    return run
files_module.read_export = timed("read", files_module.read_export)
analyze_module.validate = timed("validate", analyze_module.validate)
analyze_module.analyze = timed("segments", analyze_module.analyze)
started = time.perf_counter()
result = analyze_module.analyze_export(Path(sys.argv[2]))
seconds = time.perf_counter() - started
if sys.argv[3]:
    result.customers().to_parquet(sys.argv[3])
print(json.dumps({"seconds": seconds, "rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2,
                  "rows_read": result.batch.rows_read, "quarantined": len(result.batch.quarantine),
                  "parts": parts}))
"""

# Runs in a fresh process: one analyze_export under cProfile, cumulative seconds by part.
PROFILE_CHILD = r"""
import cProfile, json, pstats, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from huitouke.analyze import analyze_export
profiler = cProfile.Profile()
profiler.runcall(analyze_export, Path(sys.argv[2]))
stats = pstats.Stats(profiler)
wanted = {"read_export": "intake/files.py", "read": "intake/files.py", "validate": "intake/validate.py", "analyze": "segments/kpis.py",
          "analyze_export": "analyze.py"}
parts = {}
for (file, _line, function), (_cc, _nc, _tt, cumulative, _callers) in stats.stats.items():
    for name, where in wanted.items():
        if function == name and file.endswith(where):
            parts[name] = max(parts.get(name, 0.0), cumulative)
top = sorted(stats.stats.items(), key=lambda kv: -kv[1][3])
huitouke = [(f"{Path(f).parent.name}/{Path(f).name}:{fn}", round(v[3], 2), round(v[2], 2))
            for (f, _l, fn), v in top if "huitouke" in f][:25]
internal = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])[:15]
print(json.dumps({"parts": parts, "huitouke": huitouke,
                  "internal": [(f"{Path(f).name}:{fn}", round(v[2], 2)) for (f, _l, fn), v in internal]}))
"""


def child(script: str, *args: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", script, str(ROOT / "plugins"), *args],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise SystemExit(f"analyze failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def same_customers(ours: pd.DataFrame, theirs: pd.DataFrame) -> tuple[bool, str]:
    a = ours.assign(total_cents=(ours["total_cny"] * 100).round().astype("int64")).sort_values("customer_id")
    b = theirs.sort_values("customer_id")
    if len(a) != len(b):
        return False, f"{len(a):,} buyers vs {len(b):,}"
    a, b = a.reset_index(drop=True), b.reset_index(drop=True)
    checks = {
        "ids": (a["customer_id"].astype(str) == b["customer_id"].astype(str)).all(),
        "paid_orders": (a["paid_orders"].to_numpy() == b["paid_orders"].to_numpy()).all(),
        "totals": (a["total_cents"].to_numpy() == b["total_cents"].to_numpy()).all(),
        "first": (pd.to_datetime(a["first_order_date"]) == pd.to_datetime(b["first_order_date"])).all(),
        "last": (pd.to_datetime(a["last_order_date"]) == pd.to_datetime(b["last_order_date"])).all(),
    }
    wrong = [name for name, ok in checks.items() if not ok]
    return not wrong, ("differ in " + ", ".join(wrong)) if wrong else f"{len(a):,} buyers"


def main() -> int:
    import duckdb

    path = FOLDER / f"orders_{ROWS}_{SEED}.csv"
    if not path.exists():
        started = time.perf_counter()
        generate(path, ROWS)
        print(f"generated {path} in {time.perf_counter() - started:.1f} s")
    size_mb = path.stat().st_size / 1024**2
    print(f"analyze benchmark: {ROWS:,} rows, {size_mb:.0f} MB ({path})")
    print(
        f"pandas {pd.__version__}, pyarrow {pa.__version__}, duckdb {duckdb.__version__}, {os.cpu_count()} cores"
    )

    # interleaved (DuckDB, plain DuckDB, huitouke; again...): a shared machine's load hits all alike
    d_times: list[float] = []
    plain_times: list[float] = []
    runs = []
    theirs = pd.DataFrame()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "customers.parquet"
        for i in range(REPEATS):
            theirs, times = duckdb_side(path)
            d_times += times
            plain_times += duckdb_side(path, DUCKDB_PLAIN)[1]
            runs.append(child(CHILD, str(path), str(out) if i == 0 else ""))
        ours = pd.read_parquet(out)
    print(f"duckdb read_csv + GROUP BY: {min(d_times):.2f} s (all: {', '.join(f'{t:.2f}' for t in d_times)})")
    print(f"duckdb without cleaning:    {min(plain_times):.2f} s (lower bound; not the same figures)")
    best = min(runs, key=lambda r: r["seconds"])
    rss = max(r["rss_gb"] for r in runs)
    ratio = best["seconds"] / min(d_times)
    same, detail = same_customers(ours, theirs)
    all_runs = ", ".join(f"{r['seconds']:.2f}" for r in runs)
    print(
        f"huitouke analyze_export:    {best['seconds']:.2f} s (all: {all_runs}); "
        f"{best['rows_read']:,} rows read, {best['quarantined']:,} quarantined; peak RSS {rss:.2f} GB"
    )
    parts = best.get("parts", {})
    print(
        "  of which: "
        + ", ".join(
            f"{name} {parts[name]:.2f} s" for name in ("read", "validate", "segments") if name in parts
        )
        + f", the rest {best['seconds'] - sum(parts.values()):.2f} s"
    )
    print(f"same per-buyer orders, totals, first and last dates: {same} ({detail})")
    if PROFILE:
        profile = child(PROFILE_CHILD, str(path))
        profiled = profile["parts"]
        print("cProfile (one run, cumulative seconds; profiling slows Python-level code):")
        for name in ("analyze_export", "read", "read_export", "validate", "analyze"):
            if name in profiled:
                print(f"  {name:<16} {profiled[name]:7.2f} s")
        print("  top huitouke functions (cumulative, own):")
        for where, cumulative, own in profile["huitouke"]:
            print(f"    {cumulative:7.2f} {own:7.2f}  {where}")
        print("  top functions by own time:")
        for where, own in profile["internal"]:
            print(f"    {own:7.2f}  {where}")
    print()
    print("summary                      measured      goal")
    print(f"  analyze / duckdb           {ratio:8.1f} x    <= 5 x")
    print(f"  analyze / duckdb, no clean {best['seconds'] / min(plain_times):8.1f} x")
    if "read" in parts:
        print(f"  reading / duckdb           {parts['read'] / min(d_times):8.1f} x")
        print(f"  validation / duckdb        {parts['validate'] / min(d_times):8.1f} x")
    print(f"  peak RSS                   {rss:8.2f} GB   <= 1.5 GB")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
