"""Validation of raw order rows: the one place that decides what is a good order.

Every source hands over canonical rows with raw values (:mod:`huitouke.records`). Here they
are parsed (amounts to cents, times to UTC, statuses to the canonical vocabulary), checked against
the plausibility policy (``intake.plausibility``: :class:`huitouke.config.PlausibilitySettings`),
and split into orders, order lines, customers and quarantine rows. A bad row never stops the run:
it goes to quarantine with its reason, a detail naming the field (phone numbers and e-mail
addresses in it masked), its source reference (file and line) and the raw row. An order is
loaded whole or not at all: when one of its rows is bad, all its rows are quarantined.

Quarantine reasons (one per row, the first that applies):

==========================  ======================================================================
``missing_order_id``        no order id
``invalid_id``              order_id, customer_id, coupon_code or sku with a control or other
                            non-printable character, or longer than ``max_id_length`` (64)
``missing_customer``        no customer id
``invalid_text``            product_name, category, acquisition_source, customer_name, phone or
                            email longer than the store keeps, or with a control character
``invalid_amount``          amount is not a number (``inf`` and ``nan`` neither), or has fractions
                            of a cent (``10.005``; trailing zeros such as ``10.500`` are fine)
``negative_amount``         amount below zero, however little (``-0.001``)
``implausible_amount``      amount above ``max_order_amount`` or line_amount above
                            ``max_line_amount`` (1,000,000 CNY each by default)
``unknown_status``          status not in the vocabulary (records.STATUS_SYNONYMS)
``unparseable_time``        paid_at or updated_at is not an absolute time: a full date, year first
                            (``2025-12-12``, ``2025/12/12 10:03``, ``2025年12月12日 10:03:11``,
                            ISO 8601 with an offset), with an optional time of day; relative or
                            partial words (``now``, ``today``, ``10:00``, ``March``) are not
``implausible_time``        paid_at or updated_at outside the window (shop time): by default from
                            ``days_before`` (400) before the business day to ``days_after`` (2)
                            after the last one read; ``0001-01-01`` and ``2099-01-01`` land here
``missing_paid_at``         a paid, shipped, completed or refunded order without a payment time
``invalid_line``            a line amount or quantity that is not a number, is negative, has
                            fractions of a cent (amount) or of a piece (quantity), or a quantity
                            above ``max_line_quantity``
``invalid_refund``          refund_amount is not a number, is negative, has fractions of a cent
                            or is above the order's amount
``bad_sibling_row``         another row of the same order was bad, so the order was not loaded
``inconsistent_order_rows`` rows of one order disagree on customer, payment time or amount (in
                            any of its versions: a paid and a refunded row of one order too), or
                            the rows of its latest version on refund_amount
``invalid_birthday``        the birthday could not be read; the order itself is loaded
==========================  ======================================================================

A refund equal to the whole amount leaves the status as the source says: an order still "paid"
with ``refunded_cents == amount_cents`` is stored so (the segments count what was kept).

The store adds two reasons of its own (:mod:`huitouke.intake.load`): ``conflicting_order`` and
``status_regression``.

:func:`validate` goes in steps: :func:`parse_rows` (values parsed, columnar: Arrow compute and
numpy, no per-cell Python), :func:`_row_checks` (each row's first failing reason), whole orders
(siblings of a bad row, rows that disagree, several versions of one order), :func:`_orders_and_lines`
and :func:`_customers` from the good rows, and :func:`_quarantine_rows` from the others. The same
input always gives the same output: a re-run of a day changes nothing.

The parsed columns stay Arrow arrays (a text column that needs no stripping is the source's own
array, not a copy) and numpy arrays; the steps pass row positions, not frames, and each output
column is taken once from the parsed columns at the rows it needs (``analyze``'s speed and memory,
issue 14).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from huitouke import records
from huitouke.config import PlausibilitySettings
from huitouke.pii import mask_text

QUARANTINE_FIELDS = ("reason", "detail", "order_id", "source_ref", "raw")

# RE2 patterns (Arrow compute).
_EXCEL_WRAPPERS = r"^(=?\"|')|\"$"
_MONEY_NOISE = r"[¥￥,，\s\x{3000}\x{a0}]|CNY|RMB|元"
_NUMBER = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"
_TIME = (
    r"^(?P<year>\d{4})[-/.](?P<month>\d{1,2})[-/.](?P<day>\d{1,2})"
    r"(?:[ T]+(?P<hour>\d{1,2}):(?P<minute>\d{2})(?::(?P<second>\d{2})(?:[.,](?P<fraction>\d{1,9}))?)?)?"
    r" *(?P<offset>Z|UTC|[+-]\d{2}(?::?\d{2})?)?$"
)
# The common shape, read by position (a fast path; everything else goes through _TIME).
_FIXED_TIME = r"^\d{4}[-/.]\d{2}[-/.]\d{2}(?:[ T]\d{2}:\d{2}:\d{2})?$"
_FIXED_TIME_SLICES = {
    "year": (0, 4),
    "month": (5, 7),
    "day": (8, 10),
    "hour": (11, 13),
    "minute": (14, 16),
    "second": (17, 19),
}

# The years a time may have at all (pandas holds 1677..2262 in nanoseconds); the window narrows it.
_YEARS = (1900, 2199)
# A value has fractions of a cent when its cents are further than this from a whole number.
_SUBCENT = 1e-3
# Text fields other than ids, and the length the store keeps of them (store/schema.py).
_TEXT_LIMITS = {
    "product_name": 255,
    "category": 64,
    "acquisition_source": 32,
    "customer_name": 128,
    "phone": 32,
    "email": 255,
}
_ID_FIELDS = ("order_id", "customer_id", "coupon_code", "sku")
_QUOTE_LIMIT = 80
_SURROGATES = re.compile("[\ud800-\udfff]")
_STR = pd.StringDtype("pyarrow", na_value=np.nan)  # pandas' default "str"


# parse_rows' columns by name: Arrow text, numpy numbers, times and flags.
_Parsed = dict[str, pa.Array | np.ndarray]


@dataclass
class ValidatedBatch:
    """What validation made of one read: loadable frames and quarantine rows."""

    orders: pd.DataFrame
    lines: pd.DataFrame
    customers: pd.DataFrame
    quarantine: pd.DataFrame
    rows_read: int


# ----------------------------------------------------------------------------------- text


def _arrow_text(series: pd.Series) -> pa.Array:
    """Values as text stripped of whitespace (``str`` of numbers and times), empty text as null."""
    if not isinstance(series.dtype, pd.StringDtype):
        if series.dtype == object and series.isna().all():  # a column the source does not have
            return pa.nulls(len(series), pa.large_string())
        try:
            series = series.astype(_STR)
        except UnicodeEncodeError:  # lone surrogates (bytes decoded with surrogateescape)
            series = series.map(_without_surrogates, na_action="ignore").astype(_STR)
    return _stripped(_arrow(series))


def _stripped(text: pa.Array) -> pa.Array:
    """``text`` stripped of whitespace, empty text as null; ``text`` itself (no copy) when no value
    starts or ends with whitespace or is empty, as in most exports."""
    if _edge_whitespace(text).any():
        text = pc.utf8_trim_whitespace(text)
    _, offsets = _string_bytes(text)
    if (offsets[1:] == offsets[:-1]).any() and pc.any(pc.equal(text, "")).as_py():
        text = pc.if_else(pc.equal(text, ""), pa.scalar(None, pa.large_string()), text)
    return text


# What Arrow's utf8_trim_whitespace strips, as UTF-8: one byte, or 2 or 3 bytes (sorted).
_SPACE_BYTES = (9, 10, 11, 12, 13, 28, 29, 30, 31, 32)
_SPACES = np.array(
    [0xC285, 0xC2A0, 0xE19A80, *range(0xE28080, 0xE2808B), 0xE280A8, 0xE280A9, 0xE280AF, 0xE2819F, 0xE38080],
    dtype=np.int64,
)
_SPACE_TABLE = np.isin(np.arange(256), _SPACE_BYTES)
_SPACE_LEAD_TABLE = np.isin(np.arange(256), _SPACES[_SPACES >= 1 << 16] >> 16) | np.isin(
    np.arange(256), _SPACES[_SPACES < 1 << 16] >> 8
)
_SPACE_TAIL_TABLE = np.isin(np.arange(256), _SPACES & 0xFF)


def _edge_whitespace(text: pa.Array) -> np.ndarray:
    """Where a value starts or ends with whitespace (what ``utf8_trim_whitespace`` strips), read
    from its first and last three bytes."""
    data, offsets = _string_bytes(text)
    starts, ends, last = offsets[:-1], offsets[1:], len(data) - 1

    def at(positions: np.ndarray) -> np.ndarray:
        return data[np.clip(positions, 0, last)].astype(np.int64)

    first, final = at(starts), at(ends - 1)
    found = _SPACE_TABLE[first] | _SPACE_TABLE[final]
    lead = np.flatnonzero(_SPACE_LEAD_TABLE[first])  # may start with a character of 2 or 3 bytes
    head = (first[lead] << 16) | (at(starts[lead] + 1) << 8) | at(starts[lead] + 2)
    found[lead] |= _in_sorted(head, _SPACES) | _in_sorted(head >> 8, _SPACES)
    trail = np.flatnonzero(_SPACE_TAIL_TABLE[final])  # may end with one
    tail = (at(ends[trail] - 3) << 16) | (at(ends[trail] - 2) << 8) | final[trail]
    found[trail] |= _in_sorted(tail, _SPACES) | _in_sorted(tail & 0xFFFF, _SPACES)
    return found & (ends > starts)


def _in_sorted(values: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """Where ``values`` are in the sorted array ``allowed``."""
    return allowed[np.minimum(np.searchsorted(allowed, values), len(allowed) - 1)] == values


def _without_surrogates(value: object) -> str:
    """``str(value)`` with lone surrogates, which UTF-8 cannot hold, as U+FFFD."""
    return _SURROGATES.sub("\ufffd", str(value))


def _arrow(series: pd.Series | np.ndarray | pa.Array) -> pa.Array:
    """Text values as one Arrow ``large_string`` array (not chunked)."""
    if isinstance(series, pa.Array) and series.type == pa.large_string():
        return series
    array = pa.array(series, type=pa.large_string())
    return array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array


def _mask(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """An Arrow boolean array as numpy, null as False."""
    return pc.fill_null(values, False).to_numpy(zero_copy_only=False)


def _codes(text: pa.Array) -> tuple[np.ndarray, pa.Array]:
    """Dictionary codes of ``text`` in order of first appearance (-1 for null), and the values."""
    encoded = pc.dictionary_encode(text)
    return pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False).astype(
        np.int64
    ), encoded.dictionary


def _map_text(text: pa.Array, function: Callable[[str | None], str | None]) -> pa.Array:
    """``function`` of each value as Arrow text, called once per distinct value."""
    codes, values = _codes(text)
    mapped = pa.array([function(v) for v in values.to_pylist()] + [function(None)], pa.large_string())
    return mapped.take(pa.array(np.where(codes < 0, len(values), codes)))


# --------------------------------------------------------------------------------- numbers


def _read_numbers(series: pd.Series, noise: str | None = None, text: pa.Array | None = None) -> np.ndarray:
    """Numbers as float64 (NaN where missing, unreadable or not finite); ``noise`` is removed first.
    ``text``: the series' :func:`_arrow_text`, when the caller has it already."""
    if pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series.dtype):
        values = pd.to_numeric(series, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    else:
        values = _text_numbers(_arrow_text(series) if text is None else text, noise)
    values = values.copy()
    values[~np.isfinite(values)] = np.nan
    return values


def _text_numbers(text: pa.Array, noise: str | None) -> np.ndarray:
    """Numbers written as text: plain ones (``103.50``) cast at once; ``noise`` is removed from the
    others (``¥1,299.00``) before they are tried again."""
    try:  # the common case: every value is a plain number (inf and nan are dropped by the caller)
        return pc.cast(text, pa.float64()).to_numpy(zero_copy_only=False)
    except pa.ArrowInvalid:
        pass
    values = np.full(len(text), np.nan)
    plain = _mask(pc.match_substring_regex(text, _NUMBER))
    values[plain] = pc.cast(text.filter(pa.array(plain)), pa.float64()).to_numpy(zero_copy_only=False)
    rest = np.flatnonzero(~plain & _mask(pc.is_valid(text)))
    if noise is not None and len(rest):
        cleaned = pc.replace_substring_regex(text.take(pa.array(rest)), noise, "")
        readable = _mask(pc.match_substring_regex(cleaned, _NUMBER))
        numbers = pc.cast(cleaned.filter(pa.array(readable)), pa.float64())
        values[rest[readable]] = numbers.to_numpy(zero_copy_only=False)
    return values


def read_money(series: pd.Series) -> np.ndarray:
    """Amounts such as ``103.5``, ``"¥1,299.00"`` or ``"88 元"`` in CNY (NaN when unreadable)."""
    return _read_numbers(series, _MONEY_NOISE)


def parse_money_cents(series: pd.Series) -> pd.Series:
    """Amounts to cents, rounded (float; NaN when unreadable). See :func:`read_money`."""
    return pd.Series(np.round(read_money(series) * 100), index=series.index)


def _subcent(cny: np.ndarray) -> np.ndarray:
    """Where an amount has fractions of a cent (10.005; not 10.500)."""
    with np.errstate(over="ignore", invalid="ignore"):  # 1e308: above any ceiling anyway
        cents = cny * 100
        return np.abs(cents - np.round(cents)) > _SUBCENT


# ----------------------------------------------------------------------------------- times


@dataclass(frozen=True)
class TimesRead:
    """Times read from text: naive UTC (NaT where unreadable or out of range), and where a value
    was an absolute time whose year no window could hold (``0001-01-01``: implausible, not unreadable)."""

    utc: pd.Series
    out_of_range: np.ndarray


@dataclass
class _TimeParts:
    """The parts of each time as written, int64 (0 where absent), and what was read at all."""

    fields: dict[str, np.ndarray]  # year, month, day, hour, minute, second, nanosecond
    matched: np.ndarray  # the text had the shape of an absolute time
    offset_minutes: np.ndarray  # the offset it was written with (0 without one)
    has_offset: np.ndarray
    offset_ok: np.ndarray


def _ints(text: pa.Array) -> np.ndarray:
    """Digits as int64, 0 where empty or null."""
    text = pc.if_else(pc.equal(text, ""), "0", text)
    return pc.fill_null(pc.cast(text, pa.int64()), 0).to_numpy(zero_copy_only=False).copy()


def _offsets(found: pa.StructArray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The offset of each matched time in minutes, whether it has one, and whether it is valid."""
    text = pc.fill_null(pc.struct_field(found, "offset"), "")
    has = _mask(pc.not_equal(text, ""))
    digits = pc.replace_substring(text, ":", "")
    digits = pc.if_else(pc.is_in(digits, pa.array(["Z", "UTC", ""])), "+0000", digits)
    digits = pc.utf8_rpad(digits, 5, "0")
    sign = np.where(_mask(pc.starts_with(digits, "-")), -1, 1)
    hours, minutes = (
        _ints(pc.utf8_slice_codeunits(digits, 1, 3)),
        _ints(pc.utf8_slice_codeunits(digits, 3, 5)),
    )
    return sign * (hours * 60 + minutes), has, (hours <= 14) & (minutes < 60)


def _fixed_times(text: pa.Array) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Where a time has the fixed shape :data:`_FIXED_TIME` (the regex's answer, without running
    it over every value), and the parts of those times (0 elsewhere): both from one pass over
    their bytes by position."""
    data, offsets = _string_bytes(text)
    starts, last = offsets[:-1], max(len(data) - 1, 0)
    length = offsets[1:] - starts
    date_only = length == 10
    fixed = (date_only | (length == 19)) & _mask(pc.is_valid(text))
    field_at = {position: name for name, (a, b) in _FIXED_TIME_SLICES.items() for position in range(a, b)}
    fields = {name: np.zeros(len(starts), dtype=np.int64) for name in _FIXED_TIME_SLICES}
    for position, allowed in enumerate(_FIXED_TIME_BYTES):
        byte = data[np.minimum(starts + position, last)]
        fixed &= allowed[byte] | (date_only if position >= 10 else False)
        if position in field_at:
            value = fields[field_at[position]]
            value *= 10
            value += byte
            value -= 48
    for name, (a, _) in _FIXED_TIME_SLICES.items():
        fields[name] = np.where(fixed & ~date_only if a >= 10 else fixed, fields[name], 0)
    return fixed, fields


def _time_parts(text: pa.Array) -> _TimeParts:
    """Split times into their parts: the common fixed shape (``2025-12-12 10:03:11``) by position,
    the others (``2025/1/5 9:03``, ``2025年12月12日``, offsets, fractions) by :data:`_TIME`."""
    n = len(text)
    fixed, fields = _fixed_times(text)
    fields["nanosecond"] = np.zeros(n, dtype=np.int64)
    parts = _TimeParts(fields, fixed, np.zeros(n, np.int64), np.zeros(n, bool), np.ones(n, bool))
    rest = np.flatnonzero(_mask(pc.is_valid(text)) & ~fixed)
    if len(rest):
        found = pc.extract_regex(_time_text(text.take(pa.array(rest))), _TIME)
        for name in _FIXED_TIME_SLICES:
            fields[name][rest] = _ints(pc.struct_field(found, name))
        fraction = pc.utf8_rpad(pc.fill_null(pc.struct_field(found, "fraction"), ""), 9, "0")
        fields["nanosecond"][rest] = _ints(fraction)
        parts.matched[rest] = _mask(pc.is_valid(found))
        parts.offset_minutes[rest], parts.has_offset[rest], parts.offset_ok[rest] = _offsets(found)
    return parts


def _local_nanoseconds(parts: _TimeParts) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Naive nanoseconds of the times as written, where they are a real date and time of day,
    and where their year is outside :data:`_YEARS`."""
    f = parts.fields
    year, month, day = f["year"], f["month"], f["day"]
    out_of_range = parts.matched & ((year < _YEARS[0]) | (year > _YEARS[1]))
    usable = parts.matched & ~out_of_range & (month >= 1) & (month <= 12) & (day >= 1) & (day <= 31)
    month_start = np.where(usable, (year - 1970) * 12 + month - 1, 0).astype("datetime64[M]")
    days = month_start.astype("datetime64[D]") + np.where(usable, day - 1, 0).astype("timedelta64[D]")
    usable &= days.astype("datetime64[M]") == month_start  # 2025-02-30 is no day
    usable &= (f["hour"] < 24) & (f["minute"] < 60) & (f["second"] < 60) & parts.offset_ok
    seconds = f["hour"] * 3600 + f["minute"] * 60 + f["second"]
    local = days.astype("datetime64[ns]").astype(np.int64) + seconds * 1_000_000_000 + f["nanosecond"]
    return np.where(usable, local, 0), usable, out_of_range


def _time_text(text: pa.Array) -> pa.Array:
    """Time text with Chinese date words as separators (2025年12月12日 -> 2025-12-12)."""
    text = pc.replace_substring_regex(text, "[年月]", "-")
    return pc.utf8_trim_whitespace(pc.replace_substring(text, "日", " "))


def read_times(series: pd.Series, tz: ZoneInfo, text: pa.Array | None = None) -> TimesRead:
    """Absolute times to naive UTC; times without an offset are shop-local (:class:`TimesRead`).
    ``text``: the series' :func:`_arrow_text`, when the caller has it already."""
    if isinstance(series.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(series.dtype):
        return _read_datetimes(series, tz)
    text = _arrow_text(series) if text is None else text
    utc, out_of_range = _on_values(text, lambda values: _utc_times(values, tz), (_NAT, False))
    return TimesRead(pd.Series(utc.view("datetime64[ns]"), index=series.index), out_of_range)


_NAT = np.iinfo(np.int64).min


def _on_values(
    text: pa.Array, read: Callable[[pa.Array], tuple[np.ndarray, ...]], missing: tuple[object, ...]
) -> tuple[np.ndarray, ...]:
    """``read`` of the values that are there (a column mostly empty costs what its values cost),
    ``missing`` where there is none."""
    if not text.null_count:
        return read(text)
    rows = np.flatnonzero(_mask(pc.is_valid(text)))
    found = read(text.take(pa.array(rows, type=pa.int64())))
    out = tuple(np.full(len(text), fill, dtype=part.dtype) for part, fill in zip(found, missing, strict=True))
    for whole, part in zip(out, found, strict=True):
        whole[rows] = part
    return out


def _utc_times(text: pa.Array, tz: ZoneInfo) -> tuple[np.ndarray, np.ndarray]:
    """Times as naive UTC nanoseconds (:data:`_NAT` where unreadable), and where a year was out of
    range."""
    parts = _time_parts(text)
    local, usable, out_of_range = _local_nanoseconds(parts)
    utc = np.where(parts.has_offset, local - parts.offset_minutes * 60_000_000_000, 0)
    naive = usable & ~parts.has_offset
    if naive.any():
        shop = pd.DatetimeIndex(local[naive].astype("datetime64[ns]"))
        shop = shop.tz_localize(tz, ambiguous="NaT", nonexistent="shift_forward").tz_convert("UTC")
        utc[naive] = shop.tz_localize(None).as_unit("ns").asi8
        usable[naive] &= shop.notna()
    return np.where(usable, utc, _NAT), out_of_range


def _read_datetimes(series: pd.Series, tz: ZoneInfo) -> TimesRead:
    """Times that already are datetimes (Parquet, database drivers), in any resolution."""
    years = series.dt.year.to_numpy(dtype="float64", na_value=np.nan)
    out_of_range = (years < _YEARS[0]) | (years > _YEARS[1])
    kept = series.where(~out_of_range)
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        utc = kept.dt.tz_convert("UTC")
    else:
        utc = kept.dt.tz_localize(tz, ambiguous="NaT", nonexistent="shift_forward").dt.tz_convert("UTC")
    return TimesRead(utc.dt.tz_localize(None).dt.as_unit("ns").reset_index(drop=True), out_of_range)


def parse_times_utc(series: pd.Series, tz: ZoneInfo) -> pd.Series:
    """Times to naive UTC. Times without an offset are shop-local; NaT where unreadable."""
    return read_times(series, tz).utc.set_axis(series.index)


def _read_dates(text: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Dates (a time of day is ignored) as datetime64[D], and where the text was one."""

    def read(values: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        local, usable, _ = _local_nanoseconds(_time_parts(values))
        return local.astype("datetime64[ns]").astype("datetime64[D]"), usable

    return _on_values(text, read, (np.datetime64("NaT"), False))


# ------------------------------------------------------------------------------ validation


def validate(
    raw: pd.DataFrame,
    tz: ZoneInfo,
    business_date: date,
    *,
    window: tuple[date, date] | None = None,
    policy: PlausibilitySettings | None = None,
    for_store: bool = True,
) -> ValidatedBatch:
    """Parse and check one read of canonical rows.

    ``window`` is the first and last business date (shop time, inclusive) a paid_at or updated_at
    may fall on; by default ``policy.window(business_date)``. ``policy`` defaults to the generous
    defaults of :class:`~huitouke.config.PlausibilitySettings`. ``for_store`` False (``huitouke
    analyze``, which stores nothing): no content hashes (None), line numbers (0), skus and product
    names (missing) or customers, which only loading needs; the same orders, lines and quarantine
    otherwise.
    """
    policy = policy or PlausibilitySettings()
    frame = _with_every_column(raw)
    parsed = parse_rows(frame, tz)
    order_code, _ = _codes(parsed["order_id"])
    reason, detail = _first_reason(
        _row_checks(frame, parsed, policy, window or policy.window(business_date), tz)
    )
    _mark_siblings(reason, detail, order_code)
    kept = _whole_orders(parsed, order_code, reason, detail)
    orders, lines = _orders_and_lines(parsed, kept, tz, for_store)
    if for_store:
        customers, bad_birthday = _customers(parsed, kept.rows)
    else:
        customers, bad_birthday = pd.DataFrame(columns=list(records.CUSTOMER_FIELDS)), pd.Series(dtype=object)
    return ValidatedBatch(
        orders=orders,
        lines=lines,
        customers=customers,
        quarantine=_quarantine_rows(frame, parsed["order_id"], reason, detail, bad_birthday, policy),
        rows_read=len(frame),
    )


def _with_every_column(raw: pd.DataFrame) -> pd.DataFrame:
    """``raw`` with every canonical column (None where the source has none) and a source reference
    per row ("row 1", ...) when the source gave none."""
    frame = raw.reset_index(drop=True)
    missing = {c: None for c in records.ALL_COLUMNS if c not in frame.columns}
    if records.SOURCE_REF_COLUMN not in frame.columns:
        missing[records.SOURCE_REF_COLUMN] = [f"row {i + 1}" for i in range(len(frame))]
    return frame.assign(**missing) if missing else frame


def _without_excel_wrappers(ids: pa.Array) -> pa.Array:
    """Ids without Excel's wrappers (``="123"``, ``'123``, ``"123"``); only where there are any."""
    wrapped = pc.or_(
        pc.or_(pc.starts_with(ids, "="), pc.starts_with(ids, "'")),
        pc.or_(pc.starts_with(ids, '"'), pc.ends_with(ids, '"')),
    )
    if not pc.any(wrapped).as_py():
        return ids
    ids = pc.replace_substring_regex(ids, _EXCEL_WRAPPERS, "")
    return pc.if_else(pc.equal(ids, ""), pa.scalar(None, ids.type), ids)


def parse_rows(frame: pd.DataFrame, tz: ZoneInfo) -> _Parsed:
    """The values the checks look at, parsed, one per source row, by name: ids and texts (Arrow,
    stripped, missing as null), amounts in CNY, statuses (canonical and as written), naive UTC times
    (numpy), and ``given_*``: where a raw value was there at all (not blank). Each column is turned
    into text once; a text column that needs no stripping is the source's own Arrow array."""
    text = {column: _arrow_text(frame[column]) for column in records.ALL_COLUMNS}
    text["order_id"] = _without_excel_wrappers(text["order_id"])
    paid = read_times(frame["paid_at"], tz, text["paid_at"])
    updated = read_times(frame["updated_at"], tz, text["updated_at"])
    numbers = {
        "amount": _read_numbers(frame["amount"], _MONEY_NOISE, text["amount"]),
        "line_amount": _read_numbers(frame["line_amount"], _MONEY_NOISE, text["line_amount"]),
        "refund": _read_numbers(frame["refund_amount"], _MONEY_NOISE, text["refund_amount"]),
        "quantity": _read_numbers(frame["quantity"], None, text["quantity"]),
    }
    given = ("paid_at", "updated_at", "line_amount", "quantity", "refund_amount")
    line_columns = ("sku", "product_name", "category", "line_amount")
    category = text["category"]
    return {
        **{name: text[name] for name in (*_ID_FIELDS, *_TEXT_LIMITS, "birthday")},
        "category": pc.fill_null(category, records.UNKNOWN_CATEGORY) if category.null_count else category,
        **numbers,
        **_statuses(text["status"]),
        "status_text": text["status"],
        "paid_at": paid.utc.to_numpy(),
        "paid_out_of_range": paid.out_of_range,
        "updated_at": updated.utc.to_numpy(),
        "updated_out_of_range": updated.out_of_range,
        "has_line": np.logical_or.reduce([frame[c].notna().to_numpy() for c in line_columns]),
        **{f"given_{name}": _mask(pc.is_valid(text[name])) for name in given},
    }


# ------------------------------------------------------------------------------ row checks


@dataclass(frozen=True)
class _Check:
    """One way a row can fail: its reason, the failing rows, the problem, and the raw values the
    detail quotes after it (none: the problem alone)."""

    reason: str
    failed: np.ndarray
    problem: str
    quoted: pd.Series | pa.Array | None = None


def _is_missing(value: object) -> bool:
    return (
        value is None or value is pd.NA or value is pd.NaT or (isinstance(value, float) and np.isnan(value))
    )


def _quote(value: object) -> str:
    """A raw value for a detail: its repr, cut to :data:`_QUOTE_LIMIT` characters."""
    if _is_missing(value):
        return "empty"
    if isinstance(value, str) and len(value) > _QUOTE_LIMIT:
        return repr(value[:_QUOTE_LIMIT]) + f"... ({len(value):,} characters)"
    return repr(value)


def _first_reason(checks: list[_Check]) -> tuple[np.ndarray, np.ndarray]:
    """For each row, the first failing check's reason and detail (None when all pass)."""
    n = len(checks[0].failed)
    reason = np.full(n, None, dtype=object)
    detail = np.full(n, None, dtype=object)
    open_rows = np.ones(n, dtype=bool)
    for check in checks:
        take = check.failed & open_rows
        if take.any():
            reason[take] = check.reason
            if check.quoted is None:
                detail[take] = check.problem
            else:
                detail[take] = [f"{check.problem}: {_quote(v)}" for v in _values_at(check.quoted, take)]
            open_rows &= ~take
    return reason, detail


def _values_at(values: pd.Series | pa.Array, rows: np.ndarray) -> list[object]:
    """The values at the rows marked in ``rows``, as Python objects (only those are converted)."""
    positions = np.flatnonzero(rows)
    if isinstance(values, pa.Array):
        return values.take(pa.array(positions)).to_pylist()
    return list(values.iloc[positions].to_numpy(dtype=object))


def _string_bytes(array: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """The UTF-8 bytes of a ``large_string`` array and each value's start offset (n + 1 of them),
    as numpy views (no copy)."""
    offsets = np.frombuffer(array.buffers()[1], dtype=np.int64)[array.offset : array.offset + len(array) + 1]
    data = array.buffers()[2]
    data = np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, np.uint8)
    return (data if data.size else np.zeros(1, np.uint8)), offsets  # one byte to index safely


def _rows_with_bytes(array: pa.Array, table: np.ndarray) -> np.ndarray:
    """Where a value has a byte marked in ``table`` (256 booleans); nulls never."""
    data, offsets = _string_bytes(array)
    data = data[offsets[0] : offsets[-1]]
    hits = np.flatnonzero((data < 0x20) | (data == 0x7F))  # every byte a table marks is one of these
    hits = hits[table[data[hits]]] + offsets[0]
    rows = np.zeros(len(array), dtype=bool)
    rows[np.searchsorted(offsets, hits, side="right") - 1] = True
    return rows & _mask(pc.is_valid(array))


def _byte_table(*ranges: tuple[int, int]) -> np.ndarray:
    table = np.zeros(256, dtype=bool)
    for low, high in ranges:
        table[low : high + 1] = True
    return table


_CONTROL_BYTES = _byte_table((0x00, 0x1F), (0x7F, 0x7F))
_DIGIT_BYTES = _byte_table((0x30, 0x39))
_DATE_SEPARATOR_BYTES = _byte_table((0x2D, 0x2F))  # - . /
_FIXED_TIME_BYTES = [
    *[_DIGIT_BYTES] * 4,
    _DATE_SEPARATOR_BYTES,
    *[_DIGIT_BYTES] * 2,
    _DATE_SEPARATOR_BYTES,
    *[_DIGIT_BYTES] * 2,
    _byte_table((0x20, 0x20), (0x54, 0x54)),  # space or T
    *[_DIGIT_BYTES] * 2,
    _byte_table((0x3A, 0x3A)),  # :
    *[_DIGIT_BYTES] * 2,
    _byte_table((0x3A, 0x3A)),
    *[_DIGIT_BYTES] * 2,
]
_FREE_TEXT_CONTROL_BYTES = _byte_table((0x00, 0x08), (0x0B, 0x0C), (0x0E, 0x1F), (0x7F, 0x7F))


def _bad_ids(text: pa.Array, max_length: int) -> np.ndarray:
    """Ids with a control or other non-printable character, or longer than ``max_length``."""
    array = _arrow(text)
    bad = _mask(pc.greater(pc.utf8_length(array), max_length)) | _rows_with_bytes(array, _CONTROL_BYTES)
    unicode = np.flatnonzero(~_mask(pc.string_is_ascii(array)) & _mask(pc.is_valid(array)))
    if len(unicode):  # the full Unicode test only where there is more than ASCII
        values = array.take(pa.array(unicode))
        undecoded = _mask(pc.match_substring(values, "\ufffd"))  # bytes that were not text
        bad[unicode] |= ~_mask(pc.utf8_is_printable(values)) | undecoded
    return bad


def _bad_texts(text: pa.Array, max_length: int) -> np.ndarray:
    """Free texts with a control character (tabs and line breaks are fine), or too long."""
    array = _arrow(text)
    too_long = _mask(pc.greater(pc.utf8_length(array), max_length))
    return too_long | _rows_with_bytes(array, _FREE_TEXT_CONTROL_BYTES)


def _text_checks(frame: pd.DataFrame, parsed: _Parsed, policy: PlausibilitySettings) -> list[_Check]:
    """The ids and free texts a store can keep (``invalid_id``, ``invalid_text``)."""
    limit = policy.max_id_length
    ids = [
        _Check(
            "invalid_id",
            _bad_ids(parsed[name], limit),
            f"{name} is not a printable id of at most {limit} characters",
            frame[name],
        )
        for name in _ID_FIELDS
    ]
    texts = [
        _Check(
            "invalid_text",
            _bad_texts(parsed[name], size),
            f"{name} has a control character or is over {size} characters",
            frame[name],
        )
        for name, size in _TEXT_LIMITS.items()
    ]
    return [
        _Check("missing_order_id", ~_mask(pc.is_valid(parsed["order_id"])), "no order id"),
        ids[0],
        _Check("missing_customer", ~_mask(pc.is_valid(parsed["customer_id"])), "no customer id"),
        *ids[1:],
        *texts,
    ]


def _amount_checks(frame: pd.DataFrame, parsed: _Parsed, policy: PlausibilitySettings) -> list[_Check]:
    """The order's amount and the line's amount (``invalid_amount``, ``negative_amount``,
    ``implausible_amount``)."""
    amount, line = parsed["amount"], parsed["line_amount"]
    unreadable = np.isnan(amount) | (_subcent(amount) & (amount >= 0))
    return [
        _Check(
            "invalid_amount",
            unreadable,
            "amount is not a number of CNY with at most 2 decimals",
            frame["amount"],
        ),
        _Check("negative_amount", amount < 0, "amount is negative", frame["amount"]),
        _Check(
            "implausible_amount",
            amount > policy.max_order_amount,
            f"amount is above the ceiling of {policy.max_order_amount:,.2f} CNY per order",
            frame["amount"],
        ),
        _Check(
            "implausible_amount",
            line > policy.max_line_amount,
            f"line_amount is above the ceiling of {policy.max_line_amount:,.2f} CNY per line",
            frame["line_amount"],
        ),
    ]


def _time_checks(
    frame: pd.DataFrame, parsed: _Parsed, window: tuple[date, date], tz: ZoneInfo
) -> list[_Check]:
    """paid_at and updated_at: absolute times (``unparseable_time``) inside the window
    (``implausible_time``)."""
    first = pd.Timestamp(max(window[0], date(_YEARS[0], 1, 2)))
    after = pd.Timestamp(min(window[1], date(_YEARS[1], 12, 30)) + timedelta(days=1))
    low, high = (t.tz_localize(tz).tz_convert("UTC").tz_localize(None).as_unit("ns") for t in (first, after))
    where = f"outside {window[0]}..{window[1]} (shop time)"
    checks = []
    for name, out_of_range in (("paid_at", "paid_out_of_range"), ("updated_at", "updated_out_of_range")):
        times = parsed[name]
        unreadable = parsed[f"given_{name}"] & np.isnat(times) & ~parsed[out_of_range]
        outside = parsed[out_of_range] | (times < low.to_datetime64()) | (times >= high.to_datetime64())
        checks.append(_Check("unparseable_time", unreadable, f"{name} is not an absolute time", frame[name]))
        checks.append(_Check("implausible_time", outside, f"{name} is {where}", frame[name]))
    return [checks[0], checks[2], checks[1], checks[3]]


def _line_checks(frame: pd.DataFrame, parsed: _Parsed, policy: PlausibilitySettings) -> list[_Check]:
    """A line's amount and quantity (``invalid_line``)."""
    line, quantity = parsed["line_amount"], parsed["quantity"]
    line_given, quantity_given = parsed["given_line_amount"], parsed["given_quantity"]
    bad_line = line_given & (np.isnan(line) | (line < 0) | _subcent(line))
    bad_quantity = quantity_given & (
        np.isnan(quantity) | (quantity < 0) | (quantity % 1 != 0) | (quantity > policy.max_line_quantity)
    )
    return [
        _Check(
            "invalid_line",
            bad_line,
            "line_amount is not a non-negative number of CNY with at most 2 decimals",
            frame["line_amount"],
        ),
        _Check(
            "invalid_line",
            bad_quantity,
            f"quantity is not a whole number from 0 to {policy.max_line_quantity:,}",
            frame["quantity"],
        ),
    ]


def _refund_checks(frame: pd.DataFrame, parsed: _Parsed) -> list[_Check]:
    """refund_amount: readable, not negative, at most the order's amount (``invalid_refund``)."""
    refund, amount, given = parsed["refund"], parsed["amount"], parsed["given_refund_amount"]
    bad = given & (np.isnan(refund) | (refund < 0) | _subcent(refund))
    with np.errstate(over="ignore", invalid="ignore"):
        above = given & (np.round(refund * 100) > np.round(amount * 100))
    return [
        _Check(
            "invalid_refund",
            bad,
            "refund_amount is not a non-negative number of CNY with at most 2 decimals",
            frame["refund_amount"],
        ),
        _Check("invalid_refund", above, "refund_amount is above the order's amount", frame["refund_amount"]),
    ]


def _row_checks(
    frame: pd.DataFrame,
    parsed: _Parsed,
    policy: PlausibilitySettings,
    window: tuple[date, date],
    tz: ZoneInfo,
) -> list[_Check]:
    """The quarantine reasons a single row can have, in the order they are tried (module doc)."""
    status = parsed["status"]
    unpaid = _mask(pc.is_in(status, pa.array([records.PENDING, records.CANCELLED])))
    known = _mask(pc.is_valid(status))
    no_payment = ~parsed["given_paid_at"] & known & ~unpaid
    return [
        *_text_checks(frame, parsed, policy),
        *_amount_checks(frame, parsed, policy),
        _Check("unknown_status", ~known, "unknown status", parsed["status_text"]),
        *_time_checks(frame, parsed, window, tz),
        _Check("missing_paid_at", no_payment, "a paid order needs paid_at"),
        *_line_checks(frame, parsed, policy),
        *_refund_checks(frame, parsed),
    ]


# ---------------------------------------------------------------------------- whole orders


def _mark_siblings(reason: np.ndarray, detail: np.ndarray, order_code: np.ndarray) -> None:
    """An order is loaded whole or not at all: its other rows become ``bad_sibling_row`` (in place)."""
    bad = np.zeros(order_code.max(initial=-1) + 2, dtype=bool)
    bad[order_code[pd.notna(reason)]] = True
    bad[-1] = False  # code -1: no order id
    siblings = bad[order_code] & pd.isna(reason)
    reason[siblings] = "bad_sibling_row"
    detail[siblings] = "another row of this order was quarantined"


def _disagreeing_orders(
    codes: np.ndarray,
    rows: np.ndarray,
    by_order: np.ndarray,
    values: dict[str, np.ndarray | pa.Array],
    n_orders: int,
) -> dict[str, np.ndarray]:
    """For each named value: which orders (by code) have rows that disagree on it. ``rows`` are
    the rows' positions in the values, ``codes`` their orders; ``by_order`` puts them in order of
    their code. Only neighbours of one order are compared."""
    sorted_codes = codes[by_order]
    pairs = np.flatnonzero(sorted_codes[1:] == sorted_codes[:-1])
    left, right = rows[by_order[pairs]], rows[by_order[pairs + 1]]
    out = {}
    for name, value in values.items():
        if isinstance(value, pa.Array):
            one, other = value.take(pa.array(left)), value.take(pa.array(right))
            differs = _mask(pc.not_equal(one, other)) | (_mask(pc.is_valid(one)) != _mask(pc.is_valid(other)))
        else:
            differs = value[left] != value[right]
        flags = np.zeros(n_orders, dtype=bool)
        flags[sorted_codes[pairs[differs]]] = True
        out[name] = flags
    return out


def _latest_version(codes: np.ndarray, by_order: np.ndarray, keys: list[np.ndarray]) -> np.ndarray:
    """Per order, the rows with the largest ``keys`` (the first key first, then the next among the
    rows with the largest first key, ...): its most advanced status, then latest update. Group
    maxima over the rows in order of their code (``by_order``), no second sort."""
    sorted_codes = codes[by_order]
    starts = (
        np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]]) if len(codes) else np.zeros(0, int)
    )
    sizes = np.diff(np.r_[starts, len(codes)])
    candidate = np.ones(len(codes), dtype=bool)
    lowest = np.iinfo(np.int64).min
    for key in keys:
        value = np.where(candidate, key, lowest)[by_order]
        best = np.repeat(np.maximum.reduceat(value, starts), sizes) if len(codes) else value
        candidate[by_order] &= value == best
    return candidate


