"""The whole daily run at scale, split into customer shards: 1, 2 and 4 shards, LocalExecutor, PostgreSQL.

A shop of ``BENCH_CUSTOMERS`` customers (default 1,000,000) with two years of history (about 2.2
orders a customer, one to three lines each, 3% refunded, 1% cancelled) is generated with numpy and
loaded into a PostgreSQL CRM store through huitouke's own intake (``validate`` + ``load_batch``,
one month at a time). Airflow runs as real processes (``tests/airflow_server.py``: api-server,
dag-processor, scheduler; LocalExecutor; its metadata database on the same PostgreSQL server;
the store pool with 4 slots) and the daily DAG runs, through the REST API, as a user would:

1. the **warm-up day** (the day before yesterday, shop time): the first segments run rebuilds
   the customer state from every order, the first plan enters the campaigns' first customers;
   its messages are not sent (a day older than yesterday never sends). The store after it is
   kept as a template database;
2. for each shard count of ``BENCH_SHARDS`` (default ``1,2,4``): a copy of that template
   (``CREATE DATABASE ... TEMPLATE``), Airflow restarted with ``scale.shards`` set, and
   **yesterday's run**: intake of the day's export (``BENCH_DAY_ORDERS`` orders, default
   customers / 200), segments folded, campaigns planned, rendered, sent to the gateway simulator
   (SMS, a real HTTP server in its own process) and a local SMTP server (e-mail), evaluated.

Printed per shard count: the run's wall time (its start to its end, as Airflow records them),
each task's time (a mapped task: the sum over its map indexes and the longest one), the
messages sent, and a check that every shard count stored the same segments, plan and outbox.

Run: ``.venv/bin/python bench/daily_shards.py`` (about 30 minutes at 1,000,000 customers on a
quiet 2-core machine; ``BENCH_CUSTOMERS=20000`` for a quick run). ``BENCH_DIR``: where the
exports, Airflow's home and logs go (default a temporary folder, deleted afterwards).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import psutil
import yaml
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))
sys.path.insert(0, str(ROOT / "tests"))

from airflow_server import start_airflow  # noqa: E402
from pg_server import start_postgres  # noqa: E402

from huitouke.gateway.server import GatewayProcess  # noqa: E402
from huitouke.intake.load import load_batch  # noqa: E402
from huitouke.intake.validate import validate  # noqa: E402
from huitouke.season import SMS_CONN_ID, SMTP_CONN_ID, demo_delivery, mail_sink  # noqa: E402
from huitouke.store.connection import make_engine  # noqa: E402
from huitouke.store.migrate import upgrade  # noqa: E402

CUSTOMERS = int(os.environ.get("BENCH_CUSTOMERS", "1000000"))
SHARDS = tuple(int(s) for s in os.environ.get("BENCH_SHARDS", "1,2,4").split(","))
DAY_ORDERS = int(os.environ.get("BENCH_DAY_ORDERS", str(max(CUSTOMERS // 200, 50))))
HISTORY_DAYS = 730
TZ = ZoneInfo("Asia/Shanghai")
CATEGORIES = np.array(
    ["food", "kids_clothing", "daily_goods", "durables", "womens_clothing", "cosmetics", "3c"]
)
STATUSES = np.array(["交易成功", "退款成功", "交易关闭"])
POOL_SLOTS = 4


# ----------------------------------------------------------------------------------- the shop


def orders_of_history(customers: int, first_day: dt.date, seed: int = 16) -> pd.DataFrame:
    """One row per order over ``HISTORY_DAYS`` days from ``first_day``: customer number, day
    offset, second of the day, status index, lines (1-3)."""
    rng = np.random.default_rng(seed)
    start = rng.integers(0, HISTORY_DAYS, customers)
    count = np.minimum(1 + rng.geometric(0.55, customers) - 1, 12)
    customer = np.repeat(np.arange(customers), count)
    nth = np.arange(len(customer)) - np.repeat(np.cumsum(count) - count, count)
    gap = np.where(nth == 0, 0, rng.exponential(45.0, len(customer)).astype(np.int64) + 1)
    offsets = np.repeat(start, count) + _cumsum_within(gap, count)
    keep = offsets < HISTORY_DAYS
    frame = pd.DataFrame({"customer": customer[keep], "day": offsets[keep]})
    n = len(frame)
    frame["second"] = rng.integers(8 * 3600, 23 * 3600, n)
    frame["status"] = rng.choice(3, n, p=[0.96, 0.03, 0.01])
    frame["lines"] = rng.choice([1, 1, 1, 2, 2, 3], n)
    frame = frame.sort_values(["day", "second"], kind="stable").reset_index(drop=True)
    frame["order_no"] = np.arange(n)
    return frame


def _cumsum_within(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The running sum of ``values`` restarting at each group of ``counts`` consecutive rows."""
    total = np.cumsum(values)
    starts = np.cumsum(counts) - counts
    return total - np.repeat(total[starts] - values[starts], counts)


