"""Validation rules: every kind of bad input is quarantined with its reason; good rows are parsed."""

from __future__ import annotations

import json
from datetime import date
from zoneinfo import ZoneInfo

import pandas as pd
import pytest

from huitouke.intake.validate import parse_money_cents, parse_times_utc, validate
from huitouke.records import REQUIRED_COLUMNS

TZ = ZoneInfo("Asia/Shanghai")
DAY = date(2025, 12, 12)


def row(**overrides):
    base = {
        "order_id": "T1",
        "customer_id": "c1",
        "paid_at": "2025-12-12 10:00:00",
        "amount": "103.50",
        "status": "paid",
        "sku": "S1",
        "product_name": "奶粉 900g",
        "category": "food",
        "quantity": "1",
        "line_amount": "103.50",
    }
    base.update(overrides)
    return base


def run(*rows):
    return validate(pd.DataFrame(list(rows)), TZ, DAY)


def reasons(batch):
    return list(batch.quarantine["reason"])


def test_a_good_row_becomes_an_order_with_cents_utc_time_and_a_line():
    batch = run(row())
    order = batch.orders.iloc[0]
    assert order["amount_cents"] == 10350
    assert order["paid_at"] == pd.Timestamp("2025-12-12 02:00:00")  # 10:00 Shanghai
    assert order["business_date"] == DAY
    assert order["status"] == "paid"
    assert list(batch.lines["category"]) == ["food"]
    assert batch.quarantine.empty


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"order_id": ""}, "missing_order_id"),
        ({"customer_id": None}, "missing_customer"),
        ({"customer_id": "   "}, "missing_customer"),
        ({"amount": "abc"}, "invalid_amount"),
        ({"amount": "12,3x"}, "invalid_amount"),
        ({"amount": "-5"}, "negative_amount"),
        ({"paid_at": "2025-13-45 99:00"}, "unparseable_time"),
        ({"paid_at": "yesterday"}, "unparseable_time"),
        ({"updated_at": "not a time"}, "unparseable_time"),
        ({"status": "weird_status"}, "unknown_status"),
        ({"paid_at": None}, "missing_paid_at"),
        ({"line_amount": "x"}, "invalid_line"),
        ({"quantity": "-1"}, "invalid_line"),
        ({"quantity": "1.5"}, "invalid_line"),
    ],
)
def test_bad_row_is_quarantined_with_its_reason_and_raw_row(overrides, reason):
    batch = run(row(), row(**{"order_id": "T2", **overrides}))
    assert reasons(batch) == [reason]
    assert list(batch.orders["order_id"]) == ["T1"]  # the good row still loads
    raw = json.loads(batch.quarantine.iloc[0]["raw"])
    for key, value in overrides.items():
        assert raw[key] == (value if value is None else str(value))
    assert batch.quarantine.iloc[0]["detail"]


def test_an_order_with_one_bad_line_is_quarantined_whole():
    batch = run(row(sku="A"), row(sku="B", line_amount="oops"))
    assert sorted(reasons(batch)) == ["bad_sibling_row", "invalid_line"]
    assert batch.orders.empty and batch.lines.empty


def test_rows_of_one_order_that_disagree_are_quarantined():
    batch = run(row(sku="A"), row(sku="B", customer_id="c2"))
    assert reasons(batch) == ["inconsistent_order_rows", "inconsistent_order_rows"]
    assert batch.orders.empty


def test_two_versions_of_one_order_keep_the_most_advanced_status():
    batch = run(row(status="paid"), row(status="refunded", updated_at="2025-12-12 18:00:00"))
    assert list(batch.orders["status"]) == ["refunded"]
    assert len(batch.lines) == 1
    assert batch.quarantine.empty


def test_taobao_words_amounts_and_times_are_understood():
    batch = run(
        row(status="交易成功", amount="¥1,299.00", line_amount="￥1,299.00", paid_at="2025/12/12 10:03")
    )
    order = batch.orders.iloc[0]
    assert (order["status"], order["amount_cents"]) == ("completed", 129900)
    assert order["paid_at"] == pd.Timestamp("2025-12-12 02:03:00")


def test_a_cancelled_unpaid_order_needs_no_payment_time():
    batch = run(row(status="交易关闭", paid_at=None))
    assert batch.quarantine.empty
    assert batch.orders.iloc[0]["status"] == "cancelled"


def test_an_unreadable_birthday_is_kept_in_quarantine_while_the_order_loads():
    batch = run(row(birthday="1990-13-45"))
    assert list(batch.orders["order_id"]) == ["T1"]
    assert reasons(batch) == ["invalid_birthday"]
    assert batch.customers.iloc[0]["birthday"] is None


def test_customers_take_the_latest_contact_details():
    batch = run(
        row(order_id="A", paid_at="2025-12-12 09:00:00", phone="13800000001"),
        row(order_id="B", paid_at="2025-12-12 11:00:00", phone="13800000002"),
    )
    assert list(batch.customers["phone"]) == ["13800000002"]


def test_content_hash_ignores_row_order_but_not_content():
    a = run(row(sku="A"), row(sku="B", line_amount="0"))
    b = run(row(sku="B", line_amount="0"), row(sku="A"))
    c = run(row(sku="A"), row(sku="B", line_amount="1"))
    assert a.orders["content_hash"][0] == b.orders["content_hash"][0] != c.orders["content_hash"][0]


def test_money_and_time_parsers():
    cents = parse_money_cents(pd.Series(["88 元", "1,299.5", None, "inf", 3]))
    assert list(cents[:2]) == [8800, 129950] and cents[2:4].isna().all() and cents[4] == 300
    times = parse_times_utc(pd.Series(["2025年12月12日 10:01:30", "2025-12-12T10:00:00+08:00", "x"]), TZ)
    assert list(times[:2]) == [pd.Timestamp("2025-12-12 02:01:30"), pd.Timestamp("2025-12-12 02:00:00")]
    assert pd.isna(times[2])


def test_empty_input_gives_empty_frames():
    batch = validate(pd.DataFrame(columns=list(REQUIRED_COLUMNS)), TZ, DAY)
    assert batch.rows_read == 0 and batch.orders.empty and batch.quarantine.empty


def test_a_line_without_amount_or_category_loads_as_an_unknown_category_line():
    batch = run(row(line_amount=None, category=None, sku="KC-001"))
    assert batch.quarantine.empty
    line = batch.lines.iloc[0]
    assert line["category"] == "unknown" and line["amount_cents"] is pd.NA
