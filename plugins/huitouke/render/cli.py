"""The ``huitouke templates`` commands: ``lint``, ``preview`` and ``context``.

Register them with :func:`add_templates_commands` on the main parser's sub-parsers. The shop
(signature, footer), the campaigns' SMS budgets, the approved SMS templates and the campaigns'
own check (the DAG's, :func:`huitouke.render.daily.campaign_problems`) come from optional loaders
given there, which read the playbook; without them the sample shop and the default budget are
used and no campaign is checked.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import date
from pathlib import Path

from huitouke.cli_errors import iso_date, positive_int
from huitouke.render.approved import Approvals
from huitouke.render.catalogue import CHANNELS
from huitouke.render.context import SAMPLE_SHOP, ShopInfo, context_reference_markdown
from huitouke.render.environment import TemplateError
from huitouke.render.lint import LintProblem, lint_templates
from huitouke.render.preview import PreviewOptions, preview_message

__all__ = ["add_templates_commands", "templates_context", "templates_lint", "templates_preview"]

ShopLoader = Callable[[], ShopInfo]
BudgetsLoader = Callable[[], dict[str, int]]
# () -> the playbook's approved SMS templates with the SMS provider, and the SMS templates the
# enabled campaigns send.
ApprovalsLoader = Callable[[], tuple[Approvals, list[str]]]
# (customer id, business date or None) -> context objects of a stored customer; LookupError if unknown.
CustomerLoader = Callable[[str, "date | None"], dict]
# (templates folder or None, the NAMEs or None) -> the DAG's check of the enabled campaigns as lint
# problems (huitouke.render.daily.campaign_problems): a template that does not exist, a coupon
# template in a campaign without a coupon.
CampaignsLoader = Callable[["Path | None", "list[str] | None"], list[LintProblem]]


def _shop(args: argparse.Namespace) -> ShopInfo:
    loader = getattr(args, "shop_loader", None)
    return loader() if loader else SAMPLE_SHOP


def _root(args: argparse.Namespace) -> Path | None:
    return Path(args.root) if getattr(args, "root", None) else None


def templates_lint(args: argparse.Namespace) -> int:
    """Print every problem, the templates' and the enabled campaigns' (the DAG's own check, with a
    ``campaigns_loader``); exit 1 when there is an error (warnings alone exit 0)."""
    budgets_loader = getattr(args, "budgets_loader", None)
    budgets = dict(budgets_loader() if budgets_loader else {})
    if getattr(args, "max_segments", None):
        for name in args.names or []:
            budgets[name] = args.max_segments
    approvals_loader = getattr(args, "approvals_loader", None)
    approvals, sent = approvals_loader() if approvals_loader else (None, [])
    problems = lint_templates(
        args.names or None,
        max_sms_segments=budgets or None,
        shop=_shop(args),
        root=_root(args),
        approvals=approvals,
        sms_sent=sent,
    )
    campaigns_loader = getattr(args, "campaigns_loader", None)
    if campaigns_loader is not None:
        problems += campaigns_loader(_root(args), args.names or None)
    for problem in problems:
        print(problem)
    errors = sum(p.is_error for p in problems)
    warnings = len(problems) - errors
    what = ", ".join(args.names) if args.names else "all templates"
    if errors:
        print(f"\n{errors} error(s), {warnings} warning(s) in {what}", file=sys.stderr)
        return 1
    print(f"{what}: no errors" + (f", {warnings} warning(s)" if warnings else ""))
    return 0


def templates_preview(args: argparse.Namespace) -> int:
    """Render NAME for the sample context (or ``--customer-json``) and print it with its cost."""
    context = None
    if getattr(args, "customer", None):
        loader = getattr(args, "customer_loader", None)
        if loader is None:
            print(
                "error: --customer needs the CRM store (run it as `huitouke templates ...`)", file=sys.stderr
            )
            return 2
        try:
            context = loader(args.customer, args.date)
        except LookupError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    elif args.customer_json:
        context = json.loads(Path(args.customer_json).read_text(encoding="utf-8"))
        if not isinstance(context, dict):
            print(f"error: {args.customer_json}: expected a JSON object", file=sys.stderr)
            return 2
    budgets_loader = getattr(args, "budgets_loader", None)
    budgets = budgets_loader() if budgets_loader else {}
    try:
        text = preview_message(
            args.name,
            PreviewOptions(
                channel=args.channel,
                context=context,
                shop=_shop(args),
                wave=args.wave,
                category=args.category,
                max_segments=budgets.get(args.name.rpartition("/")[2]),
                root=_root(args),
            ),
        )
    except TemplateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(text, end="")
    return 0


def templates_context(args: argparse.Namespace) -> int:
    """Print the documented context: what a template may use."""
    print(context_reference_markdown(), end="")
    return 0


def _add_lint(sub: argparse._SubParsersAction, common: dict) -> None:
    p = sub.add_parser(
        "lint", help="check templates: syntax, variables, length budgets, footer; exit 1 on errors"
    )
    p.add_argument(
        "names", nargs="*", metavar="NAME", help="messages (thank_you_new, sms/coupon_wave) or files"
    )
    p.add_argument(
        "--max-segments",
        type=positive_int,
        help="SMS budget for the NAMEs given (default: the playbook's or 2)",
    )
    p.add_argument("--root", help="templates folder (default include/templates)")
    p.set_defaults(func=templates_lint, **common)


def _add_preview(sub: argparse._SubParsersAction, common: dict) -> None:
    p = sub.add_parser("preview", help="render a message for the sample customer or a given one")
    p.add_argument("name", metavar="NAME", help="message name, e.g. thank_you_new or sms/care_tips")
    p.add_argument("--channel", choices=CHANNELS, help="only this channel")
    who = p.add_mutually_exclusive_group()
    who.add_argument("--customer-json", metavar="FILE", help="customer fields, or context objects, as JSON")
    who.add_argument(
        "--customer", metavar="ID", help="a customer of the CRM store, as the pipeline sees them"
    )
    p.add_argument(
        "--date",
        type=iso_date,
        metavar="YYYY-MM-DD",
        help="with --customer: their segment on this business day (default: the latest computed)",
    )
    p.add_argument("--wave", type=positive_int, help="wave number (default 1)")
    p.add_argument("--category", metavar="GROUP", help="category group (default: every variant)")
    p.add_argument("--root", help="templates folder (default include/templates)")
    p.set_defaults(func=templates_preview, **common)


def add_templates_commands(
    subparsers: argparse._SubParsersAction,
    *,
    shop_loader: ShopLoader | None = None,
    budgets_loader: BudgetsLoader | None = None,
    customer_loader: CustomerLoader | None = None,
    approvals_loader: ApprovalsLoader | None = None,
    campaigns_loader: CampaignsLoader | None = None,
) -> argparse.ArgumentParser:
    """Add ``templates lint|preview|context`` to a parser's sub-parsers (``args.func`` is set)."""
    templates = subparsers.add_parser(
        "templates", help="message templates: lint, preview, the context reference"
    )
    sub = templates.add_subparsers(dest="templates_command", required=True)
    common = {
        "shop_loader": shop_loader,
        "budgets_loader": budgets_loader,
        "customer_loader": customer_loader,
        "approvals_loader": approvals_loader,
        "campaigns_loader": campaigns_loader,
    }
    _add_lint(sub, common)
    _add_preview(sub, common)
    p = sub.add_parser("context", help="print the variables and fields a template may use")
    p.set_defaults(func=templates_context, **common)
    return templates
