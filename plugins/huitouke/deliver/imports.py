"""Files that come back from outside, and the one that goes out: opt-out lists exported from SMS
platforms (``huitouke optouts import``), call outcomes recorded by the shop's staff (``huitouke
calls import``), and the day's call list written for them.

Pure reading and writing: no store, no logging (these files hold names and phone numbers). A row
that cannot be read is a :class:`RowError` naming the file, line and column, never the number or
address itself (masked by :mod:`huitouke.pii`); a file that cannot be read at all raises
:class:`ImportFileError`. Formats and vocabularies: docs/delivery.md.
"""

from __future__ import annotations

import csv
import io
import os
import re
import tempfile
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd

from huitouke.deliver.replies import normalize_phone
from huitouke.intake.files import AUTO_ENCODINGS, parse_local_time
from huitouke.pii import mask_email, mask_phone, mask_text

DEFAULT_TZ = "Asia/Shanghai"
OPTOUT_COLUMNS: tuple[str, ...] = ("phone", "email", "channel", "opted_out_at", "source_line")
CALL_OUTCOME_COLUMNS: tuple[str, ...] = ("message_id", "outcome", "feedback", "called_at", "source_line")

# Header names (compared after NFKC, case folding, spaces to "_") -> field.
OPTOUT_HEADERS: dict[str, tuple[str, ...]] = {
    "phone": ("phone", "mobile", "手机号", "手机号码", "手机", "号码", "电话", "电话号码", "phone_number",
              "mobile_number", "msisdn", "number", "tel"),
    "email": ("email", "e-mail", "mail", "邮箱", "电子邮箱", "邮件", "邮件地址", "email_address"),
    "opted_out_at": ("opted_out_at", "time", "date", "datetime", "时间", "日期", "退订时间", "回复时间",
                     "创建时间", "created_at"),
    "channel": ("channel", "渠道", "通道"),
}  # fmt: skip
CALL_HEADERS: dict[str, tuple[str, ...]] = {
    "message_id": ("message_id", "call_id", "呼叫编号", "编号", "消息编号", "id"),
    "outcome": ("outcome", "result", "结果", "通话结果", "状态"),
    "feedback": ("feedback", "note", "notes", "comment", "备注", "反馈", "客户反馈"),
    "called_at": ("called_at", "time", "date", "call_time", "时间", "通话时间", "拨打时间"),
}

# The opt-out channels a file may name (else: sms for a phone number, email for an address).
CHANNELS: dict[str, str] = {
    "sms": "sms", "短信": "sms", "email": "email", "e-mail": "email", "邮件": "email", "call": "call",
    "phone": "call", "电话": "call", "all": "all", "全部": "all",
}  # fmt: skip

# The call outcomes, each with the words staff may write for it.
CALL_OUTCOMES: dict[str, tuple[str, ...]] = {
    "reached": ("reached", "answered", "connected", "已接通", "接通", "通了"),
    "not_reached": ("not_reached", "no_answer", "busy", "未接通", "无人接听", "未接", "占线", "关机", "拒接"),
    "wrong_number": ("wrong_number", "invalid_number", "空号", "错号", "号码错误", "停机"),
    "refused": ("refused", "declined", "拒绝", "不需要"),
    "opted_out": ("opted_out", "do_not_call", "退订", "勿扰", "不再联系"),
}
_OUTCOME_WORDS = {word: outcome for outcome, words in CALL_OUTCOMES.items() for word in words}

# The call list's columns: (frame column, header staff see). The last three are left empty for
# staff to fill in; the filled file is what ``calls import`` reads back.
CALL_LIST_COLUMNS: tuple[tuple[str, str], ...] = (
    ("message_id", "call_id"),
    ("name", "客户"),
    ("phone", "手机号"),
    ("campaign", "活动"),
    ("body", "话术"),
    ("coupon_code", "优惠券码"),
    ("due_date", "截止日期"),
    ("outcome", "结果"),
    ("feedback", "反馈"),
    ("called_at", "通话时间"),
)
CALL_LIST_REQUIRED: tuple[str, ...] = ("message_id", "name", "phone", "campaign", "body")

_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_MAX_SHOWN = 40


class ImportFileError(ValueError):
    """A file that cannot be read at all: the message names the file (and line, where one)."""


@dataclass(frozen=True)
class RowError:
    """A row that cannot be read; ``field`` is the column as the file names it."""

    file: str
    line: int
    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.field}: {self.reason}"


