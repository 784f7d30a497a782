"""One CSV export read into an Arrow table of text cells, with the line each row starts on.

The hot path is columnar: the bytes are checked and, when needed, transcoded to UTF-8 once,
pyarrow's multi-threaded CSV parser reads every cell as text (no type inference: an order id
stays ``"3021498712345678"``, an amount ``"¥1,299.00"``), and the line numbers come from one numpy
pass over the bytes (newlines outside quoted cells), so a quarantine row can still say
``orders.csv:17`` for a row whose cells span lines.

What the fast path cannot vouch for goes to the exact path, Python's csv module over the text,
which gives the same table: a file whose quotes do not pair up the way the parser saw them
(a stray ``27" monitor`` left open over several lines). Nothing a file holds raises anything but a
one-line :class:`huitouke.errors.UserInputError` naming the file (and the line where there is one):
undecodable bytes, a folder given as a file; cells of any length and NUL bytes are read as they are.
Rows with more or fewer cells than the header are cut or padded to fit, with a warning naming
their lines, so validation judges their values; blank rows (every cell empty or spaces) are skipped.
"""

from __future__ import annotations

import codecs
import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from huitouke.errors import UserInputError
from huitouke.pii import get_logger

log = get_logger(__name__)

# Tried in order when no encoding is configured: Taobao exports are UTF-8 (with BOM) or GBK.
TRIED_ENCODINGS: tuple[str, ...] = ("utf-8", "gb18030")
_UTF8_NAMES = frozenset({"utf-8", "utf-8-sig"})
_BOM = codecs.BOM_UTF8
_BLOCK_SIZE = 16 << 20  # bytes per parser block; a row longer than a block is retried in one block
_NEWLINE, _QUOTE, _CR = 10, 34, 13


@dataclass(frozen=True)
class CsvTable:
    """Every cell as text (null where empty), the header's names, and each row's first line."""

    table: pa.Table
    lines: np.ndarray
    encoding: str


def check_encoding(encoding: str | None, where: str) -> str | None:
    """The codec's canonical name, or a UserInputError naming the encoding and ``where``."""
    if encoding is None:
        return None
    try:
        return codecs.lookup(encoding).name
    except (LookupError, TypeError, ValueError):
        raise UserInputError(
            f"{where}: unknown encoding {encoding!r} (for example utf-8, gb18030, utf-16)"
        ) from None


def read_csv_table(path: Path, ref: str, encoding: str | None = None, where: str = "") -> CsvTable | None:
    """The export at ``path`` as text cells, or None when it has no header row (an empty file).

    ``ref`` names the file in messages ("orders.csv"); ``where`` the setting that gave ``encoding``.
    """
    raw = read_bytes(path)
    if raw.startswith((b"PK\x03\x04", b"\xd0\xcf\x11\xe0")):
        raise UserInputError(f"{ref}: an Excel workbook, not a CSV file; save it as CSV (UTF-8) first")
    data, used = _as_utf8(raw, ref, encoding, where)
    if not data or data.isspace():
        return None
    delimiter = _delimiter(data)
    fast = None
    if data.count(b"\r") == data.count(b"\r\n"):  # else lone CRs end lines: the exact path
        lines, multiline = _record_lines(data)
        fast = _parse_fast(data, delimiter, multiline, lines)
    if fast is None:
        log.info("%s: quotes that do not pair up, or lone CR line ends; read with the exact parser", ref)
        table, row_lines, ragged = _parse_exact(data, delimiter, ref)
    else:
        table, row_lines, ragged = fast
    if ragged:
        log.warning(
            "%s: %d row(s) do not have %d cells like the header (lines %s); padded or cut to fit",
            ref,
            len(ragged),
            table.num_columns,
            ", ".join(map(str, list(ragged)[:10])) + (" ..." if len(ragged) > 10 else ""),
        )
    keep = _not_blank(table)
    if keep is not None:
        keep = np.asarray(keep) | np.isin(row_lines, [line for line, content in ragged.items() if content])
        table, row_lines = table.filter(keep), row_lines[keep]
    return CsvTable(table=table, lines=row_lines, encoding=used)


def read_bytes(path: Path) -> bytes:
    """The file's bytes; a folder or an unreadable file is the user's mistake, in one line."""
    try:
        return path.read_bytes()
    except IsADirectoryError:
        raise UserInputError(f"{path}: is a folder, not an order export file") from None
    except PermissionError:
        raise UserInputError(f"{path}: no permission to read the file") from None


# -- encoding --------------------------------------------------------------------------------


