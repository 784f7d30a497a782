"""Validation of raw order rows: the one place that decides what is a good order.

Every source hands over canonical rows with raw values (:mod:`huitouke.records`). Here they
are parsed (amounts to cents, times to UTC, statuses to the canonical vocabulary), checked, and
split into orders, order lines, customers and quarantine rows. A bad row never stops the run: it
goes to quarantine with its reason and the raw row. An order is loaded whole or not at all: when
one of its rows is bad, all its rows are quarantined.

Quarantine reasons (one per row, the first that applies):

==========================  ======================================================================
``missing_order_id``        no order id
``missing_customer``        no customer id
``invalid_amount``          amount is not a number
``negative_amount``         amount below zero
``unknown_status``          status not in the vocabulary (records.STATUS_SYNONYMS)
``unparseable_time``        paid_at or updated_at cannot be read as a time
``missing_paid_at``         a paid, shipped, completed or refunded order without a payment time
``invalid_line``            a line amount or quantity that is not a number, or is negative
``bad_sibling_row``         another row of the same order was bad, so the order was not loaded
``inconsistent_order_rows`` rows of one order disagree on customer, payment time or amount
``invalid_birthday``        the birthday could not be read; the order itself is loaded
==========================  ======================================================================

The store adds two reasons of its own (:mod:`huitouke.intake.load`): ``conflicting_order`` and
``status_regression``.

:func:`validate` goes in steps: :func:`parse_rows` (values parsed next to the text they came
from), :func:`_row_checks` (each row's first failing reason), whole orders (siblings of a bad row,
several versions of one order), :func:`_orders_and_lines` and :func:`_customers` from the good
rows, and :func:`_quarantine_rows` from the others.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import date
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from huitouke import records

_OFFSET = re.compile(r"(?:Z|[+-]\d{2}:?\d{2})$")
_CJK_DATE = re.compile(r"(?<=\d)[年月](?=\d)")
_MONEY_NOISE = re.compile(r"[¥￥,，\s]|CNY|RMB|元")
_EXCEL_WRAPPERS = re.compile(r'^(=?"|\')|"$')

QUARANTINE_FIELDS = ("reason", "detail", "order_id", "source_ref", "raw")


@dataclass
class ValidatedBatch:
    """What validation made of one read: loadable frames and quarantine rows."""

    orders: pd.DataFrame
    lines: pd.DataFrame
    customers: pd.DataFrame
    quarantine: pd.DataFrame
    rows_read: int


def _text(series: pd.Series) -> pd.Series:
    """Strings stripped of whitespace; empty strings and NaN become None (object dtype)."""
    text = series.astype("string").str.strip()
    keep = text.fillna("").ne("")
    return text.astype(object).where(keep, None)


def parse_money_cents(series: pd.Series) -> pd.Series:
    """Amounts such as ``103.5``, ``"¥1,299.00"`` or ``"88 元"`` to integer cents (float NaN when unreadable)."""
    if pd.api.types.is_numeric_dtype(series.dtype):
        values = pd.to_numeric(series, errors="coerce").astype("float64")
    else:
        cleaned = _text(series).astype("string").str.replace(_MONEY_NOISE, "", regex=True)
        values = pd.to_numeric(cleaned.astype(object).where(cleaned.notna(), None), errors="coerce").astype(
            "float64"
        )
    values = values.where(np.isfinite(values))
    return (values * 100).round()


def parse_times_utc(series: pd.Series, tz: ZoneInfo) -> pd.Series:
    """Times to naive UTC. Times without an offset are shop-local; NaT where unreadable."""
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        return series.dt.tz_convert("UTC").dt.tz_localize(None)
    if pd.api.types.is_datetime64_dtype(series.dtype):
        local = series.dt.tz_localize(tz, ambiguous="NaT", nonexistent="shift_forward")
        return local.dt.tz_convert("UTC").dt.tz_localize(None)
    if series.map(lambda v: hasattr(v, "isoformat")).any():  # datetimes from a database driver
        series = series.map(lambda v: v.isoformat(sep=" ") if hasattr(v, "isoformat") else v)
    cleaned = _text(series).astype("string").str.replace(_CJK_DATE, "-", regex=True).str.replace("日", "")
    text = cleaned.astype(object).where(cleaned.notna(), None)
    result = pd.Series(pd.NaT, index=series.index, dtype="datetime64[ns]")
    present = text.notna()
    if not present.any():
        return result
    has_offset = present & text.astype("string").str.contains(_OFFSET).fillna(False).astype(bool)
    naive = present & ~has_offset
    if has_offset.any():
        parsed = _to_datetime(text[has_offset], utc=True)
        result.loc[has_offset] = parsed.dt.tz_localize(None).astype("datetime64[ns]")
    if naive.any():
        parsed = _to_datetime(text[naive], utc=False)
        local = parsed.dt.tz_localize(tz, ambiguous="NaT", nonexistent="shift_forward")
        result.loc[naive] = local.dt.tz_convert("UTC").dt.tz_localize(None).astype("datetime64[ns]")
    return result


def _to_datetime(text: pd.Series, utc: bool) -> pd.Series:
    """ISO 8601 fast path, then a lenient per-value parse (e.g. ``2025/12/12 10:03``) for the rest."""
    parsed = pd.to_datetime(text, errors="coerce", format="ISO8601", utc=utc)
    retry = parsed.isna()
    if retry.any():
        parsed = parsed.astype(object)
        parsed.loc[retry] = pd.to_datetime(text[retry], errors="coerce", format="mixed", utc=utc)
        parsed = pd.to_datetime(parsed, utc=utc)
    return parsed.astype("datetime64[ns, UTC]" if utc else "datetime64[ns]")


def _raw_json(frame: pd.DataFrame) -> list[str]:
    """Each row as JSON, values as the source gave them (as text), for the quarantine table."""
    columns = [c for c in frame.columns if not c.startswith("_")]
    out = []
    for row in frame[columns].itertuples(index=False, name=None):
        values = {
            col: (None if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NaT else str(v))
            for col, v in zip(columns, row, strict=True)
        }
        out.append(json.dumps(values, ensure_ascii=False, sort_keys=True))
    return out


def _first_reason(
    checks: list[tuple[str, pd.Series, pd.Series]], index: pd.Index
) -> tuple[pd.Series, pd.Series]:
    """For each row, the first failing check's reason and detail (None when all pass).

    A check's message is a fixed string or a function of the failing rows' mask, so details are
    only written for rows that fail.
    """
    reason = pd.Series(None, index=index, dtype="object")
    detail = pd.Series(None, index=index, dtype="object")
    for name, failed, message in checks:
        take = failed & reason.isna()
        if take.any():
            reason[take] = name
            detail[take] = message(take) if callable(message) else message
    return reason, detail


def _describe(prefix: str, values: pd.Series) -> Any:
    """A message function for :func:`_first_reason`: the prefix and the offending raw value."""
    return lambda mask: prefix + values[mask].map(lambda v: repr(v) if v is not None else "empty")


def validate(raw: pd.DataFrame, tz: ZoneInfo, business_date: date) -> ValidatedBatch:
    """Parse and check one read of canonical rows. ``business_date`` is only used for messages."""
    del business_date
    frame = _with_every_column(raw)
    parsed = parse_rows(frame, tz)
    order_id = parsed["order_id"]
    reason, detail = _first_reason(_row_checks(parsed), frame.index)
    # An order is loaded whole or not at all.
    bad_orders = set(order_id[reason.notna() & order_id.notna()])
    _set_reason(
        reason,
        detail,
        reason.isna() & order_id.isin(bad_orders),
        "bad_sibling_row",
        "another row of this order was quarantined",
    )
    good = reason.isna()
    # Several versions of one order in one read (e.g. paid, then refunded): the most advanced wins,
    # as long as they agree on what may not change.
    rows = _keep_latest_version(_order_rows(frame, parsed)[good])
    inconsistent = _inconsistent_orders(rows)
    if inconsistent:
        _set_reason(
            reason,
            detail,
            order_id.isin(inconsistent) & good,
            "inconsistent_order_rows",
            "rows of this order disagree on customer, paid_at or amount",
        )
        rows = rows[~rows["order_id"].isin(inconsistent)]

    orders, lines = _orders_and_lines(rows, tz)
    customers, bad_birthday = _customers(rows)
    return ValidatedBatch(
        orders=orders,
        lines=lines,
        customers=customers,
        quarantine=_quarantine_rows(frame, order_id, reason, detail, bad_birthday),
        rows_read=len(frame),
    )


def _with_every_column(raw: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``raw`` with every canonical column (None where the source has none) and a
    source reference per row ("row 1", ...) when the source gave none."""
    frame = raw.reset_index(drop=True).copy()
    for column in records.ALL_COLUMNS:
        if column not in frame.columns:
            frame[column] = None
    if records.SOURCE_REF_COLUMN not in frame.columns:
        frame[records.SOURCE_REF_COLUMN] = [f"row {i + 1}" for i in range(len(frame))]
    return frame