@dataclass(frozen=True)
class _KeptRows:
    """The rows that make orders (positions in parse_rows' columns, in source order): one order's
    latest version, all its lines; with the order's code, amount and refund in cents."""

    rows: np.ndarray
    codes: np.ndarray
    amount_cents: np.ndarray
    refunded_cents: np.ndarray


def _whole_orders(
    parsed: _Parsed, order_code: np.ndarray, reason: np.ndarray, detail: np.ndarray
) -> _KeptRows:
    """The good rows that make orders: rows of one order must agree on records.FIXED_ORDER_FIELDS in
    all its versions; of several versions (paid, then refunded) the most advanced is kept, whose rows
    must agree on the refund. Rows that disagree become ``inconsistent_order_rows`` (in place)."""
    good = np.flatnonzero(pd.isna(reason))
    codes = order_code[good]
    cents = np.zeros(len(order_code), dtype=np.int64)
    cents[good] = np.round(parsed["amount"][good] * 100)
    refunded = np.zeros(len(order_code), dtype=np.int64)
    refunded[good] = np.round(np.nan_to_num(parsed["refund"][good]) * 100)
    fixed = {
        "customer_id": parsed["customer_id"],
        "paid_at": parsed["paid_at"].view(np.int64),
        "amount_cents": cents,
    }
    by_order = np.argsort(codes, kind="stable")
    n_orders = int(order_code.max(initial=-1)) + 1
    disagree = _disagreeing_orders(codes, good, by_order, fixed, n_orders)
    versions = [parsed["rank"][good], parsed["updated_at"][good].view(np.int64), parsed["status_order"][good]]
    latest = _latest_version(codes, by_order, versions)
    latest_by_order = by_order[latest[by_order]]  # the latest rows, still in order of their code
    disagree |= _disagreeing_orders(codes, good, latest_by_order, {"refund_amount": refunded}, n_orders)
    bad = np.zeros(n_orders, dtype=bool)
    for flags in disagree.values():
        bad |= flags
    if bad.any():
        marked = pd.isna(reason) & (order_code >= 0) & bad[np.maximum(order_code, 0)]
        reason[marked] = "inconsistent_order_rows"
        detail[marked] = [
            "rows of this order disagree on "
            + ", ".join(name for name, flags in disagree.items() if flags[c])
            for c in order_code[marked]
        ]
    keep = good[latest & ~bad[codes]]
    return _KeptRows(keep, order_code[keep], cents[keep], refunded[keep])


