"""The daily run's stages as plain functions: what each DAG task calls, in one line.

They take the run's data interval, read settings and Connections themselves, and return small
JSON-able summaries (which Airflow keeps as XCom). Nothing here needs a running Airflow, except
that Connections are looked up through Airflow's secrets backends (environment variables included).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from huitouke.config import Settings, load_settings
from huitouke.pii import get_logger

log = get_logger(__name__)


def business_date_of(start: datetime, settings: Settings) -> date:
    """The shop-local calendar day a data interval starting at ``start`` covers."""
    return start.astimezone(settings.tz).date()


def day_bounds(day: date, settings: Settings) -> tuple[datetime, datetime]:
    """The half-open interval [00:00, next 00:00) of a business day in the shop's timezone."""
    start = datetime(day.year, day.month, day.day, tzinfo=settings.tz)
    return start, start + timedelta(days=1)


def check_crm_schema(settings: Settings | None = None) -> str:
    """Fail unless the CRM store is at the schema revision this code needs."""
    from huitouke.store.connection import engine_for
    from huitouke.store.migrate import ensure_current

    settings = settings or load_settings()
    revision = ensure_current(engine_for(settings.store.conn_id), settings.store.conn_id)
    log.info("CRM store %s is current (revision %s)", settings.store.conn_id, revision)
    return revision


def intake_orders(start: datetime, end: datetime, settings: Settings | None = None) -> dict[str, Any]:
    """Stage 1: read [start, end) from the configured source, validate, upsert; log a summary."""
    from huitouke.intake.load import load_batch
    from huitouke.intake.sources import build_source
    from huitouke.intake.validate import validate
    from huitouke.store.connection import engine_for

    settings = settings or load_settings()
    day = business_date_of(start, settings)
    last_day = business_date_of(end - timedelta(microseconds=1), settings)
    source = build_source(settings)
    raw = source.read(start, end)
    batch = validate(raw, settings.tz, day)
    summary = load_batch(engine_for(settings.store.conn_id), batch, source.name, day, last_day)
    log.info("\n%s", summary.as_text())
    return summary.as_dict()


