"""A seeded, realistic demo shop: the shop's own e-commerce database, which the pipeline reads.

Why it exists: the pipeline must be demonstrable and testable end to end without a real Taobao/Tmall
shop, and its segmentation and evaluation must be checkable against a known truth. This module
generates a shop whose figures follow DOMAIN.md (mean order value about 103 CNY, repeat rate rising
with the customer's order value, flash-sale and points customers who hardly come back, 11.11 and
12.12 peaks, refunds, cancellations and a share of malformed rows) and writes it into a separate
"shop database" (three tables, ``shop_customers``, ``shop_orders``, ``shop_order_items``). The
intake then reads that database through :data:`SHOP_ORDER_QUERY`, so the demo takes the same path
as a real deployment.

Everything is vectorised with numpy (one loop per repurchase "generation", never one per order;
string columns are Arrow-backed, low-cardinality ones built by ``take`` from small lookups), so a
shop of one million customers is generated in about 12 seconds within 2 GB. The same
:class:`ShopSpec` always gives byte-identical DataFrames.

All times are naive strings in the shop's local time (``ShopSpec.timezone``, no DST in China).
"""

from __future__ import annotations

import datetime
import time
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import sqlalchemy as sa

from huitouke.pii import get_logger
from huitouke.records import (
    CANCELLED,
    CATEGORIES,
    COMPLETED,
    FLASH_SALE,
    ORGANIC,
    PAID,
    PAID_STATUSES,
    POINTS,
    REFUNDED,
    SHIPPED,
)

log = get_logger(__name__)

__all__ = [
    "BAD_ROW_KINDS",
    "DemoShop",
    "SHOP_ORDER_QUERY",
    "ShopSpec",
    "RESPONSE_UPLIFT",
    "VALUE_TIERS",
    "add_responses",
    "generate_shop",
    "shop_as_of",
    "shop_metadata",
    "write_shop",
]


@dataclass(frozen=True)
class ShopSpec:
    """What shop to generate. The same spec always gives the same shop."""

    customers: int = 20_000
    start: datetime.date = datetime.date(2025, 1, 1)
    end: datetime.date = datetime.date(2025, 12, 31)  # last business day with orders (inclusive)
    seed: int = 7
    bad_row_share: float = 0.004  # share of orders turned into bad rows
    timezone: str = "Asia/Shanghai"


@dataclass
class DemoShop:
    """A generated shop: the three shop tables plus what a correct pipeline should find.

    ``truth`` has one row per customer: ``customer_id``, ``acquisition_source``, ``aov_level``
    (the customer's true mean order value, CNY), ``value_tier`` (low/mid/premium by that level),
    ``repurchase_propensity`` (probability of coming back after each order), ``mean_gap_days``,
    ``main_category``, ``first_paid_at``; and what the shop data shows by ``end``: ``orders`` (all
    rows), ``paid_orders``, ``paid_amount`` and ``aov`` over the clean orders with a paid status.
    ``bad_rows`` lists the malformed orders and why (``kind``, one of :data:`BAD_ROW_KINDS`).
    """

    customers: pd.DataFrame  # shop_customers rows
    orders: pd.DataFrame  # shop_orders rows
    items: pd.DataFrame  # shop_order_items rows
    truth: pd.DataFrame  # per customer: true repurchase propensity, value tier, source, observed counts
    bad_rows: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(
            {"order_id": pd.Series(dtype="str"), "kind": pd.Series(dtype="str")}
        )
    )  # one row per malformed order: order_id, kind (one of BAD_ROW_KINDS)


# --------------------------------------------------------------------------------------------------
# The model's parameters (DOMAIN.md figures; calibrated so the observed figures land near them)
# --------------------------------------------------------------------------------------------------

# Value tiers by average order value (DOMAIN.md, article 001).
TIER_MID_AOV = 70.0
TIER_PREMIUM_AOV = 140.0
VALUE_TIERS: tuple[str, ...] = ("low", "mid", "premium")  # AOV <= 70, 70 < AOV <= 140, AOV > 140

SOURCES: tuple[str, ...] = (ORGANIC, FLASH_SALE, POINTS)
SOURCE_SHARE = np.array([0.80, 0.12, 0.08])
# Mean of the customers' personal order-value level per source (CNY); organic calibrated so the
# shop-wide mean order value is about 103 CNY, flash-sale about 57 CNY (DOMAIN.md).
SOURCE_LEVEL_MEAN = np.array([88.0, 57.0, 45.0])
LEVEL_SIGMA = 0.85  # spread of the personal level between customers (log scale)
ORDER_SIGMA = 0.35  # spread of one order around the customer's level (log scale)
MIN_ORDER_CENTS = 290
MAX_ORDER_CENTS = 5_000_000

# Probability of coming back after each order: a logistic curve of the customer's standardised
# log-level (so it rises with AOV), damped for flash-sale and points customers.
PROPENSITY_INTERCEPT = -1.40
PROPENSITY_SLOPE = 1.70
PROPENSITY_CAP = 0.90
SOURCE_PROPENSITY_FACTOR = np.array([1.0, 0.33, 0.06])

# Inter-purchase gaps: gamma with shape 2 around a category-specific mean (days), consumables
# come back sooner than durables; each customer's own mean varies around it.
GAP_SHAPE = 2.0
CATEGORY_GAP_DAYS = {
    "food": 30.0,
    "kids_clothing": 55.0,
    "daily_goods": 35.0,
    "durables": 140.0,
    "womens_clothing": 55.0,
    "cosmetics": 45.0,
    "3c": 90.0,
}
# Main category by value tier (rows: low, mid, premium; columns: CATEGORIES).
CATEGORY_BY_TIER = np.array(
    [
        [0.28, 0.14, 0.28, 0.02, 0.12, 0.12, 0.04],
        [0.18, 0.18, 0.16, 0.06, 0.18, 0.16, 0.08],
        [0.10, 0.16, 0.08, 0.16, 0.20, 0.16, 0.14],
    ]
)
REPEAT_CHANNEL_SHARE = np.array([0.90, 0.08, 0.02])  # repeat orders: mostly organic
PRE_1111_PULL = 0.35  # share of repeat orders due Nov 1-10 that wait for 11.11