def export_rows(orders: pd.DataFrame, first_day: dt.date, prefix: str, seed: int) -> pd.DataFrame:
    """The canonical export (text columns, one row per line) of ``orders``."""
    rng = np.random.default_rng(seed)
    line_order = np.repeat(np.arange(len(orders)), orders["lines"].to_numpy())
    n_lines = len(line_order)
    cents = rng.integers(1_500, 40_000, n_lines)
    amount = np.bincount(line_order, weights=cents, minlength=len(orders)).astype(np.int64)
    cust = orders["customer"].to_numpy()[line_order]
    day = pd.Timestamp(first_day) + pd.to_timedelta(orders["day"].to_numpy(), unit="D")
    paid = (day + pd.to_timedelta(orders["second"].to_numpy(), unit="s")).strftime("%Y-%m-%d %H:%M:%S")
    sku = rng.integers(0, 5_000, n_lines)
    cust_text = cust.astype(str)
    return pd.DataFrame(
        {
            "order_id": np.char.add(prefix, orders["order_no"].to_numpy().astype(str))[line_order],
            "customer_id": np.char.add("c", cust_text),
            "paid_at": paid.to_numpy()[line_order],
            "amount": (amount[line_order] / 100).astype(str),
            "status": STATUSES[orders["status"].to_numpy()][line_order],
            "acquisition_source": "",
            "coupon_code": "",
            "updated_at": "",
            "customer_name": np.char.add("顾客", cust_text),
            "phone": np.char.add("139", np.char.zfill((cust % 100_000_000).astype(str), 8)),
            "email": np.char.add(np.char.add("c", cust_text), "@example.com"),
            "birthday": "",
            "sku": np.char.add("SKU", sku.astype(str)),
            "product_name": np.char.add("商品", sku.astype(str)),
            "category": CATEGORIES[sku % len(CATEGORIES)],
            "quantity": "1",
            "line_amount": (cents / 100).astype(str),
        }
    )


def load_history(engine, orders: pd.DataFrame, first_day: dt.date) -> int:
    """The history into the store, a month at a time, through validation and the bulk load."""
    loaded = 0
    for month in range(0, HISTORY_DAYS, 30):
        part = orders[(orders["day"] >= month) & (orders["day"] < month + 30)]
        if part.empty:
            continue
        lo, hi = first_day + dt.timedelta(days=month), first_day + dt.timedelta(days=month + 29)
        batch = validate(export_rows(part, first_day, "H", seed=month), TZ, hi, window=(lo, hi))
        summary = load_batch(engine, batch, "files", lo, hi)
        loaded += summary.inserted
    return loaded


def day_export(day: dt.date, first_day: dt.date, seed: int) -> pd.DataFrame:
    """A business day's export: 40% of its orders by new customers, the rest by known ones."""
    rng = np.random.default_rng(seed)
    new = int(DAY_ORDERS * 0.4)
    customers = np.concatenate(
        [CUSTOMERS + seed * DAY_ORDERS + np.arange(new), rng.integers(0, CUSTOMERS, DAY_ORDERS - new)]
    )
    orders = pd.DataFrame(
        {
            "customer": customers,
            "day": (day - first_day).days,
            "second": np.sort(rng.integers(8 * 3600, 23 * 3600, DAY_ORDERS)),
            "status": 0,
            "lines": rng.choice([1, 1, 2], DAY_ORDERS),
            "order_no": np.arange(DAY_ORDERS),
        }
    )
    return export_rows(orders, first_day, f"D{day:%Y%m%d}", seed)


# -------------------------------------------------------------------------------- the databases


def admin(server) -> Any:
    return create_engine(server.url("postgres"), isolation_level="AUTOCOMMIT")


def create_database(server, name: str, template: str | None = None) -> str:
    with admin(server).connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        clause = f' TEMPLATE "{template}"' if template else ""
        conn.execute(text(f'CREATE DATABASE "{name}"{clause}'))
    return server.url(name)


def database_size(server, name: str) -> str:
    with admin(server).connect() as conn:
        size = conn.execute(text("SELECT pg_database_size(:name)"), {"name": name}).scalar()
    return f"database {name}: {size / 2**20:,.0f} MB"


