"""An experiment run elsewhere, from a CSV of one row per customer: the same figures as the waves.

The file has a header and, per customer, the arm, whether they responded and (optionally) the
revenue and cost in CNY; the column names are the caller's. Any number of arms; one is the
control, every other arm is compared with it (:func:`huitouke.evaluate.compare.compare_arms`),
with a Bonferroni adjustment when there are several (:func:`~huitouke.evaluate.compare.adjust_for_multiplicity`).

Values: ``responded`` is 1/0, true/false, yes/no, y/n, t/f or 是/否 (any case); revenue and cost
are amounts in CNY (``12.5``, ``¥1,234.56``; empty = 0; not negative). Revenue is rounded to the
fen (cent), cost is kept as given (an SMS costs 0.045 CNY). A bad value raises
:class:`ExperimentFileError` naming the file, the line and the column.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from huitouke.evaluate import stats
from huitouke.evaluate.compare import (
    adjust_for_multiplicity,
    as_records,
    compare_arms,
    format_comparisons,
    format_table,
)

__all__ = [
    "ARM_COLUMNS",
    "Experiment",
    "ExperimentFileError",
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


class ExperimentFileError(ValueError):
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
    """An amount in CNY: ``"12.5"``, ``"¥1,234.56"``; empty is 0; negative is a ValueError."""
    value = text.strip().lstrip("¥￥").replace(",", "").strip()
    if value == "":
        return Decimal(0)
    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise ValueError("expected an amount in CNY, e.g. 12.50") from None
    if not amount.is_finite():
        raise ValueError("expected an amount in CNY, e.g. 12.50")
    if amount < 0:
        raise ValueError("an amount cannot be negative")
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
    try:
        handle = path.open(newline="", encoding=encoding)
    except FileNotFoundError:
        raise ExperimentFileError(f"{path}: no such file") from None
    with handle:
        reader = csv.reader(handle)
        try:
            header = next(reader)
        except StopIteration:
            raise ExperimentFileError(f"{path}: the file is empty (expected a header line)") from None
        except (UnicodeDecodeError, csv.Error) as exc:
            raise ExperimentFileError(f"{path}, line 1: cannot read the header: {exc}") from None
        header = [h.strip() for h in header]
        if revenue_column is None and "revenue" in header:
            revenue_column = "revenue"
        wanted = {"arm": arm_column, "responded": responded_column}
        if revenue_column:
            wanted["revenue"] = revenue_column
        if cost_column:
            wanted["cost"] = cost_column
        missing = [name for name in wanted.values() if name not in header]
        if missing:
            raise ExperimentFileError(
                f"{path}: no column {', '.join(repr(m) for m in missing)} in the header "
                f"(columns: {', '.join(header)})"
            )
        at = {key: header.index(name) for key, name in wanted.items()}
        arms: list[str] = []
        responded: list[bool] = []
        revenue: list[int] = []
        cost: list[float] = []
        errors: list[str] = []
        bad_rows = 0

        def fail(line: int, column: str, problem: str, value: str | None = None) -> None:
            got = f" (got {value!r})" if value is not None else ""
            errors.append(f"{path}, line {line}, column {column!r}: {problem}{got}")

        try:
            for cells in reader:
                line = reader.line_num
                if not any(c.strip() for c in cells):
                    continue  # a blank line
                before = len(errors)
                if len(cells) != len(header):
                    errors.append(
                        f"{path}, line {line}: the row has {len(cells)} fields, the header {len(header)}"
                        + (" (a comma inside an unquoted value?)" if len(cells) > len(header) else "")
                    )
                else:
                    arm = cells[at["arm"]].strip()
                    if not arm:
                        fail(line, arm_column, "the arm is empty")
                    raw = cells[at["responded"]]
                    try:
                        did = parse_responded(raw)
                    except ValueError as exc:
                        fail(line, responded_column, str(exc), raw)
                        did = False
                    cents = 0
                    if "revenue" in at:
                        raw = cells[at["revenue"]]
                        try:
                            amount = parse_cny(raw)
                            cents = int((amount * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))
                        except ValueError as exc:
                            fail(line, revenue_column, str(exc), raw)
                    spent = 0.0
                    if "cost" in at:
                        raw = cells[at["cost"]]
                        try:
                            spent = float(parse_cny(raw) * 100)
                        except ValueError as exc:
                            fail(line, cost_column, str(exc), raw)
                if len(errors) > before:
                    bad_rows += 1
                    continue
                arms.append(arm)
                responded.append(did)
                revenue.append(cents)
                cost.append(spent)
        except (UnicodeDecodeError, csv.Error) as exc:
            raise ExperimentFileError(
                f"{path}, line {reader.line_num + 1}: cannot read the line: {exc}"
            ) from None
    if errors:
        more = f"\n... {bad_rows - _MAX_ERRORS} more bad row(s)" if bad_rows > _MAX_ERRORS else ""
        raise ExperimentFileError(
            f"{bad_rows} bad row(s) in {path}:\n" + "\n".join(errors[:_MAX_ERRORS]) + more
        )
    if not arms:
        raise ExperimentFileError(f"{path}: no customer rows after the header")
    return pd.DataFrame(
        {
            "arm": pd.Series(arms, dtype=object),
            "responded": np.array(responded, dtype=bool),
            "revenue_cents": np.array(revenue, dtype="int64") if "revenue" in at else np.nan,
            "cost_cents": np.array(cost, dtype=float) if "cost" in at else np.nan,
        }
    )


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
        pct = int(round(self.confidence * 100))
        lines = [f"{title}{len(self.arms)} arm(s), control {self.control!r}", ""]
        lines.append(
            format_table(
                [
                    "arm",
                    "customers",
                    "responders",
                    f"response rate [{pct}% CI]",
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
            lines.append(format_comparisons(self.comparisons, control_label="control"))
            if len(self.comparisons) > 1:
                lines += [
                    "",
                    f"{len(self.comparisons)} comparisons: the verdict uses the Bonferroni-adjusted p-value (p adj.).",
                ]
        return "\n".join(lines)


def evaluate_experiment(
    frame: pd.DataFrame,
    control: str,
    *,
    confidence: float = 0.95,
    source: str | None = None,
    **options: Any,
) -> Experiment:
    """Compare every arm of ``frame`` (from :func:`read_experiment_csv`) with ``control``.

    ``options``: ``alpha``, ``interval``, ``min_per_arm``, ``max_mde`` of
    :func:`huitouke.evaluate.compare.compare_summaries`.
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
        confidence=confidence,
        **options,
    )
    comparisons = adjust_for_multiplicity(comparisons, (), options.get("alpha", 0.05))
    return Experiment(
        control=control,
        arms=_arm_table(
            frame, [control, *(a for a in present if a != control)], confidence, has_revenue, has_cost
        ),
        comparisons=comparisons,
        confidence=confidence,
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
