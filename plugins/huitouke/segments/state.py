"""Per-customer state from paid orders: a full build, and the daily incremental update.

The state is a plain function of a customer's stored orders and their lines, like
``lifetimes.utils.summary_data_from_transaction_data``: one row per customer who has at least one
paid order (status in :data:`huitouke.records.PAID_STATUSES`). Refunded, cancelled and
pending orders count for nothing; a customer whose every order was refunded has no row.

State columns (:data:`STATE_COLUMNS`), one row per customer, sorted by ``customer_id``:

=======================  ==========================================================================
``customer_id``          str
``first_paid_at``        datetime64[ns], naive UTC: the first paid order's payment time
``last_paid_at``         datetime64[ns], naive UTC: the last paid order's payment time
``first_business_date``  datetime64[ns] (midnight): shop-local date of the first paid order
``last_business_date``   datetime64[ns] (midnight): shop-local date of the last paid order
``paid_orders``          int64: number of paid orders
``total_cents``          int64: sum of the paid orders' ``amount_cents`` less their
                         ``refunded_cents`` (partial refunds: an optional column, 0 when absent)
``aov_cents``            int64: average order value, ``total_cents / paid_orders`` rounded half up
``main_category_group``  str: the category group with the largest paid spend over the customer's
                         order lines (ties: alphabetical). An order without lines counts its whole
                         amount (less its refund) as the unknown category
                         (``segments.unknown_category_group``). A partial refund does not reduce
                         its order's line spend: the export does not say which line was refunded.
``acquisition_source``   str: the first paid order's acquisition source (ties on the payment time:
                         the smallest order_id)
=======================  ==========================================================================

The two business-date columns are helpers: lifecycle windows count shop-local days, and the
payment times are UTC. Next to the state, :func:`build_state_and_spend` gives the **spend rows**
(:data:`SPEND_COLUMNS`: each customer's paid spend in each category group they bought from), which
the store keeps so that a new order (or a refund) can move the main group without the
customer's history; each row also counts the paid lines behind it (an order without lines counts
one), so that a group the customer no longer bought from disappears when its last line is refunded.

**Two ways to bring a state up to date, both exactly equal to a rebuild.** A customer's row
depends only on that customer's orders. :func:`update_state` takes *all* stored orders (any
status) of the customers touched and recomputes them, so ``update_state(build_state(before),
all_orders_of(touched))`` is ``build_state(before + today)`` row for row. The store's daily run
does less (:mod:`huitouke.segments.fold`): new paid orders are added to their customers' rows and
spend rows, and only a customer with a refund, a cancellation or a late order is recomputed from
all their orders.

The state depends on the category grouping of the playbook; when
:meth:`~huitouke.segments.settings.SegmentSettings.state_fingerprint` changes, rebuild it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from huitouke import records
from huitouke.pii import get_logger
from huitouke.segments.settings import SegmentSettings
from huitouke.store.schema import customer_spend, customer_state

log = get_logger(__name__)

__all__ = ["STATE_COLUMNS", "build_state", "empty_state", "update_state"]

# The state and spend rows are the rows of their tables (huitouke.store.schema).
STATE_COLUMNS: tuple[str, ...] = tuple(customer_state.columns.keys())
SPEND_COLUMNS: tuple[str, ...] = tuple(customer_spend.columns.keys())
SPEND_KEY: tuple[str, ...] = tuple(customer_spend.primary_key.columns.keys())  # customer, group
ORDER_INPUT_COLUMNS: tuple[str, ...] = records.PAYMENT_FIELDS
LINE_INPUT_COLUMNS: tuple[str, ...] = ("order_id", "category", "amount_cents")
# Optional in the orders: the part of an order's amount refunded so far (partial refunds).
REFUND_COLUMN = "refunded_cents"

# Dense (customers x groups) spend matrix up to this many cells, else a sort-based path.
_DENSE_CELLS = 64_000_000
_NAT = np.iinfo(np.int64).min


def empty_spend() -> pd.DataFrame:
    """Spend rows of no customer, with the columns and dtypes of :func:`build_state_and_spend`'s."""
    none = np.empty(0, dtype=np.int64)
    return _Spend(none, none, np.empty(0, dtype=object), none, none).frame(pd.array([], dtype="str"))


def empty_state() -> pd.DataFrame:
    """A state with no customer, with the columns and dtypes of :func:`build_state`'s result."""
    return _StateArrays(
        pd.Series([], dtype="str"),
        *(np.empty(0, dtype=np.int64) for _ in range(6)),
        np.empty(0, dtype=object),
        np.empty(0, dtype=object),
    ).frame()


