"""Every customer's segment on a business date: lifecycle, R/F/M scores, member and value tiers.

A plain function of the customer state (:mod:`huitouke.segments.state`), the run's business date
and the playbook's ``segments:`` rules; nothing is remembered between days, so every customer is
classified again each day (the history keeps only the changes, :mod:`huitouke.segments.history`).

**Lifecycle** (:data:`LIFECYCLES`), the first that applies, in this order of precedence:

==============  =====================================================================================
``churned``     no paid order for ``churn_days`` (365; per category group, e.g. durables 730)
``at_risk``     no paid order for ``at_risk_days`` (180; per category group, e.g. durables 365)
``new``         first paid order less than ``new_days`` (30) ago
``loyal``       ``loyal_min_orders`` (4) paid orders or more
``repeat``      2 paid orders or more
``one_time``    exactly one paid order
==============  =====================================================================================

Days are counted between shop-local business dates: an order placed today is 0 days ago, so with
``new_days: 30`` the first order's day and the 29 days after it are "new", and with
``churn_days: 365`` the customer is churned 365 days after the last order's day. The category
group is the customer's main group (largest paid spend). Customers without any paid order are not
in the state and so get no segment (the history closes their row; transitions show ``none``).

**R, F, M scores**, 1 to 5, 5 = best: R from the last paid order's date (recent = 5), F from the
number of paid orders, M from the paid total. A score is the quintile of the share of customers
*strictly worse*: ``1 + floor(5 * worse / n)``. Distinct values give exact quintiles; equal values
always get the same score (that of their lowest member), whatever the row order. This keeps the
large tie group of one-time buyers at F = 1 (an "average rank" would lift them to 2 or 3).

**Member tier**: the playbook's rules, tried from top to bottom (default: ``vip``, ``active``, else
``normal``). **Value tier** by average order value: ``low`` (AOV <= 70 CNY), ``mid`` (70 < AOV <= 140),
``premium`` (AOV > 140), compared exactly in cents (``total > threshold * orders``).
**Low-value acquisition**: the first paid order came from a flash sale (聚划算) or was paid with
points (淘金币).
"""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd

from huitouke.pii import get_logger
from huitouke.segments.settings import SegmentSettings

log = get_logger(__name__)

__all__ = [
    "CHURNED",
    "LIFECYCLES",
    "SEGMENT_COLUMNS",
    "SEGMENTS_COLUMNS",
    "classify",
    "quintile_scores",
]

NEW = "new"
ONE_TIME = "one_time"
REPEAT = "repeat"
LOYAL = "loyal"
AT_RISK = "at_risk"
CHURNED = "churned"
# Display order: the customer's journey.
LIFECYCLES: tuple[str, ...] = (NEW, ONE_TIME, REPEAT, LOYAL, AT_RISK, CHURNED)

# What a segment is (what the history records and compares).
SEGMENT_COLUMNS: tuple[str, ...] = (
    "lifecycle",
    "r_score",
    "f_score",
    "m_score",
    "member_tier",
    "value_tier",
    "low_value_acquisition",
    "category_group",
)
# classify()'s result: the segment plus the figures the KPIs need. The labels (lifecycle, member
# and value tier, category group) are categoricals of their names (-1 / NaN: no category group).
SEGMENTS_COLUMNS: tuple[str, ...] = (
    "customer_id",
    *SEGMENT_COLUMNS,
    "acquisition_source",
    "days_since_first_order",
    "days_since_last_order",
    "paid_orders",
    "total_cents",
    "aov_cents",
)


