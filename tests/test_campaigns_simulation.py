"""Each default campaign of the shipped playbook, over simulated days.

A tiny shop runs day by day through the real chain: orders -> customer state -> segments ->
:func:`plan_day` -> stored entries, waves, coupons and an outbox keyed like the store's. Customers
are picked in the arm a test needs (the arm is a hash of the customer id, so a test asks for
"a customer treated in coupon_waves" rather than hard-coding an id).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pandas as pd
import pytest

from huitouke.campaigns import (
    HOLDOUT,
    TREATMENT,
    DayPlan,
    assign_arms,
    empty_entries,
    issue_coupons,
    load_playbook,
    plan_day,
    with_codes,
)
from huitouke.campaigns.playbook import Playbook
from huitouke.segments import build_state, classify

D0 = date(2025, 3, 3)


def day(n: int) -> date:
    return D0 + timedelta(days=n)


def arm_of(campaign: str, cid: str) -> str:
    holdout = load_playbook().campaigns[campaign].holdout
    return assign_arms(campaign, [cid], holdout.share, holdout.salt)[0]


def customer_in(campaign: str, arm: str, prefix: str = "c") -> str:
    """The first customer id ``{prefix}{i}`` whose arm in ``campaign`` is ``arm``."""
    return next(c for c in (f"{prefix}{i}" for i in range(10_000)) if arm_of(campaign, c) == arm)


class Shop:
    """The store's campaign tables as DataFrames, and a day-by-day runner."""

    def __init__(self, playbook: Playbook | None = None) -> None:
        self.playbook = playbook or load_playbook()
        self.orders: list[dict] = []
        self.lines: list[dict] = []
        self.contacts: dict[str, dict] = {}
        self.entries = empty_entries()
        self.waves = pd.DataFrame()
        self.coupons = pd.DataFrame()
        self.outbox: dict[tuple, dict] = {}
        self.plans: dict[date, DayPlan] = {}

    def customer(
        self, cid: str, *, phone: str | None = "13800138000", email: str | None = None, **fields
    ) -> str:
        self.contacts[cid] = {
            "customer_id": cid,
            "phone": phone,
            "email": email,
            "sms_opt_out": fields.get("sms_opt_out", False),
            "email_opt_out": fields.get("email_opt_out", False),
            "birthday": fields.get("birthday"),
        }
        return cid

    def buy(self, cid: str, on: date, cny: float, category: str = "food", source: str = "organic") -> None:
        if cid not in self.contacts:
            self.customer(cid)
        order_id = f"o{len(self.orders) + 1}"
        cents = round(cny * 100)
        self.orders.append(
            {
                "order_id": order_id,
                "customer_id": cid,
                "paid_at": datetime(on.year, on.month, on.day, 4),
                "business_date": datetime(on.year, on.month, on.day),
                "status": "paid",
                "amount_cents": cents,
                "acquisition_source": source,
                "coupon_code": None,
            }
        )
        self.lines.append({"order_id": order_id, "category": category, "amount_cents": cents})

    def segments(self, on: date) -> pd.DataFrame:
        orders = pd.DataFrame(self.orders)
        state = build_state(orders, pd.DataFrame(self.lines), settings=self.playbook.segments, until=on)
        return classify(state, on, self.playbook.segments)

    def day_orders(self, on: date) -> pd.DataFrame:
        orders = pd.DataFrame(self.orders)
        lines = pd.DataFrame(self.lines)
        cats = lines.groupby("order_id")["category"].agg(list)
        today = orders[orders["business_date"] == pd.Timestamp(on)]
        return today.assign(categories=today["order_id"].map(cats))

    def history(self) -> pd.DataFrame:
        if self.waves.empty:
            return pd.DataFrame(columns=["customer_id", "contacted_on", "counts_toward_cap"])
        treated = self.waves[self.waves["outcome"] == "treated"]
        return pd.DataFrame(
            {
                "customer_id": treated["customer_id"],
                "contacted_on": treated["due_on"],
                "counts_toward_cap": treated["counts_toward_cap"],
            }
        )

    def run(self, on: date) -> DayPlan:
        plan = plan_day(
            self.playbook,
            on,
            self.segments(on),
            pd.DataFrame(list(self.contacts.values())),
            self.day_orders(on),
            self.entries,
            self.history(),
        )
        self.store(plan)
        self.plans[on] = plan
        return plan

    def run_until(self, last: date, first: date = D0) -> None:
        for n in range((last - first).days + 1):
            self.run(first + timedelta(days=n))

    def store(self, plan: DayPlan) -> None:
        key = ["campaign", "customer_id", "entered_on"]
        if len(plan.entries):
            merged = pd.concat([self.entries, plan.entries], ignore_index=True)
            self.entries = merged.drop_duplicates(key, keep="last").reset_index(drop=True)
        if not self.waves.empty:
            self.waves = self.waves[self.waves["due_on"] != plan.business_date]
        self.waves = pd.concat([self.waves, plan.waves], ignore_index=True) if len(plan.waves) else self.waves
        existing = self.coupons if not self.coupons.empty else None
        coupons = issue_coupons(plan.waves, self.playbook, existing=existing)
        self.coupons = (
            pd.concat([self.coupons, coupons], ignore_index=True).drop_duplicates(
                ["campaign", "customer_id", "entered_on", "wave"], keep="first"
            )
            if len(coupons)
            else self.coupons
        )
        sends = (
            with_codes(plan.sends, self.coupons) if len(self.coupons) else plan.sends.assign(coupon_code=None)
        )
        for row in sends.to_dict("records"):
            k = (row["campaign"], row["customer_id"], row["entered_on"], row["wave"], row["channel"])
            self.outbox.setdefault(k, row)

    # ---- what tests ask
    def waves_of(self, campaign: str, cid: str) -> pd.DataFrame:
        if self.waves.empty:
            return self.waves
        w = self.waves
        return w[(w["campaign"] == campaign) & (w["customer_id"] == cid)].reset_index(drop=True)

    def entries_of(self, campaign: str, cid: str) -> pd.DataFrame:
        e = self.entries
        return e[(e["campaign"] == campaign) & (e["customer_id"] == cid)].reset_index(drop=True)

    def messages_to(self, cid: str, campaign: str | None = None) -> list[dict]:
        return [
            row
            for (c, k, *_), row in sorted(self.outbox.items(), key=lambda kv: (kv[1]["business_date"], kv[0]))
            if k == cid and (campaign is None or c == campaign)
        ]


