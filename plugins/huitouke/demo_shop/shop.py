"""What a demo shop is: the spec it is generated from, and the generated tables with their truth.

All times in the shop are naive strings in the shop's local time (``ShopSpec.timezone``, no DST in
China), formatted as :data:`TIME_FORMAT`.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field

import pandas as pd

TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


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
    ``bad_rows`` lists the malformed orders and why (``kind``, one of
    :data:`~huitouke.demo_shop.parameters.BAD_ROW_KINDS`).
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
