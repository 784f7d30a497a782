"""The holdout arm: its share, its stability over re-runs, waves and re-entries, its independence."""

from __future__ import annotations

import math
from datetime import date, timedelta

import numpy as np
import pandas as pd
from segment_rows import PLAIN_SEGMENT

from huitouke.campaigns import HOLDOUT, TREATMENT, assign_arms, holdout_draws, parse_playbook, plan_day
from huitouke.campaigns.holdout import DEFAULT_SALT, uniform
from huitouke.segments import SEGMENTS_COLUMNS

N = 10_000
IDS = [f"cust{i:06d}" for i in range(N)]
DAY = date(2025, 6, 10)


def within_binomial(count: int, n: int, p: float, sigmas: float = 4.0) -> bool:
    return abs(count - n * p) <= sigmas * math.sqrt(n * p * (1 - p))


def segments(ids) -> pd.DataFrame:
    n = len(ids)
    base = {
        "customer_id": list(ids),
        **PLAIN_SEGMENT,
    }
    return pd.DataFrame(
        {c: base[c] if isinstance(base[c], list) else [base[c]] * n for c in SEGMENTS_COLUMNS}
    )


def contacts(ids) -> pd.DataFrame:
    return pd.DataFrame({"customer_id": list(ids), "phone": "13800138000", "sms_opt_out": False})


def playbook(share=0.1, salt=None, waves=None):
    holdout = {"share": share} | ({"salt": salt} if salt else {})
    campaign = {
        "priority": 50,
        "entry": {"event": "state"},
        "templates": ["sms/a"],
        "holdout": holdout,
        "waves": waves or {"interval_days": 10, "max_waves": 3},
    }
    return parse_playbook({"shop": {"name": "测试小店"}, "campaigns": {"promo": campaign}}, "test.yaml")


def test_the_holdout_share_is_within_binomial_bounds_for_10000_customers():
    for share in (0.05, 0.10, 0.25):
        held = int((assign_arms("promo", IDS, share) == HOLDOUT).sum())
        assert within_binomial(held, N, share), (share, held)


def test_planned_entries_hold_out_the_playbooks_share():
    plan = plan_day(playbook(0.1), DAY, segments(IDS), contacts(IDS))
    row = plan.summary.iloc[0]
    assert row["entered"] == N and row["due"] == N
    assert within_binomial(int(row["held_out"]), N, 0.1)
    assert row["treated"] + row["held_out"] == N and len(plan.sends) == row["treated"]


def test_the_arm_is_stable_under_re_runs():
    first = assign_arms("promo", IDS, 0.1)
    assert np.array_equal(first, assign_arms("promo", list(reversed(IDS)), 0.1)[::-1])
    a = plan_day(playbook(), DAY, segments(IDS[:2000]), contacts(IDS[:2000]))
    b = plan_day(playbook(), DAY, segments(IDS[:2000]), contacts(IDS[:2000]))
    pd.testing.assert_frame_equal(a.entries, b.entries)
    pd.testing.assert_frame_equal(a.waves, b.waves)


def test_the_arm_holds_for_every_wave_even_if_the_share_changes_later():
    ids = IDS[:3000]
    day1 = plan_day(playbook(0.1), DAY, segments(ids), contacts(ids))
    arms = day1.entries.set_index("customer_id")["arm"]
    # the marketer raises the share to 50% before wave 2: existing entries keep their arm
    day11 = plan_day(
        playbook(0.5), DAY + timedelta(days=10), segments(ids), contacts(ids), entries=day1.entries
    )
    w = day11.waves.set_index("customer_id")
    assert set(w["wave"]) == {2}
    assert (w["arm"] == arms[w.index]).all()
    assert ((w["outcome"] == "held_out") == (arms[w.index] == HOLDOUT)).all()


def test_a_re_entering_customer_keeps_the_same_arm():
    assert list(assign_arms("thank_you", ["c1"] * 3, 0.5)) == [assign_arms("thank_you", ["c1"], 0.5)[0]] * 3


def test_arms_of_different_campaigns_are_independent():
    a = assign_arms("thank_you", IDS, 0.1) == HOLDOUT
    b = assign_arms("coupon_waves", IDS, 0.1) == HOLDOUT
    assert within_binomial(int((a & b).sum()), N, 0.01)


def test_raising_the_share_only_moves_customers_from_treatment_to_holdout():
    low = assign_arms("promo", IDS, 0.1) == HOLDOUT
    high = assign_arms("promo", IDS, 0.3) == HOLDOUT
    assert not (low & ~high).any()


def test_a_new_salt_draws_new_arms():
    a = assign_arms("promo", IDS, 0.1, DEFAULT_SALT) == HOLDOUT
    b = assign_arms("promo", IDS, 0.1, "2026-rotation") == HOLDOUT
    assert within_binomial(int((a & b).sum()), N, 0.01)
    plan = plan_day(playbook(0.1, salt="2026-rotation"), DAY, segments(IDS[:500]), contacts(IDS[:500]))
    expected = assign_arms("promo", IDS[:500], 0.1, "2026-rotation")
    assert list(plan.entries.set_index("customer_id").loc[IDS[:500], "arm"]) == list(expected)


def test_the_draw_is_uniform_and_a_plain_function_of_salt_campaign_and_customer():
    draws = holdout_draws("promo", IDS)
    assert draws.min() >= 0 and draws.max() < 1
    assert abs(draws.mean() - 0.5) < 0.01
    counts = np.histogram(draws, bins=10, range=(0, 1))[0]
    assert all(within_binomial(int(c), N, 0.1) for c in counts)
    assert draws[0] == uniform(DEFAULT_SALT, "promo", IDS[0])


def test_no_holdout_and_treatment_are_the_only_arms():
    assert set(assign_arms("promo", IDS, 0.0)) == {TREATMENT}
