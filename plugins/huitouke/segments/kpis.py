"""The day's customer KPIs, as a JSON-able dict and as readable text tables.

- **churn rate**: share of customers (with at least one paid order) whose lifecycle is ``churned``,
  i.e. no paid order for ``churn_days`` (per category group);
- **repeat rate**: share of customers with 2 or more paid orders;
- **segment sizes**: customers per lifecycle x member tier;
- **value-tier table** (seed article 001): per AOV tier, the share of customers, the share of GMV,
  the repeat rate and the mean order value (GMV / orders); then the cumulative rows of the seed
  ("AOV > 70", "AOV > 140") and the whole shop;
- customers, repeat rate and mean order value per acquisition source (flash-sale and points
  customers rarely come back, DOMAIN.md);
- the day's lifecycle transitions, when given.

Money is counted in cents; the text shows CNY. :func:`analyze` runs the whole chain (state,
segments, KPIs) on a table of orders, e.g. an order export.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
import pandas as pd

from huitouke.pii import get_logger
from huitouke.segments.classify import CHURNED, LIFECYCLES, classify
from huitouke.segments.history import label_codes
from huitouke.segments.settings import SegmentSettings, ValueTierSettings
from huitouke.segments.state import build_state

log = get_logger(__name__)

__all__ = ["Analysis", "analyze", "compute_kpis", "format_kpis"]

ALL_CUSTOMERS = "whole shop"


def _share(part: float, whole: float) -> float:
    return float(part) / float(whole) if whole else 0.0


def _cny(cents: float) -> float:
    return round(float(cents) / 100.0, 2)


def _codes(values: pd.Series, names: tuple[str, ...] | list[str]) -> np.ndarray:
    """Index of each value in ``names`` (len(names) for anything else)."""
    codes, uniques = label_codes(values)  # -1 for missing values
    index = {name: i for i, name in enumerate(names)}
    lookup = np.array([index.get(u, len(names)) for u in uniques] + [len(names)], dtype=np.int64)
    return lookup[codes]


def _sums(codes: np.ndarray, groups: int, orders: np.ndarray, total: np.ndarray) -> np.ndarray:
    """Per code 0..groups-1: customers, GMV (cents), paid orders, repeat customers (one pass each;
    float weights are exact for integer sums below 2**53)."""
    columns = [
        np.bincount(codes, weights=weights, minlength=groups + 1)[:groups]
        for weights in (None, total, orders, (orders >= 2).astype(np.float64))
    ]
    return np.rint(np.stack(columns, axis=1)).astype(np.int64)


@dataclass(frozen=True)
class _Shop:
    """The customers' paid orders and totals, and the whole shop's sums the shares divide by."""

    orders: np.ndarray  # paid orders per customer
    total: np.ndarray  # paid total per customer, cents
    customers: int
    gmv: int  # cents
    paid_orders: int
    repeat: int  # customers with 2 or more paid orders

    @classmethod
    def of(cls, segments: pd.DataFrame) -> _Shop:
        orders = segments["paid_orders"].to_numpy(dtype=np.int64)
        total = segments["total_cents"].to_numpy(dtype=np.int64)
        return cls(
            orders, total, len(segments), int(total.sum()), int(orders.sum()), int((orders >= 2).sum())
        )

    def sums(self, codes: np.ndarray, groups: int) -> np.ndarray:
        """:func:`_sums` of these customers."""
        return _sums(codes, groups, self.orders, self.total)

    def row(self, tier: str, aov: str, sums: np.ndarray) -> dict[str, Any]:
        """A row of the value-tier table from a group's :func:`_sums`."""
        n, tier_gmv, tier_orders, repeat = (int(v) for v in sums)
        return {
            "tier": tier,
            "aov_cny": aov,
            "customers": n,
            "customer_share": _share(n, self.customers),
            "gmv_cents": tier_gmv,
            "gmv_share": _share(tier_gmv, self.gmv),
            "orders": tier_orders,
            "repeat_customers": repeat,
            "repeat_rate": _share(repeat, n),
            "mean_order_value_cny": _cny(_share(tier_gmv, tier_orders)),
        }