def _sorted_codes(text: pa.Array) -> np.ndarray:
    """Each value's place among the distinct values sorted (int64; null: -1)."""
    codes, values = _codes(text)
    rank = np.empty(len(values), dtype=np.int64)
    rank[pc.array_sort_indices(values).to_numpy()] = np.arange(len(values))
    return np.where(codes >= 0, rank[np.maximum(codes, 0)] if len(values) else codes, -1)


# ---------------------------------------------------------------------- orders, lines, customers


def _statuses(text: pa.Array) -> dict[str, pa.Array | np.ndarray]:
    """Each row's canonical status (Arrow text, null when unknown), ``rank``: how far it has
    progressed (records.STATUS_RANK; -1 when unknown), and ``status_order``: its place among the
    canonical statuses sorted by name (-1 when unknown); one call per distinct word."""
    codes, words = _codes(text)
    canonical = [records.canonical_status(word) for word in words.to_pylist()] + [None]
    names = sorted({c for c in canonical if c is not None})
    rows = np.where(codes < 0, len(words), codes)
    return {
        "status": pa.array(canonical, pa.large_string()).take(pa.array(rows)),
        "rank": np.array([records.STATUS_RANK.get(c or "", -1) for c in canonical], dtype=np.int64)[rows],
        "status_order": np.array([names.index(c) if c else -1 for c in canonical], dtype=np.int64)[rows],
    }


