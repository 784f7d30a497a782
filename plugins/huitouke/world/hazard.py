"""The natural repurchase hazard: when a customer would buy again if nobody sent them anything.

A customer who comes back at all (a coin of their ``propensity`` after each order, as in the demo
shop's generator) buys again after a gap drawn from a gamma distribution of shape 2 around their
own mean gap (food in weeks, durables in months to years: ``demo_shop.parameters.CATEGORY_GAP_DAYS``
varied per customer). Its hazard at age ``a`` (days since the last order), with ``θ = gap / 2``::

    h(a) = a / (θ (θ + a))          H(a) = a/θ - ln(1 + a/θ)      (cumulative)

rises from 0 after a purchase and levels off at 1/θ: nobody rebuys the day after, and an overdue
customer stays likely to. The shop's calendar multiplies it (:data:`SEASON`): customers wait in
early November for 11.11 and buy on the day, and again on 12.12.

The next natural purchase is found by inversion, which makes it a pure function of one draw: a
budget ``E ~ Exp(1)`` is spent at the rate ``m(day) · h(age)``, and the purchase happens when it
runs out. Everything is computed on a grid of whole days for many customers at once (one matrix
of customers × days, linear inside a day).
"""

from __future__ import annotations

import numpy as np

from huitouke.demo_shop.days import month_and_day

# Hazard multipliers of the shop's calendar: (month, day) -> factor. Early November is quiet
# (customers wait for 11.11: ``demo_shop.parameters.PRE_1111_PULL``), 11.11 and 12.12 are peaks.
SEASON: dict[tuple[int, int], float] = {(11, 10): 1.5, (11, 11): 5.0, (11, 12): 1.5, (12, 12): 2.5}
PRE_1111_FACTOR = 0.65  # November 1-9
WEEKEND_FACTOR = 1.1
GAP_SHAPE = 2.0


def season_factors(first_day: int, days: int) -> np.ndarray:
    """The hazard multiplier of each day from epoch day ``first_day`` on, ``days`` of them."""
    grid = np.arange(first_day, first_day + days)
    month, dom = month_and_day(grid)
    factor = np.ones(days)
    factor[(grid + 3) % 7 >= 5] *= WEEKEND_FACTOR  # 1970-01-01 was a Thursday
    factor[(month == 11) & (dom <= 9)] *= PRE_1111_FACTOR
    for (m, d), value in SEASON.items():
        factor[(month == m) & (dom == d)] *= value
    return factor


def cumulative_hazard(age: np.ndarray, gap: np.ndarray) -> np.ndarray:
    """H(age) of the shape-2 gamma gap with mean ``gap`` (days)."""
    x = np.maximum(age, 0.0) / (gap / GAP_SHAPE)
    return x - np.log1p(x)


def survival(age: np.ndarray, gap: np.ndarray) -> np.ndarray:
    """P(gap > age) of the shape-2 gamma gap with mean ``gap``."""
    x = np.maximum(age, 0.0) / (gap / GAP_SHAPE)
    return (1.0 + x) * np.exp(-x)


def next_purchase(
    start: np.ndarray, last: np.ndarray, gap: np.ndarray, budget: np.ndarray, calendar: Calendar
) -> np.ndarray:
    """When each customer's budget of hazard, spent from time ``start`` on, runs out (epoch days,
    fractional); ``inf`` when not within the calendar. ``last``: the last purchase (age 0)."""
    out = np.full(start.size, np.inf)
    if start.size == 0:
        return out
    first = int(np.floor(start.min()))
    edges = np.arange(first, calendar.end + 1, dtype=float)  # day boundaries
    if edges.size < 2:
        return out
    # The time spent in each day: from max(start, day start) to the day's end.
    lo = np.maximum(edges[None, :-1], start[:, None])
    hi = np.maximum(edges[None, 1:], start[:, None])
    factor = calendar.factors(first, edges.size - 1)[None, :]
    spent = factor * (
        cumulative_hazard(hi - last[:, None], gap[:, None])
        - cumulative_hazard(lo - last[:, None], gap[:, None])
    )
    total = np.cumsum(spent, axis=1)
    hit = total >= budget[:, None]
    found = hit.any(axis=1)
    day = np.argmax(hit, axis=1)
    rows = np.flatnonzero(found)
    d = day[rows]
    before = np.where(d > 0, total[rows, np.maximum(d - 1, 0)], 0.0)
    share = (budget[rows] - before) / np.maximum(spent[rows, d], 1e-300)
    out[rows] = lo[rows, d] + np.clip(share, 0.0, 1.0) * (hi[rows, d] - lo[rows, d])
    return out


class Calendar:
    """The season's day factors, from epoch day ``begin`` to ``end`` (exclusive), looked up by day."""

    def __init__(self, begin: int, end: int) -> None:
        self.begin, self.end = begin, end
        self._factors = season_factors(begin, end - begin)

    def factors(self, first: int, days: int) -> np.ndarray:
        """The factors of ``days`` days from ``first`` (days before ``begin`` count as 1)."""
        out = np.ones(days)
        lo = max(first, self.begin)
        if lo < first + days:
            out[lo - first :] = self._factors[lo - self.begin : lo - self.begin + (first + days - lo)]
        return out
