"""The playbook's segments section: defaults, validation, errors that name the file, line and field."""

from __future__ import annotations

import pytest
import yaml

from huitouke.config import ConfigError
from huitouke.segments import SegmentSettings, load_segment_settings, parse_segment_settings

WHERE = "include/playbook.yaml"


def test_the_shipped_playbook_is_valid_and_says_what_the_defaults_say():
    settings = load_segment_settings()
    assert settings == SegmentSettings()
    assert settings.lifecycle.churn_days == 365
    assert settings.lifecycle.windows_for("durables") == (365, 730)
    assert settings.value_tiers.thresholds_cents == [7_000, 14_000]
    assert settings.member_tiers.tiers == ("vip", "active", "normal")
    assert settings.low_value_sources == ["flash_sale", "points"]


def test_other_sections_of_the_playbook_are_left_to_their_own_loaders():
    data = {
        "shop": {"name": "x"},
        "campaigns": [{"name": "thank_you"}],
        "segments": {"lifecycle": {"new_days": 14}},
    }
    assert parse_segment_settings(data, WHERE).lifecycle.new_days == 14


def test_a_playbook_without_a_segments_section_gets_the_defaults():
    assert parse_segment_settings({"campaigns": []}, WHERE) == SegmentSettings()
    assert parse_segment_settings(None, WHERE) == SegmentSettings()


@pytest.mark.parametrize(
    ("segments", "message"),
    [
        (
            {"value_tiers": {"thresholds_cny": [140, 70]}},
            f"{WHERE}: segments.value_tiers.thresholds_cny: thresholds must be strictly increasing",
        ),
        (
            {"value_tiers": {"thresholds_cny": [70]}},
            f"{WHERE}: segments.value_tiers: 1 thresholds make 2 tiers, but 3 labels",
        ),
        (
            {"value_tiers": {"thresholds_cny": [70.001]}},
            "segments.value_tiers.thresholds_cny: thresholds are amounts in CNY",
        ),
        (
            {"value_tiers": {"thresholds_cny": "70"}},
            "segments.value_tiers.thresholds_cny: Input should be a valid list",
        ),
        (
            {"lifecycle": {"churn_day": 400}},
            f"{WHERE}: segments.lifecycle.churn_day: unknown field (check the spelling)",
        ),
        (
            {"lifecycle": {"churn_days": 100}},
            "segments.lifecycle: expected new_days < at_risk_days < churn_days",
        ),
        (
            {"lifecycle": {"new_days": 0}},
            "segments.lifecycle.new_days: Input should be greater than or equal to 1",
        ),
        (
            {"lifecycle": {"by_category_group": {"3c": {"at_risk_days": 400}}}},
            "by_category_group.3c: at_risk_days (400) must be below churn_days (365)",
        ),
        (
            {"lifecycle": {"by_category_group": {"3c": {"churn": 400}}}},
            "segments.lifecycle.by_category_group.3c.churn: unknown field",
        ),
        (
            {"member_tiers": {"rules": [{"tier": "vip", "min_r": 6}]}},
            "segments.member_tiers.rules.0.min_r: Input should be less than or equal to 5",
        ),
        (
            {"member_tiers": {"rules": [{"tier": "vip"}]}},
            "segments.member_tiers.rules.0: a rule needs at least one of",
        ),
        (
            {"member_tiers": {"rules": [{"tier": "VIP 1", "min_r": 4}]}},
            "segments.member_tiers.rules.0.tier: tier name 'VIP 1'",
        ),
        (
            {"member_tiers": {"rules": [{"tier": "normal", "min_r": 4}]}},
            "segments.member_tiers: tier names must be distinct: normal",
        ),
        (
            {"value_tiers": {"labels": ["low", "mid", "premium_customers"]}},
            "segments.value_tiers.labels: tier label 'premium_customers' is longer than 16 characters",
        ),
        (
            {"category_groups": {"a": ["food"], "b": ["food"]}},
            "segments.category_groups: category 'food' is in two groups: a and b",
        ),
        (
            {"low_value_sources": ["flashsale"]},
            "segments.low_value_sources: unknown acquisition source 'flashsale'",
        ),
        ({"colour": "red"}, f"{WHERE}: segments.colour: unknown field"),
    ],
)
def test_mistakes_name_the_file_and_the_field(segments, message):
    with pytest.raises(ConfigError) as info:
        parse_segment_settings({"segments": segments}, WHERE)
    assert message in str(info.value)


def test_a_misspelt_section_is_warned_about_but_left_alone(caplog):
    with caplog.at_level("WARNING", logger="huitouke.segments.settings"):
        assert parse_segment_settings({"segment": {"lifecycle": {}}}, WHERE) == SegmentSettings()
    assert "include/playbook.yaml: unknown section 'segment' (did you mean 'segments'?)" in caplog.text


def test_a_playbook_that_is_not_a_mapping_is_reported():
    with pytest.raises(ConfigError, match=f"{WHERE}: expected a mapping of sections"):
        parse_segment_settings([1, 2], WHERE)


def test_errors_in_the_file_name_the_line(tmp_path):
    path = tmp_path / "playbook.yaml"
    path.write_text(
        "campaigns: []\n"
        "segments:\n"
        "  lifecycle:\n"
        "    new_days: 30\n"
        "  value_tiers:\n"
        "    thresholds_cny: [140, 70]\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as info:
        load_segment_settings(path)
    assert (
        "playbook.yaml (line 6): segments.value_tiers.thresholds_cny: thresholds must be strictly increasing"
        in str(info.value)
    )


def test_a_yaml_syntax_error_names_the_line(tmp_path):
    path = tmp_path / "playbook.yaml"
    path.write_text("segments:\n  value_tiers: [70, 140\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"playbook.yaml \(line \d+, column \d+\): not valid YAML"):
        load_segment_settings(path)


def test_an_edited_playbook_is_read_again(tmp_path):
    import os

    path = tmp_path / "playbook.yaml"
    path.write_text("segments:\n  lifecycle:\n    new_days: 20\n", encoding="utf-8")
    assert load_segment_settings(path).lifecycle.new_days == 20
    path.write_text("segments:\n  lifecycle:\n    new_days: 25\n", encoding="utf-8")
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000))
    assert load_segment_settings(path).lifecycle.new_days == 25


def test_chinese_source_names_are_accepted():
    settings = parse_segment_settings({"segments": {"low_value_sources": ["聚划算", "淘金币"]}}, WHERE)
    assert settings.low_value_sources == ["flash_sale", "points"]


def test_the_state_fingerprint_changes_with_the_category_groups_only():
    base = SegmentSettings()
    assert SegmentSettings(lifecycle={"new_days": 10}).state_fingerprint() == base.state_fingerprint()
    assert SegmentSettings(category_groups={"baby": ["food"]}).state_fingerprint() != base.state_fingerprint()


def test_the_shipped_playbook_documents_every_field():
    """Every field of the model appears in the shipped file, so marketers see what they can set."""
    from huitouke.segments.settings import playbook_path

    data = yaml.safe_load(playbook_path().read_text(encoding="utf-8"))["segments"]
    assert set(data) == set(SegmentSettings.model_fields)
    assert set(data["lifecycle"]) == {
        "new_days",
        "at_risk_days",
        "churn_days",
        "loyal_min_orders",
        "by_category_group",
    }