def _acquisition_source(value: str | None) -> str:
    if value is None:
        return records.ORGANIC
    return records.ACQUISITION_SYNONYMS.get(
        value.lower(), records.ACQUISITION_SYNONYMS.get(value, value.lower())
    )


def _orders_and_lines(
    parsed: _Parsed, kept: _KeptRows, tz: ZoneInfo, keyed: bool = True
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The orders (one per order id, in order of first appearance, with their content hash) and
    their numbered lines; ``keyed`` False: neither hashes, line numbers, skus nor product names
    (:func:`validate`). Each column is taken once from parse_rows' columns."""
    if not len(kept.rows):
        return pd.DataFrame(columns=list(records.ORDER_FIELDS)), pd.DataFrame(
            columns=list(records.LINE_FIELDS)
        )
    has_line = parsed["has_line"][kept.rows]
    lines = _Lines(kept.rows[has_line], kept.codes[has_line])
    lines = _numbered_lines(parsed, lines) if keyed else lines
    line_frame = pd.DataFrame(
        {
            "order_id": _str_column(parsed["order_id"], lines.rows),
            "line_no": lines.line_no if keyed else np.zeros(len(lines.rows), dtype=np.int64),
            "sku": _str_column(parsed["sku"], lines.rows) if keyed else None,
            "product_name": _str_column(parsed["product_name"], lines.rows) if keyed else None,
            "category": _str_column(parsed["category"], lines.rows),
            "quantity": _int_column(parsed["quantity"][lines.rows]),
            "amount_cents": _int_column(np.round(parsed["line_amount"][lines.rows] * 100)),
        },
        columns=list(records.LINE_FIELDS),
    )
    first = np.sort(np.unique(kept.codes, return_index=True)[1])  # each order's first kept row
    rows = kept.rows[first]
    paid_at = parsed["paid_at"][rows]
    orders = pd.DataFrame(
        {
            "order_id": _str_column(parsed["order_id"], rows),
            "customer_id": _str_column(parsed["customer_id"], rows),
            "paid_at": paid_at,
            "business_date": pd.Series(_local_dates(paid_at, tz), dtype=object),
            "status": _str_column(parsed["status"], rows),
            "amount_cents": kept.amount_cents[first],
            "acquisition_source": _str_column(
                _map_text(parsed["acquisition_source"].take(pa.array(rows)), _acquisition_source), None
            ),
            "coupon_code": _str_column(parsed["coupon_code"], rows),
            "source_updated_at": parsed["updated_at"][rows],
            "content_hash": _content_hashes(parsed, rows, kept.codes[first], lines) if keyed else None,
            "refunded_cents": kept.refunded_cents[first],
        },
        columns=list(records.ORDER_FIELDS),
    )
    return orders, line_frame


def _str_column(text: pa.Array, rows: np.ndarray | None) -> pd.api.extensions.ExtensionArray | np.ndarray:
    """The values at ``rows`` (all: None) as pandas ``str``; all missing: an object column of NaN,
    as pandas makes of such a column."""
    values = text if rows is None else text.take(pa.array(rows))
    if len(values) and values.null_count == len(values):
        return np.full(len(values), np.nan, dtype=object)
    return pd.array(values, dtype=_STR)


def _int_column(values: np.ndarray) -> pd.arrays.IntegerArray:
    """Floats that are whole numbers as pandas ``Int64`` (missing where NaN)."""
    missing = np.isnan(values)
    return pd.arrays.IntegerArray(np.where(missing, 0, values).astype(np.int64), missing)


def _local_dates(utc: np.ndarray, tz: ZoneInfo) -> np.ndarray:
    """Shop-local dates (``datetime.date``, None for NaT) of naive UTC times."""
    local = pd.DatetimeIndex(utc).tz_localize("UTC").tz_convert(tz).tz_localize(None)
    return local.to_numpy().astype("datetime64[D]").astype(object)


@dataclass
class _Lines:
    """The kept rows that carry a line (positions), their orders' codes, and once numbered:
    sorted by order and line content, their ``line_no`` and ``key``."""

    rows: np.ndarray
    codes: np.ndarray
    line_no: np.ndarray | None = None
    key: pa.Array | None = None


def _numbered_lines(parsed: _Parsed, lines: _Lines) -> _Lines:
    """The lines sorted by order and line content, with their ``key`` (which orders the lines of an
    order and enters its content hash) and ``line_no`` (1, 2, ... within the order: the same lines
    get the same numbers on every read)."""
    take = pa.array(lines.rows)
    quantity = _whole_numbers(parsed["quantity"][lines.rows])
    cents = _whole_numbers(np.round(parsed["line_amount"][lines.rows] * 100))
    key = pc.binary_join_element_wise(
        *(parsed[c].take(take) for c in ("sku", "product_name", "category")),
        pc.cast(quantity, pa.large_string()),
        pc.cast(cents, pa.large_string()),
        pa.scalar("|", pa.large_string()),
        null_handling="replace",
        null_replacement="",
    )
    by = pa.table({"code": lines.codes, "key": key})
    order = pc.sort_indices(by, sort_keys=[("code", "ascending"), ("key", "ascending")]).to_numpy()
    sorted_codes = lines.codes[order]
    starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
    line_no = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)])) + 1
    return _Lines(lines.rows[order], sorted_codes, line_no, key.take(pa.array(order)))


