"""Opt-out lists and call outcomes read back, the call list written (docs/delivery.md, "Opt-outs"
and "Call lists"): encodings, header variants, and errors that name file, line and column but never
the number or address."""

from __future__ import annotations

import csv
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from huitouke.deliver.imports import (
    CALL_LIST_COLUMNS,
    ImportFileError,
    RowError,
    read_call_outcomes,
    read_optouts,
    write_call_list,
)


def _write(tmp_path: Path, text: str, encoding: str = "utf-8", name: str = "optouts.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def _assert_no_personal_data(errors: list[RowError], *values: str) -> None:
    for error in errors:
        for value in values:
            assert value not in str(error)


def test_an_sms_platform_export_with_chinese_headers(tmp_path):
    path = _write(
        tmp_path,
        "手机号,回复内容,退订时间\n"
        "13812345678,T,2025-12-11 10:02:00\n"
        "+86 139-1234-5678,退订,2025/12/11 10:05\n"
        "\n"
        "12345,TD,2025-12-11 10:06:00\n"
        ",T,2025-12-11 10:07:00\n"
        "15012345678,T,yesterday\n"
        "00447700900123,STOP,\n",
    )
    frame, errors = read_optouts(path)

    assert list(frame.columns) == ["phone", "email", "channel", "opted_out_at", "source_line"]
    assert frame["phone"].tolist() == ["+8613812345678", "+8613912345678", "+8615012345678", "+447700900123"]
    assert frame["channel"].tolist() == ["sms"] * 4
    assert frame["source_line"].tolist() == [2, 3, 7, 8]
    assert frame["opted_out_at"].iloc[0] == pd.Timestamp("2025-12-11 02:02:00", tz="UTC")  # Shanghai time
    assert pd.isna(frame["opted_out_at"].iloc[2]) and pd.isna(frame["opted_out_at"].iloc[3])
    assert [(e.line, e.field) for e in errors] == [(5, "手机号"), (6, "手机号"), (7, "退订时间")]
    assert all(e.file == str(path) for e in errors)
    assert errors[0].reason == "not a mobile number or +country number (*****)"
    assert "imported without it" in errors[2].reason
    assert str(errors[1]) == f"{path}:6: 手机号: empty: no phone number or e-mail address"


def test_gbk_files_and_short_headers_are_read(tmp_path):
    path = _write(tmp_path, "号码,时间\n13812345678,2025年12月11日 10:02\n", encoding="gbk")
    frame, errors = read_optouts(path)

    assert errors == []
    assert frame["phone"].tolist() == ["+8613812345678"]
    assert frame["opted_out_at"].tolist() == [pd.Timestamp("2025-12-11 02:02:00", tz="UTC")]


def test_utf8_bom_english_headers_emails_and_channels(tmp_path):
    path = _write(
        tmp_path,
        "Phone,E-mail,Channel,Date\n"
        "13812345678,Zhang.San@Example.com,,2025-12-11T10:02:00+08:00\n"
        ",li@example.com,邮件,\n"
        "13912345678,,all,\n"
        "13712345678,,carrier pigeon,\n"
        ",not-an-address,,\n",
        encoding="utf-8-sig",
    )
    frame, errors = read_optouts(path)

    assert frame[["phone", "email", "channel"]].values.tolist() == [
        ["+8613812345678", None, "sms"],
        [None, "zhang.san@example.com", "email"],
        [None, "li@example.com", "email"],
        ["+8613912345678", None, "all"],
        ["+8613712345678", None, "all"],
    ]
    assert [(e.line, e.field) for e in errors] == [(5, "Channel"), (6, "E-mail")]
    assert errors[1].reason == "not an e-mail address (***)"


def test_a_bare_list_of_numbers_without_header(tmp_path):
    path = _write(tmp_path, "13812345678\n139 1234 5678\nwang@example.com\n1234\n")
    frame, errors = read_optouts(path)

    assert frame["phone"].tolist() == ["+8613812345678", "+8613912345678", None]
    assert frame["email"].tolist() == [None, None, "wang@example.com"]
    assert frame["source_line"].tolist() == [1, 2, 3]
    assert [(e.line, e.field) for e in errors] == [(4, "column 1")]


def test_tab_separated_exports_are_read(tmp_path):
    frame, errors = read_optouts(_write(tmp_path, "mobile\ttime\n13812345678\t2025-12-11\n"))
    assert (frame["phone"].tolist(), errors) == (["+8613812345678"], [])


def test_errors_never_show_the_number_or_address(tmp_path):
    path = _write(tmp_path, "手机号,邮箱,时间\n12812345678,zhang.san@example,13912345678\n")
    _, errors = read_optouts(path)

    assert len(errors) == 3
    _assert_no_personal_data(errors, "12812345678", "zhang.san", "13912345678")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("name,amount\n张三,12\n", ":1: no phone or e-mail column"),
        ("hello\nworld\n", ":1: no phone or e-mail column"),
    ],
)
def test_a_file_without_numbers_is_refused_whole(tmp_path, text, message):
    with pytest.raises(ImportFileError, match=message):
        read_optouts(_write(tmp_path, text))