def parse_rows(frame: pd.DataFrame, tz: ZoneInfo) -> pd.DataFrame:
    """The values the checks look at, parsed (cents, naive UTC times, canonical statuses), next to
    the text they were read from (``*_text``, ``status_raw``: what a quarantine detail quotes)."""
    amount = frame["amount"]
    status_raw = _text(frame["status"])
    quantity_text = _text(frame["quantity"].astype("object"))
    return pd.DataFrame(
        {
            "order_id": _text(
                _text(frame["order_id"]).astype("string").str.replace(_EXCEL_WRAPPERS, "", regex=True)
            ),
            "customer_id": _text(frame["customer_id"]),
            "amount_text": amount if pd.api.types.is_numeric_dtype(amount) else _text(amount),
            "amount_cents": parse_money_cents(amount),
            "status_raw": status_raw,
            "status": status_raw.map(records.canonical_status),
            "paid_text": _text(frame["paid_at"].astype("object")),
            "paid_at": parse_times_utc(frame["paid_at"], tz),
            "updated_text": _text(frame["updated_at"].astype("object")),
            "updated_at": parse_times_utc(frame["updated_at"], tz),
            "has_line": frame[["sku", "product_name", "category", "line_amount"]].notna().any(axis=1),
            "line_cents": parse_money_cents(frame["line_amount"]),
            "line_amount_text": _text(frame["line_amount"].astype("object")),
            "quantity": pd.to_numeric(quantity_text, errors="coerce"),
            "quantity_text": quantity_text,
        }
    )


