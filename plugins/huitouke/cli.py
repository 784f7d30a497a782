"""The ``huitouke`` command: store migrations, order intake by hand, quarantine review, the demo.

Every command reads ``include/huitouke.yaml`` (or ``$HUITOUKE_CONFIG``) and finds databases
through Airflow Connections (``AIRFLOW_CONN_*`` variables or Airflow's metadata database), like
the DAG does.

A failure is one ``error: ...`` line per problem on stderr and a documented exit status (0 done,
1 problems found, 2 a user's mistake, 3 the store, 4 a bug: :mod:`huitouke.cli_errors`,
docs/cli.md); ``huitouke --debug CMD`` shows the traceback too.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import date
from pathlib import Path

from huitouke.cli_errors import encoding, iso_date, non_negative_int, positive_int, run_reporting
from huitouke.config import load_settings
from huitouke.errors import UserInputError
from huitouke.pii import get_logger, mask_text


def _engine(args: argparse.Namespace):
    from huitouke.store.connection import engine_for, make_engine

    if getattr(args, "url", None):
        return make_engine(args.url)
    conn_id = getattr(args, "conn", None) or load_settings().store.conn_id
    return engine_for(conn_id)


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from huitouke.store.migrate import current_revision, upgrade

    engine = _engine(args)
    before = current_revision(engine)
    after = upgrade(engine)
    where = engine.url.render_as_string(hide_password=True)
    if before == after:
        print(f"CRM store {where} is current (revision {after}).")
    else:
        print(f"CRM store {where} migrated: {before or 'empty'} -> {after}.")
    return 0


def cmd_db_current(args: argparse.Namespace) -> int:
    from huitouke.store.migrate import current_revision, head_revision

    engine = _engine(args)
    current, head = current_revision(engine), head_revision()
    print(f"store revision: {current or 'none (empty)'}; code needs: {head}")
    return 0 if current == head else 1


def cmd_intake(args: argparse.Namespace) -> int:
    from huitouke.dagrun import days_between
    from huitouke.pipeline import day_bounds, intake_orders

    settings = load_settings()
    first = args.from_date
    last = args.to_date or first
    totals = {"rows_read": 0, "inserted": 0, "updated": 0, "unchanged": 0, "quarantined": 0}
    for day in days_between(first, last):
        start, end = day_bounds(day, settings)
        summary = intake_orders(start, end, settings)
        for key in totals:
            totals[key] += summary[key]
        if not args.quiet:
            print(
                f"{day}  rows {summary['rows_read']:>7,}  inserted {summary['inserted']:>6,}  "
                f"updated {summary['updated']:>5,}  unchanged {summary['unchanged']:>6,}  "
                f"quarantined {summary['quarantined']:>4,}"
            )
    print(
        f"intake {first}..{last}: rows {totals['rows_read']:,}, inserted {totals['inserted']:,}, "
        f"updated {totals['updated']:,}, unchanged {totals['unchanged']:,}, quarantined {totals['quarantined']:,}"
    )
    return 0


def cmd_quarantine(args: argparse.Namespace) -> int:
    from sqlalchemy import func, select

    from huitouke.store.schema import quarantine

    engine = _engine(args)
    with engine.connect() as conn:
        where = []
        if args.date:
            where.append(quarantine.c.business_date == args.date)
        if args.reason:
            where.append(quarantine.c.reason == args.reason)
        counts = conn.execute(
            select(quarantine.c.reason, func.count())
            .where(*where)
            .group_by(quarantine.c.reason)
            .order_by(func.count().desc())
        ).all()
        rows = conn.execute(
            select(quarantine).where(*where).order_by(quarantine.c.quarantine_id).limit(args.limit)
        ).all()
    if not counts:
        print("quarantine is empty for this selection")
        return 0
    print("reason                      rows")
    for reason, n in counts:
        print(f"{reason:<26} {n:>6,}")
    print()
    shown = (lambda text: text) if args.raw else mask_text
    for row in rows:
        print(
            f"{row.business_date}  {row.reason:<24} {shown(row.order_id or '-'):<20} "
            f"{shown(row.source_ref or '')}"
        )
        print(f"    {shown(row.detail or '')}")
        if args.raw:
            print(f"    raw: {row.raw}")
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    from huitouke.analyze import analyze_export

    mapping = args.mapping
    if mapping.strip().startswith("{"):
        try:
            mapping = json.loads(mapping)
        except json.JSONDecodeError as exc:
            raise UserInputError(f"--mapping: not a JSON object: {exc.msg} at column {exc.colno}") from None
    out = args.customers_out
    if out is not None and not out.parent.is_dir():
        raise UserInputError(f"--customers-out {out}: the folder {out.parent} does not exist")
    timezone = args.timezone or load_settings().shop.timezone
    result = analyze_export(args.orders_file, mapping, args.as_of, timezone, args.encoding)
    print(result.text())
    if args.customers_out:
        table = result.customers()
        table.to_csv(args.customers_out, index=False)
        print(f"\n{len(table):,} customers written to {args.customers_out}")
    return 0


def cmd_segments_on(args: argparse.Namespace) -> int:
    from huitouke.segments.persist import segments_on

    with _engine(args).connect() as conn:
        frame = segments_on(conn, args.date, args.customer or None)
    if frame.empty:
        print(f"no segment recorded on {args.date} (has the daily run covered that day?)")
        return 1
    if args.customer:
        print(frame.to_string(index=False))
        return 0
    counts = frame.groupby(["lifecycle", "member_tier"]).size().unstack(fill_value=0)
    print(f"Customers by lifecycle and member tier on {args.date} ({len(frame):,} customers)")
    print(counts.to_string())
    return 0


def _shop_info():
    """The playbook's shop, as the renderer needs it (signature, footer, currency, url)."""
    from huitouke.campaigns import load_playbook
    from huitouke.render.daily import shop_info

    return shop_info(load_playbook())


