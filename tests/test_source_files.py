"""Folder-of-exports source and column mappings: raw values out, canonical names, day selection."""

from __future__ import annotations

import logging
import shutil
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from huitouke.errors import UserInputError
from huitouke.intake.files import FileOrderSource, MissingExport, read_export
from huitouke.intake.freshness import StaleDay
from huitouke.intake.mappings import (
    CANONICAL_COLUMNS,
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


def test_canonical_mapping_is_identity_over_all_columns_plus_refund_synonyms():
    canonical = MAPPINGS["canonical"]
    assert {c: c for c in ALL_COLUMNS}.items() <= canonical.items()
    assert {k for k, v in canonical.items() if k != v} == {"refunded_amount", "refund", "amount_refunded"}
    assert canonical["refund_amount"] == "refund_amount"


def test_taobao_mapping_targets_only_canonical_columns_and_covers_required():
    assert set(MAPPINGS["taobao"].values()) <= set(CANONICAL_COLUMNS)
    assert MAPPINGS["taobao"]["退款金额"] == "refund_amount"
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
    assert pd.isna(first["updated_at"]) and pd.isna(first["acquisition_source"])
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
            "status": pa.array(["paid", "completed"]).dictionary_encode(),
            "quantity": pa.array([2, None], type=pa.int64()),
        }
    )
    pq.write_table(table, tmp_path / "orders.parquet")
    df = FileOrderSource(tmp_path, pattern="*.parquet").read(DAY_START, DAY_END)

    # text stays Arrow-backed (no Python string per cell), dictionary-encoded text too
    assert isinstance(df["customer_id"].dtype, pd.StringDtype) and list(df["status"]) == ["paid", "completed"]
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
    assert pd.isna(closed["paid_at"]) and closed["status"] == "交易关闭"
    assert closed["_source_ref"] == f"{fixture}:5"  # the 买家留言 of row 1 spans lines 2-3


def test_taobao_export_with_ds_pattern_returns_all_rows_of_the_file(tmp_path):
    copy_fixture("taobao_orders_gbk.csv", tmp_path, "订单报表_20251212.csv")
    source = FileOrderSource(tmp_path, pattern="订单报表_{ds_nodash}.csv", mapping="taobao")
    df = source.read(DAY_START, DAY_END)
    assert list(df["order_id"]) == ["3021498712345678", "3021498712345679", "3021498712345680"]


def test_explicit_wrong_encoding_is_a_clear_error(tmp_path):
    copy_fixture("taobao_orders_gbk.csv", tmp_path)
    source = FileOrderSource(tmp_path, mapping="taobao", encoding="utf-8")
    with pytest.raises(
        UserInputError, match=r"taobao_orders_gbk.csv:1: not valid utf-8 \(byte 0x[0-9a-f]{2}\)"
    ):
        source.read(DAY_START, DAY_END)


def test_ds_pattern_picks_the_business_days_file_and_keeps_all_its_rows(tmp_path):
    copy_fixture("orders_canonical.csv", tmp_path, "orders_2025-12-12.csv")
    copy_fixture("orders_canonical.csv", tmp_path, "orders_2025-12-11.csv")
    # start given in UTC: the business date is still the 12th in Shanghai
    start = DAY_START.astimezone(UTC)
    df = FileOrderSource(tmp_path, pattern="orders_{ds}.csv").read(start, start + timedelta(days=1))

    assert len(df) == 7  # no time filter: rows paid on other days are late arrivals of this file
    assert {ref.split(":")[0] for ref in df["_source_ref"]} == {"orders_2025-12-12.csv"}


def test_ds_pattern_without_matching_file_fails_naming_the_expected_file_and_day(tmp_path):
    copy_fixture("orders_canonical.csv", tmp_path, "orders_2025-12-11.csv")
    with pytest.raises(MissingExport) as err:
        FileOrderSource(tmp_path, pattern="orders_{ds}.csv").read(DAY_START, DAY_END)
    message = str(err.value)
    assert "business day 2025-12-12" in message and str(tmp_path / "orders_2025-12-12.csv") in message
    assert "when_missing: warn" in message
    assert isinstance(err.value, StaleDay) and isinstance(err.value, UserInputError)


