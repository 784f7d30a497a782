"""Validation alone: rows per second of :func:`huitouke.intake.validate.validate` on synthetic rows.

``.venv/bin/python bench/validate.py`` (``BENCH_ROWS=200000`` for a quick run). One business day of
canonical rows as a file source hands them over (every value text, Taobao-style statuses and
amounts, 2.5 lines per order, 0.1% bad rows), once as object columns (today's CSV reader) and once
as Arrow-backed ``str`` columns; each is validated 3 times and the best time is printed. The
issue's goal for the whole intake is 100,000 order lines a second end to end, so validation alone
should be well above that.
"""

from __future__ import annotations

import os
import time
from datetime import date
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from huitouke.intake.validate import validate

ROWS = int(os.environ.get("BENCH_ROWS", "1000000"))
DAY = date(2025, 12, 12)
TZ = ZoneInfo("Asia/Shanghai")


def synthetic_rows(rows: int, seed: int = 14) -> pd.DataFrame:
    """``rows`` canonical source rows (all text), about 2.5 per order, 0.1% of them bad."""
    rng = np.random.default_rng(seed)
    order_no = np.sort(rng.integers(0, int(rows / 2.5), rows))
    seconds = rng.integers(0, 86_400, order_no.max() + 1)[order_no]
    paid = pd.Timestamp("2025-12-12") + pd.to_timedelta(seconds, unit="s")
    paid_text = paid.strftime("%Y-%m-%d %H:%M:%S")
    order_amount = rng.integers(100, 200_000, order_no.max() + 1)[order_no]
    line_amount = rng.integers(100, 50_000, rows)
    status = np.array(["交易成功", "买家已付款，等待卖家发货", "paid", "交易关闭"])[rng.integers(0, 4, rows)]
    frame = pd.DataFrame(
        {
            "order_id": [f"T{n:012d}" for n in order_no],
            "customer_id": [f"buyer{n % (rows // 4):07d}" for n in order_no],
            "paid_at": np.asarray(paid_text, dtype=object),
            "amount": [f"{c / 100:.2f}" for c in order_amount],
            "status": status.astype(object),
            "acquisition_source": np.where(rng.random(rows) < 0.1, "聚划算", None),
            "coupon_code": None,
            "updated_at": np.asarray(paid_text, dtype=object),
            "customer_name": None,
            "phone": [f"138{n % 100_000_000:08d}" for n in order_no],
            "email": None,
            "birthday": None,
            "sku": [f"SKU-{n:05d}" for n in rng.integers(0, 5000, rows)],
            "product_name": "奶粉 900g",
            "category": np.array(["food", "3c", "cosmetics", "daily_goods"])[rng.integers(0, 4, rows)].astype(
                object
            ),
            "quantity": "1",
            "line_amount": [f"{c / 100:.2f}" for c in line_amount],
            "_source_ref": [f"orders.csv:{i + 2}" for i in range(rows)],
        }
    )
    bad = rng.choice(rows, rows // 1000, replace=False)
    frame.loc[bad[0::4], "amount"] = "13812345678"
    frame.loc[bad[1::4], "paid_at"] = "now"
    frame.loc[bad[2::4], "customer_id"] = None
    frame.loc[bad[3::4], "quantity"] = "x"
    return frame.astype(object).where(frame.notna(), None)


def best_of(runs: int, frame: pd.DataFrame) -> tuple[float, int, int]:
    best, batch = float("inf"), None
    for _ in range(runs):
        started = time.perf_counter()
        batch = validate(frame, TZ, DAY)
        best = min(best, time.perf_counter() - started)
    assert batch is not None
    return best, len(batch.orders), len(batch.quarantine)


def main() -> None:
    frame = synthetic_rows(ROWS)
    arrow = frame.astype("str").where(frame.notna(), None)
    print(f"validate() on {ROWS:,} rows (best of 3)")
    for name, data in (("object columns", frame), ("arrow str columns", arrow)):
        seconds, orders, quarantined = best_of(3, data)
        print(
            f"  {name:<18} {seconds:6.2f} s  {ROWS / seconds:>10,.0f} rows/s  "
            f"({orders:,} orders, {quarantined:,} quarantine rows)"
        )


if __name__ == "__main__":
    main()