def _whole_numbers(values: np.ndarray) -> pa.Array:
    """Floats that are whole numbers as Arrow int64 (null for NaN)."""
    return pa.array(np.nan_to_num(values).astype(np.int64), mask=np.isnan(values))


def _iso_times(values: np.ndarray) -> pa.Array:
    """``Timestamp.isoformat()`` of each time ("" for NaT): whole seconds by Arrow's cast, the rare
    times with fractions of a second one by one."""
    seconds = pa.array(values.astype("datetime64[s]"), from_pandas=True)
    text = pc.replace_substring(pc.cast(seconds, pa.large_string()), " ", "T")
    fractional = np.flatnonzero(~np.isnat(values) & (values.view(np.int64) % 1_000_000_000 != 0))
    if len(fractional):
        exact = text.to_numpy(zero_copy_only=False).astype(object)
        exact[fractional] = [pd.Timestamp(values[i]).isoformat() for i in fractional]
        text = _arrow(exact)
    return pc.fill_null(text, "")


def _content_hashes(
    parsed: _Parsed, rows: np.ndarray, codes: np.ndarray, lines: _Lines
) -> pd.api.extensions.ExtensionArray:
    """sha256 of what an order may never change: customer, payment time, amount and its line keys
    (sorted), one per order (its first row ``rows``, its code ``codes``; ``lines`` numbered)."""
    by_code = np.argsort(codes, kind="stable")
    ordered = rows[by_code]
    starts = np.searchsorted(lines.codes, codes[by_code], "left")
    offsets = pa.array(np.r_[starts, len(lines.rows)].astype(np.int64))
    newline = pa.scalar("\n", pa.large_string())
    content = pc.binary_join_element_wise(
        parsed["customer_id"].take(pa.array(ordered)),
        _iso_times(parsed["paid_at"][ordered]),
        pc.cast(pa.array(np.round(parsed["amount"][ordered] * 100).astype(np.int64)), pa.large_string()),
        pc.binary_join(pa.LargeListArray.from_arrays(offsets, lines.key), newline),
        newline,
    )
    hexed = np.concatenate(
        [_hex_digests(content.slice(i, _HASH_BATCH)) for i in range(0, len(content), _HASH_BATCH)]
    )
    offsets = pa.py_buffer(np.arange(0, 64 * len(by_code) + 1, 64, dtype=np.int64))
    hashes = pa.LargeStringArray.from_buffers(len(by_code), offsets, pa.py_buffer(hexed))
    place = np.empty_like(by_code)
    place[by_code] = np.arange(len(by_code))
    return pd.array(hashes.take(pa.array(place)), dtype=_STR)


