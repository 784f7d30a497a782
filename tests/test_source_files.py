"""Folder-of-exports source and column mappings: raw values out, canonical names, day selection."""

from __future__ import annotations

import logging
import shutil
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from huitouke.intake.files import FileOrderSource
from huitouke.intake.mappings import (
    MAPPINGS,
    OUTPUT_COLUMNS,
    apply_mapping,
    clean_order_id,
    resolve_mapping,
)
from huitouke.records import ALL_COLUMNS, REQUIRED_COLUMNS

FIXTURES = Path(__file__).parent / "fixtures"
SHANGHAI = ZoneInfo("Asia/Shanghai")
DAY_START = datetime(2025, 12, 12, tzinfo=SHANGHAI)
DAY_END = DAY_START + timedelta(days=1)


def copy_fixture(name: str, folder: Path, as_name: str | None = None) -> Path:
    target = folder / (as_name or name)
    shutil.copyfile(FIXTURES / name, target)
    return target


# -- mappings ----------------------------------------------------------------------------


def test_canonical_mapping_is_identity_over_all_columns():
    assert MAPPINGS["canonical"] == {c: c for c in ALL_COLUMNS}


def test_taobao_mapping_targets_only_canonical_columns_and_covers_required():
    assert set(MAPPINGS["taobao"].values()) <= set(ALL_COLUMNS)
    assert set(REQUIRED_COLUMNS) <= set(MAPPINGS["taobao"].values())
    assert "订单关闭原因" not in MAPPINGS["taobao"]
    assert "宝贝种类" not in MAPPINGS["taobao"]  # a count of items, not a category


def test_resolve_mapping_unknown_name_names_the_config_field():
    with pytest.raises(
        ValueError, match=r"include/huitouke.yaml: intake.files.mapping: unknown mapping 'tmall'"
    ):
        resolve_mapping("tmall", "include/huitouke.yaml: intake.files.mapping")


def test_resolve_inline_mapping_rejects_non_canonical_target_naming_field():
    with pytest.raises(ValueError) as err:
        resolve_mapping({"OrderNo": "order_id", "Total": "total"}, "cfg: intake.files.mapping")
    assert "cfg: intake.files.mapping" in str(err.value)
    assert "'Total'" in str(err.value) and "'total'" in str(err.value)


def test_resolve_inline_mapping_returns_a_copy():
    inline = {"OrderNo": "order_id"}
    resolved = resolve_mapping(inline, "x")
    resolved["y"] = "amount"
    assert inline == {"OrderNo": "order_id"}


def test_apply_mapping_first_present_header_wins_and_strips_bom_and_spaces():
    import pandas as pd

    df = pd.DataFrame(
        [["1", "u", "t", "9", "10", "paid"]],
        columns=["\ufeff订单编号", "买家会员名 ", "订单付款时间", "实付金额", "买家实际支付金额", "订单状态"],
    )
    out = apply_mapping(df, MAPPINGS["taobao"], "test")
    assert list(out.columns) == list(REQUIRED_COLUMNS)
    assert out.iloc[0]["amount"] == "10"  # 买家实际支付金额 comes first in the mapping


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('="3021498712345678"', "3021498712345678"),
        ("\t3021498712345679", "3021498712345679"),
        ("'3021498712345680", "3021498712345680"),
        ("=3021", "3021"),
        ("A-1 ", "A-1"),
        ("abc", "abc"),
        (12345, 12345),
        (None, None),
    ],
)
def test_clean_order_id_strips_excel_wrappers_only(raw, expected):
    assert clean_order_id(raw) == expected


# -- reading -----------------------------------------------------------------------------


def test_canonical_csv_values_stay_raw_strings_with_none_for_empty(tmp_path):
    copy_fixture("orders_canonical.csv", tmp_path)
    df = FileOrderSource(tmp_path).read(DAY_START, DAY_END)

    assert tuple(df.columns) == OUTPUT_COLUMNS
    by_ref = {r["_source_ref"]: r for r in df.to_dict("records")}
    first = by_ref["orders_canonical.csv:2"]
    assert first["amount"] == "128.00" and first["quantity"] == "1"
    assert first["updated_at"] is None and first["acquisition_source"] is None
    assert first["email"] is None  # not in the file at all
    garbage = by_ref["orders_canonical.csv:3"]
    assert garbage["amount"] == "abc" and garbage["product_name"] == "Kids jacket, blue"
    # a quoted cell spanning two lines: the next row's reference still points at its first line
    assert by_ref["orders_canonical.csv:4"]["product_name"] == "Socks\n(3 pairs)"
    assert list(df["_source_ref"]) == [f"orders_canonical.csv:{n}" for n in (2, 3, 4, 7, 8)]


