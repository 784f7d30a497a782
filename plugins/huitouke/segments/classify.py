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

from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd

from huitouke.pii import get_logger
from huitouke.segments.settings import (
    LifecycleSettings,
    MemberTierSettings,
    SegmentSettings,
    TierRule,
    ValueTierSettings,
)
from huitouke.store.schema import segment_history

log = get_logger(__name__)

__all__ = [
    "CHURNED",
    "LIFECYCLES",
    "SEGMENT_COLUMNS",
    "SEGMENTS_COLUMNS",
    "QuintileBounds",
    "classify",
    "quintile_bounds",
    "quintile_scores",
    "scores_from_bounds",
]

NEW = "new"
ONE_TIME = "one_time"
REPEAT = "repeat"
LOYAL = "loyal"
AT_RISK = "at_risk"
CHURNED = "churned"
# Display order: the customer's journey.
LIFECYCLES: tuple[str, ...] = (NEW, ONE_TIME, REPEAT, LOYAL, AT_RISK, CHURNED)

# What a segment is (what the history records and compares): the columns of the segment_history
# table (huitouke.store.schema) other than its key, the customer and the validity range.
SEGMENT_COLUMNS: tuple[str, ...] = tuple(
    name
    for name in segment_history.columns.keys()
    if name not in ("segment_id", "customer_id", "valid_from", "valid_to")
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


def quintile_bounds(values: np.ndarray | pd.Series) -> np.ndarray:
    """The four cut points of :func:`quintile_scores` over ``values`` (int64): the ``m_k``-th
    smallest value for ``m_k = ceil(k * n / 5)``, k = 1..4 (empty when there are no values).

    ``scores_from_bounds(v, quintile_bounds(values))`` is ``quintile_scores(values)`` for every
    ``v`` of ``values``, so a part of the customers is scored exactly as among all of them from
    these four numbers of the whole (the customer shards, :mod:`huitouke.shards`)."""
    values = np.asarray(values, dtype=np.int64)
    n = values.size
    if n == 0:
        return np.empty(0, dtype=np.int64)
    m = -((-np.arange(1, 5) * n) // 5)
    return np.partition(values, m - 1)[m - 1]


def scores_from_bounds(values: np.ndarray | pd.Series, bounds: np.ndarray) -> np.ndarray:
    """Scores 1..5 (int8) of ``values`` against cut points of :func:`quintile_bounds`: 1 plus the
    number of cut points the value is above (the rule of :func:`quintile_scores`)."""
    values = np.asarray(values)
    scores = np.ones(values.size, dtype=np.int8)
    for bound in bounds:
        scores += values > bound
    return scores


@dataclass(frozen=True)
class QuintileBounds:
    """The R, F and M cut points of a whole customer state (:func:`quintile_bounds` of the last
    paid order's day number, the paid orders and the paid total): what a shard of the customers
    needs to be classified as among all of them."""

    recency: np.ndarray
    frequency: np.ndarray
    monetary: np.ndarray

    @classmethod
    def of(cls, state: pd.DataFrame) -> QuintileBounds:
        last_day = state["last_business_date"].to_numpy(dtype="datetime64[D]").astype(np.int64)
        return cls(
            quintile_bounds(last_day),
            quintile_bounds(state["paid_orders"].to_numpy(dtype=np.int64)),
            quintile_bounds(state["total_cents"].to_numpy(dtype=np.int64)),
        )


def classify(
    state: pd.DataFrame,
    business_date: date,
    settings: SegmentSettings | None = None,
    bounds: QuintileBounds | None = None,
) -> pd.DataFrame:
    """The segment of every customer of ``state`` on ``business_date`` (columns :data:`SEGMENTS_COLUMNS`,
    same row order as ``state``). ``bounds``: the R/F/M cut points of a larger state that ``state``
    is a part of (a shard's customers), scored as among all of its customers; None: ``state``'s own."""
    settings = settings or SegmentSettings()
    figures = _Figures.of(state, business_date)
    groups = _Groups.of(state["main_category_group"])
    if bounds is None:
        r = quintile_scores(figures.last_day)
        f = quintile_scores(figures.orders)
        m = quintile_scores(figures.total)
    else:
        r = scores_from_bounds(figures.last_day, bounds.recency)
        f = scores_from_bounds(figures.orders, bounds.frequency)
        m = scores_from_bounds(figures.total, bounds.monetary)
    tiers = settings.member_tiers
    value = settings.value_tiers
    source = state["acquisition_source"].astype("str").reset_index(drop=True)
    return pd.DataFrame(
        {
            "customer_id": state["customer_id"].astype("str").reset_index(drop=True),
            "lifecycle": _labels(LIFECYCLES, _lifecycle_codes(figures, groups, settings.lifecycle)),
            "r_score": r,
            "f_score": f,
            "m_score": m,
            "member_tier": _labels(tiers.tiers, _member_tier_codes(tiers, (r, f, m), figures)),
            "value_tier": _labels(value.labels, _value_tier_codes(value, figures)),
            "low_value_acquisition": source.isin(settings.low_value_sources).to_numpy(dtype=bool),
            "category_group": _labels(groups.names, groups.codes),
            "acquisition_source": source,
            "days_since_first_order": figures.since_first,
            "days_since_last_order": figures.since_last,
            "paid_orders": figures.orders,
            "total_cents": figures.total,
            "aov_cents": state["aov_cents"].to_numpy(dtype=np.int64),
        },
        copy=False,  # a block per column: no copy of a million rows into 2-D blocks
    )


@dataclass(frozen=True)
class _Figures:
    """What classify reads of the state, as int64 arrays: days as day numbers, money in cents."""

    last_day: np.ndarray  # the last paid order's business date
    since_first: np.ndarray  # days since the first paid order's business date
    since_last: np.ndarray  # days since the last one's
    orders: np.ndarray  # paid orders
    total: np.ndarray  # paid total, cents

    @classmethod
    def of(cls, state: pd.DataFrame, business_date: date) -> _Figures:
        """The figures of ``state`` on ``business_date``; a state with later orders is refused."""
        today = np.datetime64(business_date, "D").astype(np.int64)
        first_day = state["first_business_date"].to_numpy(dtype="datetime64[D]").astype(np.int64)
        last_day = state["last_business_date"].to_numpy(dtype="datetime64[D]").astype(np.int64)
        if last_day.size and last_day.max() > today:
            late = int((last_day > today).sum())
            raise ValueError(
                f"the state has {late} customers with orders after {business_date}: "
                "build it with build_state(..., until=business_date) to classify a past date"
            )
        return cls(
            last_day=last_day,
            since_first=today - first_day,
            since_last=today - last_day,
            orders=state["paid_orders"].to_numpy(dtype=np.int64),
            total=state["total_cents"].to_numpy(dtype=np.int64),
        )


@dataclass(frozen=True)
class _Groups:
    """The customers' main category groups as codes (-1: no group) of their sorted names."""

    codes: np.ndarray
    names: list[str]

    @classmethod
    def of(cls, group: pd.Series) -> _Groups:
        codes, names = pd.factorize(group.astype("str"), sort=True)
        return cls(codes, [str(g) for g in names])


def _lifecycle_codes(figures: _Figures, groups: _Groups, life: LifecycleSettings) -> np.ndarray:
    """Each customer's index in :data:`LIFECYCLES`: the first lifecycle that applies."""
    # One row per group, then the default windows, which code -1 (no group) picks.
    windows = np.array(
        [life.windows_for(g) for g in groups.names] + [life.windows_for(None)], dtype=np.int64
    ).reshape(-1, 2)
    at_risk_days = windows[groups.codes, 0]
    churn_days = windows[groups.codes, 1]
    return np.select(
        [
            figures.since_last >= churn_days,
            figures.since_last >= at_risk_days,
            figures.since_first < life.new_days,
            figures.orders >= life.loyal_min_orders,
            figures.orders >= 2,
        ],
        [LIFECYCLES.index(c) for c in (CHURNED, AT_RISK, NEW, LOYAL, REPEAT)],
        LIFECYCLES.index(ONE_TIME),
    )


def _member_tier_codes(
    tiers: MemberTierSettings, scores: tuple[np.ndarray, np.ndarray, np.ndarray], figures: _Figures
) -> np.ndarray:
    """Each customer's index in ``tiers.tiers``: the first rule whose conditions all hold, else
    the last (``otherwise``)."""
    conditions = [_meets(rule, scores, figures) for rule in tiers.rules]
    return np.select(conditions, list(range(len(tiers.rules))), len(tiers.rules))


def _meets(
    rule: TierRule, scores: tuple[np.ndarray, np.ndarray, np.ndarray], figures: _Figures
) -> np.ndarray:
    """Whether each customer meets every condition the rule gives."""
    r, f, m = scores
    ok = np.ones(len(figures.orders), dtype=bool)
    if rule.min_r is not None:
        ok &= r >= rule.min_r
    if rule.min_f is not None:
        ok &= f >= rule.min_f
    if rule.min_m is not None:
        ok &= m >= rule.min_m
    if rule.min_paid_orders is not None:
        ok &= figures.orders >= rule.min_paid_orders
    if rule.min_total_cny is not None:
        ok &= figures.total >= round(rule.min_total_cny * 100)
    return ok


def _value_tier_codes(value: ValueTierSettings, figures: _Figures) -> np.ndarray:
    """Each customer's index in ``value.labels``: the number of thresholds their AOV is above."""
    codes = np.zeros(len(figures.orders), dtype=np.int64)
    for threshold in value.thresholds_cents:
        codes += figures.total > threshold * figures.orders  # AOV > threshold, exactly, in cents
    return codes


def _labels(names: tuple[str, ...] | list[str], codes: np.ndarray) -> pd.Series:
    """A label column from a few names and integer codes (-1: none), as a categorical: no string
    per row, and the history diff and the KPIs compare and count the codes."""
    dtype = pd.CategoricalDtype(pd.Index(list(names), dtype="str"))
    return pd.Series(pd.Categorical.from_codes(np.asarray(codes, dtype=np.intp), dtype=dtype))
