"""Arm against control, from one row per customer: every figure of an evaluation, as a table.

:func:`compare_arms` takes a per-customer frame (arm, responded, revenue in cents, optional cost
in cents), summarises each arm (:func:`summarize_arms`, one groupby) and compares every non-control
arm with the control (:func:`compare_summaries`, vectorised over any number of groups), so the
daily evaluation computes all its waves, windows and breakdowns in a few calls.

Output columns (:data:`COMPARISON_COLUMNS`, after the ``by`` columns), one row per (group, arm):

==========================================  =====================================================
``arm``, ``control``                          the compared arm and the control arm's names
``customers``, ``control_customers``          customers per arm
``responders``, ``control_responders``        customers who responded
``response_rate``, ``control_rate``           responders / customers (the control's: natural
                                              repurchase rate when the control is a holdout)
``lift``, ``lift_low``, ``lift_high``         absolute lift (a fraction: 0.04 = 4 points) and its
                                              interval at the rules' confidence, 95% by default
                                              (:mod:`huitouke.evaluate.stats`)
``p_value``, ``test``                         two-sided p-value; ``z`` (pooled z-test) or
                                              ``fisher`` (small counts)
``interval``                                  ``newcombe`` or ``wald``
``relative_lift``, ``…_low``, ``…_high``      rate / control rate - 1, Katz interval (NaN when
                                              an arm has no responder)
``revenue_cents``, ``control_revenue_cents``  revenue of the arm's customers (integer cents)
``revenue_per_customer_cents``,               mean revenue per customer (non-responders = 0)
``control_revenue_per_customer_cents``
``incremental_revenue_per_customer_cents``    difference of the means, Welch interval
(``_low_cents``, ``_high_cents`` for the       (``..._per_customer_low_cents`` …) and p-value
interval), ``revenue_p_value``                (``revenue_p_value``)
``incremental_revenue_cents`` (``_low``,      the difference per customer × the arm's customers:
``_high``)                                    what the arm added, in total
``responder_revenue_cents``                   revenue of the arm's responders (what sellers'
                                              tools credit to the message)
``cost_cents``, ``control_cost_cents``        the arms' costs (floats: an SMS costs 4.5 fen)
``incremental_cost_cents``                    cost − control cost per customer × customers
``net_incremental_cents``                     incremental revenue − incremental cost
``incremental_roi`` (``_low``, ``_high``)     incremental revenue / incremental cost: CNY added
                                              per CNY spent (NaN without cost)
``naive_roi``                                 responders' revenue / cost: the figure sellers
                                              quote ("ROI 1:80")
``mde``                                       minimum detectable absolute lift (80% power)
``verdict``, ``verdict_text``                 :data:`huitouke.evaluate.stats.VERDICTS`
==========================================  =====================================================

Money is integer cents in sums and float cents in means and costs; tables show CNY with two
decimals. Nothing here reads or prints a customer: only counts and sums.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from datetime import date, datetime
from typing import Any

import numpy as np
import pandas as pd

from huitouke.evaluate import stats
from huitouke.evaluate.stats import DEFAULT_RULES, ComparisonRules

__all__ = [
    "COMPARISON_COLUMNS",
    "SUMMARY_COLUMNS",
    "adjust_for_multiplicity",
    "as_records",
    "compare_arms",
    "compare_summaries",
    "confidence_label",
    "format_comparisons",
    "format_table",
    "summarize_arms",
    "to_json",
]

SUMMARY_COLUMNS = [
    "arm",
    "customers",
    "responders",
    "revenue_cents",
    "revenue_mean_cents",
    "revenue_var_cents",
    "responder_revenue_cents",
    "cost_cents",
]

COMPARISON_COLUMNS = [
    "arm",
    "control",
    "customers",
    "control_customers",
    "responders",
    "control_responders",
    "response_rate",
    "control_rate",
    "lift",
    "lift_low",
    "lift_high",
    "p_value",
    "test",
    "interval",
    "relative_lift",
    "relative_lift_low",
    "relative_lift_high",
    "revenue_cents",
    "control_revenue_cents",
    "revenue_per_customer_cents",
    "control_revenue_per_customer_cents",
    "incremental_revenue_per_customer_cents",
    "incremental_revenue_per_customer_low_cents",
    "incremental_revenue_per_customer_high_cents",
    "revenue_p_value",
    "incremental_revenue_cents",
    "incremental_revenue_low_cents",
    "incremental_revenue_high_cents",
    "responder_revenue_cents",
    "cost_cents",
    "control_cost_cents",
    "incremental_cost_cents",
    "net_incremental_cents",
    "incremental_roi",
    "incremental_roi_low",
    "incremental_roi_high",
    "naive_roi",
    "mde",
    "verdict",
    "verdict_text",
]


# ---------------------------------------------------------------------------------- summaries


def summarize_arms(
    frame: pd.DataFrame,
    by: Sequence[str] = (),
    *,
    arm: str = "arm",
    responded: str = "responded",
    revenue: str | None = "revenue_cents",
    cost: str | None = None,
) -> pd.DataFrame:
    """One row per (``by``…, arm): :data:`SUMMARY_COLUMNS`, the sufficient statistics of a comparison.

    ``revenue`` and ``cost`` may be None (or absent columns given as None): their figures are NaN.
    """
    if arm in by:
        raise ValueError(f"the arm column {arm!r} cannot also be a group column")
    keys = [*by, arm]
    data = pd.DataFrame({k: frame[k] for k in keys})
    data["_responded"] = frame[responded].astype(bool).to_numpy()
    has_revenue = revenue is not None
    data["_revenue"] = frame[revenue].astype(float).to_numpy() if has_revenue else np.nan
    data["_responder_revenue"] = np.where(data["_responded"], data["_revenue"], 0.0)
    data["_cost"] = frame[cost].astype(float).to_numpy() if cost is not None else 0.0
    grouped = data.groupby(keys, sort=True, observed=True, dropna=False)
    out = grouped.agg(
        customers=("_responded", "size"),
        responders=("_responded", "sum"),
        revenue_cents=("_revenue", "sum"),
        revenue_mean_cents=("_revenue", "mean"),
        revenue_var_cents=("_revenue", "var"),
        responder_revenue_cents=("_responder_revenue", "sum"),
        cost_cents=("_cost", "sum"),
    ).reset_index()
    out = out.rename(columns={arm: "arm"})
    out["customers"] = out["customers"].astype("int64")
    out["responders"] = out["responders"].astype("int64")
    if has_revenue:
        out["revenue_cents"] = out["revenue_cents"].round().astype("int64")
        out["responder_revenue_cents"] = out["responder_revenue_cents"].round().astype("int64")
    else:
        out["revenue_cents"] = np.nan
        out["responder_revenue_cents"] = np.nan
    return out[[*by, *SUMMARY_COLUMNS]]


def _full_index(summary: pd.DataFrame, by: Sequence[str], arms: Sequence[str]) -> pd.DataFrame:
    """Every (group, arm) pair, so that an arm missing from a group still gets a row."""
    arms_frame = pd.DataFrame({"arm": pd.Series(list(arms), dtype=object)})
    if not by:
        return arms_frame
    groups = summary[list(by)].drop_duplicates()
    return groups.merge(arms_frame, how="cross")


def compare_summaries(
    summary: pd.DataFrame,
    control: str,
    *,
    by: Sequence[str] = (),
    arms: Sequence[str] | None = None,
    rules: ComparisonRules = DEFAULT_RULES,
) -> pd.DataFrame:
    """Compare each arm with ``control`` within each ``by`` group: ``by`` + :data:`COMPARISON_COLUMNS`.

    ``arms`` fixes the compared arms (a row each, even when empty); by default every arm present
    other than the control. A group without control customers gets verdict ``empty_arm``.
    ``rules``: the interval's confidence and method and the verdict's thresholds.
    """
    by = list(by)
    if arms is None:
        arms = sorted(a for a in summary["arm"].dropna().unique() if a != control)
    arms = [a for a in arms if a != control]
    value_cols = [c for c in SUMMARY_COLUMNS if c != "arm"]
    summary = summary.assign(arm=summary["arm"].astype(object))
    index = _full_index(summary, by, arms)
    treated = index.merge(summary, on=[*by, "arm"], how="left")
    ctrl = summary[summary["arm"] == control].drop(columns="arm")
    ctrl = ctrl.rename(columns={c: f"control_{c}" for c in value_cols})
    merged = treated.merge(ctrl, on=by, how="left") if by else _cross_single(treated, ctrl)
    for col in ("customers", "responders", "control_customers", "control_responders"):
        merged[col] = merged[col].fillna(0).astype("int64")
    for col in ("cost_cents", "control_cost_cents"):
        merged[col] = merged[col].fillna(0.0).astype(float)
    return _figures(merged, control, by, rules)


def _cross_single(treated: pd.DataFrame, ctrl: pd.DataFrame) -> pd.DataFrame:
    if ctrl.empty:
        ctrl = pd.DataFrame([{c: np.nan for c in ctrl.columns}])
    return treated.merge(ctrl.iloc[[0]], how="cross")


def _figures(m: pd.DataFrame, control: str, by: list[str], rules: ComparisonRules) -> pd.DataFrame:
    """The comparison rows of the merged arm/control summaries: response, then money, then the
    MDE and the verdict (the column order of :data:`COMPARISON_COLUMNS`)."""
    n1 = m["customers"].to_numpy(float)
    n0 = m["control_customers"].to_numpy(float)
    x1 = m["responders"].to_numpy(float)
    x0 = m["control_responders"].to_numpy(float)
    props = stats.compare_proportions(x1, n1, x0, n0, rules.confidence, rules.small_count, rules.interval)
    mde = stats.minimum_detectable_effect(n1, n0, props.control_rate, alpha=rules.alpha)
    code = stats.verdict(n1, n0, props.lift_low, props.lift_high, props.p_value, mde, rules)
    out = pd.DataFrame({c: m[c] for c in by})
    out["arm"] = m["arm"].to_numpy()
    out["control"] = control
    for col in ("customers", "control_customers", "responders", "control_responders"):
        out[col] = m[col].to_numpy()
    _add_response(out, props, (n1 > 0) & (n0 > 0), rules.interval)
    _add_revenue(out, m, rules.confidence)
    _add_cost(out, m)
    out["mde"] = mde
    out["verdict"] = code
    out["verdict_text"] = [stats.VERDICT_TEXT[c] for c in code]
    return out.reset_index(drop=True)


def _add_response(
    out: pd.DataFrame, props: stats.ProportionComparison, both: np.ndarray, interval: str
) -> None:
    """The response rates, the lift with its interval and p-value, the test and interval used."""
    out["response_rate"] = props.rate
    out["control_rate"] = props.control_rate
    out["lift"] = props.lift
    out["lift_low"] = props.lift_low
    out["lift_high"] = props.lift_high
    out["p_value"] = props.p_value
    out["test"] = np.where(both, np.where(props.small, "fisher", "z"), None)
    chosen = np.where(props.small, "newcombe", "wald") if interval == "auto" else interval
    out["interval"] = np.where(both, chosen, None)
    out["relative_lift"] = props.relative_lift
    out["relative_lift_low"] = props.relative_lift_low
    out["relative_lift_high"] = props.relative_lift_high


def _add_revenue(out: pd.DataFrame, m: pd.DataFrame, confidence: float) -> None:
    """Revenue per arm and per customer, and the incremental revenue (Welch) per customer and in total."""
    n1 = m["customers"].to_numpy(float)
    welch = stats.welch_difference(
        n1,
        m["revenue_mean_cents"].to_numpy(float),
        m["revenue_var_cents"].to_numpy(float),
        m["control_customers"].to_numpy(float),
        m["control_revenue_mean_cents"].to_numpy(float),
        m["control_revenue_var_cents"].to_numpy(float),
        confidence,
    )
    out["revenue_cents"] = m["revenue_cents"].to_numpy()
    out["control_revenue_cents"] = m["control_revenue_cents"].to_numpy()
    out["revenue_per_customer_cents"] = m["revenue_mean_cents"].to_numpy(float)
    out["control_revenue_per_customer_cents"] = m["control_revenue_mean_cents"].to_numpy(float)
    out["incremental_revenue_per_customer_cents"] = welch.difference
    out["incremental_revenue_per_customer_low_cents"] = welch.low
    out["incremental_revenue_per_customer_high_cents"] = welch.high
    out["revenue_p_value"] = welch.p_value
    out["incremental_revenue_cents"] = welch.difference * n1
    out["incremental_revenue_low_cents"] = welch.low * n1
    out["incremental_revenue_high_cents"] = welch.high * n1
    out["responder_revenue_cents"] = m["responder_revenue_cents"].to_numpy()


def _add_cost(out: pd.DataFrame, m: pd.DataFrame) -> None:
    """Costs, the incremental cost (the control's cost per customer scaled to the arm), the net,
    and the two ROIs (incremental: with its interval; naive: responders' revenue / cost)."""
    n1 = m["customers"].to_numpy(float)
    n0 = m["control_customers"].to_numpy(float)
    cost = m["cost_cents"].to_numpy(float)
    control_cost = m["control_cost_cents"].to_numpy(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        control_cost_per = np.where(n0 > 0, control_cost / np.where(n0 > 0, n0, 1), 0.0)
    incremental_cost = cost - control_cost_per * n1
    has_cost = incremental_cost > 0
    safe_cost = np.where(has_cost, incremental_cost, 1.0)
    naive_cost = np.where(cost > 0, cost, 1.0)
    out["cost_cents"] = cost
    out["control_cost_cents"] = control_cost
    out["incremental_cost_cents"] = incremental_cost
    out["net_incremental_cents"] = out["incremental_revenue_cents"].to_numpy() - incremental_cost
    for suffix in ("", "_low", "_high"):
        incremental = out[f"incremental_revenue{suffix}_cents"].to_numpy()
        out[f"incremental_roi{suffix}"] = np.where(has_cost, incremental / safe_cost, np.nan)
    responder_revenue = m["responder_revenue_cents"].to_numpy(float)
    out["naive_roi"] = np.where(cost > 0, responder_revenue / naive_cost, np.nan)


def compare_arms(
    frame: pd.DataFrame,
    control: str,
    *,
    by: Sequence[str] = (),
    revenue: str | None = "revenue_cents",
    cost: str | None = None,
    arms: Sequence[str] | None = None,
    rules: ComparisonRules = DEFAULT_RULES,
) -> pd.DataFrame:
    """Every non-control arm against ``control``, per ``by`` group, from one row per customer
    (columns ``arm`` and ``responded``, and the ``revenue`` and ``cost`` given); ``rules`` of
    :func:`compare_summaries`."""
    if arms is None:
        arms = sorted(a for a in pd.unique(frame["arm"].dropna()) if a != control)
    summary = summarize_arms(frame, by, revenue=revenue, cost=cost)
    return compare_summaries(summary, control, by=by, arms=arms, rules=rules)


def adjust_for_multiplicity(
    frame: pd.DataFrame,
    by: Sequence[str] = (),
    alpha: float = 0.05,
    rules: ComparisonRules | None = None,
) -> pd.DataFrame:
    """Bonferroni within each ``by`` group: adds ``comparisons`` and ``p_value_adjusted``, and
    judges the verdict again on the adjusted p-value.

    Side-by-side comparisons (several arms, every value of a segment) are many looks at once: one
    in twenty shows a "lift" by chance. ``p_value_adjusted = min(1, p × comparisons)``, where
    ``comparisons`` counts the group's rows with customers in both arms; the verdict is
    :func:`huitouke.evaluate.stats.verdict` of the adjusted p-value (``rules``' power thresholds,
    the defaults when not given, and ``alpha``), so a lift whose adjusted p-value is not below
    ``alpha`` is ``borderline``, never claimed.
    """
    out = frame.copy()
    valid = out["p_value"].notna()
    if by:
        out["comparisons"] = (
            valid.groupby([out[c] for c in by], dropna=False).transform("sum").astype("int64")
        )
    else:
        out["comparisons"] = int(valid.sum())
    out["p_value_adjusted"] = np.minimum(1.0, out["p_value"] * out["comparisons"].clip(lower=1))
    code = stats.verdict(
        out["customers"].to_numpy(float),
        out["control_customers"].to_numpy(float),
        out["lift_low"].to_numpy(float),
        out["lift_high"].to_numpy(float),
        out["p_value_adjusted"].to_numpy(float),
        out["mde"].to_numpy(float),
        replace(rules or DEFAULT_RULES, alpha=alpha),
    )
    out["verdict"] = code
    out["verdict_text"] = [stats.VERDICT_TEXT[c] for c in code]
    return out


# ----------------------------------------------------------------------------------- output


def _plain(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return None if not math.isfinite(float(value)) else float(value)
    if isinstance(value, pd.Timestamp):
        return None if pd.isna(value) else value.isoformat()
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if value is pd.NaT:
        return None
    return value


def as_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The rows as JSON-ready dicts: NaN -> None, numpy numbers -> Python, dates -> ISO strings."""
    columns = list(frame.columns)
    return [
        {c: _plain(v) for c, v in zip(columns, row, strict=True)}
        for row in frame.itertuples(index=False, name=None)
    ]


def to_json(frame: pd.DataFrame, **extra: Any) -> str:
    """:func:`as_records` as a JSON document ``{**extra, "rows": [...]}``."""
    return json.dumps({**extra, "rows": as_records(frame)}, ensure_ascii=False, indent=2)


def format_table(headers: Sequence[str], rows: Iterable[Sequence[str]], right: Sequence[bool]) -> str:
    """A fixed-width text table: columns two spaces apart, numbers right-aligned."""
    rows = [list(r) for r in rows]
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        parts = [c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right, strict=True)]
        return "  ".join(parts).rstrip()

    return "\n".join([line(headers), *(line(r) for r in rows)])


def _finite(value: Any) -> bool:
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _pct(value: Any, signed: bool = False) -> str:
    if not _finite(value):
        return "-"
    return f"{100 * float(value):+.2f}%" if signed else f"{100 * float(value):.2f}%"


def _with_interval(show: Callable[[Any], str], value: Any, low: Any, high: Any) -> str:
    """``value [low, high]`` each as ``show`` writes it; the value alone without both bounds."""
    if not _finite(value):
        return "-"
    text = show(value)
    if _finite(low) and _finite(high):
        text += f" [{show(low)}, {show(high)}]"
    return text


def _pp_ci(value: Any, low: Any, high: Any) -> str:
    return _with_interval(lambda v: f"{100 * float(v):+.2f}", value, low, high)


def _cny(cents: Any, signed: bool = False) -> str:
    if not _finite(cents):
        return "-"
    return f"{float(cents) / 100:+,.2f}" if signed else f"{float(cents) / 100:,.2f}"


def _cny_ci(value: Any, low: Any, high: Any) -> str:
    return _with_interval(lambda v: _cny(v, signed=True), value, low, high)


def _p(value: Any) -> str:
    if not _finite(value):
        return "-"
    value = float(value)
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def _ratio(value: Any) -> str:
    return f"{float(value):,.2f}" if _finite(value) else "-"


def _cell(key: str, value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, (datetime, date, pd.Timestamp)):
        return value.isoformat()[:10]
    if key in ("customers",) and _finite(value):
        return f"{int(value):,}"
    return str(value)


def confidence_label(confidence: float) -> str:
    """``0.95`` -> ``"95%"``, ``0.9`` -> ``"90%"``, ``0.975`` -> ``"97.5%"``: an interval's level as headed."""
    return f"{round(100 * confidence, 2):g}%"


def format_comparisons(
    frame: pd.DataFrame,
    keys: Sequence[tuple[str, str]] = (),
    *,
    arm_label: str = "arm",
    control_label: str = "control",
    rate_label: str = "resp. rate",
    control_rate_label: str = "ctrl rate",
    show_arm: bool = True,
    confidence: float = DEFAULT_RULES.confidence,
) -> str:
    """The comparison rows as two readable tables, response then money; ``keys`` are (column,
    header) pairs shown first in both.

    Rates in %, lift and MDE in percentage points with the interval in brackets, headed with its
    level (``confidence``: the one the rows were computed at), money in CNY, ROI as CNY per CNY
    spent. Counts and sums only: no customer appears.
    """
    key_headers = [h for _, h in keys] + ([arm_label] if show_arm else [])
    records = frame.to_dict("records")
    key_cells = [
        [_cell(k, rec.get(k)) for k, _ in keys] + ([str(rec["arm"])] if show_arm else []) for rec in records
    ]
    adjusted = "p_value_adjusted" in frame.columns
    level = confidence_label(confidence)
    labels = (control_label, rate_label, control_rate_label, level)
    response = _response_table(key_headers, key_cells, records, labels, adjusted)
    money = _money_table(key_headers, key_cells, records, (control_label, level))
    return f"{response}\n\nRevenue and cost (CNY)\n{money}"


def _response_table(
    key_headers: list[str],
    key_cells: list[list[str]],
    records: list[dict[str, Any]],
    labels: tuple[str, str, str, str],
    adjusted: bool,
) -> str:
    """Customers, responders, rates, the lift with its interval, p (and p adj.), MDE, verdict."""
    control_label, rate_label, control_rate_label, level = labels
    headers = [
        "customers",
        control_label,
        "responders",
        rate_label,
        control_rate_label,
        f"lift pp [{level} CI]",
        "p",
        *(["p adj."] if adjusted else []),
        "rel. lift",
        "MDE pp",
        "verdict",
    ]
    rows = [
        keys_
        + [
            f"{int(rec['customers']):,}",
            f"{int(rec['control_customers']):,}",
            f"{int(rec['responders']):,} / {int(rec['control_responders']):,}",
            _pct(rec["response_rate"]),
            _pct(rec["control_rate"]),
            _pp_ci(rec["lift"], rec["lift_low"], rec["lift_high"]),
            _p(rec["p_value"]),
            *([_p(rec["p_value_adjusted"])] if adjusted else []),
            _pct(rec["relative_lift"], signed=True),
            f"{100 * float(rec['mde']):.2f}" if _finite(rec["mde"]) else "-",
            str(rec["verdict_text"]),
        ]
        for keys_, rec in zip(key_cells, records, strict=True)
    ]
    right = [False] * len(key_headers) + [True] * (len(headers) - 1) + [False]
    return format_table(key_headers + headers, rows, right)


def _money_table(
    key_headers: list[str],
    key_cells: list[list[str]],
    records: list[dict[str, Any]],
    labels: tuple[str, str],
) -> str:
    """Revenue per customer, incremental revenue with its interval, responders' revenue, cost, ROIs."""
    control_label, level = labels
    headers = [
        "rev/cust",
        f"{control_label} rev/cust",
        f"incremental revenue [{level} CI]",
        "responders' revenue",
        "cost",
        "ROI incr.",
        "ROI naive",
    ]
    rows = [
        keys_
        + [
            _cny(rec["revenue_per_customer_cents"]),
            _cny(rec["control_revenue_per_customer_cents"]),
            _cny_ci(
                rec["incremental_revenue_cents"],
                rec["incremental_revenue_low_cents"],
                rec["incremental_revenue_high_cents"],
            ),
            _cny(rec["responder_revenue_cents"]),
            _cny(rec["cost_cents"]) if _finite(rec["cost_cents"]) and rec["cost_cents"] else "-",
            _ratio(rec["incremental_roi"]),
            _ratio(rec["naive_roi"]),
        ]
        for keys_, rec in zip(key_cells, records, strict=True)
    ]
    return format_table(key_headers + headers, rows, [False] * len(key_headers) + [True] * 7)
