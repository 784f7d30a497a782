"""The world's customers: those of a generated shop as they stand at the season's start, and the
new customers who arrive during the season (their first order drawn in advance, 11.11 peak
included), as parallel arrays indexed by position."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from huitouke.campaigns.holdout import uniforms
from huitouke.demo_shop.arrays import DAY, to_str
from huitouke.demo_shop.generate import customer_model
from huitouke.demo_shop.parameters import MAX_ORDER_CENTS, MIN_ORDER_CENTS, ORDER_SIGMA, SOURCES
from huitouke.demo_shop.people import people
from huitouke.demo_shop.shop import TIME_FORMAT, DemoShop
from huitouke.records import CATEGORIES, PAID_STATUSES

INVALID_PHONE_SHARE = 0.015  # numbers that do not exist (any more): the gateway reports them


@dataclass
class Population:
    """Per customer (position = index): who they are and where their natural cycle stands."""

    ids: np.ndarray  # str customer ids
    source: np.ndarray  # codes into SOURCES (== records.ACQUISITION_SOURCES)
    level: np.ndarray  # personal mean order value, CNY
    category: np.ndarray  # main category, codes into CATEGORIES
    propensity: np.ndarray  # chance of coming back after each order
    gap: np.ndarray  # own mean gap between orders, days
    first_cny: np.ndarray  # the first order's amount, CNY
    last: np.ndarray  # last purchase, epoch days (NaN: not arrived yet)
    arrival: np.ndarray  # first order of a new customer, epoch days (NaN: already a customer)
    has_email: np.ndarray  # bool
    invalid_phone: np.ndarray  # bool
    phone: np.ndarray  # str (for the replies' rows)
    customers: pd.DataFrame  # the shop_customers rows of everybody, new customers included

    @property
    def size(self) -> int:
        return int(self.ids.size)


def from_shop(shop: DemoShop, start_day: int, end_day: int, arrivals: int, seed: int) -> Population:
    """The shop's customers at epoch day ``start_day`` plus ``arrivals`` new ones until ``end_day``."""
    old = _existing(shop)
    new, new_rows = _arrivals(shop, arrivals, start_day, end_day, seed)
    customers = pd.concat([shop.customers, new_rows], ignore_index=True)
    merged = {k: np.concatenate([old[k], new[k]]) for k in old}
    ids = customers["customer_id"].astype(str).to_numpy(dtype=object)
    phone = customers["phone"].astype(object).to_numpy()
    return Population(
        ids=ids,
        **merged,
        has_email=customers["email"].notna().to_numpy(),
        invalid_phone=uniforms((str(seed), "invalid_phone"), ids) < INVALID_PHONE_SHARE,
        phone=phone,
        customers=customers,
    )


def _existing(shop: DemoShop) -> dict[str, np.ndarray]:
    """The generated customers' truth, with their first order's amount and their last purchase."""
    truth = shop.truth
    good = shop.orders[~shop.orders["order_id"].isin(shop.bad_rows["order_id"])]
    good = good[good["status"].isin(PAID_STATUSES) | good["status"].isin(["refunded", "cancelled"])]
    paid = pd.to_datetime(good["paid_at"], format=TIME_FORMAT)
    when = (paid - pd.Timestamp("1970-01-01")) / pd.Timedelta(days=1)
    frame = pd.DataFrame(
        {"customer_id": good["customer_id"].astype(str), "t": when, "cny": pd.to_numeric(good["pay_amount"])}
    ).sort_values(["customer_id", "t"], kind="stable")
    per = frame.groupby("customer_id").agg(first_cny=("cny", "first"), last=("t", "max"))
    per = per.reindex(truth["customer_id"].astype(str))
    n = len(truth)
    return {
        "source": np.array([SOURCES.index(s) for s in truth["acquisition_source"]], dtype=np.int64),
        "level": truth["aov_level"].to_numpy(dtype=float),
        "category": np.array([CATEGORIES.index(c) for c in truth["main_category"]], dtype=np.int64),
        "propensity": truth["repurchase_propensity"].to_numpy(dtype=float),
        "gap": truth["mean_gap_days"].to_numpy(dtype=float),
        "first_cny": per["first_cny"].fillna(0.0).to_numpy(dtype=float),
        "last": per["last"].to_numpy(dtype=float),
        "arrival": np.full(n, np.nan),
    }


def _arrivals(
    shop: DemoShop, count: int, start_day: int, end_day: int, seed: int
) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
    """New customers with a first order in [start_day, end_day], ids continuing the shop's."""
    rng = np.random.default_rng([seed, 5150])
    model = customer_model(rng, count, start_day, end_day)
    noise = np.exp(ORDER_SIGMA * rng.standard_normal(count) - ORDER_SIGMA**2 / 2)
    cents = np.clip(np.round(model.level * noise * 100), MIN_ORDER_CENTS, MAX_ORDER_CENTS)
    drawn = people(rng, count, model.first_ts)
    existing = len(shop.customers)
    width = max(6, len(str(existing + count)))
    ids = np.char.add("c", np.char.zfill((np.arange(count) + existing + 1).astype(str), width))
    rows = pd.DataFrame({"customer_id": to_str(ids), **{k: to_str(v) for k, v in drawn.items()}})
    rows = rows[list(shop.customers.columns)]
    arrays = {
        "source": model.source.astype(np.int64),
        "level": model.level,
        "category": model.main_category.astype(np.int64),
        "propensity": model.propensity,
        "gap": model.gap_days,
        "first_cny": cents / 100.0,
        "last": np.full(count, np.nan),
        "arrival": model.first_ts / DAY,
    }
    return arrays, rows