def test_missing_or_undecodable_files_are_named(tmp_path):
    with pytest.raises(ImportFileError, match="no such file"):
        read_optouts(tmp_path / "nope.csv")
    path = _write(tmp_path, "x")
    path.write_bytes(b"\xff\xfe\x00\x81\xff")
    with pytest.raises(ImportFileError, match="neither UTF-8 nor GBK"):
        read_optouts(path)


def _call_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "message_id": [101, 102, 103],
            "name": ["张三", '=HYPERLINK("x")', "Li Si"],
            "phone": ["+8613812345678", "+8613912345678", "+447700900123"],
            "campaign": ["vip_care", "vip_care", "winback"],
            "body": ["您好，我是小店的客服……", "您好", "Hello"],
            "coupon_code": ["VIP-20", None, "-5OFF"],
            "due_date": [date(2025, 12, 20), pd.Timestamp("2025-12-21 23:59"), None],
            "customer_id": ["c1", "c2", "c3"],  # not in the file
        }
    )


def test_the_call_list_is_a_csv_excel_opens(tmp_path):
    path = tmp_path / "calls" / "2025-12-11.csv"
    assert write_call_list(_call_frame(), path) == 3

    raw = path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(raw.decode("utf-8-sig").splitlines()))
    assert rows[0] == [header for _, header in CALL_LIST_COLUMNS]
    assert rows[1] == [
        "101",
        "张三",
        "138 1234 5678",
        "vip_care",
        "您好，我是小店的客服……",
        "VIP-20",
        "2025-12-20",
        "",
        "",
        "",
    ]
    assert rows[2][1] == '\'=HYPERLINK("x")'  # a name is never run as a formula
    assert rows[2][5:7] == ["", "2025-12-21"]
    assert rows[3][2] == "+447700900123" and rows[3][5] == "'-5OFF"
    assert [p.name for p in path.parent.iterdir()] == ["2025-12-11.csv"]  # no temporary left
    assert path.stat().st_mode & 0o077 == 0


def test_a_call_list_frame_without_its_columns_is_refused(tmp_path):
    with pytest.raises(ValueError, match="phone, campaign"):
        write_call_list(pd.DataFrame({"message_id": [1], "name": ["x"], "body": ["y"]}), tmp_path / "c.csv")


def test_the_filled_in_call_list_is_what_calls_import_reads(tmp_path):
    path = tmp_path / "calls.csv"
    write_call_list(_call_frame(), path)
    rows = list(csv.reader(path.read_text(encoding="utf-8-sig").splitlines()))
    rows[1][7:] = ["已接通", "想要新款，下周再来", "2025-12-11 15:30"]
    rows[2][7:] = ["未接通", "", ""]
    with path.open("w", encoding="utf-8-sig", newline="") as handle:  # row 103: not called yet
        csv.writer(handle).writerows(rows)

    frame, errors = read_call_outcomes(path)

    assert errors == []
    assert frame[["message_id", "outcome", "feedback", "source_line"]].values.tolist() == [
        [101, "reached", "想要新款，下周再来", 2],
        [102, "not_reached", None, 3],
    ]
    assert frame["called_at"].iloc[0] == pd.Timestamp("2025-12-11 07:30", tz="UTC")
    assert pd.isna(frame["called_at"].iloc[1])


def test_call_outcomes_in_english_and_chinese_and_their_errors(tmp_path):
    path = _write(
        tmp_path,
        "call_id,result,notes,time\n"
        "1,Reached,ok,\n"
        "2,not reached,,\n"
        "3,空号,,\n"
        "4,拒绝,不需要,\n"
        "5,勿扰,别再打了,\n"
        "6,maybe 13812345678,,\n"
        "2,reached,,\n"
        "x,reached,,\n"
        ",reached,,\n"
        "7.0,NO-ANSWER,,\n"
        "8,busy,,tomorrow\n"
        "9,,left blank,\n",
        name="outcomes.csv",
    )
    frame, errors = read_call_outcomes(path)

    assert frame[["message_id", "outcome"]].values.tolist() == [
        [1, "reached"],
        [2, "not_reached"],
        [3, "wrong_number"],
        [4, "refused"],
        [5, "opted_out"],
        [7, "not_reached"],
        [8, "not_reached"],
    ]
    assert [(e.line, e.field) for e in errors] == [
        (7, "result"),
        (8, "call_id"),
        (9, "call_id"),
        (10, "call_id"),
        (12, "time"),
    ]
    assert errors[1].reason == "call 2 already given on line 3"
    assert errors[3].reason.startswith("empty:")
    _assert_no_personal_data(errors, "13812345678")


def test_a_call_file_without_its_columns_is_refused(tmp_path):
    with pytest.raises(
        ImportFileError, match=r"outcomes.csv:1: no outcome \(outcome/result/结果/通话结果\) column"
    ):
        read_call_outcomes(_write(tmp_path, "call_id,备注\n1,x\n", name="outcomes.csv"))
