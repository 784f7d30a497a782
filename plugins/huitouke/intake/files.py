"""Order source: a folder of exports (CSV or Parquet) that a shop drops files into.

Rows are read as the files hold them (CSV cells stay text, empty cells are missing); parsing
and validation happen later, in one place, so a garbage amount reaches validation unchanged and
gets quarantined with the file name and line number kept in ``_source_ref``.

:func:`read_export` reads one file, named literally (``orders[1].csv`` is that file, not a
pattern); :class:`FileOrderSource` picks a business day's files in a folder by pattern. CSV goes
through pyarrow's parser (:mod:`huitouke.intake.csv_reader`): columnar, every cell as text.
"""

from __future__ import annotations

from datetime import date, datetime, time
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from huitouke.errors import UserInputError
from huitouke.intake.csv_reader import check_encoding, read_csv_table
from huitouke.intake.freshness import StaleDay
from huitouke.intake.mappings import (
    CANONICAL_COLUMNS,
    SOURCE_REF_COLUMN,
    TEXT_DTYPE,
    apply_mapping,
    canonical_frame,
    mapped_text_frame,
    resolve_mapping,
)
from huitouke.pii import get_logger

log = get_logger(__name__)

__all__ = ["AUTO_ENCODINGS", "FileOrderSource", "MissingExport", "parse_local_time", "read_export"]

CSV_SUFFIXES = frozenset({".csv", ".txt"})
PARQUET_SUFFIXES = frozenset({".parquet"})
WHEN_MISSING = ("fail", "warn")
# Tried in order when no encoding is configured: Taobao exports are UTF-8 (with BOM) or GBK.
AUTO_ENCODINGS: tuple[str, ...] = ("utf-8-sig", "gb18030")


class MissingExport(StaleDay, UserInputError):
    """The business day's export is not in the folder (``intake.files.when_missing: fail``).

    A :class:`StaleDay`, so the daily run stops the day before writing anything and the retry
    finds a late export; a user's mistake in the CLI (one line, exit 2)."""


def read_export(
    path: Path,
    mapping: str | dict[str, str] = "canonical",
    encoding: str | None = None,
    ref: str | None = None,
    where: str = "analyze",
) -> pd.DataFrame:
    """Every row of one CSV or Parquet export, canonical columns, ``_source_ref`` "ref:line".

    ``path`` is taken literally. ``ref`` names the file in source references and messages
    (default: its name); ``where`` the setting or option that gave ``mapping`` and ``encoding``.
    """
    path = Path(path)
    ref = ref or path.name
    columns = resolve_mapping(mapping, f"{where}.mapping" if where else "mapping")
    at = f"{path} (mapping from {where}.mapping)"
    if path.suffix.lower() in PARQUET_SUFFIXES:
        raw = _read_parquet(path)
        df = apply_mapping(raw.reset_index(drop=True), columns, at)
        df[SOURCE_REF_COLUMN] = [f"{ref}:row {i + 1}" for i in range(len(df))]
        used = "parquet"
    else:
        read = read_csv_table(path, ref, encoding, f"{where}.encoding")
        if read is None:
            log.warning("Skipping %s: the file is empty (no header row)", ref)
            return canonical_frame()
        df = mapped_text_frame(read.table, columns, at)
        lines = pa.array(read.lines).cast(pa.string())
        df[SOURCE_REF_COLUMN] = pd.Series(
            pc.binary_join_element_wise(f"{ref}:", lines, ""),
            dtype=pd.StringDtype("pyarrow", na_value=float("nan")),
        )
        used = read.encoding
    log.info("Read %d rows from %s (%s)", len(df), ref, used)
    return canonical_frame([df])


def _read_parquet(path: Path) -> pd.DataFrame:
    """Values as stored: text columns as pandas' Arrow-backed ``str`` (no Python string per cell),
    the others as Python values (int, Decimal, datetime; via pandas a nullable int id would
    become a float)."""
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except IsADirectoryError:
        raise UserInputError(f"{path}: is a folder, not an order export file") from None
    except (pa.ArrowInvalid, OSError) as exc:
        raise UserInputError(f"{path}: not a readable Parquet file ({type(exc).__name__})") from None
    data = {i: _parquet_column(table.column(i)) for i in range(table.num_columns)}
    df = pd.DataFrame(data)
    df.columns = pd.Index(table.column_names, dtype=object)
    return df


def _parquet_column(column: pa.ChunkedArray) -> pd.Series:
    kind = column.type.value_type if pa.types.is_dictionary(column.type) else column.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return pd.Series(column.cast(pa.large_string()), dtype=TEXT_DTYPE)
    return pd.Series(column.to_pylist(), dtype=object)


