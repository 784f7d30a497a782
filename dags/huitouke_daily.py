"""
### huitouke daily run (回头客)

One run per business day — a calendar day in the shop's timezone (`shop.timezone` in
`include/huitouke.yaml`, Asia/Shanghai by default). The run's data interval is that day,
[00:00, next 00:00) shop time; every task works on that interval only, so re-running or
backfilling a day is safe.

**Stages** (each one `huitouke/<stage>/daily.py: run_day`, called through `huitouke.pipeline`)

0. `check_crm_schema` — the CRM store (Connection `crm_db`) must be at the code's schema
   revision; if not, run `huitouke db upgrade --conn crm_db`.
   `open_business_day` — the calendar: the day runs only when the day before it completed (or it
   is the store's first day; a completed day may run again). While the day before is still
   running it waits (rescheduled, holding no worker slot). A day after a gap fails at once and
   names the missing days and the command that runs them: `huitouke backfill --from D --to D`.
1. `intake_orders` — extracts the day's orders from the configured source (SQL database,
   folder of CSV/Parquet exports, or a paginated HTTP API), validates them, upserts them by
   order id. Bad rows go to the `quarantine` table with a reason; refunds and cancellations only
   change the stored order's status. The log ends with rows read / inserted / updated /
   quarantined by reason. A day whose data does not look complete (no order, far fewer than the
   trailing median, the day's export missing, the source's latest update too early) stops here
   before anything is written; a shop that really had no orders runs it with the param
   `accept_incomplete_day`.
2. `update_segments` — folds the day's new and changed orders into each customer's state
   (first and last order, paid orders, AOV, main category group, acquisition source), then
   classifies every customer: lifecycle (new, one-time, repeat, loyal, at-risk, churned), RFM
   scores, member tier, value tier, low-value acquisition flag. Segment changes are kept as
   validity ranges in `segment_history`; the log ends with the day's KPI tables (churn rate,
   repeat rate, segment sizes, the value-tier table, lifecycle transitions). Rules:
   the `segments:` section of `include/playbook.yaml`. One mapped task per customer shard
   (`scale.shards`, named "shard 1/4"); with one shard it does all of the above in one
   transaction. With more, each shard folds its customers' orders into their state, and
   `reduce_segments` then classifies all customers (the RFM quintiles are the whole shop's),
   records the history and the KPIs: the same result for any shard count.
3. `lint_templates` — compiles every template the enabled campaigns use (the checks of
   `huitouke templates lint`); a broken one is logged here and fails its campaign in stage 4.
   `plan_shard` — one mapped task per customer shard (`scale.shards`, named `shard i/n`): what
   its customers decide alone (entries with the arm drawn at entry, waves due, exits, reachable
   channels, member-tier caps), staged in the store. `plan_campaigns` — the reduce: marks the
   coupons the day's orders redeemed, then decides the day once over every shard's candidates
   (entry limits, priorities, the daily global cap; suppressions recorded with their reason),
   issues the coupons and stores the plan, the same for any shard count. The log shows the table
   per campaign. A day already planned keeps its stored plan.
4. `render_messages` — one mapped task per campaign and customer shard (`scale.shards`; named
   after the campaign, plus `shard 2/3` when there are several): renders the treated waves of the
   shard's customers with the campaign's templates into the `outbox` (status `queued`). A broken template fails
   that campaign only, before anything is queued; fix the template and clear the task. Messages
   already queued are never queued twice.
5. `wait_for_send_window` — outside the playbook's `send_window` (shop time) it defers on the
   triggerer until the window opens (no worker slot held). `deliver_messages` — one mapped task
   per channel (sms, email, call) and customer shard, named after them: claims its shard's queued
   messages in batches and sends them through the providers of `delivery:` (an SMS webhook,
   Aliyun or Twilio; e-mail over SMTP), each Connection-configured; checks opt-outs, holdouts,
   caps and addresses again at send time; retries what certainly did not leave and never resends
   a message whose fate is unknown; reads receipts and replies (`T`, `退订`, `STOP`: opt-outs at
   once; shard 0 of each channel); writes the day's call list (shard 0). Backfills and runs of a day older than yesterday never send
   (their rows end `stale`); nothing of a day the calendar or intake stopped is sent. The log
   shows sent / failed / suppressed / unknown per campaign and channel (docs/delivery.md);
   `summarize_delivery` logs the same table for the whole day, every channel and shard summed.
6. `evaluate_campaigns` — each campaign wave whose evaluation windows (2, 10 and 30 days by
   default, one primary) matured today: the treated arm against the holdout of the same wave
   (intention to treat; the sent-only view beside it once delivery reports), response and
   natural repurchase rates, lift with its 95% interval and p-value, revenue, cost, incremental
   and naive ROI, minimum detectable effect and a plain verdict; breakdowns, curves and what
   responders bought. Stored once per wave, window and view; the log shows the table.
   `close_business_day` — the day is completed: the next one may run.

**Which day a run covers.** A run covers its data interval: one business day, [00:00, next
00:00) shop time. The scheduler starts the run for day D just after D ends. A manual run
("Trigger DAG") covers the last *complete* day before its logical date — triggering "at
2025-12-13 08:00" runs business day 2025-12-12 (Airflow's rule for interval timetables). To run
one given day, or a range of days, use `huitouke backfill --from D --to D` (one run at a time,
in date order; backfills never send).

**Order.** Runs are processed one at a time in date order; the calendar refuses a day whose
predecessor never completed. Every task that writes the store takes a slot of the pool
`huitouke_store` (`store.pool`): one slot for the embedded SQLite store, so its writers never
collide; more for PostgreSQL. Create it once: `airflow pools set huitouke_store 1 "huitouke store
writers"`.
**Operations** (docs/operations.md): params `dry_run` (plan and render, send nothing: the
delivery tasks skip, the messages stay queued) and `campaigns` (render and send only these); a
failed task, a day's delivery failing above `operations.alerts.max_failed_share` and missed
deadlines (run finished, sending started) alert through `operations.alerts`; every task has an
execution timeout; `huitouke deliver pause --campaign X` holds one campaign's sending.
Configuration: `include/huitouke.yaml`; docs: `README.md` and `docs/`.
"""