REFUND_SHARE = 0.03
CANCEL_SHARE = 0.01
VOID_DELAY_SECONDS = (86_400, 10 * 86_400)

# Promotion days (month, day) -> multiplier of a normal day's first orders.
EVENT_DAYS: dict[tuple[int, int], float] = {
    (11, 11): 9.0,
    (11, 10): 1.8,
    (11, 12): 1.8,
    (12, 12): 4.5,
    (6, 18): 3.5,
    (3, 8): 1.8,
}
WEEKEND_FACTOR = 1.35
FLASH_EVENTS_PER_MONTH = 2
FLASH_EVENT_FACTOR = 12.0

# Orders per hour of the day (shop local time): quiet nights, evening peak.
# fmt: off
HOUR_WEIGHTS = np.array(
    [3.0, 1.5, 0.8, 0.5, 0.4, 0.5, 1.0, 2.0, 3.5, 5.0, 6.0, 5.5, 5.0, 5.5, 6.0, 6.0, 5.5, 5.0, 5.0, 6.0,
     7.5, 8.5, 8.0, 5.5]
)
# fmt: on
# On 11.11 a large share of orders is paid right after midnight.
HOUR_WEIGHTS_1111 = HOUR_WEIGHTS * np.array([12.0, 4.0] + [1.0] * 22)

LINES_PER_ORDER = (np.array([1, 2, 3]), np.array([0.62, 0.28, 0.10]))
QTY = (np.array([1, 2, 3]), np.array([0.80, 0.15, 0.05]))

BAD_ROW_KINDS: tuple[str, ...] = (
    "missing_customer_id",
    "non_numeric_amount",
    "negative_amount",
    "bad_paid_at",
    "unknown_status",
)
BAD_AMOUNTS = np.array(["abc", "12,3x", "1O3.00"])
BAD_PAID_AT = np.array(["2025-13-45 99:00", "yesterday", "31/02/2025 25:61"])
BAD_STATUS = "weird_status"

# The catalogue: per category, (title, list price in CNY). SKUs are derived from position.
CATALOGUE: dict[str, list[tuple[str, float]]] = {
    "food": [
        ("婴幼儿配方奶粉3段 800g", 268.0),
        ("有机婴儿米粉 225g", 49.0),
        ("宝宝果泥组合装 6袋", 39.9),
        ("儿童营养面条 300g", 22.8),
        ("每日坚果混合装 30袋", 89.0),
        ("手撕牛肉干 250g", 45.0),
        ("进口燕麦片 1kg", 35.9),
    ],
    "kids_clothing": [
        ("儿童防污纯棉T恤", 59.0),
        ("婴儿纯棉连体衣 2件装", 79.0),
        ("儿童轻薄羽绒服", 199.0),
        ("女童公主连衣裙", 99.0),
        ("男童运动长裤", 69.0),
        ("儿童中筒袜 5双装", 29.9),
    ],
    "daily_goods": [
        ("婴儿手口湿巾 80抽×6包", 39.9),
        ("拉拉裤 L码 52片", 119.0),
        ("洗衣凝珠 52颗", 49.9),
        ("原木抽纸 24包", 45.9),
        ("儿童软毛牙刷 4支", 19.9),
        ("316不锈钢保温杯 500ml", 89.0),
    ],
    "durables": [
        ("高景观婴儿推车", 1299.0),
        ("儿童安全座椅 isofix", 1599.0),
        ("实木婴儿床", 899.0),
        ("天然乳胶床垫 1.5m", 1899.0),
        ("儿童升降学习桌", 799.0),
    ],
    "womens_clothing": [
        ("双面羊毛大衣", 599.0),
        ("法式雪纺连衣裙", 189.0),
        ("高腰直筒牛仔裤", 139.0),
        ("软糯针织开衫", 159.0),
        ("桑蚕丝衬衫", 329.0),
        ("无钢圈运动文胸", 79.0),
    ],
    "cosmetics": [
        ("玻尿酸补水面膜 10片", 99.0),
        ("氨基酸洁面乳 120g", 69.0),
        ("清爽防晒霜 SPF50+", 129.0),
        ("修护精华液 30ml", 299.0),
        ("丝绒雾面口红", 159.0),
        ("温和卸妆水 400ml", 79.0),
    ],
    "3c": [
        ("降噪蓝牙耳机", 399.0),
        ("20000mAh 快充充电宝", 149.0),
        ("智能运动手环", 229.0),
        ("无线机械键盘", 349.0),
        ("Type-C 快充数据线 2条", 29.9),
        ("平板电脑保护壳", 59.0),
    ],
}
SKU_PREFIX = {
    "food": "FD",
    "kids_clothing": "KC",
    "daily_goods": "DG",
    "durables": "DU",
    "womens_clothing": "WC",
    "cosmetics": "CS",
    "3c": "EC",
}

