"""The demo: a generated shop's history loaded, then a season of the ground-truth world through the
daily DAG (huitouke.season), each day's messages really sent, and the evaluation beside the truth.

It takes the real path: the shop lives in its own database (Connection ``shop_db``), the
configured SQL source reads it, the CRM store (``crm_db``) is migrated and written by the same
code the DAG runs.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, select

from huitouke.config import load_settings, project_home

DEMO_START = date(2024, 1, 1)
DEMO_END = date(2025, 12, 14)


@contextmanager
def output_to(path: Path) -> Iterator[None]:
    """Send everything written to stdout and stderr (Airflow's task logs included) to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with path.open("a") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


@dataclass(frozen=True)
class _DemoRun:
    """What every step of the demo works with: the settings, the shop's and the CRM store's
    engines, the seed, the Airflow log file, and where the story is told."""

    settings: Any
    shop_engine: Engine
    crm: Engine
    seed: int
    log_file: Path
    say: Callable[[str], None]


def run_demo(
    customers: int = 20_000, days: int = 90, seed: int = 7, say: Callable[[str], None] = print
) -> int:
    """Run the demo; returns a process exit code."""
    from huitouke.dagrun import days_between
    from huitouke.demo_shop import ShopSpec, generate_shop
    from huitouke.season import WorldShop
    from huitouke.store.connection import engine_for

    settings = load_settings()
    if settings.intake.source != "sql" or settings.intake.sql is None:
        say(
            "The demo reads the demo shop through the sql source: set intake.source: sql in include/huitouke.yaml"
        )
        return 2
    started = time.perf_counter()
    season = days_between(DEMO_END - timedelta(days=days - 1), DEMO_END)
    spec = ShopSpec(customers=customers, start=DEMO_START, end=season[0] - timedelta(days=1), seed=seed)
    shop = generate_shop(spec)
    run = _DemoRun(
        settings,
        engine_for(settings.intake.sql.conn_id),
        engine_for(settings.store.conn_id),
        seed,
        project_home() / "data" / "logs" / "demo-airflow.log",
        say,
    )
    say(
        f"1. Demo shop generated (seed {seed}): {len(shop.customers):,} customers, {len(shop.orders):,} orders, "
        f"{len(shop.items):,} order lines, {spec.start} .. {spec.end}, "
        f"in the shop database {run.shop_engine.url.render_as_string(hide_password=True)}"
    )
    refusal = _start_fresh(run.crm)
    if refusal:
        say(refusal)
        return 2
    say(
        f"2. CRM store {run.crm.url.render_as_string(hide_password=True)}: fresh, at revision "
        f"{_create_demo_store(run.crm)}, marked as the demo's (the only store that accepts a simulated clock)"
    )
    _load_history(run, shop, spec.start, spec.end)
    world = WorldShop(shop, season[0], season[-1], seed)
    if not _run_season(run, world, season):
        return 1
    _report(run.crm, season[-3:], say)
    _report_truth(run.crm, world, say)
    say("")
    say(f"Done in {time.perf_counter() - started:.0f} s.")
    say("Review the quarantined rows:   .venv/bin/huitouke quarantine   (add --raw for the raw rows)")
    say("See the runs, their task logs and the campaign results in the Airflow UI: make ui")
    return 0


def _create_demo_store(crm: Engine) -> str:
    """Migrate the fresh store and mark it as the demo's (huitouke.clock); returns its revision."""
    from datetime import UTC, datetime

    from huitouke.clock import mark_demo_store
    from huitouke.store.migrate import upgrade

    revision = upgrade(crm)
    with crm.begin() as conn:
        mark_demo_store(conn, datetime.now(UTC).replace(tzinfo=None))
    return revision


def _load_history(run: _DemoRun, shop: Any, start: date, history_end: date) -> None:
    """Step 3: the shop's history up to ``history_end`` in one intake, and its segments."""
    from huitouke.demo_shop import shop_as_of, write_shop
    from huitouke.pipeline import day_bounds, intake_orders, update_segments

    write_shop(shop_as_of(shop, history_end), run.shop_engine)
    first, _ = day_bounds(start, run.settings)
    last_start, end = day_bounds(history_end, run.settings)
    history = intake_orders(first, end, run.settings)
    history_segments = update_segments(last_start, run.settings)
    run.say(
        f"3. History {start} .. {history_end} loaded in one intake: {history['inserted']:,} orders new, "
        f"{history['updated']:,} updated, {history['unchanged']:,} unchanged, "
        f"{history['quarantined']:,} rows quarantined; segments computed for {history_end}: "
        f"{history_segments['customers']:,} customers"
    )


def _run_season(run: _DemoRun, world: Any, season: list[date]) -> bool:
    """Step 4: the daily DAG through Airflow for every day of the season, sending to the gateway
    simulator and a local SMTP server; False when a run failed."""
    from huitouke.config import config_path
    from huitouke.deliver.replies import normalize_phone
    from huitouke.gateway.server import DEFAULT_TOKEN, GatewayServer
    from huitouke.gateway.state import GatewayFaults
    from huitouke.season import demo_delivery, mail_sink, run_season

    run.log_file.unlink(missing_ok=True)
    run.say(
        f"4. The season {season[0]} .. {season[-1]}: the daily DAG through Airflow (dag.test) day by day, "
        "each run on the morning after its day (a simulated clock), sending to the gateway simulator and "
        f"an SMTP server; console output in {run.log_file.relative_to(project_home())}, task logs in the Airflow UI"
    )
    with (
        GatewayServer(GatewayFaults(latency_ms=5, seed=run.seed), token=DEFAULT_TOKEN) as gateway,
        mail_sink() as (mail, smtp_port),
        demo_delivery(config_path(), gateway.url, DEFAULT_TOKEN, smtp_port, project_home() / "data"),
        _progress(len(season)) as advance,
        output_to(run.log_file),
    ):
        for phone in world.invalid_phones():  # numbers that do not exist: the operator says so
            gateway.state.reject_number(normalize_phone(phone) or phone, "invalid_number")
        logging.getLogger("huitouke").setLevel(logging.INFO)  # the task logs' tables
        days = run_season(
            world, season, run.crm, run.shop_engine, gateway, run.settings.shop.timezone, advance
        )
        stats = gateway.state.stats()
    failed = [d for d in days if d.state != "success"]
    if failed:
        run.say(
            f"   The DAG run failed for {failed[0].day}: see its task logs in the Airflow UI, or {run.log_file}"
        )
        return False
    run.say(
        f"   {len(days)} runs succeeded in {sum(d.seconds for d in days):.0f} s: {sum(d.sent for d in days):,} "
        f"messages sent; the gateway accepted {stats.get('accepted', 0):,} SMS (duplicates: "
        f"{stats.get('duplicates', 0)}), the SMTP server {mail.accepted:,} e-mails; the customers paid "
        f"{sum(d.orders for d in days):,} orders and replied T {sum(d.replies for d in days):,} times"
    )
    return True


@contextmanager
def _progress(total: int) -> Iterator[Callable[[Any], None]]:
    """A progress bar per simulated day on the terminal (rich), written on a copy of the console
    taken before the run's output goes to the log file."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(file=os.fdopen(os.dup(1), "w", encoding="utf-8", closefd=True))
    columns = (TextColumn("   {task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("season", total=total)

        def advance(day: Any) -> None:
            bar.update(task, advance=1, description=f"{day.day} {day.state}, {day.sent:,} sent")

        yield advance
    console.file.close()


def _start_fresh(crm) -> str | None:
    """Empty the CRM store so every demo run tells the same story; refuse to touch real data.

    Only the embedded SQLite default inside the project's data/ folder is deleted. Any other
    store must be empty (no orders), or the demo refuses with the reason.
    """
    from huitouke.store.schema import orders

    url = crm.url
    data_dir = (project_home() / "data").resolve()
    if url.get_backend_name() == "sqlite" and url.database:
        path = Path(url.database).resolve()
        if data_dir in path.parents:
            crm.dispose()
            path.unlink(missing_ok=True)
            return None
    try:
        with crm.connect() as conn:
            stored = conn.scalar(select(func.count()).select_from(orders))
    except Exception:  # no tables yet: an empty database is fine
        return None
    if stored:
        where = url.render_as_string(hide_password=True)
        return (
            f"The demo loads a generated shop into the CRM store, but {where} already holds {stored:,} orders. "
            "Run the demo on the embedded default (unset AIRFLOW_CONN_CRM_DB) or on an empty database."
        )
    return None


def _report(crm, dag_days: list[date], say: Callable[[str], None]) -> None:
    from huitouke.segments import format_kpis
    from huitouke.store.schema import (
        customers,
        intake_runs,
        order_lines,
        orders,
        quarantine,
        segment_kpis,
        segment_transitions,
    )

    with crm.connect() as conn:
        attempts = conn.execute(
            select(intake_runs)
            .where(intake_runs.c.business_date.in_(dag_days))
            .order_by(intake_runs.c.business_date, intake_runs.c.attempt)
        ).all()
        runs = list({run.business_date: run for run in attempts}.values())  # each day's latest attempt
        totals = {
            "customers": conn.scalar(select(func.count()).select_from(customers)),
            "orders": conn.scalar(select(func.count()).select_from(orders)),
            "order lines": conn.scalar(select(func.count()).select_from(order_lines)),
            "quarantined rows": conn.scalar(select(func.count()).select_from(quarantine)),
        }
        by_status = conn.execute(select(orders.c.status, func.count()).group_by(orders.c.status)).all()
        by_reason = conn.execute(
            select(quarantine.c.reason, func.count()).group_by(quarantine.c.reason)
        ).all()
        kpi_rows = conn.execute(
            select(segment_kpis)
            .where(segment_kpis.c.business_date.in_(dag_days))
            .order_by(segment_kpis.c.business_date)
        ).all()
        transitions = {
            (r.business_date, r.from_lifecycle, r.to_lifecycle): r.customers
            for r in conn.execute(
                select(segment_transitions).where(segment_transitions.c.business_date.in_(dag_days))
            )
        }
    say("")
    say("   business day  rows read  new orders  status updates  unchanged  quarantined")
    for run in runs:
        reasons = ", ".join(f"{k} {v}" for k, v in json.loads(run.quarantined_by_reason).items())
        say(
            f"   {run.business_date}   {run.rows_read:>9,}  {run.inserted:>10,}  {run.updated:>14,}  "
            f"{run.unchanged:>9,}  {run.quarantined:>11,}  {reasons}"
        )
    say("")
    say("   business day  customers  churn rate  repeat rate  history rows closed/opened  lifecycle moves")
    for row in kpi_rows:
        moves = sum(n for (d, _, _), n in transitions.items() if d == row.business_date)
        say(
            f"   {row.business_date}   {row.customers:>9,}  {row.churn_rate:>10.2%}  {row.repeat_rate:>11.2%}  "
            f"{row.history_rows_closed:>12,} / {row.history_rows_opened:<12,}  {moves:>15,}"
        )
    say("")
    say("   The CRM store holds " + ", ".join(f"{n:,} {what}" for what, n in totals.items()) + ".")
    say("   Orders by status: " + ", ".join(f"{s} {n:,}" for s, n in sorted(by_status)))
    say("   Quarantined rows by reason: " + ", ".join(f"{r} {n:,}" for r, n in sorted(by_reason)))
    _report_campaigns(crm, dag_days, say)
    if kpi_rows:
        last = kpi_rows[-1]
        say("")
        say(f"   Segments on {last.business_date}, as the update_segments task logged them:")
        say("")
        for line in format_kpis(json.loads(last.figures)).splitlines():
            say(f"   {line}" if line else "")


def _report_campaigns(crm, dag_days: list[date], say: Callable[[str], None]) -> None:
    """The campaign plan of each day (what plan_campaigns logged), the outbox, sample messages."""
    from huitouke.campaigns.daily import stored_plan_text
    from huitouke.store.schema import outbox

    with crm.connect() as conn:
        queued = conn.execute(
            select(outbox.c.campaign, outbox.c.channel, func.count(), func.sum(outbox.c.sms_segments))
            .group_by(outbox.c.campaign, outbox.c.channel)
            .order_by(outbox.c.campaign, outbox.c.channel)
        ).all()
        by_status = conn.execute(
            select(outbox.c.status, func.count()).group_by(outbox.c.status).order_by(outbox.c.status)
        ).all()
        samples = conn.execute(
            select(outbox.c.campaign, outbox.c.channel, outbox.c.body, outbox.c.sms_segments)
            .where(outbox.c.channel == "sms")
            .where(outbox.c.business_date == dag_days[-1])
            .order_by(outbox.c.campaign, outbox.c.message_id)
        ).all()
        plans = [stored_plan_text(conn, day) for day in dag_days]
    say("")
    for text in plans:
        for line in text.splitlines():
            say(f"   {line}")
        say("")
    say("   Outbox: " + ", ".join(f"{c} {ch} {n:,}" for c, ch, n, _ in queued))
    say(
        "   By status: "
        + ", ".join(f"{status} {n:,}" for status, n in by_status)
        + ". Each run happened, on a simulated clock, the morning after its day: its messages went out "
        "to the gateway simulator; the customers answered what was really sent."
    )
    shown: set[str] = set()
    for campaign, _channel, body, segments in samples:
        if campaign in shown or len(shown) >= 3:
            continue
        shown.add(campaign)
        say(f"   e.g. {campaign} ({segments} SMS segment(s)): {body}")


VIEWS = (
    (
        "itt",
        "itt_effect",
        "customers_truth",
        "intention to treat: everyone assigned, suppressed customers included",
    ),
    (
        "sent",
        "sent_effect",
        "sent_customers",
        "those sent: the treated the message reached, against the holdout",
    ),
)


def _report_truth(crm, world: Any, say: Callable[[str], None]) -> None:
    """Every campaign's evaluation beside the truth the world knows for the same cohorts
    (:mod:`huitouke.world.truth`), in both views: the primary window pooled over the waves, as on
    the UI's results page, and how often the 95% interval of a single wave and window covered its
    true effect."""
    import pandas as pd

    from huitouke.campaigns.playbook import load_playbook
    from huitouke.store.schema import campaign_waves, evaluations

    with crm.connect() as conn:
        estimates = pd.DataFrame([dict(r) for r in conn.execute(select(evaluations)).mappings()])
        waves = pd.DataFrame([dict(r) for r in conn.execute(select(campaign_waves)).mappings()])
    say("")
    if estimates.empty or waves.empty:
        say("   No campaign wave has a matured evaluation window yet.")
        return
    windows = tuple(
        sorted({w for c in load_playbook().campaigns.values() for w in c.evaluation.windows_days})
    )
    truth = world.truth(waves, windows)
    truth["due_on"] = pd.to_datetime(truth["due_on"]).dt.date
    for view, effect, weight, meaning in VIEWS:
        both = _compared(estimates[estimates["view"] == view], truth, effect)
        if both.empty:
            continue
        with_interval = int(both["has_interval"].sum())
        say(
            f"   The evaluation against the truth, {meaning}: {len(both):,} wave windows, {with_interval:,} with an "
            f"interval (the others had nobody in one arm); the 95% intervals covered the true effect in "
            f"{int(both['covered'].sum()):,} ({both['covered'].sum() / max(with_interval, 1):.1%})"
        )
        _truth_table(both, effect, weight, say)
        say("")
    say(
        "   (truth: what the world's customers would have done with and without the message, for the same "
        "cohorts. Every wave and window: the campaign's page under Lift 效果 in the Airflow UI.)"
    )


def _compared(estimates: Any, truth: Any, effect: str) -> Any:
    """Estimates of one view joined with the truth of their wave and window; ``covered``: the
    interval holds the true ``effect``."""
    keys = ["campaign", "wave", "due_on", "window_days"]
    both = estimates.merge(truth, on=keys, how="inner", suffixes=("", "_truth"))
    both["has_interval"] = both["lift_low"].notna() & both["lift_high"].notna()
    inside = (both["lift_low"] <= both[effect]) & (both[effect] <= both["lift_high"])
    both["covered"] = both["has_interval"] & inside
    return both


def _truth_table(both: Any, effect: str, weight: str, say: Callable[[str], None]) -> None:
    """Per campaign at its primary window: pooled estimate, verdict, pooled truth, coverage."""
    from huitouke.evaluate.pool import pooled_by_campaign

    primary = both[both["primary_window"]]
    truth_of = {
        (c, int(w)): (g[effect].fillna(0) * g[weight]).sum() / max(g[weight].sum(), 1)
        for (c, w), g in primary.groupby(["campaign", "window_days"])
    }
    say(
        "   campaign             waves  window  treated  holdout   lift (95% interval)        verdict               truth  covered"
    )
    for p in pooled_by_campaign(primary.to_dict("records")):
        mine = both[both["campaign"] == p["campaign"]]
        interval = f"{_pp(p['lift'])} pp [{_pp(p['lift_low'])}, {_pp(p['lift_high'])}]"
        truth = truth_of.get((p["campaign"], int(p["window_days"])))
        say(
            f"   {p['campaign']:<20} {p['waves']:>5}  {p['window_days']:>4} d  {p['customers']:>7,}  "
            f"{p['control_customers']:>7,}   {interval:<25}  {p['verdict']:<20}  {_pp(truth):>5} pp  "
            f"{int(mine['covered'].sum())}/{int(mine['has_interval'].sum())}"
        )


def _pp(value: float | None) -> str:
    """A lift in percentage points, signed, one decimal."""
    return "-" if value is None else f"{value * 100:+.1f}"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"
