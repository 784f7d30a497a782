"""Lifecycle, R/F/M scores, member and value tiers: hand-computed cases at the boundaries."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from huitouke.segments import (
    SEGMENTS_COLUMNS,
    QuintileBounds,
    SegmentSettings,
    classify,
    quintile_bounds,
    quintile_scores,
    scores_from_bounds,
)
from huitouke.segments.settings import LifecycleOverride, LifecycleSettings, MemberTierSettings, TierRule
from huitouke.shards import Shard

TODAY = dt.date(2025, 12, 31)


def _state(customers: list[dict]) -> pd.DataFrame:
    """A state from short descriptions: first/last = days ago, orders, total_cents, group, source."""
    rows = []
    for i, c in enumerate(customers):
        first = pd.Timestamp(TODAY - dt.timedelta(days=c.get("first", c.get("last", 0))))
        last = pd.Timestamp(TODAY - dt.timedelta(days=c.get("last", 0)))
        orders, total = c.get("orders", 1), c.get("total", 10_000)
        rows.append(
            {
                "customer_id": c.get("id", f"c{i:03d}"),
                "first_paid_at": first,
                "last_paid_at": last,
                "first_business_date": first,
                "last_business_date": last,
                "paid_orders": orders,
                "total_cents": total,
                "aov_cents": (2 * total + orders) // (2 * orders),
                "main_category_group": c.get("group", "food"),
                "acquisition_source": c.get("source", "organic"),
            }
        )
    return pd.DataFrame(rows).astype(
        {"customer_id": "str", "main_category_group": "str", "acquisition_source": "str"}
    )


def _one(customer: dict, settings: SegmentSettings | None = None) -> dict:
    return classify(_state([customer]), TODAY, settings).iloc[0].to_dict()


def test_the_segments_have_the_documented_columns_in_state_order():
    segments = classify(_state([{"id": "b"}, {"id": "a"}]), TODAY)
    assert tuple(segments.columns) == SEGMENTS_COLUMNS
    assert list(segments["customer_id"]) == ["b", "a"]


@pytest.mark.parametrize(
    ("customer", "lifecycle"),
    [
        ({"first": 0, "last": 0}, "new"),
        ({"first": 29, "last": 29}, "new"),  # day 29 after the first order: still within 30 days
        ({"first": 30, "last": 30}, "one_time"),  # exactly new_days: no longer new
        ({"first": 179, "last": 179}, "one_time"),
        ({"first": 180, "last": 180}, "at_risk"),  # exactly at_risk_days
        ({"first": 364, "last": 364}, "at_risk"),
        ({"first": 365, "last": 365}, "churned"),  # exactly churn_days: one year without an order
        ({"first": 400, "last": 10, "orders": 2}, "repeat"),
        ({"first": 400, "last": 10, "orders": 3}, "repeat"),
        ({"first": 400, "last": 10, "orders": 4}, "loyal"),
        ({"first": 10, "last": 0, "orders": 5}, "new"),  # new beats loyal
        ({"first": 900, "last": 200, "orders": 9}, "at_risk"),  # at risk beats loyal
        ({"first": 900, "last": 365, "orders": 9}, "churned"),
    ],
)
def test_lifecycle_boundaries_with_the_default_windows(customer, lifecycle):
    assert _one(customer)["lifecycle"] == lifecycle


@pytest.mark.parametrize(
    ("days", "food", "durables"),
    [
        (179, "one_time", "one_time"),
        (180, "at_risk", "one_time"),
        (365, "churned", "at_risk"),
        (729, "churned", "at_risk"),
        (730, "churned", "churned"),
    ],
)
def test_long_cycle_groups_churn_later(days, food, durables):
    assert _one({"first": days, "last": days, "group": "food"})["lifecycle"] == food
    assert _one({"first": days, "last": days, "group": "durables"})["lifecycle"] == durables


def test_a_group_override_may_give_only_the_churn_window():
    settings = SegmentSettings(
        lifecycle=LifecycleSettings(by_category_group={"3c": LifecycleOverride(churn_days=500)})
    )
    assert _one({"first": 400, "last": 400, "group": "3c"}, settings)["lifecycle"] == "at_risk"
    assert _one({"first": 500, "last": 500, "group": "3c"}, settings)["lifecycle"] == "churned"
    assert _one({"first": 400, "last": 400, "group": "durables"}, settings)["lifecycle"] == "churned"


def test_a_customer_without_a_main_group_keeps_the_default_windows():
    """No paid line, no main group: the shop's windows, not those of another customer's group."""
    settings = SegmentSettings(
        lifecycle=LifecycleSettings(by_category_group={"3c": LifecycleOverride(churn_days=500)})
    )
    state = _state([{"first": 400, "last": 400, "group": "3c"}, {"first": 400, "last": 400}])
    state.loc[1, "main_category_group"] = None
    segments = classify(state, TODAY, settings)
    assert list(segments["lifecycle"]) == ["at_risk", "churned"]
    assert segments["category_group"].isna().tolist() == [False, True]


def test_labels_are_categoricals_of_their_names():
    """Lifecycle, tiers and group come as categoricals: the diff and the KPIs count codes."""
    segments = classify(_state([{"group": "food"}, {"group": "3c", "orders": 2}]), TODAY)
    for column in ("lifecycle", "member_tier", "value_tier", "category_group"):
        assert isinstance(segments[column].dtype, pd.CategoricalDtype), column
    assert list(segments["lifecycle"].cat.categories) == [
        "new", "one_time", "repeat", "loyal", "at_risk", "churned"
    ]  # fmt: skip
    assert segments["category_group"].tolist() == ["food", "3c"]


def test_classifying_a_day_before_the_last_order_is_refused():
    state = _state([{"last": 0}])
    with pytest.raises(ValueError, match="until=business_date"):
        classify(state, TODAY - dt.timedelta(days=1))


def test_quintile_scores_are_exact_quintiles_for_distinct_values():
    assert quintile_scores(np.arange(10)).tolist() == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert quintile_scores(np.arange(10)[::-1]).tolist() == [5, 5, 4, 4, 3, 3, 2, 2, 1, 1]
    assert quintile_scores(np.array([7])).tolist() == [1]


def test_equal_values_get_equal_scores_whatever_the_row_order():
    values = np.array([1, 1, 1, 1, 1, 1, 2, 2, 3, 9])
    scores = quintile_scores(values)
    assert scores.tolist() == [1, 1, 1, 1, 1, 1, 4, 4, 5, 5]  # ties take the score of their lowest member
    rng = np.random.default_rng(0)
    for _ in range(5):
        order = rng.permutation(values.size)
        assert quintile_scores(values[order]).tolist() == scores[order].tolist()
    wide = rng.integers(0, 10**12, 1000)  # a wide range goes through the sorting path
    wide[::7] = wide[0]
    order = rng.permutation(wide.size)
    assert quintile_scores(wide[order]).tolist() == quintile_scores(wide)[order].tolist()


def test_global_cut_points_score_any_part_as_the_whole_does():
    """The shards' rule: scores against the whole's four cut points are quintile_scores', ties
    included, on both of its paths (small integer range, wide range)."""
    rng = np.random.default_rng(1)
    for values in (
        rng.integers(0, 6, 997),  # few distinct values: large tie groups
        rng.integers(0, 10**12, 500),
        np.array([7]),
        np.repeat(np.int64(3), 11),
    ):
        bounds = quintile_bounds(values)
        assert scores_from_bounds(values, bounds).tolist() == quintile_scores(values).tolist()
        part = rng.random(values.size) < 0.3
        assert scores_from_bounds(values[part], bounds).tolist() == quintile_scores(values)[part].tolist()
    assert quintile_bounds(np.array([], dtype=np.int64)).size == 0


def test_a_shard_classified_with_the_whole_bounds_is_the_whole_classification_restricted():
    rng = np.random.default_rng(2)
    state = _state(
        [
            {
                "id": f"c{i:04d}",
                "last": int(rng.integers(0, 400)),
                "first": 400,
                "orders": int(rng.integers(1, 6)),
                "total": int(rng.integers(1, 40)) * 1_000,
                "group": str(rng.choice(["food", "durables"])),
            }
            for i in range(300)
        ]
    )
    whole = classify(state, TODAY)
    bounds = QuintileBounds.of(state)
    for shard in Shard.all_of(3):
        mine = shard.mask(state["customer_id"])
        part = classify(state[mine].reset_index(drop=True), TODAY, bounds=bounds)
        expected = whole[mine].reset_index(drop=True)
        pd.testing.assert_frame_equal(part.astype(str), expected.astype(str))


def test_recent_frequent_big_spenders_score_five_and_the_others_one():
    customers = [
        {"id": f"c{i}", "last": 50 - 10 * i, "first": 60, "orders": 1 + i, "total": 1_000 * (i + 1)}
        for i in range(5)
    ]
    segments = classify(_state(customers), TODAY).set_index("customer_id")
    assert segments["r_score"].tolist() == [1, 2, 3, 4, 5]  # c4 bought most recently
    assert segments["f_score"].tolist() == [1, 2, 3, 4, 5]
    assert segments["m_score"].tolist() == [1, 2, 3, 4, 5]


def test_member_tiers_take_the_first_rule_that_holds():
    settings = SegmentSettings(
        member_tiers=MemberTierSettings(
            rules=[
                TierRule(tier="vip", min_m=5, min_paid_orders=3),
                TierRule(tier="active", min_total_cny=100),
            ],
            otherwise="normal",
        )
    )
    customers = [
        {"id": "a", "orders": 3, "total": 90_000, "last": 5, "first": 100},  # top M, 3 orders: vip
        {"id": "b", "orders": 2, "total": 80_000, "last": 5, "first": 100},  # top-ish M but 2 orders
        {"id": "c", "orders": 1, "total": 10_000, "last": 5, "first": 100},  # exactly 100 CNY: active
        {"id": "d", "orders": 1, "total": 9_999, "last": 5, "first": 100},
        {"id": "e", "orders": 1, "total": 500, "last": 5, "first": 100},
    ]
    tiers = classify(_state(customers), TODAY, settings).set_index("customer_id")["member_tier"]
    assert tiers.to_dict() == {"a": "vip", "b": "active", "c": "active", "d": "normal", "e": "normal"}


def test_the_default_member_tiers_follow_r_f_and_m_together():
    customers = [
        {"id": f"one{i}", "orders": 1, "total": 5_000, "last": 100 + i, "first": 100 + i} for i in range(6)
    ]
    customers += [
        {"id": "vip", "orders": 6, "total": 300_000, "last": 1, "first": 300},
        {"id": "active", "orders": 2, "total": 30_000, "last": 2, "first": 300},
        {"id": "big_but_gone", "orders": 7, "total": 290_000, "last": 170, "first": 300},
    ]
    tiers = classify(_state(customers), TODAY).set_index("customer_id")["member_tier"]
    assert tiers["vip"] == "vip"
    assert tiers["active"] == "active"
    assert tiers["big_but_gone"] == "normal"  # R too low
    assert set(tiers[[f"one{i}" for i in range(6)]]) == {"normal"}


@pytest.mark.parametrize(
    ("orders", "total", "tier"),
    [
        (1, 7_000, "low"),  # AOV exactly 70 CNY
        (1, 7_001, "mid"),
        (2, 14_001, "mid"),  # AOV 70.005 CNY: above 70, compared exactly
        (2, 14_000, "low"),
        (1, 14_000, "mid"),  # exactly 140
        (3, 42_001, "premium"),  # 140.0033
        (1, 100, "low"),
    ],
)
def test_value_tiers_by_average_order_value_are_exact_in_cents(orders, total, tier):
    assert _one({"orders": orders, "total": total, "first": 40, "last": 40})["value_tier"] == tier


def test_low_value_acquisition_is_a_first_order_from_a_flash_sale_or_with_points():
    customers = [
        {"id": "f", "source": "flash_sale"},
        {"id": "p", "source": "points"},
        {"id": "o", "source": "organic"},
    ]
    flags = classify(_state(customers), TODAY).set_index("customer_id")["low_value_acquisition"]
    assert flags.to_dict() == {"f": True, "p": True, "o": False}
    only_points = SegmentSettings(low_value_sources=["淘金币"])
    flags = classify(_state(customers), TODAY, only_points).set_index("customer_id")["low_value_acquisition"]
    assert flags.to_dict() == {"f": False, "p": True, "o": False}


def test_the_category_group_is_the_customers_main_group():
    assert _one({"group": "cosmetics"})["category_group"] == "cosmetics"