def _row_checks(parsed: pd.DataFrame) -> list[tuple[str, pd.Series, Any]]:
    """The quarantine reasons a single row can have, in the order they are tried (module doc)."""
    p = parsed
    status, quantity, line_cents = p["status"], p["quantity"], p["line_cents"]
    bad_quantity = p["quantity_text"].notna() & (quantity.isna() | (quantity < 0) | (quantity % 1 != 0))
    bad_line_amount = p["line_amount_text"].notna() & (line_cents.isna() | (line_cents < 0))
    unpaid = (status == records.PENDING) | (status == records.CANCELLED)
    return [
        ("missing_order_id", p["order_id"].isna(), "no order id"),
        ("missing_customer", p["customer_id"].isna(), "no customer id"),
        ("invalid_amount", p["amount_cents"].isna(), _describe("amount is not a number: ", p["amount_text"])),
        ("negative_amount", p["amount_cents"] < 0, _describe("amount is negative: ", p["amount_text"])),
        ("unknown_status", status.isna(), _describe("unknown status: ", p["status_raw"])),
        (
            "unparseable_time",
            p["paid_text"].notna() & p["paid_at"].isna(),
            _describe("paid_at is not a time: ", p["paid_text"]),
        ),
        (
            "unparseable_time",
            p["updated_text"].notna() & p["updated_at"].isna(),
            _describe("updated_at is not a time: ", p["updated_text"]),
        ),
        ("missing_paid_at", p["paid_text"].isna() & status.notna() & ~unpaid, "a paid order needs paid_at"),
        (
            "invalid_line",
            bad_line_amount,
            _describe("line amount is not a non-negative number: ", p["line_amount_text"]),
        ),
        (
            "invalid_line",
            bad_quantity,
            _describe("quantity is not a non-negative whole number: ", p["quantity_text"]),
        ),
    ]


def _set_reason(reason: pd.Series, detail: pd.Series, mask: pd.Series, name: str, message: str) -> None:
    """Quarantine the rows of ``mask`` for ``name`` (in place)."""
    reason[mask] = name
    detail[mask] = message


