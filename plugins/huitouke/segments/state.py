"""Per-customer state from paid orders: a full build, and the daily incremental update.

The state is a plain function of a customer's stored orders and their lines, like
``lifetimes.utils.summary_data_from_transaction_data``: one row per customer who has at least one
paid order (status in :data:`huitouke.intake.records.PAID_STATUSES`). Refunded, cancelled and
pending orders count for nothing; a customer whose every order was refunded has no row.

State columns (:data:`STATE_COLUMNS`), one row per customer, sorted by ``customer_id``:

=======================  ==========================================================================
``customer_id``          str
``first_paid_at``        datetime64[ns], naive UTC: the first paid order's payment time
``last_paid_at``         datetime64[ns], naive UTC: the last paid order's payment time
``first_business_date``  datetime64[ns] (midnight): shop-local date of the first paid order
``last_business_date``   datetime64[ns] (midnight): shop-local date of the last paid order
``paid_orders``          int64: number of paid orders
``total_cents``          int64: sum of the paid orders' ``amount_cents``
``aov_cents``            int64: average order value, ``total_cents / paid_orders`` rounded half up
``main_category_group``  str: the category group with the largest paid spend over the customer's
                         order lines (ties: alphabetical). An order without lines counts its whole
                         amount as the unknown category (``segments.unknown_category_group``).
``acquisition_source``   str: the first paid order's acquisition source (ties on the payment time:
                         the smallest order_id)
=======================  ==========================================================================

The two business-date columns are helpers: lifecycle windows count shop-local days, and the
payment times are UTC. Nothing else (no per-group spend) is kept, because of how the incremental
update is defined:

**Incremental update, exactly equal to a rebuild.** A customer's row depends only on that
customer's orders. :func:`update_state` takes *all* stored orders (any status) of every customer
touched today — customers with a new order or an order whose status changed — recomputes those
customers with :func:`build_state` and replaces their rows. Every other row is unchanged by
definition, so ``update_state(build_state(before), all_orders_of(touched))`` is
``build_state(before + today)`` row for row. The store side is one indexed query::

    SELECT ... FROM orders WHERE customer_id IN (SELECT customer_id FROM orders
                                                  WHERE loaded_at / status_changed_at in today's run)

(``orders.customer_id`` is indexed), and the same for their lines. Additive counters
(+1 order, +amount) were rejected: a refund of an old order must be subtracted, and the first order,
its source and the main group cannot be undone without the customer's history anyway.

The state depends on the category grouping of the playbook; when
:meth:`~huitouke.segments.settings.SegmentSettings.state_fingerprint` changes, rebuild it.
"""

from __future__ import annotations

import time
from datetime import date

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from huitouke.intake import records
from huitouke.pii import get_logger
from huitouke.segments.settings import SegmentSettings

log = get_logger(__name__)

__all__ = ["STATE_COLUMNS", "build_state", "empty_state", "update_state"]

STATE_COLUMNS: tuple[str, ...] = (
    "customer_id",
    "first_paid_at",
    "last_paid_at",
    "first_business_date",
    "last_business_date",
    "paid_orders",
    "total_cents",
    "aov_cents",
    "main_category_group",
    "acquisition_source",
)
ORDER_INPUT_COLUMNS: tuple[str, ...] = (
    "order_id",
    "customer_id",
    "paid_at",
    "business_date",
    "status",
    "amount_cents",
    "acquisition_source",
)
LINE_INPUT_COLUMNS: tuple[str, ...] = ("order_id", "category", "amount_cents")

# Dense (customers x groups) spend matrix up to this many cells, else a sort-based path.
_DENSE_CELLS = 64_000_000
_NAT = np.iinfo(np.int64).min


def empty_state() -> pd.DataFrame:
    """A state with no customer, with the columns and dtypes of :func:`build_state`'s result."""
    return _frame(
        pd.Series([], dtype="str"),
        *(np.empty(0, dtype=np.int64) for _ in range(7)),
        np.empty(0, dtype=object),
        np.empty(0, dtype=object),
    )


def build_state(
    orders: pd.DataFrame,
    lines: pd.DataFrame | None = None,
    *,
    settings: SegmentSettings | None = None,
    until: date | None = None,
) -> pd.DataFrame:
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
        return empty_state()
    paid_at, business = paid_at[rows], business[rows]
    amount = _int_values(orders["amount_cents"])[rows]
    codes, customer_ids = _sorted_codes(all_codes[rows], all_ids)
    del all_codes
    n = len(customer_ids)

    count = np.bincount(codes, minlength=n)
    total = np.bincount(codes, weights=amount, minlength=n)
    if total.max(initial=0) >= 2**53:  # float sums are exact below 2**53 cents; beyond, sum in int64
        total = pd.Series(amount).groupby(codes).sum().to_numpy()
    total = total.astype(np.int64)
    first_at = np.full(n, np.iinfo(np.int64).max)
    np.minimum.at(first_at, codes, paid_at)
    last_at = np.full(n, _NAT)
    np.maximum.at(last_at, codes, paid_at)
    first_day = np.full(n, np.iinfo(np.int64).max)
    np.minimum.at(first_day, codes, business)
    last_day = np.full(n, _NAT)
    np.maximum.at(last_day, codes, business)
    aov = (2 * total + count) // (2 * count)  # half up

    first_row = _first_order_rows(codes, paid_at, first_at, orders["order_id"], rows)
    source = orders["acquisition_source"].iloc[rows[first_row]]
    if source.isna().any():
        source = source.astype("str").fillna(records.ORGANIC)
    source = _str_values(source)
    group = _main_group(orders, lines, rows, codes, n, amount, settings)

    state = _frame(
        customer_ids,
        first_at,
        last_at,
        first_day,
        last_day,
        count.astype(np.int64),
        total,
        aov,
        group,
        source,
    )
    log.debug(
        "built state of %d customers from %d paid orders in %.3fs",
        n,
        rows.size,
        time.perf_counter() - started,
    )
    return state


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


