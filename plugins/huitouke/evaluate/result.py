"""The day's evaluation as it leaves :func:`huitouke.evaluate.waves.evaluate_waves`: the columns
of its frames, :class:`WaveEvaluation`, and the task log's tables (``as_text``) and XCom summary
(``as_dict``). What the columns mean: the module docstring of :mod:`huitouke.evaluate.waves`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

import numpy as np
import pandas as pd

from huitouke.evaluate.compare import COMPARISON_COLUMNS, format_comparisons, format_table
from huitouke.evaluate.verdicts import legend

__all__ = [
    "BREAKDOWN_COLUMNS",
    "CATEGORY_COLUMNS",
    "COHORT_KEY",
    "CUMULATIVE_COLUMNS",
    "CURVE_COLUMNS",
    "ITT",
    "RESULT_COLUMNS",
    "RECEIVED",
    "RESULT_KEY",
    "SENT",
    "VIEWS",
    "WINDOW_KEY",
    "WaveEvaluation",
]

ITT, SENT, RECEIVED = "itt", "sent", "received"
VIEWS = (ITT, SENT, RECEIVED)
"""The views of a wave's window: everyone assigned (intention to treat); treated customers sent a
message; treated customers whose message was delivered (``received``: the stored key column
``evaluations.view`` holds 8 characters). The last two against the holdout held out (module
:mod:`huitouke.evaluate.waves`)."""
RESULT_KEY = ["campaign", "wave", "due_on", "window_days", "view"]
WINDOW_KEY = RESULT_KEY[:4]
"""A wave's window: what is evaluated once (every view, its breakdowns and categories with it)."""
COHORT_KEY = RESULT_KEY[:3]
"""A wave's cohort: every customer of one campaign wave due on one day, both arms."""
RESULT_COLUMNS = [
    *RESULT_KEY,
    "entered_on",
    "send_time",
    "primary",
    "as_of",
    "contacted",
    "suppressed",
    "sent",
    "received",
    *COMPARISON_COLUMNS,
]
BREAKDOWN_COLUMNS = [
    *RESULT_KEY,
    "dimension",
    "value",
    *COMPARISON_COLUMNS,
    "comparisons",
    "p_value_adjusted",
]
CUMULATIVE_COLUMNS = [
    "campaign",
    "through_wave",
    "window_days",
    "view",
    "as_of",
    "entry_days",
    "first_entered_on",
    "last_entered_on",
    *COMPARISON_COLUMNS,
]
CURVE_COLUMNS = [
    *COHORT_KEY,
    "day",
    "customers",
    "responders",
    "response_rate",
    "control_customers",
    "control_responders",
    "control_rate",
    "lift",
]
CATEGORY_COLUMNS = [
    *WINDOW_KEY,
    "arm",
    "rank",
    "category",
    "orders",
    "customers",
    "share",
]

_CURVE_TEXT_DAYS = (1, 2, 3, 5, 7, 10, 14, 21, 30)
_LABELS = {"control_label": "holdout", "rate_label": "response", "control_rate_label": "natural"}