def test_ds_pattern_without_matching_file_warns_when_configured(tmp_path, caplog):
    copy_fixture("orders_canonical.csv", tmp_path, "orders_2025-12-11.csv")
    with caplog.at_level(logging.INFO, logger="huitouke.intake.files"):
        df = FileOrderSource(tmp_path, pattern="orders_{ds}.csv", when_missing="warn").read(
            DAY_START, DAY_END
        )
    assert df.empty and tuple(df.columns) == OUTPUT_COLUMNS
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("orders_2025-12-12.csv" in w and "2025-12-12" in w for w in warnings)


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


def test_empty_folder_fails_or_warns_as_configured(tmp_path, caplog):
    with pytest.raises(MissingExport, match=r"no export matching '\*.csv' is in the folder"):
        FileOrderSource(tmp_path).read(DAY_START, DAY_END)
    with caplog.at_level(logging.INFO, logger="huitouke.intake.files"):
        df = FileOrderSource(tmp_path, when_missing="warn").read(DAY_START, DAY_END)
    assert df.empty and tuple(df.columns) == OUTPUT_COLUMNS
    assert any(
        r.levelno == logging.WARNING and "when_missing: warn" in r.getMessage() for r in caplog.records
    )


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


# -- any bytes: read, or one line naming the file ------------------------------------------------

HEADER = "order_id,customer_id,paid_at,amount,status,product_name\n"


def _read(folder: Path, name: str = "orders.csv", **options) -> pd.DataFrame:
    return read_export(folder / name, **options)


def test_a_cell_longer_than_the_csv_modules_limit_is_read_and_lines_stay_right(tmp_path):
    long = "x" * 300_000  # csv's field_size_limit is 131,072; pyarrow's block 16 MB
    body = f'A1,c1,2025-12-12 10:00,1,paid,"{long}"\nA2,c2,2025-12-12 10:00,"multi\nline",paid,p\nA3,c3,t,1,paid,p\n'
    (tmp_path / "orders.csv").write_text(HEADER + body, encoding="utf-8")
    df = _read(tmp_path)
    assert df["product_name"].iloc[0] == long
    assert list(df["_source_ref"]) == ["orders.csv:2", "orders.csv:3", "orders.csv:5"]


def test_a_cell_longer_than_a_parser_block_is_read(tmp_path):
    huge = "y" * (17 << 20)
    (tmp_path / "orders.csv").write_text(
        HEADER + f"A1,c1,t,1,paid,{huge}\nA2,c2,t,1,paid,p\n", encoding="utf-8"
    )
    df = _read(tmp_path)
    assert len(df["product_name"].iloc[0]) == len(huge) and list(df["order_id"]) == ["A1", "A2"]


def test_nul_bytes_and_words_like_na_stay_in_the_cells(tmp_path):
    (tmp_path / "orders.csv").write_bytes((HEADER + "A\x001,NA,null,nan,paid,N/A\n").encode())
    row = _read(tmp_path).iloc[0]
    assert row["order_id"] == "A\x001"
    assert (row["customer_id"], row["paid_at"], row["amount"], row["product_name"]) == (
        "NA",
        "null",
        "nan",
        "N/A",
    )


