"""The playbook's shop, contact_pressure and campaigns sections: the shipped defaults implement the
seeds, and every mistake names the file, the line, the campaign and the field."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import pytest
import yaml

from huitouke.campaigns import load_playbook, parse_playbook
from huitouke.config import ConfigError, parse_yaml, project_home
from huitouke.segments import load_segment_settings

WHERE = "include/playbook.yaml"
SHIPPED = (project_home() / "include" / "playbook.yaml").read_text(encoding="utf-8")
TEMPLATE_NAMES = {
    "thank_you_new",
    "thank_you_returning",
    "care_tips",
    "coupon_wave",
    "phone_followup",
    "birthday",
    "win_back",
    "new_product_premium",
}


def parse_text(text: str):
    return parse_playbook(parse_yaml(text, WHERE), WHERE, text)


def edited(old: str, new: str, after: str | None = None, at: str | None = None) -> tuple[str, int]:
    """The shipped playbook with the first ``old`` (after the line containing ``after``) replaced,
    and the 1-based line where it was (or, with ``at``, of the nearest line above containing ``at``:
    a mistake across fields is reported at the key of their section)."""
    lines = SHIPPED.splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if after in line) if after else 0
    i = next(i for i in range(start, len(lines)) if old in lines[i])
    lines[i] = lines[i].replace(old, new, 1)
    line = next(j for j in range(i, -1, -1) if at in lines[j]) if at else i
    return "".join(lines), line + 1


# ----------------------------------------------------------------------------------- the defaults


def test_the_shipped_playbook_is_valid_and_implements_the_seeds():
    pb = load_playbook()
    assert pb.segments == load_segment_settings()
    assert [name for name, _ in pb.campaigns_by_priority()] == [
        "birthday",
        "thank_you",
        "coupon_waves",
        "care_tips",
        "phone_followup",
        "new_product_premium",
        "win_back",
    ]
    waves = pb.campaigns["coupon_waves"]
    assert waves.entry.event == "first_order" and waves.entry.order.min_amount_cny == 299
    assert (waves.waves.interval_days, waves.waves.max_waves, waves.waves.stop_on) == (30, 5, ["repurchase"])
    assert waves.coupon.valid_days == 10 and waves.evaluation.primary_days == 10
    thanks = pb.campaigns["thank_you"]
    assert thanks.offer("thank_you", "new").coupon is not None
    assert thanks.offer("thank_you", "returning").coupon is None
    assert pb.campaigns["phone_followup"].entry.days_after_order == 15
    assert pb.campaigns["care_tips"].evaluation.windows_days == [2, 30]
    assert pb.campaigns["new_product_premium"].entry.segment.value_tier == ["premium"]
    assert {c.kind for n, c in pb.campaigns.items() if n in ("care_tips", "phone_followup")} == {"service"}
    assert all(c.holdout.share == 0.10 for c in pb.campaigns.values())


def test_the_shipped_templates_are_the_agreed_names():
    pb = load_playbook()
    used = {
        t
        for name, c in pb.campaigns.items()
        for v in (list(c.variants) or [""])
        for t in c.offer(name, v).templates
    }
    assert {t.split("/", 1)[1] for t in used} == TEMPLATE_NAMES
    assert {t.split("/", 1)[0] for t in used} == {"sms", "email", "call"}


def test_the_sms_budgets_per_template_come_from_the_campaigns():
    budgets = load_playbook().sms_budgets()
    assert budgets["coupon_wave"] == 2 and "phone_followup" not in budgets
    assert set(budgets) == TEMPLATE_NAMES - {"phone_followup"}


def test_shop_defaults():
    pb = parse_playbook({"shop": {"name": "小店"}}, WHERE)
    assert pb.shop.signature == "【小店】"
    assert (pb.shop.send_window.start, pb.shop.send_window.end) == (dt.time(9), dt.time(20))
    assert pb.shop.sms_opt_out_footer == "回T退订" and pb.shop.currency == "CNY"
    caps = pb.contact_pressure
    assert (caps.cap_for("active").max_contacts, caps.cap_for("active").per_days) == (1, 7)
    assert (caps.cap_for("normal").max_contacts, caps.cap_for("normal").per_days) == (1, 30)
    assert caps.cap_for("vip").per_days == 7 and caps.daily_global_cap is None
    assert pb.campaigns == {}


def test_unquoted_yaml_times_are_read_as_times():
    pb = parse_text("shop:\n  name: 小店\n  send_window:\n    start: 8:30\n    end: 21:00\n")
    assert (pb.shop.send_window.start, pb.shop.send_window.end) == (dt.time(8, 30), dt.time(21))


def test_a_percentage_is_a_holdout_share():
    text, _ = edited(
        "      primary_days: 10", "      primary_days: 10\n    holdout: {share: 25%}", after="  coupon_waves:"
    )
    assert parse_text(text).campaigns["coupon_waves"].holdout.share == 0.25


def test_a_variant_can_drop_the_campaigns_coupon():
    data = yaml.safe_load(SHIPPED)
    data["campaigns"]["thank_you"]["coupon"] = {"value_cny": 5, "valid_days": 7}
    data["campaigns"]["thank_you"]["variants"]["returning"]["coupon"] = None
    pb = parse_playbook(data, WHERE)
    assert pb.campaigns["thank_you"].offer("thank_you", "returning").coupon is None
    data["campaigns"]["thank_you"]["variants"]["returning"].pop("coupon")
    assert (
        parse_playbook(data, WHERE).campaigns["thank_you"].offer("thank_you", "returning").coupon.value_cny
        == 5
    )


def test_the_playbook_timezone_must_agree_with_the_data_engineers():
    pb = load_playbook()
    assert pb.shop.timezone_or("Asia/Shanghai") == "Asia/Shanghai"
    with pytest.raises(ConfigError, match="shop.timezone is Asia/Shanghai but include/huitouke.yaml"):
        pb.shop.timezone_or("Europe/Berlin")


def test_load_playbook_reads_a_given_file(tmp_path: Path):
    path = tmp_path / "playbook.yaml"
    path.write_text("shop:\n  name: 小店\ncampaigns: {}\n", encoding="utf-8")
    assert load_playbook(path).shop.name == "小店"


def test_a_playbook_without_campaigns_runs_none_and_says_so(caplog):
    with caplog.at_level(logging.WARNING):
        pb = parse_playbook({"shop": {"name": "小店"}}, WHERE)
    assert pb.campaigns == {} and "no campaigns: section" in caplog.text


# ------------------------------------------------------------------------------------- the errors


@pytest.mark.parametrize(
    ("old", "new", "after", "message", "at"),
    [
        (
            "min_spend_cny: 199",
            "min_spend_cny: -5",
            "  coupon_waves:",
            "campaigns.coupon_waves.coupon.min_spend_cny: Input should be greater than or equal to 0",
            None,
        ),
        (
            "value_cny: 30",
            "value_cny: 30.555",
            "  coupon_waves:",
            "campaigns.coupon_waves.coupon.value_cny: amounts are in CNY with at most two decimals",
            None,
        ),
        (
            "max_waves: 2",
            "max_wave: 2",
            "  win_back:",
            "campaigns.win_back.waves.max_wave: unknown field (check the spelling)",
            None,
        ),
        (
            "value_tier: [premium]",
            "value_tier: [premum]",
            "  new_product_premium:",
            "campaigns.new_product_premium.entry.segment.value_tier: unknown value tier 'premum' "
            "(known: low, mid, premium)",
            None,
        ),
        (
            "lifecycle: [at_risk, churned]",
            "lifecycle: [at_risk, lost]",
            "  win_back:",
            "campaigns.win_back.entry.segment.lifecycle: unknown lifecycle 'lost'",
            None,
        ),
        (
            "templates: [sms/birthday]",
            "templates: [sms/Birthday]",
            "  birthday:",
            "campaigns.birthday.templates: template 'sms/Birthday' must be sms/<name>, email/<name> or call/<name>",
            None,
        ),
        (
            "templates: [sms/birthday]",
            "templates: [sms/birthday, sms/birthday2]",
            "  birthday:",
            "campaigns.birthday.templates: two templates for channel sms",
            None,
        ),
        (
            "priority: 60",
            "priority: 70",
            "  care_tips:",
            "campaigns.care_tips.priority: priority 70 is also coupon_waves's: priorities must differ",
            None,
        ),
        (
            "event: birthday",
            "event: birthdate",
            "  birthday:",
            "campaigns.birthday.entry.event: Input should be 'first_order', 'any_paid_order'",
            None,
        ),
        (
            "days_after_order: 15",
            "days_after_order: 0",
            "  phone_followup:",
            "campaigns.phone_followup.entry.days_after_order: Input should be greater than or equal to 1",
            None,
        ),
        (
            "primary_days: 30",
            "primary_days: 10",
            "  care_tips:",
            "campaigns.care_tips.evaluation: primary_days (10) must be one of windows_days [2, 30]",
            "evaluation:",
        ),
        (
            "interval_days: 30",
            "interval_day: 30",
            "  win_back:",
            "campaigns.win_back.waves.interval_day: unknown field",
            None,
        ),
        (
            "max_paid_orders: 1",
            "max_paid_orders: 1\n        min_paid_orders: 3",
            "  care_tips:",
            "campaigns.care_tips.entry.state: min_paid_orders (3) is above max_paid_orders (1)",
            "state:",
        ),
        (
            "    active:              # 活跃会员",
            "    actve:               # 活跃会员",
            "contact_pressure:",
            "contact_pressure.member_tiers.actve: unknown member tier 'actve' (segments.member_tiers has: vip, active, normal)",
            None,
        ),
        (
            "  name: 回头客小店",
            "  name: 【回头客小店】",
            "shop:",
            "shop.name: write the name without brackets",
            None,
        ),
        (
            '    end: "20:00"',
            '    end: "08:00"',
            "shop:",
            "shop.send_window: start (09:00) must be before end (08:00)",
            "send_window:",
        ),
        (
            "  timezone: Asia/Shanghai",
            "  timezone: China/Beijing",
            "shop:",
            "shop.timezone: unknown timezone 'China/Beijing'",
            None,
        ),
    ],
)
def test_a_mistake_names_the_file_the_line_the_campaign_and_the_field(old, new, after, message, at):
    text, line = edited(old, new, after, at)
    with pytest.raises(ConfigError) as err:
        parse_text(text)
    assert f"{WHERE} (line {line}): {message}" in str(err.value)


def test_an_unknown_campaign_field_is_named_with_its_line():
    text, line = edited("    reentry_after_days: 300", "    re_entry_after_days: 300", after="  birthday:")
    with pytest.raises(
        ConfigError, match=rf"line {line}\): campaigns.birthday.re_entry_after_days: unknown field"
    ):
        parse_text(text)


@pytest.mark.parametrize(
    ("campaign", "message"),
    [
        (
            {
                "priority": 1,
                "entry": {"event": "state", "order": {"min_amount_cny": 10}},
                "templates": ["sms/a"],
            },
            "campaigns.x.entry: Value error, order: conditions look at the day's orders and need event "
            "first_order or any_paid_order, not state",
        ),
        (
            {"priority": 1, "entry": {"event": "days_after_order"}, "templates": ["sms/a"]},
            "campaigns.x.entry: event days_after_order needs `days_after_order: N`",
        ),
        (
            {"priority": 1, "entry": {"event": "state"}, "templates": ["sms/a"], "waves": {"max_waves": 3}},
            "campaigns.x.waves: max_waves is 3: say interval_days",
        ),
        ({"priority": 1, "entry": {"event": "state"}}, "campaigns.x: say templates: [sms/<name>, ...]"),
        (
            {
                "priority": 1,
                "entry": {"event": "state"},
                "variants": {"a": {"templates": ["sms/a"]}, "b": {}},
            },
            "campaigns.x: variant(s) b have no templates and the campaign has none to inherit",
        ),
        (
            {
                "priority": 1,
                "entry": {"event": "state"},
                "templates": ["sms/a"],
                "coupon": {"value_cny": 30, "min_spend_cny": 20, "valid_days": 5},
            },
            "campaigns.x.coupon: min_spend_cny (20) must be above value_cny (30), or 0",
        ),
        (
            {"priority": 1, "entry": {"event": "state"}, "templates": ["sms/a"], "holdout": {"share": 0.95}},
            "campaigns.x.holdout.share: Input should be less than or equal to 0.9",
        ),
        (
            {
                "priority": 1,
                "entry": {"event": "state", "segment": {"member_tier": ["gold"]}},
                "templates": ["sms/a"],
            },
            "campaigns.x.entry.segment.member_tier: unknown member tier 'gold' (known: vip, active, normal)",
        ),
        (
            {
                "priority": 1,
                "entry": {"event": "state"},
                "templates": ["sms/a"],
                "starts_on": "2025-11-11",
                "ends_on": "2025-11-01",
            },
            "campaigns.x: ends_on (2025-11-01) is before starts_on (2025-11-11)",
        ),
    ],
)
def test_campaign_rules_are_checked(campaign, message):
    with pytest.raises(ConfigError) as err:
        parse_playbook({"shop": {"name": "小店"}, "campaigns": {"x": campaign}}, WHERE)
    assert message.replace("Value error, ", "") in str(err.value)


def test_campaign_names_and_the_section_shape_are_checked():
    with pytest.raises(ConfigError, match="campaigns: .*write campaigns as a mapping"):
        parse_playbook({"shop": {"name": "小店"}, "campaigns": [{"name": "x"}]}, WHERE)
    with pytest.raises(ConfigError, match="campaigns.Thank-You: a campaign name is lower-case"):
        parse_playbook(
            {
                "shop": {"name": "小店"},
                "campaigns": {
                    "Thank-You": {"priority": 1, "entry": {"event": "state"}, "templates": ["sms/a"]}
                },
            },
            WHERE,
        )
    with pytest.raises(ConfigError, match="shop: Field required"):
        parse_playbook({"campaigns": {}}, WHERE)


def test_default_caps_do_not_require_the_default_tier_names():
    segments = {"member_tiers": {"rules": [{"tier": "gold", "min_r": 4}], "otherwise": "silver"}}
    pb = parse_playbook({"segments": segments, "shop": {"name": "小店"}}, WHERE)
    assert pb.contact_pressure.cap_for("gold") == pb.contact_pressure.other_tiers


def test_segments_mistakes_are_still_reported_by_the_playbook_loader():
    text, line = edited("thresholds_cny: [70, 140]", "thresholds_cny: [140, 70]")
    with pytest.raises(ConfigError, match=rf"line {line}\): segments.value_tiers.thresholds_cny"):
        parse_text(text)


def test_the_segments_loader_does_not_warn_about_the_campaign_sections(caplog):
    from huitouke.segments import parse_segment_settings

    with caplog.at_level(logging.WARNING):
        parse_segment_settings(yaml.safe_load(SHIPPED), WHERE, SHIPPED)
    assert "unknown section" not in caplog.text


# ------------------------------------------------------------------- YAML mistakes keep their place


def test_an_impossible_date_names_the_file_line_and_field(tmp_path):
    text, line = edited(
        "    priority: 40", "    priority: 40\n    starts_on: 2025-13-45", after="new_product_premium:"
    )
    path = tmp_path / "playbook.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as failure:
        load_playbook(path)
    message = str(failure.value)
    assert f"playbook.yaml (line {line + 1}): campaigns.new_product_premium.starts_on:" in message
    assert "month" in message


def test_a_duplicate_key_is_refused_with_its_line_and_the_first_one():
    text, line = edited(
        "    priority: 40", "    priority: 40\n    priority: 45", after="new_product_premium:"
    )
    with pytest.raises(ConfigError) as failure:
        parse_text(text)
    message = str(failure.value)
    assert f"{WHERE} (line {line + 1}, column 5)" in message
    assert f"duplicate key 'priority' (first written on line {line})" in message


def test_a_duplicate_section_is_refused_through_load_playbook(tmp_path):
    lines = SHIPPED.splitlines(keepends=True)
    start = next(i for i, text in enumerate(lines) if text == "  win_back:\n")
    path = tmp_path / "playbook.yaml"
    path.write_text(
        SHIPPED + "".join(lines[start:]).replace("  win_back:", "campaigns:\n  win_back:", 1),
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match=r"duplicate key 'campaigns' \(first written on line \d+\)"):
        load_playbook(path)


@pytest.mark.parametrize("cost", [".inf", ".nan", "-0.01", "1e9"])
def test_a_unit_cost_must_be_finite_and_plausible(cost):
    text, line = edited("call_cny: 1.5", f"call_cny: {cost}")
    with pytest.raises(ConfigError) as failure:
        parse_text(text)
    assert f"{WHERE} (line {line}): shop.unit_costs.call_cny:" in str(failure.value)