@dataclass
class WaveEvaluation:
    """The day's evaluation: flat frames with stable columns (see :mod:`huitouke.evaluate.waves`)."""

    as_of: date
    results: pd.DataFrame
    breakdowns: pd.DataFrame
    cumulative: pd.DataFrame
    curves: pd.DataFrame
    categories: pd.DataFrame
    options: dict[str, Any] = field(default_factory=dict)
    already_stored: int = 0  # result rows of this day stored by an earlier run of it (kept as they are)

    def as_text(self) -> str:
        """The task log's report: results, breakdowns, sequences, curves, categories."""
        res = self.results
        if res.empty and self.already_stored:
            return (
                f"Evaluation as of {self.as_of}: the {self.already_stored} result row(s) of the windows that "
                "matured today were stored by an earlier run of this day; kept as they are."
            )
        if res.empty:
            return f"Evaluation as of {self.as_of}: no campaign wave has a window that matured today."
        cohorts = res[COHORT_KEY].drop_duplicates().shape[0]
        lines = [
            f"Evaluation as of {self.as_of}: {cohorts} campaign wave(s), {len(res)} row(s) "
            "(treatment against holdout; itt = everyone assigned, sent = treated customers sent a message, "
            "received = those whose message was delivered, both vs the would-be-sent holdout; * = primary window)",
            "",
            _results_text(res, self.labels()),
        ]
        for title, text in (
            ("By segment, channel and variant (primary window, itt)", _breakdowns_text(self, self.labels())),
            (
                "Cumulative over the waves of each sequence (from wave 1's send to wave k + primary window, itt)",
                _cumulative_text(self.cumulative, self.labels()),
            ),
            ("Repurchase curves: cumulative response by day since sending (itt)", _curves_text(self.curves)),
            (
                "What responders bought (primary window): treatment responders vs holdout natural repurchasers",
                _categories_text(self.categories),
            ),
        ):
            if text:
                lines += ["", title, text]
        shown = [*res["verdict"], *self.breakdowns.get("verdict", []), *self.cumulative.get("verdict", [])]
        lines += ["", "Verdicts (docs/evaluation.md):", legend(shown)]
        return "\n".join(lines)

    def labels(self) -> dict[str, Any]:
        """The tables' labels: holdout, response, natural, and the intervals' level as computed."""
        return {**_LABELS, "confidence": float(self.options.get("confidence", 0.95))}

    def as_dict(self) -> dict[str, Any]:
        """The XCom summary: how many results, and each primary intention-to-treat lift."""
        results = self.results
        primary = results[results["primary"] & (results["view"] == ITT)] if len(results) else results
        return {
            "business_date": self.as_of.isoformat(),
            "results": len(results),
            "already_stored": self.already_stored,
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


# --------------------------------------------------------------------------- the task log's tables


def _results_text(res: pd.DataFrame, labels: dict[str, Any]) -> str:
    """Every result row, its window marked ``*`` when primary."""
    shown = res.assign(
        window=[f"{w}d{'*' if p else ''}" for w, p in zip(res["window_days"], res["primary"], strict=True)]
    )
    keys = [
        ("campaign", "campaign"),
        ("wave", "wave"),
        ("due_on", "due"),
        ("window", "window"),
        ("view", "view"),
    ]
    return format_comparisons(shown, keys, show_arm=False, **labels)


def _breakdowns_text(ev: WaveEvaluation, labels: dict[str, Any]) -> str:
    """The breakdowns of the primary windows ("" when there are none)."""
    res = ev.results
    primary = ev.breakdowns.merge(res.loc[res["primary"], WINDOW_KEY].drop_duplicates(), on=WINDOW_KEY)
    if not len(primary):
        return ""
    keys = [
        ("campaign", "campaign"),
        ("wave", "wave"),
        ("due_on", "due"),
        ("dimension", "by"),
        ("value", "value"),
    ]
    return format_comparisons(primary, keys, show_arm=False, **labels)


def _cumulative_text(cumulative: pd.DataFrame, labels: dict[str, Any]) -> str:
    if not len(cumulative):
        return ""
    keys = [
        ("campaign", "campaign"),
        ("through_wave", "through wave"),
        ("window_days", "window"),
        ("entry_days", "entry days"),
    ]
    return format_comparisons(cumulative, keys, show_arm=False, **labels)


def _curves_text(curves: pd.DataFrame) -> str:
    """Treatment, holdout and lift rows per wave, at a few days since sending."""
    if not len(curves):
        return ""
    days = [d for d in _CURVE_TEXT_DAYS if d <= curves["day"].max()]
    headers = ["campaign", "wave", "due", "arm", *(f"d{d}" for d in days)]
    rows = []
    for (campaign, wave, due_on), part in curves.groupby(COHORT_KEY, sort=True):
        by_day = part.set_index("day")
        for label, col in (("treatment", "response_rate"), ("holdout", "control_rate"), ("lift pp", "lift")):
            cells = [_curve_cell(by_day[col].get(d, np.nan), col == "lift") for d in days]
            rows.append([str(campaign), str(wave), str(due_on), label, *cells])
    return format_table(headers, rows, [False] * 4 + [True] * len(days))


def _curve_cell(value: Any, lift: bool) -> str:
    if pd.isna(value):
        return ""
    return f"{100 * value:+.2f}" if lift else f"{100 * value:.2f}%"


def _categories_text(categories: pd.DataFrame) -> str:
    if not len(categories):
        return ""
    headers = ["campaign", "wave", "due", "window", "arm", "rank", "category", "orders", "customers", "share"]
    rows = [
        [
            str(r.campaign),
            str(r.wave),
            str(r.due_on),
            f"{r.window_days}d",
            str(r.arm),
            str(r.rank),
            str(r.category),
            f"{r.orders:,}",
            f"{r.customers:,}",
            f"{100 * r.share:.1f}%",
        ]
        for r in categories.itertuples()
    ]
    return format_table(headers, rows, [False] * 5 + [True, False, True, True, True])
