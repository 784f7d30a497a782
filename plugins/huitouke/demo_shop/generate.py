"""Generating the demo shop: :func:`generate_shop`, one step per part of the shop.

The customers first (who they are: source, order-value level, propensity to come back, main
category, first order), then every order (first orders and repurchases, sorted by payment time),
their statuses, ids and lines, the bad rows, the people behind the customer ids, and the truth a
correct pipeline should find. Everything is vectorised with numpy (one loop per repurchase
"generation", never one per order), and one generator draws everything in a fixed order: the same
:class:`~huitouke.demo_shop.shop.ShopSpec` always gives byte-identical DataFrames.
"""

from __future__ import annotations

import time
import zoneinfo
from dataclasses import dataclass

import numpy as np
import pandas as pd

from huitouke.demo_shop.arrays import DAY, day_number, fmt_cents, fmt_seconds, take, to_str
from huitouke.demo_shop.days import day_weights, month_and_day, seconds_of_day
from huitouke.demo_shop.parameters import (
    BAD_AMOUNTS,
    BAD_PAID_AT,
    BAD_ROW_KINDS,
    BAD_STATUS,
    CANCEL_SHARE,
    CATEGORY_BY_TIER,
    CATEGORY_GAP_DAYS,
    GAP_SHAPE,
    LEVEL_SIGMA,
    LINES_PER_ORDER,
    MAX_ORDER_CENTS,
    MIN_ORDER_CENTS,
    ORDER_SIGMA,
    PRE_1111_PULL,
    PROPENSITY_CAP,
    PROPENSITY_INTERCEPT,
    PROPENSITY_SLOPE,
    QTY,
    REFUND_SHARE,
    REPEAT_CHANNEL_SHARE,
    SOURCE_LEVEL_MEAN,
    SOURCE_PROPENSITY_FACTOR,
    SOURCE_SHARE,
    SOURCES,
    STATUS_CODES,
    TIER_MID_AOV,
    TIER_PREMIUM_AOV,
    VALUE_TIERS,
    VOID_DELAY_SECONDS,
    flat_catalogue,
)
from huitouke.demo_shop.people import people
from huitouke.demo_shop.shop import DemoShop, ShopSpec
from huitouke.pii import get_logger
from huitouke.records import (
    CANCELLED,
    CATEGORIES,
    COMPLETED,
    FLASH_SALE,
    PAID,
    PAID_STATUSES,
    REFUNDED,
    SHIPPED,
)

log = get_logger(__name__)

_DEFAULT_SPEC = ShopSpec()  # a frozen dataclass: safe as a default


def generate_shop(spec: ShopSpec = _DEFAULT_SPEC) -> DemoShop:
    """Generate the demo shop described by ``spec`` (deterministic: same spec, same frames).

    Each step draws from the one generator in turn, so the order of the steps is part of the shop.
    """
    _check(spec)
    started = time.perf_counter()
    rng = np.random.default_rng(spec.seed)
    first_day, last_day = day_number(spec.start), day_number(spec.end)
    model = customer_model(rng, spec.customers, first_day, last_day)
    orders = _all_orders(rng, model, last_day)
    status, updated_ts = _order_statuses(rng, orders.day, orders.paid_ts, last_day)
    order_id = _order_ids(rng, orders.day, first_day)
    items = _items_frame(
        order_id, _lines(rng, orders.cents, model.main_category[orders.customer], orders.is_first)
    )
    bad = _choose_bad_rows(rng, spec.bad_row_share, orders.count)
    customer_ids = _customer_ids(spec.customers)
    orders_frame = _orders_frame(rng, orders, status, updated_ts, order_id, customer_ids, bad)
    customers = _customers_frame(customer_ids, people(rng, spec.customers, model.first_ts))
    truth = _truth(model, orders, status, bad, customer_ids)
    bad_rows = pd.DataFrame(
        {"order_id": pd.Series(order_id.array.take(bad.index)), "kind": take(BAD_ROW_KINDS, bad.kind)}
    )
    log.info(
        "generated demo shop (%s to %s, %s): %d customers, %d orders, %d lines, %d bad rows in %.2fs",
        spec.start,
        spec.end,
        spec.timezone,
        spec.customers,
        orders.count,
        len(items),
        bad.index.size,
        time.perf_counter() - started,
    )
    return DemoShop(customers=customers, orders=orders_frame, items=items, truth=truth, bad_rows=bad_rows)