def update_segments(start: datetime, settings: Settings | None = None) -> dict[str, Any]:
    """Stage 2: fold the day's order changes into the customer state, classify every customer,
    record the segment changes and the day's KPIs; log the KPI tables.

    One transaction, which is the only writer of ``orders`` until it commits (intake waits).
    Re-running the latest computed day recomputes it identically; an older day is left as
    computed (later days were built on it) and its stored KPIs are returned. The first run, a
    change of the playbook's category groups and a backlog of more than
    ``persist.REBUILD_ABOVE`` unfolded orders rebuild the state from every order; otherwise the
    unfolded orders are folded in (:mod:`huitouke.segments.fold`: new paid orders added to their
    customers' rows, customers with a refund or cancellation recomputed from their orders). The whole state and the open history come
    from the previous run's local snapshot when it provably matches the store
    (:mod:`huitouke.segments.snapshot`), else from the tables.
    """
    from huitouke.segments import (
        build_state_and_spend,
        classify,
        compute_kpis,
        diff_segments,
        fold_rows,
        fold_state,
        format_kpis,
        load_segment_settings,
        persist,
        plan_fold,
        same_customers,
        snapshot,
    )
    from huitouke.store.background import BackgroundWrites
    from huitouke.store.connection import engine_for

    settings = settings or load_settings()
    import pandas as pd
    import pyarrow as pa

    # Arrow's default pool (mimalloc) maps fresh memory for the run's large buffers; the system
    # allocator reuses what numpy and pandas freed a moment before, which on the development VM
    # (where first-touched memory is slow) is 0.5 to 0.8 s of a daily run at a million customers.
    # A rebuild goes back to the default pool: it holds less memory at the peak (3.8 against 4.5 GB
    # on PostgreSQL, whose CSV reader parses on several threads). Restored when the run ends.
    default_pool = pa.default_memory_pool()
    pa.set_memory_pool(pa.system_memory_pool())

    rules = load_segment_settings()
    fingerprint = rules.state_fingerprint()
    day = business_date_of(start, settings)
    now = datetime.now(UTC).replace(tzinfo=None)
    engine = engine_for(settings.store.conn_id)
    cache = snapshot.cache_dir_for(engine.url)
    store = snapshot.store_id(engine.url)
    prepared = None
    try:
        with engine.begin() as conn:
            locked = persist.lock_store(conn)
            latest = persist.latest_run(conn)
            if latest is not None and day < latest.business_date:
                log.warning(
                    "Segments for %s were computed before %s, which builds on them: kept as they are",
                    day,
                    latest.business_date,
                )
                return {
                    "business_date": day.isoformat(),
                    "recomputed": False,
                    **_headline(persist.stored_kpis(conn, day)),
                }
            saved = None
            if cache is not None and latest is not None:
                key = snapshot.SnapshotKey(
                    store, latest.business_date, latest.computed_at, latest.fingerprint, latest.customers
                )
                saved = snapshot.load(cache, key)
            rerun = latest is not None and latest.business_date == day
            pending = None
            previous_ids = open_row_of = None  # the fold's row mapping, for the history diff
            if latest is None:
                log.info("First segments run: building the customer state from all orders")
            elif latest.fingerprint != fingerprint:
                log.warning(
                    "The customer state's definition changed (the playbook's category groups, or "
                    "this version's store format): rebuilding it from all orders"
                )
            else:
                pending = persist.read_pending(conn, persist.REBUILD_ABOVE, committed=True)
                if pending is None:
                    log.info(
                        "More than %s orders to fold in: rebuilding the customer state from all orders",
                        f"{persist.REBUILD_ABOVE:,}",
                    )
            # Everything is read before the transaction writes anything: SQLite then serves it
            # from a second, read-only connection (persist._read, committed=True).
            if pending is None:
                pa.set_memory_pool(default_pool)
                orders, lines = persist.read_orders(conn, committed=True)
            else:
                before = saved.state if saved is not None else persist.read_state(conn, committed=True)
                plan = plan_fold(before, pending, day)
                history, history_lines = persist.read_orders(conn, plan.recomputed, committed=True)
                spend = persist.read_spend(conn, plan.added, committed=True)
                added_lines = persist.read_lines(conn, plan.changed_orders, committed=True)
            if saved is None:  # as after the rewind of a re-run day, which only comes next
                open_rows = persist.read_open_history(conn, committed=True, rewinding=day if rerun else None)
            else:
                open_rows = saved.rewound(day) if rerun else saved.open_rows
            writes = BackgroundWrites()  # the run's writes overlap its computing (see store.background)
            with writes:
                if rerun:
                    writes.submit(persist.rewind_history, conn, day)
                # The orders read are stamped first (nothing reads them again), while the run computes.
                if locked:
                    writes.submit(persist.mark_folded, conn, day, now)
                else:  # no lock on this database: stamp exactly the orders read
                    read = orders if pending is None else pending
                    due = read["business_date"].isna() | (read["business_date"] <= pd.Timestamp(day))
                    writes.submit(persist.mark_applied, conn, read.loc[due, "order_id"].tolist(), now)
                    del read, due
                if pending is None:  # the rebuild path: every order
                    state, spend = build_state_and_spend(orders, lines, settings=rules, until=day)
                    del lines, orders
                    writes.submit(persist.replace_state, conn, state, None)
                    writes.submit(persist.replace_spend, conn, spend, None)
                    del spend
                    recomputed = len(state)
                    how = "the state rebuilt from all orders"
                else:  # the daily fold: the pending orders, and what they touch
                    folded = fold_rows(
                        before, spend, plan, added_lines, history, history_lines, settings=rules, until=day
                    )
                    writes.submit(persist.write_folded, conn, folded, plan)
                    del spend, added_lines, history, history_lines
                    state, open_row_of = fold_state(before, folded, plan)
                    previous_ids = before["customer_id"]
                    del before
                    recomputed = len(plan.touched)
                    how = (
                        f"{len(plan.added):,} customers updated by their changed orders "
                        f"({len(plan.additions):,} paid orders added, {len(plan.removals):,} subtracted: refunded or cancelled), "
                        f"{len(plan.recomputed):,} recomputed from all their orders "
                        "(the first or last order refunded, a late order)"
                    )

                segments = classify(state, day, rules)
                if open_row_of is not None and not same_customers(open_rows["customer_id"], previous_ids):
                    open_row_of = None  # the open rows are not the previous state's customers in order
                del previous_ids
                changes = diff_segments(open_rows, segments, day, open_row_of)
                writes.submit(persist.write_history, conn, changes)
                kpis = compute_kpis(segments, day, rules, changes.transitions)
                writes.submit(persist.write_day, conn, day, kpis, changes, fingerprint, now)
                if cache is not None:
                    opened, closed = persist.open_rows_after(open_rows, segments, changes, open_row_of)
                    key = snapshot.SnapshotKey(store, day, now, fingerprint, int(kpis["customers"]))
                    prepared = snapshot.prepare(cache, key, state, opened, closed)
    except BaseException:
        snapshot.discard(prepared)
        raise
    finally:
        pa.set_memory_pool(default_pool)
    snapshot.publish(prepared)  # only now: the snapshot is the committed run's
    log.info(
        "Segments for %s: %s; %d history rows closed, %d opened\n%s",
        day,
        how,
        len(changes.close),
        len(changes.open),
        format_kpis(kpis),
    )
    return {
        "business_date": day.isoformat(),
        "recomputed": True,
        "customers_recomputed": recomputed,
        "history_rows_closed": len(changes.close),
        "history_rows_opened": len(changes.open),
        **_headline(kpis),
    }


