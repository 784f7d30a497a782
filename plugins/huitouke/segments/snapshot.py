"""A local snapshot of the customer state and the open segment history, for the next daily run.

Every daily run needs the whole ``customer_state`` table and every open ``segment_history`` row
(one per customer): a million rows each at a million customers, 1 to 17 s to read from the store
depending on the database and the driver. Both are what the previous run computed, so that run
leaves them in a local cache directory as uncompressed Arrow IPC files (about 135 MB at a million
customers, the open rows' labels as dictionaries; a fraction of a second to read), and the next run
uses them **only when they provably are what the store holds**:

- the snapshot is keyed to the ``segment_kpis`` row of the run that wrote it (business date,
  ``computed_at`` to the microsecond, state fingerprint, number of customers) and to the store (a
  hash of its URL without the password). That row is written in the same transaction as the state
  and the history, and every writer of those two tables (``huitouke.segments.persist``, called by
  :func:`huitouke.segments.daily.run_day`) writes a new one; so while the store's latest ``segment_kpis`` row is the
  snapshot's, the tables hold exactly the snapshot's rows;
- the files are written to temporary names while the run's transaction is still open and renamed
  into place only after it committed. A run that fails changes neither the store nor the snapshot;
  a run whose snapshot is lost (a crash between the commit and the rename, another worker, the
  cache disabled) leaves an older snapshot whose key no longer matches;
- a missing, unreadable, foreign or stale snapshot (another key, another store, another version of
  this format, another number of customers) is ignored and the run reads the tables, logging why.
  Nothing is ever repaired from a snapshot: it only replaces two reads.

Whoever edits ``customer_state`` or ``segment_history`` outside huitouke must delete the cache's
``segments-*`` files (or run with ``HUITOUKE_CACHE_DIR=off`` once).

A customer shard's run (``scale.shards`` > 1, :func:`huitouke.segments.daily.run_shard`) is the
one writer of the state that writes no ``segment_kpis`` row (the reduce after the shards does): it
deletes this machine's snapshot first (:func:`forget`), and sharded runs neither read nor leave one.

A run reads the snapshot with :func:`load_for_run` and leaves the next one through
:func:`after_commit` (``with after_commit(url) as next_snapshot:`` around its transaction).

A re-run of the latest day rewinds the history first; the snapshot keeps the rows that run closed
(``reopen``) so the rewind is applied to it in memory exactly as the SQL rewind does.

Where: ``$HUITOUKE_CACHE_DIR`` when set (``off`` disables the snapshot); otherwise a ``cache``
folder next to a SQLite store's file, or ``data/cache`` under the project home for a server
database. A deployment with several workers simply misses the cache when a run lands on another
machine than the previous one: the tables are read, as without a snapshot.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from datetime import date, datetime
from hashlib import sha256
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.ipc as ipc
from sqlalchemy.engine import URL

from huitouke.pii import get_logger
from huitouke.segments.classify import SEGMENT_COLUMNS
from huitouke.segments.history import LABEL_COLUMNS, canonical_labels
from huitouke.segments.state import STATE_COLUMNS

log = get_logger(__name__)

__all__ = [
    "NextSnapshot",
    "Snapshot",
    "SnapshotKey",
    "after_commit",
    "cache_dir_for",
    "discard",
    "load",
    "load_for_run",
    "prepare",
    "publish",
]

FORMAT_VERSION = "2"  # 2: the open rows' labels as dictionaries (categoricals)
_PARTS = ("state", "open", "reopen")
_OPEN_COLUMNS = ("customer_id", "valid_from", *SEGMENT_COLUMNS)
_DISABLED = {"", "0", "off", "none", "false", "no"}


class StoredRun(Protocol):
    """A run as its ``segment_kpis`` row identifies it (:class:`huitouke.segments.persist.LatestRun`)."""

    business_date: date
    computed_at: datetime
    fingerprint: str
    customers: int


@dataclass(frozen=True)
class SnapshotKey:
    """What a snapshot must match: the store and its latest ``segment_kpis`` row."""

    store: str
    business_date: date
    computed_at: datetime
    fingerprint: str
    customers: int

    @classmethod
    def of_run(cls, url: URL, run: StoredRun) -> SnapshotKey:
        """The key of the snapshot ``run`` leaves in (or left in) the store at ``url``."""
        return cls(store_id(url), run.business_date, run.computed_at, run.fingerprint, run.customers)

    def as_metadata(self) -> dict[bytes, bytes]:
        return {
            b"huitouke.format": FORMAT_VERSION.encode(),
            b"huitouke.store": self.store.encode(),
            b"huitouke.business_date": self.business_date.isoformat().encode(),
            b"huitouke.computed_at": self.computed_at.isoformat(sep=" ", timespec="microseconds").encode(),
            b"huitouke.fingerprint": self.fingerprint.encode(),
            b"huitouke.customers": str(self.customers).encode(),
        }


@dataclass(frozen=True)
class Snapshot:
    """The store's customer state and open history rows as of one committed run.

    ``state``: as :func:`huitouke.segments.persist.read_state` returns it. ``open_rows``: customer_id,
    valid_from (datetime64), the segment columns, as ``read_open_history``. ``reopen``: the rows that
    run closed (same columns), which a rewind of its day opens again.
    """

    state: pd.DataFrame
    open_rows: pd.DataFrame
    reopen: pd.DataFrame

    def rewound(self, day: date) -> pd.DataFrame:
        """The open rows after the history is rewound to before ``day`` (the snapshot's own day):
        the rows opened on ``day`` go, the rows closed on ``day`` are open again."""
        day64 = np.datetime64(day, "ns")
        kept = self.open_rows[self.open_rows["valid_from"].to_numpy() < day64]
        parts = [frame for frame in (kept, self.reopen) if len(frame)]
        if not parts:
            return self.open_rows.iloc[:0]
        merged = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0].reset_index(drop=True)
        merged = merged.sort_values("customer_id", kind="stable", ignore_index=True)
        for column in LABEL_COLUMNS:  # categories as the store's reader gives them
            merged[column] = canonical_labels(merged[column])
        return merged


def store_id(url: URL) -> str:
    """A short stable name for a store: a hash of its URL without the password."""
    text = url.render_as_string(hide_password=True)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        text = f"sqlite:///{Path(url.database).resolve()}"
    return sha256(text.encode("utf-8")).hexdigest()[:16]


def cache_dir_for(url: URL) -> Path | None:
    """The cache directory for a store (None: no snapshot)."""
    configured = os.environ.get("HUITOUKE_CACHE_DIR")
    if configured is not None:
        if configured.strip().lower() in _DISABLED:
            return None
        return Path(configured).expanduser()
    if url.get_backend_name() == "sqlite":
        if not url.database or url.database == ":memory:":
            return None
        return Path(url.database).resolve().parent / "cache"
    from huitouke.config import project_home

    return project_home() / "data" / "cache"


def paths(folder: Path, store: str) -> dict[str, Path]:
    return {part: folder / f"segments-{store}.{part}.arrow" for part in _PARTS}


def load(folder: Path, key: SnapshotKey) -> Snapshot | None:
    """The snapshot for ``key`` from ``folder``, or None (and why, in the log) when there is none
    that matches: the caller then reads the tables."""
    files = paths(folder, key.store)
    if not all(path.exists() for path in files.values()):
        log.info("No segments snapshot in %s: reading the state and the history from the store", folder)
        return None
    expected = key.as_metadata()
    try:
        tables = {}
        for part, path in files.items():
            with pa.OSFile(str(path), "rb") as source:  # read, not mapped: the file may be replaced
                table = ipc.open_file(source).read_all()
            found = dict(table.schema.metadata or {})
            if any(found.get(k) != v for k, v in expected.items()):
                log.info(
                    "The segments snapshot in %s is not the store's latest run (%s): reading the store",
                    folder,
                    _describe(found),
                )
                return None
            tables[part] = table.replace_schema_metadata(None)
        snapshot = Snapshot(
            state=_state_frame(tables["state"]),
            open_rows=_open_frame(tables["open"]),
            reopen=_open_frame(tables["reopen"]),
        )
    except Exception as exc:  # a damaged or foreign file: never trusted, never fatal
        log.warning("The segments snapshot in %s cannot be read (%s): reading the store", folder, exc)
        return None
    if len(snapshot.state) != key.customers:
        log.warning(
            "The segments snapshot in %s has the wrong number of customers: reading the store", folder
        )
        return None
    log.info("Customer state and open history from the snapshot of %s", key.business_date)
    return snapshot


def load_for_run(url: URL, run: StoredRun | None) -> Snapshot | None:
    """The snapshot the store's latest run ``run`` left, when there is one that provably is the
    store's; None (the caller reads the tables) when there is no run yet, the cache is disabled or
    no snapshot matches."""
    folder = cache_dir_for(url)
    if folder is None or run is None:
        return None
    return load(folder, SnapshotKey.of_run(url, run))


def forget(url: URL) -> None:
    """Delete this machine's snapshot of the store: a customer shard's run (``scale.shards`` > 1)
    changes the state without a new ``segment_kpis`` row until the reduce writes one, so a snapshot
    keyed to the latest row would no longer be the store's in between. Sharded runs neither read
    nor leave one."""
    folder = cache_dir_for(url)
    if folder is None:
        return
    for path in paths(folder, store_id(url)).values():
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("The segments snapshot could not be deleted (%s): remove the cache's files", exc)


class NextSnapshot:
    """The snapshot a run leaves for the next one: written inside the run's transaction
    (:meth:`write`), published when the ``with`` block around the transaction ends without an
    error, i.e. after the commit, discarded when it raises. Made by :func:`after_commit`."""

    def __init__(self, url: URL) -> None:
        self._url = url
        self._folder = cache_dir_for(url)
        self._written: dict[Path, Path] | None = None

    @property
    def wanted(self) -> bool:
        """False when the cache is disabled: nothing to compute for it."""
        return self._folder is not None

    def write(
        self, run: StoredRun, state: pd.DataFrame, open_rows: pd.DataFrame, reopen: pd.DataFrame
    ) -> None:
        """Write the files of ``run``'s snapshot under temporary names (see :func:`prepare`)."""
        if self._folder is not None:
            self._written = prepare(
                self._folder, SnapshotKey.of_run(self._url, run), state, open_rows, reopen
            )

    def __enter__(self) -> NextSnapshot:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            publish(self._written)  # only now: the snapshot is the committed run's
        else:
            discard(self._written)


def after_commit(url: URL) -> NextSnapshot:
    """``with after_commit(url) as next_snapshot:`` around a run's transaction: see
    :class:`NextSnapshot`."""
    return NextSnapshot(url)


def prepare(
    folder: Path, key: SnapshotKey, state: pd.DataFrame, open_rows: pd.DataFrame, reopen: pd.DataFrame
) -> dict[Path, Path] | None:
    """Write the snapshot to temporary files in ``folder``; returns {temporary: final} for
    :func:`publish` (after the commit) or :func:`discard`. None (logged) when it cannot be written."""
    written: dict[Path, Path] = {}
    try:
        folder.mkdir(parents=True, exist_ok=True)
        frames = {
            "state": state[list(STATE_COLUMNS)],
            "open": open_rows[list(_OPEN_COLUMNS)],
            "reopen": reopen[list(_OPEN_COLUMNS)],
        }
        for part, final in paths(folder, key.store).items():
            table = pa.Table.from_pandas(frames[part], preserve_index=False)
            table = table.replace_schema_metadata(key.as_metadata())
            handle, name = tempfile.mkstemp(dir=folder, prefix=f".{final.name}.", suffix=".tmp")
            os.close(handle)
            written[Path(name)] = final
            with ipc.new_file(name, table.schema) as writer:  # uncompressed: read back in 0.05 s
                writer.write_table(table)
    except Exception as exc:
        log.warning(
            "The segments snapshot could not be written to %s (%s): the next run reads the store", folder, exc
        )
        discard(written)
        return None
    return written


def publish(written: dict[Path, Path] | None) -> None:
    """Move prepared files into place (call only after the run's transaction committed)."""
    if not written:
        return
    try:
        for temporary, final in written.items():
            os.replace(temporary, final)
    except OSError as exc:
        log.warning("The segments snapshot could not be published (%s): the next run reads the store", exc)
        discard(written)


def discard(written: dict[Path, Path] | None) -> None:
    for temporary in written or {}:
        try:
            temporary.unlink(missing_ok=True)
        except OSError:
            pass


# --------------------------------------------------------------------------------------------------


def _describe(metadata: dict[bytes, bytes]) -> str:
    day = metadata.get(b"huitouke.business_date", b"?").decode(errors="replace")
    at = metadata.get(b"huitouke.computed_at", b"?").decode(errors="replace")
    return f"it is of {day}, computed at {at}"


def _str(column: pa.ChunkedArray) -> pd.Series:
    return pd.Series(column.to_pandas(), dtype="str")


def _state_frame(table: pa.Table) -> pd.DataFrame:
    if tuple(table.column_names) != STATE_COLUMNS:
        raise ValueError(f"unexpected state columns {table.column_names}")
    frame = pd.DataFrame(
        {
            name: _str(table[name]) if name in _STATE_TEXT else table[name].to_pandas()
            for name in STATE_COLUMNS
        },
        copy=False,  # the columns as read, not copied into 2-D blocks
    )
    for name in STATE_COLUMNS:
        if name not in _STATE_TEXT and str(frame[name].dtype) != _STATE_DTYPES[name]:
            raise ValueError(f"unexpected type {frame[name].dtype} of state column {name}")
    return frame


def _open_frame(table: pa.Table) -> pd.DataFrame:
    if tuple(table.column_names) != _OPEN_COLUMNS:
        raise ValueError(f"unexpected history columns {table.column_names}")
    frame = pd.DataFrame(
        {
            name: _str(table[name]) if name == "customer_id" else table[name].to_pandas()
            for name in _OPEN_COLUMNS
        },
        copy=False,
    )
    for name in LABEL_COLUMNS:
        if not isinstance(frame[name].dtype, pd.CategoricalDtype):
            raise ValueError(f"unexpected type {frame[name].dtype} of history column {name}")
    for name, dtype in _OPEN_DTYPES.items():
        if str(frame[name].dtype) != dtype:
            raise ValueError(f"unexpected type {frame[name].dtype} of history column {name}")
    return frame


_STATE_TEXT = ("customer_id", "main_category_group", "acquisition_source")
_STATE_DTYPES = {
    "first_paid_at": "datetime64[ns]",
    "last_paid_at": "datetime64[ns]",
    "first_business_date": "datetime64[ns]",
    "last_business_date": "datetime64[ns]",
    "paid_orders": "int64",
    "total_cents": "int64",
    "aov_cents": "int64",
}
_OPEN_DTYPES = {
    "valid_from": "datetime64[ns]",
    "r_score": "int8",
    "f_score": "int8",
    "m_score": "int8",
    "low_value_acquisition": "bool",
}
