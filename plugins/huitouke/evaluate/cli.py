"""``huitouke evaluate FILE.csv``: an experiment run elsewhere, evaluated like a campaign wave.

Register it on the main parser's sub-parsers with :func:`add_parser`; :func:`main` runs it alone
(``python -m huitouke.evaluate.cli``).

    huitouke evaluate results.csv --control holdout
    huitouke evaluate results.csv --arm-column group --control A \\
        --responded-column bought --revenue-column gmv --cost-column sms_cost --json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from huitouke.cli_errors import encoding, fraction, positive_int, run_reporting

__all__ = ["add_parser", "cmd_evaluate", "main"]

DESCRIPTION = (
    "Evaluate an experiment run elsewhere, like a campaign wave: every arm against the control, "
    "from a CSV of one row per customer (arm, responded, revenue and cost in CNY)."
)

# The defaults of huitouke.evaluate.stats, repeated so that building the parser does not import
# pandas and scipy (a test checks they agree).
MIN_PER_ARM = 100
MAX_MDE = 0.05
INTERVALS = ("newcombe", "auto", "wald")


def _configure(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("file", type=Path, metavar="FILE.csv", help="one row per customer, with a header line")
    p.add_argument("--control", required=True, help="the control arm's name (e.g. holdout)")
    p.add_argument("--arm-column", default="arm", help="column naming each customer's arm (default: arm)")
    p.add_argument(
        "--responded-column",
        default="responded",
        help="column saying whether the customer responded: 1/0, true/false, yes/no (default: responded)",
    )
    p.add_argument(
        "--revenue-column",
        help="column with the customer's revenue in CNY (default: 'revenue' when the file has it)",
    )
    p.add_argument("--cost-column", help="column with what reaching the customer cost, in CNY")
    p.add_argument(
        "--confidence",
        type=fraction,
        default=0.95,
        help="interval level, strictly between 0 and 1 or a percentage (default 0.95)",
    )
    p.add_argument(
        "--min-per-arm",
        type=positive_int,
        default=MIN_PER_ARM,
        help=f"fewer customers in an arm: too few to tell (default {MIN_PER_ARM})",
    )
    p.add_argument(
        "--max-mde",
        type=fraction,
        default=MAX_MDE,
        help="a minimum detectable lift above this: too few to tell (default 0.05 = 5 points)",
    )
    p.add_argument(
        "--interval",
        choices=INTERVALS,
        default="newcombe",
        help="interval of the lift (default newcombe; see docs/evaluation.md)",
    )
    p.add_argument(
        "--encoding", type=encoding, default="utf-8-sig", help="file encoding (default UTF-8, BOM allowed)"
    )
    p.add_argument("--json", action="store_true", help="print the figures as JSON instead of tables")
    p.set_defaults(func=cmd_evaluate)
    return p


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``evaluate`` command to the ``huitouke`` command's sub-parsers."""
    p = subparsers.add_parser(
        "evaluate",
        help="evaluate an experiment run elsewhere from a CSV of one row per customer",
        description=DESCRIPTION,
    )
    return _configure(p)


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Print the tables (or JSON). A bad file raises ExperimentFileError (a UserInputError) naming
    the file, line and column: the caller prints it in one line per problem and exits 2."""
    from huitouke.evaluate.experiment import evaluate_experiment, read_experiment_csv
    from huitouke.evaluate.stats import ComparisonRules

    frame = read_experiment_csv(
        args.file,
        arm_column=args.arm_column,
        responded_column=args.responded_column,
        revenue_column=args.revenue_column,
        cost_column=args.cost_column,
        encoding=args.encoding,
    )
    experiment = evaluate_experiment(
        frame,
        args.control,
        rules=ComparisonRules(
            confidence=args.confidence,
            min_per_arm=args.min_per_arm,
            max_mde=args.max_mde,
            interval=args.interval,
        ),
        source=str(args.file),
    )
    if args.json:
        print(json.dumps(experiment.as_dict(), ensure_ascii=False, indent=2))
    else:
        print(experiment.as_text())
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m huitouke.evaluate.cli``: the same command and exit statuses as ``huitouke evaluate``."""
    parser = _configure(argparse.ArgumentParser(prog="huitouke evaluate", description=DESCRIPTION))
    parser.add_argument("--debug", action="store_true", help="on a failure, print the traceback too")
    args = parser.parse_args(argv)
    return run_reporting(args.func, args, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