# Orders hashed at a time (their content as Python bytes only for so many at once).
_HASH_BATCH = 65_536
_DIGEST = type(hashlib.sha256()).digest
# Each byte's two hex digits, as the two bytes of a little-endian uint16.
_HEX_PAIRS = np.frombuffer("".join(f"{b:02x}" for b in range(256)).encode(), dtype="<u2")


def _hex_digests(content: pa.Array) -> np.ndarray:
    """The SHA-256 of each value's UTF-8 bytes, as lowercase hex, all in one byte array."""
    values = pc.cast(content, pa.large_binary()).to_pylist()
    digests = np.frombuffer(b"".join(map(_DIGEST, map(hashlib.sha256, values))), dtype=np.uint8)
    return _HEX_PAIRS[digests].view(np.uint8)


def _customers(parsed: _Parsed, rows: np.ndarray) -> tuple[pd.DataFrame, pd.Series]:
    """One row per customer (sorted by id) with the latest non-empty contact fields (by payment,
    else update time); unreadable birthdays apart (first of each text, by source row)."""
    if not len(rows):
        return pd.DataFrame(columns=list(records.CUSTOMER_FIELDS)), pd.Series(dtype=object)
    take = pa.array(rows)
    text = parsed["birthday"].take(take)
    days, readable = _read_dates(text)
    bad = np.flatnonzero(_mask(pc.is_valid(text)) & ~readable)
    bad = bad[np.sort(np.unique(_codes(text.take(pa.array(bad)))[0], return_index=True)[1])]
    bad_birthday = pd.Series(text.take(pa.array(bad)).to_pylist(), index=rows[bad], dtype=object)
    when = np.where(np.isnat(parsed["paid_at"][rows]), parsed["updated_at"][rows], parsed["paid_at"][rows])
    customer_codes = _sorted_codes(parsed["customer_id"])[rows]
    # by customer id, then time (NaT first), then source order: the last row of a customer is its latest
    order = np.lexsort((when.view(np.int64), customer_codes))
    customer_codes = customer_codes[order]
    last = np.flatnonzero(np.r_[customer_codes[1:] != customer_codes[:-1], True])
    birthday = pa.array(np.where(readable, days, np.datetime64("NaT")), pa.date32(), from_pandas=True)
    fields = {
        "name": (parsed["customer_name"], rows[order]),
        "phone": (parsed["phone"], rows[order]),
        "email": (parsed["email"], rows[order]),
        "birthday": (birthday, order),
    }
    out = {"customer_id": pd.array(parsed["customer_id"].take(pa.array(rows[order[last]])), dtype=_STR)}
    for name, (values, positions) in fields.items():
        out[name] = pd.Series(_latest_values(values, positions, customer_codes, last), dtype=object)
    return pd.DataFrame(out, columns=list(records.CUSTOMER_FIELDS)), bad_birthday