@dataclass(frozen=True)
class _Table:
    """A CSV file's rows: ``columns`` maps field -> (position, the file's header text);
    ``rows`` are (line number, cells) for every non-blank row after the header."""

    file: str
    columns: dict[str, tuple[int, str]]
    rows: list[tuple[int, list[str]]]

    def cell(self, cells: list[str], field: str) -> str:
        where = self.columns.get(field)
        return cells[where[0]].strip() if where and where[0] < len(cells) else ""

    def header(self, field: str) -> str:
        return self.columns[field][1] if field in self.columns else field


def _decode(path: Path) -> str:
    """The file's text: UTF-8 (BOM or not), else GBK/GB18030, the encodings platforms export."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImportFileError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ImportFileError(f"{path}: is a folder, not a file") from None
    for encoding in AUTO_ENCODINGS:
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise ImportFileError(f"{path}: neither UTF-8 nor GBK text; save it as CSV (UTF-8)")


def _csv_rows(text: str) -> Iterator[tuple[int, list[str]]]:
    """(first line number, cells) of every non-blank CSV row; comma- or tab-separated."""
    first_line = text.split("\n", 1)[0]
    delimiter = "\t" if "\t" in first_line and "," not in first_line else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    line = 1
    for cells in reader:
        if any(cell.strip() for cell in cells):
            yield line, cells
        line = reader.line_num + 1


def _header_key(text: str) -> str:
    return "_".join(unicodedata.normalize("NFKC", text).strip().lstrip("\ufeff").casefold().split())


def _match_header(cells: list[str], aliases: dict[str, tuple[str, ...]]) -> dict[str, tuple[int, str]]:
    """field -> (position, header text) for the cells that name a field (the first one wins)."""
    field_of = {_header_key(alias): field for field, names in aliases.items() for alias in names}
    columns: dict[str, tuple[int, str]] = {}
    for position, cell in enumerate(cells):
        field = field_of.get(_header_key(cell))
        if field and field not in columns:
            columns[field] = (position, cell.strip())
    return columns


def _expected(aliases: dict[str, tuple[str, ...]], field: str) -> str:
    return "/".join(aliases[field][:4])


def _read_table(path: str | Path, aliases: dict[str, tuple[str, ...]]) -> _Table:
    """The file's header and the rows after it; a file whose first row names no field has no
    ``columns`` and keeps that row among its ``rows`` (it may be a bare list)."""
    path = Path(path)
    rows = list(_csv_rows(_decode(path)))
    if not rows:
        raise ImportFileError(f"{path}: empty (no rows)")
    columns = _match_header(rows[0][1], aliases)
    return _Table(str(path), columns, rows[1:] if columns else rows)


def _time(table: _Table, line: int, raw: str, field: str, tz: ZoneInfo) -> tuple[Any, RowError | None]:
    """A time cell (shop-local unless it has an offset) as UTC; NaT when empty."""
    if not raw:
        return pd.NaT, None
    parsed = parse_local_time(raw, tz)
    if parsed is None:
        shown = mask_text(raw)[:_MAX_SHOWN]
        reason = f"not a date/time: {shown!r}; expected e.g. 2025-12-11 10:02:00; imported without it"
        return pd.NaT, RowError(table.file, line, table.header(field), reason)
    return pd.Timestamp(parsed).tz_convert("UTC"), None


def _zone(tz: str | ZoneInfo) -> ZoneInfo:
    return tz if isinstance(tz, ZoneInfo) else ZoneInfo(tz)


def _email(raw: str) -> str | None:
    """``Mailto:Zhang@Example.com`` -> ``zhang@example.com``; None when not an address."""
    text = unicodedata.normalize("NFKC", raw).strip().removeprefix("mailto:").removeprefix("MAILTO:")
    return text.lower() if _EMAIL.fullmatch(text) else None


def _bare_list(table: _Table) -> _Table:
    """A headerless file: its first column is the number or address (other columns ignored)."""
    first = table.rows[0][1][0].strip() if table.rows[0][1] else ""
    if normalize_phone(first) is None and _email(first) is None:
        raise ImportFileError(
            f"{table.file}:{table.rows[0][0]}: no phone or e-mail column: expected a header naming "
            f"{_expected(OPTOUT_HEADERS, 'phone')} or {_expected(OPTOUT_HEADERS, 'email')}, "
            "or a bare list of numbers"
        )
    return _Table(table.file, {"address": (0, "column 1")}, table.rows)


def _channel(table: _Table, line: int, cells: list[str]) -> tuple[str | None, RowError | None]:
    """The row's channel: None when the file names none; ``all`` (with an error) when unknown."""
    raw = table.cell(cells, "channel")
    if not raw:
        return None, None
    channel = CHANNELS.get(_header_key(raw))
    if channel:
        return channel, None
    known = ", ".join(sorted(set(CHANNELS.values())))
    reason = f"unknown channel {mask_text(raw)[:_MAX_SHOWN]!r} (known: {known}); imported as all"
    return "all", RowError(table.file, line, table.header("channel"), reason)