def _order_rows(frame: pd.DataFrame, parsed: pd.DataFrame) -> pd.DataFrame:
    """One row per source row with what orders, lines and customers are made of."""
    return pd.DataFrame(
        {
            "order_id": parsed["order_id"],
            "customer_id": parsed["customer_id"],
            "paid_at": parsed["paid_at"],
            "status": parsed["status"],
            "rank": parsed["status"].map(records.STATUS_RANK),
            "amount_cents": parsed["amount_cents"],
            "updated_at": parsed["updated_at"],
            "acquisition_source": _text(frame["acquisition_source"]).map(_acquisition_source),
            "coupon_code": _text(frame["coupon_code"]),
            "has_line": parsed["has_line"],
            "sku": _text(frame["sku"]),
            "product_name": _text(frame["product_name"]),
            "category": _text(frame["category"]).fillna(records.UNKNOWN_CATEGORY),
            "quantity": parsed["quantity"],
            "line_cents": parsed["line_cents"],
            "name": _text(frame["customer_name"]),
            "phone": _text(frame["phone"]),
            "email": _text(frame["email"]),
            "birthday_text": _text(frame["birthday"].astype("object")),
        }
    )


def _quarantine_frame(rows: pd.DataFrame, reason: Any, detail: Any, order_id: pd.Series) -> pd.DataFrame:
    """Quarantine rows for the source rows ``rows``: reason, detail, order id, reference, raw row."""
    return pd.DataFrame(
        {
            "reason": reason,
            "detail": detail,
            "order_id": order_id,
            "source_ref": rows[records.SOURCE_REF_COLUMN].astype(str),
            "raw": _raw_json(rows),
        },
        columns=list(QUARANTINE_FIELDS),
    )


def _quarantine_rows(
    frame: pd.DataFrame, order_id: pd.Series, reason: pd.Series, detail: pd.Series, bad_birthday: pd.Series
) -> pd.DataFrame:
    """The quarantined rows, then one row per unreadable birthday (whose order was loaded)."""
    quarantined = reason.notna()
    quarantine = _quarantine_frame(
        frame[quarantined], reason[quarantined], detail[quarantined], order_id[quarantined]
    )
    if len(bad_birthday):
        birthdays = _quarantine_frame(
            frame.loc[bad_birthday.index],
            "invalid_birthday",
            "birthday is not a date (the order was loaded): " + bad_birthday.map(repr),
            order_id[bad_birthday.index],
        )
        quarantine = pd.concat([quarantine, birthdays], ignore_index=True)
    return quarantine.reset_index(drop=True)


def _acquisition_source(value: str | None) -> str:
    if value is None:
        return records.ORGANIC
    return records.ACQUISITION_SYNONYMS.get(
        value.lower(), records.ACQUISITION_SYNONYMS.get(value, value.lower())
    )


def _keep_latest_version(rows: pd.DataFrame) -> pd.DataFrame:
    """Per order, keep the rows of its most advanced status (then latest update)."""
    if rows.empty:
        return rows
    key = rows[["order_id", "rank", "updated_at", "status"]].copy()
    key["updated_at"] = key["updated_at"].fillna(pd.Timestamp.min)
    best = key.sort_values(["order_id", "rank", "updated_at"]).groupby("order_id", sort=False).tail(1)
    best = best.set_index("order_id")
    keep = (rows["status"].to_numpy() == best.loc[rows["order_id"], "status"].to_numpy()) & (
        key["updated_at"].to_numpy() == best.loc[rows["order_id"], "updated_at"].to_numpy()
    )
    return rows[keep]


def _inconsistent_orders(rows: pd.DataFrame) -> set[str]:
    """Orders whose rows disagree on what an order may not change (records.FIXED_ORDER_FIELDS)."""
    if rows.empty:
        return set()
    fields = rows[["order_id", *records.FIXED_ORDER_FIELDS]].astype(str)
    counts = fields.drop_duplicates().groupby("order_id").size()
    return set(counts.index[counts > 1])


def _join_sorted_groups(keys: np.ndarray, texts: np.ndarray) -> dict[str, str]:
    """``{key: texts joined by newlines}`` for rows already sorted by key (one pass, no groupby)."""
    out: dict[str, str] = {}
    start = 0
    for i in range(1, len(keys) + 1):
        if i == len(keys) or keys[i] != keys[start]:
            out[keys[start]] = "\n".join(texts[start:i])
            start = i
    return out


def _key_text(series: pd.Series) -> pd.Series:
    """Values as text for hashing, missing values as "" (pandas' str casts would give NaN)."""
    return (
        series.astype(object)
        .map(lambda v: "" if v is None or v is pd.NA or v != v else str(v))
        .astype(object)
    )