from datetime import timedelta

import pendulum
from airflow.sdk import CronDataIntervalTimetable, Param, PokeReturnValue, dag, get_current_context, task

from huitouke.config import load_settings
from huitouke.deliver.window import SendWindowSensor
from huitouke.ops.alerts import TaskFailureNotifier
from huitouke.ops.deadlines import deadline_alerts

SETTINGS = load_settings()
SHOP_TZ = pendulum.timezone(SETTINGS.shop.timezone)
START = SETTINGS.schedule.start_date
POOL = SETTINGS.store.pool
OPS = SETTINGS.operations
SEND_POOL = OPS.send_pool or POOL
DELIVER_TIMEOUT = timedelta(minutes=OPS.timeouts.deliver_minutes)
SHARDS = list(range(SETTINGS.scale.shards))  # customer shards (huitouke.shards), one mapped task each


# ------------------------------------------------------------------------ the tasks, one per step
# Each is one line into huitouke.pipeline (imported inside the task: nothing heavy at parse time).


@task
def check_crm_schema(dag_run=None) -> str:
    """Stage 0: refuse to write into a CRM store whose schema lags behind the code (or to run
    a simulated clock anywhere but in the demo's store)."""
    from huitouke.pipeline import check_crm_schema

    return check_crm_schema(dag_run.conf)


@task.sensor(pool=POOL, mode="reschedule", poke_interval=60, timeout=6 * 3600)
def open_business_day(data_interval_start=None, dag_run=None) -> PokeReturnValue:
    """Stage 0, the calendar: the day before must have completed; waits while it runs."""
    from huitouke.pipeline import open_business_day

    opened = open_business_day(data_interval_start, dag_run.run_id, dag_run.run_type)
    return PokeReturnValue(is_done=opened is not None, xcom_value=opened)


@task(pool=POOL)
def intake_orders(data_interval_start=None, data_interval_end=None, params=None) -> dict:
    """Stage 1: the business day's orders, validated and upserted; bad rows quarantined."""
    from huitouke.pipeline import intake_orders

    accept = bool((params or {}).get("accept_incomplete_day"))
    return intake_orders(data_interval_start, data_interval_end, accept_incomplete=accept)


@task(pool=POOL, map_index_template="{{ shard_label }}")
def update_segments(shard: int, shard_count: int, data_interval_start=None) -> dict:
    """Stage 2, one customer shard: its customers' state from their orders (one shard: the
    whole stage, segments, history and KPIs included)."""
    from huitouke.pipeline import update_segment_shard
    from huitouke.shards import Shard

    get_current_context()["shard_label"] = Shard(shard, shard_count).label()
    return update_segment_shard(data_interval_start, shard, shard_count)


@task(pool=POOL)
def reduce_segments(shard_count: int, data_interval_start=None) -> dict:
    """Stage 2 after every shard: all customers classified, segment history, the day's KPIs."""
    from huitouke.pipeline import reduce_segments

    return reduce_segments(data_interval_start, shard_count)


@task
def lint_templates() -> dict:
    """Stage 3, before planning: every template of the enabled campaigns compiles, or is reported."""
    from huitouke.pipeline import lint_templates

    return lint_templates()


@task(pool=POOL, map_index_template="{{ shard_label }}")
def plan_shard(shard: int, shard_count: int, data_interval_start=None) -> dict:
    """Stage 3, one customer shard: what its customers decide alone (entries, waves due,
    exits, member caps), staged for the reduce."""
    from huitouke.pipeline import plan_shard
    from huitouke.shards import Shard

    get_current_context()["shard_label"] = Shard(shard, shard_count).label()
    return plan_shard(data_interval_start, shard, shard_count)


@task(pool=POOL)
def plan_campaigns(shard_plans: list, data_interval_start=None) -> list:
    """Stage 3, the reduce: the day's campaign plan over every shard's candidates (entry
    limits, priorities, the daily global cap, coupons), stored once."""
    from huitouke.pipeline import plan_campaigns

    return plan_campaigns(data_interval_start, list(shard_plans))


