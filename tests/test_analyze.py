"""``huitouke analyze ORDERS_FILE``: a shop's segments straight from an export, nothing deployed."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import text

from huitouke.cli import main
from huitouke.demo_shop import SHOP_ORDER_QUERY, ShopSpec, generate_shop, write_shop
from huitouke.store.connection import make_engine

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    """A demo shop's orders exported as one CSV (canonical columns) and one Parquet file."""
    folder = tmp_path_factory.mktemp("export")
    shop = generate_shop(ShopSpec(customers=3_000, start=date(2025, 1, 1), end=date(2025, 12, 14), seed=5))
    engine = make_engine(f"sqlite:///{folder / 'shop.db'}")
    write_shop(shop, engine)
    with engine.connect() as conn:
        frame = pd.read_sql_query(
            text(SHOP_ORDER_QUERY),
            conn,
            params={"start": "2000-01-01 00:00:00", "end": "2100-01-01 00:00:00"},
        )
    frame.to_csv(folder / "orders.csv", index=False)
    frame.astype(str).where(frame.notna(), None).to_parquet(folder / "orders.parquet")
    return shop, folder


def test_analyze_prints_the_kpi_tables_and_writes_one_row_per_customer(export, capsys):
    shop, folder = export
    out_file = folder / "customers.csv"
    assert main(["analyze", str(folder / "orders.csv"), "--customers-out", str(out_file)]) == 0
    printed = capsys.readouterr().out
    assert "analysed as of 2025-12-15" in printed  # the day after the last order
    assert "Rows not used" in printed and "Value tiers by average order value" in printed
    customers = pd.read_csv(out_file)
    truth = shop.truth[shop.truth["paid_orders"] > 0]
    assert len(customers) == len(truth)
    assert list(customers.columns[:6]) == [
        "customer_id",
        "first_order_date",
        "last_order_date",
        "paid_orders",
        "total_cny",
        "aov_cny",
    ]
    merged = customers.merge(truth, on="customer_id", suffixes=("", "_truth"))
    assert (merged["paid_orders"] == merged["paid_orders_truth"]).all()
    assert (merged["total_cny"].round(2) == merged["paid_amount"].round(2)).all()
    assert customers["r_score"].between(1, 5).all() and customers["lifecycle"].notna().all()


def test_csv_and_parquet_exports_give_the_same_analysis(export):
    from huitouke.analyze import analyze_export

    _, folder = export
    csv = analyze_export(folder / "orders.csv", as_of=date(2025, 12, 1))
    parquet = analyze_export(folder / "orders.parquet", as_of=date(2025, 12, 1))
    assert csv.analysis.kpis == parquet.analysis.kpis
    assert csv.analysis.business_date == date(2025, 12, 1)


def test_a_taobao_export_with_chinese_headers(capsys):
    assert main(["analyze", str(FIXTURES / "taobao_orders_gbk.csv"), "--mapping", "taobao"]) == 0
    assert "Customer segments on" in capsys.readouterr().out


def test_a_missing_file_is_a_clear_error(capsys, tmp_path):
    assert main(["analyze", str(tmp_path / "nope.csv")]) == 2
    assert "no such order export" in capsys.readouterr().err
