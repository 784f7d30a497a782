"""What the demo shop is drawn from: DOMAIN.md's figures, the promotion calendar, the order
statuses and bad-row kinds, and the catalogue.

The figures are calibrated so that what the generated shop shows lands near DOMAIN.md's (mean order
value about 103 CNY, repeat rate rising with order value, flash-sale and points customers who
hardly come back); the tests in ``tests/test_demo_shop.py`` check that it does.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from huitouke.records import (
    ACQUISITION_SOURCES,
    CANCELLED,
    CATEGORIES,
    COMPLETED,
    PAID,
    REFUNDED,
    SHIPPED,
)

# Value tiers by average order value (DOMAIN.md, article 001).
TIER_MID_AOV = 70.0
TIER_PREMIUM_AOV = 140.0
VALUE_TIERS: tuple[str, ...] = ("low", "mid", "premium")  # AOV <= 70, 70 < AOV <= 140, AOV > 140

SOURCES: tuple[str, ...] = ACQUISITION_SOURCES  # codes into this tuple: organic, flash_sale, points
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
# An order's status as the shop shows it: codes into this tuple (the last one only on bad rows).
STATUS_CODES: tuple[str, ...] = (COMPLETED, SHIPPED, PAID, REFUNDED, CANCELLED, BAD_STATUS)


class FlatCatalogue(NamedTuple):
    """The catalogue as arrays over all products, category by category in CATEGORIES order."""

    skus: list[str]
    titles: list[str]
    prices: np.ndarray  # list price, CNY
    starts: np.ndarray  # per category: its first product
    counts: np.ndarray  # per category: how many products


def flat_catalogue() -> FlatCatalogue:
    """The catalogue flattened; a product is its position, its SKU derived from that position."""
    skus = [f"{SKU_PREFIX[c]}-{i + 1:04d}" for c in CATEGORIES for i in range(len(CATALOGUE[c]))]
    titles = [title for c in CATEGORIES for title, _ in CATALOGUE[c]]
    prices = np.array([price for c in CATEGORIES for _, price in CATALOGUE[c]])
    counts = np.array([len(CATALOGUE[c]) for c in CATEGORIES])
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return FlatCatalogue(skus, titles, prices, starts, counts)