# People.
FAMILY_NAMES = np.array(
    list(
        "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林高罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘蒋蔡余杜叶程苏魏吕丁任沈"
        "姚卢姜崔钟谭陆汪范金石廖贾夏韦方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严武戴莫孔向汤"
    )
    + ["欧阳", "司马", "上官"]
)
GIVEN_FEMALE = np.array(list("芳娜敏静丽娟艳秀英华慧巧美琳雪梅婷晶妍欣怡佳雨萱颖洁倩璐瑶涵玲燕霞丹"))
GIVEN_MALE = np.array(list("伟强磊军洋勇杰涛明超刚平辉鹏浩宇俊帆志峰建文斌博然鑫宁凯亮晨"))
NICK_PREFIX = np.array(["小", "大", "爱吃", "快乐的", "甜甜的", "懒懒的", "阳光", "开心", "会飞的", "安静的"])
NICK_NOUN = np.array(
    ["猫", "兔子", "鱼", "糖果", "宝贝", "妈咪", "小熊", "豆豆", "橙子", "布丁", "麻麻", "奶爸"]
)
# fmt: off
PHONE_PREFIXES = np.array(
    [130, 131, 132, 133, 134, 135, 136, 137, 138, 139, 150, 151, 152, 153, 155, 156, 157, 158, 159, 166,
     170, 171, 173, 175, 176, 177, 178, 180, 181, 182, 183, 184, 185, 186, 187, 188, 189, 191, 198, 199],
    dtype=np.int64,
)
# fmt: on
EMAIL_DOMAINS = np.array(["163.com", "126.com", "sina.com", "foxmail.com", "gmail.com", "outlook.com"])
LOWER = np.array(list("abcdefghijklmnopqrstuvwxyz"))
DIGITS = np.array(list("0123456789"))

_DAY = 86_400
_EPOCH = np.datetime64("1970-01-01", "D")


# --------------------------------------------------------------------------------------------------
# Vectorised helpers
# --------------------------------------------------------------------------------------------------


def _day_number(day: datetime.date) -> int:
    return int((np.datetime64(day, "D") - _EPOCH).astype(np.int64))


def _fmt_seconds(seconds: np.ndarray) -> np.ndarray:
    """Epoch seconds (naive local time) -> 'YYYY-MM-DD HH:MM:SS' strings (numpy U19)."""
    text = np.datetime_as_string(seconds.astype("datetime64[s]"), unit="s")
    chars = np.ascontiguousarray(text.astype("U19")).view("U1").reshape(-1, 19)
    chars[:, 10] = " "
    return chars.view("U19").reshape(-1)


def _fmt_days(days: np.ndarray) -> np.ndarray:
    """Epoch day numbers -> 'YYYY-MM-DD' strings (numpy U10)."""
    return np.datetime_as_string(days.astype("datetime64[D]"), unit="D").astype("U10")