def _headline(kpis: dict[str, Any] | None) -> dict[str, Any]:
    """The KPIs worth an XCom: sizes and rates, not the tables."""
    if not kpis:
        return {}
    keys = ("customers", "paid_orders", "churn_rate", "repeat_rate", "lifecycle", "member_tiers")
    return {key: kpis[key] for key in keys if key in kpis}


def lint_templates(settings: Settings | None = None) -> dict[str, str]:
    """Before planning: compile every template the enabled campaigns use; log what is broken.

    Never fails: a broken campaign fails its own render task (other campaigns go on). Returns
    campaign -> error for the broken ones.
    """
    from huitouke.campaigns import load_playbook
    from huitouke.campaigns.daily import lint_campaigns

    playbook = load_playbook()
    broken = lint_campaigns(playbook)
    enabled = sum(c.enabled for c in playbook.campaigns.values())
    if broken:
        for name, error in broken.items():
            log.error("campaign %s will not be rendered today: %s", name, error)
        log.warning(
            "%d of %d enabled campaigns have a broken template (run `huitouke templates lint`)",
            len(broken),
            enabled,
        )
    else:
        log.info("the templates of all %d enabled campaigns compile", enabled)
    return broken


def plan_campaigns(start: datetime, settings: Settings | None = None) -> list[str]:
    """Stage 3: who enters which campaign, which waves are due, who exits, what is sent (stored
    once per day); coupons redeemed by the day's orders. Returns the campaigns to render."""
    from huitouke.campaigns import load_playbook
    from huitouke.campaigns.daily import plan_campaigns as plan
    from huitouke.segments import persist as segment_store
    from huitouke.store.connection import engine_for

    settings = settings or load_settings()
    day = business_date_of(start, settings)
    engine = engine_for(settings.store.conn_id)
    with engine.connect() as conn:
        segmented, _ = segment_store.last_run(conn)
    if segmented is None or segmented < day:
        raise RuntimeError(
            f"segments for {day} have not been computed (latest: {segmented or 'none'}): "
            "run update_segments for that day first"
        )
    result = plan(engine, day, load_playbook())
    log.info("\n%s", result.as_text())
    return result.campaigns()


def render_messages(start: datetime, campaign: str, settings: Settings | None = None) -> dict[str, Any]:
    """Stage 4, one campaign: render its treated waves of the day into the outbox (queued).

    A broken template fails this campaign only, before anything of it is queued, without retries
    (a retry cannot fix a template): fix it, then clear this task to queue the day's messages.
    """
    from huitouke.campaigns import load_playbook
    from huitouke.campaigns.daily import render_campaign
    from huitouke.render import TemplateError
    from huitouke.store.connection import engine_for

    settings = settings or load_settings()
    day = business_date_of(start, settings)
    engine = engine_for(settings.store.conn_id)
    try:
        result = render_campaign(engine, day, campaign, load_playbook())
    except TemplateError as exc:
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException(f"campaign {campaign}: {exc}") from exc
    log.info(
        "Campaign %s on %s: %s treated, %s messages planned, %s queued now, %s already queued, "
        "%s skipped (no address), %s skipped (opted out since planning)",
        campaign,
        day,
        f"{result.treated:,}",
        f"{result.messages_planned:,}",
        f"{result.queued:,}",
        f"{result.already_queued:,}",
        f"{result.skipped_no_address:,}",
        f"{result.skipped_opted_out:,}",
    )
    from huitouke.campaigns.daily import stored_plan_text

    with engine.connect() as conn:
        log.info("\n%s", stored_plan_text(conn, day, campaign))
    return result.as_dict()


def evaluate_campaigns(start: datetime, settings: Settings | None = None) -> dict[str, Any]:
    """Stage 6: every campaign wave whose evaluation windows matured by the end of the day,
    treated arm against holdout; new results stored once per wave, window and view; the table
    logged."""
    from huitouke.campaigns import load_playbook
    from huitouke.evaluate.daily import evaluate_day
    from huitouke.store.connection import engine_for

    settings = settings or load_settings()
    day = business_date_of(start, settings)
    evaluation = evaluate_day(
        engine_for(settings.store.conn_id), day, load_playbook(), settings.shop.timezone
    )
    log.info("\n%s", evaluation.as_text())
    results = evaluation.results
    primary = results[results["primary"] & (results["view"] == "itt")] if len(results) else results
    return {
        "business_date": day.isoformat(),
        "results": len(results),
        "primary": [
            {
                "campaign": r["campaign"],
                "wave": int(r["wave"]),
                "due_on": str(r["due_on"]),
                "window_days": int(r["window_days"]),
                "lift": None if r["lift"] != r["lift"] else round(float(r["lift"]), 5),
                "verdict": str(r["verdict"]),
            }
            for r in primary.to_dict("records")
        ],
    }
