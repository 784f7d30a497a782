"""The entry-rule language: events, segment/state/order conditions, evaluated as masks."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest
from pydantic import ValidationError
from segment_rows import PLAIN_SEGMENT

from huitouke.campaigns.rules import (
    Conditions,
    EntryRule,
    RuleInputs,
    birthday_mask,
    conditions_mask,
    entry_mask,
    event_mask,
    prepare_orders,
)
from huitouke.segments import SEGMENTS_COLUMNS, SegmentSettings

DAY = date(2025, 6, 10)


def segments(rows: list[dict]) -> pd.DataFrame:
    base = {
        **PLAIN_SEGMENT,
    }
    return pd.DataFrame([{"customer_id": f"c{i}", **base, **row} for i, row in enumerate(rows)])[
        list(SEGMENTS_COLUMNS)
    ]


def orders(*rows) -> pd.DataFrame:
    """(customer, amount_cny, categories[, day])"""
    return prepare_orders(
        pd.DataFrame(
            [
                {
                    "order_id": f"o{i}",
                    "customer_id": r[0],
                    "business_date": r[3] if len(r) > 3 else DAY,
                    "amount_cents": round(r[1] * 100),
                    "categories": r[2],
                    "coupon_code": None,
                }
                for i, r in enumerate(rows)
            ]
        ),
        DAY,
    )


def mask(rule: dict, seg: pd.DataFrame, day_orders=None, birthdays=None, settings=None) -> list[bool]:
    return list(
        entry_mask(
            EntryRule.model_validate(rule),
            RuleInputs(
                seg,
                day_orders if day_orders is not None else orders(),
                birthdays,
                DAY,
                settings or SegmentSettings(),
            ),
        )
    )


def test_order_day_events_come_from_the_segment_row():
    seg = segments(
        [
            {"days_since_first_order": 0, "days_since_last_order": 0, "paid_orders": 1},
            {"days_since_first_order": 90, "days_since_last_order": 0},
            {"days_since_first_order": 90, "days_since_last_order": 15},
        ]
    )
    assert mask({"event": "first_order"}, seg) == [True, False, False]
    assert mask({"event": "any_paid_order"}, seg) == [True, True, False]
    assert mask({"event": "days_after_order", "days_after_order": 15}, seg) == [False, False, True]
    assert mask({"event": "state"}, seg) == [True, True, True]


def test_segment_conditions_take_any_of_the_listed_values():
    seg = segments(
        [
            {"lifecycle": "churned", "value_tier": "premium", "low_value_acquisition": True},
            {"lifecycle": "at_risk", "value_tier": "low"},
            {"lifecycle": "new", "value_tier": "premium", "acquisition_source": "flash_sale"},
        ]
    )
    rule = {"event": "state", "segment": {"lifecycle": ["churned", "at_risk"]}}
    assert mask(rule, seg) == [True, True, False]
    rule["segment"]["low_value_acquisition"] = False
    assert mask(rule, seg) == [False, True, False]
    assert mask({"event": "state", "segment": {"acquisition_source": ["聚划算"]}}, seg) == [
        False,
        False,
        True,
    ]
    assert mask({"event": "state", "segment": {"value_tier": ["premium"], "lifecycle": ["new"]}}, seg) == [
        False,
        False,
        True,
    ]


def test_state_bounds_are_inclusive_and_amounts_compare_in_cents():
    seg = segments(
        [
            {"paid_orders": 1, "aov_cents": 14_000, "days_since_last_order": 180},
            {"paid_orders": 2, "aov_cents": 14_001, "days_since_last_order": 179},
            {"paid_orders": 5, "aov_cents": 29_900, "days_since_last_order": 400},
        ]
    )
    assert mask({"event": "state", "state": {"max_paid_orders": 1}}, seg) == [True, False, False]
    assert mask({"event": "state", "state": {"min_aov_cny": 140.01}}, seg) == [False, True, True]
    assert mask(
        {"event": "state", "state": {"min_days_since_last_order": 180, "max_paid_orders": 4}}, seg
    ) == [
        True,
        False,
        False,
    ]


def test_order_conditions_need_one_order_of_the_day_meeting_all_of_them():
    seg = segments([{}, {}, {}, {}])
    day_orders = orders(
        ("c0", 299, ["womens_clothing"]),
        ("c1", 298.99, ["food"]),
        ("c1", 120, ["food"]),
        ("c2", 500, "food,durables"),
        ("c3", 500, ["food"], date(2025, 6, 9)),  # yesterday's order does not count
    )
    assert mask(
        {"event": "any_paid_order", "order": {"min_amount_cny": 299}},
        seg.assign(days_since_last_order=0),
        day_orders,
    ) == [
        True,
        False,
        True,
        False,
    ]
    rule = {"event": "any_paid_order", "order": {"categories": ["durables"]}}
    assert mask(rule, seg.assign(days_since_last_order=0), day_orders) == [False, False, True, False]
    settings = SegmentSettings(category_groups={"baby": ["food", "kids_clothing"]})
    rule = {"event": "any_paid_order", "order": {"category_groups": ["baby"], "min_amount_cny": 200}}
    assert mask(rule, seg.assign(days_since_last_order=0), day_orders, settings=settings) == [
        False,
        True,
        True,
        False,
    ]


def test_prepare_orders_keeps_the_days_paid_orders_and_reads_categories_in_any_shape():
    frame = pd.DataFrame(
        [
            {
                "order_id": 1,
                "customer_id": 7,
                "business_date": "2025-06-10",
                "amount_cents": 100,
                "categories": "a| b",
                "status": "paid",
            },
            {
                "order_id": 2,
                "customer_id": 7,
                "business_date": "2025-06-10",
                "amount_cents": 100,
                "categories": None,
                "status": "refunded",
            },
            {
                "order_id": 3,
                "customer_id": 8,
                "business_date": "2025-06-10",
                "amount_cents": 100,
                "categories": None,
                "status": "completed",
            },
        ]
    )
    out = prepare_orders(frame, DAY)
    assert list(out["order_id"]) == ["1", "3"] and list(out["customer_id"]) == ["7", "8"]
    assert list(out["categories"]) == [("a", "b"), ()]
    assert prepare_orders(None, DAY).empty


def test_birthdays_match_month_and_day_and_leap_day_birthdays_move_to_28_february():
    born = pd.Series([date(1990, 6, 10), date(1996, 2, 29), None, "1985-06-10", date(1990, 6, 11)])
    assert list(birthday_mask(born, DAY)) == [True, False, False, True, False]
    assert list(birthday_mask(born, date(2025, 2, 28))) == [False, True, False, False, False]
    assert list(birthday_mask(born, date(2024, 2, 28))) == [False, False, False, False, False]
    assert list(birthday_mask(born, date(2024, 2, 29))) == [False, True, False, False, False]


def test_birthday_event_can_fire_days_before():
    seg = segments([{}, {}])
    born = pd.Series([date(1990, 6, 13), date(1990, 6, 10)])
    rule = EntryRule.model_validate({"event": "birthday", "days_before_birthday": 3})
    assert list(event_mask(rule, seg, born, DAY)) == [True, False]


def test_conditions_without_any_field_match_everyone():
    seg = segments([{}, {}])
    assert list(conditions_mask(Conditions(), seg, orders())) == [True, True]


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"event": "state", "days_after_order": 3}, "days_after_order only goes with event days_after_order"),
        ({"event": "state", "days_before_birthday": 3}, "days_before_birthday only goes with event birthday"),
        ({"event": "state", "segment": {"lifecycle": []}}, "give at least one lifecycle"),
        ({"event": "state", "segment": {"acquisition_source": ["tv"]}}, "unknown acquisition source 'tv'"),
        ({"event": "state", "state": {"min_aov_cny": 70.001}}, "at most two decimals"),
        ({"event": "state", "state": {"min_r": 3}}, "Extra inputs are not permitted"),
        (
            {"event": "first_order", "order": {"min_amount_cny": 300, "max_amount_cny": 200}},
            "is above max_amount_cny",
        ),
    ],
)
def test_rules_are_validated(rule, message):
    with pytest.raises(ValidationError, match=message):
        EntryRule.model_validate(rule)


def test_a_customer_listed_twice_in_the_contacts_gets_the_birthday_of_the_last_row():
    from datetime import date

    import pandas as pd
    from segment_rows import PLAIN_SEGMENT

    from huitouke.campaigns import load_playbook, plan_day

    day = date(2025, 6, 10)
    segments = pd.DataFrame([{**PLAIN_SEGMENT, "customer_id": "a"}, {**PLAIN_SEGMENT, "customer_id": "b"}])
    contacts = pd.DataFrame(
        [
            {"customer_id": "a", "phone": "13800138000", "birthday": date(1990, 1, 1)},
            {"customer_id": "a", "phone": "13800138000", "birthday": None},
            {"customer_id": "b", "phone": "13800138001", "birthday": None},
        ]
    )
    plan = plan_day(load_playbook(), day, segments, contacts)
    assert "birthday" not in set(plan.entries["campaign"])
    contacts.loc[1, "birthday"] = day.replace(year=1990) + (
        pd.Timedelta(days=load_playbook().campaigns["birthday"].entry.days_before_birthday or 0)
    )
    plan = plan_day(load_playbook(), day, segments, contacts)
    assert set(plan.entries.loc[plan.entries["campaign"] == "birthday", "customer_id"]) == {"a"}
