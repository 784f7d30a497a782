"""The day's KPIs on a tiny hand-made shop, computed by hand, and their text tables."""

from __future__ import annotations

import datetime as dt
import json
from zoneinfo import ZoneInfo

import pandas as pd
import pytest

from huitouke.segments import (
    analyze,
    build_state,
    classify,
    compute_kpis,
    diff_segments,
    empty_history,
    format_kpis,
)

TODAY = dt.date(2025, 12, 31)

# customer, business date, status, CNY, source
ORDERS = [
    ("a", "2025-12-20", "paid", 50, "organic"),  # new, AOV 50: low
    ("b", "2025-06-01", "completed", 60, "organic"),  # 2 orders, AOV 70.00: low, repeat
    ("b", "2025-11-01", "completed", 80, "organic"),
    ("c", "2024-12-31", "completed", 100, "organic"),  # exactly 365 days ago: churned, mid
    ("d", "2025-10-01", "completed", 150, "organic"),  # 3 orders, AOV 150: premium, repeat
    ("d", "2025-11-15", "completed", 150, "organic"),
    ("d", "2025-12-15", "shipped", 150, "organic"),
    ("e", "2025-03-01", "completed", 200, "flash_sale"),  # 305 days: at risk, premium, low-value source
    ("f", "2025-12-01", "refunded", 80, "organic"),  # refunded: counts for nothing
    ("f", "2025-12-30", "paid", 90, "organic"),  # new (first *paid* order), mid
    ("g", "2025-12-10", "cancelled", 300, "organic"),  # no paid order: not a customer
]


def _orders() -> pd.DataFrame:
    frame = pd.DataFrame(
        ORDERS, columns=["customer_id", "business_date", "status", "cny", "acquisition_source"]
    )
    frame["order_id"] = [f"o{i}" for i in range(len(frame))]
    frame["business_date"] = pd.to_datetime(frame["business_date"])
    frame["paid_at"] = frame["business_date"] + pd.Timedelta(hours=2)
    frame["amount_cents"] = frame["cny"] * 100
    return frame


@pytest.fixture
def kpis() -> dict:
    segments = classify(build_state(_orders()), TODAY)
    return compute_kpis(segments, TODAY)


def test_churn_and_repeat_rates(kpis):
    assert kpis["customers"] == 6
    assert kpis["churned_customers"] == 1 and kpis["churn_rate"] == pytest.approx(1 / 6)
    assert kpis["repeat_customers"] == 2 and kpis["repeat_rate"] == pytest.approx(2 / 6)
    assert kpis["paid_orders"] == 9
    assert kpis["gmv_cents"] == 103_000
    assert kpis["mean_order_value_cny"] == 114.44


def test_segment_sizes(kpis):
    assert kpis["lifecycle"] == {"new": 2, "one_time": 0, "repeat": 2, "loyal": 0, "at_risk": 1, "churned": 1}
    assert kpis["member_tiers"] == {"vip": 1, "active": 0, "normal": 5}
    cells = {(s["lifecycle"], s["member_tier"]): s["customers"] for s in kpis["segments"]}
    assert cells[("repeat", "vip")] == 1 and cells[("repeat", "normal")] == 1
    assert sum(cells.values()) == 6
    assert kpis["low_value_acquisition_customers"] == 1


def test_the_value_tier_table_of_seed_001(kpis):
    rows = {r["tier"]: r for r in kpis["value_tiers"]}
    assert list(rows) == ["low", "mid", "premium", "aov > 70", "aov > 140", "whole shop"]
    expected = {
        # tier: customers, GMV cents, orders, repeat customers, mean order value CNY
        "low": (2, 19_000, 3, 1, 63.33),  # a (50), b (70.00 exactly: not above 70)
        "mid": (2, 19_000, 2, 0, 95.00),  # c (100), f (90)
        "premium": (2, 65_000, 4, 1, 162.50),  # d (150), e (200)
        "aov > 70": (4, 84_000, 6, 1, 140.00),
        "aov > 140": (2, 65_000, 4, 1, 162.50),
        "whole shop": (6, 103_000, 9, 2, 114.44),
    }
    for tier, (customers, gmv, orders, repeat, mean) in expected.items():
        row = rows[tier]
        assert (row["customers"], row["gmv_cents"], row["orders"], row["repeat_customers"]) == (
            customers,
            gmv,
            orders,
            repeat,
        ), tier
        assert row["customer_share"] == pytest.approx(customers / 6)
        assert row["gmv_share"] == pytest.approx(gmv / 103_000)
        assert row["repeat_rate"] == pytest.approx(repeat / customers)
        assert row["mean_order_value_cny"] == mean


def test_customers_by_acquisition_source(kpis):
    sources = {s["source"]: s for s in kpis["acquisition_sources"]}
    assert sources["flash_sale"]["customers"] == 1 and sources["flash_sale"]["low_value"] is True
    assert sources["organic"]["customers"] == 5 and sources["organic"]["repeat_rate"] == pytest.approx(2 / 5)


def test_the_kpis_are_json_serialisable(kpis):
    assert json.loads(json.dumps(kpis)) == kpis


def test_the_text_tables_are_readable_and_aligned(kpis):
    text = format_kpis(kpis)
    assert "Customer segments on 2025-12-31" in text
    assert "churn rate" in text and "16.67%" in text
    assert "repeat rate" in text and "33.33%" in text
    assert "1,030.00" in text  # GMV in CNY
    for table in text.split("\n\n"):
        lines = table.splitlines()
        rules = [i for i, line in enumerate(lines) if line and set(line) <= {"-", " "}]
        if not rules:
            continue
        header, rule, rows = lines[rules[0] - 1], lines[rules[0]], lines[rules[0] + 1 :]
        assert len(header) <= len(rule) and all(len(row) <= len(rule) for row in rows)
    value_rows = [
        line for line in text.splitlines() if line.startswith(("low ", "mid ", "premium ", "whole shop"))
    ]
    assert len(value_rows) == 4 and len({len(line) for line in value_rows}) == 1  # right-aligned figures


def test_transitions_are_shown_when_given():
    segments = classify(build_state(_orders()), TODAY)
    change = diff_segments(empty_history(), segments, TODAY)
    kpis = compute_kpis(segments, TODAY, transitions=change.transitions)
    assert {(t["from"], t["to"]): t["customers"] for t in kpis["transitions"]}[("none", "new")] == 2
    assert "Lifecycle transitions today" in format_kpis(kpis)


def test_analyze_goes_from_an_order_export_to_the_kpis():
    """The same figures from canonical export rows, through the intake's validation."""
    from huitouke.intake.validate import validate

    raw = _orders().rename(columns={"cny": "amount"})
    raw["paid_at"] = (raw["business_date"] + pd.Timedelta(hours=10)).dt.strftime(
        "%Y-%m-%d %H:%M:%S"
    )  # shop time
    raw["category"] = "food"
    raw["line_amount"] = raw["amount"]
    batch = validate(raw.drop(columns=["business_date", "amount_cents"]), ZoneInfo("Asia/Shanghai"), TODAY)
    analysis = analyze(batch.orders, batch.lines, business_date=TODAY)
    assert analysis.kpis["churn_rate"] == pytest.approx(1 / 6)
    assert analysis.kpis["value_tiers"][-1]["mean_order_value_cny"] == 114.44
    assert set(analysis.state["main_category_group"]) == {"food"}
    assert "whole shop" in analysis.text()
    # Without a date: the latest business date of the export.
    assert analyze(batch.orders, batch.lines).business_date == TODAY - dt.timedelta(days=1)