def _orders_and_lines(rows: pd.DataFrame, tz: ZoneInfo) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The orders (one per order id, with its content hash) and their numbered lines."""
    if rows.empty:
        return pd.DataFrame(columns=list(records.ORDER_FIELDS)), pd.DataFrame(
            columns=list(records.LINE_FIELDS)
        )
    line_rows = _numbered_lines(rows)
    lines = line_rows.assign(amount_cents=line_rows["line_cents"])[list(records.LINE_FIELDS)].reset_index(
        drop=True
    )
    lines_by_order = pd.Series(
        _join_sorted_groups(line_rows["order_id"].to_numpy(), line_rows["line_key"].to_numpy())
    )
    first = rows.drop_duplicates("order_id").set_index("order_id")
    paid_local = first["paid_at"].dt.tz_localize("UTC").dt.tz_convert(tz)
    # From arrays, not first.assign(...): pandas then infers the text columns' dtypes as it always has.
    orders = pd.DataFrame(
        {
            "order_id": first.index,
            "customer_id": first["customer_id"].to_numpy(),
            "paid_at": first["paid_at"].to_numpy(),
            "business_date": paid_local.map(lambda t: None if pd.isna(t) else t.date()).to_numpy(),
            "status": first["status"].to_numpy(),
            "amount_cents": first["amount_cents"].astype("int64").to_numpy(),
            "acquisition_source": first["acquisition_source"].to_numpy(),
            "coupon_code": first["coupon_code"].to_numpy(),
            "source_updated_at": first["updated_at"].to_numpy(),
            "content_hash": _content_hashes(first, lines_by_order.reindex(first.index).fillna("")),
        },
        columns=list(records.ORDER_FIELDS),
    )
    return orders, lines


# The fields of a line's key, which orders the lines of an order and enters its content hash.
_LINE_KEY = ("sku", "product_name", "category", "quantity", "line_cents")


def _numbered_lines(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows that carry a line, sorted by order and line content, with their ``line_key`` and
    ``line_no`` (1, 2, ... within the order: the same lines get the same numbers on every read)."""
    line_rows = rows[rows["has_line"]].copy()
    line_rows["quantity"] = line_rows["quantity"].astype("Int64")
    line_rows["line_cents"] = line_rows["line_cents"].astype("Int64")
    key = _key_text(line_rows[_LINE_KEY[0]])
    for column in _LINE_KEY[1:]:
        key = key + "|" + _key_text(line_rows[column])
    line_rows["line_key"] = key
    line_rows = line_rows.sort_values(["order_id", "line_key"], kind="stable")
    line_rows["line_no"] = (line_rows.groupby("order_id").cumcount() + 1).astype(int)
    return line_rows


def _content_hashes(first: pd.DataFrame, lines: pd.Series) -> list[str]:
    """sha256 of what an order may never change (customer, payment time, amount and ``lines``, its
    line keys), one per row of ``first`` (one row per order)."""
    content = (
        first["customer_id"]
        + "\n"
        + first["paid_at"].map(lambda t: "" if pd.isna(t) else t.isoformat())
        + "\n"
        + first["amount_cents"].astype("int64").astype(str)
        + "\n"
        + lines
    )
    return [hashlib.sha256(c.encode()).hexdigest() for c in content]


def _customers(rows: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    """One row per customer with the latest non-empty contact fields; unreadable birthdays apart."""
    if rows.empty:
        return pd.DataFrame(columns=list(records.CUSTOMER_FIELDS)), pd.Series(dtype=object)
    birthday = pd.to_datetime(rows["birthday_text"], errors="coerce", format="mixed")
    bad = rows["birthday_text"].notna() & birthday.isna()
    bad_birthday = rows.loc[bad, "birthday_text"].drop_duplicates()
    data = rows.assign(birthday=birthday.dt.date.where(birthday.notna(), None))
    data = data[list(records.CUSTOMER_FIELDS)].assign(_when=rows["paid_at"].fillna(rows["updated_at"]))
    data = data.sort_values("_when", kind="stable", na_position="first")
    customers = data.groupby("customer_id", sort=True)[list(records.CONTACT_FIELDS)].last()
    customers = customers.astype(object).where(customers.notna(), None).reset_index()
    return customers[list(records.CUSTOMER_FIELDS)], bad_birthday