# Besides ISO-8601 (datetime.fromisoformat), the layouts Chinese exports use for times.
_TIME_FORMATS: tuple[str, ...] = (
    "%Y/%m/%d %H:%M:%S",
    "%Y/%m/%d %H:%M",
    "%Y/%m/%d",
    "%Y-%m-%d %H:%M",
    "%Y.%m.%d %H:%M:%S",
    "%Y年%m月%d日 %H:%M:%S",
    "%Y年%m月%d日 %H:%M",
    "%Y年%m月%d日",
    "%Y%m%d%H%M%S",
    "%Y%m%d",
)


def parse_local_time(value: Any, tz: ZoneInfo) -> datetime | None:
    """Best-effort parse used only to pick a file's rows for a day; None when unparseable.

    Naive times are taken as shop-local. This is not validation: a row whose time this cannot
    read is kept so that validation quarantines it with a reason.
    """
    parsed = _parse_text_time(value) if isinstance(value, str) else _as_datetime(value)
    if parsed is None:
        return None
    return parsed.replace(tzinfo=tz) if parsed.tzinfo is None else parsed


def _as_datetime(value: Any) -> datetime | None:
    """A time the file holds as a value (Parquet, pandas); None for anything else."""
    if isinstance(value, pd.Timestamp):
        return None if pd.isna(value) else value.to_pydatetime()
    if isinstance(value, datetime):
        return value
    if isinstance(value, date):
        return datetime.combine(value, time())
    return None  # None, and numbers (epoch? Excel serial?): ambiguous, left to validation


def _parse_text_time(value: str) -> datetime | None:
    """ISO 8601, else the first of the export layouts (_TIME_FORMATS) that reads the text."""
    text = value.strip()
    if not text:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        pass
    for fmt in _TIME_FORMATS:
        try:
            return datetime.strptime(text, fmt)
        except ValueError:
            continue
    return None


class FileOrderSource:
    """Reads order exports from a folder.

    With ``{ds}`` / ``{ds_nodash}`` in ``pattern`` the file name decides the day, so every row
    of the matched files is returned. Without a placeholder, all matching files are read and a
    row is kept when its ``time_column`` (falling back to paid_at when that column is missing
    or the cell is empty) lies in [start, end); rows whose time cannot be parsed are kept on
    purpose, so validation quarantines them instead of them vanishing silently.

    When no file matches (the day's export is missing), ``when_missing="fail"`` raises
    :class:`MissingExport` naming the expected file and the business day; ``"warn"`` logs a
    warning and reads no row.
    """

    name = "files"

    def __init__(
        self,
        folder: str | Path,
        *,
        pattern: str = "*.csv",
        mapping: str | dict[str, str] = "canonical",
        timezone: str = "Asia/Shanghai",
        time_column: str = "updated_at",
        encoding: str | None = None,
        when_missing: Literal["fail", "warn"] = "fail",
        where: str = "intake.files",
    ) -> None:
        self.folder = Path(folder)
        self.pattern = pattern
        self.mapping = resolve_mapping(mapping, f"{where}.mapping")
        try:
            self.tz = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{where}.timezone: unknown time zone {timezone!r}") from None
        if time_column not in CANONICAL_COLUMNS:
            raise ValueError(f"{where}.time_column: {time_column!r} is not a canonical column")
        if when_missing not in WHEN_MISSING:
            raise ValueError(
                f"{where}.when_missing: {when_missing!r} is not one of {', '.join(WHEN_MISSING)}"
            )
        self.time_column = time_column
        self.encoding = encoding
        check_encoding(encoding, f"{where}.encoding")
        self.when_missing = when_missing
        self.where = where

    @property
    def has_date_placeholder(self) -> bool:
        return "{ds}" in self.pattern or "{ds_nodash}" in self.pattern

    def completeness(self, start: datetime, end: datetime, max_quiet_hours: float) -> str | None:
        """Why [start, end) may not be complete yet, or None: with ``{ds}`` in the pattern, the day's
        export must be there."""
        if self.has_date_placeholder and not self._matching_files(start):
            return f"the day's export {self._pattern_for(start)} is not in the folder {self.folder.name} yet"
        return None

    def read(self, start: datetime, end: datetime) -> pd.DataFrame:
        """All order rows for [start, end), in file-name then line order."""
        if start.tzinfo is None or end.tzinfo is None:
            raise ValueError("FileOrderSource.read needs timezone-aware start and end")
        files = self._matching_files(start)
        if not files:
            self._missing(start)
            return canonical_frame()
        frames = [
            read_export(path, self.mapping, self.encoding, self._ref_name(path), self.where) for path in files
        ]
        df = canonical_frame(frames)
        if not self.has_date_placeholder:
            df = self._filter_by_time(df, start, end)
        return df

    # -- files ----------------------------------------------------------------------------

    def _pattern_for(self, start: datetime) -> str:
        day = start.astimezone(self.tz).date()
        return self.pattern.replace("{ds}", day.isoformat()).replace("{ds_nodash}", day.strftime("%Y%m%d"))

    def _missing(self, start: datetime) -> None:
        """No file matches the day's pattern: fail or warn (``when_missing``), naming what was expected."""
        day = start.astimezone(self.tz).date()
        expected = self.folder / self._pattern_for(start)
        what = (
            f"the day's export {self._pattern_for(start)} is not in the folder {self.folder.name} yet"
            if self.has_date_placeholder
            else f"no export matching {self.pattern!r} is in the folder {self.folder.name}"
        )
        if self.when_missing == "fail":
            raise MissingExport(
                f"business day {day}: {what} (expected {expected}). Nothing was read; if the shop had no "
                f"orders that day, put an export with only its header row there, or set "
                f"{self.where}.when_missing: warn to read a missing export as no orders"
            )
        log.warning(
            "Business day %s: %s (expected %s); read as no orders (%s.when_missing: warn)",
            day,
            what,
            expected,
            self.where,
        )

    def _matching_files(self, start: datetime) -> list[Path]:
        if not self.folder.exists():
            raise FileNotFoundError(
                f"Order export folder {str(self.folder)!r} does not exist (config field {self.where}.folder)"
            )
        if not self.folder.is_dir():
            raise NotADirectoryError(
                f"Order export folder {str(self.folder)!r} is not a directory "
                f"(config field {self.where}.folder)"
            )
        files = []
        for path in sorted(self.folder.glob(self._pattern_for(start)), key=lambda p: p.as_posix()):
            if not path.is_file():
                continue
            if path.suffix.lower() not in CSV_SUFFIXES | PARQUET_SUFFIXES:
                log.warning("Skipping %s: only .csv, .txt and .parquet files are read", path.name)
                continue
            files.append(path)
        return files

    def _ref_name(self, path: Path) -> str:
        return path.relative_to(self.folder).as_posix()

    # -- time filter ----------------------------------------------------------------------

    def _filter_by_time(self, df: pd.DataFrame, start: datetime, end: datetime) -> pd.DataFrame:
        if df.empty:
            return df
        preferred = df[self.time_column]
        value = preferred.where(preferred.notna(), df["paid_at"])
        moment = local_times(value, self.tz)
        unparseable = moment.isna()
        keep = unparseable | ((moment >= pd.Timestamp(start)) & (moment < pd.Timestamp(end)))
        kept = df[keep.to_numpy(dtype=bool)].reset_index(drop=True)
        log.info(
            "Kept %d of %d rows with %s/paid_at in [%s, %s) (%d with unreadable time kept for validation)",
            len(kept),
            len(df),
            self.time_column,
            start.isoformat(),
            end.isoformat(),
            int(unparseable.sum()),
        )
        return kept