def _latest_values(
    values: pa.Array, positions: np.ndarray, group: np.ndarray, last: np.ndarray
) -> np.ndarray:
    """Per group (``values`` at ``positions``, sorted by group; ``last``: each group's last row),
    its last non-missing value (None when it has none), as Python objects."""
    if not values.null_count:  # every row has one: each group's last row
        return np.array(values.take(pa.array(positions[last])).to_pylist(), dtype=object)
    present = np.flatnonzero(_mask(pc.is_valid(values))[positions])
    out = np.full(len(last), None, dtype=object)
    if len(present):
        final = present[np.r_[group[present][1:] != group[present][:-1], True]]
        slot = np.searchsorted(group[last], group[final])
        out[slot] = values.take(pa.array(positions[final])).to_pylist()
    return out


# ------------------------------------------------------------------------------- quarantine


def _raw_json(frame: pd.DataFrame) -> list[str]:
    """Each row as JSON, values as the source gave them (as text), for the quarantine table."""
    columns = [c for c in frame.columns if not c.startswith("_")]
    out = []
    for row in frame[columns].itertuples(index=False, name=None):
        values = {col: (None if _is_missing(v) else str(v)) for col, v in zip(columns, row, strict=True)}
        text = json.dumps(values, ensure_ascii=False, sort_keys=True)
        out.append(text.encode("utf-8", "backslashreplace").decode("utf-8"))
    return out