def _as_utf8(data: bytes, ref: str, encoding: str | None, where: str) -> tuple[bytes, str]:
    """The bytes as UTF-8 without BOM, and the encoding they were read with."""
    if encoding is not None:
        name = check_encoding(encoding, where) or encoding
        if name in _UTF8_NAMES:
            if _is_utf8(data):
                return _without_bom(data), encoding
            raise _decode_error(
                data, ref, [encoding], f"set {where or 'the encoding'} to the file's encoding"
            )
        try:
            return data.decode(name).encode("utf-8").removeprefix(_BOM), encoding
        except UnicodeDecodeError:
            raise _decode_error(
                data, ref, [encoding], f"set {where or 'the encoding'} to the file's encoding"
            ) from None
    if _is_utf8(data):
        return _without_bom(data), "utf-8-sig" if data.startswith(_BOM) else "utf-8"
    try:
        return data.decode("gb18030").encode("utf-8"), "gb18030"
    except UnicodeDecodeError:
        hint = f"set {where or 'the encoding'} to the file's encoding"
        raise _decode_error(data, ref, list(TRIED_ENCODINGS), hint) from None


def _without_bom(data: bytes) -> bytes:
    return data[len(_BOM) :] if data.startswith(_BOM) else data


def _is_utf8(data: bytes) -> bool:
    """Valid UTF-8, checked by Arrow's vectorised validation (no Python string is made)."""
    offsets = pa.array([0, len(data)], type=pa.int64())
    binary = pa.LargeBinaryArray.from_buffers(
        pa.large_binary(), 1, [None, offsets.buffers()[1], pa.py_buffer(data)]
    )
    try:
        binary.cast(pa.large_string())
    except pa.ArrowInvalid:
        return False
    return True


def _decode_error(data: bytes, ref: str, encodings: list[str], hint: str) -> UserInputError:
    """Where the first encoding tried stops reading: line and byte value."""
    try:
        data.decode(encodings[0])
        position = len(data)
    except (UnicodeDecodeError, LookupError) as exc:
        position = getattr(exc, "start", len(data))
    line = data.count(b"\n", 0, position) + 1
    byte = f" (byte 0x{data[position]:02x})" if position < len(data) else ""
    return UserInputError(f"{ref}:{line}: not valid {' or '.join(encodings)}{byte}; {hint}")


# -- structure -------------------------------------------------------------------------------


def _delimiter(data: bytes) -> str:
    """Tab when the first line has more tabs than commas (Excel's "Unicode text"), else comma."""
    first = data[: data.find(b"\n")] if b"\n" in data else data
    return "\t" if first.count(b"\t") > first.count(b",") else ","


def _record_lines(data: bytes) -> tuple[np.ndarray, bool]:
    """The line each non-empty record starts on (header first), and whether a quoted cell spans
    lines. A record ends at a newline outside quotes (an even number of quotes before it)."""
    buf = np.frombuffer(data, dtype=np.uint8)
    newlines = np.flatnonzero(buf == _NEWLINE)
    ends, multiline = newlines, False
    if b'"' in data:
        quotes = np.flatnonzero(buf == _QUOTE)
        inside = (np.searchsorted(quotes, newlines) & 1).astype(bool)
        multiline = bool(inside.any())
        ends = newlines[~inside]
        del quotes, inside
    starts = np.concatenate(([0], ends + 1))
    stops = np.concatenate((ends, [len(data)]))
    length = stops - starts
    empty = length == 0
    one = np.flatnonzero(length == 1)
    empty[one] = buf[starts[one]] == _CR
    starts = starts[~empty]
    return np.searchsorted(newlines, starts) + 1, multiline


def _parse_options(delimiter: str, multiline: bool, handler: object = None) -> pacsv.ParseOptions:
    return pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=multiline, invalid_row_handler=handler)


def _convert_options(names: list[str]) -> pacsv.ConvertOptions:
    """Every column as text; only an empty cell is missing (not "NA", "null" or "nan")."""
    return pacsv.ConvertOptions(
        column_types=dict.fromkeys(names, pa.string()),
        strings_can_be_null=True,
        quoted_strings_can_be_null=True,
        null_values=[""],
    )


def _header(data: bytes, delimiter: str) -> list[str]:
    """The header row's names, read by the csv module from the start of the file."""
    head = data[: 1 << 20].decode("utf-8", errors="replace")
    for record in csv.reader(io.StringIO(head, newline=""), delimiter=delimiter):
        if record:
            return record
    return []


def _parse_fast(
    data: bytes, delimiter: str, multiline: bool, lines: np.ndarray
) -> tuple[pa.Table, np.ndarray, dict[int, bool]] | None:
    """pyarrow's parser; None when its rows do not line up with the records found in the bytes."""
    names = _header(data, delimiter)
    ragged: list[tuple[int | None, str]] = []

    def collect(row: pacsv.InvalidRow) -> str:
        ragged.append((row.number, row.text))
        return "skip"

    try:
        table = _arrow_read(data, delimiter, multiline, names, collect, use_threads=True)
        if ragged and any(number is None for number, _ in ragged):
            ragged.clear()  # row numbers are only known to a single-threaded read
            table = _arrow_read(data, delimiter, multiline, names, collect, use_threads=False)
    except pa.ArrowInvalid as exc:
        log.info("pyarrow cannot parse the file (%s)", type(exc).__name__)
        return None
    data_lines = lines[1:]
    if table.num_rows + len(ragged) != len(data_lines):
        return None
    if not ragged:
        return table, data_lines, {}
    return _with_ragged_rows(table, data_lines, ragged, delimiter)


