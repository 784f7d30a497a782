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


SMALL = (
    "order_id,customer_id,paid_at,amount,status\n"
    "A1,c1,2025-11-01 10:00:00,100,paid\n"
    "A2,c2,2025-11-02 10:00:00,50,completed\n"
    "A3,c1,2025-11-20 10:00:00,20,paid\n"
)


@pytest.mark.parametrize("name", ["orders[1].csv", "star*.csv", "o_{ds}.csv"])
def test_the_file_named_is_the_file_read(tmp_path, name):
    from huitouke.analyze import analyze_export

    (tmp_path / name).write_text(SMALL, encoding="utf-8")
    for decoy in ("orders1.csv", "star-two.csv", "o_2025-11-20.csv"):
        (tmp_path / decoy).write_text(SMALL.replace("A", "Z"), encoding="utf-8")
    result = analyze_export(tmp_path / name)
    assert result.batch.rows_read == 3 and sorted(result.batch.orders["order_id"]) == ["A1", "A2", "A3"]


def test_an_unknown_encoding_and_a_folder_are_one_line_errors(tmp_path, capsys):
    (tmp_path / "orders.csv").write_text(SMALL, encoding="utf-8")
    with pytest.raises(SystemExit) as exit_:  # the option's own check (argparse): usage and one error
        main(["analyze", str(tmp_path / "orders.csv"), "--encoding", "nosuch"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "argument --encoding: unknown text encoding 'nosuch'" in err
    assert "Traceback" not in err
    assert main(["analyze", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "is a folder" in err and len(err.strip().splitlines()) == 1


def test_undecodable_bytes_are_a_one_line_error_naming_file_and_line(tmp_path, capsys):
    (tmp_path / "orders.csv").write_bytes(SMALL.encode() + b"A4,c\xff\x80,2025-11-21,1,paid\n")
    assert main(["analyze", str(tmp_path / "orders.csv")]) == 2
    assert "orders.csv:5: not valid utf-8 or gb18030" in capsys.readouterr().err


def test_every_row_is_read_and_each_is_used_or_counted(tmp_path):
    from huitouke.analyze import analyze_export

    long = "x" * 200_000
    extra = (
        "B1,c3,1900-01-01 10:00:00,10,paid\n"
        "B2,c3,2199-12-31 10:00:00,10,paid\n"
        "B3,c4,2250-01-01 10:00:00,10,paid\n"
        f'B4,"{long}",2025-11-03 10:00:00,10,paid\n'
        "B5,c5,2025-11-04 10:00:00,abc,paid\n"
    )
    (tmp_path / "orders.csv").write_text(SMALL + extra, encoding="utf-8")
    result = analyze_export(tmp_path / "orders.csv", as_of=date(2025, 11, 10))
    batch = result.batch
    assert batch.rows_read == 8  # nothing dropped while reading, whatever its date
    used = set(batch.orders["order_id"])
    quarantined = set(batch.quarantine["order_id"].dropna())
    assert used | quarantined == {"A1", "A2", "A3", "B1", "B2", "B3", "B4", "B5"}
    text = result.text()
    assert "Rows not used" in text and "invalid_amount 1" in text
    later = int((pd.to_datetime(batch.orders["business_date"]) > pd.Timestamp("2025-11-10")).sum())
    assert result.orders_after == later >= 1  # A3 (and whatever far-future row validation let in)
    assert f"Orders after 2025-11-10 not analysed: {later:,}" in text
