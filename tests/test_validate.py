"""Validation rules: every kind of bad input is quarantined with its reason; good rows are parsed."""

from __future__ import annotations

import json
from datetime import date
from zoneinfo import ZoneInfo

import pandas as pd
import pytest

from huitouke.config import PlausibilitySettings
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


# ----------------------------------------------------------------- plausibility (issue 14)


@pytest.mark.parametrize(
    ("overrides", "reason", "field"),
    [
        ({"amount": "1e17"}, "implausible_amount", "amount"),
        ({"amount": "1e308"}, "implausible_amount", "amount"),
        ({"amount": "1000000.01"}, "implausible_amount", "amount"),
        ({"amount": "inf"}, "invalid_amount", "amount"),
        ({"amount": "-0.001"}, "negative_amount", "amount"),
        ({"amount": "10.005"}, "invalid_amount", "amount"),
        ({"line_amount": "1000000.01"}, "implausible_amount", "line_amount"),
        ({"line_amount": "-0.001"}, "invalid_line", "line_amount"),
        ({"quantity": "1e12"}, "invalid_line", "quantity"),
        ({"refund_amount": "-1"}, "invalid_refund", "refund_amount"),
        ({"refund_amount": "103.51"}, "invalid_refund", "refund_amount"),
        ({"refund_amount": "many"}, "invalid_refund", "refund_amount"),
    ],
)
def test_implausible_amounts_are_quarantined_naming_the_field(overrides, reason, field):
    batch = run(row(), row(order_id="T2", **overrides))
    assert reasons(batch) == [reason]
    assert list(batch.orders["order_id"]) == ["T1"]
    bad = batch.quarantine.iloc[0]
    assert bad["detail"].startswith(field) and bad["source_ref"] == "row 2"


def test_amounts_with_trailing_zeros_and_the_ceiling_itself_load():
    batch = run(row(amount="1000000.000", line_amount="1,000,000.00"))
    assert batch.quarantine.empty and batch.orders.iloc[0]["amount_cents"] == 100_000_000


def test_numbers_beyond_int64_in_a_numeric_column_never_overflow():
    frame = pd.DataFrame([row(), row(order_id="T2"), row(order_id="T3")])
    frame["amount"] = [103.5, 1e17, float(2**63)]
    frame["line_amount"] = [103.5, 1.0, 1.0]
    batch = validate(frame, TZ, DAY)
    assert reasons(batch) == ["implausible_amount", "implausible_amount"]
    assert list(batch.orders["amount_cents"]) == [10350]


def test_a_phone_number_in_the_amount_column_is_masked_in_the_detail():
    batch = run(row(amount="13812345678"), row(order_id="T2", amount="zhang.san@example.com"))
    details = " ".join(batch.quarantine["detail"])
    assert reasons(batch) == ["implausible_amount", "invalid_amount"]
    assert "13812345678" not in details and "138****5678" in details
    assert "zhang.san@" not in details and "z***@example.com" in details
    assert "13812345678" in batch.quarantine.iloc[0]["raw"]  # the raw row stays as it was


@pytest.mark.parametrize(
    "text", ["now", "today", "10:00", "March", "yesterday", "12/11/2025", "2025-12", "tomorrow 10:00"]
)
def test_relative_or_partial_times_are_unparseable(text):
    batch = run(row(), row(order_id="T2", paid_at=text))
    assert reasons(batch) == ["unparseable_time"]
    assert batch.quarantine.iloc[0]["detail"].startswith("paid_at")


@pytest.mark.parametrize(
    ("field", "text"),
    [
        ("paid_at", "0001-01-01"),
        ("paid_at", "1900-01-01 00:00:00"),
        ("paid_at", "2099-01-01"),
        ("paid_at", "9999-12-31 23:59:59"),
        ("paid_at", "2024-11-06 23:59:59"),  # 401 days before
        ("paid_at", "2025-12-15 00:00:00"),  # 3 days after
        ("updated_at", "0001-01-01"),
        ("updated_at", "2099-01-01"),
    ],
)
def test_times_outside_the_window_are_implausible(field, text):
    batch = run(row(), row(order_id="T2", **{field: text}))
    assert reasons(batch) == ["implausible_time"]
    assert batch.quarantine.iloc[0]["detail"].startswith(field)