def quintile_scores(values: np.ndarray | pd.Series) -> np.ndarray:
    """Scores 1..5 (int8) where larger values are better: ``1 + floor(5 * strictly_below / n)``.

    Deterministic and independent of row order; equal values get equal scores.
    """
    values = np.asarray(values)
    n = values.size
    if n == 0:
        return np.empty(0, dtype=np.int8)
    if values.dtype.kind in "iu" and int(values.max()) - int(values.min()) <= 4 * n:
        # Small integer range (days, order counts): count instead of sorting; a score per
        # distinct value, then one lookup per row.
        shifted = (values - values.min()).astype(np.intp)
        counts = np.bincount(shifted)
        below = np.cumsum(counts) - counts  # values strictly below each possible value
        return (1 + (5 * below) // n).astype(np.int8)[shifted]
    # floor(5 * below / n) counts the k in 1..4 with below >= m_k = ceil(k * n / 5), and
    # below(v) >= m iff v > the m-th smallest value: four order statistics, no sort.
    m = -((-np.arange(1, 5) * n) // 5)
    bounds = np.partition(values, m - 1)[m - 1]
    scores = np.ones(n, dtype=np.int8)
    for bound in bounds:
        scores += values > bound
    return scores


def classify(
    state: pd.DataFrame, business_date: date, settings: SegmentSettings | None = None
) -> pd.DataFrame:
    """The segment of every customer of ``state`` on ``business_date`` (columns :data:`SEGMENTS_COLUMNS`,
    same row order as ``state``)."""
    settings = settings or SegmentSettings()
    today = np.datetime64(business_date, "D").astype(np.int64)
    first_day = state["first_business_date"].to_numpy(dtype="datetime64[D]").astype(np.int64)
    last_day = state["last_business_date"].to_numpy(dtype="datetime64[D]").astype(np.int64)
    if last_day.size and last_day.max() > today:
        late = int((last_day > today).sum())
        raise ValueError(
            f"the state has {late} customers with orders after {business_date}: "
            "build it with build_state(..., until=business_date) to classify a past date"
        )
    since_first = today - first_day
    since_last = today - last_day
    orders = state["paid_orders"].to_numpy(dtype=np.int64)
    total = state["total_cents"].to_numpy(dtype=np.int64)
    group = state["main_category_group"]

    life = settings.lifecycle
    group_codes, group_names = pd.factorize(group.astype("str"), sort=True)  # -1: no group
    # One row per group, then the default windows, which code -1 (no group) picks.
    windows = np.array(
        [life.windows_for(g) for g in group_names] + [life.windows_for(None)], dtype=np.int64
    ).reshape(-1, 2)
    at_risk_days = windows[group_codes, 0]
    churn_days = windows[group_codes, 1]
    lifecycle_code = np.select(
        [
            since_last >= churn_days,
            since_last >= at_risk_days,
            since_first < life.new_days,
            orders >= life.loyal_min_orders,
            orders >= 2,
        ],
        [LIFECYCLES.index(c) for c in (CHURNED, AT_RISK, NEW, LOYAL, REPEAT)],
        LIFECYCLES.index(ONE_TIME),
    )

    r = quintile_scores(last_day)
    f = quintile_scores(orders)
    m = quintile_scores(total)

    tiers = settings.member_tiers
    conditions = []
    for rule in tiers.rules:
        ok = np.ones(len(state), dtype=bool)
        if rule.min_r is not None:
            ok &= r >= rule.min_r
        if rule.min_f is not None:
            ok &= f >= rule.min_f
        if rule.min_m is not None:
            ok &= m >= rule.min_m
        if rule.min_paid_orders is not None:
            ok &= orders >= rule.min_paid_orders
        if rule.min_total_cny is not None:
            ok &= total >= round(rule.min_total_cny * 100)
        conditions.append(ok)
    tier_code = np.select(conditions, list(range(len(tiers.rules))), len(tiers.rules))

    value = settings.value_tiers
    value_code = np.zeros(len(state), dtype=np.int64)
    for threshold in value.thresholds_cents:
        value_code += total > threshold * orders  # AOV > threshold, exactly, in cents

    source = state["acquisition_source"].astype("str").reset_index(drop=True)
    return pd.DataFrame(
        {
            "customer_id": state["customer_id"].astype("str").reset_index(drop=True),
            "lifecycle": _labels(LIFECYCLES, lifecycle_code),
            "r_score": r,
            "f_score": f,
            "m_score": m,
            "member_tier": _labels(tiers.tiers, tier_code),
            "value_tier": _labels(value.labels, value_code),
            "low_value_acquisition": source.isin(settings.low_value_sources).to_numpy(dtype=bool),
            "category_group": _labels([str(g) for g in group_names], group_codes),
            "acquisition_source": source,
            "days_since_first_order": since_first,
            "days_since_last_order": since_last,
            "paid_orders": orders,
            "total_cents": total,
            "aov_cents": state["aov_cents"].to_numpy(dtype=np.int64),
        },
        copy=False,  # a block per column: no copy of a million rows into 2-D blocks
    )


def _labels(names: tuple[str, ...] | list[str], codes: np.ndarray) -> pd.Series:
    """A label column from a few names and integer codes (-1: none), as a categorical: no string
    per row, and the history diff and the KPIs compare and count the codes."""
    dtype = pd.CategoricalDtype(pd.Index(list(names), dtype="str"))
    return pd.Series(pd.Categorical.from_codes(np.asarray(codes, dtype=np.intp), dtype=dtype))
