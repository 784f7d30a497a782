"""The data-interval adapter: what each task of the daily DAG calls, in one line.

Each function takes Airflow's data interval, turns it into the business day
(:class:`~huitouke.stage.DayInterval`), the configured Connections and files into the stage's
arguments, calls the stage's ``<stage>/daily.py: run_day``, logs the result's table and returns
its small JSON-able summary (which Airflow keeps as XCom). Nothing here needs a running Airflow,
except that Connections are looked up through Airflow's secrets backends (environment variables
included).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import date, datetime
from typing import Any

from huitouke.config import Settings, load_settings
from huitouke.pii import get_logger
from huitouke.shards import Shard
from huitouke.stage import DayInterval, DayResult

log = get_logger(__name__)


def business_date_of(start: datetime, settings: Settings) -> date:
    """The shop-local calendar day a data interval starting at ``start`` covers."""
    return start.astimezone(settings.tz).date()


def day_bounds(day: date, settings: Settings) -> tuple[datetime, datetime]:
    """The half-open interval [00:00, next 00:00) of a business day in the shop's timezone."""
    interval = DayInterval.of_day(day, settings.tz)
    return interval.start, interval.end


def _logged(result: DayResult) -> dict[str, Any]:
    """The result's table to the task log, its summary to the caller (the XCom)."""
    log.log(getattr(result, "log_level", logging.INFO), "\n%s", result.as_text())
    return result.as_dict()


def _engine(settings: Settings):
    from huitouke.store.connection import engine_for

    return engine_for(settings.store.conn_id)


def check_crm_schema(conf: Mapping[str, Any] | None = None, settings: Settings | None = None) -> str:
    """Stage 0: fail unless the CRM store is at the schema revision this code needs, and, for a
    run whose conf asks for a simulated clock, unless the store is the demo's (huitouke.clock)."""
    from huitouke.store.migrate import ensure_current

    settings = settings or load_settings()
    revision = ensure_current(_engine(settings), settings.store.conn_id)
    log.info("CRM store %s is current (revision %s)", settings.store.conn_id, revision)
    clock = run_clock(conf, settings)
    if clock.simulated:
        log.info(
            "simulated clock (the demo's season): now is %s", clock.now().astimezone(settings.tz).isoformat()
        )
    options = checked_run_options(conf)
    if options.dry_run:
        log.info("dry run: the day is planned and rendered, nothing is sent (its messages stay queued)")
    if options.campaigns is not None:
        log.info("campaigns param: only %s are rendered and sent", ", ".join(options.campaigns))
    return revision


def checked_run_options(conf: Mapping[str, Any] | None):
    """The run's params (:func:`huitouke.ops.params.run_options`); a bad one fails the task at
    once, without retries, naming the value (and, for a campaign, the playbook's campaigns)."""
    from huitouke.campaigns.playbook import load_playbook
    from huitouke.ops.params import RunParamError, run_options

    try:
        return run_options(conf, load_playbook().campaigns)
    except RunParamError as exc:
        from airflow.sdk.exceptions import AirflowFailException

        log.error("%s", exc)
        raise AirflowFailException(str(exc)) from None


def run_clock(conf: Mapping[str, Any] | None, settings: Settings):
    """The run's clock (:func:`huitouke.clock.clock_for`); a refused one fails the task at once."""
    from huitouke.clock import ClockRefused, clock_for

    try:
        with _engine(settings).connect() as conn:
            return clock_for(conn, conf, settings.store.conn_id)
    except ClockRefused as exc:
        from airflow.sdk.exceptions import AirflowFailException

        log.error("%s", exc)
        raise AirflowFailException(str(exc)) from exc