def _stored_customer(customer_id: str, day: date | None) -> dict:
    from huitouke.render.daily import stored_customer_context
    from huitouke.store.connection import engine_for

    return stored_customer_context(engine_for(load_settings().store.conn_id), customer_id, day)


def _approved_sms():
    """The playbook's approved SMS templates with the configured SMS provider, and the SMS
    templates the enabled campaigns send (for `huitouke templates lint`)."""
    from huitouke.campaigns import load_playbook
    from huitouke.render.approved import Approvals

    playbook = load_playbook()
    provider = load_settings().delivery.sms.provider
    return Approvals.of(playbook, provider), playbook.sms_templates_in_use()


def _campaign_problems(root: Path | None, names: list[str] | None) -> list:
    """The DAG's check of the enabled campaigns (templates that exist, a coupon where a template
    uses one, approved SMS templates), as ``templates lint`` problems at the playbook's lines."""
    from huitouke.campaigns import load_playbook
    from huitouke.config import describe_path, read_text
    from huitouke.render.daily import campaign_problems
    from huitouke.segments.settings import playbook_path

    path = playbook_path()
    return campaign_problems(
        load_playbook(path),
        root=root,
        sms_provider=load_settings().delivery.sms.provider,
        where=(describe_path(path), read_text(path)),
        only=names,
    )


def _sms_budgets() -> dict[str, int]:
    from huitouke.campaigns import load_playbook

    return load_playbook().sms_budgets()


def cmd_demo(args: argparse.Namespace) -> int:
    from huitouke.demo import run_demo

    return run_demo(customers=args.customers, days=args.days, seed=args.seed)


def cmd_run_days(args: argparse.Namespace) -> int:
    from huitouke.dagrun import days_between, run_business_days

    states = run_business_days(days_between(args.from_date, args.to_date or args.from_date))
    failed = {d: s for d, s in states.items() if s != "success"}
    for day, state in states.items():
        print(f"huitouke_daily {day}: {state}")
    return 1 if failed else 0


def cmd_backfill(args: argparse.Namespace) -> int:
    import shlex
    import subprocess

    from huitouke.calendar.backfill import backfill_args

    command = backfill_args(
        args.from_date,
        args.to_date or args.from_date,
        load_settings().shop.timezone,
        accept_incomplete=args.accept_incomplete_day,
        dry_run=args.dry_run,
    )
    print(shlex.join(command))
    if args.print_only:
        return 0
    return subprocess.run(command, check=False).returncode


def _store_options(p: argparse.ArgumentParser) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument("--conn", help="Airflow Connection id of the CRM store (default: store.conn_id)")
    group.add_argument("--url", help="a SQLAlchemy URL instead of a Connection")


def _day_range(p: argparse.ArgumentParser, to_help: str | None = None) -> None:
    p.add_argument("--from", dest="from_date", type=iso_date, required=True, metavar="YYYY-MM-DD")
    p.add_argument("--to", dest="to_date", type=iso_date, metavar="YYYY-MM-DD", help=to_help)


def _add_db_commands(sub: argparse._SubParsersAction) -> None:
    db = sub.add_parser("db", help="the CRM store's schema").add_subparsers(dest="db_command", required=True)
    p = db.add_parser("upgrade", help="apply the CRM store's migrations (safe to repeat)")
    _store_options(p)
    p.set_defaults(func=cmd_db_upgrade)
    p = db.add_parser("current", help="show the store's revision; exit 1 when behind")
    _store_options(p)
    p.set_defaults(func=cmd_db_current)