def _check(spec: ShopSpec) -> None:
    """Refuse a spec no shop can be generated from (ValueError naming the field)."""
    if spec.customers < 1:
        raise ValueError("ShopSpec.customers must be at least 1")
    if spec.end < spec.start:
        raise ValueError(f"ShopSpec.end ({spec.end}) is before ShopSpec.start ({spec.start})")
    if not 0.0 <= spec.bad_row_share < 1.0:
        raise ValueError("ShopSpec.bad_row_share must be in [0, 1)")
    try:
        zoneinfo.ZoneInfo(spec.timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as error:
        raise ValueError(f"ShopSpec.timezone {spec.timezone!r} is not a known time zone") from error


# --------------------------------------------------------------------------------------------------
# The customers: who they really are
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CustomerModel:
    """Per customer, in the order of the customer ids (that of the first purchase): the truth."""

    source: np.ndarray  # acquisition source, codes into SOURCES
    level: np.ndarray  # personal mean order value, CNY
    tier: np.ndarray  # value tier by that level, codes into VALUE_TIERS
    propensity: np.ndarray  # probability of coming back after each order
    main_category: np.ndarray  # codes into CATEGORIES
    gap_days: np.ndarray  # own mean gap between orders, days
    first_ts: np.ndarray  # first order, epoch seconds in shop-local time


def customer_model(rng: np.random.Generator, n: int, first_day: int, last_day: int) -> CustomerModel:
    """Per customer: source, personal AOV level, propensity, main category, gap, first order time."""
    days = np.arange(first_day, last_day + 1)
    weights, flash_weights = day_weights(rng, days)

    source = rng.choice(len(SOURCES), size=n, p=SOURCE_SHARE).astype(np.int8)
    z = rng.standard_normal(n)
    level = SOURCE_LEVEL_MEAN[source] * np.exp(LEVEL_SIGMA * z - LEVEL_SIGMA**2 / 2)
    tier = np.digitize(level, [TIER_MID_AOV, TIER_PREMIUM_AOV]).astype(np.int8)
    standard = (np.log(level) - np.log(SOURCE_LEVEL_MEAN[0])) / LEVEL_SIGMA
    propensity = SOURCE_PROPENSITY_FACTOR[source] / (
        1.0 + np.exp(-(PROPENSITY_INTERCEPT + PROPENSITY_SLOPE * standard))
    )
    propensity = np.minimum(propensity, PROPENSITY_CAP)
    main_category = _choice_index(rng, CATEGORY_BY_TIER, tier).astype(np.int8)
    category_gap = np.array([CATEGORY_GAP_DAYS[c] for c in CATEGORIES])
    gap_days = category_gap[main_category] * np.exp(0.3 * rng.standard_normal(n))

    first = np.empty(n, dtype=np.int64)
    is_flash = source == SOURCES.index(FLASH_SALE)
    first[~is_flash] = days[rng.choice(days.size, size=int((~is_flash).sum()), p=weights)]
    first[is_flash] = days[rng.choice(days.size, size=int(is_flash.sum()), p=flash_weights)]
    first_ts = first * DAY + seconds_of_day(rng, first)

    # Customer ids follow the order of the first purchase, as a shop's registration would.
    order = np.argsort(first_ts, kind="stable")
    return CustomerModel(
        source=source[order],
        level=level[order],
        tier=tier[order],
        propensity=propensity[order],
        main_category=main_category[order],
        gap_days=gap_days[order],
        first_ts=first_ts[order],
    )


def _choice_index(rng: np.random.Generator, probabilities: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """For each row r, an index drawn from probabilities[r] (rows of a small matrix)."""
    cumulative = np.cumsum(probabilities, axis=1)
    cumulative /= cumulative[:, -1:]
    u = rng.random(rows.size)
    picked = (u[:, None] >= cumulative[rows]).sum(axis=1)
    return np.minimum(picked, probabilities.shape[1] - 1)


def _customer_ids(n: int) -> pd.Series:
    """'c000001', 'c000002', ...: numbered in the order of the first purchase, six digits or more."""
    width = max(6, len(str(n)))
    return to_str(np.char.add("c", np.char.zfill((np.arange(n) + 1).astype(str), width)))


# --------------------------------------------------------------------------------------------------
# The orders: when, how won, how much, in which status
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Orders:
    """Every order as parallel arrays, sorted by payment time (then by customer)."""

    customer: np.ndarray  # the customer's position in the customer model
    is_first: np.ndarray  # the customer's first order
    paid_ts: np.ndarray  # payment, epoch seconds in shop-local time
    day: np.ndarray  # payment day, epoch day number
    channel: np.ndarray  # how this order was won, codes into SOURCES
    cents: np.ndarray  # paid amount

    @property
    def count(self) -> int:
        return self.customer.size


def _all_orders(rng: np.random.Generator, model: CustomerModel, last_day: int) -> _Orders:
    """All orders (first orders, then repeats), sorted by payment time."""
    repeat_customer, repeat_day = _repeat_orders(rng, model, last_day)
    n = model.first_ts.size
    m = n + repeat_customer.size
    customer = np.concatenate([np.arange(n), repeat_customer])
    is_first = np.arange(m) < n
    paid_ts = np.concatenate([model.first_ts, repeat_day * DAY + seconds_of_day(rng, repeat_day)])
    repeat_channel = rng.choice(len(SOURCES), size=m - n, p=REPEAT_CHANNEL_SHARE).astype(np.int8)
    channel = np.concatenate([model.source, repeat_channel])
    noise = np.exp(ORDER_SIGMA * rng.standard_normal(m) - ORDER_SIGMA**2 / 2)
    cents = np.clip(np.round(model.level[customer] * noise * 100), MIN_ORDER_CENTS, MAX_ORDER_CENTS).astype(
        np.int64
    )
    order = np.lexsort((customer, paid_ts))
    paid_ts = paid_ts[order]
    return _Orders(
        customer=customer[order],
        is_first=is_first[order],
        paid_ts=paid_ts,
        day=paid_ts // DAY,
        channel=channel[order],
        cents=cents[order],
    )


def _repeat_orders(
    rng: np.random.Generator, model: CustomerModel, last_day: int
) -> tuple[np.ndarray, np.ndarray]:
    """Later orders of every customer: (customer index, day). One loop per generation of repurchase."""
    first_day = model.first_ts // DAY
    active = np.arange(first_day.size)
    day = first_day.copy()
    customers: list[np.ndarray] = []
    days: list[np.ndarray] = []
    while active.size:
        back = rng.random(active.size) < model.propensity[active]
        gap = np.ceil(rng.gamma(GAP_SHAPE, model.gap_days[active] / GAP_SHAPE)).astype(np.int64)
        next_day = day + np.maximum(gap, 1)
        # Customers due early in November wait for 11.11.
        month, dom = month_and_day(next_day)
        wait = (month == 11) & (dom <= 10) & (rng.random(active.size) < PRE_1111_PULL)
        next_day = np.where(wait, next_day + (11 - dom), next_day)
        keep = back & (next_day <= last_day)
        active = active[keep]
        day = next_day[keep]
        customers.append(active)
        days.append(day)
    return np.concatenate(customers), np.concatenate(days)


def _order_statuses(
    rng: np.random.Generator, day: np.ndarray, paid_ts: np.ndarray, last_day: int
) -> tuple[np.ndarray, np.ndarray]:
    """Each order's status at the end of ``last_day`` (codes into STATUS_CODES) and its updated_at.

    Older orders are completed, the last week's are shipped or still paid; about 3% are refunded
    and 1% cancelled 1-10 days after payment, unless that moment is after ``last_day``.
    """
    m = day.size
    status = np.full(m, STATUS_CODES.index(COMPLETED), dtype=np.int8)
    age = last_day - day
    u = rng.random(m)
    last_week, last_two_days = (age <= 6), (age <= 1)
    status[last_week & (u < 0.85)] = STATUS_CODES.index(SHIPPED)
    status[last_week & (u >= 0.85)] = STATUS_CODES.index(PAID)
    status[last_two_days & (u < 0.70)] = STATUS_CODES.index(PAID)
    status[last_two_days & (u >= 0.70)] = STATUS_CODES.index(SHIPPED)
    void = rng.random(m)
    delay = rng.integers(VOID_DELAY_SECONDS[0], VOID_DELAY_SECONDS[1] + 1, size=m)
    in_time = paid_ts + delay < (last_day + 1) * DAY  # later refunds have not happened yet by `end`
    refunded = (void < REFUND_SHARE) & in_time
    cancelled = (void >= REFUND_SHARE) & (void < REFUND_SHARE + CANCEL_SHARE) & in_time
    status[refunded] = STATUS_CODES.index(REFUNDED)
    status[cancelled] = STATUS_CODES.index(CANCELLED)
    return status, np.where(refunded | cancelled, paid_ts + delay, paid_ts)


def _order_ids(rng: np.random.Generator, day: np.ndarray, first_day: int) -> pd.Series:
    """'T' + payment date + a serial unique within the day (orders sorted by payment time)."""
    date_digits = np.datetime_as_string(day.astype("datetime64[D]"), unit="D").astype("U10")
    date_digits = np.ascontiguousarray(date_digits.view("U1").reshape(-1, 10)[:, [0, 1, 2, 3, 5, 6, 8, 9]])
    date_digits = date_digits.view("U8").reshape(-1)
    serial = np.arange(day.size) - np.searchsorted(day, day, side="left")
    day_base = rng.integers(100_000, 5_000_000, size=int(day.max(initial=first_day)) - first_day + 1)
    serial = np.char.zfill((serial + day_base[day - first_day]).astype(str), 8)
    return to_str(np.char.add(np.char.add("T", date_digits), serial))


# --------------------------------------------------------------------------------------------------
# The order lines: what was bought
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Lines:
    """Every order line as parallel integer arrays, in order and line-number order."""

    order: np.ndarray  # the order's position in _Orders
    line_no: np.ndarray  # 1, 2, 3 within the order
    product: np.ndarray  # position in the flat catalogue
    category: np.ndarray  # codes into CATEGORIES
    qty: np.ndarray
    cents: np.ndarray  # the line's share of the paid amount


def _lines(
    rng: np.random.Generator, order_cents: np.ndarray, order_main: np.ndarray, is_first: np.ndarray
) -> _Lines:
    """Order lines: 1-3 per order, favouring the customer's main category, summing to the order."""
    catalogue = flat_catalogue()
    n_lines = rng.choice(LINES_PER_ORDER[0], size=order_cents.size, p=LINES_PER_ORDER[1])
    line_order = np.repeat(np.arange(order_cents.size), n_lines)
    first_line_index = np.concatenate([[0], np.cumsum(n_lines)[:-1]])
    line_no = np.arange(line_order.size) - first_line_index[line_order] + 1

    main_share = np.where(line_no == 1, np.where(is_first, 0.65, 0.80)[line_order], 0.40)
    random_category = rng.integers(0, len(CATEGORIES), size=line_order.size)
    category = np.where(rng.random(line_order.size) < main_share, order_main[line_order], random_category)
    product = catalogue.starts[category] + (rng.random(line_order.size) * catalogue.counts[category]).astype(
        np.int64
    )
    qty = rng.choice(QTY[0], size=line_order.size, p=QTY[1])

    # Split the paid amount over the lines in proportion to list price x quantity, to the cent.
    weight = catalogue.prices[product] * qty * rng.uniform(0.8, 1.2, size=line_order.size)
    total_weight = np.bincount(line_order, weights=weight, minlength=order_cents.size)
    spread = order_cents - n_lines  # every line gets at least one cent
    cents = np.floor(weight / total_weight[line_order] * spread[line_order]).astype(np.int64) + 1
    remainder = order_cents - np.bincount(line_order, weights=cents, minlength=order_cents.size).astype(
        np.int64
    )
    cents[first_line_index] += remainder
    return _Lines(
        order=line_order,
        line_no=line_no.astype(np.int64),
        product=product,
        category=category.astype(np.int8),
        qty=qty.astype(np.int64),
        cents=cents,
    )


# --------------------------------------------------------------------------------------------------
# The bad rows: a balanced mix of kinds on randomly chosen orders
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _BadRows:
    """The orders turned into bad rows: positions in _Orders (sorted) and kinds."""

    index: np.ndarray
    kind: np.ndarray  # codes into BAD_ROW_KINDS


def _choose_bad_rows(rng: np.random.Generator, share: float, m: int) -> _BadRows:
    """About ``share`` of the m orders, each kind on as many of them as the others (give or take one)."""
    n_bad = int(round(share * m))
    index = np.sort(rng.choice(m, size=n_bad, replace=False)) if n_bad else np.empty(0, dtype=np.int64)
    kind = rng.permutation(np.arange(n_bad) % len(BAD_ROW_KINDS))
    return _BadRows(index=index, kind=kind)


# --------------------------------------------------------------------------------------------------
# The shop's tables and the truth
# --------------------------------------------------------------------------------------------------


def _orders_frame(
    rng: np.random.Generator,
    orders: _Orders,
    status: np.ndarray,
    updated_ts: np.ndarray,
    order_id: pd.Series,
    customer_ids: pd.Series,
    bad: _BadRows,
) -> pd.DataFrame:
    """The shop_orders rows, the bad rows spoiled as their kind says (drawing from ``rng``)."""
    customer_col = pd.Series(customer_ids.array.take(orders.customer))
    amount_col = to_str(fmt_cents(orders.cents))
    paid_col = to_str(fmt_seconds(orders.paid_ts))
    status = status.copy()
    for k, kind in enumerate(BAD_ROW_KINDS):  # in this order: the order of the draws
        rows = bad.index[bad.kind == k]
        if kind == "missing_customer_id":
            customer_col.iloc[rows] = None
        elif kind == "non_numeric_amount":
            amount_col.iloc[rows] = BAD_AMOUNTS[rng.integers(0, BAD_AMOUNTS.size, rows.size)]
        elif kind == "negative_amount":
            amount_col.iloc[rows] = fmt_cents(-orders.cents[rows])
        elif kind == "bad_paid_at":
            paid_col.iloc[rows] = BAD_PAID_AT[rng.integers(0, BAD_PAID_AT.size, rows.size)]
        elif kind == "unknown_status":
            status[rows] = STATUS_CODES.index(BAD_STATUS)
    return pd.DataFrame(
        {
            "order_id": order_id,
            "customer_id": customer_col,
            "paid_at": paid_col,
            "pay_amount": amount_col,
            "status": take(STATUS_CODES, status),
            "channel": take(SOURCES, orders.channel),
            "coupon_code": pd.Series(
                pd.array([None], dtype="str").take(np.zeros(orders.count, dtype=np.intp))
            ),
            "updated_at": to_str(fmt_seconds(updated_ts)),
        }
    )


def _items_frame(order_id: pd.Series, lines: _Lines) -> pd.DataFrame:
    """The shop_order_items rows."""
    catalogue = flat_catalogue()
    return pd.DataFrame(
        {
            "order_id": pd.Series(order_id.array.take(lines.order)),
            "line_no": lines.line_no,
            "sku": take(catalogue.skus, lines.product),
            "title": take(catalogue.titles, lines.product),
            "category": take(CATEGORIES, lines.category),
            "qty": lines.qty,
            "amount": to_str(fmt_cents(lines.cents)),
        }
    )


def _customers_frame(customer_ids: pd.Series, drawn: dict[str, np.ndarray]) -> pd.DataFrame:
    """The shop_customers rows: the ids and the people drawn for them."""
    return pd.DataFrame(
        {
            "customer_id": customer_ids,
            "nickname": to_str(drawn["nickname"]),
            "name": to_str(drawn["name"]),
            "phone": to_str(drawn["phone"]),
            "email": to_str(drawn["email"]),
            "birthday": to_str(drawn["birthday"]),
            "registered_at": to_str(drawn["registered_at"]),
        }
    )


def _truth(
    model: CustomerModel, orders: _Orders, status: np.ndarray, bad: _BadRows, customer_ids: pd.Series
) -> pd.DataFrame:
    """What each customer really is, and what a correct pipeline sees of them by `end`."""
    n = len(customer_ids)
    is_bad = np.zeros(orders.count, dtype=bool)
    is_bad[bad.index] = True
    paid_codes = [STATUS_CODES.index(s) for s in STATUS_CODES if s in PAID_STATUSES]
    counted = ~is_bad & np.isin(status, paid_codes)
    paid_orders = np.bincount(orders.customer[counted], minlength=n)
    paid_cents = np.bincount(orders.customer[counted], weights=orders.cents[counted], minlength=n).astype(
        np.int64
    )
    aov = np.where(paid_orders > 0, paid_cents / np.maximum(paid_orders, 1) / 100.0, np.nan)
    return pd.DataFrame(
        {
            "customer_id": customer_ids,
            "acquisition_source": take(SOURCES, model.source),
            "aov_level": np.round(model.level, 2),
            "value_tier": take(VALUE_TIERS, model.tier),
            "repurchase_propensity": np.round(model.propensity, 4),
            "mean_gap_days": np.round(model.gap_days, 1),
            "main_category": take(CATEGORIES, model.main_category),
            "first_paid_at": to_str(fmt_seconds(model.first_ts)),
            "orders": np.bincount(orders.customer, minlength=n),
            "paid_orders": paid_orders,
            "paid_amount": paid_cents / 100.0,
            "aov": np.round(aov, 2),
        }
    )
