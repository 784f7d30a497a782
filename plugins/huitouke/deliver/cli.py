"""The delivery commands of ``huitouke``: what a data engineer runs around the deliver stage.

    huitouke optouts import FILE [--channel sms|email|all] [--source NAME]
    huitouke calls import FILE
    huitouke calls list [--day YYYY-MM-DD]
    huitouke deliver status [--day YYYY-MM-DD] [--days N]
    huitouke deliver pause --campaign NAME [--note TEXT]
    huitouke deliver resume --campaign NAME
    huitouke deliver pauses

Register them with :func:`add_parser`. Their output counts and never shows a phone number, an
e-mail address or a name (the files they read hold them; row errors are masked by the reader).
A mistake of the user's (a file that cannot be read, a bad option) is one line on stderr and exit
code 2, a store behind the code exit code 3, through ``huitouke.cli.main`` (:mod:`huitouke.cli_errors`).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from datetime import UTC, date, timedelta
from pathlib import Path
from typing import Any

from huitouke.config import load_settings

__all__ = [
    "add_parser",
    "cmd_calls_import",
    "cmd_calls_list",
    "cmd_deliver_pause",
    "cmd_deliver_pauses",
    "cmd_deliver_resume",
    "cmd_deliver_status",
    "cmd_optouts_import",
]

StoreOptions = Callable[[argparse.ArgumentParser], None]  # adds --conn / --url
EngineOf = Callable[[argparse.Namespace], Any]  # the CRM store's engine for the parsed arguments

CHANNEL_CHOICES = ("sms", "email", "all")  # huitouke.deliver.optouts.CHANNEL_CHOICES, without pandas


def _utcnow():
    from huitouke.deliver.sender import utcnow

    return utcnow()


def _current_engine(args: argparse.Namespace):
    """The store's engine, checked to be at the code's revision (else the upgrade command)."""
    from huitouke.store.migrate import ensure_current

    engine = args.engine_of(args)
    ensure_current(engine, getattr(args, "conn", None) or load_settings().store.conn_id)
    return engine


def cmd_optouts_import(args: argparse.Namespace) -> int:
    from huitouke.deliver.optouts import import_optouts

    settings = load_settings()
    result = import_optouts(
        _current_engine(args),
        args.file,
        settings.shop.timezone,
        _utcnow(),
        channel=args.channel,
        source=args.source,
    )
    print(json.dumps(result.as_dict(), ensure_ascii=False, indent=2) if args.json else result.as_text())
    return 0


def _call_import_text(path: Path, result: Any) -> str:
    lines = [f"call outcomes {path}"]
    outcomes = ", ".join(f"{k} {n:,}" for k, n in sorted(result.outcomes.items())) or "none"
    lines.append(f"  calls recorded:            {sum(result.outcomes.values()):,} ({outcomes})")
    lines.append(f"  opt-outs recorded (new):   {result.opt_outs:,}")
    lines.append(f"  not a listed call:         {result.not_listed:,} (unknown call_id, or recorded before)")
    lines.append(f"  row errors:                {len(result.errors):,}")
    lines += [f"    {e}" for e in result.errors[:20]]
    if len(result.errors) > 20:
        lines.append(f"    … and {len(result.errors) - 20:,} more")
    return "\n".join(lines)


def cmd_calls_import(args: argparse.Namespace) -> int:
    from huitouke.deliver.calls import import_call_outcomes

    settings = load_settings()
    result = import_call_outcomes(_current_engine(args), args.file, settings.shop.timezone, _utcnow())
    print(_call_import_text(args.file, result))
    return 0


def cmd_calls_list(args: argparse.Namespace) -> int:
    from huitouke.deliver import calls, persist, wiring
    from huitouke.deliver.policy import oldest_sendable, run_verdict

    settings = load_settings()
    today = _utcnow().replace(tzinfo=UTC).astimezone(settings.tz).date()
    day = args.day or today - timedelta(days=1)
    verdict = run_verdict("manual", day, today)
    if not verdict.sends:
        raise ValueError(f"{verdict.reason}; no call list written")
    rules = wiring.delivery_rules(settings.delivery)
    folder = Path(args.folder) if args.folder else wiring.call_list_folder(settings)
    selection = persist.Selection(("call",), oldest_sendable(day, rules), day)
    from huitouke.campaigns.playbook import load_playbook

    checks = calls.CallChecks(wiring.cap_of(load_playbook()), settings.tz, _utcnow())
    path, listed = calls.list_calls(_current_engine(args), selection, folder, checks)
    print(f"call list for {day}: {listed:,} calls" + (f" written to {path}" if path else " (none queued)"))
    return 0


def cmd_deliver_status(args: argparse.Namespace) -> int:
    from huitouke.deliver.status import delivery_status, latest_business_day

    engine = _current_engine(args)
    day = args.day or latest_business_day(engine)
    if day is None:
        print("The outbox is empty: nothing has been planned and rendered yet.")
        return 0
    since = day - timedelta(days=args.days - 1)
    print(delivery_status(engine, since, day, load_settings().tz).as_text())
    return 0


def _known_campaign(name: str) -> str:
    from huitouke.campaigns.playbook import load_playbook

    known = list(load_playbook().campaigns)
    if name not in known:
        raise ValueError(f"unknown campaign {name!r}; the playbook's campaigns: {', '.join(known)}")
    return name


def cmd_deliver_pause(args: argparse.Namespace) -> int:
    """Pause one campaign's sending: its messages stay queued from the next claim on."""
    from huitouke.deliver.pauses import pause

    campaign = _known_campaign(args.campaign)
    if pause(_current_engine(args), campaign, _utcnow(), args.note):
        print(
            f"campaign {campaign}: sending paused; its messages stay queued until `huitouke deliver resume`"
        )
    else:
        print(f"campaign {campaign} was paused already")
    return 0