# ------------------------------------------------------------------------------------- thank_you


def test_a_new_customer_is_thanked_with_a_coupon_and_a_returning_one_without():
    shop = Shop()
    cid = shop.customer(customer_in("thank_you", TREATMENT))
    shop.buy(cid, day(0), 120)
    shop.buy(cid, day(40), 80)
    shop.run_until(day(41))

    first, again = shop.messages_to(cid, "thank_you")
    assert (first["template"], first["business_date"]) == ("sms/thank_you_new", day(0))
    assert (first["coupon_value_cents"], first["coupon_min_spend_cents"]) == (1000, 9900)
    assert first["coupon_expires_on"] == day(30)
    assert first["coupon_code"].startswith("TY-")
    assert (again["template"], again["business_date"]) == ("sms/thank_you_returning", day(40))
    assert pd.isna(again["coupon_value_cents"]) and again["coupon_code"] is None
    entries = shop.entries_of("thank_you", cid)
    assert list(entries["variant"]) == ["new", "returning"]
    assert list(entries["exit_reason"]) == ["completed", "completed"]


def test_thank_you_is_sent_at_most_once_in_30_days():
    shop = Shop()
    cid = shop.customer(customer_in("thank_you", TREATMENT))
    for n in (0, 10, 29, 30):
        shop.buy(cid, day(n), 50)
    shop.run_until(day(30))
    assert [m["business_date"] for m in shop.messages_to(cid, "thank_you")] == [day(0), day(30)]


# ---------------------------------------------------------------------------------- coupon_waves


def test_coupon_waves_go_every_30_days_five_times_with_10_day_coupons_then_complete():
    shop = Shop()
    cid = shop.customer(customer_in("coupon_waves", TREATMENT))
    shop.buy(cid, day(0), 299)
    shop.run_until(day(200))

    entry = shop.entries_of("coupon_waves", cid)
    assert len(entry) == 1 and entry.at[0, "entered_on"] == day(0)
    waves = shop.waves_of("coupon_waves", cid)
    assert list(waves["wave"]) == [1, 2, 3, 4, 5]
    assert list(waves["due_on"]) == [day(30), day(60), day(90), day(120), day(150)]
    assert set(waves["outcome"]) == {"treated"}
    sent = shop.messages_to(cid, "coupon_waves")
    assert [m["template"] for m in sent] == ["sms/coupon_wave"] * 5
    assert [m["coupon_expires_on"] for m in sent] == [day(n + 10) for n in (30, 60, 90, 120, 150)]
    assert all(m["coupon_value_cents"] == 3000 and m["coupon_min_spend_cents"] == 19900 for m in sent)
    assert len({m["coupon_code"] for m in sent}) == 5
    assert (entry.at[0, "exit_reason"], entry.at[0, "exited_on"], entry.at[0, "last_wave"]) == (
        "completed",
        day(150),
        5,
    )