def _arrow_read(
    data: bytes, delimiter: str, multiline: bool, names: list[str], handler: object, use_threads: bool
) -> pa.Table:
    block_size = _BLOCK_SIZE
    while True:
        try:
            return pacsv.read_csv(
                pa.BufferReader(data),
                read_options=pacsv.ReadOptions(use_threads=use_threads, block_size=block_size),
                parse_options=_parse_options(delimiter, multiline, handler),
                convert_options=_convert_options(names),
            )
        except pa.ArrowInvalid as exc:
            if "straddl" not in str(exc) or block_size > len(data):
                raise
            block_size = min(len(data) + 1, 2**31 - 1)  # a row longer than a block: one block


def _with_ragged_rows(
    table: pa.Table, data_lines: np.ndarray, ragged: list[tuple[int | None, str]], delimiter: str
) -> tuple[pa.Table, np.ndarray, dict[int, bool]]:
    """The rows pyarrow skipped for their number of cells, cut or padded to fit, put back in place.

    ``row.number`` counts the non-empty records from the header (1), so data row i is number i + 2.
    """
    width = table.num_columns
    positions = np.array([number - 2 for number, _ in ragged], dtype=np.int64)
    cells: list[list[str | None]] = []
    content: list[bool] = []
    for _, text in ragged:
        record = next(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter), [])
        content.append(any(cell.strip() for cell in record))
        cells.append(_fit(record, width))
    extra = pa.table(
        [pa.array([row[i] for row in cells], type=pa.string()) for i in range(width)],
        names=table.column_names,
    )
    is_ragged = np.zeros(len(data_lines), dtype=bool)
    is_ragged[positions] = True
    lines = np.concatenate((data_lines[~is_ragged], data_lines[positions]))
    order = np.argsort(lines, kind="stable")
    ragged_lines = dict(zip(data_lines[positions].tolist(), content, strict=True))
    return pa.concat_tables([table, extra]).take(order), lines[order], ragged_lines


def _fit(record: list[str], width: int) -> list[str | None]:
    """A record cut or padded to ``width`` cells, empty cells as None."""
    return [cell if cell != "" else None for cell in (record + [""] * width)[:width]]


def _parse_exact(data: bytes, delimiter: str, ref: str) -> tuple[pa.Table, np.ndarray, dict[int, bool]]:
    """The csv module over the text: every record with the line it starts on (slow, exact)."""
    text = data.decode("utf-8")
    limit = csv.field_size_limit()
    csv.field_size_limit(2**31 - 1)  # a cell may be as long as the file
    try:
        records, lines, ragged = _exact_records(text, delimiter)
    except csv.Error as exc:
        raise UserInputError(f"{ref}: cannot read the CSV: {exc}") from None
    finally:
        csv.field_size_limit(limit)
    if not records:
        return pa.table({}), np.array([], dtype=np.int64), {}
    header, rows = records[0], records[1:]
    columns = [pa.array([row[i] for row in rows], type=pa.string()) for i in range(len(header))]
    table = pa.Table.from_arrays(columns, names=header) if header else pa.table({})
    return table, np.array(lines[1:], dtype=np.int64), ragged


def _exact_records(text: str, delimiter: str) -> tuple[list[list[str | None]], list[int], dict[int, bool]]:
    """The header, then every data record fitted to it; the line each starts on; the ragged ones'
    lines (with whether they hold anything)."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    records: list[list[str | None]] = []
    lines: list[int] = []
    ragged: dict[int, bool] = {}
    next_line = 1
    for record in reader:
        line, next_line = next_line, reader.line_num + 1
        if not record or (not records and not any(cell.strip() for cell in record)):
            continue  # an empty line
        if records and len(record) != len(records[0]):
            ragged[line] = any(cell.strip() for cell in record)
        records.append(_fit(record, len(records[0])) if records else list(record))
        lines.append(line)
    return records, lines, ragged


def _not_blank(table: pa.Table) -> pa.ChunkedArray | None:
    """Rows with at least one cell that is not empty or spaces; None when every row has one.

    Column by column, stopping as soon as no row is blank so far (usually after the first)."""
    if table.num_columns == 0 or table.num_rows == 0:
        return None
    blank = None
    for column in table.columns:
        empty = pc.or_kleene(pc.is_null(column), pc.equal(pc.utf8_trim_whitespace(column), ""))
        blank = empty if blank is None else pc.and_(blank, empty)
        if not pc.any(blank).as_py():
            return None
    return pc.invert(blank)
