"""The data engineer's configuration: errors name the file and the field."""

from __future__ import annotations

import pytest

from huitouke.config import ConfigError, load_settings, parse_settings

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