_OFFSET = r"(?:Z|[+-]\d{2}:?\d{2})$"


def local_times(values: pd.Series, tz: ZoneInfo) -> pd.Series:
    """:func:`parse_local_time` over a column (UTC, NaT where unreadable): vectorised for text,
    value by value for the Python values of Parquet files."""
    if not isinstance(values.dtype, pd.StringDtype) and not all(
        isinstance(v, str) or _is_missing(v) for v in values
    ):
        parsed = [parse_local_time(None if _is_missing(v) else v, tz) for v in values]
        return pd.Series(pd.to_datetime(parsed, utc=True), index=values.index)
    text = values.astype("str").str.strip()
    result = pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns, UTC]")
    aware = text.str.contains(_OFFSET, regex=True).fillna(False).astype(bool)
    if aware.any():
        parsed = pd.to_datetime(text[aware], format="ISO8601", errors="coerce", utc=True)
        result[aware] = _in_bounds(parsed.dt.tz_localize(None)).dt.tz_localize("UTC")
    naive_text = text[~aware]
    naive = pd.to_datetime(naive_text, format="ISO8601", errors="coerce")
    for fmt in _TIME_FORMATS:
        retry = naive.isna() & naive_text.notna()
        if not retry.any():
            break
        naive[retry] = pd.to_datetime(naive_text[retry], format=fmt, errors="coerce")
    local = _in_bounds(naive).dt.tz_localize(tz, ambiguous="NaT", nonexistent="shift_forward")
    result[~aware] = local.dt.tz_convert("UTC")
    return result


def _in_bounds(times: pd.Series) -> pd.Series:
    """Naive times as datetime64[ns], NaT for those a nanosecond time cannot hold (year 1, 9999)."""
    low, high = pd.Timestamp.min + pd.Timedelta(days=2), pd.Timestamp.max - pd.Timedelta(days=2)
    return times.where((times > low) & (times < high)).astype("datetime64[ns]")


def _is_missing(value: Any) -> bool:
    """None, or NaN (a missing cell of a text column read by pyarrow)."""
    return value is None or (isinstance(value, float) and value != value)
