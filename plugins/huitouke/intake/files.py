"""Order source: a folder of exports (CSV or Parquet) that a shop drops files into.

Rows are read as the files hold them (CSV cells stay strings, empty cells become None); parsing
and validation happen later, in one place, so a garbage amount reaches validation unchanged and
gets quarantined with the file name and line number kept in ``_source_ref``.
"""

from __future__ import annotations

import csv
import io
from datetime import date, datetime, time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pandas as pd

from huitouke.intake.mappings import (
    SOURCE_REF_COLUMN,
    apply_mapping,
    canonical_frame,
    resolve_mapping,
)
from huitouke.pii import get_logger
from huitouke.records import ALL_COLUMNS

log = get_logger(__name__)

CSV_SUFFIXES = frozenset({".csv", ".txt"})
PARQUET_SUFFIXES = frozenset({".parquet"})
# Tried in order when no encoding is configured: Taobao exports are UTF-8 with BOM or GBK.
AUTO_ENCODINGS: tuple[str, ...] = ("utf-8-sig", "gb18030")

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
        where: str = "intake.files",
    ) -> None:
        self.folder = Path(folder)
        self.pattern = pattern
        self.mapping = resolve_mapping(mapping, f"{where}.mapping")
        try:
            self.tz = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{where}.timezone: unknown time zone {timezone!r}") from None
        if time_column not in ALL_COLUMNS:
            raise ValueError(f"{where}.time_column: {time_column!r} is not a canonical column")
        self.time_column = time_column
        self.encoding = encoding
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
            log.info("No files match %r in %s for %s", self._pattern_for(start), self.folder, start.date())
            return canonical_frame()
        frames = [self._read_file(path) for path in files]
        df = canonical_frame(frames)
        if not self.has_date_placeholder:
            df = self._filter_by_time(df, start, end)
        return df

    # -- files ----------------------------------------------------------------------------

    def _pattern_for(self, start: datetime) -> str:
        day = start.astimezone(self.tz).date()
        return self.pattern.replace("{ds}", day.isoformat()).replace("{ds_nodash}", day.strftime("%Y%m%d"))

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

    def _read_file(self, path: Path) -> pd.DataFrame:
        ref = self._ref_name(path)
        where = f"{path} (mapping from {self.where}.mapping)"
        if path.suffix.lower() in PARQUET_SUFFIXES:
            raw = self._read_parquet(path)
            refs = [f"{ref}:row {i + 1}" for i in range(len(raw))]
            encoding = "parquet"
        else:
            raw, lines, encoding = self._read_csv(path)
            if raw is None:
                return canonical_frame()
            refs = [f"{ref}:{line}" for line in lines]
        df = apply_mapping(raw.reset_index(drop=True), self.mapping, where)
        df[SOURCE_REF_COLUMN] = refs
        log.info("Read %d rows from %s (%s)", len(df), ref, encoding)
        return df

    @staticmethod
    def _read_parquet(path: Path) -> pd.DataFrame:
        """Values as stored (int, str, Decimal, datetime): via pandas a nullable int id becomes float."""
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        columns = pd.Index(table.column_names, dtype=object)
        data = {i: table.column(i).to_pylist() for i in range(table.num_columns)}
        df = pd.DataFrame(data, dtype=object)
        df.columns = columns
        return df

    def _decode(self, path: Path) -> tuple[str, str]:
        data = path.read_bytes()
        if self.encoding:
            try:
                return data.decode(self.encoding), self.encoding
            except (UnicodeDecodeError, LookupError) as exc:
                raise ValueError(
                    f"{path}: cannot decode with encoding {self.encoding!r} "
                    f"(config field {self.where}.encoding): {exc.__class__.__name__}"
                ) from None
        for encoding in AUTO_ENCODINGS:
            try:
                return data.decode(encoding), encoding
            except UnicodeDecodeError:
                continue
        raise ValueError(
            f"{path}: not valid {' or '.join(AUTO_ENCODINGS)}; "
            f"set {self.where}.encoding to the file's encoding"
        )

    def _read_csv(self, path: Path) -> tuple[pd.DataFrame | None, list[int], str]:
        """Parse with the csv module so every row keeps the line it starts on (cells may span lines)."""
        text, encoding = self._decode(path)
        first_line = text.lstrip("\ufeff").split("\n", 1)[0]
        delimiter = "\t" if first_line.count("\t") > first_line.count(",") else ","
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
        header: list[str] | None = None
        rows: list[list[str | None]] = []
        lines: list[int] = []
        ragged: list[int] = []
        line_after_previous = 1
        for record in reader:
            line = line_after_previous
            line_after_previous = reader.line_num + 1
            if not record or all(not cell.strip() for cell in record):
                continue  # blank line
            if header is None:
                header = record
                continue
            if len(record) != len(header):
                ragged.append(line)
                record = (record + [""] * len(header))[: len(header)]
            rows.append([cell if cell != "" else None for cell in record])
            lines.append(line)
        if header is None:
            log.warning("Skipping %s: the file is empty (no header row)", self._ref_name(path))
            return None, [], encoding
        if ragged:
            log.warning(
                "%s: %d row(s) do not have %d cells like the header (lines %s); padded or cut to fit",
                self._ref_name(path),
                len(ragged),
                len(header),
                ", ".join(map(str, ragged[:10])) + (" ..." if len(ragged) > 10 else ""),
            )
        columns = pd.Index(header, dtype=object)
        return pd.DataFrame(rows, columns=columns, dtype=object), lines, encoding

    # -- time filter ----------------------------------------------------------------------

    def _filter_by_time(self, df: pd.DataFrame, start: datetime, end: datetime) -> pd.DataFrame:
        if df.empty:
            return df
        keep: list[bool] = []
        unparseable = 0
        for preferred, fallback in zip(df[self.time_column], df["paid_at"], strict=True):
            value = preferred if preferred is not None else fallback
            moment = parse_local_time(value, self.tz)
            if moment is None:
                unparseable += 1
                keep.append(True)
            else:
                keep.append(start <= moment < end)
        kept = df.loc[keep].reset_index(drop=True)
        log.info(
            "Kept %d of %d rows with %s/paid_at in [%s, %s) (%d with unreadable time kept for validation)",
            len(kept),
            len(df),
            self.time_column,
            start.isoformat(),
            end.isoformat(),
            unparseable,
        )
        return kept
