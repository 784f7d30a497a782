"""The data engineer's configuration: errors name the file and the field."""

from __future__ import annotations

import pytest

from huitouke.config import ConfigError, load_settings, parse_settings, parse_yaml

WHERE = "include/huitouke.yaml"
SQL = {"source": "sql", "sql": {"conn_id": "shop_db", "query": "SELECT 1 WHERE t >= :start AND t < :end"}}


def test_the_shipped_configuration_is_valid():
    settings = load_settings()
    assert settings.shop.timezone == "Asia/Shanghai"
    assert settings.store.conn_id == "crm_db"
    assert settings.intake.source == "sql"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"shop": {"timezone": "Asia/Shangai"}, "intake": SQL}, f"{WHERE}: shop.timezone: unknown timezone"),
        ({"intake": {"source": "sql", "sql": {"query": "SELECT 1"}}}, f"{WHERE}: intake.sql.query: "),
        ({"intake": {"source": "ftp"}}, f"{WHERE}: intake.source: "),
        ({"intake": {"source": "files"}}, "no files: section"),
        ({"intake": SQL, "stor": {}}, f"{WHERE}: stor: unknown field"),
        ({"intake": {**SQL, "http": {"page_size": 0}}}, f"{WHERE}: intake.http.page_size: "),
        ({"shop": {}}, f"{WHERE}: intake: Field required"),
        ([1, 2], f"{WHERE}: expected a mapping"),
    ],
)
def test_mistakes_name_the_file_and_the_field(data, message):
    with pytest.raises(ConfigError) as info:
        parse_settings(data, WHERE)
    assert message in str(info.value)


def test_yaml_syntax_errors_name_the_line(tmp_path):
    path = tmp_path / "huitouke.yaml"
    path.write_text("shop:\n  timezone: [Asia/Shanghai\nintake: {}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"huitouke.yaml \(line \d+, column \d+\): not valid YAML"):
        load_settings(path)


def test_a_bad_value_names_the_file_the_line_and_the_field(tmp_path):
    path = tmp_path / "huitouke.yaml"
    path.write_text(
        "intake:\n  source: sql\n  sql:\n    query: 'x :start :end'\nscale:\n  shards: 0\n", encoding="utf-8"
    )
    with pytest.raises(ConfigError, match=r"huitouke.yaml \(line 6\): scale.shards: Input should be greater"):
        load_settings(path)


def test_a_missing_file_is_reported(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_settings(tmp_path / "nope.yaml")


def test_an_edited_file_is_read_again(tmp_path):
    path = tmp_path / "huitouke.yaml"
    path.write_text("intake:\n  source: sql\n  sql:\n    query: 'x :start :end'\n", encoding="utf-8")
    assert load_settings(path).shop.timezone == "Asia/Shanghai"
    path.write_text(
        "shop:\n  timezone: Europe/Paris\nintake:\n  source: sql\n  sql:\n    query: 'x :start :end'\n",
        encoding="utf-8",
    )
    import os

    os.utime(path, ns=(1, 10**18))
    assert load_settings(path).shop.timezone == "Europe/Paris"


def test_a_duplicate_key_names_the_file_line_and_key(tmp_path):
    path = tmp_path / "huitouke.yaml"
    path.write_text(
        "shop:\n  timezone: Asia/Shanghai\n  timezone: Europe/Paris\nintake:\n  source: sql\n"
        "  sql:\n    query: 'x :start :end'\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert str(info.value) == (
        "huitouke.yaml (line 3, column 3): not valid YAML: duplicate key 'timezone' "
        "(first written on line 2): keep one, the other would be ignored"
    ).replace("huitouke.yaml", str(path))


def test_merge_keys_may_still_be_overridden():
    data = parse_yaml("base: &b {a: 1, b: 2}\nd:\n  <<: *b\n  a: 3\n", WHERE)
    assert data["d"] == {"a": 3, "b": 2}


def test_an_impossible_date_is_read_as_its_text_for_the_field_to_reject():
    assert parse_yaml("start_date: 2025-13-45\n", WHERE) == {"start_date": "2025-13-45"}
    with pytest.raises(ConfigError, match=rf"{WHERE}: schedule.start_date: Input should be a valid date"):
        parse_settings({"schedule": parse_yaml("start_date: 2025-13-45\n", WHERE), "intake": SQL}, WHERE)


def test_a_folder_or_a_non_utf8_file_is_reported(tmp_path):
    with pytest.raises(ConfigError, match="a folder, not a file"):
        load_settings(tmp_path)
    path = tmp_path / "gbk.yaml"
    path.write_bytes("shop:\n  timezone: 上海\n".encode("gbk"))
    with pytest.raises(ConfigError, match=r"gbk.yaml: not UTF-8 text"):
        load_settings(path)
