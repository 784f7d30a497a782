"""Contact pressure: priority between campaigns, member-tier caps, the daily global cap, and the
suppression reasons, on hand-made segment rows so that every figure is known."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest
from segment_rows import PLAIN_SEGMENT

from huitouke.campaigns import HOLDOUT, parse_playbook, plan_day
from huitouke.campaigns.holdout import uniforms
from huitouke.segments import SEGMENTS_COLUMNS

DAY = date(2025, 6, 10)


def segments(n: int = 1, **columns) -> pd.DataFrame:
    """``n`` customers c0.. in a plain segment; keyword columns override (scalars or lists)."""
    base = {
        "customer_id": [f"c{i}" for i in range(n)],
        **PLAIN_SEGMENT,
    }
    base.update(columns)
    return pd.DataFrame(
        {c: base[c] if isinstance(base[c], list) else [base[c]] * n for c in SEGMENTS_COLUMNS}
    )


def contacts(ids, **columns) -> pd.DataFrame:
    n = len(ids)
    frame = {
        "customer_id": list(ids),
        "phone": "13800138000",
        "email": "x@example.com",
        "sms_opt_out": False,
        "email_opt_out": False,
        "birthday": None,
    }
    frame.update(columns)
    return pd.DataFrame({k: v if isinstance(v, list) else [v] * n for k, v in frame.items()})


def campaign(priority: int, templates=("sms/a",), kind="marketing", holdout=0.0, **fields) -> dict:
    return {
        "kind": kind,
        "priority": priority,
        "entry": {"event": "state"},
        "templates": list(templates),
        "holdout": {"share": holdout},
        **fields,
    }


def playbook(campaigns: dict, **pressure):
    return parse_playbook(
        {"shop": {"name": "测试小店"}, "contact_pressure": pressure, "campaigns": campaigns}, "test.yaml"
    )


def outcome(plan, campaign: str, cid: str = "c0") -> tuple[str, str | None]:
    w = plan.waves
    row = w[(w["campaign"] == campaign) & (w["customer_id"] == cid)].iloc[0]
    return row["outcome"], row["reason"]


def history(*rows) -> pd.DataFrame:
    """(customer_id, days before DAY[, counts_toward_cap])"""
    return pd.DataFrame(
        [
            {
                "customer_id": r[0],
                "contacted_on": DAY - timedelta(days=r[1]),
                "counts_toward_cap": r[2] if len(r) > 2 else True,
            }
            for r in rows
        ],
        columns=["customer_id", "contacted_on", "counts_toward_cap"],
    )


# -------------------------------------------------------------------------------------- priority


def test_the_highest_priority_wins_and_the_others_are_suppressed_as_lower_priority():
    pb = playbook(
        {"a": campaign(50), "b": campaign(40, ["sms/b"]), "c": campaign(60, ["sms/c"], kind="service")}
    )
    plan = plan_day(pb, DAY, segments(), contacts(["c0"]))
    assert outcome(plan, "c") == ("treated", None)
    assert outcome(plan, "a") == ("suppressed", "lower_priority")
    assert outcome(plan, "b") == ("suppressed", "lower_priority")
    assert list(plan.sends["template"]) == ["sms/c"]


def test_a_campaign_the_customer_cannot_receive_does_not_block_a_lower_one():
    pb = playbook({"a": campaign(50), "b": campaign(40, ["email/b"])})
    plan = plan_day(pb, DAY, segments(), contacts(["c0"], sms_opt_out=True))
    assert outcome(plan, "a") == ("suppressed", "opted_out")
    assert outcome(plan, "b") == ("treated", None)


def test_a_holdout_customer_of_the_winning_campaign_gets_nothing_from_the_others_either():
    pb = playbook({"a": campaign(50, holdout=0.9), "b": campaign(40, ["sms/b"])})
    ids = [f"c{i}" for i in range(50)]
    plan = plan_day(pb, DAY, segments(50), contacts(ids))
    a = plan.waves[plan.waves["campaign"] == "a"].set_index("customer_id")
    b = plan.waves[plan.waves["campaign"] == "b"].set_index("customer_id")
    held = a.index[a["outcome"] == "held_out"]
    assert len(held) > 20
    assert set(b.loc[held, "reason"]) == {"lower_priority"}  # decided as if treated
    assert not plan.sends["customer_id"].isin(held).any()


# -------------------------------------------------------------------------------- reachability


def test_suppression_reasons_for_unreachable_customers_and_the_opt_out_exit():
    pb = playbook({"a": campaign(50, ["sms/a", "email/a"], waves={"interval_days": 7, "max_waves": 3})})
    ids = ["c0", "c1", "c2", "c3"]
    people = contacts(
        ids,
        phone=[None, "13800138000", None, "13800138000"],
        email=[None, None, "x@example.com", None],
        sms_opt_out=[False, True, True, True],
        email_opt_out=[False, True, False, False],
    )
    plan = plan_day(pb, DAY, segments(4), people)
    assert outcome(plan, "a", "c0") == ("suppressed", "no_contact")  # nothing on file
    assert outcome(plan, "a", "c1") == ("suppressed", "opted_out")  # opted out of both
    assert outcome(plan, "a", "c2") == ("treated", None)  # e-mail only
    assert outcome(plan, "a", "c3") == ("suppressed", "no_contact")  # sms opted out, no e-mail
    exits = plan.exits.set_index("customer_id")["exit_reason"].to_dict()
    assert exits == {"c1": "opted_out"}
    assert plan.sends[["customer_id", "channel"]].values.tolist() == [["c2", "email"]]


def test_calls_need_a_phone_and_respect_the_sms_opt_out():
    pb = playbook({"f": campaign(50, ["call/f"], kind="service")})
    people = contacts(
        ["c0", "c1", "c2"], phone=["13800138000", None, "13800138001"], sms_opt_out=[False, False, True]
    )
    plan = plan_day(pb, DAY, segments(3), people)
    assert [outcome(plan, "f", c)[1] for c in ("c0", "c1", "c2")] == [None, "no_contact", "opted_out"]


def test_channel_policy_all_sends_on_every_reachable_channel_and_first_reachable_on_one():
    pb = playbook(
        {
            "both": campaign(50, ["email/both", "sms/both"]),
            "one": campaign(40, ["email/one", "sms/one"], channel_policy="first_reachable"),
        }
    )
    plan = plan_day(pb, DAY, segments(1), contacts(["c0"]))
    assert sorted(plan.sends["channel"]) == ["email", "sms"]
    plan = plan_day(
        playbook({"one": campaign(40, ["email/one", "sms/one"], channel_policy="first_reachable")}),
        DAY,
        segments(2),
        contacts(["c0", "c1"], email=["x@example.com", None]),
    )
    assert plan.sends[["customer_id", "channel"]].values.tolist() == [["c0", "email"], ["c1", "sms"]]


# ---------------------------------------------------------------------------- member-tier caps


@pytest.mark.parametrize(
    ("tier", "days_ago", "expected"),
    [
        ("normal", [29], "cap_member_tier"),
        ("normal", [30], None),  # 1 per 30 days: a contact 30 days ago is out of the window
        ("active", [6], "cap_member_tier"),
        ("active", [7], None),
        ("active", [1, 40], "cap_member_tier"),
        ("vip", [3], None),  # VIP: 2 per 7 days
        ("vip", [3, 5], "cap_member_tier"),
        ("vip", [3, 7], None),
        ("gold", [20], "cap_member_tier"),  # tiers without a cap of their own: other_tiers (1 / 30)
    ],
)
def test_member_tier_caps_count_marketing_contacts_in_a_rolling_window(tier, days_ago, expected):
    pb = parse_playbook(
        {
            "segments": {
                "member_tiers": {
                    "rules": [
                        {"tier": "vip", "min_r": 5},
                        {"tier": "gold", "min_r": 4},
                        {"tier": "active", "min_r": 3},
                    ]
                }
            },
            "shop": {"name": "测试小店"},
            "campaigns": {"a": campaign(50)},
        },
        "test.yaml",
    )
    plan = plan_day(
        pb, DAY, segments(member_tier=tier), contacts(["c0"]), history=history(*(("c0", d) for d in days_ago))
    )
    assert outcome(plan, "a")[1] == expected


def test_service_campaigns_are_neither_capped_nor_use_the_cap_up():
    pb = playbook({"care": campaign(50, ["sms/care"], kind="service")})
    plan = plan_day(pb, DAY, segments(), contacts(["c0"]), history=history(("c0", 1)))
    assert outcome(plan, "care") == ("treated", None)
    assert not plan.waves["counts_toward_cap"].any()
    pb = playbook({"a": campaign(50)})
    plan = plan_day(pb, DAY, segments(), contacts(["c0"]), history=history(("c0", 1, False)))
    assert outcome(plan, "a") == ("treated", None)  # a service contact yesterday does not count


def test_a_capped_marketing_campaign_lets_a_lower_priority_service_campaign_through():
    pb = playbook({"promo": campaign(60), "care": campaign(50, ["sms/care"], kind="service")})
    plan = plan_day(pb, DAY, segments(), contacts(["c0"]), history=history(("c0", 3)))
    assert outcome(plan, "promo") == ("suppressed", "cap_member_tier")
    assert outcome(plan, "care") == ("treated", None)


def test_contacts_dated_on_the_business_day_are_the_days_own_plan_and_are_ignored():
    pb = playbook({"a": campaign(50)})
    plan = plan_day(pb, DAY, segments(), contacts(["c0"]), history=history(("c0", 0)))
    assert outcome(plan, "a") == ("treated", None)


def test_caps_are_applied_to_holdout_customers_as_if_they_were_treated():
    pb = playbook({"a": campaign(50, holdout=0.5)})
    n = 400
    ids = [f"c{i}" for i in range(n)]
    past = history(*((c, 5) for c in ids[: n // 2]))  # half the customers were contacted 5 days ago
    plan = plan_day(pb, DAY, segments(n), contacts(ids), history=past)
    w = plan.waves.set_index("customer_id")
    capped = w.loc[ids[: n // 2]]
    assert set(capped["reason"]) == {"cap_member_tier"}
    assert {"treatment", "holdout"} == set(capped["arm"])  # both arms capped alike
    free = w.loc[ids[n // 2 :]]
    assert set(free["outcome"]) == {"treated", "held_out"}


# ---------------------------------------------------------------------------- daily global cap


def test_the_daily_global_cap_cuts_the_lowest_priority_first():
    pb = playbook({"a": campaign(50), "b": campaign(40, ["sms/b"])}, daily_global_cap=3)
    ids = [f"c{i}" for i in range(5)]
    seg = segments(5)
    entry_a = {"event": "state", "segment": {"category_group": ["food"]}}
    entry_b = {"event": "state", "segment": {"category_group": ["toys"]}}
    pb = playbook(
        {"a": campaign(50, entry=entry_a), "b": campaign(40, ["sms/b"], entry=entry_b)}, daily_global_cap=3
    )
    seg["category_group"] = ["food", "food", "toys", "toys", "toys"]
    plan = plan_day(pb, DAY, seg, contacts(ids))
    reasons = plan.waves.set_index("customer_id")["reason"].to_dict()
    assert reasons["c0"] is None and reasons["c1"] is None
    assert sorted(r for c, r in reasons.items() if c in ("c2", "c3", "c4") and r) == ["cap_daily_global"] * 2
    assert len(plan.sends) == 3
    row = plan.summary.set_index("campaign").loc["b"]
    assert (row["treated"], row["suppressed_cap_daily_global"]) == (1, 2)


def test_the_daily_global_cap_counts_messages_and_only_those_actually_sent():
    pb = playbook({"a": campaign(50, ["sms/a", "email/a"], holdout=0.5)}, daily_global_cap=60)
    n = 200
    ids = [f"c{i}" for i in range(n)]
    plan = plan_day(pb, DAY, segments(n), contacts(ids))
    assert len(plan.sends) == 60  # 30 treated customers x 2 channels
    w = plan.waves
    kept = w[w["outcome"] != "suppressed"]
    assert (kept["outcome"] == "treated").sum() == 30
    # the cut is a prefix of one arm-blind order: every kept customer ranks before every cut one
    rank = pd.Series(
        uniforms(("daily_global_cap", DAY.isoformat()), w["customer_id"]), index=w["customer_id"]
    )
    cut = w.loc[w["reason"] == "cap_daily_global", "customer_id"]
    assert rank[kept["customer_id"]].max() < rank[cut].min()
    assert 0 < (kept["arm"] == HOLDOUT).sum() < len(kept)


def test_the_daily_global_cap_is_blind_to_the_arm():
    pb = playbook({"a": campaign(50, holdout=0.5)}, daily_global_cap=1000)
    n = 4000
    ids = [f"c{i}" for i in range(n)]
    plan = plan_day(pb, DAY, segments(n), contacts(ids))
    w = plan.waves
    for arm in ("treatment", "holdout"):
        of_arm = w[w["arm"] == arm]
        rate = (of_arm["reason"] == "cap_daily_global").mean()
        # about 2000 kept (1000 treated + ~1000 holdout) of 4000: half of each arm is cut
        assert abs(rate - 0.5) < 0.05, (arm, rate)


def test_a_zero_daily_cap_sends_nothing_and_says_why():
    pb = playbook({"a": campaign(50)}, daily_global_cap=0)
    plan = plan_day(pb, DAY, segments(3), contacts(["c0", "c1", "c2"]))
    assert plan.sends.empty
    assert set(plan.waves["reason"]) == {"cap_daily_global"}


# ------------------------------------------------------------------------------------- entries


def test_max_new_entries_per_day_defers_the_rest_to_later_days():
    pb = playbook({"a": campaign(50, max_new_entries_per_day=10, reentry_after_days=None)})
    n = 25
    ids = [f"c{i}" for i in range(n)]
    plan = plan_day(pb, DAY, segments(n), contacts(ids))
    assert plan.summary.loc[0, "entered"] == 10 and plan.summary.loc[0, "deferred"] == 15
    stored = plan.entries
    plan2 = plan_day(pb, DAY + timedelta(days=1), segments(n), contacts(ids), entries=stored)
    assert plan2.summary.loc[0, "entered"] == 10
    assert not set(plan2.entries["customer_id"]) & set(stored["customer_id"])


def test_entries_recorded_for_the_day_are_recognised_and_kept_as_stored():
    pb = playbook({"a": campaign(50, holdout=0.5)})
    first = plan_day(pb, DAY, segments(20), contacts([f"c{i}" for i in range(20)]))
    stored = first.entries.copy()
    stored.loc[0, "arm"] = "holdout" if stored.loc[0, "arm"] == "treatment" else "treatment"  # as stored
    again = plan_day(pb, DAY, segments(20), contacts([f"c{i}" for i in range(20)]), entries=stored)
    assert again.entries.loc[0, "arm"] == stored.loc[0, "arm"]
    assert len(again.entries) == 20
    # a customer stored for the day who no longer qualifies stays entered
    again = plan_day(pb, DAY, segments(19), contacts([f"c{i}" for i in range(20)]), entries=stored)
    assert set(again.entries["customer_id"]) == set(stored["customer_id"])


def test_a_customer_with_an_open_entry_does_not_enter_again():
    pb = playbook({"a": campaign(50, reentry_after_days=1, waves={"interval_days": 10, "max_waves": 3})})
    plan = plan_day(pb, DAY, segments(), contacts(["c0"]))
    nxt = plan_day(pb, DAY + timedelta(days=5), segments(), contacts(["c0"]), entries=plan.entries)
    assert nxt.summary.loc[0, "entered"] == 0 and nxt.waves.empty
    later = plan_day(pb, DAY + timedelta(days=10), segments(), contacts(["c0"]), entries=plan.entries)
    assert list(later.waves["wave"]) == [2]


def test_no_inputs_no_plan():
    pb = playbook({"a": campaign(50)})
    plan = plan_day(pb, DAY, segments(0), None)
    assert plan.entries.empty and plan.waves.empty and plan.sends.empty
    assert list(plan.summary["campaign"]) == ["a"]
    assert np.all(plan.summary.drop(columns=["campaign", "kind", "priority"]).to_numpy() == 0)
