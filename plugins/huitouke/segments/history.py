"""The segment history: validity ranges per customer, not a snapshot per day.

A history row says "from ``valid_from`` (inclusive) until ``valid_to`` (exclusive) this customer
was in this segment"; the open row of a customer has ``valid_to`` = None. Each day
:func:`diff_segments` compares the open rows with the day's segments
(:func:`huitouke.segments.classify.classify`) and returns only what changed: rows to close (their
``valid_to`` becomes the business date) and rows to open. A customer whose segment did not change
costs nothing, so the history grows with the changes, not with customers x days.

History columns (:data:`HISTORY_COLUMNS`), as in the ``segment_history`` table: ``customer_id``,
``valid_from`` and ``valid_to`` (``datetime.date``; ``valid_to`` None while open), then the segment
(:data:`~huitouke.segments.classify.SEGMENT_COLUMNS`). A ``segment_id`` column, when the open
rows carry one, is passed through to the rows to close so that the store can update them by key.

Re-running a business date: the history must first be rewound to before that date (delete the rows
with ``valid_from >= date``, reopen the rows with ``valid_to >= date``); :func:`diff_segments`
refuses open rows that start on or after the date it is given.

Transitions count customers whose *lifecycle* changed, by (from, to); a customer appearing (first
paid order) comes from ``none``, one leaving the state (every order refunded) goes to ``none``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from huitouke.pii import get_logger
from huitouke.segments.classify import SEGMENT_COLUMNS
from huitouke.segments.state import string_array
from huitouke.store.schema import segment_history

log = get_logger(__name__)

__all__ = [
    "HISTORY_COLUMNS",
    "LABEL_COLUMNS",
    "NO_LIFECYCLE",
    "SegmentChanges",
    "apply_changes",
    "canonical_labels",
    "diff_segments",
    "empty_history",
    "label_codes",
    "open_rows_of",
    "same_customers",
    "segments_on",
]

NO_LIFECYCLE = "none"
# The segment columns that hold names (categoricals in classify's result and in the open rows).
LABEL_COLUMNS: tuple[str, ...] = ("lifecycle", "member_tier", "value_tier", "category_group")
# The segment_history table's columns less its generated key: the customer, the validity range,
# the segment (SEGMENT_COLUMNS).
HISTORY_COLUMNS: tuple[str, ...] = tuple(c.name for c in segment_history.columns if not c.primary_key)
_INT_COLUMNS = ("r_score", "f_score", "m_score")
_BOOL_COLUMNS = ("low_value_acquisition",)


@dataclass(frozen=True)
class SegmentChanges:
    """What one business date changes in the history."""

    business_date: date
    close: pd.DataFrame  # customer_id, valid_to (+ segment_id when the open rows had one)
    open: pd.DataFrame  # HISTORY_COLUMNS, valid_from = business_date, valid_to = None
    transitions: pd.DataFrame  # from_lifecycle, to_lifecycle, customers
    unchanged: int  # customers whose open row stays open

    def transition_counts(self) -> dict[tuple[str, str], int]:
        return {
            (row.from_lifecycle, row.to_lifecycle): int(row.customers)
            for row in self.transitions.itertuples(index=False)
        }


def empty_history() -> pd.DataFrame:
    """A history with no row, with the columns of :data:`HISTORY_COLUMNS`."""
    return pd.DataFrame({c: pd.Series([], dtype=_dtype(c)) for c in HISTORY_COLUMNS})


def diff_segments(
    open_rows: pd.DataFrame,
    segments: pd.DataFrame,
    business_date: date,
    open_row_of: np.ndarray | None = None,
) -> SegmentChanges:
    """Rows to close and rows to open so that the history says ``segments`` from ``business_date`` on.

    ``open_rows``: the open history rows (``valid_to`` None), at most one per customer, with
    ``customer_id`` and the segment columns (``valid_from`` and ``segment_id`` optional).
    ``segments``: the day's :func:`~huitouke.segments.classify.classify` result.
    ``open_row_of``: for each row of ``segments``, the row of ``open_rows`` of the same customer
    (-1: none), when the caller knows it (see :func:`same_customers`); else the ids are matched.
    """
    _check_open_rows(open_rows, business_date)
    position = _open_row_of(open_rows, segments, open_row_of)  # -1: no open row
    life = _Lifecycles.of(segments["lifecycle"], open_rows["lifecycle"])
    changed = _changed(open_rows, segments, position, life)
    matched = position >= 0
    # Open rows of customers who are no longer in today's segments.
    still_there = np.zeros(len(open_rows), dtype=bool)
    still_there[position[matched]] = True

    closing = np.concatenate([position[matched & changed], np.flatnonzero(~still_there)])
    closing.sort()
    opening = np.flatnonzero(changed)
    changes = SegmentChanges(
        business_date=business_date,
        close=_rows_to_close(open_rows, closing, business_date),
        open=_rows_to_open(segments, opening, business_date),
        transitions=life.transitions(opening, position, ~still_there),
        unchanged=int(matched.sum() - (matched & changed).sum()),
    )
    log.debug(
        "segment history on %s: %d rows closed, %d opened, %d unchanged",
        business_date,
        len(changes.close),
        len(changes.open),
        changes.unchanged,
    )
    return changes


@dataclass(frozen=True)
class _Lifecycles:
    """Today's and the open rows' lifecycles as codes of one vocabulary (-1: missing)."""

    today: np.ndarray  # per row of the segments
    before: np.ndarray  # per open row
    names: list[str]  # the vocabulary, with NO_LIFECYCLE last unless the labels name it

    @classmethod
    def of(cls, today: pd.Series, before: pd.Series) -> _Lifecycles:
        codes_today, codes_before, names = _shared_codes(today, before)
        if NO_LIFECYCLE not in names:
            names.append(NO_LIFECYCLE)
        return cls(codes_today, codes_before, names)

    def transitions(self, opening: np.ndarray, position: np.ndarray, gone: np.ndarray) -> pd.DataFrame:
        """Customers per (from, to) lifecycle among those who moved: the rows of the segments that
        open (``opening``; ``position``: each row's open row, -1: none) and the open rows of the
        customers who left (``gone``)."""
        none = self.names.index(NO_LIFECYCLE)
        before_life = np.append(self.before, none)
        from_life = np.concatenate([before_life[position[opening]], self.before[gone]])
        to_life = np.concatenate([self.today[opening], np.full(int(gone.sum()), none)])
        moved = from_life != to_life
        names = np.array([*self.names, None], dtype=object)  # code -1 (no lifecycle): None
        transitions = (
            pd.DataFrame({"from_lifecycle": names[from_life[moved]], "to_lifecycle": names[to_life[moved]]})
            .astype("str")
            .value_counts()
            .rename("customers")
            .reset_index()
            .sort_values(["from_lifecycle", "to_lifecycle"], ignore_index=True)
        )
        transitions["customers"] = transitions["customers"].astype(np.int64)
        return transitions


def _changed(
    open_rows: pd.DataFrame, segments: pd.DataFrame, position: np.ndarray, life: _Lifecycles
) -> np.ndarray:
    """Per row of the segments, whether the customer's row opens: no open row, or a segment
    column that differs from it."""
    matched = position >= 0
    changed = ~matched
    today_rows, open_positions = np.flatnonzero(matched), position[matched]
    changed[today_rows] |= life.today[today_rows] != life.before[open_positions]
    for column in SEGMENT_COLUMNS:
        if column != "lifecycle":
            changed[today_rows] |= _differs(
                segments[column], today_rows, open_rows[column], open_positions, column
            )
    return changed


def _rows_to_close(open_rows: pd.DataFrame, closing: np.ndarray, business_date: date) -> pd.DataFrame:
    """The ``closing`` open rows, closed on ``business_date`` (by ``segment_id`` when they have one)."""
    close = pd.DataFrame({"customer_id": open_rows["customer_id"].iloc[closing].astype("str").to_numpy()})
    if "segment_id" in open_rows.columns:
        close["segment_id"] = open_rows["segment_id"].iloc[closing].to_numpy()
    close["valid_to"] = np.full(len(close), business_date, dtype=object)
    return close


def _rows_to_open(segments: pd.DataFrame, opening: np.ndarray, business_date: date) -> pd.DataFrame:
    """The ``opening`` rows of the segments as open history rows from ``business_date``."""
    opened = segments.iloc[opening]
    return pd.DataFrame(
        {
            "customer_id": opened["customer_id"].astype("str").reset_index(drop=True),
            "valid_from": np.full(len(opened), business_date, dtype=object),
            "valid_to": np.full(len(opened), None, dtype=object),
            **{c: opened[c].reset_index(drop=True) for c in SEGMENT_COLUMNS},
        }
    )


def apply_changes(history: pd.DataFrame, changes: SegmentChanges) -> pd.DataFrame:
    """The history with ``changes`` applied (in memory; the store does the same with SQL)."""
    history = history.copy()
    is_open = history["valid_to"].isna().to_numpy()
    closing = history["customer_id"].astype("str").isin(changes.close["customer_id"]).to_numpy() & is_open
    history["valid_to"] = history["valid_to"].astype(object)
    history.loc[closing, "valid_to"] = changes.business_date
    if changes.open.empty:
        return history
    return pd.concat([history, changes.open], ignore_index=True) if len(history) else changes.open.copy()


def open_rows_of(history: pd.DataFrame) -> pd.DataFrame:
    """The open rows of an in-memory history."""
    return history[history["valid_to"].isna().to_numpy()].reset_index(drop=True)


def segments_on(history: pd.DataFrame, on: date) -> pd.DataFrame:
    """Every customer's segment on a past (or the current) business date, from history rows.

    Returns ``customer_id`` and the segment columns, sorted by customer; customers who had no
    paid order yet (or none left) on that date are absent.
    """
    day = np.datetime64(on, "D")
    valid_from = _days(history["valid_from"])
    valid_to = _days(history["valid_to"])
    valid = (valid_from <= day) & (np.isnat(valid_to) | (valid_to > day))
    rows = history.loc[valid, ["customer_id", *SEGMENT_COLUMNS]]
    return rows.sort_values("customer_id", kind="stable", ignore_index=True)


# --------------------------------------------------------------------------------------------------


def _dtype(column: str) -> str:
    if column in _INT_COLUMNS:
        return "int8"
    if column in _BOOL_COLUMNS:
        return "bool"
    if column in ("valid_from", "valid_to"):
        return "object"
    return "str"


def _check_open_rows(open_rows: pd.DataFrame, business_date: date) -> None:
    missing = [c for c in ("customer_id", *SEGMENT_COLUMNS) if c not in open_rows.columns]
    if missing:
        raise ValueError(f"open history rows lack columns: {', '.join(missing)}")
    if not _strictly_increasing(open_rows["customer_id"]) and open_rows["customer_id"].duplicated().any():
        raise ValueError("the history has more than one open row for some customers")
    if "valid_from" in open_rows.columns and len(open_rows):
        latest = _days(open_rows["valid_from"]).max()
        if not np.isnat(latest) and latest >= np.datetime64(business_date, "D"):
            raise ValueError(
                f"the history already has rows from {latest}: rewind it before re-running {business_date} "
                "(delete rows with valid_from >= the date, reopen rows with valid_to >= the date)"
            )


def _strictly_increasing(values: pd.Series) -> bool:
    """Sorted without repeats (as the store gives open rows): then unique, at a fraction of the
    cost of a hash of every id."""
    ids = string_array(values)
    if len(ids) < 2:
        return True
    return bool(pc.all(pc.less(ids.slice(0, len(ids) - 1), ids.slice(1))).as_py())


def _days(values: pd.Series) -> np.ndarray:
    """Dates (``datetime.date``, timestamps or ISO text; None/NaT allowed) as datetime64[D].

    A history column holds few distinct dates: each is parsed once."""
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        return values.to_numpy(dtype="datetime64[D]")
    codes, uniques = pd.factorize(values)
    parsed = pd.to_datetime(pd.Series(uniques, dtype=object)).to_numpy(dtype="datetime64[D]")
    return np.append(parsed, np.datetime64("NaT", "D"))[codes]


def same_customers(a: pd.Series, b: pd.Series) -> bool:
    """Whether two customer id columns hold the same ids in the same order: then the rows of one
    are the rows of the other, and a row mapping known for one holds for the other."""
    if len(a) != len(b):
        return False
    return len(a) == 0 or bool(pc.all(pc.equal(string_array(a), string_array(b))).as_py())


def _open_row_of(open_rows: pd.DataFrame, segments: pd.DataFrame, known: np.ndarray | None) -> np.ndarray:
    if known is None:
        return _positions(string_array(segments["customer_id"]), string_array(open_rows["customer_id"]))
    known = np.asarray(known, dtype=np.int64)
    if len(known) != len(segments) or (len(known) and int(known.max(initial=-1)) >= len(open_rows)):
        raise ValueError("open_row_of does not fit the segments and the open rows")
    return known


def _positions(needles: pa.Array, haystack: pa.Array) -> np.ndarray:
    """For each needle, its index in ``haystack`` (-1 when absent)."""
    if len(needles) == 0:
        return np.empty(0, dtype=np.int64)
    found = pc.index_in(needles, value_set=haystack)
    return pc.fill_null(found, -1).to_numpy(zero_copy_only=False).astype(np.int64)


def label_codes(values: pd.Series) -> tuple[np.ndarray, list[str]]:
    """A label column (categorical or text) as integer codes (-1: missing) and the names they
    stand for. Free for a categorical (what classify gives); a hash of each value otherwise."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        return values.cat.codes.to_numpy(), [str(name) for name in values.cat.categories]
    codes, names = pd.factorize(values.astype("str"))
    return codes, [str(name) for name in names]


def canonical_labels(values: pd.Series) -> pd.Series:
    """A label column as the categorical the store's readers give: categories the names present,
    sorted (so that equal columns from any source compare equal)."""
    codes, names = label_codes(values)
    used = np.bincount(codes + 1, minlength=len(names) + 1)[1:] > 0
    kept = sorted(name for name, present in zip(names, used, strict=True) if present)
    index = {name: i for i, name in enumerate(kept)}
    remap = np.array([index.get(name, -1) for name in names] + [-1], dtype=np.int64)
    dtype = pd.CategoricalDtype(pd.Index(kept, dtype="str"))
    return pd.Series(
        pd.Categorical.from_codes(remap[codes], dtype=dtype), index=values.index, name=values.name
    )


def _shared_codes(today: pd.Series, before: pd.Series) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Two label columns as codes of one vocabulary (-1: missing in both)."""
    a, names = label_codes(today)
    b, before_names = label_codes(before)
    index = {name: i for i, name in enumerate(names)}
    for name in before_names:
        if name not in index:
            index[name] = len(names)
            names.append(name)
    remap = np.array([index[name] for name in before_names] + [-1], dtype=np.int64)
    return a.astype(np.int64), remap[b], names


def _differs(
    today: pd.Series, today_rows: np.ndarray, before: pd.Series, before_rows: np.ndarray, column: str
) -> np.ndarray:
    """Whether ``today[today_rows]`` differs from ``before[before_rows]``, element by element."""
    if column in _INT_COLUMNS:
        a = today.to_numpy(dtype=np.int64, na_value=-1)[today_rows]
        return a != before.to_numpy(dtype=np.int64, na_value=-1)[before_rows]
    if column in _BOOL_COLUMNS:
        a = today.fillna(False).to_numpy(dtype=bool)[today_rows]
        return a != before.fillna(False).to_numpy(dtype=bool)[before_rows]
    # Labels: compared as codes of one vocabulary (no string per row); missing equals missing.
    a, b, _ = _shared_codes(today, before)
    return a[today_rows] != b[before_rows]
