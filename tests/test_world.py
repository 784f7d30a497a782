"""The world's day step and truth (huitouke.world), on a small shop: shapes, determinism, the
shop's conventions, bounces and replies, and a truth that means what the evaluation estimates."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from huitouke.demo_shop import DemoShop, ShopSpec, generate_shop, shop_as_of
from huitouke.demo_shop.store import shop_metadata
from huitouke.records import PAID_STATUSES
from huitouke.world import TRUE_EFFECTS, Effect, World, grown_shop, true_effects, without_effects
from huitouke.world.hazard import Calendar, next_purchase, season_factors

START = date(2025, 11, 1)
END = date(2025, 12, 10)


@pytest.fixture(scope="module")
def shop() -> DemoShop:
    return generate_shop(
        ShopSpec(customers=4_000, start=date(2024, 6, 1), end=START - timedelta(days=1), seed=5)
    )


def _messages(world: World, campaign: str, n: int, day: date, wave: int = 1) -> pd.DataFrame:
    """``n`` SMS of ``campaign`` to the first customers who have bought (planned the day before)."""
    ids = world.people.ids[: n * 2][:n]
    return pd.DataFrame(
        {
            "campaign": campaign,
            "customer_id": ids,
            "entered_on": day - timedelta(days=1),
            "wave": wave,
            "channel": "sms",
            "status": "sent",
            "coupon_code": "CW-TEST",
        }
    )


def _waves(messages: pd.DataFrame, holdout: pd.DataFrame) -> pd.DataFrame:
    """campaign_waves rows: the messaged customers treated, ``holdout`` held out."""
    treated = messages.assign(arm="treatment", outcome="treated")
    held = holdout.assign(arm="holdout", outcome="held_out")
    rows = pd.concat([treated, held], ignore_index=True)
    return rows.assign(due_on=rows["entered_on"], channels="sms")[
        ["campaign", "customer_id", "entered_on", "wave", "due_on", "arm", "outcome", "channels"]
    ]


def _season(shop: DemoShop, effects=TRUE_EFFECTS, messages_on: dict | None = None) -> tuple[World, list]:
    world = World.from_shop(shop, START, END, effects=effects, seed=9)
    days = []
    day = START
    while day <= END:
        days.append(world.step(day, (messages_on or {}).get(day)))
        day += timedelta(days=1)
    return world, days


def test_the_calendar_waits_for_11_11_and_peaks_on_it():
    factors = season_factors((START - date(1970, 1, 1)).days, 45)
    assert factors[10] > 4 * factors[20]  # 11.11 against a quiet late November day
    assert factors[3] < factors[20]  # early November: customers wait
    assert factors[41] > 2 * factors[40]  # 12.12


def test_next_purchase_follows_the_category_cycle():
    calendar = Calendar(20_000, 21_000)
    n = 4_000
    start = np.full(n, 20_000.0)
    budget = np.random.default_rng(1).exponential(1.0, n)
    food = next_purchase(start, start, np.full(n, 30.0), budget, calendar) - start
    durables = next_purchase(start, start, np.full(n, 300.0), budget, calendar) - start
    assert 20 < np.median(food) < 40
    assert np.median(durables) > 5 * np.median(food)


def test_a_season_gives_the_shops_rows_deterministically(shop: DemoShop):
    world, days = _season(shop)
    again, days_again = _season(shop)
    for one, two in zip(days, days_again, strict=True):
        pd.testing.assert_frame_equal(one.orders, two.orders)
    orders = pd.concat([d.orders for d in days], ignore_index=True)
    items = pd.concat([d.items for d in days], ignore_index=True)
    tables = shop_metadata().tables
    assert list(orders.columns) == [c.name for c in tables["shop_orders"].columns]
    assert list(items.columns) == [c.name for c in tables["shop_order_items"].columns]
    assert orders["order_id"].is_unique and set(items["order_id"]) == set(orders["order_id"])
    by_day = orders.groupby(orders["paid_at"].str[:10]).size()
    assert by_day["2025-11-11"] > 3 * by_day["2025-11-20"]
    assert orders["status"].isin(["refunded", "cancelled"]).mean() < 0.08
    new = set(world.people.ids[len(shop.customers) :])
    assert new & set(orders["customer_id"])  # new customers arrive and buy
    grown = grown_shop(shop, world, days)
    mid = shop_as_of(grown, date(2025, 11, 15)).orders
    mid = mid[mid["order_id"].str.startswith("W")]
    assert mid["paid_at"].max() < "2025-11-16"
    assert mid["status"].isin([*PAID_STATUSES, "refunded", "cancelled"]).all()


def test_days_must_come_in_order(shop: DemoShop):
    world = World.from_shop(shop, START, END, seed=9)
    with pytest.raises(ValueError, match="not 2025-11-02"):
        world.step(date(2025, 11, 2))


def test_messages_bounce_off_invalid_numbers_and_some_recipients_reply_t(shop: DemoShop):
    world = World.from_shop(shop, START, END, seed=9)
    sent = _messages(world, "win_back", 3_000, START)
    happened = world.step(START, sent)
    invalid = set(world.people.ids[world.people.invalid_phone])
    assert len(world.invalid_numbers()) == len(invalid) > 0
    bounced = happened.undelivered
    assert set(bounced["reason"]) == {"invalid_number"}
    assert set(bounced["customer_id"]) == invalid & set(sent["customer_id"])
    assert happened.delivered == len(sent) - len(bounced)
    assert 0 < len(happened.replies) < 40 and set(happened.replies["text"]) == {"T"}
    again = world.step(START + timedelta(days=1), sent.assign(wave=2))
    opted = set(happened.replies["customer_id"])
    assert opted <= set(again.undelivered.loc[again.undelivered["reason"] == "opted_out", "customer_id"])


def test_the_truth_of_a_null_world_is_zero_and_a_planted_one_positive(shop: DemoShop):
    day = START + timedelta(days=2)
    for effects, positive in ((without_effects(TRUE_EFFECTS), False), (TRUE_EFFECTS, True)):
        probe = World.from_shop(shop, START, END, effects=effects, seed=9)
        sent = _messages(probe, "coupon_waves", 1_500, day)
        holdout = _messages(probe, "coupon_waves", 3_000, day).iloc[1_500:]
        world, _ = _season(shop, effects, {day: sent})
        truth = true_effects(world, _waves(sent, holdout))
        assert set(truth["window_days"]) == {2, 10, 30}
        assert (truth["customers"] == 3_000).all()
        if positive:
            assert (truth["itt_effect"] > 0).all() and (truth["sent_effect"] >= truth["itt_effect"]).all()
        else:
            assert (truth["itt_effect"] == 0).all()


def test_a_pull_forward_effect_lifts_2_days_more_than_30(shop: DemoShop):
    pull_only = {"care_tips": replace(TRUE_EFFECTS["care_tips"], respond=0.0, pull=0.9, by_category={})}
    day = START + timedelta(days=1)
    probe = World.from_shop(shop, START, END, effects=pull_only, seed=9)
    sent = _messages(probe, "care_tips", 2_000, day)
    holdout = _messages(probe, "care_tips", 4_000, day).iloc[2_000:]
    world, _ = _season(shop, pull_only, {day: sent})
    truth = true_effects(world, _waves(sent, holdout)).set_index("window_days")["itt_effect"]
    assert truth.loc[2] > 0.005
    assert truth.loc[30] < truth.loc[2] / 2


def test_a_campaign_without_an_effect_moves_nobody(shop: DemoShop):
    effects = {"care_tips": Effect()}
    day = START + timedelta(days=1)
    probe = World.from_shop(shop, START, END, effects=effects, seed=9)
    sent = _messages(probe, "care_tips", 1_000, day)
    world, _ = _season(shop, effects, {day: sent})
    assert np.isinf(world.ledger.messages()["fire"]).all()
    assert (true_effects(world, _waves(sent, sent.iloc[:0]))["itt_effect"] == 0).all()
