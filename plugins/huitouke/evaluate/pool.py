"""A campaign's stored evaluations pooled over its waves: the campaign's one figure.

Each wave's row compares its own cohort; a campaign is judged over all of them. Pooling sums the
customers and responders of each arm over the rows and compares the sums again with
:mod:`huitouke.evaluate.stats` (lift, interval, p-value, MDE, verdict); incremental revenue, cost
and responders' revenue are summed and the ROIs computed from the sums. The results page and the
demo's closing table both show :func:`pooled_by_campaign`; the campaign page pools its windows
with :func:`pool` and its breakdowns with :func:`pool_breakdowns`.

Rows are plain dicts (stored ``evaluations`` rows, their figures' JSON merged in): a missing or
NaN figure counts as 0.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from huitouke.evaluate import stats

__all__ = ["finite", "pool", "pool_breakdowns", "pooled_by_campaign"]


def finite(value: Any) -> float | None:
    """A finite float, or None (missing, NaN, infinite, not a number)."""
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _sum(rows: Iterable[dict[str, Any]], key: str, fallback: str | None = None) -> float:
    total = 0.0
    for r in rows:
        value = finite(r.get(key))
        if value is None and fallback:
            value = finite(r.get(fallback))
        total += value or 0.0
    return total


def pool(groups: Sequence[tuple[Any, Sequence[dict[str, Any]]]]) -> list[dict[str, Any]]:
    """One pooled comparison per group of evaluation rows (e.g. a campaign's waves at its primary
    window): customers and responders of each arm summed over the rows, lift with its 95%
    interval, p-value, MDE and verdict from :mod:`huitouke.evaluate.stats`; incremental revenue,
    cost and responders' revenue summed, the ROIs computed from the sums."""
    if not groups:
        return []

    def column(key: str) -> np.ndarray:
        return np.array([_sum(rows, key) for _, rows in groups], dtype=float)

    n1, x1 = column("customers"), column("responders")
    n0, x0 = column("control_customers"), column("control_responders")
    c = stats.compare_proportions(x1, n1, x0, n0)
    mde = stats.minimum_detectable_effect(n1, n0, c.control_rate)
    verdicts = stats.verdict(n1, n0, c.lift_low, c.lift_high, c.p_value, mde)
    out = []
    for i, (key, rows) in enumerate(groups):
        due = [r["due_on"] for r in rows if r.get("due_on")]
        out.append(
            {
                "key": key,
                "waves": len(rows),
                "first_due_on": min(due) if due else None,
                "last_due_on": max(due) if due else None,
                "customers": int(n1[i]),
                "control_customers": int(n0[i]),
                "responders": int(x1[i]),
                "control_responders": int(x0[i]),
                "response_rate": finite(c.rate[i]),
                "control_rate": finite(c.control_rate[i]),
                "lift": finite(c.lift[i]),
                "lift_low": finite(c.lift_low[i]),
                "lift_high": finite(c.lift_high[i]),
                "p_value": finite(c.p_value[i]),
                "mde": finite(mde[i]),
                "verdict": str(verdicts[i]),
                "verdict_text": stats.VERDICT_TEXT[str(verdicts[i])],
                **_money(rows),
            }
        )
    return out


def _money(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Incremental revenue and cost summed over the rows, and the ROIs of the sums."""
    incremental_revenue = _sum(rows, "incremental_revenue_cents")
    cost = _sum(rows, "cost_cents")
    incremental_cost = _sum(rows, "incremental_cost_cents", fallback="cost_cents")
    responder_revenue = _sum(rows, "responder_revenue_cents")
    return {
        "incremental_revenue_cents": incremental_revenue,
        "cost_cents": cost,
        "incremental_roi": incremental_revenue / incremental_cost if incremental_cost > 0 else None,
        "naive_roi": responder_revenue / cost if cost > 0 else None,
    }


def pooled_by_campaign(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per campaign and window, pooled over waves (pass the primary-window ITT rows); the largest
    campaigns first."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[(r["campaign"], int(r["window_days"]))].append(r)
    pooled = pool(sorted(groups.items()))
    for p in pooled:
        p["campaign"], p["window_days"] = p["key"]
    return sorted(pooled, key=lambda p: (-p["customers"], p["campaign"], p["window_days"]))


def pool_breakdowns(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Breakdown rows summed per (dimension, value) over waves, compared again; a lift or drop is
    claimed only when the Bonferroni-adjusted p-value (over the dimension's values) is below 0.05,
    the rule of :func:`huitouke.evaluate.compare.adjust_for_multiplicity`."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        groups[(str(r.get("dimension")), str(r.get("value")))].append(r)
    pooled = pool(sorted(groups.items()))
    if not pooled:
        return []
    per_dimension: dict[str, int] = defaultdict(int)
    for p in pooled:
        if p["p_value"] is not None:
            per_dimension[p["key"][0]] += 1
    for p in pooled:
        p["dimension"], p["value"] = p["key"]
        p["comparisons"] = per_dimension[p["dimension"]]
        p["p_value_adjusted"] = (
            min(1.0, p["p_value"] * max(1, p["comparisons"])) if p["p_value"] is not None else None
        )

    def values(key: str) -> np.ndarray:
        return np.array([np.nan if p[key] is None else p[key] for p in pooled], dtype=float)

    verdicts = stats.verdict(
        [p["customers"] for p in pooled],
        [p["control_customers"] for p in pooled],
        values("lift_low"),
        values("lift_high"),
        values("p_value_adjusted"),
        values("mde"),
    )
    for p, v in zip(pooled, verdicts, strict=True):
        p["verdict"], p["verdict_text"] = str(v), stats.VERDICT_TEXT[str(v)]
    return pooled
