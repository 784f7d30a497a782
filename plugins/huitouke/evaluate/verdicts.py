"""The verdicts of a comparison, defined once: what the numbers beside them say, in one table.

A verdict reads three facts of a comparison (and whether both arms have customers):

- **side**: the lift's interval lies *above* 0, *below* 0, or *across* 0 (includes it; a missing
  bound counts as across);
- **significant**: ``p < alpha`` (the p-value the row shows: adjusted for the number of
  comparisons where several are made side by side, as in breakdowns);
- **powered**: the smaller arm has at least ``min_per_arm`` customers (100) *and* the minimum
  detectable effect (80% power) is at most ``max_mde`` (5 points), i.e. the test could have found an
  effect large enough to matter.

:data:`VERDICT_TABLE` maps every combination to exactly one verdict (a test checks all twelve);
its labels are what the CLI (``huitouke evaluate``), the evaluate task's log and the UI's pages
say, and its explanations are the pages' tooltips and legend, and docs/evaluation.md's table
(:func:`markdown_table`, checked against the docs by a test). The codes are what
``evaluations.verdict`` stores (16 characters at most).

A verdict never claims an effect (``lift``, ``likely_lift``, ``drop``, ``likely_drop``) unless the
interval excludes 0 *and* p < alpha; when the two disagree it says so (``borderline``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

__all__ = [
    "VERDICT_TABLE",
    "Facts",
    "Thresholds",
    "Verdict",
    "by_code",
    "facts",
    "judge",
    "legend",
    "markdown_table",
]


@dataclass(frozen=True)
class Facts:
    """The facts a verdict reads, as boolean arrays of one shape."""

    empty: np.ndarray
    above: np.ndarray
    below: np.ndarray
    significant: np.ndarray
    powered: np.ndarray

    @property
    def excludes_zero(self) -> np.ndarray:
        return self.above | self.below


@dataclass(frozen=True)
class Verdict:
    """One verdict: its stored ``code``, its ``label`` (English, then Chinese), the condition in
    words (``when``) and as code (``holds``), and what it means (``explanation``)."""

    code: str
    label: str
    label_zh: str
    when: str
    explanation: str
    holds: Callable[[Facts], np.ndarray]


VERDICT_TABLE: tuple[Verdict, ...] = (
    Verdict(
        "empty_arm",
        "no comparison: an arm has no customers",
        "缺少一组",
        "an arm has no customers",
        "There is nothing to compare with.",
        lambda f: f.empty,
    ),
    Verdict(
        "lift",
        "lift",
        "提升",
        "interval above 0, p < 0.05, powered",
        "More responses than the holdout, and the test was large enough to size the lift: "
        "the interval says how large it is.",
        lambda f: f.above & f.significant & f.powered,
    ),
    Verdict(
        "likely_lift",
        "likely lift; the test was too small to size it",
        "可能提升（样本不足以估计幅度）",
        "interval above 0, p < 0.05, under-powered",
        "Probably more responses than the holdout, but the test was too small to size the lift: "
        "a small test that finds an effect overstates it, so the true lift is likely smaller "
        "than shown.",
        lambda f: f.above & f.significant & ~f.powered,
    ),
    Verdict(
        "drop",
        "drop",
        "下降",
        "interval below 0, p < 0.05, powered",
        "Fewer responses than the holdout, and the test was large enough to size the drop.",
        lambda f: f.below & f.significant & f.powered,
    ),
    Verdict(
        "likely_drop",
        "likely drop; the test was too small to size it",
        "可能下降（样本不足以估计幅度）",
        "interval below 0, p < 0.05, under-powered",
        "Probably fewer responses than the holdout, but the test was too small to size the drop "
        "(likely smaller than shown).",
        lambda f: f.below & f.significant & ~f.powered,
    ),
    Verdict(
        "borderline",
        "borderline; not enough to claim an effect",
        "临界，不足以下结论",
        "the interval excludes 0 but p ≥ 0.05, or p < 0.05 but the interval includes 0",
        "The interval and the p-value disagree. In breakdowns p is adjusted for the number of "
        "values compared (Bonferroni, p adj.) and the interval is not, so an interval clear of 0 "
        "can still fall short.",
        lambda f: f.excludes_zero != f.significant,
    ),
    Verdict(
        "no_difference",
        "no effect large enough to matter",
        "无值得关注的效果",
        "interval includes 0, p ≥ 0.05, powered",
        "No difference found, and the test would have found a lift as large as its MDE "
        "(at most 5 points) 8 times in 10: any effect is probably smaller than that.",
        lambda f: ~f.excludes_zero & ~f.significant & f.powered,
    ),
    Verdict(
        "too_few",
        "too few customers to tell",
        "样本不足",
        "interval includes 0, p ≥ 0.05, under-powered",
        "No difference found, but the test was too small to find one that matters: "
        "neither an effect nor its absence is shown.",
        lambda f: ~f.excludes_zero & ~f.significant & ~f.powered,
    ),
)

_BY_CODE = {v.code: v for v in VERDICT_TABLE}


def by_code(code: str) -> Verdict:
    """The verdict of a stored code (an unknown one, e.g. from an older version, as itself)."""
    known = _BY_CODE.get(code)
    if known is not None:
        return known
    return Verdict(code, code.replace("_", " "), code, "", "", lambda f: np.zeros_like(f.empty))


class Thresholds(Protocol):
    """What a verdict is judged by (:class:`huitouke.evaluate.stats.ComparisonRules` has them)."""

    alpha: float
    min_per_arm: int
    max_mde: float


def facts(n1, n0, lift_low, lift_high, p_value, mde, rules: Thresholds) -> Facts:
    """The facts of comparisons given as numbers or arrays (broadcast together)."""
    values = (np.asarray(v, dtype=float) for v in (n1, n0, lift_low, lift_high, p_value, mde))
    n1, n0, low, high, p, mde = np.broadcast_arrays(*values)
    return Facts(
        empty=(n1 <= 0) | (n0 <= 0),
        above=low > 0,
        below=high < 0,
        significant=np.nan_to_num(p, nan=1.0) < rules.alpha,
        powered=(np.minimum(n1, n0) >= rules.min_per_arm) & (mde <= rules.max_mde),
    )


def judge(f: Facts) -> np.ndarray:
    """The code of the first verdict whose condition holds, per comparison (the conditions after
    ``empty_arm`` exclude one another, so the order only puts the empty arm first)."""
    out = np.full(f.empty.shape, VERDICT_TABLE[-1].code, dtype=object)
    for verdict in reversed(VERDICT_TABLE):
        out[np.asarray(verdict.holds(f), dtype=bool)] = verdict.code
    return out


def legend(codes: Iterable[str]) -> str:
    """``label: explanation`` of each verdict among ``codes``, in the table's order: the lines
    printed under the CLI's and the task log's tables."""
    present = set(codes)
    return "\n".join(f"  {v.label}: {v.explanation}" for v in VERDICT_TABLE if v.code in present)


def markdown_table() -> str:
    """The table as docs/evaluation.md shows it."""
    lines = ["| verdict (code) | when | what it says |", "|---|---|---|"]
    lines += [f"| {v.label} (`{v.code}`) | {v.when} | {v.explanation} |" for v in VERDICT_TABLE]
    return "\n".join(lines)