def test_ragged_rows_are_padded_or_cut_with_a_warning_naming_their_lines(tmp_path, caplog):
    rows = [f"B{i},c,2025-12-12 10:00,1,paid,p" for i in range(3000)]
    rows[5] = "B5,c,2025-12-12 10:00"  # too few cells
    rows[2000] = "B2000,c,2025-12-12 10:00,1,paid,p,extra,cells"  # too many
    (tmp_path / "orders.csv").write_text(HEADER + "\n".join(rows) + "\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="huitouke.intake.csv_reader"):
        df = _read(tmp_path)
    assert list(df["order_id"]) == [f"B{i}" for i in range(3000)]
    assert list(df["_source_ref"][[4, 5, 6, 2000]]) == [
        "orders.csv:6",
        "orders.csv:7",
        "orders.csv:8",
        "orders.csv:2002",
    ]
    assert pd.isna(df["amount"][5]) and df["product_name"][2000] == "p"
    assert "2 row(s) do not have 6 cells like the header (lines 7, 2002)" in caplog.text


def test_blank_lines_and_rows_of_empty_cells_are_skipped(tmp_path):
    text = "\r\n" + HEADER.replace("\n", "\r\n") + "A1,c,t,1,paid,p\r\n\r\n,,, ,,\r\nA2,c,t,1,paid,p\r\n"
    (tmp_path / "orders.csv").write_bytes(text.encode())
    df = _read(tmp_path)
    assert list(df["order_id"]) == ["A1", "A2"] and list(df["_source_ref"]) == [
        "orders.csv:3",
        "orders.csv:6",
    ]
    assert df["product_name"].iloc[0] == "p"  # no \r left


def test_old_mac_line_endings_are_read(tmp_path):
    (tmp_path / "orders.csv").write_bytes(
        (HEADER + "A1,c,t,1,paid,p\nA2,c,t,1,paid,p\n").replace("\n", "\r").encode()
    )
    df = _read(tmp_path)
    assert list(df["order_id"]) == ["A1", "A2"] and list(df["_source_ref"]) == [
        "orders.csv:2",
        "orders.csv:3",
    ]


def test_a_stray_quote_is_read_as_the_csv_module_reads_it(tmp_path):
    body = 'A1,c,t,1,paid,27" monitor\nA2,c,t,1,paid,"x\ny"\nA3,c,t,1,paid,5" frame\nA4,c,t,1,paid,p\n'
    (tmp_path / "orders.csv").write_text(HEADER + body, encoding="utf-8")
    df = _read(tmp_path)
    assert list(df["product_name"]) == ['27" monitor', "x\ny", '5" frame', "p"]
    assert list(df["_source_ref"]) == ["orders.csv:2", "orders.csv:3", "orders.csv:5", "orders.csv:6"]


def test_bytes_in_no_known_encoding_name_the_file_and_line(tmp_path):
    (tmp_path / "orders.csv").write_bytes(HEADER.encode() + b"A1,c,t,1,paid,ok\nA2,c,t,1,paid,\x80\xff\xfe\n")
    with pytest.raises(
        UserInputError, match=r"^orders.csv:3: not valid utf-8 or gb18030 \(byte 0x80\); set analyze.encoding"
    ):
        _read(tmp_path)


def test_an_unknown_encoding_is_named_before_anything_is_read(tmp_path):
    with pytest.raises(UserInputError, match=r"intake.files.encoding: unknown encoding 'nosuch'"):
        FileOrderSource(tmp_path, encoding="nosuch")
    (tmp_path / "orders.csv").write_text(HEADER, encoding="utf-8")
    with pytest.raises(UserInputError, match=r"analyze.encoding: unknown encoding 'nosuch'"):
        _read(tmp_path, encoding="nosuch")


def test_an_explicit_encoding_is_used(tmp_path):
    (tmp_path / "orders.csv").write_text(HEADER + "A1,买家,t,1,paid,羽绒服\n", encoding="utf-16")
    row = _read(tmp_path, encoding="utf-16").iloc[0]
    assert (row["order_id"], row["customer_id"], row["product_name"]) == ("A1", "买家", "羽绒服")


def test_a_folder_given_as_a_file_is_a_user_error(tmp_path):
    (tmp_path / "orders.csv").mkdir()
    with pytest.raises(UserInputError, match="is a folder"):
        _read(tmp_path)


def test_file_names_are_taken_literally(tmp_path):
    for name, order in (
        ("orders[1].csv", "L1"),
        ("orders1.csv", "X1"),
        ("star*.csv", "L2"),
        ("o_{ds}.csv", "L3"),
    ):
        (tmp_path / name).write_text(HEADER + f"{order},c,t,1,paid,p\n", encoding="utf-8")
    (tmp_path / "star-other.csv").write_text(HEADER + "X2,c,t,1,paid,p\n", encoding="utf-8")
    for name, order in (("orders[1].csv", "L1"), ("star*.csv", "L2"), ("o_{ds}.csv", "L3")):
        df = _read(tmp_path, name)
        assert list(df["order_id"]) == [order] and df["_source_ref"].iloc[0] == f"{name}:2"


def test_duplicate_headers_take_the_first_and_unmapped_columns_are_dropped(tmp_path):
    (tmp_path / "orders.csv").write_text(
        "order_id,customer_id,paid_at,amount,status,amount,note\nA1,c,t,1,paid,2,n\n", encoding="utf-8"
    )
    df = _read(tmp_path)
    assert df["amount"].iloc[0] == "1" and "note" not in df.columns


def test_the_taobao_refund_amount_is_mapped(tmp_path):
    (tmp_path / "orders.csv").write_text(
        "订单编号,买家会员名,订单付款时间,买家实际支付金额,订单状态,退款金额\n"
        '="3021",tb_a,2025-12-12 10:00:00,100.00,交易成功,30.00\n',
        encoding="utf-8-sig",
    )
    row = _read(tmp_path, mapping="taobao").iloc[0]
    assert (row["order_id"], row["amount"], row["refund_amount"]) == ("3021", "100.00", "30.00")
    (tmp_path / "en.csv").write_text(
        HEADER.strip() + ",refunded_amount\nA1,c,t,1,paid,p,0.5\n", encoding="utf-8"
    )
    assert _read(tmp_path, "en.csv")["refund_amount"].iloc[0] == "0.5"


@pytest.mark.parametrize(
    "raw", ['="3021498712345678"', "\t3021", "'3021", "=3021", " A-1 ", "abc", '=""', "=", "'", '= "12" ']
)
def test_clean_order_ids_is_clean_order_id_vectorised(raw):
    from huitouke.intake.mappings import clean_order_ids

    assert clean_order_ids(pa.array([raw, None])).to_pylist() == [clean_order_id(raw), None]


def test_the_time_filter_reads_missing_text_cells_as_missing(tmp_path):
    (tmp_path / "orders.csv").write_text(
        "order_id,customer_id,paid_at,amount,status,updated_at\nA1,c,2025-12-12 10:00,1,paid,\n"
        "A2,c,2025-12-11 10:00,1,refunded,2025-12-12 09:00\n",
        encoding="utf-8",
    )
    assert list(FileOrderSource(tmp_path).read(DAY_START, DAY_END)["order_id"]) == ["A1", "A2"]


def test_the_time_filter_reads_the_export_layouts(tmp_path):
    times = [
        "2025/12/12 10:00",
        "2025年12月12日 10:00:00",
        "20251212",
        "2025.12.12 23:59:59",
        "2025-12-12T01:00Z",
    ]
    rows = "".join(f"T{i},c,{t},1,paid\n" for i, t in enumerate(times))
    outside = "O1,c,2025/12/13 00:00,1,paid\nO2,c,2025-12-12T23:00+00:00,1,paid\nO3,c,0001-01-01,1,paid\n"
    (tmp_path / "orders.csv").write_text(
        "order_id,customer_id,paid_at,amount,status\n" + rows + outside, encoding="utf-8"
    )
    kept = list(FileOrderSource(tmp_path).read(DAY_START, DAY_END)["order_id"])
    # 0001-01-01 cannot be a pandas time: kept for validation to judge, like any unreadable time
    assert kept == ["T0", "T1", "T2", "T3", "T4", "O3"]


def test_the_files_settings_name_a_wrong_encoding_or_when_missing_and_reach_the_source(tmp_path):
    from huitouke.config import ConfigError, parse_settings
    from huitouke.intake.sources import build_source

    def settings(**files):
        return parse_settings(
            {"intake": {"source": "files", "files": {"folder": str(tmp_path), **files}}}, "h.yaml"
        )

    with pytest.raises(ConfigError, match=r"h.yaml: intake.files.encoding: unknown encoding 'nosuch'"):
        settings(encoding="nosuch")
    with pytest.raises(ConfigError, match=r"h.yaml: intake.files.when_missing: "):
        settings(when_missing="maybe")
    assert build_source(settings()).when_missing == "fail"
    assert build_source(settings(when_missing="warn", encoding="GBK")).when_missing == "warn"


def test_an_excel_workbook_is_named_as_such(tmp_path):
    (tmp_path / "orders.csv").write_bytes(b"PK\x03\x04\x14\x00\x06\x00" + bytes(range(256)))
    with pytest.raises(UserInputError, match=r"^orders.csv: an Excel workbook, not a CSV file"):
        _read(tmp_path)
