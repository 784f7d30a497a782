"""The shop's calendar: on which days first orders happen (weekends, the shop's growth, promotion
days, flash events) and at what time of day (an evening peak, 11.11's midnight rush)."""

from __future__ import annotations

import numpy as np

from huitouke.demo_shop.parameters import (
    EVENT_DAYS,
    FLASH_EVENT_FACTOR,
    FLASH_EVENTS_PER_MONTH,
    HOUR_WEIGHTS,
    HOUR_WEIGHTS_1111,
    WEEKEND_FACTOR,
)


def month_and_day(days: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Epoch day numbers -> (month 1-12, day of the month 1-31)."""
    dates = days.astype("datetime64[D]")
    month = dates.astype("datetime64[M]").astype(np.int64) % 12 + 1
    day_of_month = (dates - dates.astype("datetime64[M]")).astype(np.int64) + 1
    return month, day_of_month


def day_weights(rng: np.random.Generator, days: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Relative first-order volume per day: (all organic/points customers, flash-sale customers)."""
    month, day_of_month = month_and_day(days)
    weekday = (days + 3) % 7  # 1970-01-01 was a Thursday; 0 = Monday
    weights = np.ones(days.size)
    weights[weekday >= 5] *= WEEKEND_FACTOR
    weights *= 1.0 + 0.25 * np.arange(days.size) / max(days.size - 1, 1)  # the shop grows
    event = np.zeros(days.size, dtype=bool)
    for (m, d), factor in EVENT_DAYS.items():
        weights[(month == m) & (day_of_month == d)] *= factor
        event |= (month == m) & (day_of_month == d)
    # Flash-sale (聚划算) customers arrive on the big sales and on a couple of flash events a month
    # (on other days than the big sales, which stay the peaks).
    flash = weights**1.5
    months = days.astype("datetime64[D]").astype("datetime64[M]").astype(np.int64)
    for m in np.unique(months):
        in_month = np.flatnonzero((months == m) & ~event)
        k = min(FLASH_EVENTS_PER_MONTH, in_month.size)
        flash[rng.choice(in_month, size=k, replace=False)] *= FLASH_EVENT_FACTOR
    return weights / weights.sum(), flash / flash.sum()


def seconds_of_day(rng: np.random.Generator, days: np.ndarray) -> np.ndarray:
    """A time of day for each order, following the hourly profile (11.11 has its midnight rush)."""
    hours = rng.choice(24, size=days.size, p=HOUR_WEIGHTS / HOUR_WEIGHTS.sum())
    month, day_of_month = month_and_day(days)
    double_eleven = (month == 11) & (day_of_month == 11)
    if double_eleven.any():
        hours[double_eleven] = rng.choice(
            24, size=int(double_eleven.sum()), p=HOUR_WEIGHTS_1111 / HOUR_WEIGHTS_1111.sum()
        )
    return hours * 3600 + rng.integers(0, 3600, size=days.size)