@task(pool=POOL, map_index_template="{{ campaign_shard }}", retries=1)
def render_messages(
    campaign: str, shard: int, shard_count: int, data_interval_start=None, dag_run=None
) -> dict:
    """Stage 4, one campaign and customer shard: its treated waves rendered into the outbox
    as queued messages."""
    from huitouke.pipeline import render_messages
    from huitouke.shards import Shard

    part = Shard(shard, shard_count)
    get_current_context()["campaign_shard"] = part.named(campaign)
    return render_messages(data_interval_start, campaign, conf=dag_run.conf, shard=part)


@task(
    pool=SEND_POOL,
    retries=3,
    map_index_template="{{ channel_shard }}",
    execution_timeout=DELIVER_TIMEOUT,
    max_active_tis_per_dagrun=OPS.send_tasks_per_run,
)
def deliver_messages(
    channel: str, shard: int, shard_count: int, data_interval_start=None, dag_run=None, ti=None
) -> dict:
    """Stage 5, one channel and customer shard: its queued messages out through its provider
    inside the send window (calls: the day's call list); receipts, replies and opt-outs back
    (shard 0). Backfills and late runs never send."""
    from huitouke.pipeline import deliver_messages
    from huitouke.shards import Shard

    part = Shard(shard, shard_count)
    label = part.named(channel)
    get_current_context()["channel_shard"] = label
    owner = f"{dag_run.run_id}/{ti.task_id}[{label}]/{ti.try_number}"
    return deliver_messages(
        data_interval_start, dag_run.run_type, owner, channel, conf=dag_run.conf, shard=part
    )


@task(trigger_rule="all_done")
def summarize_delivery(results, data_interval_start=None) -> dict:
    """Stage 5, after every channel and shard: the day's delivery table, once."""
    from huitouke.pipeline import summarize_delivery

    return summarize_delivery(data_interval_start, list(results or []))


@task(pool=POOL)
def evaluate_campaigns(data_interval_start=None) -> dict:
    """Stage 6: matured campaign waves, treated against holdout, per window; stored once."""
    from huitouke.pipeline import evaluate_campaigns

    return evaluate_campaigns(data_interval_start)


@task(pool=POOL)
def close_business_day(data_interval_start=None) -> dict:
    """The calendar: the day's stateful stages are done, the next day may run."""
    from huitouke.pipeline import close_business_day

    return close_business_day(data_interval_start)


@dag(
    dag_id="huitouke_daily",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone=SHOP_TZ),
    start_date=pendulum.datetime(START.year, START.month, START.day, tz=SHOP_TZ),
    catchup=SETTINGS.schedule.catchup,
    max_active_runs=1,
    default_args={
        "owner": "huitouke",
        "retries": 2,
        "retry_delay": timedelta(minutes=5),
        "retry_exponential_backoff": True,
        "execution_timeout": timedelta(minutes=OPS.timeouts.task_minutes),
        "on_failure_callback": TaskFailureNotifier(),
    },
    deadline=deadline_alerts(OPS.deadlines),
    tags=["huitouke", "crm", "daily"],
    params={
        "accept_incomplete_day": Param(
            False,
            type="boolean",
            description="Load the day even if its data does not look complete (a shop with no orders that day).",
        ),
        "dry_run": Param(
            False,
            type="boolean",
            description="Plan and render the day, send nothing: the messages stay queued (docs/operations.md).",
        ),
        "campaigns": Param(
            [],
            type="array",
            items={"type": "string", "minLength": 1},
            uniqueItems=True,
            description="Render and send only these campaigns of the playbook today (empty: all).",
        ),
    },
    doc_md=__doc__,
)
def huitouke_daily():
    """The tasks wired in stage order (the docs: this module's docstring)."""
    wait_for_send_window = SendWindowSensor(
        task_id="wait_for_send_window",
        trigger_rule="all_done",  # a broken campaign's render does not hold back the others'
        timeout=36 * 3600,
        execution_timeout=None,  # deferred, it holds no worker; its own timeout bounds the wait
        doc_md="Stage 5: outside the playbook's send window, wait deferred on the triggerer until it opens.",
    )
    # Every sharded step gets the shard count the run was parsed with (partial), so all of a run's
    # tasks agree on it.
    shard_plans = plan_shard.partial(shard_count=len(SHARDS)).expand(shard=SHARDS)
    campaigns = plan_campaigns(shard_plans)
    (
        check_crm_schema()
        >> open_business_day()
        >> intake_orders()
        >> update_segments.partial(shard_count=len(SHARDS)).expand(shard=SHARDS)
        >> reduce_segments(len(SHARDS))
        >> lint_templates()
        >> shard_plans
    )
    (
        render_messages.partial(shard_count=len(SHARDS)).expand(campaign=campaigns, shard=SHARDS)
        >> wait_for_send_window
    )
    delivered = deliver_messages.partial(shard_count=len(SHARDS)).expand(
        channel=wait_for_send_window.output, shard=SHARDS
    )
    summarize_delivery(delivered)
    campaigns >> evaluate_campaigns() >> close_business_day()


huitouke_daily_dag = huitouke_daily()
