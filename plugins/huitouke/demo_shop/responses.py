"""Customers answering the messages: the demo's known treatment effect.

:func:`add_responses` adds to the shop the orders that one business day's messages caused, at the
uplift :data:`RESPONSE_UPLIFT` gives each campaign; the holdout never gets these orders, so the
evaluation has a known truth to find.
"""

from __future__ import annotations

import datetime

import numpy as np
import pandas as pd

from huitouke.demo_shop.arrays import day_number, fmt_cents
from huitouke.demo_shop.parameters import flat_catalogue
from huitouke.demo_shop.shop import TIME_FORMAT, DemoShop
from huitouke.records import CATEGORIES, COMPLETED, ORGANIC

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
    rng = np.random.default_rng([seed, day_number(sent_on), 97])
    chosen = _responders(rng, messages)
    if chosen.empty:
        return shop, 0
    orders, items = _response_orders(rng, shop.truth, chosen, sent_on)
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
    return grown, len(chosen)


def _responders(rng: np.random.Generator, messages: pd.DataFrame) -> pd.DataFrame:
    """The messages that a purchase answers: one chance per campaign and customer."""
    one = messages.drop_duplicates(["campaign", "customer_id"]).reset_index(drop=True)
    uplift = one["campaign"].map(RESPONSE_UPLIFT).fillna(0.0).to_numpy(dtype=float)
    responded = rng.random(len(one)) < uplift
    return one[responded].reset_index(drop=True)


def _response_orders(
    rng: np.random.Generator, truth: pd.DataFrame, chosen: pd.DataFrame, sent_on: datetime.date
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The responders' orders and their one line each: (shop_orders rows, shop_order_items rows)."""
    n = len(chosen)
    truth = truth.set_index("customer_id")
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
    paid_text = pd.DatetimeIndex(paid).strftime(TIME_FORMAT)
    order_id = [f"R{sent_on:%Y%m%d}{i:06d}" for i in range(n)]
    catalogue = flat_catalogue()
    category_index = np.array([CATEGORIES.index(c) if c in CATEGORIES else 0 for c in category])
    product = catalogue.starts[category_index] + rng.integers(0, catalogue.counts[category_index])
    orders = pd.DataFrame(
        {
            "order_id": order_id,
            "customer_id": chosen["customer_id"].astype(str).to_numpy(),
            "paid_at": paid_text,
            "pay_amount": fmt_cents(cents),
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
            "sku": [catalogue.skus[i] for i in product],
            "title": [catalogue.titles[i] for i in product],
            "category": category,
            "qty": 1,
            "amount": fmt_cents(cents),
        }
    )
    return orders, items