def test_coupon_waves_stop_as_soon_as_the_customer_buys_again():
    shop = Shop()
    cid = shop.customer(customer_in("coupon_waves", TREATMENT))
    shop.buy(cid, day(0), 450)
    shop.buy(cid, day(45), 60)
    shop.run_until(day(100))
    assert list(shop.waves_of("coupon_waves", cid)["due_on"]) == [day(30)]
    entry = shop.entries_of("coupon_waves", cid)
    assert (entry.at[0, "exit_reason"], entry.at[0, "exited_on"]) == ("repurchased", day(45))
    assert entry.at[0, "last_wave"] == 1 and entry.at[0, "next_wave_on"] is None


def test_a_repurchase_on_a_wave_day_ends_the_entry_before_the_wave():
    shop = Shop()
    cid = shop.customer(customer_in("coupon_waves", TREATMENT))
    shop.buy(cid, day(0), 300)
    shop.run_until(day(29))
    assert shop.entries_of("coupon_waves", cid).at[0, "next_wave_on"] == day(30)
    shop.buy(cid, day(60), 300)
    shop.run_until(day(61), first=day(30))
    assert list(shop.waves_of("coupon_waves", cid)["due_on"]) == [day(30)]
    entry = shop.entries_of("coupon_waves", cid)
    assert (entry.at[0, "exit_reason"], entry.at[0, "exited_on"], entry.at[0, "last_wave"]) == (
        "repurchased",
        day(60),
        1,
    )


def test_a_repurchase_before_the_first_wave_means_no_coupon_wave_at_all():
    shop = Shop()
    cid = shop.customer(customer_in("coupon_waves", TREATMENT))
    shop.buy(cid, day(0), 300)
    shop.buy(cid, day(12), 300)
    shop.run_until(day(40))
    assert shop.waves_of("coupon_waves", cid).empty
    assert shop.entries_of("coupon_waves", cid).at[0, "exit_reason"] == "repurchased"


@pytest.mark.parametrize(
    ("cny", "source", "enters"),
    [(299, "organic", True), (298.99, "organic", False), (500, "flash_sale", False), (500, "points", False)],
)
def test_coupon_waves_take_new_customers_whose_first_order_is_at_least_299(cny, source, enters):
    shop = Shop()
    cid = shop.customer("c1")
    shop.buy(cid, day(0), cny, source=source)
    shop.run(day(0))
    assert len(shop.entries_of("coupon_waves", cid)) == int(enters)


def test_a_second_order_of_299_does_not_enter_coupon_waves():
    shop = Shop()
    cid = shop.customer("c1")
    shop.buy(cid, day(0), 50)
    shop.buy(cid, day(5), 400)
    shop.run_until(day(5))
    assert shop.entries_of("coupon_waves", cid).empty


def test_holdout_customer_never_receives_a_wave_but_is_tracked_like_the_treated():
    shop = Shop()
    held = shop.customer(customer_in("coupon_waves", HOLDOUT, prefix="h"))
    treated = shop.customer(customer_in("coupon_waves", TREATMENT, prefix="t"))
    for cid in (held, treated):
        shop.buy(cid, day(0), 350)
    shop.run_until(day(160))

    assert shop.messages_to(held, "coupon_waves") == []
    assert len(shop.messages_to(treated, "coupon_waves")) == 5
    h, t = shop.waves_of("coupon_waves", held), shop.waves_of("coupon_waves", treated)
    assert list(h["due_on"]) == list(t["due_on"]) and list(h["wave"]) == [1, 2, 3, 4, 5]
    assert set(h["outcome"]) == {"held_out"} and set(h["arm"]) == {HOLDOUT}
    assert h["coupon_value_cents"].isna().all()
    assert shop.entries_of("coupon_waves", held).at[0, "exit_reason"] == "completed"
    assert not ((shop.coupons["customer_id"] == held) & (shop.coupons["campaign"] == "coupon_waves")).any()


# ------------------------------------------------------------------------------------- care_tips