def test_the_window_edges_are_in_shop_time_and_a_caller_may_pass_its_own():
    edges = run(
        row(order_id="A", paid_at="2024-11-07 00:00:00"),  # 400 days before, 00:00 Shanghai
        row(order_id="B", paid_at="2025-12-14 23:59:59"),  # 2 days after
        row(order_id="C", paid_at="2025-12-14T16:00:00Z"),  # 2025-12-15 00:00 Shanghai
    )
    assert list(edges.orders["order_id"]) == ["A", "B"] and reasons(edges) == ["implausible_time"]
    wide = validate(
        pd.DataFrame([row(paid_at="2019-06-01 10:00:00")]),
        TZ,
        DAY,
        window=(date(2019, 1, 1), date(2026, 1, 1)),
    )
    assert wide.quarantine.empty


def test_a_policy_sets_the_ceilings():
    policy = PlausibilitySettings(max_order_amount=100, max_id_length=3)
    batch = validate(
        pd.DataFrame([row(), row(order_id="T2", amount="5", line_amount="5")]), TZ, DAY, policy=policy
    )
    assert list(batch.orders["order_id"]) == ["T2"] and reasons(batch) == ["implausible_amount"]
    batch = validate(
        pd.DataFrame([row(order_id="T1234", amount="5", line_amount="5")]), TZ, DAY, policy=policy
    )
    assert reasons(batch) == ["invalid_id"]


def test_datetimes_pandas_cannot_hold_in_nanoseconds_do_not_raise():
    frame = pd.DataFrame([row(), row(order_id="T2")])
    frame["paid_at"] = pd.Series(
        [pd.Timestamp("2025-12-12 10:00:00"), pd.Timestamp("0001-01-01")], dtype="datetime64[s]"
    )
    batch = validate(frame, TZ, DAY)
    assert reasons(batch) == ["implausible_time"]
    assert batch.orders.iloc[0]["paid_at"] == pd.Timestamp("2025-12-12 02:00:00")


@pytest.mark.parametrize(
    ("overrides", "reason", "field"),
    [
        ({"order_id": "T2\x00"}, "invalid_id", "order_id"),
        ({"order_id": "T" * 65}, "invalid_id", "order_id"),
        ({"customer_id": "c\x001"}, "invalid_id", "customer_id"),
        ({"customer_id": "c\u200b1"}, "invalid_id", "customer_id"),
        ({"coupon_code": "C\x07"}, "invalid_id", "coupon_code"),
        ({"sku": "S\u3000 1"}, "invalid_id", "sku"),
        ({"product_name": "奶粉" * 200}, "invalid_text", "product_name"),
        ({"customer_name": "a\x00b"}, "invalid_text", "customer_name"),
        ({"acquisition_source": "x" * 40}, "invalid_text", "acquisition_source"),
    ],
)
def test_ids_and_texts_the_store_cannot_keep_are_quarantined(overrides, reason, field):
    batch = run(row(), row(order_id="T2", **overrides) if "order_id" not in overrides else row(**overrides))
    assert reasons(batch) == [reason]
    assert list(batch.orders["order_id"]) == ["T1"]
    bad = batch.quarantine.iloc[0]
    assert bad["detail"].startswith(field)
    if field == "order_id":
        assert bad["order_id"] is None  # not an id the quarantine table can hold


def test_free_text_may_hold_tabs_line_breaks_and_any_script():
    batch = run(row(product_name="奶粉\t900g\n(新款) 😀", customer_name="Zoë 张"))
    assert batch.quarantine.empty


def test_rows_of_one_order_that_disagree_are_flagged_even_when_their_statuses_differ():
    batch = run(
        row(status="paid"),
        row(status="refunded", customer_id="c2", amount="5", line_amount="5", paid_at="2025-12-12 11:00:00"),
    )
    assert reasons(batch) == ["inconsistent_order_rows", "inconsistent_order_rows"]
    assert batch.orders.empty
    assert (
        batch.quarantine.iloc[0]["detail"]
        == "rows of this order disagree on customer_id, paid_at, amount_cents"
    )


def test_a_partial_refund_is_carried_in_cents_and_not_in_the_content_hash():
    plain = run(row())
    refunded = run(row(refund_amount="20.5"))
    whole = run(row(refund_amount="¥103.50"))
    assert plain.orders.iloc[0]["refunded_cents"] == 0
    assert refunded.orders.iloc[0]["refunded_cents"] == 2050
    assert (whole.orders.iloc[0]["status"], whole.orders.iloc[0]["refunded_cents"]) == ("paid", 10350)
    assert plain.orders["content_hash"][0] == refunded.orders["content_hash"][0]
    assert refunded.orders["refunded_cents"].dtype == "int64"


def test_the_latest_version_of_an_order_must_agree_on_its_refund():
    batch = run(row(sku="A", refund_amount="1"), row(sku="B", refund_amount="2"))
    assert reasons(batch) == ["inconsistent_order_rows"] * 2
    older = run(
        row(refund_amount="1"), row(status="completed", updated_at="2025-12-12 12:00:00", refund_amount="2")
    )
    assert older.quarantine.empty and older.orders.iloc[0]["refunded_cents"] == 200