def cmd_deliver_resume(args: argparse.Namespace) -> int:
    """Resume a paused campaign's sending (the next claim or run sends its queued messages)."""
    from huitouke.deliver.pauses import resume

    if resume(_current_engine(args), args.campaign):
        print(f"campaign {args.campaign}: sending resumed; the next run sends its queued messages")
    else:
        print(f"campaign {args.campaign} was not paused")
    return 0


def cmd_deliver_pauses(args: argparse.Namespace) -> int:
    """The paused campaigns."""
    from huitouke.deliver.pauses import paused

    with _current_engine(args).connect() as conn:
        frame = paused(conn)
    print("No campaign is paused." if frame.empty else frame.fillna("").to_string(index=False))
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number of days, got {text}")
    return value


def _store(p: argparse.ArgumentParser, store_options: StoreOptions, engine_of: EngineOf) -> None:
    store_options(p)
    p.set_defaults(engine_of=engine_of)


def _add_optouts(sub: argparse._SubParsersAction, store_options: StoreOptions, engine_of: EngineOf) -> None:
    optouts = sub.add_parser("optouts", help="opt-outs recorded from outside a send").add_subparsers(
        dest="optouts_command", required=True
    )
    p = optouts.add_parser(
        "import",
        help="record an opt-out list exported from an SMS platform (safe to repeat)",
        description="Reads a CSV of phone numbers and/or e-mail addresses (docs/delivery.md, 'Imports'), "
        "matches them to customers and records their opt-outs in one transaction. Prints counts only.",
    )
    p.add_argument("file", type=Path, metavar="FILE.csv")
    p.add_argument(
        "--channel",
        choices=CHANNEL_CHOICES,
        help="record every row as an opt-out of this channel (default: the file's channel column, "
        "else sms for a number and email for an address)",
    )
    p.add_argument("--source", default="import", help="the opt-outs' source label (default: import)")
    p.add_argument("--json", action="store_true", help="print the counts as JSON")
    _store(p, store_options, engine_of)
    p.set_defaults(func=cmd_optouts_import)


def _add_calls(sub: argparse._SubParsersAction, store_options: StoreOptions, engine_of: EngineOf) -> None:
    calls = sub.add_parser("calls", help="phone follow-ups: the call list and its outcomes").add_subparsers(
        dest="calls_command", required=True
    )
    p = calls.add_parser("import", help="record the outcomes the shop's staff wrote in a call list")
    p.add_argument("file", type=Path, metavar="FILE.csv")
    _store(p, store_options, engine_of)
    p.set_defaults(func=cmd_calls_import)
    p = calls.add_parser(
        "list",
        help="write a business day's call list now (what the deliver stage does after sending)",
    )
    p.add_argument(
        "--day", type=date.fromisoformat, metavar="YYYY-MM-DD", help="default: yesterday, shop time"
    )
    p.add_argument("--folder", help="write here instead of delivery.call_list_folder")
    _store(p, store_options, engine_of)
    p.set_defaults(func=cmd_calls_list)


def _add_deliver(sub: argparse._SubParsersAction, store_options: StoreOptions, engine_of: EngineOf) -> None:
    deliver = sub.add_parser("deliver", help="the outbox after a run").add_subparsers(
        dest="deliver_command", required=True
    )
    p = deliver.add_parser("status", help="messages by campaign, channel and status, and why some did not go")
    p.add_argument(
        "--day", type=date.fromisoformat, metavar="YYYY-MM-DD", help="last business day (default: the latest)"
    )
    p.add_argument("--days", type=_positive, default=1, help="business days up to --day (default 1)")
    _store(p, store_options, engine_of)
    p.set_defaults(func=cmd_deliver_status)
    p = deliver.add_parser(
        "pause",
        help="pause one campaign's sending (its messages stay queued; planning and rendering go on)",
    )
    p.add_argument("--campaign", required=True, help="the playbook's name of the campaign")
    p.add_argument("--note", help="why (shown by `huitouke deliver pauses`; no customer data)")
    _store(p, store_options, engine_of)
    p.set_defaults(func=cmd_deliver_pause)
    p = deliver.add_parser("resume", help="resume a paused campaign's sending")
    p.add_argument("--campaign", required=True)
    _store(p, store_options, engine_of)
    p.set_defaults(func=cmd_deliver_resume)
    p = deliver.add_parser("pauses", help="the paused campaigns")
    _store(p, store_options, engine_of)
    p.set_defaults(func=cmd_deliver_pauses)


def add_parser(sub: argparse._SubParsersAction, store_options: StoreOptions, engine_of: EngineOf) -> None:
    """Add ``optouts``, ``calls`` and ``deliver`` to the ``huitouke`` command's sub-parsers;
    ``store_options`` adds the CRM store's options, ``engine_of`` opens it from them."""
    _add_optouts(sub, store_options, engine_of)
    _add_calls(sub, store_options, engine_of)
    _add_deliver(sub, store_options, engine_of)
