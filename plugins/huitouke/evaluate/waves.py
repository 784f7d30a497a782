"""Stage 6 of the daily run: each campaign wave's response against its holdout, per window.

One deterministic function of DataFrames, :func:`evaluate_waves` (no database, no Airflow, no
clock): the store and the DAG task are at the edges, and keep the results idempotent by storing
rows under their key (a re-run of a day gives the same rows).

Definitions
===========

- **Cohort** of a wave: every ``campaign_waves`` row of one (campaign, wave, due_on), both arms,
  whatever the outcome — treated, held out *or suppressed*. Suppression is decided blind to the
  arm (docs/campaigns.md), so the cohort's two arms are exchangeable: this is the **intention to
  treat** (ITT) comparison, view ``itt``.
- **Send time** of a wave due on day D: D at the send window's start in the shop's timezone
  (``send_at``, 09:00), as naive UTC; or whatever ``send_time(D)`` returns.
- **Responder** for a window of ``w`` days: a customer with a paid order (status ``paid``,
  ``shipped`` or ``completed``: :data:`huitouke.records.PAID_STATUSES`, as everywhere else)
  and ``send_time < paid_at <= send_time + w days``. Refunded, cancelled and pending orders do not
  count; a status is read as it stands on the evaluation day. Revenue per customer: the amounts of those
  orders (0 for non-responders).
- **Matured**: window ``w`` of a wave due on D is evaluated on business day ``as_of`` when
  ``as_of >= D + w``; the window then ended at D + w, 09:00, before the end of ``as_of``, so every
  order in it has been taken in. A (campaign, wave, due_on, window_days) found in ``recorded``
  (the keys already stored) is skipped, every view and its breakdowns with it.
- **What became of a message** (the outbox's ``status`` and ``receipt``, docs/delivery.md):
  *sent* when its status is ``sent`` (a call: the customer was reached); *received* when it was
  sent and its ``receipt`` is ``delivered`` (the operator confirmed it reached the phone), or it
  is a call that was reached (the conversation is its own receipt). E-mail gets no receipts
  (SMTP reports none), so an e-mail is at most sent, never received. A status ``delivered`` is
  read as sent with a ``delivered`` receipt (the shorthand of hand-made frames). Every other
  status (``queued``, ``sending``, ``listed``, ``failed``, ``unknown``, ``suppressed``,
  ``stale``, ``expired``) is neither.
- **Sent-only** view ``sent`` (only for a cohort with a sent message): treated customers with at
  least one sent message, against the holdout customers whose outcome is ``held_out`` — those
  who passed reachability, caps and priority exactly like the treated ones, so that the
  comparison is not biased by suppression (the whole holdout would include customers who could
  never have been reached). Only delivery failures separate the two arms then; the ``itt`` row
  stays the honest headline.
- **Delivered** view ``received`` (only for a cohort with a received message): treated customers
  with at least one received message, against the same ``held_out`` holdout as the sent view.
  It is named ``received`` because the stored key column ``evaluations.view`` holds 8 characters
  and ``delivered`` has 9. It is descriptive, even more than the sent view: operators confirm
  delivery unevenly (a phone switched off, a carrier that reports late or not at all), so the
  customers it keeps are not a random part of the treated arm.
- **Cost** of a treated customer: what was billed — SMS segments, e-mails and calls × their unit
  costs (:class:`MessageCosts`, ``options.costs``) for its *sent* messages, an SMS at the
  provider's ``billed_segments`` when it reported them, else at the rendered ``sms_segments``
  (else 1) — plus the value of the wave's coupon when it was redeemed by a paid order inside the
  window. A message of ``unknown`` fate is costed too, at its rendered segments: it may have left
  and been billed, and counting it keeps the ROI on the conservative side; it does not make its
  customer sent, though, since nothing says it arrived. ``queued``, ``sending``, ``listed``,
  ``failed``, ``suppressed``, ``stale`` and ``expired`` messages cost nothing: nothing was billed
  for them. (The orders' amounts are what the customer paid, so the coupon's value is counted as
  a cost on top of the discounted revenue: the conservative side.)
- **Cumulative** over the waves of a multi-wave sequence (``coupon_waves``, ``win_back``): per
  campaign and ``through_wave`` k, every customer with a wave 1 (both arms, ITT) whose entry's
  wave k has matured for the primary window, pooled over entry days; response = a paid order
  from wave 1's send time to wave k's send time + the primary window. Wave k's due day is wave
  1's plus (k - 1) × the campaign's wave interval (read from the waves given), so customers who
  left early (say, repurchased after wave 1) stay in the cohort. Pass every wave of the entries,
  wave 1 included.
- **Repurchase curve**: cumulative response rate by day since sending, ``day`` = 0 … 30 (only
  matured days), where day k means "within k × 24 h of the send time", the same as a k-day
  window (so day 0 is 0 by construction and day 10 equals the 10-day window's rate).
- **Categories**: what the treated responders' orders (in the primary window) held, against the
  holdout's natural repurchasers: orders per category, top ``options.top_categories`` per arm.

Inputs
======

``waves``     ``campaign_waves`` rows: ``campaign, customer_id, entered_on, wave, due_on, arm
              ('treatment' | 'holdout'), variant, outcome, channels`` (``kind, priority, reason``
              are carried but not read) plus the ``options.segment_columns`` the caller joined.
``orders``    ``order_id, customer_id, paid_at`` (naive UTC), ``status``, ``amount_cents``, and
              optionally ``categories`` (a list or "a,b") for the category table.
``messages``  optional outbox rows: ``campaign, customer_id, entered_on, wave, channel, status``
              and, when known, ``sms_segments`` (rendered), ``billed_segments`` (reported by the
              provider) and ``receipt`` (``delivered`` | ``undelivered``): what
              :data:`huitouke.evaluate.persist.MESSAGE_COLUMNS` reads of the outbox.
``coupons``   optional: ``campaign, customer_id, entered_on, wave, value_cents, redeemed_order_id``.

Outputs (:class:`huitouke.evaluate.result.WaveEvaluation`)
==========================================================

``results``     :data:`RESULT_COLUMNS`: key ``campaign, wave, due_on, window_days, view``, then
                ``entered_on, send_time, primary, as_of, contacted, suppressed, sent, received``
                (treated-arm customers treated, suppressed, with a sent message, with a received
                one — the last two NaN without ``messages``),
                then :data:`huitouke.evaluate.compare.COMPARISON_COLUMNS` (arm ``treatment``
                against control ``holdout``). Store under the key.
``breakdowns``  :data:`BREAKDOWN_COLUMNS`: the ITT comparison per ``dimension`` (each segment
                column, ``channels``, ``variant``) and ``value``, every evaluated window, with
                ``comparisons`` and ``p_value_adjusted`` (Bonferroni over the dimension's values;
                the verdict uses it: see :func:`huitouke.evaluate.compare.adjust_for_multiplicity`).
``cumulative``  :data:`CUMULATIVE_COLUMNS`: ``campaign, through_wave, window_days, view, as_of,
                entry_days, first_entered_on, last_entered_on`` + comparison columns.
``curves``      :data:`CURVE_COLUMNS`: ``campaign, wave, due_on, day, customers, responders,
                response_rate, control_customers, control_responders, control_rate, lift``.
``categories``  :data:`CATEGORY_COLUMNS`: ``campaign, wave, due_on, window_days, arm, rank,
                category, orders, customers, share`` (share of the arm's responding orders).

``WaveEvaluation.as_text()`` is the task log's table (:mod:`huitouke.evaluate.result`). How the
waves are evaluated (windows, send time, unit costs, breakdowns, comparison rules) is one
:class:`WaveOptions`. See docs/evaluation.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from huitouke.evaluate.compare import COMPARISON_COLUMNS, adjust_for_multiplicity, compare_arms
from huitouke.evaluate.result import (
    BREAKDOWN_COLUMNS,
    CATEGORY_COLUMNS,
    COHORT_KEY,
    CUMULATIVE_COLUMNS,
    CURVE_COLUMNS,
    ITT,
    RECEIVED,
    RESULT_COLUMNS,
    RESULT_KEY,
    SENT,
    WINDOW_KEY,
    WaveEvaluation,
)
from huitouke.evaluate.stats import DEFAULT_RULES, ComparisonRules
from huitouke.pii import get_logger
from huitouke.records import PAID_STATUSES

__all__ = [
    "BREAKDOWN_COLUMNS",
    "CATEGORY_COLUMNS",
    "CONTROL",
    "CUMULATIVE_COLUMNS",
    "CURVE_COLUMNS",
    "DEFAULT_PRIMARY",
    "DEFAULT_OPTIONS",
    "DEFAULT_WINDOWS",
    "MessageCosts",
    "RESULT_COLUMNS",
    "RESULT_KEY",
    "TREATMENT",
    "WaveEvaluation",
    "WaveOptions",
    "evaluate_waves",
    "planned_send_time",
]

log = get_logger(__name__)

TREATMENT, CONTROL = "treatment", "holdout"
DEFAULT_WINDOWS = (2, 10, 30)
DEFAULT_PRIMARY = 10
SENT_STATUSES = ("sent", "delivered")  # "delivered": a hand-made frame's sent + delivered receipt
BILLED_STATUSES = (*SENT_STATUSES, "unknown")  # may have left, so may have been billed: costed
DELIVERED = "delivered"  # the receipt that makes a sent message received

_ENTRY = ["campaign", "customer_id", "entered_on", "wave"]


def planned_send_time(day: date, timezone: str = "Asia/Shanghai", at: time = time(9, 0)) -> datetime:
    """A wave due on ``day`` goes out at ``at`` shop time: that moment as naive UTC."""
    local = datetime.combine(day, at, tzinfo=ZoneInfo(timezone))
    return local.astimezone(UTC).replace(tzinfo=None)


# ------------------------------------------------------------------------------ normalising


def _dates(values: pd.Series) -> pd.Series:
    """Any date-like column as ``datetime.date`` objects (the store's business dates)."""
    return pd.Series(pd.to_datetime(values).dt.date.to_numpy(dtype=object), index=values.index, dtype=object)


def _naive_utc(values: pd.Series) -> pd.Series:
    stamps = pd.to_datetime(values)
    if getattr(stamps.dt, "tz", None) is not None:
        stamps = stamps.dt.tz_convert("UTC").dt.tz_localize(None)
    return stamps.astype("datetime64[ns]")


def _label(values: pd.Series, empty: str) -> pd.Series:
    text = values.astype(object).where(values.notna(), "").astype(str).str.strip()
    return text.where(text != "", empty)


def _channels(values: pd.Series) -> pd.Series:
    text = values.astype(object).where(values.notna(), "").astype(str)
    unique = {v: ",".join(sorted(p.strip() for p in v.split(",") if p.strip())) for v in pd.unique(text)}
    return _label(text.map(unique), "(none)")


def _categories(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [p.strip() for p in value.split(",") if p.strip()]
    if isinstance(value, float) and math.isnan(value):
        return []
    try:
        return [str(v).strip() for v in value if str(v).strip()]
    except TypeError:
        return [str(value)]


def _require(frame: pd.DataFrame, columns: Sequence[str], name: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{name} lacks the column(s) {', '.join(missing)}")


def _windows_of(
    campaigns: Sequence[str],
    windows: Sequence[int] | Mapping[str, Sequence[int]],
    primary: int | Mapping[str, int] | None,
) -> dict[str, tuple[list[int], int]]:
    out = {}
    for name in campaigns:
        ws = windows.get(name, DEFAULT_WINDOWS) if isinstance(windows, Mapping) else windows
        ws = sorted({int(w) for w in ws})
        if not ws or ws[0] < 1:
            raise ValueError(f"{name}: windows must be whole days >= 1, got {ws}")
        if isinstance(primary, Mapping):
            p = primary.get(name)
        else:
            p = primary
        if p is None:
            p = DEFAULT_PRIMARY if DEFAULT_PRIMARY in ws else ws[-1]
        if p not in ws:
            raise ValueError(f"{name}: the primary window {p} is not one of the windows {ws}")
        out[name] = (ws, int(p))
    return out


# ------------------------------------------------------------------------------------ hits


def _hits(rows: pd.DataFrame, paid: pd.DataFrame, start: str, span: pd.Series) -> pd.DataFrame:
    """Paid orders of each row's customer with ``start < paid_at <= start + span``: one row each.

    ``rows`` carries ``_row, customer_id`` and the ``start`` column; returns ``_row, order_id,
    customer_id, delta_days, amount_cents, categories``.
    """
    base = rows[["_row", "customer_id", start]].assign(_span=span.to_numpy())
    if base.empty or paid.empty:
        return pd.DataFrame(
            {"_row": [], "order_id": [], "customer_id": [], "delta_days": [], "amount_cents": []}
        )
    lo, hi = base[start].min(), (base[start] + base["_span"]).max()
    window = paid[(paid["paid_at"] > lo) & (paid["paid_at"] <= hi)]
    window = window[window["customer_id"].isin(base["customer_id"].unique())]
    hits = base.merge(window, on="customer_id", how="inner")
    delta = hits["paid_at"] - hits[start]
    hits = hits[(delta > pd.Timedelta(0)) & (delta <= hits["_span"])].copy()
    hits["delta_days"] = (hits["paid_at"] - hits[start]) / pd.Timedelta(days=1)
    return hits.drop(columns=["_span"])


def _per_row(hits: pd.DataFrame, within_days: float | pd.Series, index: pd.Index) -> pd.DataFrame:
    """Responded and revenue per ``_row`` over the hits within ``within_days`` of the start."""
    part = hits[hits["delta_days"] <= within_days] if len(hits) else hits
    agg = part.groupby("_row").agg(orders=("order_id", "size"), revenue=("amount_cents", "sum"))
    agg = agg.reindex(index, fill_value=0)
    return pd.DataFrame(
        {"responded": agg["orders"].to_numpy() > 0, "revenue_cents": agg["revenue"].to_numpy()}
    )


# ----------------------------------------------------------------------------------- costs


def _message_outcomes(
    cohort: pd.DataFrame,
    messages: pd.DataFrame | None,
    unit: Mapping[str, float],
) -> tuple[pd.Series, pd.Series, pd.Series]:
    """Per cohort row: what its messages cost (float cents), whether one was sent and whether one
    was received (module docstring: only what was billed costs; NaN flags without ``messages``)."""
    zero = pd.Series(0.0, index=cohort.index)
    if messages is None:
        unknown = pd.Series(np.nan, index=cohort.index)
        return zero, unknown, unknown
    _require(messages, [*_ENTRY, "channel", "status"], "messages")
    msgs = _message_facts(messages, unit)
    if msgs.empty:
        no = pd.Series(False, index=cohort.index)
        return zero, no, no
    per = (
        msgs.groupby(_ENTRY)
        .agg(_cost=("_cost", "sum"), _n_sent=("_sent", "sum"), _n_received=("_received", "sum"))
        .reset_index()
    )
    joined = cohort[_ENTRY].reset_index().merge(per, on=_ENTRY, how="left").set_index("index")
    joined = joined.reindex(cohort.index)
    return (
        joined["_cost"].fillna(0.0).astype(float),
        joined["_n_sent"].fillna(0).gt(0),
        joined["_n_received"].fillna(0).gt(0),
    )


def _message_facts(messages: pd.DataFrame, unit: Mapping[str, float]) -> pd.DataFrame:
    """The messages that were billed (or may have been), keyed by entry, each with ``_cost``,
    ``_sent`` and ``_received``; ``billed_segments``, ``sms_segments`` and ``receipt`` are read
    when the frame has them."""
    msgs = messages.copy()
    status = msgs["status"].astype(str).str.lower()
    msgs = msgs[status.isin(BILLED_STATUSES)]
    status = status[msgs.index]
    msgs["entered_on"] = _dates(msgs["entered_on"])
    msgs["wave"] = msgs["wave"].astype("int64")
    channel = msgs["channel"].astype(str).str.lower()
    receipt = _text(msgs, "receipt")
    msgs["_sent"] = status.isin(SENT_STATUSES)
    msgs["_received"] = msgs["_sent"] & ((receipt == DELIVERED) | (status == DELIVERED) | (channel == "call"))
    segments = _number(msgs, "billed_segments").fillna(_number(msgs, "sms_segments")).fillna(1.0)
    msgs["_cost"] = np.select(
        [channel == "sms", channel == "email", channel == "call"],
        [segments * unit["sms"], unit["email"], unit["call"]],
        0.0,
    )
    return msgs


def _text(frame: pd.DataFrame, column: str) -> pd.Series:
    """A column as lower-case text ("" where missing or absent)."""
    if column not in frame:
        return pd.Series("", index=frame.index)
    values = frame[column]
    return values.astype(object).where(values.notna(), "").astype(str).str.strip().str.lower()


def _number(frame: pd.DataFrame, column: str) -> pd.Series:
    """A column as floats (NaN where missing, not a number or absent)."""
    if column not in frame:
        return pd.Series(np.nan, index=frame.index)
    return pd.to_numeric(frame[column], errors="coerce").astype(float)


def _coupon_hits(cohort: pd.DataFrame, coupons: pd.DataFrame | None, hits: pd.DataFrame) -> pd.DataFrame:
    """The cohort rows' coupons redeemed by one of their hit orders: ``_row, delta_days, value_cents``."""
    empty = pd.DataFrame({"_row": [], "delta_days": [], "value_cents": []})
    if coupons is None or coupons.empty or hits.empty:
        return empty
    _require(coupons, [*_ENTRY, "value_cents", "redeemed_order_id"], "coupons")
    cps = coupons[coupons["redeemed_order_id"].notna()].copy()
    if cps.empty:
        return empty
    cps["entered_on"] = _dates(cps["entered_on"])
    cps["wave"] = cps["wave"].astype("int64")
    cps = cps.merge(cohort[[*_ENTRY, "_row"]], on=_ENTRY, how="inner")
    cps = cps.merge(
        hits[["_row", "order_id", "delta_days"]],
        left_on=["_row", "redeemed_order_id"],
        right_on=["_row", "order_id"],
        how="inner",
    )
    return cps[["_row", "delta_days", "value_cents"]]


# ------------------------------------------------------------------------------ evaluation


@dataclass(frozen=True)
class MessageCosts:
    """What one billed message costs, in fen (float cents: an SMS segment costs 4.5): per SMS
    segment (billed segments, module docstring), per e-mail, per call."""

    sms_segment_cents: float = 0.0
    email_cents: float = 0.0
    call_cents: float = 0.0

    def by_channel(self) -> dict[str, float]:
        return {
            "sms": float(self.sms_segment_cents),
            "email": float(self.email_cents),
            "call": float(self.call_cents),
        }


@dataclass(frozen=True)
class WaveOptions:
    """How :func:`evaluate_waves` evaluates.

    ``windows``/``primary``: one list for every campaign, or a mapping campaign -> list / primary
    (e.g. from each playbook campaign's ``evaluation``); missing campaigns get (2, 10, 30) and 10.
    ``send_time(due_on)`` gives a wave's send time (default: ``due_on`` at ``send_at``, shop time
    in ``timezone``). ``segment_columns``: the breakdowns' segment columns of ``waves``.
    ``curve_days``: the repurchase curve's length; ``top_categories``: the category table's.
    ``rules``: how the arms are compared (:class:`huitouke.evaluate.stats.ComparisonRules`).
    """

    windows: Sequence[int] | Mapping[str, Sequence[int]] = DEFAULT_WINDOWS
    primary: int | Mapping[str, int] | None = None
    send_time: Callable[[date], datetime] | None = None
    timezone: str = "Asia/Shanghai"
    send_at: time = time(9, 0)
    costs: MessageCosts = field(default_factory=MessageCosts)
    segment_columns: Sequence[str] = ()
    curve_days: int = 30
    top_categories: int = 5
    rules: ComparisonRules = DEFAULT_RULES

    def sender(self) -> Callable[[date], datetime]:
        """The send time of a wave due on a day."""
        return self.send_time or (lambda day: planned_send_time(day, self.timezone, self.send_at))


DEFAULT_OPTIONS = WaveOptions()


def evaluate_waves(
    waves: pd.DataFrame,
    orders: pd.DataFrame,
    as_of: date,
    *,
    messages: pd.DataFrame | None = None,
    coupons: pd.DataFrame | None = None,
    recorded: pd.DataFrame | None = None,
    options: WaveOptions = DEFAULT_OPTIONS,
) -> WaveEvaluation:
    """Evaluate every matured, unrecorded window of every wave in ``waves`` on business day ``as_of``
    (inputs and outputs: the module docstring; how: ``options``)."""
    _require(waves, [*_ENTRY, "due_on", "arm", "outcome", *options.segment_columns], "waves")
    _require(orders, ["order_id", "customer_id", "paid_at", "status", "amount_cents"], "orders")
    sender = options.sender()
    cohort = _cohort(waves, options.segment_columns, sender)
    age = _age(cohort, as_of, options.timezone)
    settings = _windows_of(sorted(cohort["campaign"].unique()), options.windows, options.primary)
    paid = _paid(orders)
    long = _matured(cohort, age, settings, recorded)

    evaluated = cohort[cohort["_row"].isin(long["_row"].unique())]
    horizon = max([options.curve_days, *(w for ws, _ in settings.values() for w in ws)])
    hits = _hits(evaluated, paid, "send_time", pd.Series(pd.Timedelta(days=horizon), index=evaluated.index))
    msg_cost, sent_flag, received_flag = _message_outcomes(cohort, messages, options.costs.by_channel())
    cohort["_msg_cost"], cohort["_sent"] = msg_cost.to_numpy(), sent_flag.to_numpy()
    cohort["_received"] = received_flag.to_numpy()
    long = _outcomes(long, cohort, hits, _coupon_hits(cohort, coupons, hits))

    rules = options.rules
    results = _compare(_views(long, messages is not None), RESULT_KEY, rules)
    results = _with_cohort_facts(results, cohort, long, as_of, messages is not None)
    evaluation = WaveEvaluation(
        as_of=as_of,
        results=results[RESULT_COLUMNS].sort_values(RESULT_KEY, kind="stable").reset_index(drop=True),
        breakdowns=_breakdowns(long, [*options.segment_columns, "channels", "variant"], rules),
        cumulative=_cumulative(cohort, paid, coupons, as_of, settings, sender, rules),
        curves=_curves(evaluated, hits, age, options.curve_days),
        categories=_categories_table(long, hits, options.top_categories),
        options={"windows": {c: ws for c, (ws, _) in settings.items()}, **asdict(rules)},
    )
    log.info(
        "evaluation as of %s: %d wave cohorts, %d result rows, %d breakdown rows, %d cumulative rows",
        as_of,
        evaluation.results[COHORT_KEY].drop_duplicates().shape[0],
        len(evaluation.results),
        len(evaluation.breakdowns),
        len(evaluation.cumulative),
    )
    return evaluation


def _cohort(
    waves: pd.DataFrame, segment_columns: Sequence[str], sender: Callable[[date], datetime]
) -> pd.DataFrame:
    """The cohort rows: one per entry's wave (the last given), both arms, labels filled in, with
    the wave's ``send_time`` and a row number ``_row``."""
    cohort = waves.copy()
    for col, default in (("variant", ""), ("channels", "")):
        if col not in cohort:
            cohort[col] = default
    cohort["entered_on"] = _dates(cohort["entered_on"])
    cohort["due_on"] = _dates(cohort["due_on"])
    cohort["wave"] = cohort["wave"].astype("int64")
    cohort["customer_id"] = cohort["customer_id"].astype(str)
    cohort = cohort.drop_duplicates(_ENTRY, keep="last")
    cohort = cohort[cohort["arm"].isin([TREATMENT, CONTROL])].reset_index(drop=True)
    cohort["_row"] = np.arange(len(cohort))
    cohort["variant"] = _label(cohort["variant"], "(none)")
    cohort["channels"] = _channels(cohort["channels"])
    for col in segment_columns:
        cohort[col] = _label(cohort[col], "(unknown)")
    sends = {d: pd.Timestamp(sender(d)) for d in pd.unique(cohort["due_on"])}
    cohort["send_time"] = cohort["due_on"].map(sends).astype("datetime64[ns]")
    return cohort


def _age(cohort: pd.DataFrame, as_of: date, timezone: str) -> np.ndarray:
    """Whole days from each row's send time to the end of the evaluation day (shop-local
    midnight): a window of w days has matured when its end is inside the orders taken in by then."""
    end_of_day = pd.Timestamp(planned_send_time(as_of + timedelta(days=1), timezone, time(0, 0)))
    return ((end_of_day - cohort["send_time"]) // pd.Timedelta(days=1)).to_numpy(dtype=np.int64)


def _paid(orders: pd.DataFrame) -> pd.DataFrame:
    """The paid orders (:data:`huitouke.records.PAID_STATUSES`), once each, in naive UTC."""
    paid = orders[orders["status"].astype(str).str.lower().isin(PAID_STATUSES)].copy()
    paid = paid.drop_duplicates("order_id", keep="last")
    paid["customer_id"] = paid["customer_id"].astype(str)
    paid["paid_at"] = _naive_utc(paid["paid_at"])
    paid["amount_cents"] = paid["amount_cents"].astype("int64")
    if "categories" not in paid:
        paid["categories"] = None
    return paid[["order_id", "customer_id", "paid_at", "amount_cents", "categories"]]


def _matured(
    cohort: pd.DataFrame,
    age: np.ndarray,
    settings: Mapping[str, tuple[list[int], int]],
    recorded: pd.DataFrame | None,
) -> pd.DataFrame:
    """The long frame: one row per (cohort row, matured window) not recorded yet, with ``primary``."""
    parts = []
    for w in sorted({w for ws, _ in settings.values() for w in ws}):
        has_w = cohort["campaign"].map({c: w in ws for c, (ws, _) in settings.items()}).to_numpy(bool)
        part = cohort[has_w & (age >= w)].assign(window_days=w)
        parts.append(part)
    long = pd.concat(parts, ignore_index=True) if parts else cohort.iloc[:0].assign(window_days=0)
    if recorded is not None and len(recorded) and len(long):
        done = recorded[WINDOW_KEY].copy()
        done["due_on"] = _dates(done["due_on"])
        done["wave"] = done["wave"].astype("int64")
        done["window_days"] = done["window_days"].astype("int64")
        done = done.drop_duplicates().assign(_done=True)
        long = long.merge(done, on=WINDOW_KEY, how="left")
        long = long[long["_done"].isna()].drop(columns="_done").reset_index(drop=True)
    long["primary"] = long["window_days"] == long["campaign"].map({c: p for c, (_, p) in settings.items()})
    return long


def _outcomes(
    long: pd.DataFrame, cohort: pd.DataFrame, hits: pd.DataFrame, coupon_hits: pd.DataFrame
) -> pd.DataFrame:
    """Responded, revenue and cost per long row, window by window; the rows' view is ``itt``."""
    long["responded"] = False
    long["revenue_cents"] = 0
    long["cost_cents"] = 0.0
    long = long.merge(cohort[["_row", "_msg_cost", "_sent", "_received"]], on="_row", how="left")
    for w in long["window_days"].unique():
        at = long.index[long["window_days"] == w]
        rows = pd.Index(long.loc[at, "_row"])
        per = _per_row(hits, float(w), rows)
        long.loc[at, "responded"] = per["responded"].to_numpy()
        long.loc[at, "revenue_cents"] = per["revenue_cents"].to_numpy()
        redeemed = coupon_hits[coupon_hits["delta_days"] <= w].groupby("_row")["value_cents"].sum()
        long.loc[at, "cost_cents"] = (
            long.loc[at, "_msg_cost"].to_numpy() + redeemed.reindex(rows, fill_value=0).to_numpy()
        )
    long["responded"] = long["responded"].astype(bool)
    long["revenue_cents"] = long["revenue_cents"].astype("int64")
    long["view"] = ITT
    return long


def _views(long: pd.DataFrame, has_messages: bool) -> pd.DataFrame:
    """The ``itt`` rows and, with messages, the ``sent`` and ``received`` views: in each cohort
    with a treated customer sent (received) a message, those customers against the holdout
    customers held out (module docstring)."""
    frames = [long]
    if has_messages and len(long):
        frames += [_view_of(long, "_sent", SENT), _view_of(long, "_received", RECEIVED)]
    return pd.concat(frames, ignore_index=True)


def _view_of(long: pd.DataFrame, flag: str, view: str) -> pd.DataFrame:
    """The treated rows whose ``flag`` is true and the held-out holdout rows, of the cohorts with
    at least one such treated row, as ``view``."""
    treated = (long["arm"] == TREATMENT) & long[flag].eq(True)
    cohorts = long.loc[treated, COHORT_KEY].drop_duplicates()
    in_cohort = long[COHORT_KEY].merge(cohorts.assign(_in=True), on=COHORT_KEY, how="left")["_in"]
    held_out = (long["arm"] == CONTROL) & (long["outcome"] == "held_out")
    keep = in_cohort.eq(True).to_numpy() & (treated | held_out).to_numpy()
    return long[keep].assign(view=view)


def _compare(frame: pd.DataFrame, by: list[str], rules: ComparisonRules) -> pd.DataFrame:
    if frame.empty:
        return pd.DataFrame(columns=[*by, *COMPARISON_COLUMNS])
    return compare_arms(
        frame,
        CONTROL,
        by=by,
        arms=[TREATMENT],
        revenue="revenue_cents",
        cost="cost_cents",
        rules=rules,
    )


def _with_cohort_facts(
    results: pd.DataFrame, cohort: pd.DataFrame, long: pd.DataFrame, as_of: date, has_messages: bool
) -> pd.DataFrame:
    treated_arm = cohort[cohort["arm"] == TREATMENT]
    facts = cohort.groupby(COHORT_KEY).agg(entered_on=("entered_on", "min"), send_time=("send_time", "first"))
    counts = treated_arm.groupby(COHORT_KEY).agg(
        contacted=("outcome", lambda s: int((s == "treated").sum())),
        suppressed=("outcome", lambda s: int((s == "suppressed").sum())),
        sent=("_sent", lambda s: int(s.eq(True).sum())),
        received=("_received", lambda s: int(s.eq(True).sum())),
    )
    facts = facts.join(counts, how="left").reset_index()
    for col in ("contacted", "suppressed", "sent", "received"):
        facts[col] = facts[col].fillna(0).astype("int64")
    if not has_messages:
        facts["sent"] = facts["received"] = np.nan
    primaries = long[["campaign", "window_days", "primary"]].drop_duplicates()
    out = results.merge(facts, on=COHORT_KEY, how="left")
    out = out.merge(primaries, on=["campaign", "window_days"], how="left")
    out["primary"] = out["primary"].fillna(False).astype(bool)
    out["as_of"] = as_of
    return out


def _breakdowns(long: pd.DataFrame, dimensions: Sequence[str], rules: ComparisonRules) -> pd.DataFrame:
    parts = []
    for dim in dimensions:
        frame = long.assign(dimension=dim, value=long[dim].astype(str))
        parts.append(_compare(frame, [*RESULT_KEY, "dimension", "value"], rules))
    if not parts or all(p.empty for p in parts):
        return pd.DataFrame(columns=BREAKDOWN_COLUMNS)
    out = pd.concat([p for p in parts if not p.empty], ignore_index=True)
    out = adjust_for_multiplicity(out, [*RESULT_KEY, "dimension"], rules.alpha, rules)
    order = {d: i for i, d in enumerate(dimensions)}
    out["_dim"] = out["dimension"].map(order)
    out = out.sort_values([*RESULT_KEY[:-1], "_dim", "value"], kind="stable").drop(columns="_dim")
    return out[BREAKDOWN_COLUMNS].reset_index(drop=True)


def _wave_interval(cohort: pd.DataFrame) -> dict[str, int]:
    """The days between two waves of each multi-wave campaign, as scheduled (the commonest gap)."""
    per = cohort[["campaign", "entered_on", "wave", "due_on"]].drop_duplicates(
        ["campaign", "entered_on", "wave"]
    )
    per = per.sort_values(["campaign", "entered_on", "wave"])
    prev = per.groupby(["campaign", "entered_on"]).shift(1)
    gaps = per.assign(
        _days=(pd.to_datetime(per["due_on"]) - pd.to_datetime(prev["due_on"])).dt.days,
        _waves=per["wave"] - prev["wave"],
    ).dropna(subset=["_days", "_waves"])
    gaps = gaps[gaps["_waves"] > 0]
    gaps["_gap"] = gaps["_days"] / gaps["_waves"]
    out = {}
    for campaign, values in gaps.groupby("campaign")["_gap"]:
        mode = values.round().astype(int).mode()
        if len(mode) and mode.iloc[0] > 0:
            out[campaign] = int(mode.iloc[0])
    return out


def _cumulative(
    cohort: pd.DataFrame,
    paid: pd.DataFrame,
    coupons: pd.DataFrame | None,
    as_of: date,
    settings: Mapping[str, tuple[list[int], int]],
    sender: Callable[[date], datetime],
    rules: ComparisonRules,
) -> pd.DataFrame:
    intervals = _wave_interval(cohort)
    last_wave = cohort.groupby("campaign")["wave"].max()
    parts = []
    for campaign, interval in intervals.items():
        k_max = int(last_wave.get(campaign, 1))
        if k_max < 2:
            continue
        base = cohort[(cohort["campaign"] == campaign) & (cohort["wave"] == 1)]
        if base.empty:
            continue
        _, primary_days = settings[campaign]
        due1 = pd.to_datetime(base["due_on"])
        for k in range(1, k_max + 1):
            due_k = due1 + pd.Timedelta(days=(k - 1) * interval)
            ready = (pd.Timestamp(as_of) - due_k).dt.days >= primary_days
            rows = base[ready.to_numpy()]
            if rows.empty:
                continue
            due_k_dates = due_k[ready.to_numpy()].dt.date
            sends = {d: pd.Timestamp(sender(d)) for d in pd.unique(due_k_dates)}
            ends = pd.Series(
                due_k_dates.map(sends).astype("datetime64[ns]").to_numpy(), index=rows.index
            ) + pd.Timedelta(days=primary_days)
            span = ends - rows["send_time"]
            hits = _hits(rows, paid, "send_time", span)
            per = _per_row(hits, np.inf, pd.Index(rows["_row"]))
            frame = rows.assign(
                responded=per["responded"].to_numpy(),
                revenue_cents=per["revenue_cents"].to_numpy(),
                cost_cents=_sequence_cost(cohort, rows, k, hits, coupons),
                through_wave=k,
                window_days=primary_days,
                view=ITT,
            )
            result = _compare(frame, ["campaign", "through_wave", "window_days", "view"], rules)
            result["as_of"] = as_of
            result["entry_days"] = rows["entered_on"].nunique()
            result["first_entered_on"] = rows["entered_on"].min()
            result["last_entered_on"] = rows["entered_on"].max()
            parts.append(result)
    if not parts:
        return pd.DataFrame(columns=CUMULATIVE_COLUMNS)
    return pd.concat(parts, ignore_index=True)[CUMULATIVE_COLUMNS]


def _sequence_cost(
    cohort: pd.DataFrame, rows: pd.DataFrame, k: int, hits: pd.DataFrame, coupons: pd.DataFrame | None
) -> np.ndarray:
    """Messages of waves 1..k of each entry, plus their coupons redeemed by an order in the span."""
    entry = _ENTRY[:3]  # an entry: its waves are 1..k
    waves_k = cohort[(cohort["campaign"].isin(rows["campaign"].unique())) & (cohort["wave"] <= k)]
    msg = waves_k.groupby(entry)["_msg_cost"].sum().rename("_c").reset_index()
    cost = rows[[*entry, "_row"]].merge(msg, on=entry, how="left")["_c"].fillna(0.0).to_numpy()
    if coupons is not None and len(coupons) and len(hits):
        cps = coupons[coupons["redeemed_order_id"].notna()].copy()
        cps["entered_on"] = _dates(cps["entered_on"])
        cps = cps[cps["wave"].astype("int64") <= k]
        cps = cps.merge(rows[[*entry, "_row"]], on=entry, how="inner")
        cps = cps.merge(
            hits[["_row", "order_id"]], left_on=["_row", "redeemed_order_id"], right_on=["_row", "order_id"]
        )
        redeemed = cps.groupby("_row")["value_cents"].sum()
        cost = cost + redeemed.reindex(pd.Index(rows["_row"]), fill_value=0).to_numpy()
    return cost


def _curves(evaluated: pd.DataFrame, hits: pd.DataFrame, age: np.ndarray, curve_days: int) -> pd.DataFrame:
    if evaluated.empty:
        return pd.DataFrame(columns=CURVE_COLUMNS)
    first = hits[hits["delta_days"] <= curve_days].groupby("_row")["delta_days"].min()
    rows = evaluated[[*COHORT_KEY, "_row", "arm"]].copy()
    rows["_first_day"] = np.ceil(first.reindex(pd.Index(rows["_row"])).to_numpy())
    rows["_max_day"] = np.minimum(age[rows["_row"].to_numpy()], curve_days)
    days = np.arange(curve_days + 1)
    keys = [*COHORT_KEY, "arm"]
    responded = rows["_first_day"].to_numpy()[:, None] <= days[None, :]  # NaN compares False
    table = pd.DataFrame(responded, columns=days, index=rows.index)
    table[keys] = rows[keys]
    grouped = table.groupby(keys, sort=True)
    counts, sizes = grouped[list(days)].sum(), grouped.size()
    long = counts.stack().rename("responders").reset_index()
    long.columns = [*keys, "day", "responders"]
    long = long.merge(sizes.rename("customers").reset_index(), on=keys)
    treat = long[long["arm"] == TREATMENT].drop(columns="arm")
    ctrl = long[long["arm"] == CONTROL].drop(columns="arm")
    ctrl = ctrl.rename(columns={"responders": "control_responders", "customers": "control_customers"})
    out = treat.merge(ctrl, on=[*COHORT_KEY, "day"], how="outer")
    for col in ("customers", "responders", "control_customers", "control_responders"):
        out[col] = out[col].fillna(0).astype("int64")
    max_day = rows.groupby(COHORT_KEY)["_max_day"].max().rename("_max").reset_index()
    out = out.merge(max_day, on=COHORT_KEY)
    out = out[out["day"] <= out["_max"]].drop(columns="_max")
    with np.errstate(invalid="ignore", divide="ignore"):
        out["response_rate"] = np.where(out["customers"] > 0, out["responders"] / out["customers"], np.nan)
        out["control_rate"] = np.where(
            out["control_customers"] > 0, out["control_responders"] / out["control_customers"], np.nan
        )
    out["lift"] = out["response_rate"] - out["control_rate"]
    out["day"] = out["day"].astype("int64")
    return out[CURVE_COLUMNS].sort_values([*COHORT_KEY, "day"], kind="stable").reset_index(drop=True)


def _categories_table(long: pd.DataFrame, hits: pd.DataFrame, top: int) -> pd.DataFrame:
    rows = long[long["primary"] & (long["view"] == ITT)][[*COHORT_KEY, "window_days", "_row", "arm"]]
    if rows.empty or hits.empty or top <= 0:
        return pd.DataFrame(columns=CATEGORY_COLUMNS)
    orders = hits.merge(rows, on="_row")
    orders = orders[orders["delta_days"] <= orders["window_days"]]
    if orders.empty:
        return pd.DataFrame(columns=CATEGORY_COLUMNS)
    keys = [*COHORT_KEY, "window_days", "arm"]
    totals = orders.groupby(keys)["order_id"].nunique().rename("_total")
    orders = orders.assign(category=orders["categories"].map(_categories))
    orders["category"] = orders["category"].map(lambda cats: cats or ["(unknown)"])
    exploded = orders.explode("category")
    table = (
        exploded.groupby([*keys, "category"])
        .agg(orders=("order_id", "nunique"), customers=("customer_id", "nunique"))
        .reset_index()
    )
    table = table.merge(totals.reset_index(), on=keys)
    table["share"] = table["orders"] / table["_total"]
    table = table.sort_values([*keys, "orders", "category"], ascending=[True] * len(keys) + [False, True])
    table["rank"] = table.groupby(keys).cumcount() + 1
    table = table[table["rank"] <= top]
    return table[CATEGORY_COLUMNS].reset_index(drop=True)