def open_business_day(
    start: datetime, run_id: str | None = None, run_type: Any = None, settings: Settings | None = None
) -> dict[str, Any] | None:
    """Before the stateful stages: :func:`huitouke.calendar.daily.open_day`. Returns the day's
    summary, or None while the day before is still running (the task waits and asks again). A day
    after a gap fails at once, without retries, naming the missing days and the command to run them."""
    from huitouke.calendar.daily import DayRefused, DayWaits, RunIdentity, open_day

    settings = settings or load_settings()
    day = business_date_of(start, settings)
    run = RunIdentity(run_id, None if run_type is None else str(getattr(run_type, "value", run_type)))
    try:
        return _logged(open_day(_engine(settings), day, run))
    except DayWaits as exc:
        log.info("%s", exc)
        return None
    except DayRefused as exc:
        from airflow.sdk.exceptions import AirflowFailException

        log.error("%s", exc)  # the log's own line, whatever Airflow shows of the exception
        raise AirflowFailException(str(exc)) from exc


def close_business_day(start: datetime, settings: Settings | None = None) -> dict[str, Any]:
    """After the stateful stages: :func:`huitouke.calendar.daily.close_day` (the next day may run)."""
    from huitouke.calendar.daily import close_day

    settings = settings or load_settings()
    return _logged(close_day(_engine(settings), business_date_of(start, settings)))


def freshness_rules(settings: Settings):
    """The configured floor on a complete day (``intake.freshness``)."""
    from huitouke.intake.freshness import FreshnessRules

    return FreshnessRules(**settings.intake.freshness.model_dump())


def intake_orders(
    start: datetime, end: datetime, settings: Settings | None = None, accept_incomplete: bool = False
) -> dict[str, Any]:
    """Stage 1 for the data interval [start, end): :func:`huitouke.intake.daily.run_day`, which
        stops a day that does not look complete before writing anything (unless ``accept_incomplete``); the
    calendar keeps the day open with the reason, which the next day's wait repeats."""
    from huitouke.intake.daily import run_day
    from huitouke.intake.freshness import StaleDay
    from huitouke.intake.sources import build_source

    settings = settings or load_settings()
    interval = DayInterval.of_interval(start, end, settings.tz)
    source = build_source(settings)
    engine = _engine(settings)
    try:
        result = run_day(
            engine,
            interval,
            source,
            freshness_rules(settings),
            accept_incomplete,
            settings.intake.plausibility,
        )
    except StaleDay as exc:
        from huitouke.calendar.daily import stop_day

        log.error("%s", exc)
        stop_day(engine, interval.day, str(exc))
        raise
    return _logged(result)


def update_segments(start: datetime, settings: Settings | None = None) -> dict[str, Any]:
    """Stage 2 for the business day starting at ``start``, every customer shard then the reduce:
    :func:`huitouke.segments.daily.run_day` (the demo's and the tests' whole day; the DAG maps the shards)."""
    from huitouke.segments.daily import run_day
    from huitouke.segments.settings import load_segment_settings

    settings = settings or load_settings()
    day = business_date_of(start, settings)
    return _logged(run_day(_engine(settings), day, load_segment_settings(), settings.scale.shards))


def update_segment_shard(
    start: datetime, index: int, count: int | None = None, settings: Settings | None = None
) -> dict[str, Any]:
    """Stage 2, shard ``index`` of ``count`` (default ``scale.shards``; the DAG passes the count it
    was parsed with, so a run's tasks agree): :func:`huitouke.segments.daily.run_shard`."""
    from huitouke.segments.daily import run_shard
    from huitouke.segments.settings import load_segment_settings
    from huitouke.shards import Shard

    settings = settings or load_settings()
    day = business_date_of(start, settings)
    shard = Shard(index, count or settings.scale.shards)
    return _logged(run_shard(_engine(settings), day, load_segment_settings(), shard))


def reduce_segments(
    start: datetime, count: int | None = None, settings: Settings | None = None
) -> dict[str, Any]:
    """Stage 2 after every one of ``count`` shards (default ``scale.shards``): classification,
    history and KPIs over all customers (:func:`huitouke.segments.daily.reduce_day`)."""
    from huitouke.segments.daily import reduce_day
    from huitouke.segments.settings import load_segment_settings

    settings = settings or load_settings()
    day = business_date_of(start, settings)
    return _logged(
        reduce_day(_engine(settings), day, load_segment_settings(), count or settings.scale.shards)
    )


