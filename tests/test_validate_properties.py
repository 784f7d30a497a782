"""Property-based tests of validation (hypothesis): whatever the cells, validate never raises, what
it keeps is inside the plausibility policy, and the same input always gives the same output."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from huitouke import records
from huitouke.config import PlausibilitySettings
from huitouke.intake.validate import validate

TZ = ZoneInfo("Asia/Shanghai")
DAY = date(2025, 12, 12)
POLICY = PlausibilitySettings()
ENCODINGS = ["utf-8", "gb18030", "latin-1", "utf-16", "cp1252", "big5"]
NASTY = [
    "now",
    "today",
    "10:00",
    "March",
    "yesterday",
    "0001-01-01",
    "9999-12-31 23:59:59",
    "1e308",
    "1e17",
    "-0.001",
    "10.005",
    "inf",
    "NaN",
    "13812345678",
    "a@b.cn",
    "\x00",
    "\u200b",
    "\ufeff1",
    '="123"',
    "2025-02-30",
    "2025-12-12 24:00:00",
    "2025-12-12T10:00:00+15:00",
    "2025年12月12日 10:01:30",
    "￥1,299.00",
    "  ",
    "",
    "交易成功",
    "refunded",
    "paid",
    "cancelled",
    "2025-12-12 10:00:00",
]
PROPERTY_SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEWER = settings(PROPERTY_SETTINGS, max_examples=12)


def _decoded(data: bytes, encoding: str, errors: str) -> str:
    try:
        return data.decode(encoding, errors=errors)
    except UnicodeDecodeError:  # utf-16 with an odd number of bytes: surrogateescape cannot help
        return data.decode(encoding, errors="replace")


cells = st.one_of(
    st.none(),
    st.sampled_from(NASTY),
    st.text(max_size=30),
    st.builds(
        _decoded,
        st.binary(max_size=30),
        st.sampled_from(ENCODINGS),
        st.sampled_from(["replace", "surrogateescape"]),
    ),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)),
)


def good_row(n: int) -> dict[str, object]:
    return {
        "order_id": f"T{n % 5}",
        "customer_id": f"c{n % 3}",
        "paid_at": f"2025-12-12 {n % 24:02d}:00:00",
        "amount": "103.50",
        "status": "paid",
        "sku": f"S{n}",
        "category": "food",
        "quantity": "1",
        "line_amount": "50",
    }


@st.composite
def frames(draw: st.DrawFn) -> pd.DataFrame:
    """A few rows: good ones with any cells overwritten by anything at all."""
    rows = []
    for n in range(draw(st.integers(min_value=1, max_value=6))):
        row = good_row(n)
        for column in draw(st.lists(st.sampled_from(records.ALL_COLUMNS), max_size=4)):
            row[column] = draw(cells)
        rows.append(row)
    return pd.DataFrame(rows, dtype=object)


def _window_utc() -> tuple[pd.Timestamp, pd.Timestamp]:
    first, last = POLICY.window(DAY)
    low = pd.Timestamp(first).tz_localize(TZ).tz_convert("UTC").tz_localize(None)
    high = pd.Timestamp(last + timedelta(days=1)).tz_localize(TZ).tz_convert("UTC").tz_localize(None)
    return low, high


def _printable_and_bounded(values: pd.Series) -> bool:
    present = values.dropna().astype(str)
    if present.empty:
        return True
    array = pa.array(present.tolist(), type=pa.large_string())
    printable = pc.all(pc.utf8_is_printable(array)).as_py()
    return printable and int(pc.max(pc.utf8_length(array)).as_py()) <= POLICY.max_id_length


@PROPERTY_SETTINGS
@given(frames())
def test_whatever_the_cells_validate_keeps_only_plausible_orders(frame):
    batch = validate(frame, TZ, DAY)
    orders, low_high = batch.orders, _window_utc()
    assert batch.rows_read == len(frame)
    cents = orders["amount_cents"].to_numpy(dtype=np.int64)
    assert ((cents >= 0) & (cents <= POLICY.max_order_amount * 100)).all()
    refunded = orders["refunded_cents"].to_numpy(dtype=np.int64)
    assert ((refunded >= 0) & (refunded <= cents)).all()
    paid = pd.to_datetime(orders["paid_at"]).dropna()
    assert ((paid >= low_high[0]) & (paid < low_high[1])).all()
    for column in ("order_id", "customer_id", "coupon_code"):
        assert _printable_and_bounded(orders[column])
    assert _printable_and_bounded(batch.lines["sku"])
    line_cents = pd.to_numeric(batch.lines["amount_cents"]).dropna()
    assert ((line_cents >= 0) & (line_cents <= POLICY.max_line_amount * 100)).all()
    assert set(orders["status"]) <= set(records.STATUSES)
    held_back = batch.quarantine[batch.quarantine["reason"] != "invalid_birthday"]
    assert not set(held_back["order_id"].dropna()) & set(orders["order_id"])  # whole or not at all


@FEWER
@given(frames())
def test_no_detail_shows_a_phone_number_or_an_email_address(frame):
    frame.loc[0, "amount"] = "13812345678"
    frame.loc[len(frame) - 1, "paid_at"] = "li.si@example.com"
    details = " ".join(validate(frame, TZ, DAY).quarantine["detail"])
    assert "13812345678" not in details and "li.si@example.com" not in details


@FEWER
@given(frames())
def test_the_same_rows_give_the_same_batch(frame):
    first, second = validate(frame, TZ, DAY), validate(frame.copy(), TZ, DAY)
    for name in ("orders", "lines", "customers", "quarantine"):
        pd.testing.assert_frame_equal(getattr(first, name), getattr(second, name))
