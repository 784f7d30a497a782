"""An experiment run elsewhere, from a CSV of one row per customer: the same figures as the waves.

The file has a header and, per customer, the arm, whether they responded and (optionally) the
revenue and cost in CNY; the column names are the caller's. Any number of arms; one is the
control, every other arm is compared with it (:func:`huitouke.evaluate.compare.compare_arms`),
with a Bonferroni adjustment when there are several (:func:`~huitouke.evaluate.compare.adjust_for_multiplicity`).

Values: ``responded`` is 1/0, true/false, yes/no, y/n, t/f or 是/否 (any case); revenue and cost
are amounts in CNY (``12.5``, ``¥1,234.56``; empty = 0; not negative, finite, at most
:data:`MAX_CNY` per customer, so that sums over millions of customers stay exact in integer fen).
Revenue is rounded to the fen (cent), cost is kept as given (an SMS costs 0.045 CNY). A bad value
raises :class:`ExperimentFileError` naming the file, the line and the column.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from huitouke.errors import UserInputError
from huitouke.evaluate import stats
from huitouke.evaluate.compare import (
    adjust_for_multiplicity,
    as_records,
    compare_arms,
    confidence_label,
    format_comparisons,
    format_table,
)
from huitouke.evaluate.stats import DEFAULT_RULES, ComparisonRules
from huitouke.evaluate.verdicts import legend
from huitouke.pii import mask_text

__all__ = [
    "ARM_COLUMNS",
    "Experiment",
    "ExperimentFileError",
    "MAX_CNY",
    "evaluate_experiment",
    "parse_cny",
    "parse_responded",
    "read_experiment_csv",
]

ARM_COLUMNS = [
    "arm",
    "customers",
    "responders",
    "response_rate",
    "response_rate_low",
    "response_rate_high",
    "revenue_cents",
    "revenue_per_customer_cents",
    "cost_cents",
]

_TRUE = {"1", "true", "yes", "y", "t", "是"}
_FALSE = {"0", "false", "no", "n", "f", "否"}
_MAX_ERRORS = 5
MAX_CNY = Decimal(1_000_000_000)
"""The most one customer's revenue or cost may be, in CNY: generous, yet a sum over 9 million
customers still fits the integer fen of int64 (a phone number pasted into the column does not)."""


class ExperimentFileError(UserInputError):
    """A CSV the evaluation cannot read: the message names the file, line and column."""


def parse_responded(text: str) -> bool:
    """``"1"``, ``"yes"``, ``"True"`` … -> True; ``"0"``, ``"no"`` … -> False; else ValueError."""
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError("expected 1/0, true/false or yes/no")


def parse_cny(text: str) -> Decimal:
    """An amount in CNY: ``"12.5"``, ``"¥1,234.56"``; empty is 0; negative, not finite or above
    :data:`MAX_CNY` is a ValueError."""
    value = text.strip().lstrip("¥￥").replace(",", "").strip()
    if value == "":
        return Decimal(0)
    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise ValueError("expected an amount in CNY, e.g. 12.50") from None
    if not amount.is_finite():
        raise ValueError("expected a finite amount in CNY, e.g. 12.50")
    if amount < 0:
        raise ValueError("an amount cannot be negative")
    if amount > MAX_CNY:
        raise ValueError(f"an amount above {MAX_CNY:,} CNY per customer is not plausible")
    return amount


def read_experiment_csv(
    path: str | Path,
    *,
    arm_column: str = "arm",
    responded_column: str = "responded",
    revenue_column: str | None = None,
    cost_column: str | None = None,
    encoding: str = "utf-8-sig",
) -> pd.DataFrame:
    """One row per customer: ``arm, responded, revenue_cents, cost_cents`` (NaN when not given).

    ``revenue_column=None`` takes a column named ``revenue`` when the file has one. Lines are
    counted from 1 with the header on line 1.
    """
    path = Path(path)
    handle = _opened(path, encoding)
    named = {"arm": arm_column, "responded": responded_column, "revenue": revenue_column, "cost": cost_column}
    with handle:
        reader = csv.reader(handle)
        columns = _read_header(path, reader, named)
        rows = _read_rows(path, reader, columns)
    if rows.errors:
        more = f"\n... {rows.bad_rows - _MAX_ERRORS} more bad row(s)" if rows.bad_rows > _MAX_ERRORS else ""
        raise ExperimentFileError(
            f"{rows.bad_rows} bad row(s) in {path}:\n" + "\n".join(rows.errors[:_MAX_ERRORS]) + more
        )
    if not rows.arms:
        raise ExperimentFileError(f"{path}: no customer rows after the header")
    return pd.DataFrame(
        {
            "arm": pd.Series(rows.arms, dtype=object),
            "responded": np.array(rows.responded, dtype=bool),
            "revenue_cents": np.array(rows.revenue, dtype="int64") if "revenue" in columns.at else np.nan,
            "cost_cents": np.array(rows.cost, dtype=float) if "cost" in columns.at else np.nan,
        }
    )


def _opened(path: Path, encoding: str) -> Any:
    """The file opened for the CSV reader; a missing file, a folder or an unknown encoding is an
    ExperimentFileError naming it."""
    if path.is_dir():
        raise ExperimentFileError(f"{path}: a folder, not a file")
    try:
        return path.open(newline="", encoding=encoding)
    except FileNotFoundError:
        raise ExperimentFileError(f"{path}: no such file") from None
    except LookupError:
        raise ExperimentFileError(f"{path}: unknown encoding {encoding!r} (e.g. utf-8, gb18030)") from None
    except OSError as exc:
        raise ExperimentFileError(
            f"{path}: cannot read it: {(exc.strerror or type(exc).__name__).lower()}"
        ) from None


@dataclass(frozen=True)
class _Columns:
    """Where the wanted columns are: ``at`` (arm, responded, revenue, cost -> position) and
    ``names`` (the same keys -> the file's column names), for a header of ``width`` columns."""

    at: dict[str, int]
    names: dict[str, str]
    width: int


@dataclass
class _Rows:
    """The customer rows read so far, and the errors of the bad ones."""

    arms: list[str] = field(default_factory=list)
    responded: list[bool] = field(default_factory=list)
    revenue: list[int] = field(default_factory=list)
    cost: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    bad_rows: int = 0


def _read_header(path: Path, reader: Any, named: dict[str, str | None]) -> _Columns:
    """The header line, checked for the wanted columns (``revenue`` taken when present and not named)."""
    try:
        header = next(reader)
    except StopIteration:
        raise ExperimentFileError(f"{path}: the file is empty (expected a header line)") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ExperimentFileError(f"{path}, line 1: cannot read the header: {exc}") from None
    header = [h.strip() for h in header]
    if named["revenue"] is None and "revenue" in header:
        named = {**named, "revenue": "revenue"}
    wanted = {key: name for key, name in named.items() if name}
    missing = [name for name in wanted.values() if name not in header]
    if missing:
        raise ExperimentFileError(
            f"{path}: no column {', '.join(repr(m) for m in missing)} in the header "
            f"(columns: {', '.join(header)})"
        )
    return _Columns({key: header.index(name) for key, name in wanted.items()}, wanted, len(header))


def _read_rows(path: Path, reader: Any, columns: _Columns) -> _Rows:
    """Every non-blank line after the header, parsed; a bad row's problems are collected, not kept."""
    rows = _Rows()
    try:
        for cells in reader:
            if not any(c.strip() for c in cells):
                continue  # a blank line
            where = f"{path}, line {reader.line_num}"
            if len(cells) != columns.width:
                problems = [
                    f"{where}: the row has {len(cells)} fields, the header {columns.width}"
                    + (" (a comma inside an unquoted value?)" if len(cells) > columns.width else "")
                ]
            else:
                problems = _parse_row(where, cells, columns, rows)
            if problems:
                rows.errors.extend(problems)
                rows.bad_rows += 1
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ExperimentFileError(
            f"{path}, line {reader.line_num + 1}: cannot read the line: {exc}"
        ) from None
    return rows


def _parse_row(where: str, cells: list[str], columns: _Columns, rows: _Rows) -> list[str]:
    """Parse one customer's cells and append them to ``rows``; or return the row's problems."""
    problems: list[str] = []

    def parsed(key: str, parse: Any, default: Any) -> Any:
        raw = cells[columns.at[key]]
        try:
            return parse(raw)
        except ValueError as exc:
            problems.append(f"{where}, column {columns.names[key]!r}: {exc} (got {_shown(raw)!r})")
            return default

    arm = cells[columns.at["arm"]].strip()
    if not arm:
        problems.append(f"{where}, column {columns.names['arm']!r}: the arm is empty")
    did = parsed("responded", parse_responded, False)
    cents = parsed("revenue", _cents_of, 0) if "revenue" in columns.at else 0
    spent = parsed("cost", lambda raw: float(parse_cny(raw) * 100), 0.0) if "cost" in columns.at else 0.0
    if not problems:
        rows.arms.append(arm)
        rows.responded.append(did)
        rows.revenue.append(cents)
        rows.cost.append(spent)
    return problems


def _shown(raw: str) -> str:
    """A bad cell as an error message may quote it: phones and e-mails masked, at most 40 characters."""
    text = mask_text(raw)
    return text if len(text) <= 40 else text[:37] + "..."


def _cents_of(text: str) -> int:
    """An amount in CNY as whole fen, rounded half up."""
    return int((parse_cny(text) * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))


@dataclass
class Experiment:
    """Per-arm figures and the comparisons of every arm with the control."""

    control: str
    arms: pd.DataFrame
    comparisons: pd.DataFrame
    confidence: float = 0.95
    source: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: money in cents, rates and lifts as fractions, NaN as null."""
        return {
            "file": self.source,
            "control": self.control,
            "confidence": self.confidence,
            "arms": as_records(self.arms),
            "comparisons": as_records(self.comparisons),
        }

    def as_text(self) -> str:
        """The per-arm table, then the comparisons (response, then revenue and cost)."""
        title = f"Experiment {self.source}: " if self.source else "Experiment: "
        pct = confidence_label(self.confidence)
        lines = [f"{title}{len(self.arms)} arm(s), control {self.control!r}", ""]
        lines.append(
            format_table(
                [
                    "arm",
                    "customers",
                    "responders",
                    f"response rate [{pct} CI]",
                    "revenue CNY",
                    "rev/cust CNY",
                ],
                [
                    [
                        str(r["arm"]) + (" (control)" if r["arm"] == self.control else ""),
                        f"{int(r['customers']):,}",
                        f"{int(r['responders']):,}",
                        f"{100 * r['response_rate']:.2f}% "
                        f"[{100 * r['response_rate_low']:.2f}, {100 * r['response_rate_high']:.2f}]",
                        "-" if pd.isna(r["revenue_cents"]) else f"{r['revenue_cents'] / 100:,.2f}",
                        "-"
                        if pd.isna(r["revenue_per_customer_cents"])
                        else f"{r['revenue_per_customer_cents'] / 100:,.2f}",
                    ]
                    for r in self.arms.to_dict("records")
                ],
                [False, True, True, True, True, True],
            )
        )
        if len(self.comparisons):
            lines += ["", f"Each arm against {self.control!r}"]
            lines.append(
                format_comparisons(self.comparisons, control_label="control", confidence=self.confidence)
            )
            if len(self.comparisons) > 1:
                lines += [
                    "",
                    f"{len(self.comparisons)} comparisons: the verdict uses the Bonferroni-adjusted p-value (p adj.).",
                ]
            lines += ["", "Verdicts (docs/evaluation.md):", legend(self.comparisons["verdict"])]
        return "\n".join(lines)


def evaluate_experiment(
    frame: pd.DataFrame,
    control: str,
    *,
    rules: ComparisonRules = DEFAULT_RULES,
    source: str | None = None,
) -> Experiment:
    """Compare every arm of ``frame`` (from :func:`read_experiment_csv`) with ``control``.

    ``rules``: the confidence, interval, ``alpha``, ``min_per_arm`` and ``max_mde`` of the
    comparisons (:class:`huitouke.evaluate.stats.ComparisonRules`).
    """
    present = sorted(pd.unique(frame["arm"]))
    if control not in present:
        where = f"{source}: " if source else ""
        raise ExperimentFileError(
            f"{where}the control arm {control!r} is not among the arms ({', '.join(map(str, present))})"
        )
    has_revenue = frame["revenue_cents"].notna().any()
    has_cost = frame["cost_cents"].notna().any()
    comparisons = compare_arms(
        frame,
        control,
        revenue="revenue_cents" if has_revenue else None,
        cost="cost_cents" if has_cost else None,
        rules=rules,
    )
    comparisons = adjust_for_multiplicity(comparisons, (), rules.alpha, rules)
    return Experiment(
        control=control,
        arms=_arm_table(
            frame, [control, *(a for a in present if a != control)], rules.confidence, has_revenue, has_cost
        ),
        comparisons=comparisons,
        confidence=rules.confidence,
        source=source,
    )


def _arm_table(
    frame: pd.DataFrame, order: Sequence[str], confidence: float, has_revenue: bool, has_cost: bool
) -> pd.DataFrame:
    grouped = frame.groupby("arm", sort=False)
    table = pd.DataFrame(
        {
            "customers": grouped.size(),
            "responders": grouped["responded"].sum(),
            "revenue_cents": grouped["revenue_cents"].sum(),
            "revenue_per_customer_cents": grouped["revenue_cents"].mean(),
            "cost_cents": grouped["cost_cents"].sum(),
        }
    ).reindex(list(order))
    table.index.name = "arm"
    table = table.reset_index()
    table["customers"] = table["customers"].astype("int64")
    table["responders"] = table["responders"].astype("int64")
    table["response_rate"] = table["responders"] / table["customers"]
    low, high = stats.wilson_interval(table["responders"], table["customers"], confidence)
    table["response_rate_low"], table["response_rate_high"] = low, high
    if has_revenue:
        table["revenue_cents"] = table["revenue_cents"].astype("int64")
    else:
        table["revenue_cents"] = table["revenue_per_customer_cents"] = np.nan
    if not has_cost:
        table["cost_cents"] = np.nan
    return table[ARM_COLUMNS]