def lint_templates(settings: Settings | None = None) -> dict[str, str]:
    """Stage 3, before planning: :func:`huitouke.render.daily.check_templates`. Never fails;
    returns campaign -> error for the broken ones."""
    from huitouke.campaigns.playbook import load_playbook
    from huitouke.render.daily import check_templates

    settings = settings or load_settings()
    return _logged(check_templates(load_playbook(), sms_provider=settings.delivery.sms.provider))


def plan_shard(start: datetime, shard: int, shards: int, settings: Settings | None = None) -> dict[str, Any]:
    """Stage 3, one customer shard: :func:`huitouke.campaigns.daily.plan_shard` (its candidates
    staged for :func:`plan_campaigns`). The DAG maps it over the shards of ``scale.shards``."""
    from huitouke.campaigns.daily import plan_shard
    from huitouke.campaigns.playbook import load_playbook
    from huitouke.shards import Shard

    settings = settings or load_settings()
    day = business_date_of(start, settings)
    return _logged(plan_shard(_engine(settings), day, load_playbook(), Shard(shard, shards)))


def plan_campaigns(
    start: datetime, shard_plans: Iterable[Mapping[str, Any]] | None = None, settings: Settings | None = None
) -> list[str]:
    """Stage 3, the reduce: :func:`huitouke.campaigns.daily.reduce_day` over the candidates the
    shards staged (``shard_plans``: the shard tasks' results, which say how many shards there
    are; none: ``scale.shards``). Returns the campaigns to render (what the render tasks map over)."""
    from huitouke.campaigns.daily import reduce_day
    from huitouke.campaigns.playbook import load_playbook

    settings = settings or load_settings()
    counts = {int(p["shards"]) for p in shard_plans or ()}
    if len(counts) > 1:
        raise ValueError(f"the shard tasks disagree on the number of shards: {sorted(counts)}")
    shards = counts.pop() if counts else settings.scale.shards
    result = reduce_day(_engine(settings), business_date_of(start, settings), load_playbook(), shards)
    log.info("\n%s", result.as_text())
    return result.campaigns()


def render_messages(
    start: datetime,
    campaign: str,
    settings: Settings | None = None,
    conf: Mapping[str, Any] | None = None,
    shard: Shard | None = None,
) -> dict[str, Any]:
    """Stage 4, one campaign (and one customer shard: the DAG maps campaign x shard):
    :func:`huitouke.render.daily.run_day`.

    A broken template fails this campaign only, before anything of it is queued, without retries
    (a retry cannot fix a template): fix it, then clear this task to queue the day's messages.
    A campaign the run's ``campaigns`` param leaves out is skipped (nothing rendered).
    """
    from huitouke.campaigns.playbook import load_playbook
    from huitouke.render.daily import run_day
    from huitouke.render.environment import TemplateError

    if not checked_run_options(conf).selects(campaign):
        from airflow.sdk.exceptions import AirflowSkipException

        raise AirflowSkipException(
            f"campaign {campaign} is not among the run's campaigns param: not rendered"
        )
    settings = settings or load_settings()
    day = business_date_of(start, settings)
    try:
        result = run_day(
            _engine(settings),
            day,
            campaign,
            load_playbook(),
            sms_provider=settings.delivery.sms.provider,
            shard=shard,
        )
    except TemplateError as exc:
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException(f"campaign {campaign}: {exc}") from exc
    return _logged(result)


def _alert_on_failures(summary: Mapping[str, Any], settings: Settings) -> None:
    """The day's alert for each channel whose delivery failed above
    ``operations.alerts.max_failed_share`` (from the summary's table: every shard's, summed). A
    notifier that fails is logged: the delivery itself is done."""
    from huitouke.ops.alerts import delivery_failure_alert, send_alert

    alerts = settings.operations.alerts
    by_channel: dict[str, dict[str, int]] = {}
    for _, channel, outcome, _, n in summary.get("table") or ():
        outcomes = by_channel.setdefault(str(channel), {})
        outcomes[str(outcome)] = outcomes.get(str(outcome), 0) + int(n)
    for channel, outcomes in sorted(by_channel.items()):
        of_channel = {"business_date": summary.get("business_date"), "outcomes": outcomes}
        alert = delivery_failure_alert(of_channel, channel, alerts.max_failed_share, alerts.min_attempted)
        if alert is None:
            continue
        try:
            send_alert(alert, settings)
        except Exception as exc:  # noqa: BLE001 - an alert must not fail the delivery it reports on
            log.error("sending the delivery alert failed: %s", type(exc).__name__)


