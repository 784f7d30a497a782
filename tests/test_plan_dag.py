"""Planning through the DAG (``dag.test``) with three customer shards, on SQLite and PostgreSQL:
``plan_shard`` mapped once per shard (named ``shard i/3``), then the reduce ``plan_campaigns``,
store the plan that one run of the stage stores for the same shop and day. The stages before
planning are not run here (tests/test_daily_dag.py runs them): the store is given the day's
orders and its segments."""

from __future__ import annotations

import json
import random
from datetime import date, timedelta

import pandas as pd
import pytest
import yaml
from sqlalchemy import func, select
from store_rows import add_customer, add_order, stored_plan

from huitouke.store.schema import (
    campaign_plan_shards,
)

pytestmark = pytest.mark.usefixtures("airflow_db")
PLAN_TASKS = ["plan_shard", "plan_campaigns"]
DAY = date(2025, 6, 2)


def _shop(engine) -> None:
    """60 customers with orders before the day, half of them buying on it; the day's segments."""
    from huitouke.segments.daily import run_day as update_segments
    from huitouke.segments.settings import load_segment_settings

    rng = random.Random(3)
    n = 0
    for i in range(60):
        cid = f"p{i:03d}"
        add_customer(engine, cid, email="x@example.com" if i % 4 == 0 else None)
        for on in [DAY - timedelta(days=rng.randint(2, 200)) for _ in range(rng.randint(0, 3))] + (
            [DAY] if i % 2 else []
        ):
            n += 1
            add_order(engine, f"o{n}", cid, on, rng.choice([49, 120, 399]))
    update_segments(engine, DAY, load_segment_settings())


@pytest.fixture
def sharded(tmp_path, monkeypatch, store_url):
    """The project's configuration with three shards and the CRM store at store_url."""
    from huitouke.config import project_home

    config = yaml.safe_load((project_home() / "include/huitouke.yaml").read_text())
    config["scale"] = {"shards": 3}
    (tmp_path / "huitouke.yaml").write_text(yaml.safe_dump(config, allow_unicode=True))
    monkeypatch.setenv("HUITOUKE_CONFIG", str(tmp_path / "huitouke.yaml"))
    url = store_url.replace("postgresql+psycopg2://", "postgresql://")
    crm = {"conn_type": "sqlite", "host": url.removeprefix("sqlite:///")} if url.startswith("sqlite") else url
    monkeypatch.setenv("AIRFLOW_CONN_CRM_DB", json.dumps(crm) if isinstance(crm, dict) else crm)


def _run_planning(day: date):
    from airflow.sdk.definitions._internal.expandinput import EXPAND_INPUT_EMPTY

    from huitouke.dagrun import load_daily_dag, logical_date_for

    dag = load_daily_dag().partial_subset(task_ids=PLAN_TASKS, include_upstream=False)
    for task in dag.tasks:
        task.retries = 0
        if getattr(task, "op_kwargs_expand_input", None) is not None:
            task.expand_input = EXPAND_INPUT_EMPTY  # see tests/test_deliver_dag.py
    run = dag.test(logical_date=logical_date_for(day, "Asia/Shanghai"))
    return str(run.state).rsplit(".", 1)[-1].lower(), _task_states(run.run_id)


def _task_states(run_id: str) -> dict[str, str]:
    from airflow.models import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        tis = session.query(TaskInstance).filter(TaskInstance.run_id == run_id).all()
        return {
            ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.rendered_map_index or ti.map_index}]": str(
                ti.state
            )
            for ti in tis
        }


def test_the_dag_plans_a_day_by_shards_as_one_run_plans_it(store_engine, sharded, tmp_path):
    from huitouke.campaigns.daily import run_day
    from huitouke.campaigns.playbook import load_playbook
    from huitouke.store.connection import make_engine
    from huitouke.store.migrate import upgrade

    _shop(store_engine)
    state, tasks = _run_planning(DAY)
    assert state == "success", tasks
    assert {f"plan_shard[shard {i}/3]" for i in (1, 2, 3)} | {"plan_campaigns"} == set(tasks)
    assert set(tasks.values()) == {"success"}
    with store_engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(campaign_plan_shards)) == 0

    single = make_engine(f"sqlite:///{tmp_path / 'single.sqlite'}")
    upgrade(single)
    _shop(single)
    assert run_day(single, DAY, load_playbook()).planned
    by_dag, by_one_run = stored_plan(store_engine), stored_plan(single)
    assert len(by_one_run["waves"]) > 0 and len(by_one_run["coupons"]) > 0
    for name in by_one_run:
        pd.testing.assert_frame_equal(by_dag[name], by_one_run[name], obj=name, check_dtype=False)

    state, tasks = _run_planning(DAY)  # the day again: every shard and the reduce keep the stored plan
    assert state == "success" and set(tasks.values()) == {"success"}
    for name, frame in stored_plan(store_engine).items():
        pd.testing.assert_frame_equal(frame, by_dag[name], obj=name)