def fingerprint(url: str) -> dict[str, Any]:
    """What the day stored, to compare shard counts: the segments, the plan, the outbox."""
    queries = {
        "state": "SELECT count(*), sum(paid_orders), sum(total_cents) FROM customer_state",
        "open_history": "SELECT count(*) FROM segment_history WHERE valid_to IS NULL",
        "entries": "SELECT count(*) FROM campaign_entries",
        "waves": "SELECT outcome, count(*) FROM campaign_waves GROUP BY outcome ORDER BY outcome",
        "outbox": "SELECT channel, status, count(*) FROM outbox GROUP BY channel, status ORDER BY 1, 2",
        "texts": (  # the coupon codes are random: each copy issues its own
            "SELECT md5(string_agg(replace(coalesce(body, ''), coalesce(coupon_code, '~'), '<code>'), '|' "
            "ORDER BY campaign, customer_id, entered_on, wave, channel)) FROM outbox"
        ),
    }
    out: dict[str, Any] = {}
    engine = create_engine(url)
    with engine.connect() as conn:
        for name, sql in queries.items():
            try:
                out[name] = [tuple(r) for r in conn.execute(text(sql))]
            except Exception as exc:  # a renamed column: say so, do not stop the benchmark
                conn.rollback()
                out[name] = f"n/a ({type(exc).__name__})"
    engine.dispose()
    return out


# ------------------------------------------------------------------------------------- Airflow