def _frame(
    customer_id: pd.Series | pd.api.extensions.ExtensionArray,
    first_at: np.ndarray,
    last_at: np.ndarray,
    first_day: np.ndarray,
    last_day: np.ndarray,
    count: np.ndarray,
    total: np.ndarray,
    aov: np.ndarray,
    group: pd.api.extensions.ExtensionArray | np.ndarray,
    source: pd.api.extensions.ExtensionArray | np.ndarray,
) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": pd.Series(customer_id, dtype="str"),
            "first_paid_at": first_at.astype("datetime64[ns]"),
            "last_paid_at": last_at.astype("datetime64[ns]"),
            "first_business_date": first_day.astype("datetime64[ns]"),
            "last_business_date": last_day.astype("datetime64[ns]"),
            "paid_orders": count,
            "total_cents": total,
            "aov_cents": aov.astype(np.int64),
            "main_category_group": pd.Series(group, dtype="str"),
            "acquisition_source": pd.Series(source, dtype="str"),
        }
    )


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


def _main_group(
    orders: pd.DataFrame,
    lines: pd.DataFrame | None,
    rows: np.ndarray,
    codes: np.ndarray,
    n: int,
    amount: np.ndarray,
    settings: SegmentSettings,
) -> pd.api.extensions.ExtensionArray:
    """Per customer, the category group with the largest paid spend (ties: alphabetical)."""
    unknown = settings.unknown_category_group
    if lines is None or lines.empty:
        return pd.array([unknown], dtype="str").take(np.zeros(n, dtype=np.intp))
    missing = [c for c in LINE_INPUT_COLUMNS if c not in lines.columns]
    if missing:
        raise ValueError(f"order lines lack columns: {', '.join(missing)}")
    # Each line's paid order (index into `rows`), or -1 for lines of other orders.
    found = pc.index_in(_arrow_strings(lines["order_id"]), value_set=_arrow_strings(orders["order_id"]))
    order_row = pc.fill_null(found, -1).to_numpy(zero_copy_only=False)
    paid_index = np.full(len(orders) + 1, -1, dtype=np.int64)
    paid_index[rows] = np.arange(rows.size)
    line_order = paid_index[order_row]
    del found, order_row, paid_index
    line_rows = np.flatnonzero(line_order >= 0)
    line_order = line_order[line_rows]

    cat_codes, categories = _categories(lines["category"])
    mapping = settings.category_group_map()
    cat_groups = np.array([mapping.get(c, c) for c in categories] + [unknown], dtype=object)
    groups, group_of_cat = np.unique(cat_groups, return_inverse=True)  # sorted: ties go alphabetical
    g = len(groups)
    # key = customer * g + group, for every paid line; then orders without lines, which count their
    # whole amount as the unknown category.
    key = codes[line_order]
    key *= g
    key += group_of_cat[cat_codes[line_rows]]
    cents = _int_values(lines["amount_cents"])[line_rows]
    bare = np.flatnonzero(np.bincount(line_order, minlength=rows.size) == 0)
    del line_order, line_rows, cat_codes
    if bare.size:
        key = np.concatenate([key, codes[bare] * g + int(np.searchsorted(groups, unknown))])
        cents = np.concatenate([cents, amount[bare]])
    if n * g <= _DENSE_CELLS:
        spend = np.bincount(key, weights=cents, minlength=n * g)
        spend[np.bincount(key, minlength=n * g) == 0] = -1.0  # a group the customer never bought from
        best = np.argmax(spend.reshape(n, g), axis=1)  # the first maximum: alphabetical
    else:
        by_group = (
            pd.DataFrame({"c": key // g, "g": key % g, "s": cents}).groupby(["c", "g"], sort=False)["s"].sum()
        )
        by_group = by_group.reset_index().sort_values(["c", "s", "g"], ascending=[True, False, True])
        by_group = by_group.drop_duplicates("c")
        best = np.empty(n, dtype=np.int64)
        best[by_group["c"].to_numpy()] = by_group["g"].to_numpy()
    return pd.array(groups.tolist(), dtype="str").take(best)