def summarize_delivery(
    start: datetime, results: list[dict[str, Any]] | None, settings: Settings | None = None
) -> dict[str, Any]:
    """Stage 5's reduce step: the day's delivery table over every channel and shard
    (:func:`huitouke.deliver.daily.summarize_day`), logged once for the whole day."""
    from huitouke.deliver import wiring
    from huitouke.deliver.daily import summarize_day

    settings = settings or load_settings()
    day = business_date_of(start, settings)
    got = [r for r in (results or []) if isinstance(r, dict)]
    rules = wiring.delivery_rules(settings.delivery)
    summary = _logged(summarize_day(_engine(settings), day, rules, got))
    _alert_on_failures(summary, settings)  # on the whole day's figures, once
    return summary


def evaluate_campaigns(start: datetime, settings: Settings | None = None) -> dict[str, Any]:
    """Stage 6: :func:`huitouke.evaluate.daily.run_day`."""
    from huitouke.campaigns.playbook import load_playbook
    from huitouke.evaluate.daily import run_day

    settings = settings or load_settings()
    day = business_date_of(start, settings)
    return _logged(run_day(_engine(settings), day, load_playbook(), settings.shop.timezone))


def deliver_messages(
    start: datetime,
    run_type: str | None,
    owner: str,
    channel: str,
    settings: Settings | None = None,
    conf: Mapping[str, Any] | None = None,
    shard: Shard | None = None,
) -> dict[str, Any]:
    """Stage 5: :func:`huitouke.deliver.daily.run_day`. Nothing of a day whose stateful stages did
    not run (the calendar or the freshness guard stopped it) is ever sent. A provider that paused
    sending (out of balance, credentials refused) fails the task after the day's table is logged,
    so it is retried and seen. One call per channel (sms, email, call) and customer shard: the DAG
    maps it; shard 0 of each channel alone reads its provider's replies and receipts and writes the
    call list."""
    from huitouke.calendar.persist import day_computed
    from huitouke.campaigns.playbook import load_playbook
    from huitouke.deliver import wiring
    from huitouke.deliver.daily import DeliveryJob, run_day

    settings = settings or load_settings()
    day = business_date_of(start, settings)
    engine = _engine(settings)
    with engine.connect() as conn:
        computed = day_computed(conn, day)
    if not computed:
        from airflow.sdk.exceptions import AirflowSkipException

        raise AirflowSkipException(f"business day {day} did not run its stateful stages: nothing is sent")
    options = checked_run_options(conf)
    if options.dry_run:
        from airflow.sdk.exceptions import AirflowSkipException

        message = f"dry run: nothing sent for business day {day} on {channel}; its messages stay queued"
        log.info("%s (the next real run sends them, or they expire after delivery.max_age_days)", message)
        raise AirflowSkipException(message)
    playbook, delivery = load_playbook(), settings.delivery
    job = DeliveryJob(
        day=day,
        run_type=run_type,
        owner=owner,
        providers=wiring.providers_from(delivery, only=channel),
        channels=(channel,),
        shard=shard or Shard.whole(),
        message_of=wiring.message_factory(
            wiring.unsubscribe_secret(delivery), delivery.unsubscribe_url, playbook.shop.name
        ),
        rules=wiring.delivery_rules(delivery),
        window=(playbook.shop.send_window.start, playbook.shop.send_window.end),
        tz=settings.tz,
        cap_of=wiring.cap_of(playbook),
        call_list_folder=wiring.call_list_folder(settings),
        clock=run_clock(conf, settings).utcnow,
        campaigns=options.campaigns,
    )
    result = run_day(engine, job)
    summary = _logged(result)
    if result.tally.paused:
        raise RuntimeError(f"sending paused: {result.tally.paused}; the rest stays queued")
    return summary