def _optout_row(
    table: _Table, line: int, cells: list[str], tz: ZoneInfo
) -> tuple[list[dict], list[RowError]]:
    """The opt-outs one row gives (a phone number, an address, or both) and its errors."""
    bare = table.cell(cells, "address")
    phone_raw = bare if bare and "@" not in bare else table.cell(cells, "phone")
    email_raw = bare if "@" in bare else table.cell(cells, "email")
    where = table.header("phone" if "phone" in table.columns else next(iter(table.columns)))
    if not phone_raw and not email_raw:
        return [], [RowError(table.file, line, where, "empty: no phone number or e-mail address")]
    at, time_error = _time(table, line, table.cell(cells, "opted_out_at"), "opted_out_at", tz)
    channel, channel_error = _channel(table, line, cells)
    errors = [error for error in (time_error, channel_error) if error]
    records = []
    if phone_raw:
        phone = normalize_phone(phone_raw)
        if phone:
            records.append({"phone": phone, "email": None, "channel": channel or "sms"})
        else:
            reason = f"not a mobile number or +country number ({mask_phone(phone_raw)})"
            errors.append(RowError(table.file, line, table.header("phone") if not bare else where, reason))
    if email_raw:
        email = _email(email_raw)
        if email:
            records.append({"phone": None, "email": email, "channel": channel or "email"})
        else:
            reason = f"not an e-mail address ({mask_email(email_raw)})"
            errors.append(RowError(table.file, line, table.header("email") if not bare else where, reason))
    return [{**r, "opted_out_at": at, "source_line": line} for r in records], errors


def _frame(records: list[dict], columns: tuple[str, ...], times: tuple[str, ...]) -> pd.DataFrame:
    """Records as a frame: ``times`` as UTC timestamps, ``source_line`` (and ``message_id``) as
    int64, the rest as objects (None where empty)."""
    data: dict[str, pd.Series] = {}
    for column in columns:
        values = [record[column] for record in records]
        if column in times:
            data[column] = pd.to_datetime(pd.Series(values, dtype=object), utc=True)
        elif column in ("source_line", "message_id"):
            data[column] = pd.Series(values, dtype="int64")
        else:
            data[column] = pd.Series(values, dtype=object)
    return pd.DataFrame(data, columns=list(columns))


def read_optouts(path: str | Path, tz: str | ZoneInfo = DEFAULT_TZ) -> tuple[pd.DataFrame, list[RowError]]:
    """An opt-out list exported from an SMS platform (docs/delivery.md, "Imports"): one row per
    opt-out, ``phone`` (E.164) or ``email``, ``channel`` (sms, email, call, all),
    ``opted_out_at`` (UTC; NaT when the file has no time: the import's time is meant) and
    ``source_line``; and the rows that could not be read. Times without an offset are ``tz``.
    A row with an unreadable time or channel is still imported (an opt-out is never dropped for
    its details), without its time or as ``all``, and its error says so."""
    zone = _zone(tz)
    table = _read_table(path, OPTOUT_HEADERS)
    if not table.columns:
        table = _bare_list(table)
    elif "phone" not in table.columns and "email" not in table.columns:
        raise ImportFileError(
            f"{table.file}:1: no phone or e-mail column: expected a header naming "
            f"{_expected(OPTOUT_HEADERS, 'phone')} or {_expected(OPTOUT_HEADERS, 'email')}"
        )
    records: list[dict] = []
    errors: list[RowError] = []
    for line, cells in table.rows:
        got, problems = _optout_row(table, line, cells, zone)
        records += got
        errors += problems
    return _frame(records, OPTOUT_COLUMNS, ("opted_out_at",)), errors


def _message_id(raw: str) -> int | None:
    """``"123"`` (or Excel's ``"123.0"``) -> 123; None for anything else."""
    text = unicodedata.normalize("NFKC", raw).strip()
    if not re.fullmatch(r"[0-9]+(\.0*)?", text):
        return None
    value = int(text.split(".")[0])
    return value if value > 0 else None


def _outcome_error(table: _Table, line: int, raw: str) -> RowError:
    words = "; ".join(f"{outcome} ({'/'.join(words[-3:])})" for outcome, words in CALL_OUTCOMES.items())
    reason = f"unknown outcome {mask_text(raw)[:_MAX_SHOWN]!r}: expected one of {words}"
    return RowError(table.file, line, table.header("outcome"), reason)