def test_parquet_values_keep_their_stored_types(tmp_path):
    table = pa.table(
        {
            "order_id": pa.array([9007199254740993, None], type=pa.int64()),
            "customer_id": ["c1", "c2"],
            "paid_at": pa.array([datetime(2025, 12, 12, 10, 0), datetime(2025, 12, 12, 11, 0)]),
            "amount": pa.array([Decimal("12.50"), Decimal("3.00")], type=pa.decimal128(10, 2)),
            "status": ["paid", "completed"],
            "quantity": pa.array([2, None], type=pa.int64()),
        }
    )
    pq.write_table(table, tmp_path / "orders.parquet")
    df = FileOrderSource(tmp_path, pattern="*.parquet").read(DAY_START, DAY_END)

    rows = df.to_dict("records")
    assert rows[0]["order_id"] == 9007199254740993  # not squeezed through float
    assert rows[1]["order_id"] is None and rows[1]["quantity"] is None
    assert rows[0]["amount"] == Decimal("12.50")
    assert [r["_source_ref"] for r in rows] == ["orders.parquet:row 1", "orders.parquet:row 2"]


@pytest.mark.parametrize("fixture", ["taobao_orders_utf8bom.csv", "taobao_orders_gbk.csv"])
def test_taobao_export_with_chinese_headers_is_mapped(tmp_path, fixture):
    copy_fixture(fixture, tmp_path)
    df = FileOrderSource(tmp_path, pattern="taobao_*.csv", mapping="taobao").read(DAY_START, DAY_END)

    assert tuple(df.columns) == OUTPUT_COLUMNS
    rows = {r["order_id"]: r for r in df.to_dict("records")}
    # 3021498712345679 was paid the day before and has no updated_at: filtered out by time
    assert set(rows) == {"3021498712345678", "3021498712345680"}
    first = rows["3021498712345678"]
    assert first["customer_id"] == "tb_小明"
    assert first["amount"] in ("¥1,299.00", "￥1,299.00")  # left raw for validation
    assert first["status"] == "买家已付款，等待卖家发货"
    assert first["paid_at"] == "2025-12-12 10:01:30"  # header had a trailing space
    assert (
        first["product_name"] == "儿童羽绒服 加厚" and first["quantity"] == "1" and first["sku"] == "KC-001"
    )
    assert first["customer_name"] == "张三" and first["phone"] == "13800000000"
    assert first["_source_ref"] == f"{fixture}:2"
    closed = rows["3021498712345680"]
    assert closed["paid_at"] is None and closed["status"] == "交易关闭"
    assert closed["_source_ref"] == f"{fixture}:5"  # the 买家留言 of row 1 spans lines 2-3


def test_taobao_export_with_ds_pattern_returns_all_rows_of_the_file(tmp_path):
    copy_fixture("taobao_orders_gbk.csv", tmp_path, "订单报表_20251212.csv")
    source = FileOrderSource(tmp_path, pattern="订单报表_{ds_nodash}.csv", mapping="taobao")
    df = source.read(DAY_START, DAY_END)
    assert list(df["order_id"]) == ["3021498712345678", "3021498712345679", "3021498712345680"]


def test_explicit_wrong_encoding_is_a_clear_error(tmp_path):
    copy_fixture("taobao_orders_gbk.csv", tmp_path)
    source = FileOrderSource(tmp_path, mapping="taobao", encoding="utf-8")
    with pytest.raises(ValueError, match=r"taobao_orders_gbk.csv: cannot decode with encoding 'utf-8'"):
        source.read(DAY_START, DAY_END)


def test_ds_pattern_picks_the_business_days_file_and_keeps_all_its_rows(tmp_path):
    copy_fixture("orders_canonical.csv", tmp_path, "orders_2025-12-12.csv")
    copy_fixture("orders_canonical.csv", tmp_path, "orders_2025-12-11.csv")
    # start given in UTC: the business date is still the 12th in Shanghai
    start = DAY_START.astimezone(UTC)
    df = FileOrderSource(tmp_path, pattern="orders_{ds}.csv").read(start, start + timedelta(days=1))

    assert len(df) == 7  # no time filter: rows paid on other days are late arrivals of this file
    assert {ref.split(":")[0] for ref in df["_source_ref"]} == {"orders_2025-12-12.csv"}


def test_ds_pattern_without_matching_file_returns_empty_frame_and_logs(tmp_path, caplog):
    copy_fixture("orders_canonical.csv", tmp_path, "orders_2025-12-11.csv")
    with caplog.at_level(logging.INFO, logger="huitouke.intake.files"):
        df = FileOrderSource(tmp_path, pattern="orders_{ds}.csv").read(DAY_START, DAY_END)
    assert df.empty and tuple(df.columns) == OUTPUT_COLUMNS
    assert "orders_2025-12-12.csv" in caplog.text


def test_without_placeholder_rows_are_filtered_by_time_and_unparseable_times_kept(tmp_path):
    copy_fixture("orders_canonical.csv", tmp_path)
    df = FileOrderSource(tmp_path).read(DAY_START, DAY_END)

    assert list(df["order_id"]) == ["A1001", "A1002", "A1002", "A1004", "A1005"]
    # A1003 paid the 11th, A1006 at the exclusive end; A1004 paid the 10th but updated (refunded) today;
    # A1005's "last tuesday" cannot be parsed and is kept for validation to quarantine.