def compute_kpis(
    segments: pd.DataFrame,
    business_date: date,
    settings: SegmentSettings | None = None,
    transitions: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """The day's KPIs from :func:`~huitouke.segments.classify.classify`'s result (JSON-able)."""
    settings = settings or SegmentSettings()
    shop = _Shop.of(segments)
    tiers = settings.member_tiers.tiers
    sizes = _segment_sizes(segments, tiers)
    churned = int(sizes[LIFECYCLES.index(CHURNED)].sum())
    kpis: dict[str, Any] = {
        "business_date": business_date.isoformat(),
        "customers": shop.customers,
        "paid_orders": shop.paid_orders,
        "gmv_cents": shop.gmv,
        "mean_order_value_cny": _cny(_share(shop.gmv, shop.paid_orders)),
        "churned_customers": churned,
        "churn_rate": _share(churned, shop.customers),
        "repeat_customers": shop.repeat,
        "repeat_rate": _share(shop.repeat, shop.customers),
        "lifecycle": {name: int(sizes[i].sum()) for i, name in enumerate(LIFECYCLES)},
        "member_tiers": {tier: int(sizes[:, j].sum()) for j, tier in enumerate(tiers)},
        "segments": [
            {"lifecycle": life, "member_tier": tier, "customers": int(sizes[i, j])}
            for i, life in enumerate(LIFECYCLES)
            for j, tier in enumerate(tiers)
        ],
        "value_tiers": _value_tier_table(segments["value_tier"], settings.value_tiers, shop),
        "acquisition_sources": _by_source(segments["acquisition_source"], settings.low_value_sources, shop),
        "low_value_acquisition_customers": int(segments["low_value_acquisition"].to_numpy(dtype=bool).sum()),
    }
    if transitions is not None:
        kpis["transitions"] = [
            {"from": str(r.from_lifecycle), "to": str(r.to_lifecycle), "customers": int(r.customers)}
            for r in transitions.itertuples(index=False)
        ]
    return kpis


def _segment_sizes(segments: pd.DataFrame, tiers: tuple[str, ...]) -> np.ndarray:
    """Customers per lifecycle (rows, as :data:`LIFECYCLES`) x member tier (columns, as ``tiers``)."""
    life_code = _codes(segments["lifecycle"], LIFECYCLES)
    tier_code = _codes(segments["member_tier"], tiers)
    sizes = np.bincount(
        life_code * (len(tiers) + 1) + tier_code, minlength=(len(LIFECYCLES) + 1) * (len(tiers) + 1)
    )
    return sizes.reshape(len(LIFECYCLES) + 1, len(tiers) + 1)[: len(LIFECYCLES), : len(tiers)]


def _value_tier_table(value_tier: pd.Series, value: ValueTierSettings, shop: _Shop) -> list[dict[str, Any]]:
    """A row per value tier, then the cumulative rows of the seed ("AOV > 70", ...), then the shop."""
    bounds = [f"{t:g}" for t in value.thresholds_cny]
    ranges = (
        [f"<= {bounds[0]}"]
        + [f"{a} - {b}" for a, b in zip(bounds, bounds[1:], strict=False)]
        + [f"> {bounds[-1]}"]
    )
    tier_sums = shop.sums(_codes(value_tier, value.labels), len(value.labels))
    table = [shop.row(label, ranges[i], tier_sums[i]) for i, label in enumerate(value.labels)]
    for threshold, text in zip(value.thresholds_cents, bounds, strict=True):
        above = (shop.total > threshold * shop.orders).astype(np.int64)
        table.append(shop.row(f"aov > {text}", f"> {text}", shop.sums(above, 2)[1]))
    everyone = np.array([shop.customers, shop.gmv, shop.paid_orders, shop.repeat], dtype=np.int64)
    table.append(shop.row(ALL_CUSTOMERS, "all", everyone))
    return table


def _by_source(source: pd.Series, low_value_sources: list[str], shop: _Shop) -> list[dict[str, Any]]:
    """Customers, repeat rate and mean order value per acquisition source (sorted by name)."""
    source_code, source_names = pd.factorize(source.astype("str"), sort=True)
    source_sums = shop.sums(np.where(source_code < 0, len(source_names), source_code), len(source_names))
    return [
        {
            "source": str(src),
            "low_value": str(src) in low_value_sources,
            **{
                k: v
                for k, v in shop.row(str(src), "", source_sums[i]).items()
                if k not in ("tier", "aov_cny")
            },
        }
        for i, src in enumerate(source_names)
    ]


# --------------------------------------------------------------------------------------------------
# Text tables
# --------------------------------------------------------------------------------------------------


def _pct(value: float) -> str:
    return f"{100 * value:.2f}%"


def _money(cny: float) -> str:
    return f"{cny:,.2f}"


def _table(headers: list[str], rows: list[list[str]], left: int = 1) -> str:
    """An aligned plain-text table; the first ``left`` columns are left-aligned, the rest right."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    out = [line(headers), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in rows]
    return "\n".join(s.rstrip() for s in out)


def format_kpis(kpis: dict[str, Any]) -> str:
    """The KPIs of :func:`compute_kpis` as readable text tables (amounts in CNY)."""
    parts = [
        f"Customer segments on {kpis['business_date']} (客户分层)",
        "",
        _headline_table(kpis),
        "",
        "churn rate (流失率): share of customers without a paid order for churn_days",
        "repeat rate (复购率): share of customers with 2 or more paid orders",
        "",
        "Value tiers by average order value (客单价分层, seed 001)",
        _value_tier_text(kpis["value_tiers"]),
        "",
        "Lifecycle x member tier, customers (生命周期 x 会员等级)",
        _segment_size_text(kpis),
        "",
        "Acquisition source of the first order (首单来源)",
        _source_text(kpis["acquisition_sources"]),
    ]
    if "transitions" in kpis:
        parts += ["", "Lifecycle transitions today (今日状态变化)", _transition_text(kpis["transitions"])]
    return "\n".join(parts) + "\n"


def _headline_table(kpis: dict[str, Any]) -> str:
    return _table(
        ["figure", "value", "customers"],
        [
            ["customers (1+ paid order)", f"{kpis['customers']:,}", ""],
            ["paid orders", f"{kpis['paid_orders']:,}", ""],
            ["GMV (CNY)", _money(kpis["gmv_cents"] / 100), ""],
            ["mean order value (CNY)", _money(kpis["mean_order_value_cny"]), ""],
            ["churn rate", _pct(kpis["churn_rate"]), f"{kpis['churned_customers']:,}"],
            ["repeat rate", _pct(kpis["repeat_rate"]), f"{kpis['repeat_customers']:,}"],
        ],
    )


def _value_tier_text(value_tiers: list[dict[str, Any]]) -> str:
    return _table(
        ["tier", "AOV (CNY)", "customers", "share", "GMV share", "repeat rate", "mean order (CNY)"],
        [
            [
                r["tier"],
                r["aov_cny"],
                f"{r['customers']:,}",
                _pct(r["customer_share"]),
                _pct(r["gmv_share"]),
                _pct(r["repeat_rate"]),
                _money(r["mean_order_value_cny"]),
            ]
            for r in value_tiers
        ],
        left=2,
    )


def _segment_size_text(kpis: dict[str, Any]) -> str:
    tiers = list(kpis["member_tiers"])
    cells = {(s["lifecycle"], s["member_tier"]): s["customers"] for s in kpis["segments"]}
    rows = [
        [life, *(f"{cells[(life, t)]:,}" for t in tiers), f"{kpis['lifecycle'][life]:,}"]
        for life in kpis["lifecycle"]
    ]
    rows.append(["total", *(f"{kpis['member_tiers'][t]:,}" for t in tiers), f"{kpis['customers']:,}"])
    return _table(["lifecycle", *tiers, "total"], rows)


def _source_text(sources: list[dict[str, Any]]) -> str:
    return _table(
        ["source", "low value", "customers", "share", "repeat rate", "mean order (CNY)"],
        [
            [
                s["source"],
                "yes" if s["low_value"] else "no",
                f"{s['customers']:,}",
                _pct(s["customer_share"]),
                _pct(s["repeat_rate"]),
                _money(s["mean_order_value_cny"]),
            ]
            for s in sources
        ],
        left=2,
    )


def _transition_text(transitions: list[dict[str, Any]]) -> str:
    if not transitions:
        return "(none)"
    return _table(
        ["from", "to", "customers"],
        [[t["from"], t["to"], f"{t['customers']:,}"] for t in transitions],
        left=2,
    )


# --------------------------------------------------------------------------------------------------
# The whole chain on a table of orders
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Analysis:
    """State, segments and KPIs of a set of orders on one business date."""

    business_date: date
    state: pd.DataFrame
    segments: pd.DataFrame
    kpis: dict[str, Any]

    def text(self) -> str:
        return format_kpis(self.kpis)


def analyze(
    orders: pd.DataFrame,
    lines: pd.DataFrame | None = None,
    settings: SegmentSettings | None = None,
    business_date: date | None = None,
) -> Analysis:
    """State, segments and KPIs straight from store-shaped orders and lines (e.g. an order export
    validated by :func:`huitouke.intake.validate.validate`). ``business_date`` defaults to the
    latest business date among the orders; later orders are ignored."""
    settings = settings or SegmentSettings()
    if business_date is None:
        dates = pd.to_datetime(orders["business_date"]).dropna()
        if dates.empty:
            raise ValueError("no order has a business date: nothing to analyze")
        business_date = dates.max().date()
    state = build_state(orders, lines, settings=settings, until=business_date)
    segments = classify(state, business_date, settings)
    kpis = compute_kpis(segments, business_date, settings)
    log.info(
        "analyzed %d orders: %d customers, churn rate %.2f%%, repeat rate %.2f%%",
        len(orders),
        kpis["customers"],
        100 * kpis["churn_rate"],
        100 * kpis["repeat_rate"],
    )
    return Analysis(business_date=business_date, state=state, segments=segments, kpis=kpis)