def test_validation_is_deterministic():
    rows = [row(), row(order_id="T2", paid_at="now"), row(order_id="T3", amount="1e17"), row(order_id="T4")]
    first, second = run(*rows), run(*rows)
    for name in ("orders", "lines", "customers", "quarantine"):
        pd.testing.assert_frame_equal(getattr(first, name), getattr(second, name))


def test_excel_wrappers_around_an_order_id_are_dropped():
    batch = run(row(order_id='="3021498712345678"'), row(order_id="'T9"))
    assert list(batch.orders["order_id"]) == ["3021498712345678", "T9"]


def test_without_the_store_the_same_orders_lines_and_quarantine_without_hashes_or_customers():
    rows = [
        row(),
        row(sku="S2", category="kids_clothing", line_amount="3.50", amount="103.50"),
        row(order_id="T2", customer_id="c2", amount="abc"),
        row(order_id="T3", customer_id="c3", status="refunded", refund_amount="103.50"),
    ]
    frame = pd.DataFrame(rows)
    stored = validate(frame, TZ, DAY)
    analysed = validate(frame, TZ, DAY, for_store=False)
    assert analysed.orders.drop(columns="content_hash").equals(stored.orders.drop(columns="content_hash"))
    assert analysed.orders["content_hash"].isna().all() and stored.orders["content_hash"].notna().all()
    line_key = ["order_id", "category", "amount_cents", "quantity"]
    assert sorted(map(tuple, analysed.lines[line_key].astype(str).to_numpy())) == sorted(
        map(tuple, stored.lines[line_key].astype(str).to_numpy())
    )
    assert analysed.customers.empty and not stored.customers.empty
    assert analysed.quarantine.equals(stored.quarantine)


def test_text_is_stripped_of_exactly_what_arrow_calls_whitespace():
    """Values are stripped only when some value starts or ends with whitespace (read from their
    bytes): each Unicode whitespace character at either end is found, and characters whose UTF-8
    bytes look alike (CJK characters ending in 0x80..0xAF) give what Arrow's utf8_trim_whitespace
    gives."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from huitouke.intake.validate import parse_rows
    from huitouke.records import ALL_COLUMNS

    def stripped(values):
        frame = pd.DataFrame({c: pd.Series(values, dtype="str") if c == "sku" else None for c in ALL_COLUMNS})
        return parse_rows(frame, TZ)["sku"].to_pylist()

    def expected(values):
        text = pc.utf8_trim_whitespace(pa.array(values, pa.large_string()))
        return pc.if_else(pc.equal(text, ""), pa.scalar(None, pa.large_string()), text).to_pylist()

    spaces = "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B)))
    for space in spaces + "\u2028\u2029\u202f\u205f\u3000":
        values = ["x", f"{space}x", "中", f"x{space}", f"中{space}", f"{space}中", "x"]
        assert stripped(values) == expected(values) != values, repr(space)
    others = "x中总亀\u3001\u2080\u200b\u180e\ufeff\xa1\u00c2" + "".join(
        chr(c) for c in np.random.default_rng(14).integers(0x80, 0xD7FF, 3000)
    )
    values = [f"{a}{b}" for a in others for b in ("x", "中")] + [
        f"{b}{a}" for a in others for b in ("x", "中")
    ]
    assert stripped(values) == expected(values) == values


def test_times_with_slashes_or_dots_read_by_position_as_by_the_pattern():
    """``2025/12/12 10:03:00`` takes the fast path (by byte position); with two spaces or a
    one-digit month it goes through the pattern: the same times either way."""
    fixed = [
        "2025/12/12 10:03:00",
        "2025.12.01",
        "2025-12/12 23:59:59",
        "2025/02/30 10:00:00",
        "2025/12/12 24:00:00",
    ]
    other = [
        "2025/12/12  10:03:00",
        "2025.12.1",
        "2025-12/12  23:59:59",
        "2025/2/30 10:00:00",
        "2025/12/12  24:00:00",
    ]
    times = [parse_times_utc(pd.Series(values, dtype="str"), TZ).tolist() for values in (fixed, other)]
    assert times[0] == times[1]
    assert times[0][:3] == [
        pd.Timestamp("2025-12-12 02:03:00"),
        pd.Timestamp("2025-11-30 16:00:00"),
        pd.Timestamp("2025-12-12 15:59:59"),
    ]
    assert pd.isna(times[0][3]) and pd.isna(times[0][4])