def settings_file(work: Path, shards: int, delivery_config: Path) -> Path:
    """The project's settings with the files source on the benchmark's exports and ``shards``."""
    settings = yaml.safe_load(delivery_config.read_text(encoding="utf-8"))
    settings["intake"]["source"] = "files"
    settings["intake"]["files"] = {
        "folder": str(work / "exports"),
        "pattern": "orders_{ds}.csv",
        "mapping": "canonical",
    }
    settings["scale"] = {"shards": shards}
    path = work / f"huitouke-{shards}.yaml"
    path.write_text(yaml.safe_dump(settings, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


# A LocalExecutor worker's process title while it runs a task instance: the instance's id.
TASK_TITLE = re.compile(r"airflow worker -- (?:LocalExecutor: )?([0-9a-f]{8}-[0-9a-f-]{27})")


class TaskMemory:
    """Each task instance's peak resident memory, sampled every 0.2 s from the LocalExecutor's
    worker process whose title names it (``airflow worker -- LocalExecutor: <task instance id>``),
    its children (the task's own processes) included."""

    def __init__(self) -> None:
        self.peak: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> TaskMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            for proc in psutil.process_iter(["cmdline"]):
                found = TASK_TITLE.search(" ".join(proc.info["cmdline"] or []))
                if found is None:
                    continue
                try:
                    rss = proc.memory_info().rss + sum(c.memory_info().rss for c in proc.children(True))
                except psutil.Error:
                    continue
                self.peak[found[1]] = max(self.peak.get(found[1], 0), rss)


def run_day(work: Path, env: dict[str, str], day: dt.date, label: str, timeout: float) -> dict[str, Any]:
    """Start Airflow with ``env``, run ``day`` through the REST API, stop; the run, its tasks
    (each with ``peak_rss``: its peak resident memory in bytes, when sampled)."""
    home = work / f"airflow-{label}"
    server = start_airflow(home, env)
    try:
        server.cli("pools", "set", "huitouke_store", str(POOL_SLOTS), "huitouke store writers (PostgreSQL)")
        api = server.api
        api.unpause()
        with TaskMemory() as memory:
            run = api.trigger_day(day, {"accept_incomplete_day": True})
            finished = api.wait_for_run(run["dag_run_id"], timeout=timeout)
        tasks = api.task_instances(run["dag_run_id"])
        for task in tasks:
            task["peak_rss"] = memory.peak.get(task.get("id"), float("nan"))
        if finished["state"] != "success":
            print(f"  run {label} ended {finished['state']}: {api.task_states(run['dag_run_id'])}")
        return {"run": finished, "tasks": tasks}
    finally:
        server.stop()


def seconds_between(start: str | None, end: str | None) -> float:
    if not start or not end:
        return float("nan")
    return (pd.Timestamp(end) - pd.Timestamp(start)).total_seconds()


def task_table(tasks: list[dict[str, Any]]) -> pd.DataFrame:
    """Per task id: how many instances, the sum of their durations, the longest, and the largest
    peak resident memory of one instance (MB)."""
    frame = pd.DataFrame(
        {
            "task": [t["task_id"] for t in tasks],
            "seconds": [seconds_between(t.get("start_date"), t.get("end_date")) for t in tasks],
            "start": [pd.Timestamp(t["start_date"]) if t.get("start_date") else pd.NaT for t in tasks],
            "peak_mb": [t.get("peak_rss", float("nan")) / 2**20 for t in tasks],
        }
    )
    table = frame.groupby("task", sort=False).agg(
        instances=("seconds", "size"),
        total=("seconds", "sum"),
        longest=("seconds", "max"),
        peak_mb=("peak_mb", "max"),
        first=("start", "min"),
    )
    return table.sort_values("first").drop(columns="first")


# ---------------------------------------------------------------------------------------- main


def main() -> None:
    work = Path(os.environ.get("BENCH_DIR") or tempfile.mkdtemp(prefix="huitouke-shards-bench-"))
    (work / "exports").mkdir(parents=True, exist_ok=True)
    today = dt.datetime.now(TZ).date()
    warm_day, day = today - dt.timedelta(days=2), today - dt.timedelta(days=1)
    first_day = warm_day - dt.timedelta(days=HISTORY_DAYS)
    for seed, d in ((1, warm_day), (2, day)):
        day_export(d, first_day, seed).to_csv(work / "exports" / f"orders_{d.isoformat()}.csv", index=False)
    with ExitStack() as stack:
        pg = start_postgres()
        stack.callback(pg.stop)
        base = create_database(pg, "crm_warm")
        engine = make_engine(base)
        upgrade(engine)
        t0 = time.perf_counter()
        orders = orders_of_history(CUSTOMERS, first_day)
        loaded = load_history(engine, orders, first_day)
        engine.dispose()
        print(
            f"history: {CUSTOMERS:,} customers, {len(orders):,} orders ({loaded:,} loaded) "
            f"from {first_day} to {warm_day - dt.timedelta(days=1)} in {time.perf_counter() - t0:.0f} s; "
            f"{DAY_ORDERS:,} orders a day after",
            flush=True,
        )
        del orders
        gateway = stack.enter_context(GatewayProcess())
        sink, smtp_port = stack.enter_context(mail_sink())
        config = stack.enter_context(
            demo_delivery(ROOT / "include" / "huitouke.yaml", gateway.url, gateway.token, smtp_port, work)
        )
        # Only the providers' Connections demo_delivery set: the CRM store is the run's own copy.
        delivery_env = {
            k: os.environ[k]
            for k in (f"AIRFLOW_CONN_{SMS_CONN_ID.upper()}", f"AIRFLOW_CONN_{SMTP_CONN_ID.upper()}")
        }
        meta = create_database(pg, "airflow_meta")

        def env_for(shards: int, crm_url: str, label: str) -> dict[str, str]:
            return {
                "HUITOUKE_HOME": str(ROOT),
                "HUITOUKE_CONFIG": str(settings_file(work, shards, config)),
                "HUITOUKE_CACHE_DIR": str(work / f"cache-{label}"),
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": meta,
                "AIRFLOW_CONN_CRM_DB": crm_url.replace("postgresql+psycopg2", "postgresql"),
                **delivery_env,
            }

        t0 = time.perf_counter()
        warm = run_day(work, env_for(1, base, "warm"), warm_day, "warm", timeout=4 * 3600)
        print(
            f"warm-up day {warm_day}: {warm['run']['state']} in {time.perf_counter() - t0:.0f} s, "
            f"{database_size(pg, 'crm_warm')}",
            flush=True,
        )
        if fingerprint(base)["state"][0][0] in (0, None):
            raise SystemExit("the warm-up day built no customer state: see its task logs")
        results = {}
        for shards in SHARDS:
            url = create_database(pg, f"crm_{shards}", template="crm_warm")
            create_database(pg, "airflow_meta")
            gateway.reset()  # the same message ids in every copy: the simulator would deduplicate them
            mail_before = sink.accepted
            result = run_day(work, env_for(shards, url, f"s{shards}"), day, f"s{shards}", timeout=4 * 3600)
            run = result["run"]
            wall = seconds_between(run.get("start_date"), run.get("end_date"))
            table = task_table(result["tasks"])
            sms = gateway.stats()["accepted"]
            results[shards] = fingerprint(url)
            print(
                f"\n{shards} shard(s): run {run['state']}, wall {wall:.1f} s; SMS accepted {sms:,}, "
                f"e-mail {sink.accepted - mail_before:,}; {database_size(pg, f'crm_{shards}')}"
            )
            print(table.to_string(float_format=lambda v: f"{v:.1f}"))
            print(f"  stored: {json.dumps(results[shards], default=str, ensure_ascii=False)}", flush=True)
        same = all(results[s] == results[SHARDS[0]] for s in SHARDS)
        print(f"\nsame segments, plan and outbox for {', '.join(map(str, SHARDS))} shards: {same}")
    if not os.environ.get("BENCH_DIR"):
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