def _call_row(
    table: _Table, line: int, cells: list[str], tz: ZoneInfo, seen: dict[int, int]
) -> tuple[dict | None, list[RowError]]:
    """One row's outcome (None for a row without one: not called yet) and its errors."""
    outcome_raw = table.cell(cells, "outcome")
    if not outcome_raw:
        return None, []
    id_raw = table.cell(cells, "message_id")
    message_id = _message_id(id_raw)
    if message_id is None:
        reason = "empty" if not id_raw else "not a call id"
        reason += ": expected the whole number in the call list's call_id column"
        return None, [RowError(table.file, line, table.header("message_id"), reason)]
    if message_id in seen:
        reason = f"call {message_id} already given on line {seen[message_id]}"
        return None, [RowError(table.file, line, table.header("message_id"), reason)]
    outcome = _OUTCOME_WORDS.get(_header_key(outcome_raw).replace("-", "_"))
    if outcome is None:
        return None, [_outcome_error(table, line, outcome_raw)]
    seen[message_id] = line
    called_at, time_error = _time(table, line, table.cell(cells, "called_at"), "called_at", tz)
    feedback = table.cell(cells, "feedback") or None
    record = {"message_id": message_id, "outcome": outcome, "feedback": feedback, "called_at": called_at}
    return {**record, "source_line": line}, [time_error] if time_error else []


def read_call_outcomes(
    path: str | Path, tz: str | ZoneInfo = DEFAULT_TZ
) -> tuple[pd.DataFrame, list[RowError]]:
    """Call outcomes recorded by staff (``huitouke calls import FILE``; the call list with its
    last columns filled in is such a file): ``message_id`` (the call list's ``call_id``),
    ``outcome`` (:data:`CALL_OUTCOMES`), ``feedback`` (free text, kept as written), ``called_at``
    (UTC, NaT when not given), ``source_line``; and the rows that could not be read. Rows without
    an outcome are skipped: not called yet."""
    zone = _zone(tz)
    table = _read_table(path, CALL_HEADERS)
    missing = [field for field in ("message_id", "outcome") if field not in table.columns]
    if missing:
        wanted = " and ".join(f"{field} ({_expected(CALL_HEADERS, field)})" for field in missing)
        raise ImportFileError(f"{table.file}:1: no {wanted} column in the header")
    records: list[dict] = []
    errors: list[RowError] = []
    seen: dict[int, int] = {}
    for line, cells in table.rows:
        record, problems = _call_row(table, line, cells, zone, seen)
        records += [record] if record else []
        errors += problems
    return _frame(records, CALL_OUTCOME_COLUMNS, ("called_at",)), errors


def _display_phone(value: Any) -> str:
    """``+8613812345678`` -> ``138 1234 5678``: dialable, and text to Excel (a bare 11-digit
    number would show as 1.38E+10). Other numbers as given."""
    phone = normalize_phone(str(value))
    if phone and phone.startswith("+86"):
        national = phone[3:]
        return f"{national[:3]} {national[3:7]} {national[7:]}"
    return str(value)


def _list_cell(column: str, value: Any) -> str:
    """One call-list cell as text. Text that a spreadsheet would run as a formula (``=``, ``+``,
    ``-``, ``@`` first) gets a leading apostrophe: names come from shop data."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return ""
    if column == "phone":
        return _display_phone(value)
    if column == "message_id":
        return str(int(value))
    if isinstance(value, datetime | pd.Timestamp):
        return value.date().isoformat() if column == "due_date" else value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    text = str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def write_call_list(frame: pd.DataFrame, path: str | Path) -> int:
    """Write the day's call list for the shop's staff; the number of calls written.

    ``frame`` has ``message_id`` (the outbox row: the file's ``call_id``), ``name``, ``phone``,
    ``campaign``, ``body`` (the script), and optionally ``coupon_code`` and ``due_date``; the
    file (:data:`CALL_LIST_COLUMNS`) is UTF-8 with a BOM so Excel shows Chinese, written whole or
    not at all (a temporary file renamed), readable by its owner only: it holds names and phone
    numbers, so it goes to the folder configured for it, never into a log."""
    missing = [column for column in CALL_LIST_REQUIRED if column not in frame.columns]
    if missing:
        raise ValueError(f"the call list needs column(s) {', '.join(missing)}")
    rows = [
        [_list_cell(column, record.get(column)) for column, _ in CALL_LIST_COLUMNS]
        for record in frame.to_dict("records")
    ]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8-sig", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow([header for _, header in CALL_LIST_COLUMNS])
            writer.writerows(rows)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return len(rows)