def _add_intake_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("intake", help="run order intake for business days without Airflow's scheduler")
    _day_range(p, to_help="last day, included (default: --from)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the totals")
    p.set_defaults(func=cmd_intake)

    p = sub.add_parser("quarantine", help="list quarantined rows and their reasons")
    _store_options(p)
    p.add_argument("--date", type=iso_date, metavar="YYYY-MM-DD", help="business day")
    p.add_argument("--reason")
    p.add_argument(
        "--limit", type=non_negative_int, default=20, help="rows listed (default 20; 0: the counts only)"
    )
    p.add_argument(
        "--raw",
        action="store_true",
        help="print the raw rows, and phones and e-mails in the details unmasked (personal data)",
    )
    p.set_defaults(func=cmd_quarantine)


def _add_analyze_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("analyze", help="state, segments and KPI tables straight from an order export")
    p.add_argument("orders_file", type=Path, help="a CSV or Parquet order export")
    p.add_argument(
        "--mapping",
        default="canonical",
        help="canonical, taobao, or a JSON object {source header: canonical column}",
    )
    p.add_argument(
        "--as-of",
        type=iso_date,
        metavar="YYYY-MM-DD",
        help="analysis date (default: the day after the last order)",
    )
    p.add_argument("--customers-out", type=Path, metavar="FILE.csv", help="write one row per customer")
    p.add_argument("--timezone", help="timezone of the export's times (default: shop.timezone)")
    p.add_argument("--encoding", type=encoding, help="file encoding (default: UTF-8, then GB18030)")
    p.set_defaults(func=cmd_analyze)


def _add_segments_commands(sub: argparse._SubParsersAction) -> None:
    segments = sub.add_parser("segments", help="segment history").add_subparsers(
        dest="seg_command", required=True
    )
    p = segments.add_parser("on", help="the segments on a business date, from the history")
    _store_options(p)
    p.add_argument("date", type=iso_date, metavar="YYYY-MM-DD")
    p.add_argument("--customer", action="append", help="show these customers (repeatable)")
    p.set_defaults(func=cmd_segments_on)


def _add_run_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="generate the demo shop and run a season of it through Airflow")
    p.add_argument("--customers", type=positive_int, default=20_000)
    p.add_argument(
        "--days",
        type=positive_int,
        default=90,
        help="the season: business days run through Airflow (default 90)",
    )
    p.add_argument("--seed", type=int, default=7)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("run-days", help="run the daily DAG through Airflow (dag.test) for business days")
    _day_range(p)
    p.set_defaults(func=cmd_run_days)

    p = sub.add_parser(
        "backfill",
        help="run business days through Airflow's scheduler, in order, one at a time (never sends)",
        description="Creates an Airflow backfill of huitouke_daily for the business days --from .. --to "
        "(shop time, both included): one run at a time, days that ran before run again. The DAG must be "
        "unpaused for the runs to start. Prints the airflow command it runs.",
    )
    _day_range(p, to_help="last business day (default: --from)")
    p.add_argument(
        "--accept-incomplete-day",
        action="store_true",
        help="load days whose data does not look complete (a shop with no orders on them)",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="ask Airflow which runs it would create, create none"
    )
    p.add_argument("--print-only", action="store_true", help="print the airflow command, run nothing")
    p.set_defaults(func=cmd_backfill)


def build_parser() -> argparse.ArgumentParser:
    """The ``huitouke`` command and its subcommands, one group at a time (the template and
    evaluation and delivery commands come from their stages: render.cli, evaluate.cli, deliver.cli)."""
    from huitouke.deliver.cli import add_parser as add_delivery_commands
    from huitouke.evaluate.cli import add_parser as add_evaluate_command
    from huitouke.gateway.cli import add_parser as add_gateway_command
    from huitouke.render.cli import add_templates_commands

    parser = argparse.ArgumentParser(prog="huitouke", description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    parser.add_argument(
        "--debug",
        action="store_true",
        help="on a failure, print the traceback too (it may show personal data)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_db_commands(sub)
    _add_intake_commands(sub)
    _add_analyze_command(sub)
    _add_segments_commands(sub)
    add_templates_commands(
        sub,
        shop_loader=_shop_info,
        budgets_loader=_sms_budgets,
        customer_loader=_stored_customer,
        approvals_loader=_approved_sms,
        campaigns_loader=_campaign_problems,
    )
    add_evaluate_command(sub)
    add_delivery_commands(sub, _store_options, _engine)
    add_gateway_command(sub)
    _add_run_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; a failure is one ``error:`` line per problem and an exit status
    (:mod:`huitouke.cli_errors`). ``--debug`` may be written anywhere on the line."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--debug" in argv:
        argv = ["--debug", *(a for a in argv if a != "--debug")]
    args = build_parser().parse_args(argv)
    level = logging.INFO if args.verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    for name in ("huitouke", "alembic"):
        get_logger(name).setLevel(level)
    return run_reporting(args.func, args, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