def build_state(
    orders: pd.DataFrame,
    lines: pd.DataFrame | None = None,
    *,
    settings: SegmentSettings | None = None,
    until: date | None = None,
) -> pd.DataFrame:
    """The state of every customer from their orders; see :func:`build_state_and_spend`."""
    return _build(orders, lines, settings, until, with_spend=False)[0]


def build_state_and_spend(
    orders: pd.DataFrame,
    lines: pd.DataFrame | None = None,
    *,
    settings: SegmentSettings | None = None,
    until: date | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The state and the spend rows (:data:`SPEND_COLUMNS`: the paid spend of each customer in
    each category group they bought from and the number of paid lines behind it, sorted by
    customer and group) from ``orders``.

    The spend rows are what the daily fold needs to move a customer's main group with a new
    order without reading the customer's history (:mod:`huitouke.segments.fold`).
    """
    state, spend = _build(orders, lines, settings, until, with_spend=True)
    assert spend is not None
    return state, spend


def _build(
    orders: pd.DataFrame,
    lines: pd.DataFrame | None,
    settings: SegmentSettings | None,
    until: date | None,
    with_spend: bool,
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """The state of every customer from their orders (shaped like the ``orders`` table) and
    order lines (``order_id``, ``category``, ``amount_cents``; ``None`` = no lines at all).

    ``until``: ignore orders whose business date is after it (the state as of that day; the
    statuses are the stored ones, so a later refund already counts).
    Vectorised: one hash of the customer ids, one lookup of the lines' order ids, then array
    reductions; 10 million orders take a few seconds.
    """
    started = time.perf_counter()
    settings = settings or SegmentSettings()
    missing = [c for c in ORDER_INPUT_COLUMNS if c not in orders.columns]
    if missing:
        raise ValueError(f"orders lack columns: {', '.join(missing)}")

    paid_at = _ns(orders["paid_at"])
    business = _ns(orders["business_date"])
    all_codes, all_ids = pd.factorize(orders["customer_id"])
    keep = _paid_mask(orders["status"]) & (paid_at != _NAT) & (business != _NAT) & (all_codes >= 0)
    if until is not None:
        keep &= business <= np.datetime64(until, "ns").astype(np.int64)
    rows = np.flatnonzero(keep)
    if rows.size == 0:
        return empty_state(), (empty_spend() if with_spend else None)
    paid_at, business = paid_at[rows], business[rows]
    codes, customer_ids = _sorted_codes(all_codes[rows], all_ids)
    del all_codes
    paid = _Paid.of(rows, codes, paid_amounts(orders)[rows], len(customer_ids))
    first_at, last_at = _first_and_last(codes, paid_at, paid.customers)
    first_day, last_day = _first_and_last(codes, business, paid.customers)
    source = _first_sources(orders, paid, paid_at, first_at)
    group, spend = _group_spend(orders, lines, paid, settings, with_spend)
    state = _StateArrays(
        customer_ids, first_at, last_at, first_day, last_day, paid.count, paid.total, group, source
    ).frame()
    log.debug(
        "built state of %d customers from %d paid orders in %.3fs",
        paid.customers,
        rows.size,
        time.perf_counter() - started,
    )
    return state, (None if spend is None else spend.frame(customer_ids))


def update_state(
    state: pd.DataFrame,
    orders: pd.DataFrame,
    lines: pd.DataFrame | None = None,
    *,
    settings: SegmentSettings | None = None,
    until: date | None = None,
) -> pd.DataFrame:
    """``state`` with every customer of ``orders`` recomputed from ``orders`` and ``lines``.

    ``orders`` must hold *all* stored orders (any status) of each customer it mentions, and
    ``lines`` all their lines; see the module docstring for why this equals a full rebuild.
    A customer whose orders are all refunded or cancelled leaves the state.
    """
    if orders.empty:
        return state
    touched = pd.Series(orders["customer_id"].astype("str").unique(), dtype="str")
    fresh = build_state(orders, lines, settings=settings, until=until)
    kept = state[~state["customer_id"].isin(touched)]
    parts = [frame for frame in (kept, fresh) if len(frame)]
    if not parts:
        return empty_state()
    merged = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    merged = merged.sort_values("customer_id", kind="stable", ignore_index=True)
    log.debug(
        "updated state: %d customers recomputed (%d with paid orders), %d in total",
        len(touched),
        len(fresh),
        len(merged),
    )
    return merged


# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _StateArrays:
    """A state's columns as arrays before they are a frame (:data:`STATE_COLUMNS`): times and
    business dates as int64 nanoseconds; the average order value follows from the total."""

    customer_id: pd.Series | pd.api.extensions.ExtensionArray
    first_paid_at: np.ndarray
    last_paid_at: np.ndarray
    first_business_date: np.ndarray
    last_business_date: np.ndarray
    paid_orders: np.ndarray
    total_cents: np.ndarray
    main_category_group: pd.api.extensions.ExtensionArray | np.ndarray
    acquisition_source: pd.api.extensions.ExtensionArray | np.ndarray

    def frame(self) -> pd.DataFrame:
        aov = (2 * self.total_cents + self.paid_orders) // (2 * self.paid_orders)  # half up
        return pd.DataFrame(
            {
                "customer_id": pd.Series(self.customer_id, dtype="str"),
                "first_paid_at": self.first_paid_at.astype("datetime64[ns]"),
                "last_paid_at": self.last_paid_at.astype("datetime64[ns]"),
                "first_business_date": self.first_business_date.astype("datetime64[ns]"),
                "last_business_date": self.last_business_date.astype("datetime64[ns]"),
                "paid_orders": self.paid_orders,
                "total_cents": self.total_cents,
                "aov_cents": aov.astype(np.int64),
                "main_category_group": pd.Series(self.main_category_group, dtype="str"),
                "acquisition_source": pd.Series(self.acquisition_source, dtype="str"),
            },
            copy=False,  # a block per column: no copy of a million rows into 2-D blocks
        )


@dataclass(frozen=True)
class _Paid:
    """The paid orders a state is built from: their rows in the orders, each one's customer code
    (0..n-1) and amount; per customer, the number of paid orders and their total."""

    rows: np.ndarray
    codes: np.ndarray
    amount: np.ndarray  # int64 cents
    count: np.ndarray  # int64, per customer
    total: np.ndarray  # int64 cents, per customer

    @classmethod
    def of(cls, rows: np.ndarray, codes: np.ndarray, amount: np.ndarray, n: int) -> _Paid:
        count = np.bincount(codes, minlength=n).astype(np.int64, copy=False)
        total = np.bincount(codes, weights=amount, minlength=n)
        if total.max(initial=0) >= 2**53:  # float sums are exact below 2**53 cents; beyond, sum in int64
            total = pd.Series(amount).groupby(codes).sum().to_numpy()
        return cls(rows, codes, amount, count, total.astype(np.int64))

    @property
    def customers(self) -> int:
        return self.count.size


def _first_and_last(codes: np.ndarray, values: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per customer code, the smallest and the largest of the values (int64)."""
    first = np.full(n, np.iinfo(np.int64).max)
    np.minimum.at(first, codes, values)
    last = np.full(n, _NAT)
    np.maximum.at(last, codes, values)
    return first, last


def _first_sources(
    orders: pd.DataFrame, paid: _Paid, paid_at: np.ndarray, first_at: np.ndarray
) -> pd.api.extensions.ExtensionArray:
    """Per customer, the acquisition source of the first paid order (a missing one: organic)."""
    first_row = _first_order_rows(paid.codes, paid_at, first_at, orders["order_id"], paid.rows)
    source = orders["acquisition_source"].iloc[paid.rows[first_row]]
    if source.isna().any():
        source = source.astype("str").fillna(records.ORGANIC)
    return _str_values(source)


def _ns(values: pd.Series) -> np.ndarray:
    """Datetimes (or dates, or ISO strings) as int64 nanoseconds; NaT as int64 min."""
    if not pd.api.types.is_datetime64_dtype(values.dtype):
        if isinstance(values.dtype, pd.DatetimeTZDtype):
            values = values.dt.tz_convert("UTC").dt.tz_localize(None)
        else:
            values = pd.to_datetime(values)
    return values.to_numpy(dtype="datetime64[ns]").view(np.int64)


def _sorted_codes(
    codes: np.ndarray, uniques: pd.Index
) -> tuple[np.ndarray, pd.api.extensions.ExtensionArray]:
    """Codes renumbered 0..k-1 in the sort order of the ids that occur, and those ids (``str``)."""
    used = np.flatnonzero(np.bincount(codes, minlength=len(uniques)))
    ids = _str_values(uniques).take(used)
    order = np.asarray(ids.argsort(kind="stable"))
    rank = np.empty(len(uniques), dtype=np.int64)
    rank[used[order]] = np.arange(used.size)
    return rank[codes], ids.take(order)


def _str_values(values: pd.Series | pd.Index) -> pd.api.extensions.ExtensionArray:
    """Values as a pandas ``str`` array (arrow-backed, cheap to take from)."""
    if values.dtype != "str":
        values = values.astype("str")
    return values.array


def paid_amounts(orders: pd.DataFrame) -> np.ndarray:
    """What each order counts as spend when it is paid: ``amount_cents`` less ``refunded_cents``
    (a partial refund; the column is optional, absent: none), never below 0. int64 cents."""
    amount = _int_values(orders["amount_cents"])
    if REFUND_COLUMN in orders.columns:
        amount = np.maximum(amount - _int_values(orders[REFUND_COLUMN]), 0)
    return amount


def _int_values(values: pd.Series) -> np.ndarray:
    return pd.to_numeric(values).to_numpy(dtype=np.int64, na_value=0)


def _paid_mask(status: pd.Series) -> np.ndarray:
    paid = sorted(records.PAID_STATUSES)
    if isinstance(status.dtype, pd.CategoricalDtype):
        hit = np.isin(np.asarray(status.cat.categories, dtype=object), paid)
        codes = status.cat.codes.to_numpy()
        return np.append(hit, False)[np.where(codes < 0, len(hit), codes)]
    return status.isin(paid).to_numpy(dtype=bool)


def _first_order_rows(
    codes: np.ndarray, paid_at: np.ndarray, first_at: np.ndarray, order_id: pd.Series, rows: np.ndarray
) -> np.ndarray:
    """Per customer, the index (into the paid rows) of the first order: earliest paid_at, then
    the smallest order_id."""
    candidate = np.flatnonzero(paid_at == first_at[codes])
    per_customer = np.bincount(codes[candidate], minlength=first_at.size)
    first = np.empty(first_at.size, dtype=np.int64)
    single = per_customer[codes[candidate]] == 1
    first[codes[candidate[single]]] = candidate[single]
    tied = candidate[~single]
    if tied.size:
        # Rank the tied orders' ids (one string sort), keep each customer's smallest.
        rank = np.empty(tied.size, dtype=np.int64)
        rank[pc.array_sort_indices(_arrow_strings(order_id.iloc[rows[tied]])).to_numpy()] = np.arange(
            tied.size
        )
        smallest = np.full(first.size, np.iinfo(np.int64).max)
        np.minimum.at(smallest, codes[tied], rank)
        winner = tied[rank == smallest[codes[tied]]]
        first[codes[winner]] = winner
    return first


def string_array(values: pd.Series) -> pa.Array:
    """A text column as one Arrow ``string`` array (pandas' ``str`` columns are Arrow already)."""
    if values.dtype != "str":
        values = values.astype("str")
    array = pa.array(values)
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    return array if array.type == pa.string() else array.cast(pa.string())


def _arrow_strings(values: pd.Series) -> pa.Array:
    """A pyarrow large_string array of the values (no copy for pandas' arrow-backed ``str``)."""
    if isinstance(values.dtype, pd.CategoricalDtype) or values.dtype != "str":
        values = values.astype("str")
    array = pa.array(values)
    if array.type != pa.large_string():
        array = array.cast(pa.large_string())
    return array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array


def _categories(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(codes, categories as an object array); missing values get code len(categories)."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        codes = values.cat.codes.to_numpy().astype(np.int64)
        categories = np.asarray(values.cat.categories.astype("str"), dtype=object)
    else:
        codes, uniques = pd.factorize(values)
        categories = np.asarray(pd.Index(uniques).astype("str"), dtype=object)
    codes[codes < 0] = len(categories)
    return codes, categories


def _group_spend(
    orders: pd.DataFrame, lines: pd.DataFrame | None, paid: _Paid, settings: SegmentSettings, with_spend: bool
) -> tuple[pd.api.extensions.ExtensionArray, _Spend | None]:
    """Per customer, the category group with the largest paid spend (ties: alphabetical), and
    (``with_spend``) the spend of every (customer, group) pair the customer bought from."""
    n = paid.customers
    unknown = settings.unknown_category_group
    if lines is None or lines.empty:  # every paid order counts its whole amount as unknown
        group = pd.array([unknown], dtype="str").take(np.zeros(n, dtype=np.intp))
        spend = _Spend(
            np.arange(n),
            np.zeros(n, dtype=np.int64),
            np.array([unknown], dtype=object),
            paid.total,
            paid.count,
        )
        return group, (spend if with_spend else None)
    key, cents, groups = _spend_keys(orders, lines, paid, settings)
    g = len(groups)
    spend = None
    if n * g <= _DENSE_CELLS:
        totals = np.bincount(key, weights=cents, minlength=n * g)
        lines_of = np.bincount(key, minlength=n * g)
        bought = lines_of > 0
        if with_spend:
            pairs = np.flatnonzero(bought)  # sorted by customer, then group
            spend = _Spend(pairs // g, pairs % g, groups, totals[pairs].astype(np.int64), lines_of[pairs])
        totals[~bought] = -1.0  # a group the customer never bought from
        best = np.argmax(totals.reshape(n, g), axis=1)  # the first maximum: alphabetical
    else:
        by_pair = pd.Series(cents).groupby(key, sort=True).agg(["sum", "size"])
        pairs = by_pair.index.to_numpy(dtype=np.int64)
        spend = _Spend(
            pairs // g,
            pairs % g,
            groups,
            by_pair["sum"].to_numpy(dtype=np.int64),
            by_pair["size"].to_numpy(dtype=np.int64),
        )
        best = spend.main_groups(n)
        if not with_spend:
            spend = None
    return pd.array(groups.tolist(), dtype="str").take(best), spend


def _spend_keys(
    orders: pd.DataFrame, lines: pd.DataFrame, paid: _Paid, settings: SegmentSettings
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every paid line, then every paid order without lines (its whole amount in the unknown
    category): the key ``customer * len(groups) + group`` and the cents; and the groups, sorted
    (ties go alphabetical)."""
    missing = [c for c in LINE_INPUT_COLUMNS if c not in lines.columns]
    if missing:
        raise ValueError(f"order lines lack columns: {', '.join(missing)}")
    # Each line's paid order (index into `paid.rows`), or -1 for lines of other orders.
    found = pc.index_in(_arrow_strings(lines["order_id"]), value_set=_arrow_strings(orders["order_id"]))
    order_row = pc.fill_null(found, -1).to_numpy(zero_copy_only=False)
    paid_index = np.full(len(orders) + 1, -1, dtype=np.int64)
    paid_index[paid.rows] = np.arange(paid.rows.size)
    line_order = paid_index[order_row]
    del found, order_row, paid_index
    line_rows = np.flatnonzero(line_order >= 0)
    line_order = line_order[line_rows]

    unknown = settings.unknown_category_group
    cat_codes, categories = _categories(lines["category"])
    mapping = settings.category_group_map()
    cat_groups = np.array([mapping.get(c, c) for c in categories] + [unknown], dtype=object)
    groups, group_of_cat = np.unique(cat_groups, return_inverse=True)
    g = len(groups)
    key = paid.codes[line_order]
    key *= g
    key += group_of_cat[cat_codes[line_rows]]
    cents = _int_values(lines["amount_cents"])[line_rows]
    bare = np.flatnonzero(np.bincount(line_order, minlength=paid.rows.size) == 0)
    del line_order, line_rows, cat_codes
    if bare.size:
        key = np.concatenate([key, paid.codes[bare] * g + int(np.searchsorted(groups, unknown))])
        cents = np.concatenate([cents, paid.amount[bare]])
    return key, cents, groups


@dataclass(frozen=True)
class _Spend:
    """Paid spend per (customer, category group) pair, one entry per pair the customer bought
    from, sorted by customer code then group index; ``groups`` sorted alphabetically."""

    customer: np.ndarray  # customer code (0..n-1)
    group: np.ndarray  # index into groups
    groups: np.ndarray  # group names, sorted
    cents: np.ndarray  # int64
    lines: np.ndarray  # int64: paid lines (an order without lines counts one)

    def main_groups(self, n: int) -> np.ndarray:
        """Per customer code, the group index with the largest spend (ties: the first, i.e.
        alphabetical)."""
        order = np.lexsort((self.group, -self.cents, self.customer))
        first = order[np.r_[True, self.customer[order][1:] != self.customer[order][:-1]]]
        best = np.zeros(n, dtype=np.int64)
        best[self.customer[first]] = self.group[first]
        return best

    def frame(self, customer_ids: pd.api.extensions.ExtensionArray) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "customer_id": pd.Series(customer_ids.take(self.customer), dtype="str"),
                "category_group": pd.Series(
                    pd.array(self.groups.tolist(), dtype="str").take(self.group), dtype="str"
                ),
                "spend_cents": self.cents.astype(np.int64),
                "paid_lines": self.lines.astype(np.int64),
            }
        )