def test_care_tips_follow_a_first_order_after_three_days_with_its_category_group():
    shop = Shop()
    cid = shop.customer(customer_in("care_tips", TREATMENT))
    shop.buy(cid, day(0), 88, category="kids_clothing")
    shop.run_until(day(10))
    (msg,) = shop.messages_to(cid, "care_tips")
    assert (msg["template"], msg["business_date"], msg["category_group"]) == (
        "sms/care_tips",
        day(3),
        "kids_clothing",
    )
    (wave,) = shop.waves_of("care_tips", cid).to_dict("records")
    assert wave["kind"] == "service" and not wave["counts_toward_cap"]


def test_care_tips_are_not_stopped_by_the_monthly_cap_of_normal_customers():
    shop = Shop()
    cid = next(
        c
        for c in (f"c{i}" for i in range(1000))
        if arm_of("thank_you", c) == TREATMENT and arm_of("care_tips", c) == TREATMENT
    )
    shop.customer(cid)
    shop.buy(cid, day(0), 88)
    shop.run_until(day(3))
    assert shop.waves_of("thank_you", cid).at[0, "outcome"] == "treated"  # uses the 1-per-30-days cap up
    assert shop.waves_of("care_tips", cid).at[0, "outcome"] == "treated"


def test_care_tips_are_for_first_time_buyers_only():
    shop = Shop()
    cid = shop.customer("c1")
    shop.buy(cid, day(0), 88)
    shop.buy(cid, day(1), 88)  # bought again before the tips: no longer a first-time buyer
    shop.run_until(day(10))
    assert shop.entries_of("care_tips", cid).empty


# -------------------------------------------------------------------------------- phone_followup


def test_high_aov_customers_are_on_the_call_list_15_days_after_their_latest_order():
    shop = Shop()
    cid = shop.customer(customer_in("phone_followup", TREATMENT), phone="13900001111")
    shop.buy(cid, day(0), 600)
    shop.buy(cid, day(10), 500)  # the count restarts
    shop.run_until(day(30))
    (call,) = shop.messages_to(cid, "phone_followup")
    assert (call["channel"], call["template"], call["business_date"]) == (
        "call",
        "call/phone_followup",
        day(25),
    )
    assert call["recipient"] == "13900001111"
    assert shop.entries_of("phone_followup", cid).at[0, "variant"] == "high_aov"


def test_multi_purchase_low_aov_customers_are_called_but_one_time_low_aov_customers_are_not():
    shop = Shop()
    multi = shop.customer(customer_in("phone_followup", TREATMENT, prefix="m"))
    single = shop.customer(customer_in("phone_followup", TREATMENT, prefix="s"))
    shop.buy(multi, day(0), 40)
    shop.buy(multi, day(2), 60)
    shop.buy(single, day(2), 60)
    shop.run_until(day(20))
    assert [m["business_date"] for m in shop.messages_to(multi, "phone_followup")] == [day(17)]
    assert shop.entries_of("phone_followup", multi).at[0, "variant"] == "multi_purchase"
    assert shop.entries_of("phone_followup", single).empty


# -------------------------------------------------------------------------------------- birthday


def test_birthday_coupon_on_the_birthday_once_a_year():
    shop = Shop()
    cid = shop.customer(customer_in("birthday", TREATMENT), birthday=date(1990, 6, 1))
    shop.buy(cid, day(0), 50)
    shop.run_until(date(2025, 6, 3))
    (msg,) = shop.messages_to(cid, "birthday")
    assert (msg["template"], msg["business_date"]) == ("sms/birthday", date(2025, 6, 1))
    assert msg["coupon_code"].startswith("BD-") and msg["coupon_expires_on"] == date(2025, 6, 16)


def test_a_29_february_birthday_is_celebrated_on_28_february_in_other_years():
    shop = Shop()
    cid = shop.customer(customer_in("birthday", TREATMENT), birthday=date(1996, 2, 29))
    shop.buy(cid, date(2025, 1, 2), 50)
    shop.run_until(date(2025, 3, 1), first=date(2025, 2, 26))
    assert [m["business_date"] for m in shop.messages_to(cid, "birthday")] == [date(2025, 2, 28)]


# -------------------------------------------------------------------------------------- win_back


def test_at_risk_one_time_buyers_get_two_win_back_waves_a_month_apart():
    shop = Shop()
    lost = shop.customer(customer_in("win_back", TREATMENT, prefix="w"))
    repeat = shop.customer(customer_in("win_back", TREATMENT, prefix="r"))
    flash = shop.customer(customer_in("win_back", TREATMENT, prefix="f"))
    shop.buy(lost, day(0), 80)
    shop.buy(repeat, day(-5), 80)
    shop.buy(repeat, day(0), 80)
    shop.buy(flash, day(0), 80, source="flash_sale")
    shop.run_until(day(240), first=day(170))

    sent = shop.messages_to(lost, "win_back")
    assert [m["business_date"] for m in sent] == [day(180), day(210)]  # at risk after 180 days
    assert all(m["template"] == "sms/win_back" and m["coupon_code"].startswith("WB-") for m in sent)
    assert shop.entries_of("win_back", lost).at[0, "exit_reason"] == "completed"
    assert shop.entries_of("win_back", repeat).empty
    assert shop.entries_of("win_back", flash).empty