def _quarantine_frame(
    frame: pd.DataFrame, rows: np.ndarray, reason: object, detail: list[str], order_id: list[str | None]
) -> pd.DataFrame:
    """Quarantine rows for the source rows at ``rows``: reason, detail (phone numbers and e-mail
    addresses masked), order id, reference, raw row."""
    source = frame.iloc[rows]
    return pd.DataFrame(
        {
            "reason": reason,
            "detail": [mask_text(d) for d in detail],
            "order_id": np.array(order_id, dtype=object),
            "source_ref": source[records.SOURCE_REF_COLUMN].astype(str).to_numpy(),
            "raw": _raw_json(source),
        },
        columns=list(QUARANTINE_FIELDS),
    )


def _quarantine_rows(
    frame: pd.DataFrame,
    order_ids: pa.Array,
    reason: np.ndarray,
    detail: np.ndarray,
    bad_birthday: pd.Series,
    policy: PlausibilitySettings,
) -> pd.DataFrame:
    """The quarantined rows, then one row per unreadable birthday (whose order was loaded)."""

    def order_id(rows: np.ndarray) -> list[str | None]:
        """The order ids, kept only when they are one (not 300 characters, no NUL)."""
        ids = order_ids.take(pa.array(rows, type=pa.int64()))
        return [
            None if bad else value
            for value, bad in zip(ids.to_pylist(), _bad_ids(ids, policy.max_id_length), strict=True)
        ]

    quarantined = np.flatnonzero(pd.notna(reason))
    quarantine = _quarantine_frame(
        frame, quarantined, reason[quarantined], list(detail[quarantined]), order_id(quarantined)
    )
    if len(bad_birthday):
        rows = bad_birthday.index.to_numpy()
        birthdays = _quarantine_frame(
            frame,
            rows,
            "invalid_birthday",
            ["birthday is not a date (the order was loaded): " + _quote(v) for v in bad_birthday],
            order_id(rows),
        )
        quarantine = pd.concat([quarantine, birthdays], ignore_index=True)
    return quarantine.reset_index(drop=True)
