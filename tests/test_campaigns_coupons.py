"""Coupon codes: unique and unguessable, one per treated wave, reused on re-runs; redemption."""

from __future__ import annotations

from datetime import date

import pandas as pd

from huitouke.campaigns import issue_coupons, load_playbook, redeemed_codes, with_codes
from huitouke.campaigns.coupons import ALPHABET, CODE_LENGTH, coupon_prefix, new_code, normalise_code


def waves(*rows) -> pd.DataFrame:
    """(campaign, customer, wave, outcome, value_cents or None)"""
    return pd.DataFrame(
        [
            {
                "campaign": c,
                "customer_id": k,
                "entered_on": date(2025, 3, 1),
                "wave": w,
                "due_on": date(2025, 3, 31),
                "outcome": o,
                "coupon_value_cents": v,
                "coupon_min_spend_cents": 19_900 if v else None,
                "coupon_expires_on": date(2025, 4, 10) if v else None,
            }
            for c, k, w, o, v in rows
        ]
    ).astype({"coupon_value_cents": "Int64", "coupon_min_spend_cents": "Int64"})


def test_codes_are_prefixed_random_and_unambiguous():
    codes = {new_code("CW") for _ in range(20_000)}
    assert len(codes) == 20_000
    for code in list(codes)[:500]:
        prefix, body = code.split("-")
        assert prefix == "CW" and len(body) == CODE_LENGTH and set(body) <= set(ALPHABET)
    assert not set("01OIL") & set(ALPHABET)


def test_prefixes_come_from_the_playbook_or_the_campaign_name():
    assert coupon_prefix("coupon_waves") == "CW"
    assert coupon_prefix("birthday") == "BI"
    assert coupon_prefix("birthday", "BD") == "BD"


def test_only_treated_waves_with_a_coupon_get_a_code():
    pb = load_playbook()
    plan = waves(
        ("coupon_waves", "c1", 1, "treated", 3000),
        ("coupon_waves", "c2", 1, "held_out", None),
        ("care_tips", "c3", 1, "treated", None),
        ("coupon_waves", "c4", 1, "suppressed", None),
    )
    coupons = issue_coupons(plan, pb)
    assert list(coupons["customer_id"]) == ["c1"]
    row = coupons.iloc[0]
    assert row["code"].startswith("CW-")
    assert (row["value_cents"], row["min_spend_cents"]) == (3000, 19_900)
    assert (row["issued_on"], row["expires_on"]) == (date(2025, 3, 31), date(2025, 4, 10))


def test_a_re_run_reuses_the_stored_code_of_a_wave():
    pb = load_playbook()
    plan = waves(("coupon_waves", "c1", 1, "treated", 3000), ("coupon_waves", "c1", 2, "treated", 3000))
    first = issue_coupons(plan, pb)
    again = issue_coupons(plan, pb, existing=first.iloc[:1])
    assert again.iloc[0]["code"] == first.iloc[0]["code"]
    assert again.iloc[1]["code"] != first.iloc[1]["code"]  # not stored yet: a fresh one
    assert again.iloc[1]["code"] != again.iloc[0]["code"]


def test_with_codes_puts_the_code_on_every_channel_of_the_wave():
    pb = load_playbook()
    plan = waves(("coupon_waves", "c1", 1, "treated", 3000))
    coupons = issue_coupons(plan, pb)
    sends = pd.DataFrame(
        [
            {
                "campaign": "coupon_waves",
                "customer_id": "c1",
                "entered_on": date(2025, 3, 1),
                "wave": 1,
                "channel": ch,
            }
            for ch in ("sms", "email")
        ]
        + [
            {
                "campaign": "care_tips",
                "customer_id": "c1",
                "entered_on": date(2025, 3, 1),
                "wave": 1,
                "channel": "sms",
            }
        ]
    )
    out = with_codes(sends, coupons)
    assert list(out["coupon_code"]) == [coupons.iloc[0]["code"]] * 2 + [None]


def test_codes_are_matched_whatever_the_case_spaces_and_dashes():
    assert normalise_code(" cw-7kq2 mx9p rt ") == "CW-7KQ2MX9PRT"
    assert normalise_code("CW7KQ2MX9PRT") == "CW-7KQ2MX9PRT"
    assert normalise_code("SHOP2025") == "SHOP2025"
    assert (
        normalise_code("") is None and normalise_code(None) is None and normalise_code(float("nan")) is None
    )


def test_an_order_with_a_code_redeems_it_and_says_whether_the_terms_were_met():
    coupons = pd.DataFrame(
        [
            {
                "code": "CW-7KQ2MX9PRT",
                "campaign": "coupon_waves",
                "customer_id": "c1",
                "entered_on": date(2025, 3, 1),
                "wave": 1,
                "value_cents": 3000,
                "min_spend_cents": 19_900,
                "issued_on": date(2025, 3, 31),
                "expires_on": date(2025, 4, 10),
            }
        ]
    )
    orders = pd.DataFrame(
        [
            {
                "order_id": "o2",
                "customer_id": "c1",
                "business_date": date(2025, 4, 5),
                "amount_cents": 25_000,
                "status": "paid",
                "coupon_code": "cw-7kq2mx9prt",
            },
            {
                "order_id": "o3",
                "customer_id": "c1",
                "business_date": date(2025, 4, 6),
                "amount_cents": 25_000,
                "status": "paid",
                "coupon_code": "CW-7KQ2MX9PRT",
            },  # the same code again: the first order counts
            {
                "order_id": "o4",
                "customer_id": "c9",
                "business_date": date(2025, 4, 20),
                "amount_cents": 5_000,
                "status": "paid",
                "coupon_code": "WB-2345678923",
            },
            {
                "order_id": "o5",
                "customer_id": "c9",
                "business_date": date(2025, 4, 20),
                "amount_cents": 5_000,
                "status": "cancelled",
                "coupon_code": "BD-2345678923",
            },
            {
                "order_id": "o6",
                "customer_id": "c9",
                "business_date": date(2025, 4, 20),
                "amount_cents": 5_000,
                "status": "paid",
                "coupon_code": None,
            },
        ]
    )
    redeemed = redeemed_codes(orders, coupons).set_index("code")
    assert list(redeemed.index) == ["CW-7KQ2MX9PRT", "WB-2345678923"]
    ours = redeemed.loc["CW-7KQ2MX9PRT"]
    assert (ours["order_id"], ours["redeemed_on"]) == ("o2", date(2025, 4, 5))
    assert ours["known"] and ours["own_customer"] and ours["in_time"] and ours["min_spend_met"]
    unknown = redeemed.loc["WB-2345678923"]
    assert not unknown["known"] and not unknown["in_time"]
    assert redeemed_codes(orders)["known"].isna().all()