def test_win_back_stops_when_the_customer_comes_back():
    shop = Shop()
    lost = shop.customer(customer_in("win_back", TREATMENT))
    shop.buy(lost, day(0), 80)
    shop.buy(lost, day(185), 80)
    shop.run_until(day(240), first=day(178))
    assert [m["business_date"] for m in shop.messages_to(lost, "win_back")] == [day(180)]
    assert shop.entries_of("win_back", lost).at[0, "exit_reason"] == "repurchased"


# --------------------------------------------------------------------------- new_product_premium


def test_new_products_go_to_premium_customers_only_by_email_when_they_have_one():
    shop = Shop()
    with_email = shop.customer(
        customer_in("new_product_premium", TREATMENT, prefix="e"), email="a@example.com"
    )
    sms_only = shop.customer(customer_in("new_product_premium", TREATMENT, prefix="s"))
    low = shop.customer(customer_in("new_product_premium", TREATMENT, prefix="l"))
    shop.buy(with_email, day(0), 300)
    shop.buy(sms_only, day(0), 300)
    shop.buy(low, day(0), 60)
    shop.run_until(day(31), first=day(29))
    (mail,) = shop.messages_to(with_email, "new_product_premium")
    (sms,) = shop.messages_to(sms_only, "new_product_premium")
    assert (mail["channel"], mail["template"], mail["recipient"]) == (
        "email",
        "email/new_product_premium",
        "a@example.com",
    )
    assert (sms["channel"], sms["template"]) == ("sms", "sms/new_product_premium")
    assert mail["business_date"] == day(30)  # the day they stop being new customers
    assert shop.entries_of("new_product_premium", low).empty


# ------------------------------------------------------------------------------ re-runs, opt-outs


def test_re_running_a_day_plans_the_same_and_queues_nothing_new():
    shop = Shop()
    for i in range(30):
        cid = shop.customer(
            f"c{i}", email=f"c{i}@example.com" if i % 2 else None, birthday=date(1990, 3, 3 + i % 3)
        )
        shop.buy(cid, day(-(i * 7)), 100 + 17 * i, category=["food", "durables", "kids_clothing"][i % 3])
    shop.run_until(day(40), first=day(-1))
    before = dict(shop.outbox)
    coupons_before = shop.coupons.copy()
    first = shop.plans[day(40)]
    again = shop.run(day(40))
    pd.testing.assert_frame_equal(first.entries, again.entries)
    pd.testing.assert_frame_equal(first.waves, again.waves)
    pd.testing.assert_frame_equal(first.sends, again.sends)
    pd.testing.assert_frame_equal(first.summary, again.summary)
    assert shop.outbox == before
    pd.testing.assert_frame_equal(shop.coupons, coupons_before)
    assert len(shop.outbox) > 10


def test_a_customer_who_opts_out_leaves_the_campaign():
    shop = Shop()
    cid = shop.customer(customer_in("coupon_waves", TREATMENT))
    shop.buy(cid, day(0), 350)
    shop.run_until(day(40))
    shop.contacts[cid]["sms_opt_out"] = True
    shop.run_until(day(70), first=day(41))
    assert list(shop.waves_of("coupon_waves", cid)["due_on"]) == [day(30)]
    entry = shop.entries_of("coupon_waves", cid)
    assert (entry.at[0, "exit_reason"], entry.at[0, "exited_on"]) == ("opted_out", day(41))


def test_the_task_log_summary_counts_each_campaign():
    shop = Shop()
    for i in range(40):
        shop.customer(f"c{i}")
        shop.buy(f"c{i}", day(0), 320)
    plan = shop.run(day(0))
    row = plan.summary.set_index("campaign").loc["thank_you"]
    assert row["entered"] == 40 and row["due"] == 40
    assert row["treated"] + row["held_out"] == 40
    assert row["entered_holdout"] == row["held_out"]
    assert row["messages"] == row["treated"]
    text = plan.as_text()
    assert "thank_you" in text and "13800138000" not in text
    assert plan.as_dict()["campaigns"]["coupon_waves"]["entered"] == 40
