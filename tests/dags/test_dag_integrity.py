"""DAG integrity: every DAG file imports without errors, quickly, and every DAG documents itself,
has tags, an owner and retries (the Astro project template's check, per DAG file)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DAG_FILES = sorted((ROOT / "dags").glob("*.py"))


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(ROOT / "dags"))


def test_there_are_dag_files():
    assert DAG_FILES


@pytest.mark.parametrize("dag_file", DAG_FILES, ids=lambda p: p.name)
def test_dag_file_imports_without_errors(dagbag, dag_file):
    assert str(dag_file) not in dagbag.import_errors, dagbag.import_errors.get(str(dag_file))


def test_no_import_errors_at_all(dagbag):
    assert dagbag.import_errors == {}


@pytest.mark.parametrize("dag_file", DAG_FILES, ids=lambda p: p.name)
def test_dag_file_needs_no_database_or_network_at_parse_time(dag_file, tmp_path):
    """Parsing in a fresh interpreter with no CRM/shop Connections and no Airflow DB must work."""
    code = f"import runpy; runpy.run_path({str(dag_file)!r})"
    env = {
        "PATH": "/usr/bin:/bin",
        "HUITOUKE_HOME": str(ROOT),
        "AIRFLOW_HOME": str(tmp_path),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert not (tmp_path / "airflow.db").exists() or (tmp_path / "airflow.db").stat().st_size == 0


def test_every_dag_has_docs_tags_owner_and_retries(dagbag):
    assert dagbag.dags
    for dag_id, dag in dagbag.dags.items():
        assert dag.doc_md and len(dag.doc_md) > 200, f"{dag_id} needs doc_md for the people in the UI"
        assert dag.tags, f"{dag_id} needs tags"
        for task in dag.tasks:
            assert task.owner and task.owner != "airflow", f"{dag_id}.{task.task_id} needs an owner"
            assert task.retries >= 1, f"{dag_id}.{task.task_id} needs retries"


def test_daily_dag_is_one_run_per_shop_day_in_order(dagbag):
    dag = dagbag.dags["huitouke_daily"]
    assert dag.max_active_runs == 1
    assert dag.timetable.expression == "0 0 * * *"
    assert str(dag.timetable.timezone) == "Asia/Shanghai"
    assert dag.start_date.tzinfo is not None and "Asia/Shanghai" in str(dag.timezone)
    upstream = {t.task_id: t.upstream_task_ids for t in dag.tasks}
    assert upstream == {
        "check_crm_schema": set(),
        "open_business_day": {"check_crm_schema"},
        "intake_orders": {"open_business_day"},
        "update_segments": {"intake_orders"},
        "reduce_segments": {"update_segments"},
        "lint_templates": {"reduce_segments"},
        "plan_shard": {"lint_templates"},
        "plan_campaigns": {"plan_shard"},
        "render_messages": {"plan_campaigns"},
        "wait_for_send_window": {"render_messages"},
        "deliver_messages": {"wait_for_send_window"},
        "summarize_delivery": {"deliver_messages"},
        "evaluate_campaigns": {"plan_campaigns"},
        "close_business_day": {"evaluate_campaigns"},
    }


def test_every_task_that_writes_the_store_takes_a_slot_of_its_pool(dagbag):
    """SQLite has one writer at a time: the store's writers share the pool huitouke_store."""
    pools = {t.task_id: t.pool for t in dagbag.dags["huitouke_daily"].tasks}
    readers = {"check_crm_schema", "lint_templates", "wait_for_send_window", "summarize_delivery"}
    assert {pools[t] for t in pools if t not in readers} == {"huitouke_store"}
    assert {pools[t] for t in readers} == {"default_pool"}


def test_messages_are_rendered_by_one_mapped_task_per_campaign_and_shard_named_after_them(dagbag):
    render = dagbag.dags["huitouke_daily"].get_task("render_messages")
    assert type(render).__name__.endswith("MappedOperator")
    assert render.map_index_template == "{{ campaign_shard }}"
    assert render.partial_kwargs["op_kwargs"] == {"shard_count": 1}  # scale.shards
    assert render.op_kwargs_expand_input.value["shard"] == [0]


def test_planning_is_one_mapped_task_per_customer_shard_then_the_reduce(dagbag):
    from huitouke.config import load_settings

    dag = dagbag.dags["huitouke_daily"]
    shard = dag.get_task("plan_shard")
    assert type(shard).__name__.endswith("MappedOperator")
    assert shard.map_index_template == "{{ shard_label }}"
    assert shard.partial_kwargs["op_kwargs"]["shard_count"] == load_settings().scale.shards
    assert type(dag.get_task("plan_campaigns")).__name__ != "MappedOperator"


def test_delivery_waits_deferred_and_is_mapped_per_channel_and_shard(dagbag):
    dag = dagbag.dags["huitouke_daily"]
    window = dag.get_task("wait_for_send_window")
    assert type(window).__name__ == "SendWindowSensor" and window.trigger_rule == "all_done"
    deliver = dag.get_task("deliver_messages")
    assert type(deliver).__name__.endswith("MappedOperator")
    assert deliver.map_index_template == "{{ channel_shard }}"
    assert set(deliver.op_kwargs_expand_input.value) == {"channel", "shard"}
    assert dag.get_task("summarize_delivery").trigger_rule == "all_done"


def test_airflow_loads_the_plugins_folder_without_import_errors():
    """plugins/ holds the huitouke library: Airflow must not import its modules one by one
    (plugins/.airflowignore), which would fail or shadow standard modules."""
    from airflow import plugins_manager

    plugins_manager.ensure_plugins_loaded()
    assert plugins_manager.get_import_errors() == {}