def test_time_filter_uses_paid_at_when_configured(tmp_path):
    copy_fixture("orders_canonical.csv", tmp_path)
    df = FileOrderSource(tmp_path, time_column="paid_at").read(DAY_START, DAY_END)
    assert list(df["order_id"]) == ["A1001", "A1002", "A1002", "A1005"]


def test_time_filter_reads_naive_times_as_shop_local(tmp_path):
    copy_fixture("orders_canonical.csv", tmp_path)
    # the same instant as DAY_START..DAY_END expressed in UTC must select the same rows
    df = FileOrderSource(tmp_path).read(DAY_START.astimezone(UTC), DAY_END.astimezone(UTC))
    assert list(df["order_id"]) == ["A1001", "A1002", "A1002", "A1004", "A1005"]
    la = FileOrderSource(tmp_path, timezone="America/Los_Angeles")
    start = datetime(2025, 12, 12, tzinfo=ZoneInfo("America/Los_Angeles"))
    # naive times are LA-local now; A1004's updated_at carries +08:00 and is the 11th in LA
    assert list(la.read(start, start + timedelta(days=1))["order_id"]) == ["A1001", "A1002", "A1002", "A1005"]


def test_files_are_read_in_sorted_name_order(tmp_path):
    for name in ("b.csv", "a.csv", "c.csv"):
        (tmp_path / name).write_text(
            f"order_id,customer_id,paid_at,amount,status\n{name[0]},c,2025-12-12 10:00,1,paid\n",
            encoding="utf-8",
        )
    (tmp_path / "notes.md").write_text("not an export", encoding="utf-8")
    df = FileOrderSource(tmp_path, pattern="*").read(DAY_START, DAY_END)
    assert list(df["order_id"]) == ["a", "b", "c"]
    assert list(df["_source_ref"]) == ["a.csv:2", "b.csv:2", "c.csv:2"]


def test_tab_separated_txt_export_is_read(tmp_path):
    (tmp_path / "orders.txt").write_text(
        "order_id\tcustomer_id\tpaid_at\tamount\tstatus\nT1\tc\t2025-12-12 10:00\t1,5\tpaid\n",
        encoding="utf-8",
    )
    df = FileOrderSource(tmp_path, pattern="*.txt").read(DAY_START, DAY_END)
    assert df.iloc[0]["amount"] == "1,5"


def test_missing_required_column_error_lists_missing_fields_and_headers(tmp_path):
    (tmp_path / "orders.csv").write_text(
        "订单编号,买家会员名,订单付款时间\n1,u,2025-12-12 10:00\n", encoding="utf-8-sig"
    )
    with pytest.raises(ValueError) as err:
        FileOrderSource(tmp_path, mapping="taobao").read(DAY_START, DAY_END)
    message = str(err.value)
    assert "orders.csv" in message
    assert "amount" in message and "status" in message and "order_id," not in message
    assert "Headers present: 订单编号, 买家会员名, 订单付款时间" in message
    assert "买家实际支付金额" in message  # which header would have satisfied it


def test_missing_folder_error_names_folder_and_config_field(tmp_path):
    missing = tmp_path / "no-such-folder"
    with pytest.raises(FileNotFoundError) as err:
        FileOrderSource(missing).read(DAY_START, DAY_END)
    assert str(missing) in str(err.value) and "intake.files.folder" in str(err.value)


def test_empty_folder_returns_empty_frame_with_canonical_columns_and_logs_info(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="huitouke.intake.files"):
        df = FileOrderSource(tmp_path).read(DAY_START, DAY_END)
    assert df.empty and tuple(df.columns) == OUTPUT_COLUMNS
    assert any(r.levelno == logging.INFO and "No files match" in r.getMessage() for r in caplog.records)


def test_empty_file_is_skipped(tmp_path):
    (tmp_path / "empty.csv").write_bytes(b"")
    copy_fixture("orders_canonical.csv", tmp_path)
    df = FileOrderSource(tmp_path, pattern="*.csv").read(DAY_START, DAY_END)
    assert len(df) == 5


def test_invalid_config_fails_at_construction(tmp_path):
    with pytest.raises(ValueError, match="intake.files.mapping"):
        FileOrderSource(tmp_path, mapping="nope")
    with pytest.raises(ValueError, match="intake.files.timezone"):
        FileOrderSource(tmp_path, timezone="Mars/Olympus")
    with pytest.raises(ValueError, match="intake.files.time_column"):
        FileOrderSource(tmp_path, time_column="modified")


def test_logs_do_not_contain_personal_data(tmp_path, caplog):
    copy_fixture("taobao_orders_utf8bom.csv", tmp_path)
    with caplog.at_level(logging.DEBUG):
        FileOrderSource(tmp_path, mapping="taobao").read(DAY_START, DAY_END)
    assert "13800000000" not in caplog.text and "张三" not in caplog.text and "example.com" not in caplog.text