def _fmt_cents(cents: np.ndarray) -> np.ndarray:
    """Integer cents -> 'yuan.cc' strings, e.g. 10350 -> '103.50'."""
    cents = np.asarray(cents, dtype=np.int64)
    sign = np.where(cents < 0, "-", "")
    cents = np.abs(cents)
    whole = (cents // 100).astype(str)
    frac = cents % 100
    tail = np.char.add(np.char.add(".", DIGITS[frac // 10]), DIGITS[frac % 10])
    return np.char.add(np.char.add(sign, whole), tail)


def _random_strings(rng: np.random.Generator, n: int, alphabet: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """n random strings of length lo..hi over alphabet (numpy U array), without a Python loop."""
    chars = alphabet[rng.integers(0, alphabet.size, size=(n, hi))]
    lengths = rng.integers(lo, hi + 1, size=n)
    chars[np.arange(hi)[None, :] >= lengths[:, None]] = ""  # trailing NULs are dropped by numpy
    return np.ascontiguousarray(chars.astype("U1")).view(f"U{hi}").reshape(-1)


def _choice_index(rng: np.random.Generator, probabilities: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """For each row r, an index drawn from probabilities[r] (rows of a small matrix)."""
    cumulative = np.cumsum(probabilities, axis=1)
    cumulative /= cumulative[:, -1:]
    u = rng.random(rows.size)
    picked = (u[:, None] >= cumulative[rows]).sum(axis=1)
    return np.minimum(picked, probabilities.shape[1] - 1)


def _unique_draw(
    rng: np.random.Generator, n: int, draw: Callable[[np.random.Generator, int], np.ndarray]
) -> np.ndarray:
    """n draws from draw() with duplicates redrawn until all are distinct (deterministic)."""
    values = draw(rng, n).astype(object)
    for _ in range(100):
        duplicated = pd.Series(values).duplicated().to_numpy()
        if not duplicated.any():
            return values
        values[duplicated] = draw(rng, int(duplicated.sum())).astype(object)
    raise RuntimeError("could not draw distinct values; the space is too small for the shop")


def _to_str(values: np.ndarray) -> pd.Series:
    return pd.Series(values, dtype="str")


# --------------------------------------------------------------------------------------------------
# The calendar: when first orders happen, and at what time of day
# --------------------------------------------------------------------------------------------------


def _day_weights(days: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Relative first-order volume per day: (all organic/points customers, flash-sale customers)."""
    dates = days.astype("datetime64[D]")
    month = dates.astype("datetime64[M]").astype(np.int64) % 12 + 1
    day_of_month = (dates - dates.astype("datetime64[M]")).astype(np.int64) + 1
    weekday = (days + 3) % 7  # 1970-01-01 was a Thursday; 0 = Monday
    weights = np.ones(days.size)
    weights[weekday >= 5] *= WEEKEND_FACTOR
    weights *= 1.0 + 0.25 * np.arange(days.size) / max(days.size - 1, 1)  # the shop grows
    event = np.zeros(days.size, dtype=bool)
    for (m, d), factor in EVENT_DAYS.items():
        weights[(month == m) & (day_of_month == d)] *= factor
        event |= (month == m) & (day_of_month == d)
    # Flash-sale (聚划算) customers arrive on the big sales and on a couple of flash events a month
    # (on other days than the big sales, which stay the peaks).
    flash = weights**1.5
    months = dates.astype("datetime64[M]").astype(np.int64)
    for m in np.unique(months):
        in_month = np.flatnonzero((months == m) & ~event)
        k = min(FLASH_EVENTS_PER_MONTH, in_month.size)
        flash[rng.choice(in_month, size=k, replace=False)] *= FLASH_EVENT_FACTOR
    return weights / weights.sum(), flash / flash.sum()


def _is_1111(days: np.ndarray) -> np.ndarray:
    dates = days.astype("datetime64[D]")
    month = dates.astype("datetime64[M]").astype(np.int64) % 12 + 1
    day_of_month = (dates - dates.astype("datetime64[M]")).astype(np.int64) + 1
    return (month == 11) & (day_of_month == 11)


def _seconds_of_day(rng: np.random.Generator, days: np.ndarray) -> np.ndarray:
    """A time of day for each order, following the hourly profile (11.11 has its midnight rush)."""
    hours = rng.choice(24, size=days.size, p=HOUR_WEIGHTS / HOUR_WEIGHTS.sum())
    double_eleven = _is_1111(days)
    if double_eleven.any():
        hours[double_eleven] = rng.choice(
            24, size=int(double_eleven.sum()), p=HOUR_WEIGHTS_1111 / HOUR_WEIGHTS_1111.sum()
        )
    return hours * 3600 + rng.integers(0, 3600, size=days.size)


# --------------------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------------------


def _customers_model(
    spec: ShopSpec, rng: np.random.Generator, first_day: int, last_day: int
) -> dict[str, np.ndarray]:
    """Per customer: source, personal AOV level, propensity, main category, gap, first order time."""
    n = spec.customers
    days = np.arange(first_day, last_day + 1)
    weights, flash_weights = _day_weights(days, rng)

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
    first_ts = first * _DAY + _seconds_of_day(rng, first)

    # Customer ids follow the order of the first purchase, as a shop's registration would.
    order = np.argsort(first_ts, kind="stable")
    model = {
        "source": source,
        "level": level,
        "tier": tier,
        "propensity": propensity,
        "main_category": main_category,
        "gap_days": gap_days,
        "first_ts": first_ts,
    }
    return {key: value[order] for key, value in model.items()}


def _repeat_orders(
    rng: np.random.Generator, model: dict[str, np.ndarray], last_day: int
) -> tuple[np.ndarray, np.ndarray]:
    """Later orders of every customer: (customer index, day). One loop per generation of repurchase."""
    first_day = model["first_ts"] // _DAY
    active = np.arange(first_day.size)
    day = first_day.copy()
    customers: list[np.ndarray] = []
    days: list[np.ndarray] = []
    while active.size:
        back = rng.random(active.size) < model["propensity"][active]
        gap = np.ceil(rng.gamma(GAP_SHAPE, model["gap_days"][active] / GAP_SHAPE)).astype(np.int64)
        next_day = day + np.maximum(gap, 1)
        # Customers due early in November wait for 11.11.
        dates = next_day.astype("datetime64[D]")
        month = dates.astype("datetime64[M]").astype(np.int64) % 12 + 1
        dom = (dates - dates.astype("datetime64[M]")).astype(np.int64) + 1
        wait = (month == 11) & (dom <= 10) & (rng.random(active.size) < PRE_1111_PULL)
        next_day = np.where(wait, next_day + (11 - dom), next_day)
        keep = back & (next_day <= last_day)
        active = active[keep]
        day = next_day[keep]
        customers.append(active)
        days.append(day)
    return np.concatenate(customers), np.concatenate(days)


def _catalogue() -> tuple[list[str], list[str], np.ndarray, np.ndarray, np.ndarray]:
    """The catalogue flattened: (skus, titles, list prices, first product per category, count)."""
    skus = [f"{SKU_PREFIX[c]}-{i + 1:04d}" for c in CATEGORIES for i in range(len(CATALOGUE[c]))]
    titles = [title for c in CATEGORIES for title, _ in CATALOGUE[c]]
    prices = np.array([price for c in CATEGORIES for _, price in CATALOGUE[c]])
    counts = np.array([len(CATALOGUE[c]) for c in CATEGORIES])
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return skus, titles, prices, starts, counts


def _items(
    rng: np.random.Generator, order_cents: np.ndarray, order_main: np.ndarray, is_first: np.ndarray
) -> dict[str, np.ndarray]:
    """Order lines: 1-3 per order, favouring the customer's main category, summing to the order.

    Returns integer arrays: the line's order index, line number, product and category codes,
    quantity and amount in cents.
    """
    _, _, prices, starts, counts = _catalogue()
    n_lines = rng.choice(LINES_PER_ORDER[0], size=order_cents.size, p=LINES_PER_ORDER[1])
    line_order = np.repeat(np.arange(order_cents.size), n_lines)
    first_line_index = np.concatenate([[0], np.cumsum(n_lines)[:-1]])
    line_no = np.arange(line_order.size) - first_line_index[line_order] + 1

    main_share = np.where(line_no == 1, np.where(is_first, 0.65, 0.80)[line_order], 0.40)
    random_category = rng.integers(0, len(CATEGORIES), size=line_order.size)
    category = np.where(rng.random(line_order.size) < main_share, order_main[line_order], random_category)
    product = starts[category] + (rng.random(line_order.size) * counts[category]).astype(np.int64)
    qty = rng.choice(QTY[0], size=line_order.size, p=QTY[1])

    # Split the paid amount over the lines in proportion to list price x quantity, to the cent.
    weight = prices[product] * qty * rng.uniform(0.8, 1.2, size=line_order.size)
    total_weight = np.bincount(line_order, weights=weight, minlength=order_cents.size)
    spread = order_cents - n_lines  # every line gets at least one cent
    cents = np.floor(weight / total_weight[line_order] * spread[line_order]).astype(np.int64) + 1
    remainder = order_cents - np.bincount(line_order, weights=cents, minlength=order_cents.size).astype(
        np.int64
    )
    cents[first_line_index] += remainder
    return {
        "order": line_order,
        "line_no": line_no.astype(np.int64),
        "product": product,
        "category": category.astype(np.int8),
        "qty": qty.astype(np.int64),
        "cents": cents,
    }


def _people(rng: np.random.Generator, n: int, first_ts: np.ndarray) -> dict[str, np.ndarray]:
    """Names, nicknames, phones, e-mails, birthdays and registration times of n customers."""
    rank = np.arange(1, FAMILY_NAMES.size + 1)
    family_p = rank**-0.9 / (rank**-0.9).sum()
    family = FAMILY_NAMES[rng.choice(FAMILY_NAMES.size, size=n, p=family_p)]
    female = rng.random(n) < 0.65  # a mother-and-baby and women's clothing shop
    g1 = np.where(
        female,
        GIVEN_FEMALE[rng.integers(0, GIVEN_FEMALE.size, n)],
        GIVEN_MALE[rng.integers(0, GIVEN_MALE.size, n)],
    )
    g2 = np.where(
        female,
        GIVEN_FEMALE[rng.integers(0, GIVEN_FEMALE.size, n)],
        GIVEN_MALE[rng.integers(0, GIVEN_MALE.size, n)],
    )
    g2 = np.where(rng.random(n) < 0.7, g2, "")
    name = np.char.add(np.char.add(family, g1), g2)

    pattern = rng.choice(3, size=n, p=[0.35, 0.35, 0.30])
    taobao = np.char.add("tb", rng.integers(10**8, 10**11, size=n).astype(str))
    cute = np.char.add(
        np.char.add(
            NICK_PREFIX[rng.integers(0, NICK_PREFIX.size, n)], NICK_NOUN[rng.integers(0, NICK_NOUN.size, n)]
        ),
        np.where(rng.random(n) < 0.6, rng.integers(1, 2025, size=n).astype(str), ""),
    )
    latin = np.char.add(
        np.char.add(_random_strings(rng, n, LOWER, 3, 8), np.where(rng.random(n) < 0.4, "_", "")),
        rng.integers(1, 10_000, size=n).astype(str),
    )
    nickname = np.where(pattern == 0, taobao, np.where(pattern == 1, cute, latin))

    def draw_phone(g: np.random.Generator, k: int) -> np.ndarray:
        return (
            PHONE_PREFIXES[g.integers(0, PHONE_PREFIXES.size, k)] * 10**8 + g.integers(0, 10**8, k)
        ).astype(str)

    phone = _unique_draw(rng, n, draw_phone)

    def draw_email(g: np.random.Generator, k: int) -> np.ndarray:
        qq = np.char.add(g.integers(10_000, 3 * 10**9, size=k).astype(str), "@qq.com")
        local = np.char.add(_random_strings(g, k, LOWER, 4, 8), g.integers(10, 10_000, size=k).astype(str))
        other = np.char.add(np.char.add(local, "@"), EMAIL_DOMAINS[g.integers(0, EMAIL_DOMAINS.size, k)])
        return np.where(g.random(k) < 0.5, qq, other)

    email = _unique_draw(rng, n, draw_email)
    email[rng.random(n) >= 0.65] = None

    birth_year = np.clip(np.round(rng.normal(1991, 7, n)), 1960, 2007).astype(np.int64)
    year_start = (np.array(birth_year - 1970, dtype="timedelta64[Y]") + np.datetime64("1970", "Y")).astype(
        "datetime64[D]"
    )
    birth = year_start.astype(np.int64) + rng.integers(0, 365, size=n)
    birthday = _fmt_days(birth).astype(object)
    birthday[rng.random(n) >= 0.40] = None

    quick = rng.random(n) < 0.55  # most register right before their first purchase
    delay = np.where(quick, rng.integers(60, 3600, size=n), rng.integers(_DAY, 730 * _DAY, size=n))
    registered = _fmt_seconds(first_ts - delay)
    return {
        "nickname": nickname,
        "name": name,
        "phone": phone,
        "email": email,
        "birthday": birthday,
        "registered_at": registered,
    }


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
    in_time = paid_ts + delay < (last_day + 1) * _DAY  # later refunds have not happened yet by `end`
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
    return _to_str(np.char.add(np.char.add("T", date_digits), serial))


def _take(lookup: list[str] | tuple[str, ...], codes: np.ndarray) -> pd.Series:
    """A string column from a small lookup and integer codes (no per-row Python strings)."""
    return pd.Series(pd.array(list(lookup), dtype="str").take(np.asarray(codes, dtype=np.intp)))


STATUS_CODES: tuple[str, ...] = (COMPLETED, SHIPPED, PAID, REFUNDED, CANCELLED, BAD_STATUS)


def generate_shop(spec: ShopSpec = ShopSpec()) -> DemoShop:
    """Generate the demo shop described by ``spec`` (deterministic: same spec, same frames)."""
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
    started = time.perf_counter()
    rng = np.random.default_rng(spec.seed)
    first_day, last_day = _day_number(spec.start), _day_number(spec.end)
    n = spec.customers

    model = _customers_model(spec, rng, first_day, last_day)
    repeat_customer, repeat_day = _repeat_orders(rng, model, last_day)

    # All orders (first orders, then repeats), sorted by payment time.
    m = n + repeat_customer.size
    cust = np.concatenate([np.arange(n), repeat_customer])
    is_first = np.arange(m) < n
    paid_ts = np.concatenate([model["first_ts"], repeat_day * _DAY + _seconds_of_day(rng, repeat_day)])
    del repeat_customer, repeat_day
    repeat_channel = rng.choice(len(SOURCES), size=m - n, p=REPEAT_CHANNEL_SHARE).astype(np.int8)
    channel = np.concatenate([model["source"], repeat_channel])
    noise = np.exp(ORDER_SIGMA * rng.standard_normal(m) - ORDER_SIGMA**2 / 2)
    cents = np.clip(np.round(model["level"][cust] * noise * 100), MIN_ORDER_CENTS, MAX_ORDER_CENTS).astype(
        np.int64
    )
    del noise
    order = np.lexsort((cust, paid_ts))
    cust, is_first, paid_ts, channel, cents = (a[order] for a in (cust, is_first, paid_ts, channel, cents))
    del order
    day = paid_ts // _DAY

    status, updated_ts = _order_statuses(rng, day, paid_ts, last_day)
    order_id = _order_ids(rng, day, first_day)
    line = _items(rng, cents, model["main_category"][cust], is_first)

    # Bad rows: a balanced mix of kinds on randomly chosen orders.
    n_bad = int(round(spec.bad_row_share * m))
    bad_index = np.sort(rng.choice(m, size=n_bad, replace=False)) if n_bad else np.empty(0, dtype=np.int64)
    bad_kind = rng.permutation(np.arange(n_bad) % len(BAD_ROW_KINDS))
    width = max(6, len(str(n)))
    customer_ids = _to_str(np.char.add("c", np.char.zfill((np.arange(n) + 1).astype(str), width)))
    customer_col = pd.Series(customer_ids.array.take(cust))
    amount_col = _to_str(_fmt_cents(cents))
    paid_col = _to_str(_fmt_seconds(paid_ts))
    for k, kind in enumerate(BAD_ROW_KINDS):
        rows = bad_index[bad_kind == k]
        if kind == "missing_customer_id":
            customer_col.iloc[rows] = None
        elif kind == "non_numeric_amount":
            amount_col.iloc[rows] = BAD_AMOUNTS[rng.integers(0, BAD_AMOUNTS.size, rows.size)]
        elif kind == "negative_amount":
            amount_col.iloc[rows] = _fmt_cents(-cents[rows])
        elif kind == "bad_paid_at":
            paid_col.iloc[rows] = BAD_PAID_AT[rng.integers(0, BAD_PAID_AT.size, rows.size)]
        elif kind == "unknown_status":
            status[rows] = STATUS_CODES.index(BAD_STATUS)
    is_bad = np.zeros(m, dtype=bool)
    is_bad[bad_index] = True

    orders = pd.DataFrame(
        {
            "order_id": order_id,
            "customer_id": customer_col,
            "paid_at": paid_col,
            "pay_amount": amount_col,
            "status": _take(STATUS_CODES, status),
            "channel": _take(SOURCES, channel),
            "coupon_code": pd.Series(pd.array([None], dtype="str").take(np.zeros(m, dtype=np.intp))),
            "updated_at": _to_str(_fmt_seconds(updated_ts)),
        }
    )
    del customer_col, paid_col, amount_col, updated_ts
    skus, titles, _, _, _ = _catalogue()
    items = pd.DataFrame(
        {
            "order_id": pd.Series(order_id.array.take(line["order"])),
            "line_no": line["line_no"],
            "sku": _take(skus, line["product"]),
            "title": _take(titles, line["product"]),
            "category": _take(CATEGORIES, line["category"]),
            "qty": line["qty"],
            "amount": _to_str(_fmt_cents(line["cents"])),
        }
    )
    del line

    people = _people(rng, n, model["first_ts"])
    customers = pd.DataFrame(
        {
            "customer_id": customer_ids,
            "nickname": _to_str(people["nickname"]),
            "name": _to_str(people["name"]),
            "phone": _to_str(people["phone"]),
            "email": _to_str(people["email"]),
            "birthday": _to_str(people["birthday"]),
            "registered_at": _to_str(people["registered_at"]),
        }
    )
    del people

    # Truth: what each customer really is, and what a correct pipeline sees of them by `end`.
    paid_codes = [STATUS_CODES.index(s) for s in STATUS_CODES if s in PAID_STATUSES]
    counted = ~is_bad & np.isin(status, paid_codes)
    paid_orders = np.bincount(cust[counted], minlength=n)
    paid_cents = np.bincount(cust[counted], weights=cents[counted], minlength=n).astype(np.int64)
    aov = np.where(paid_orders > 0, paid_cents / np.maximum(paid_orders, 1) / 100.0, np.nan)
    truth = pd.DataFrame(
        {
            "customer_id": customer_ids,
            "acquisition_source": _take(SOURCES, model["source"]),
            "aov_level": np.round(model["level"], 2),
            "value_tier": _take(VALUE_TIERS, model["tier"]),
            "repurchase_propensity": np.round(model["propensity"], 4),
            "mean_gap_days": np.round(model["gap_days"], 1),
            "main_category": _take(CATEGORIES, model["main_category"]),
            "first_paid_at": _to_str(_fmt_seconds(model["first_ts"])),
            "orders": np.bincount(cust, minlength=n),
            "paid_orders": paid_orders,
            "paid_amount": paid_cents / 100.0,
            "aov": np.round(aov, 2),
        }
    )
    bad_rows = pd.DataFrame(
        {"order_id": pd.Series(order_id.array.take(bad_index)), "kind": _take(BAD_ROW_KINDS, bad_kind)}
    )
    log.info(
        "generated demo shop (%s to %s, %s): %d customers, %d orders, %d lines, %d bad rows in %.2fs",
        spec.start,
        spec.end,
        spec.timezone,
        n,
        m,
        len(items),
        n_bad,
        time.perf_counter() - started,
    )
    return DemoShop(customers=customers, orders=orders, items=items, truth=truth, bad_rows=bad_rows)


# --------------------------------------------------------------------------------------------------
# Customers answering the messages: the demo's known treatment effect
# --------------------------------------------------------------------------------------------------

# What one message adds to a customer's chance of buying within RESPONSE_DAYS of receiving it
# (the demo's truth, on top of the natural repurchase the generator already gives both arms).
# Evaluation should find these lifts against the holdout, within its confidence intervals.
RESPONSE_UPLIFT: dict[str, float] = {
    "birthday": 0.06,
    "thank_you": 0.03,
    "coupon_waves": 0.08,
    "care_tips": 0.02,
    "phone_followup": 0.05,
    "new_product_premium": 0.05,
    "win_back": 0.04,
}
RESPONSE_DAYS = 20  # responses spread over this many days, most within the first week
COUPON_USE = 0.8  # share of responders to a coupon message who type the code at checkout


def add_responses(
    shop: DemoShop, messages: pd.DataFrame, sent_on: datetime.date, seed: int = 7
) -> tuple[DemoShop, int]:
    """The shop with the extra orders that ``messages`` caused; returns (shop, orders added).

    ``messages`` are outbox rows of business day ``sent_on`` (``campaign, customer_id,
    coupon_code``; one customer may have several channels: one chance per campaign). They go out
    the next morning at 09:00; a responder buys 0–RESPONSE_DAYS days later, at their usual order
    value, in their main category, mostly with the coupon the message carried. Only messaged
    customers get these orders: the holdout has none, which is what evaluation must measure.
    """
    if messages.empty:
        return shop, 0
    rng = np.random.default_rng([seed, _day_number(sent_on), 97])
    one = messages.drop_duplicates(["campaign", "customer_id"]).reset_index(drop=True)
    uplift = one["campaign"].map(RESPONSE_UPLIFT).fillna(0.0).to_numpy(dtype=float)
    responded = rng.random(len(one)) < uplift
    chosen = one[responded].reset_index(drop=True)
    n = len(chosen)
    if n == 0:
        return shop, 0
    truth = shop.truth.set_index("customer_id")
    level = truth["aov_level"].reindex(chosen["customer_id"]).fillna(100.0).to_numpy(dtype=float)
    category = (
        truth["main_category"].reindex(chosen["customer_id"]).fillna(CATEGORIES[0]).to_numpy(dtype=object)
    )
    cents = np.maximum(np.round(level * rng.lognormal(0.0, 0.25, n) * 100), 990).astype(np.int64)
    send = pd.Timestamp(sent_on) + pd.Timedelta(days=1, hours=9)
    delay = np.minimum(rng.exponential(4.0, n), RESPONSE_DAYS - 0.01)
    paid = send + pd.to_timedelta(np.round(delay * 86400), unit="s")
    code = chosen["coupon_code"].astype(object).where(chosen["coupon_code"].notna(), None).to_numpy()
    use = rng.random(n) < COUPON_USE
    codes = np.where(use, code, None)
    paid_text = pd.DatetimeIndex(paid).strftime(_TIME_FORMAT)
    order_id = [f"R{sent_on:%Y%m%d}{i:06d}" for i in range(n)]
    skus, titles, prices, starts, counts = _catalogue()
    category_index = np.array([CATEGORIES.index(c) if c in CATEGORIES else 0 for c in category])
    product = starts[category_index] + rng.integers(0, counts[category_index])
    orders = pd.DataFrame(
        {
            "order_id": order_id,
            "customer_id": chosen["customer_id"].astype(str).to_numpy(),
            "paid_at": paid_text,
            "pay_amount": _fmt_cents(cents),
            "status": COMPLETED,
            "channel": ORGANIC,
            "coupon_code": codes,
            "updated_at": paid_text,
        }
    )
    items = pd.DataFrame(
        {
            "order_id": order_id,
            "line_no": 1,
            "sku": [skus[i] for i in product],
            "title": [titles[i] for i in product],
            "category": category,
            "qty": 1,
            "amount": _fmt_cents(cents),
        }
    )
    for frame, like in ((orders, shop.orders), (items, shop.items)):
        for column in frame.columns:
            frame[column] = frame[column].astype(like[column].dtype)
    grown = DemoShop(
        customers=shop.customers,
        orders=pd.concat([shop.orders, orders], ignore_index=True),
        items=pd.concat([shop.items, items], ignore_index=True),
        truth=shop.truth,
        bad_rows=shop.bad_rows,
    )
    return grown, n


# --------------------------------------------------------------------------------------------------
# The shop as it stood on a given day
# --------------------------------------------------------------------------------------------------

# How an order moves on in the shop system: shipped a day after payment, completed (the buyer
# confirmed receipt) eight days after. Refunds and cancellations happen when `updated_at` says.
SHIPPED_AFTER = pd.Timedelta(days=1)
COMPLETED_AFTER = pd.Timedelta(days=8)
_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


def shop_as_of(shop: DemoShop, day: datetime.date) -> DemoShop:
    """The shop database as it stood at the end of ``day`` (shop-local).

    Orders not yet paid are left out; every other order shows the status it had then, with
    ``updated_at`` at its last change: paid, shipped after :data:`SHIPPED_AFTER`, completed after
    :data:`COMPLETED_AFTER`, or refunded/cancelled once that has happened. Writing one snapshot
    per business day lets the daily intake see what a real shop database shows it: new orders,
    orders moving on, and refunds of earlier orders. Malformed rows appear, as they are, from
    their ``updated_at``. Customers and truth are unchanged.
    """
    end = pd.Timestamp(day) + pd.Timedelta(days=1)
    orders = shop.orders
    paid = pd.to_datetime(orders["paid_at"], format=_TIME_FORMAT, errors="coerce")
    updated = pd.to_datetime(orders["updated_at"], format=_TIME_FORMAT, errors="coerce")
    bad = orders["order_id"].isin(shop.bad_rows["order_id"]).to_numpy()
    voided_by_then = orders["status"].isin([REFUNDED, CANCELLED]).to_numpy() & (updated < end).to_numpy()
    shipped_at, completed_at = paid + SHIPPED_AFTER, paid + COMPLETED_AFTER
    keep = np.where(bad, (updated < end).to_numpy(), (paid < end).to_numpy())

    status = np.select(
        [bad, voided_by_then, (completed_at < end).to_numpy(), (shipped_at < end).to_numpy()],
        [
            orders["status"].to_numpy(dtype=object),
            orders["status"].to_numpy(dtype=object),
            COMPLETED,
            SHIPPED,
        ],
        default=PAID,
    )
    changed = np.select(
        [bad | voided_by_then, (completed_at < end).to_numpy(), (shipped_at < end).to_numpy()],
        [updated.to_numpy(), completed_at.to_numpy(), shipped_at.to_numpy()],
        default=paid.to_numpy(),
    )
    snapshot = orders.assign(
        status=pd.Series(status, index=orders.index, dtype="str"),
        updated_at=pd.Series(
            pd.DatetimeIndex(changed).strftime(_TIME_FORMAT), index=orders.index, dtype="str"
        ),
    )[keep].reset_index(drop=True)
    items = shop.items[shop.items["order_id"].isin(snapshot["order_id"])].reset_index(drop=True)
    return DemoShop(
        customers=shop.customers, orders=snapshot, items=items, truth=shop.truth, bad_rows=shop.bad_rows
    )


# --------------------------------------------------------------------------------------------------
# The shop database
# --------------------------------------------------------------------------------------------------


def shop_metadata() -> sa.MetaData:
    """The three shop tables. Columns that may hold bad data are TEXT, as in a sloppy shop system."""
    metadata = sa.MetaData()
    sa.Table(
        "shop_customers",
        metadata,
        sa.Column("customer_id", sa.Text, primary_key=True),
        sa.Column("nickname", sa.Text),
        sa.Column("name", sa.Text),
        sa.Column("phone", sa.Text),
        sa.Column("email", sa.Text),
        sa.Column("birthday", sa.Text, nullable=True),
        sa.Column("registered_at", sa.Text),
    )
    sa.Table(
        "shop_orders",
        metadata,
        sa.Column("order_id", sa.Text, primary_key=True),
        sa.Column("customer_id", sa.Text, nullable=True),
        sa.Column("paid_at", sa.Text),
        sa.Column("pay_amount", sa.Text),
        sa.Column("status", sa.Text),
        sa.Column("channel", sa.Text),
        sa.Column("coupon_code", sa.Text, nullable=True),
        sa.Column("updated_at", sa.Text, nullable=False),
        sa.Index("ix_shop_orders_updated_at", "updated_at"),
    )
    sa.Table(
        "shop_order_items",
        metadata,
        sa.Column("order_id", sa.Text, primary_key=True),
        sa.Column("line_no", sa.Integer, primary_key=True),
        sa.Column("sku", sa.Text),
        sa.Column("title", sa.Text),
        sa.Column("category", sa.Text),
        sa.Column("qty", sa.Integer),
        sa.Column("amount", sa.Text),
    )
    return metadata


SHOP_TABLES: tuple[str, ...] = ("shop_customers", "shop_orders", "shop_order_items")
WRITE_CHUNK_ROWS = 50_000

SHOP_ORDER_QUERY: str = """
SELECT
    o.order_id     AS order_id,
    o.customer_id  AS customer_id,
    o.paid_at      AS paid_at,
    o.pay_amount   AS amount,
    o.status       AS status,
    o.channel      AS acquisition_source,
    o.coupon_code  AS coupon_code,
    o.updated_at   AS updated_at,
    c.name         AS customer_name,
    c.phone        AS phone,
    c.email        AS email,
    c.birthday     AS birthday,
    i.sku          AS sku,
    i.title        AS product_name,
    i.category     AS category,
    i.qty          AS quantity,
    i.amount       AS line_amount
FROM shop_orders o
LEFT JOIN shop_customers c ON c.customer_id = o.customer_id
LEFT JOIN shop_order_items i ON i.order_id = o.order_id
WHERE o.updated_at >= :start AND o.updated_at < :end
ORDER BY o.order_id, i.line_no
""".strip()
"""The intake's query against the shop database: one row per order line of the orders that changed
in the half-open interval [:start, :end) ('YYYY-MM-DD HH:MM:SS', shop local time), columns named
as in :mod:`huitouke.records`."""


def write_shop(shop: DemoShop, url: str | sa.Engine) -> dict[str, int]:
    """Drop and recreate the three shop tables at ``url`` and fill them; returns rows per table."""
    engine = sa.create_engine(url) if isinstance(url, str) else url
    metadata = shop_metadata()
    frames = {"shop_customers": shop.customers, "shop_orders": shop.orders, "shop_order_items": shop.items}
    started = time.perf_counter()
    try:
        with engine.begin() as connection:
            metadata.drop_all(connection)
            metadata.create_all(connection)
            for table in SHOP_TABLES:
                frames[table].to_sql(
                    table,
                    connection,
                    if_exists="append",
                    index=False,
                    chunksize=WRITE_CHUNK_ROWS,
                    method=None,
                )
    finally:
        if isinstance(url, str):
            engine.dispose()
    counts = {table: len(frames[table]) for table in SHOP_TABLES}
    log.info(
        "wrote demo shop to %s: %s in %.2fs",
        engine.url.render_as_string(hide_password=True),
        counts,
        time.perf_counter() - started,
    )
    return counts
