"""The whole daily DAG (``dag.test``) in customer shards stores what it stores in one: a generated
shop's history loaded, then two business days run by the DAG with ``scale.shards`` 1 on SQLite
and with 3 on PostgreSQL (both databases and both shard counts at once: each stage's own tests
cover the other pairs); every table a day writes is compared (segments, plans, coupons,
the outbox with its texts, the evaluations), leaving out only the times of writing, the random
coupon codes and the outbox's message ids (the order rows were queued in)."""

from __future__ import annotations

import json
from datetime import date, timedelta

import pandas as pd
import pytest
import yaml
from sqlalchemy import select

pytestmark = pytest.mark.airflow

HISTORY_START = date(2025, 11, 1)
DAYS = [date(2025, 12, 11), date(2025, 12, 12)]
RUNS = [("sqlite", 1), ("postgres", 3)]

# table name -> columns left out (written at a time, random, or the order of insertion)
COMPARED = {
    "customer_state": [],
    "customer_spend": [],
    "segment_history": [],
    "segment_kpis": ["computed_at"],
    "segment_transitions": [],
    "campaign_entries": ["planned_at"],
    "campaign_waves": ["planned_at"],
    "coupons": ["code", "created_at"],
    "campaign_days": ["planned_at", "rendered_at"],
    "outbox": ["message_id", "coupon_code", "created_at", "claimed_at", "lease_until"],
    "evaluations": ["computed_at"],
}


@pytest.fixture(scope="module")
def shop(airflow_db):
    from huitouke.demo_shop import ShopSpec, generate_shop

    return generate_shop(ShopSpec(customers=1_500, start=HISTORY_START, end=DAYS[-1], seed=23))


def _stores(postgres_server, folder) -> dict[tuple[str, int], str]:
    urls = {}
    for kind, shards in RUNS:
        if kind == "sqlite":
            urls[(kind, shards)] = f"sqlite:///{folder / f'crm-{shards}.sqlite'}"
        else:
            urls[(kind, shards)] = postgres_server.create_database(f"crm_shards_day_{shards}")
    return urls


def _configured(monkeypatch, folder, shards: int, url: str) -> None:
    """The project's settings with ``shards`` and Connection crm_db at ``url``."""
    from huitouke.config import project_home

    config = yaml.safe_load((project_home() / "include/huitouke.yaml").read_text(encoding="utf-8"))
    config["scale"] = {"shards": shards}
    path = folder / f"huitouke-{shards}.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    monkeypatch.setenv("HUITOUKE_CONFIG", str(path))
    if url.startswith("sqlite"):
        monkeypatch.setenv(
            "AIRFLOW_CONN_CRM_DB", json.dumps({"conn_type": "sqlite", "host": url.removeprefix("sqlite:///")})
        )
    else:
        monkeypatch.setenv("AIRFLOW_CONN_CRM_DB", url.replace("postgresql+psycopg2://", "postgresql://"))
    monkeypatch.setenv("HUITOUKE_CACHE_DIR", str(folder / f"cache-{shards}-{url[:8]}"))


def _run(shop, monkeypatch, folder, shards: int, url: str) -> dict[date, str]:
    from huitouke.config import load_settings
    from huitouke.dagrun import load_daily_dag, run_business_days
    from huitouke.demo_shop import shop_as_of, write_shop
    from huitouke.pipeline import day_bounds, intake_orders
    from huitouke.store.connection import engine_for
    from huitouke.store.migrate import upgrade

    _configured(monkeypatch, folder, shards, url)
    settings = load_settings()
    upgrade(engine_for("crm_db"))
    write_shop(shop_as_of(shop, DAYS[0] - timedelta(days=1)), engine_for("shop_db"))
    start, _ = day_bounds(HISTORY_START, settings)
    end, _ = day_bounds(DAYS[0], settings)
    intake_orders(start, end, settings)
    dag = load_daily_dag()
    assert len(dag.get_task("update_segments").op_kwargs_expand_input.value["shard"]) == shards
    states = {}
    for day in DAYS:
        write_shop(shop_as_of(shop, day), engine_for("shop_db"))
        states.update(run_business_days([day], dag=dag))
    return states


def _tables(url: str) -> dict[str, pd.DataFrame]:
    from huitouke.store import schema
    from huitouke.store.connection import make_engine

    engine = make_engine(url)
    out = {}
    with engine.connect() as conn:
        for name, without in COMPARED.items():
            table = getattr(schema, name)
            frame = pd.DataFrame(conn.execute(select(table)).mappings().all())
            if name == "outbox" and len(frame):
                codes = frame["coupon_code"].fillna("")
                for column in ("subject", "body", "html"):
                    frame[column] = [
                        text.replace(code, "<code>") if code and isinstance(text, str) else text
                        for code, text in zip(codes, frame[column], strict=True)
                    ]
            frame = frame.drop(columns=[c for c in without if c in frame.columns])
            columns = list(frame.columns)
            out[name] = frame.astype(str).sort_values(columns).reset_index(drop=True)
    engine.dispose()
    return out


@pytest.fixture(scope="module")
def stored(shop, postgres_server, tmp_path_factory):
    folder = tmp_path_factory.mktemp("shards-day")
    urls = _stores(postgres_server, folder)
    results = {}
    with pytest.MonkeyPatch.context() as monkeypatch:
        for run in RUNS:
            states = _run(shop, monkeypatch, folder, run[1], urls[run])
            results[run] = (states, _tables(urls[run]))
    return results


def test_every_day_runs_to_success_in_any_shard_count(stored):
    for run, (states, _) in stored.items():
        assert states == {day: "success" for day in DAYS}, run


@pytest.mark.parametrize("run", RUNS[1:], ids=lambda r: f"{r[0]}-{r[1]}-shards")
def test_shards_store_what_one_run_stores(stored, run):
    _, whole = stored[RUNS[0]]
    _, sharded = stored[run]
    assert len(whole["outbox"]) > 0 and len(whole["campaign_waves"]) > 0 and len(whole["customer_state"]) > 0
    for name, frame in whole.items():
        pd.testing.assert_frame_equal(sharded[name], frame, obj=f"{name} ({run[0]}, {run[1]} shards)")
