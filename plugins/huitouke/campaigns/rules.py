"""The entry-rule language of the playbook: declarative YAML, evaluated as array masks (no ``eval``).

A campaign's ``entry:`` says *when* a customer enters (the event) and *who* (conditions); every
condition given must hold, a list means "any of these"::

    entry:
      event: first_order            # first_order | any_paid_order | days_after_order | birthday | state
      segment:                      # the customer's segment today (huitouke.segments.classify)
        lifecycle: [new]            #   new, one_time, repeat, loyal, at_risk, churned
        value_tier: [premium]       #   the playbook's value tier labels
        member_tier: [vip, active]  #   the playbook's member tiers
        category_group: [food]      #   the customer's main category group
        acquisition_source: [organic]
        low_value_acquisition: false
      state:                        # figures of the customer state (bounds are inclusive)
        min_paid_orders: 2          #   also max_paid_orders
        min_aov_cny: 140            #   also max_aov_cny, min_total_cny, max_total_cny
        min_days_since_last_order: 180   # also max_..., min/max_days_since_first_order
      order:                        # at least one of the customer's paid orders of the day
        min_amount_cny: 299         #   also max_amount_cny
        categories: [food]          #   the order has a line in one of these categories
        category_groups: [baby]     #   ... or in one of these category groups

Events, all computed from the day's segment row (so a late run or a re-run sees the same):

==================  =================================================================================
``first_order``     the customer's first paid order is of this business day (``days_since_first_order == 0``)
``any_paid_order``  the customer has a paid order of this business day (``days_since_last_order == 0``)
``days_after_order``  the customer's latest paid order is exactly ``days_after_order`` days old (an
                    order in between restarts the count: "15 days after their latest order")
``birthday``        today is ``days_before_birthday`` days before the customer's birthday (profile
                    form); 29 February is celebrated on 28 February in other years
``state``           every day the conditions hold (use ``reentry_after_days`` to say how often)
==================  =================================================================================

``order:`` conditions look at the day's orders and so need ``first_order`` or ``any_paid_order``.
Campaign variants (``variants:``) use the same ``segment``/``state``/``order`` conditions; the first
variant whose conditions hold is the customer's (see :mod:`huitouke.campaigns.playbook`).

Values are checked against the ``segments:`` section when the playbook is loaded (an unknown tier
is an error naming the file, line and field); amounts are CNY with at most two decimals and are
compared in cents.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from huitouke import records
from huitouke.segments.classify import LIFECYCLES
from huitouke.segments.settings import SegmentSettings

__all__ = [
    "EVENTS",
    "ORDER_COLUMNS",
    "Conditions",
    "EntryRule",
    "OrderFilter",
    "SegmentFilter",
    "RuleInputs",
    "StateFilter",
    "birthday_mask",
    "conditions_mask",
    "entry_mask",
    "event_mask",
    "prepare_orders",
]

Event = Literal["first_order", "any_paid_order", "days_after_order", "birthday", "state"]
EVENTS: tuple[str, ...] = ("first_order", "any_paid_order", "days_after_order", "birthday", "state")
# Events that happen on the day of an order: only they can look at the day's orders.
ORDER_DAY_EVENTS: frozenset[str] = frozenset({"first_order", "any_paid_order"})

# The day's paid orders as the planner takes them.
ORDER_COLUMNS: tuple[str, ...] = (
    "order_id",
    "customer_id",
    "business_date",
    "amount_cents",
    "categories",
    "coupon_code",
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _cents(value: float | None) -> int | None:
    return None if value is None else round(value * 100)


def _check_cny(value: float | None) -> float | None:
    if value is not None and round(value * 100) != value * 100:
        raise ValueError("amounts are in CNY with at most two decimals")
    return value


def _segments_of(info: ValidationInfo) -> SegmentSettings | None:
    context = info.context or {}
    return context.get("segments")


def _known(values: list[str] | None, allowed: Iterable[str], what: str) -> list[str] | None:
    if values is None:
        return None
    allowed = tuple(allowed)
    unknown = [v for v in values if v not in allowed]
    if unknown:
        raise ValueError(f"unknown {what} {', '.join(map(repr, unknown))} (known: {', '.join(allowed)})")
    if not values:
        raise ValueError(f"give at least one {what}, or leave the field out")
    return values


class SegmentFilter(_Strict):
    """Conditions on the customer's segment of the day; each list means "any of"."""

    lifecycle: list[str] | None = None
    member_tier: list[str] | None = None
    value_tier: list[str] | None = None
    category_group: list[str] | None = None
    acquisition_source: list[str] | None = None
    low_value_acquisition: bool | None = None

    @field_validator("lifecycle")
    @classmethod
    def _known_lifecycles(cls, value: list[str] | None) -> list[str] | None:
        return _known(value, LIFECYCLES, "lifecycle")

    @field_validator("member_tier")
    @classmethod
    def _known_member_tiers(cls, value: list[str] | None, info: ValidationInfo) -> list[str] | None:
        segments = _segments_of(info) or SegmentSettings()
        return _known(value, segments.member_tiers.tiers, "member tier")

    @field_validator("value_tier")
    @classmethod
    def _known_value_tiers(cls, value: list[str] | None, info: ValidationInfo) -> list[str] | None:
        segments = _segments_of(info) or SegmentSettings()
        return _known(value, segments.value_tiers.labels, "value tier")

    @field_validator("acquisition_source")
    @classmethod
    def _known_sources(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        out = []
        for source in value:
            canonical = records.ACQUISITION_SYNONYMS.get(str(source).strip().lower())
            if canonical is None or not str(source).strip():
                known = ", ".join(records.ACQUISITION_SOURCES)
                raise ValueError(f"unknown acquisition source {source!r} (known: {known})")
            out.append(canonical)
        return _known(out, records.ACQUISITION_SOURCES, "acquisition source")

    @field_validator("category_group")
    @classmethod
    def _non_empty(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not value:
            raise ValueError("give at least one category group, or leave the field out")
        return value


class StateFilter(_Strict):
    """Bounds on the customer state (inclusive). AOV and totals in CNY, compared in cents."""

    min_paid_orders: int | None = Field(None, ge=1)
    max_paid_orders: int | None = Field(None, ge=1)
    min_aov_cny: float | None = Field(None, ge=0)
    max_aov_cny: float | None = Field(None, ge=0)
    min_total_cny: float | None = Field(None, ge=0)
    max_total_cny: float | None = Field(None, ge=0)
    min_days_since_last_order: int | None = Field(None, ge=0)
    max_days_since_last_order: int | None = Field(None, ge=0)
    min_days_since_first_order: int | None = Field(None, ge=0)
    max_days_since_first_order: int | None = Field(None, ge=0)

    @field_validator("min_aov_cny", "max_aov_cny", "min_total_cny", "max_total_cny")
    @classmethod
    def _two_decimals(cls, value: float | None) -> float | None:
        return _check_cny(value)

    @model_validator(mode="after")
    def _bounds_are_ordered(self) -> StateFilter:
        for low, high in _BOUNDS:
            a, b = getattr(self, f"min_{low}"), getattr(self, f"max_{high}")
            if a is not None and b is not None and a > b:
                raise ValueError(f"min_{low} ({a}) is above max_{high} ({b}): no customer can match")
        return self


# (figure, column in the segments frame, multiplier to the column's unit)
_STATE_FIGURES: tuple[tuple[str, str, int], ...] = (
    ("paid_orders", "paid_orders", 1),
    ("aov_cny", "aov_cents", 100),
    ("total_cny", "total_cents", 100),
    ("days_since_last_order", "days_since_last_order", 1),
    ("days_since_first_order", "days_since_first_order", 1),
)
_BOUNDS = tuple((name, name) for name, _, _ in _STATE_FIGURES)


class OrderFilter(_Strict):
    """At least one paid order of the customer on the business day meets every condition."""

    min_amount_cny: float | None = Field(None, ge=0)
    max_amount_cny: float | None = Field(None, ge=0)
    categories: list[str] | None = None
    category_groups: list[str] | None = None

    @field_validator("min_amount_cny", "max_amount_cny")
    @classmethod
    def _two_decimals(cls, value: float | None) -> float | None:
        return _check_cny(value)

    @model_validator(mode="after")
    def _bounds_are_ordered(self) -> OrderFilter:
        if (
            self.min_amount_cny is not None
            and self.max_amount_cny is not None
            and self.min_amount_cny > self.max_amount_cny
        ):
            raise ValueError(f"min_amount_cny ({self.min_amount_cny}) is above max_amount_cny")
        for name in ("categories", "category_groups"):
            if getattr(self, name) == []:
                raise ValueError(f"{name}: give at least one, or leave the field out")
        return self


class Conditions(_Strict):
    """Conditions on the segment, the state and the day's orders; all that are given must hold."""

    segment: SegmentFilter | None = None
    state: StateFilter | None = None
    order: OrderFilter | None = None


class EntryRule(Conditions):
    """When a customer enters a campaign: an event plus :class:`Conditions`."""

    event: Event
    days_after_order: int | None = Field(None, ge=1, le=3650)
    days_before_birthday: int | None = Field(None, ge=0, le=60)

    @model_validator(mode="after")
    def _event_fields(self) -> EntryRule:
        if self.event == "days_after_order" and self.days_after_order is None:
            raise ValueError(
                "event days_after_order needs `days_after_order: N` (days after the latest order)"
            )
        if self.event != "days_after_order" and self.days_after_order is not None:
            raise ValueError(f"days_after_order only goes with event days_after_order, not {self.event}")
        if self.event != "birthday" and self.days_before_birthday is not None:
            raise ValueError(f"days_before_birthday only goes with event birthday, not {self.event}")
        if self.order is not None and self.event not in ORDER_DAY_EVENTS:
            raise ValueError(
                f"order: conditions look at the day's orders and need event first_order or any_paid_order, "
                f"not {self.event}"
            )
        return self


# ----------------------------------------------------------------------------------- evaluation


def prepare_orders(orders: pd.DataFrame | None, business_date: date) -> pd.DataFrame:
    """The day's paid orders, normalised: :data:`ORDER_COLUMNS` with ``categories`` as tuples of
    str, ``amount_cents`` int64, ``business_date`` datetime64; rows of other days are dropped, and
    so are rows whose optional ``status`` column is not a paid status."""
    if orders is None or orders.empty:
        return pd.DataFrame(
            {
                "order_id": pd.Series([], dtype="str"),
                "customer_id": pd.Series([], dtype="str"),
                "business_date": pd.Series([], dtype="datetime64[ns]"),
                "amount_cents": pd.Series([], dtype="int64"),
                "categories": pd.Series([], dtype=object),
                "coupon_code": pd.Series([], dtype=object),
            }
        )
    missing = [c for c in ("order_id", "customer_id", "business_date", "amount_cents") if c not in orders]
    if missing:
        raise ValueError(f"orders lack columns: {', '.join(missing)}")
    frame = orders
    if "status" in frame.columns:
        frame = frame[frame["status"].isin(records.PAID_STATUSES)]
    day = pd.to_datetime(frame["business_date"]).astype("datetime64[ns]")
    frame = frame[(day == pd.Timestamp(business_date)).to_numpy()]
    categories = frame["categories"] if "categories" in frame.columns else pd.Series([()] * len(frame))
    coupon = frame["coupon_code"] if "coupon_code" in frame.columns else pd.Series([None] * len(frame))
    return pd.DataFrame(
        {
            "order_id": frame["order_id"].astype("str").to_numpy(),
            "customer_id": frame["customer_id"].astype("str").to_numpy(),
            "business_date": pd.Series(pd.Timestamp(business_date), index=range(len(frame))),
            "amount_cents": frame["amount_cents"].to_numpy(dtype=np.int64),
            "categories": [_category_tuple(v) for v in categories],
            "coupon_code": [None if _missing(v) else str(v) for v in coupon],
        }
    )


def _missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _category_tuple(value: Any) -> tuple[str, ...]:
    """A list, tuple, array or comma/pipe-separated string of categories as a tuple of str."""
    if isinstance(value, str):
        parts = value.replace("|", ",").split(",")
    elif isinstance(value, (list, tuple, set, frozenset, np.ndarray, pd.Series)):
        parts = [str(v) for v in value if not _missing(v)]
    elif _missing(value):
        parts = []
    else:
        parts = [str(value)]
    return tuple(p.strip() for p in parts if p and p.strip())


def _column(segments: pd.DataFrame, name: str) -> pd.Series:
    if name not in segments.columns:
        raise ValueError(f"the segments frame lacks the column {name!r} (see SEGMENTS_COLUMNS)")
    return segments[name]


def _segment_mask(flt: SegmentFilter, segments: pd.DataFrame) -> np.ndarray:
    ok = np.ones(len(segments), dtype=bool)
    for field in ("lifecycle", "member_tier", "value_tier", "category_group", "acquisition_source"):
        values = getattr(flt, field)
        if values is not None:
            ok &= _column(segments, field).isin(values).to_numpy(dtype=bool)
    if flt.low_value_acquisition is not None:
        flag = _column(segments, "low_value_acquisition").fillna(False).to_numpy(dtype=bool)
        ok &= flag == flt.low_value_acquisition
    return ok


def _state_mask(flt: StateFilter, segments: pd.DataFrame) -> np.ndarray:
    ok = np.ones(len(segments), dtype=bool)
    for name, column, unit in _STATE_FIGURES:
        low, high = getattr(flt, f"min_{name}"), getattr(flt, f"max_{name}")
        if low is None and high is None:
            continue
        values = pd.to_numeric(_column(segments, column), errors="coerce").to_numpy(dtype=float)
        if low is not None:
            ok &= values >= round(low * unit)
        if high is not None:
            ok &= values <= round(high * unit)
    return ok


def _order_mask(
    flt: OrderFilter, segments: pd.DataFrame, day_orders: pd.DataFrame, settings: SegmentSettings
) -> np.ndarray:
    orders = day_orders
    ok = np.ones(len(orders), dtype=bool)
    amount = orders["amount_cents"].to_numpy(dtype=np.int64)
    if flt.min_amount_cny is not None:
        ok &= amount >= _cents(flt.min_amount_cny)
    if flt.max_amount_cny is not None:
        ok &= amount <= _cents(flt.max_amount_cny)
    if flt.categories is not None or flt.category_groups is not None:
        wanted = set(flt.categories or ())
        groups = set(flt.category_groups or ())
        mapping = settings.category_group_map()
        ok &= np.fromiter(
            (
                any(c in wanted or mapping.get(c, c) in groups for c in (cats or (records.UNKNOWN_CATEGORY,)))
                for cats in orders["categories"]
            ),
            dtype=bool,
            count=len(orders),
        )
    buyers = orders["customer_id"].to_numpy()[ok]
    return _column(segments, "customer_id").isin(buyers).to_numpy(dtype=bool)


def conditions_mask(
    conditions: Conditions,
    segments: pd.DataFrame,
    day_orders: pd.DataFrame,
    settings: SegmentSettings | None = None,
) -> np.ndarray:
    """Which rows of ``segments`` meet ``conditions`` (bool array, same order).

    ``day_orders`` is :func:`prepare_orders`' result (only needed for ``order:`` conditions).
    """
    settings = settings or SegmentSettings()
    ok = np.ones(len(segments), dtype=bool)
    if conditions.segment is not None:
        ok &= _segment_mask(conditions.segment, segments)
    if conditions.state is not None:
        ok &= _state_mask(conditions.state, segments)
    if conditions.order is not None:
        ok &= _order_mask(conditions.order, segments, day_orders, settings)
    return ok


def birthday_mask(birthdays: pd.Series, on: date) -> np.ndarray:
    """Whose birthday (a date of any year; missing = never) falls on ``on``'s month and day.

    29 February birthdays are celebrated on 28 February in years without a 29 February.
    """
    born = pd.to_datetime(pd.Series(birthdays).reset_index(drop=True), errors="coerce")
    month = born.dt.month.to_numpy(dtype=float)
    day = born.dt.day.to_numpy(dtype=float)
    ok = (month == on.month) & (day == on.day)
    if on.month == 2 and on.day == 28:
        leap = on.year % 4 == 0 and (on.year % 100 != 0 or on.year % 400 == 0)
        if not leap:
            ok |= (month == 2) & (day == 29)
    return ok


def event_mask(
    rule: EntryRule, segments: pd.DataFrame, birthdays: pd.Series | None, business_date: date
) -> np.ndarray:
    """Which rows of ``segments`` have the rule's event today. ``birthdays`` is aligned with
    ``segments`` (only needed for the birthday event)."""
    n = len(segments)
    if rule.event == "state":
        return np.ones(n, dtype=bool)
    if rule.event == "birthday":
        if birthdays is None:
            return np.zeros(n, dtype=bool)
        return birthday_mask(birthdays, business_date + timedelta(days=rule.days_before_birthday or 0))
    if rule.event == "first_order":
        days, target = _column(segments, "days_since_first_order"), 0
    elif rule.event == "any_paid_order":
        days, target = _column(segments, "days_since_last_order"), 0
    else:
        days, target = _column(segments, "days_since_last_order"), rule.days_after_order
    return pd.to_numeric(days, errors="coerce").to_numpy(dtype=float) == target


@dataclass(frozen=True)
class RuleInputs:
    """What the entry rules read on a business day: the day's segments; its paid orders
    (:func:`prepare_orders`' result, for ``order:`` conditions); the customers' birthdays, aligned
    with ``segments`` (for the birthday event only); the segment settings (tier and lifecycle
    names)."""

    segments: pd.DataFrame
    day_orders: pd.DataFrame
    birthdays: pd.Series | None
    business_date: date
    settings: SegmentSettings | None = None


def entry_mask(rule: EntryRule, inputs: RuleInputs) -> np.ndarray:
    """Which rows of ``inputs.segments`` meet the rule today: its event and all its conditions."""
    ok = event_mask(rule, inputs.segments, inputs.birthdays, inputs.business_date)
    if ok.any():
        ok &= conditions_mask(rule, inputs.segments, inputs.day_orders, inputs.settings)
    return ok
