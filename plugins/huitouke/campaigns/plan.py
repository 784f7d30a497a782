"""The daily planner: who enters which campaign, which waves are due, who exits, and what is sent.

One plain, deterministic function of the day's inputs, :func:`plan_day` (no database, no Airflow,
no clock): the same inputs give the same plan, row for row, so re-running a day plans it again
identically and the outbox's unique key makes sure nothing is queued twice.

Inputs (pandas DataFrames; extra columns are ignored)
=====================================================

``segments``   the day's segments, :data:`huitouke.segments.classify.SEGMENTS_COLUMNS`: one row per
               customer with a paid order. Only these customers can enter a campaign.
``contacts``   :data:`CONTACT_COLUMNS`: ``customer_id, phone, email, sms_opt_out, email_opt_out,
               birthday`` (the ``customers`` table). Missing customer = no address, not opted out.
``orders``     the day's paid orders, :data:`huitouke.campaigns.rules.ORDER_COLUMNS`: ``order_id,
               customer_id, business_date, amount_cents, categories`` (a list or "a,b" per order),
               ``coupon_code``; other days' rows and unpaid statuses (optional ``status``) are dropped.
``entries``    stored campaign entries, :data:`ENTRY_COLUMNS` (``campaign, customer_id, entered_on,
               arm, variant, exited_on, exit_reason``; ``last_wave`` and ``next_wave_on`` are not read).
               Pass every open entry, the latest entry of every (campaign, customer), and the entries
               of the business day itself; passing all entries is fine.
``history``    past contacts, :data:`HISTORY_COLUMNS`: ``customer_id, contacted_on`` and optionally
               ``counts_toward_cap`` (default true): one row per treated wave of the last
               ``contact_pressure.longest_window_days`` days (the ``campaign_waves`` rows with outcome
               ``treated``). Rows of the business day or later are ignored: they are this day's own
               plan from an earlier run.

Result: :class:`DayPlan` (``entries``, ``waves``, ``sends``, ``summary``; ``exits`` is a view).

The day, step by step
=====================

1. **Entries.** For each enabled campaign within ``starts_on .. ends_on``: the customers whose
   segment row meets the entry rule today (:mod:`huitouke.campaigns.rules`) and, when the campaign
   has variants, one of them (the first that matches is the variant; no match, no entry). Not
   entered: a customer with an open entry of the campaign, or whose latest entry is less than
   ``reentry_after_days`` old (``reentry_after_days: null``: once per customer, ever). Entries
   already stored for the day are *recognised* (key campaign, customer, entered_on) and kept as
   stored, arm included. ``max_new_entries_per_day`` takes that many (less the day's recognised
   entries), in a deterministic random order of the customer ids (ties: the id); the others are
   counted as ``deferred`` (a ``state`` event lets them enter another day).
   The arm is :func:`huitouke.campaigns.holdout.assign_arms` at entry, stored, never recomputed.
2. **Schedule.** Wave k of an entry is due on ``entered_on + first_after_days + (k-1) *
   interval_days`` for k = 1 .. ``max_waves`` (a pure function of the entry date: nothing to keep
   in step, and a skipped day does not shift later waves). Holdout entries have the same schedule.
3. **Exits**, checked for every open entry, in this order: ``repurchased`` — the campaign stops
   on repurchase and the customer's latest paid order is after the entry day (no wave is due any
   more that day); ``opted_out`` — opted out of every channel of the campaign (a wave due that day
   is recorded as suppressed ``opted_out``); ``completed`` — the last wave fell due. The exit day is
   the business day.
4. **Decisions** for every wave due today, for both arms alike, as if every customer were treated:

   a. channels: reachable = an address and no opt-out (``sms`` and ``call`` need a phone and no
      ``sms_opt_out``; ``email`` an address and no ``email_opt_out``); ``channel_policy: all`` uses
      every reachable channel, ``first_reachable`` the first in the campaign's list. None reachable:
      suppressed ``opted_out`` (opted out of all) or ``no_contact``.
   b. member-tier cap (``kind: marketing`` only): the customer's tier allows ``max_contacts`` capped
      contacts in any ``per_days`` days including today; with that many already in the last
      ``per_days - 1`` days: suppressed ``cap_member_tier``. A contact is one treated wave,
      whatever its number of channels; calls count like any message of a marketing campaign;
      ``kind: service`` campaigns (care tips, follow-up calls) neither count nor are capped.
   c. priority: one campaign per customer per day; the highest priority among the waves that
      passed a and b wins, the others are suppressed ``lower_priority``.
   d. daily global cap: winners in order of priority, then a deterministic random order, are taken
      while the messages actually sent (treated arm only) stay within ``daily_global_cap``; the
      rest are suppressed ``cap_daily_global``. A holdout row takes the place it would take if
      treated, so the cut is blind to the arm.
   e. what passed: ``treated`` (arm treatment) or ``held_out`` (arm holdout, nothing is sent).

   Why decide both arms as if treated: suppression must not depend on the arm, or the holdout
   would differ from the treated in who was suppressed (e.g. a capped customer dropped from one
   arm only), and the comparison of the evaluation would be biased. Holdout customers do not
   consume caps (they received nothing), exactly as customers outside the campaign.
5. **Sends**: one row per treated wave and chosen channel, with its template and coupon terms;
   coupon codes come from :func:`huitouke.campaigns.coupons.issue_coupons`.

Two halves, for customer shards
===============================

:func:`plan_day` is :func:`plan_candidates` then :func:`decide_day`. The candidates are what some
customers decide alone (steps 1 to 3, with every qualifying customer a *fresh* entry before the
entry limit, and 4a-4b); :func:`decide_day` decides over the candidates of every customer what
needs them all at once (the entry limit of step 1, then 4c-4e and the coupon terms) and gives the
same plan for any split of the customers, in any order: the daily run plans each customer shard in
its own task and decides in one reduce step (:mod:`huitouke.campaigns.daily`, docs/campaigns.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, fields, replace
from datetime import date
from typing import Any

import numpy as np
import pandas as pd

from huitouke.campaigns.holdout import HOLDOUT, TREATMENT, assign_arms, uniforms
from huitouke.campaigns.playbook import CALL, EMAIL, SMS, Campaign, ContactPressure, Playbook
from huitouke.campaigns.rules import RuleInputs, conditions_mask, entry_mask, prepare_orders
from huitouke.campaigns.tables import columns_of
from huitouke.pii import get_logger
from huitouke.store.schema import campaign_waves

log = get_logger(__name__)

TREATED, HELD_OUT, SUPPRESSED = "treated", "held_out", "suppressed"
OUTCOMES: tuple[str, ...] = (TREATED, HELD_OUT, SUPPRESSED)
OPTED_OUT, NO_CONTACT = "opted_out", "no_contact"
CAP_MEMBER_TIER, CAP_DAILY_GLOBAL, LOWER_PRIORITY = "cap_member_tier", "cap_daily_global", "lower_priority"
SUPPRESSION_REASONS: tuple[str, ...] = (
    OPTED_OUT,
    NO_CONTACT,
    CAP_MEMBER_TIER,
    LOWER_PRIORITY,
    CAP_DAILY_GLOBAL,
)
REPURCHASED, COMPLETED = "repurchased", "completed"
EXIT_REASONS: tuple[str, ...] = (REPURCHASED, COMPLETED, OPTED_OUT)

# The segment fields the planner reads (of huitouke.segments.classify.SEGMENTS_COLUMNS).
SEGMENT_INPUTS: tuple[str, ...] = (
    "customer_id",
    "member_tier",
    "category_group",
    "days_since_first_order",
    "days_since_last_order",
)
ENTRY_COLUMNS: tuple[str, ...] = (
    "campaign",
    "customer_id",
    "entered_on",
    "arm",
    "variant",
    "last_wave",
    "next_wave_on",
    "exited_on",
    "exit_reason",
)
# The coupon a treated wave carries: its terms (the code comes with issue_coupons).
COUPON_TERM_COLUMNS: tuple[str, ...] = ("coupon_value_cents", "coupon_min_spend_cents", "coupon_expires_on")
# A wave as stored (campaign_waves, less the time of writing), then its coupon terms.
STORED_WAVE_COLUMNS: tuple[str, ...] = columns_of(campaign_waves, without=("planned_at",))
WAVE_COLUMNS: tuple[str, ...] = (*STORED_WAVE_COLUMNS, *COUPON_TERM_COLUMNS)
SEND_COLUMNS: tuple[str, ...] = (
    "campaign",
    "customer_id",
    "entered_on",
    "wave",
    "variant",
    "channel",
    "template",
    "recipient",
    "business_date",
    "category_group",
    *COUPON_TERM_COLUMNS,
)
CONTACT_COLUMNS: tuple[str, ...] = (
    "customer_id",
    "phone",
    "email",
    "sms_opt_out",
    "email_opt_out",
    "birthday",
)
HISTORY_COLUMNS: tuple[str, ...] = ("customer_id", "contacted_on", "counts_toward_cap")
SUMMARY_COLUMNS: tuple[str, ...] = (
    "campaign",
    "priority",
    "kind",
    "entered",
    "entered_holdout",
    "deferred",
    "due",
    "treated",
    "held_out",
    *(f"suppressed_{r}" for r in SUPPRESSION_REASONS),
    *(f"exited_{r}" for r in EXIT_REASONS),
    "messages",
)

_NAT = np.iinfo(np.int64).min


@dataclass(frozen=True)
class DayPlan:
    """What :func:`plan_day` decided for one business day.

    - ``entries`` (:data:`ENTRY_COLUMNS`): rows to upsert by (campaign, customer_id, entered_on):
      the day's entries and every open entry whose wave fell due or which exited today.
    - ``waves`` (:data:`WAVE_COLUMNS`): one row per wave due today, with its outcome and reason.
    - ``sends`` (:data:`SEND_COLUMNS`): one row per message to render and queue (None from
      :func:`decide_day`: the stored plan's waves and the contacts are what rendering reads).
    - ``summary`` (:data:`SUMMARY_COLUMNS`): one row per campaign, highest priority first.
    """

    business_date: date
    entries: pd.DataFrame
    waves: pd.DataFrame
    sends: pd.DataFrame | None
    summary: pd.DataFrame
    notes: tuple[str, ...] = field(default=())

    @property
    def exits(self) -> pd.DataFrame:
        """The entries that exited today."""
        return self.entries[self.entries["exit_reason"].notna()].reset_index(drop=True)

    def as_dict(self) -> dict[str, Any]:
        """The summary as plain values (for XCom)."""
        return {
            "business_date": self.business_date.isoformat(),
            "campaigns": {
                row["campaign"]: {k: _plain(v) for k, v in row.items() if k != "campaign"}
                for row in self.summary.to_dict("records")
            },
            "messages": int(self.summary["messages"].sum()) if len(self.summary) else 0,
        }

    def as_text(self) -> str:
        """The summary as a table for the task log (no personal data)."""
        headers = [
            ("campaign", "campaign"),
            ("entered", "entered"),
            ("entered_holdout", "in holdout"),
            ("deferred", "deferred"),
            ("due", "due"),
            ("treated", "treated"),
            ("held_out", "held out"),
            *((f"suppressed_{r}", r) for r in SUPPRESSION_REASONS),
            ("exited_repurchased", "exit rebuy"),
            ("exited_completed", "exit done"),
            ("exited_opted_out", "exit optout"),
            ("messages", "messages"),
        ]
        rows = [
            [str(r[k]) if k == "campaign" else f"{int(r[k]):,}" for k, _ in headers]
            for r in self.summary.to_dict("records")
        ]
        widths = [
            max(len(title), *(len(row[i]) for row in rows)) if rows else len(title)
            for i, (_, title) in enumerate(headers)
        ]
        out = [f"Campaign plan for {self.business_date}"]
        out.append(
            "  ".join(
                t.ljust(w) if i == 0 else t.rjust(w)
                for i, ((_, t), w) in enumerate(zip(headers, widths, strict=True))
            )
        )
        for row in rows:
            out.append(
                "  ".join(
                    c.ljust(w) if i == 0 else c.rjust(w)
                    for i, (c, w) in enumerate(zip(row, widths, strict=True))
                )
            )
        out.extend(self.notes)
        return "\n".join(out)


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _objects(frame: pd.DataFrame) -> pd.DataFrame:
    """Text and date columns as ``object`` with ``None`` for missing (pandas would infer ``str``
    with NaN): what the store's nullable columns take, and what ``is None`` checks expect."""
    for column in frame.columns:
        values = frame[column]
        if values.dtype == object or pd.api.types.is_string_dtype(values.dtype):
            values = values.astype(object)
            frame[column] = values.where(values.notna(), None)
    return frame


# ------------------------------------------------------------------------------------------ inputs


def _days(values: Any) -> np.ndarray:
    """Dates (date objects, strings, datetime64) as int64 day numbers; missing = _NAT."""
    stamps = pd.to_datetime(pd.Series(values), errors="coerce")
    out = stamps.to_numpy(dtype="datetime64[D]").astype(np.int64)
    return out


def _dates(days: np.ndarray) -> np.ndarray:
    """int64 day numbers as an object array of ``datetime.date`` (``_NAT`` = None)."""
    days = np.asarray(days, dtype=np.int64)
    out = days.astype("datetime64[D]").astype(object)
    out[days == _NAT] = None
    return out


def empty_entries() -> pd.DataFrame:
    """No entries, with the columns :func:`plan_day` reads."""
    return pd.DataFrame({c: pd.Series([], dtype=object) for c in ENTRY_COLUMNS})


def _require(frame: pd.DataFrame, columns: tuple[str, ...], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{what} lack columns: {', '.join(missing)}")


def _bool(series: pd.Series) -> np.ndarray:
    return series.fillna(False).astype(bool).to_numpy()


def _present(series: pd.Series) -> np.ndarray:
    """Whether each value is a non-blank address."""
    text = series.astype("string").str.strip()
    return (text.str.len() > 0).fillna(False).to_numpy(dtype=bool)


@dataclass
class _People:
    """Per-customer arrays, looked up by a customer's position ("code").

    Codes ``0 .. n_segments - 1`` are the rows of the day's segments; customers of stored entries
    who have no segment row get the codes after them (their segment fields are missing). Every
    customer id is looked up once (``index.get_indexer``; -1 = unknown); the planner then works with
    the integer codes. ``crow`` is each code's row in the (de-duplicated) contacts.
    """

    index: pd.Index
    ids: np.ndarray  # object: the customer id of each code
    n_segments: int
    extra: pd.Index  # ids of the codes n_segments.. (stored entries without a segment row)
    member_tier: np.ndarray  # per code (None after n_segments)
    last_order_day: np.ndarray  # per code (_NAT after n_segments)
    category_group: np.ndarray  # per code (None after n_segments)
    crow: np.ndarray  # per code: row in the contacts, -1 = none
    phone: np.ndarray  # per contact row
    email: np.ndarray
    has: dict[str, np.ndarray]
    opted_out: dict[str, np.ndarray]

    def rows(self, ids: np.ndarray) -> np.ndarray:
        """The codes of ``ids`` (-1 = unknown)."""
        rows = self.index.get_indexer(ids)
        if len(self.extra):
            missing = np.flatnonzero(rows < 0)
            if len(missing):
                found = self.extra.get_indexer(np.asarray(ids, dtype=object)[missing])
                rows[missing] = np.where(found >= 0, found + self.n_segments, -1)
        return rows


def _people(
    segments: pd.DataFrame, contacts: pd.DataFrame, today: int, stored_ids: np.ndarray
) -> tuple[_People, np.ndarray]:
    """The day's customers, and the codes of ``stored_ids`` (the stored entries' customers)."""
    since_last = pd.to_numeric(segments["days_since_last_order"], errors="coerce").to_numpy(dtype=float)
    last_day = np.where(np.isnan(since_last), _NAT, today - np.nan_to_num(since_last, nan=0)).astype(np.int64)
    contacts = contacts.drop_duplicates("customer_id", keep="last")
    phone = contacts["phone"].astype(object).where(contacts["phone"].notna(), None).to_numpy()
    email = contacts["email"].astype(object).where(contacts["email"].notna(), None).to_numpy()
    has_phone, has_email = _present(contacts["phone"]), _present(contacts["email"])
    sms_out, email_out = _bool(contacts["sms_opt_out"]), _bool(contacts["email_opt_out"])
    seg_ids = segments["customer_id"].astype("str").to_numpy(dtype=object)
    index = pd.Index(seg_ids, dtype=object)
    n = len(seg_ids)
    extra = pd.Index([], dtype=object)
    stored_codes = index.get_indexer(stored_ids)
    unknown = stored_codes < 0
    if unknown.any():
        extra = pd.Index(pd.unique(stored_ids[unknown]), dtype=object)
        stored_codes[unknown] = extra.get_indexer(stored_ids[unknown]) + n
    ids = np.concatenate([seg_ids, extra.to_numpy(dtype=object)]) if len(extra) else seg_ids
    pad = len(extra)
    contact_ids = contacts["customer_id"].astype("str").to_numpy(dtype=object)
    if len(contact_ids) == len(ids) and bool((contact_ids == ids).all()):
        crow = np.arange(len(ids), dtype=np.intp)  # the contacts are the day's customers, in order
    else:
        crow = pd.Index(contact_ids, dtype=object).get_indexer(ids)
    people = _People(
        index=index,
        ids=ids,
        n_segments=n,
        extra=extra,
        member_tier=_padded(segments["member_tier"].astype(object).to_numpy(), pad, None),
        last_order_day=_padded(last_day, pad, _NAT),
        category_group=_padded(segments["category_group"].astype(object).to_numpy(), pad, None),
        crow=crow,
        phone=phone,
        email=email,
        has={SMS: has_phone, CALL: has_phone, EMAIL: has_email},
        opted_out={SMS: sms_out, CALL: sms_out, EMAIL: email_out},
    )
    return people, stored_codes.astype(np.int64)


def _padded(values: np.ndarray, pad: int, fill: Any) -> np.ndarray:
    if not pad:
        return values
    return np.concatenate([values, np.full(pad, fill, dtype=values.dtype if fill is not None else object)])


def _take(values: np.ndarray, rows: np.ndarray, fill: Any) -> np.ndarray:
    """``values[rows]`` with ``fill`` where ``rows == -1``."""
    if len(values) == 0:
        return np.full(len(rows), fill, dtype=values.dtype if values.dtype != object else object)
    out = values[np.where(rows >= 0, rows, 0)]
    if (rows < 0).any():
        out = out.astype(object) if values.dtype == object else out.copy()
        out[rows < 0] = fill
    return out


def _none(values: np.ndarray) -> np.ndarray:
    """An object array with ``None`` for every missing value (NaN, NA)."""
    values = np.asarray(values, dtype=object)
    missing = pd.isna(values)
    if missing.any():
        values = values.copy()
        values[missing] = None
    return values


def _column(values: np.ndarray) -> pd.Series:
    """An object column (pandas would infer ``str`` from an object array of text)."""
    return pd.Series(values, dtype=object, copy=False)


def _normalise_contacts(contacts: pd.DataFrame | None) -> pd.DataFrame:
    if contacts is None:
        contacts = pd.DataFrame({c: pd.Series([], dtype=object) for c in CONTACT_COLUMNS})
    _require(contacts, ("customer_id",), "contacts")
    frame = contacts.copy()
    for column in CONTACT_COLUMNS[1:]:
        if column not in frame.columns:
            frame[column] = None
    frame["customer_id"] = frame["customer_id"].astype("str")
    return frame


def _normalise_entries(entries: pd.DataFrame | None) -> pd.DataFrame:
    if entries is None or len(entries) == 0:
        return pd.DataFrame(
            {
                "campaign": pd.Series([], dtype=object),
                "customer_id": pd.Series([], dtype=object),
                "entered_on": np.empty(0, dtype=np.int64),
                "arm": pd.Series([], dtype=object),
                "variant": pd.Series([], dtype=object),
                "exited_on": np.empty(0, dtype=np.int64),
            }
        )
    _require(entries, ("campaign", "customer_id", "entered_on", "arm"), "entries")
    variant = entries["variant"] if "variant" in entries.columns else pd.Series([""] * len(entries))
    exited = entries["exited_on"] if "exited_on" in entries.columns else pd.Series([None] * len(entries))
    return pd.DataFrame(
        {
            "campaign": _column(entries["campaign"].astype(str).to_numpy(dtype=object)),
            "customer_id": _column(entries["customer_id"].astype(str).to_numpy(dtype=object)),
            "entered_on": _days(entries["entered_on"].to_numpy()),
            "arm": _column(entries["arm"].astype(str).to_numpy(dtype=object)),
            "variant": _column(variant.fillna("").astype(str).to_numpy(dtype=object)),
            "exited_on": _days(exited.to_numpy()),
        },
        copy=False,
    )


def _history_counts(
    history: pd.DataFrame | None, today: int, windows: set[int], people: _People
) -> dict[int, np.ndarray]:
    """Per window length D: capped contacts per customer code on days [today - D + 1, today - 1]."""
    size = len(people.ids)
    if history is None or len(history) == 0:
        return {d: np.zeros(size, dtype=np.int64) for d in windows}
    _require(history, ("customer_id", "contacted_on"), "history")
    day = _days(history["contacted_on"].to_numpy())
    counts = (
        _bool(history["counts_toward_cap"])
        if "counts_toward_cap" in history.columns
        else np.ones(len(history), dtype=bool)
    )
    # Only the rows that can count in some window are looked up.
    longest = max(windows, default=0)
    useful = counts & (day != _NAT) & (day < today) & (day > today - longest)
    codes = people.rows(history["customer_id"].astype(str).to_numpy(dtype=object)[useful])
    day = day[useful]
    known = codes >= 0
    out = {}
    for d in windows:
        keep = known & (day > today - d)
        out[d] = np.bincount(codes[keep], minlength=size).astype(np.int64)
    return out


# ------------------------------------------------------------------------------------------ the day


@dataclass(frozen=True)
class _Today:
    """The business day every campaign is planned on, and what each campaign's day reads."""

    business_date: date
    today: int  # the business date as a day number
    playbook: Playbook
    people: _People
    rules: RuleInputs  # the day's segments, orders, birthdays: what the entry rules read


@dataclass
class _Active:
    """A campaign's open entries and the day's entries, as arrays, with the day's schedule and exits."""

    customer_id: np.ndarray
    code: np.ndarray  # the customer's code in _People
    entered_on: np.ndarray
    arm: np.ndarray
    variant: np.ndarray
    is_new: np.ndarray
    fresh: np.ndarray  # entering now (not stored yet): subject to max_new_entries_per_day
    due: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    wave: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    last_wave: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    next_wave_on: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    exit_reason: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=object))

    def __len__(self) -> int:
        return len(self.customer_id)


@dataclass
class _CampaignDay:
    name: str
    campaign: Campaign
    active: _Active
    stored_today: int = 0  # entries of the day already stored (they count toward the entry limit)


@dataclass(frozen=True)
class _Slot:
    """An enabled campaign of the day, by name: what the decisions over all customers read of it."""

    name: str
    campaign: Campaign


def _slots(playbook: Playbook) -> list[_Slot]:
    """The enabled campaigns, highest priority first (the order of the summary)."""
    return [_Slot(name, c) for name, c in playbook.campaigns_by_priority() if c.enabled]


def plan_day(
    playbook: Playbook,
    business_date: date,
    segments: pd.DataFrame,
    contacts: pd.DataFrame | None = None,
    orders: pd.DataFrame | None = None,
    entries: pd.DataFrame | None = None,
    history: pd.DataFrame | None = None,
) -> DayPlan:
    """Plan one business day for every campaign of the playbook (see the module docstring): the
    candidates of all customers (:func:`plan_candidates`), decided (:func:`decide_day`), with the
    sends."""
    candidates, day = _candidates(playbook, business_date, segments, contacts, orders, entries, history)
    plan, waves = _decided(playbook, business_date, [candidates])
    people = day.people
    rows = replace(waves.rows, code=people.rows(waves.rows.customer_id))
    sends = _sends(_Waves(waves.frame, rows), _slots(playbook), people, day.today)
    return replace(plan, sends=sends)


# --------------------------------------------------------------------- candidates, then decisions

# A shard's candidate entries: the touched entries (new today, a wave due, or exiting), ``fresh``
# ones not admitted yet (the entry limit is decided over all customers). Days are day numbers.
CANDIDATE_ENTRY_COLUMNS: tuple[str, ...] = (
    "campaign",
    "customer_id",
    "entered_on",
    "arm",
    "variant",
    "last_wave",
    "next_wave_on",
    "exit_reason",
    "fresh",
)
# A shard's candidate waves: every wave due today, ``reason`` set by steps 4a-4b (None: open).
CANDIDATE_WAVE_COLUMNS: tuple[str, ...] = (
    "campaign",
    "customer_id",
    "entered_on",
    "wave",
    "arm",
    "variant",
    "channels",
    "messages",
    "reason",
    "fresh",
)
_CANDIDATE_INTS = ("entered_on", "last_wave", "next_wave_on", "wave", "messages")


@dataclass(frozen=True)
class Candidates:
    """What planning decides of some customers alone (steps 1 to 4b): their touched entries and
    their waves due, before the decisions that need every customer at once (the entry limit, the
    priority among a customer's waves, the daily global cap, outcomes, coupon terms:
    :func:`decide_day`). A function of those customers' inputs only, so the candidates of any
    split of the customers, decided together, give the same plan."""

    business_date: date
    entries: pd.DataFrame  # CANDIDATE_ENTRY_COLUMNS
    waves: pd.DataFrame  # CANDIDATE_WAVE_COLUMNS
    stored_today: dict[str, int]  # campaign -> its entries of the day already stored
    unknown_campaigns: tuple[str, ...] = ()  # of stored entries, not in the playbook
    future_entries: int = 0  # stored entries dated after the day

    def figures(self) -> dict[str, Any]:
        """Plain, small figures: what a shard task returns, and what its staged row keeps besides
        the frames."""
        return {
            "business_date": self.business_date.isoformat(),
            "entries": len(self.entries),
            "fresh": int(self.entries["fresh"].sum()) if len(self.entries) else 0,
            "waves": len(self.waves),
            "stored_today": {k: int(v) for k, v in self.stored_today.items()},
            "unknown_campaigns": list(self.unknown_campaigns),
            "future_entries": int(self.future_entries),
        }

    @classmethod
    def of(cls, figures: dict[str, Any], entries: pd.DataFrame, waves: pd.DataFrame) -> Candidates:
        """The candidates from :meth:`figures` and the two frames (as staged)."""
        return cls(
            business_date=date.fromisoformat(figures["business_date"]),
            entries=entries,
            waves=waves,
            stored_today={k: int(v) for k, v in figures["stored_today"].items()},
            unknown_campaigns=tuple(figures["unknown_campaigns"]),
            future_entries=int(figures["future_entries"]),
        )


def plan_candidates(
    playbook: Playbook,
    business_date: date,
    segments: pd.DataFrame,
    contacts: pd.DataFrame | None = None,
    orders: pd.DataFrame | None = None,
    entries: pd.DataFrame | None = None,
    history: pd.DataFrame | None = None,
) -> Candidates:
    """Steps 1 to 4b for the customers of ``segments`` and of the stored ``entries`` (a shard:
    pass only its customers' segments and entries; contacts, orders and history may hold other
    customers' rows, they are looked up by customer id). Inputs as for :func:`plan_day`."""
    return _candidates(playbook, business_date, segments, contacts, orders, entries, history)[0]


def _candidates(
    playbook: Playbook,
    business_date: date,
    segments: pd.DataFrame,
    contacts: pd.DataFrame | None,
    orders: pd.DataFrame | None,
    entries: pd.DataFrame | None,
    history: pd.DataFrame | None,
) -> tuple[Candidates, _Today]:
    """The candidates, and the day they were planned on (its customers, for the sends)."""
    _require(segments, SEGMENT_INPUTS, "segments")
    stored = _normalise_entries(entries)
    day, current = _today(playbook, business_date, segments, contacts, orders, stored)
    days = _campaign_days(day, current)
    due = _due_waves(days, day.people)
    if due is not None:
        _member_caps(due, day.people, history, day.today, playbook.contact_pressure)
    candidates = Candidates(
        business_date=business_date,
        entries=_candidate_entries(days),
        waves=_candidate_waves(due, days),
        stored_today={d.name: d.stored_today for d in days},
        unknown_campaigns=tuple(sorted(set(stored["campaign"]) - set(playbook.campaigns))),
        future_entries=int((stored["entered_on"] > day.today).sum()),
    )
    return candidates, day


def _candidate_entries(days: list[_CampaignDay]) -> pd.DataFrame:
    """The touched entries of the campaign days as :data:`CANDIDATE_ENTRY_COLUMNS` (any order)."""
    cols = _touched_entries(days)
    if cols is None:
        return _no_candidates(CANDIDATE_ENTRY_COLUMNS)
    names = np.array([d.name for d in days], dtype=object)
    return pd.DataFrame(
        {
            "campaign": _column(names[cols["day"]]),
            "customer_id": _column(_none(cols["customer_id"])),
            "entered_on": cols["entered_on"].astype(np.int64),
            "arm": _column(_none(cols["arm"])),
            "variant": _column(_none(cols["variant"])),
            "last_wave": cols["last_wave"].astype(np.int64),
            "next_wave_on": cols["next"].astype(np.int64),
            "exit_reason": _column(_none(cols["reason"])),
            "fresh": cols["fresh"].astype(bool),
        },
        copy=False,
    )


def _candidate_waves(due: _Due | None, days: list[_CampaignDay]) -> pd.DataFrame:
    """The waves due as :data:`CANDIDATE_WAVE_COLUMNS` (any order)."""
    if due is None:
        return _no_candidates(CANDIDATE_WAVE_COLUMNS)
    names = np.array([d.name for d in days], dtype=object)
    return pd.DataFrame(
        {
            "campaign": _column(names[due.day]),
            "customer_id": _column(_none(due.customer_id)),
            "entered_on": due.entered_on.astype(np.int64),
            "wave": due.wave.astype(np.int64),
            "arm": _column(_none(due.arm)),
            "variant": _column(_none(due.variant)),
            "channels": _column(due.channels),
            "messages": due.messages.astype(np.int64),
            "reason": _column(_none(due.reason)),
            "fresh": due.fresh.astype(bool),
        },
        copy=False,
    )


def _no_candidates(columns: tuple[str, ...]) -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series([], dtype=object) for c in columns})
    for c in columns:
        if c in _CANDIDATE_INTS:
            frame[c] = pd.Series([], dtype=np.int64)
    frame["fresh"] = pd.Series([], dtype=bool)
    return frame


def decide_day(playbook: Playbook, business_date: date, parts: Iterable[Candidates]) -> DayPlan:
    """The day's plan from the candidates of every customer, in any split and any order (the
    shards'): the entry limit, then steps 4c-4e, the entries, waves and summary as
    :func:`plan_day` gives them. ``sends`` is None: rendering reads the stored plan."""
    return _decided(playbook, business_date, list(parts))[0]


def _decided(playbook: Playbook, business_date: date, parts: list[Candidates]) -> tuple[DayPlan, _Waves]:
    """The plan (without sends) and its decided waves as arrays."""
    today = int(np.datetime64(business_date, "D").astype(np.int64))
    slots = _slots(playbook)
    entries = _gathered([p.entries for p in parts], CANDIDATE_ENTRY_COLUMNS, slots)
    waves = _gathered([p.waves for p in parts], CANDIDATE_WAVE_COLUMNS, slots)
    stored_today: dict[str, int] = {}
    for part in parts:
        for name, n in part.stored_today.items():
            stored_today[name] = stored_today.get(name, 0) + n
    deferred, refused = _entry_limits(slots, entries, stored_today, business_date)
    entries = entries[~_refused(entries, refused)].reset_index(drop=True)
    waves = waves[~_refused(waves, refused)].reset_index(drop=True)
    decided = _decide_waves(waves, slots, playbook, business_date, today)
    notes = _notes(parts, business_date)
    for note in notes:
        log.warning("%s", note)
    plan = DayPlan(
        business_date=business_date,
        entries=_entry_rows(entries, slots, today),
        waves=decided.frame,
        sends=None,
        summary=_summary(slots, entries, decided.rows, deferred, today),
        notes=tuple(notes),
    )
    return plan, decided


def _gathered(frames: list[pd.DataFrame], columns: tuple[str, ...], slots: list[_Slot]) -> pd.DataFrame:
    """The candidates' frames as one (every campaign must be an enabled one of the playbook)."""
    frames = [f for f in frames if len(f)]
    if not frames:
        return _no_candidates(columns)
    frame = pd.concat([f[list(columns)] for f in frames], ignore_index=True) if len(frames) > 1 else frames[0]
    unknown = set(frame["campaign"]) - {s.name for s in slots}
    if unknown:
        raise ValueError(
            f"candidates name campaigns that are not enabled in the playbook: {', '.join(sorted(unknown))}"
            " (the playbook changed since they were planned: plan the shards again)"
        )
    return frame


def _entry_limits(
    slots: list[_Slot], entries: pd.DataFrame, stored_today: dict[str, int], business_date: date
) -> tuple[dict[str, int], dict[str, np.ndarray]]:
    """Step 1's ``max_new_entries_per_day``, over all customers: of the customers entering a
    campaign now, as many as the limit leaves (less the day's stored entries) enter, in a
    deterministic random order (ties: the customer id); the others are deferred. Returns the
    number deferred and the customer ids refused, per campaign."""
    deferred: dict[str, int] = {}
    refused: dict[str, np.ndarray] = {}
    fresh = entries["fresh"].to_numpy(dtype=bool)
    campaign = entries["campaign"].to_numpy(dtype=object)
    ids = entries["customer_id"].to_numpy(dtype=object)
    for slot in slots:
        limit = slot.campaign.max_new_entries_per_day
        if limit is None:
            continue
        entering = ids[fresh & (campaign == slot.name)]
        room = max(0, limit - stored_today.get(slot.name, 0))
        if len(entering) <= room:
            continue
        draw = uniforms(("entry_limit", slot.name, business_date.isoformat()), entering)
        order = np.lexsort((entering.astype(str), draw))
        refused[slot.name] = entering[order[room:]]
        deferred[slot.name] = len(entering) - room
    return deferred, refused


def _refused(frame: pd.DataFrame, refused: dict[str, np.ndarray]) -> np.ndarray:
    """The rows of ``frame`` (entries or waves) of the fresh entries the entry limit refused."""
    out = np.zeros(len(frame), dtype=bool)
    if not refused:
        return out
    fresh = frame["fresh"].to_numpy(dtype=bool)
    campaign = frame["campaign"].to_numpy(dtype=object)
    ids = frame["customer_id"].to_numpy(dtype=object)
    for name, who in refused.items():
        sel = fresh & (campaign == name)
        out[sel] = pd.Index(who, dtype=object).get_indexer(ids[sel]) >= 0
    return out


def _decide_waves(
    waves: pd.DataFrame, slots: list[_Slot], playbook: Playbook, business_date: date, today: int
) -> _Waves:
    """Steps 4c-4e and the coupon terms over every candidate wave."""
    if not len(waves):
        return _no_waves()
    due = _due_from(waves, slots)
    _priority(due, int(due.code.max()) + 1)
    _global_cap(due, playbook.contact_pressure.daily_global_cap, business_date)
    due.outcome = _outcomes(due)
    _coupon_terms(due, slots, today)
    return _waves_frame(due, slots, today)


def _due_from(waves: pd.DataFrame, slots: list[_Slot]) -> _Due:
    """The candidate waves as arrays in one order whatever the split (campaign, customer id, entry
    day, wave); ``code`` is the rank of the customer id among them."""
    index = {s.name: i for i, s in enumerate(slots)}
    day = waves["campaign"].map(index).to_numpy(dtype=np.int64)
    ids = waves["customer_id"].to_numpy(dtype=object)
    code, _ = pd.factorize(ids, sort=True)
    entered = waves["entered_on"].to_numpy(dtype=np.int64)
    wave = waves["wave"].to_numpy(dtype=np.int64)
    order = np.lexsort((wave, entered, code, day))
    due = _Due(
        day=day[order],
        code=code.astype(np.int64)[order],
        customer_id=ids[order],
        entered_on=entered[order],
        wave=wave[order],
        arm=waves["arm"].to_numpy(dtype=object)[order],
        variant=_none(waves["variant"].to_numpy(dtype=object))[order],
        channels=waves["channels"].to_numpy(dtype=object)[order],
        messages=waves["messages"].to_numpy(dtype=np.int64)[order],
        reason=_none(waves["reason"].to_numpy(dtype=object))[order],
        fresh=waves["fresh"].to_numpy(dtype=bool)[order],
    )
    due.priority = np.array([s.campaign.priority for s in slots], dtype=np.int64)[due.day]
    due.counts_toward_cap = np.array([s.campaign.counts_toward_caps for s in slots], dtype=bool)[due.day]
    return due


def _entry_rows(entries: pd.DataFrame, slots: list[_Slot], today: int) -> pd.DataFrame:
    """Rows to upsert (:data:`ENTRY_COLUMNS`): the day's entries and every open entry with a wave
    due or an exit today, by campaign, customer id and entry day."""
    if not len(entries):
        frame = empty_entries()
        frame["last_wave"] = frame["last_wave"].astype(np.int64)
        return frame
    name_rank = dict(zip((s.name for s in slots), _name_rank(slots).tolist(), strict=True))
    ids = entries["customer_id"].to_numpy(dtype=object)
    code, _ = pd.factorize(ids, sort=True)
    entered = entries["entered_on"].to_numpy(dtype=np.int64)
    order = np.lexsort(
        (
            np.where(entered == _NAT, np.iinfo(np.int64).max, entered),
            code,
            entries["campaign"].map(name_rank).to_numpy(dtype=np.int64),
        )
    )
    reason = _none(entries["exit_reason"].to_numpy(dtype=object))[order]
    exiting = reason != None  # noqa: E711 - element-wise on an object array
    return pd.DataFrame(
        {
            "campaign": _column(entries["campaign"].to_numpy(dtype=object)[order]),
            "customer_id": _column(ids[order]),
            "entered_on": _column(_dates(entered[order])),
            "arm": _column(_none(entries["arm"].to_numpy(dtype=object))[order]),
            "variant": _column(_none(entries["variant"].to_numpy(dtype=object))[order]),
            "last_wave": entries["last_wave"].to_numpy(dtype=np.int64)[order],
            "next_wave_on": _column(_dates(entries["next_wave_on"].to_numpy(dtype=np.int64)[order])),
            "exited_on": _column(_dates(np.where(exiting, today, _NAT))),
            "exit_reason": _column(reason),
        },
        copy=False,
    )


def _notes(parts: list[Candidates], business_date: date) -> list[str]:
    """What the plan leaves aside: entries of campaigns not in the playbook, entries of later days."""
    notes: list[str] = []
    unknown = sorted({c for p in parts for c in p.unknown_campaigns})
    if unknown:
        notes.append(f"entries of campaigns not in the playbook are left as they are: {', '.join(unknown)}")
    future = sum(p.future_entries for p in parts)
    if future:
        notes.append(f"{future} entries dated after {business_date} are ignored")
    return notes


def _summary(
    slots: list[_Slot], entries: pd.DataFrame, due: _Due, deferred: dict[str, int], today: int
) -> pd.DataFrame:
    """One row per enabled campaign (:data:`SUMMARY_COLUMNS`), highest priority first."""
    size = len(slots)
    slot_of = entries["campaign"].map({s.name: i for i, s in enumerate(slots)}).to_numpy(dtype=np.int64)
    new = entries["entered_on"].to_numpy(dtype=np.int64) == today
    held = entries["arm"].to_numpy(dtype=object) == HOLDOUT
    exit_reason = _none(entries["exit_reason"].to_numpy(dtype=object))

    def per_campaign(of: np.ndarray, mask: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        w = None if weights is None else weights[mask]
        return np.bincount(of[mask], weights=w, minlength=size).astype(np.int64)

    treated = due.outcome == TREATED
    counts: dict[str, np.ndarray] = {
        "entered": per_campaign(slot_of, new),
        "entered_holdout": per_campaign(slot_of, new & held),
        "due": per_campaign(due.day, np.ones(len(due.day), dtype=bool)),
        "treated": per_campaign(due.day, treated),
        "held_out": per_campaign(due.day, due.outcome == HELD_OUT),
        **{f"suppressed_{r}": per_campaign(due.day, due.reason == r) for r in SUPPRESSION_REASONS},
        **{f"exited_{r}": per_campaign(slot_of, exit_reason == r) for r in EXIT_REASONS},
        "messages": per_campaign(due.day, treated, due.messages),
    }
    rows = []
    for i, slot in enumerate(slots):
        row: dict[str, Any] = {
            "campaign": slot.name,
            "priority": slot.campaign.priority,
            "kind": slot.campaign.kind,
            "deferred": deferred.get(slot.name, 0),
        }
        row.update({k: int(v[i]) for k, v in counts.items()})
        rows.append(row)
    frame = pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))
    for column in ("priority", *SUMMARY_COLUMNS[3:]):
        frame[column] = frame[column].astype(np.int64)
    return _objects(frame)


def _today(
    playbook: Playbook,
    business_date: date,
    segments: pd.DataFrame,
    contacts: pd.DataFrame | None,
    orders: pd.DataFrame | None,
    stored: pd.DataFrame,
) -> tuple[_Today, pd.DataFrame]:
    """The day's customers and rule inputs, and the stored entries up to the day (with their
    customers' codes)."""
    today = int(np.datetime64(business_date, "D").astype(np.int64))
    segments = segments.reset_index(drop=True)
    # One contact row per customer (the last given wins), for every lookup below.
    contacts = (
        _normalise_contacts(contacts).drop_duplicates("customer_id", keep="last").reset_index(drop=True)
    )
    current = stored[(stored["entered_on"] <= today).to_numpy()]
    people, stored_codes = _people(segments, contacts, today, current["customer_id"].to_numpy(dtype=object))
    day_orders = prepare_orders(orders, business_date)
    birthdays = pd.Series(
        _take(contacts["birthday"].to_numpy(dtype=object), people.crow[: people.n_segments], None)
    )
    rules = RuleInputs(segments, day_orders, birthdays, business_date, playbook.segments)
    return _Today(business_date, today, playbook, people, rules), current.assign(code=stored_codes)


def _campaign_days(day: _Today, current: pd.DataFrame) -> list[_CampaignDay]:
    """Each enabled campaign's day, highest priority first (steps 1 to 3)."""
    by_campaign = {name: rows for name, rows in current.groupby("campaign", sort=False)}
    return [
        _campaign_day(name, campaign, by_campaign.get(name, current.iloc[:0]), day)
        for name, campaign in day.playbook.campaigns_by_priority()
        if campaign.enabled
    ]


@dataclass(frozen=True)
class _Stored:
    """A campaign's stored entries up to the day, as arrays: which are open, which of the day."""

    customer_id: np.ndarray
    code: np.ndarray
    entered_on: np.ndarray
    arm: np.ndarray
    variant: np.ndarray
    is_prior: np.ndarray  # entered before the day
    is_open: np.ndarray  # entered before the day, not exited before it
    is_today: np.ndarray  # entered on the day (recognised: the first stored entry per customer)

    @classmethod
    def of(cls, own: pd.DataFrame, today: int) -> _Stored:
        entered = own["entered_on"].to_numpy(dtype=np.int64)
        exited = own["exited_on"].to_numpy(dtype=np.int64)
        who = own["customer_id"].to_numpy(dtype=object)
        is_prior = entered < today
        is_open = is_prior & ((exited == _NAT) | (exited >= today))
        is_today = ~is_prior
        if is_today.any():  # recognised: keep the first stored entry of the day per customer
            first = ~pd.Series(who).duplicated().to_numpy() | is_prior
            is_today &= first
        return cls(
            customer_id=who,
            code=own["code"].to_numpy(dtype=np.int64),
            entered_on=entered,
            arm=own["arm"].to_numpy(dtype=object),
            variant=own["variant"].to_numpy(dtype=object),
            is_prior=is_prior,
            is_open=is_open,
            is_today=is_today,
        )

    def __len__(self) -> int:
        return len(self.customer_id)


@dataclass(frozen=True)
class _Newcomers:
    """The customers who enter a campaign on the day (their codes in _People), in which variant."""

    ids: np.ndarray
    codes: np.ndarray
    variant: np.ndarray


def _no_newcomers() -> _Newcomers:
    return _Newcomers(np.empty(0, dtype=object), np.empty(0, dtype=np.int64), np.empty(0, dtype=object))


def _campaign_day(name: str, campaign: Campaign, own: pd.DataFrame, day: _Today) -> _CampaignDay:
    """One campaign's entries (step 1, every customer who may enter: the entry limit is decided
    over all customers, :func:`_entry_limits`), schedule and exits (steps 2 and 3) on the day."""
    stored = _Stored.of(own, day.today)
    new = _eligible(campaign, stored, day) if campaign.active_on(day.business_date) else _no_newcomers()
    keep = stored.is_open | stored.is_today
    arms = assign_arms(name, new.ids, campaign.holdout.share, campaign.holdout.salt)
    kept = int(keep.sum())
    active = _Active(
        customer_id=np.concatenate([stored.customer_id[keep], new.ids]),
        code=np.concatenate([stored.code[keep], new.codes]),
        entered_on=np.concatenate(
            [stored.entered_on[keep], np.full(len(new.ids), day.today, dtype=np.int64)]
        ),
        arm=np.concatenate([stored.arm[keep], arms]),
        variant=np.concatenate([stored.variant[keep], new.variant]),
        is_new=np.concatenate([stored.is_today[keep], np.ones(len(new.ids), dtype=bool)]),
        fresh=np.concatenate([np.zeros(kept, dtype=bool), np.ones(len(new.ids), dtype=bool)]),
    )
    _schedule(active, campaign, day.today, day.people)
    return _CampaignDay(name, campaign, active, stored_today=int(stored.is_today.sum()))


def _eligible(campaign: Campaign, stored: _Stored, day: _Today) -> _Newcomers:
    """The customers who meet the entry rule (and a variant's conditions) and may enter again."""
    mask = entry_mask(campaign.entry, day.rules)
    if not mask.any():
        return _no_newcomers()
    mask, variant = _variant_choice(campaign, mask, day.rules)
    if len(stored):  # not again while an entry is open or too recent
        rows = stored.code[_blocked(campaign, stored, day.today)]
        mask[rows[(rows >= 0) & (rows < day.people.n_segments)]] = False
    codes = np.flatnonzero(mask).astype(np.int64)
    return _Newcomers(day.people.ids[codes], codes, variant[mask])


def _variant_choice(campaign: Campaign, mask: np.ndarray, rules: RuleInputs) -> tuple[np.ndarray, np.ndarray]:
    """Each customer's variant: the first whose conditions they meet ("" without variants); with
    variants, a customer who meets none does not enter."""
    variant = np.full(len(mask), "", dtype=object)
    if not campaign.variants:
        return mask, variant
    chosen = np.zeros(len(mask), dtype=bool)
    for name, spec in campaign.variants.items():
        hit = mask & ~chosen & conditions_mask(spec, rules.segments, rules.day_orders, rules.settings)
        variant[hit] = name
        chosen |= hit
    return mask & chosen, variant


def _blocked(campaign: Campaign, stored: _Stored, today: int) -> np.ndarray:
    """Which stored entries keep their customer out: open, of the day, or too recent
    (``reentry_after_days``; null: any earlier entry)."""
    blocked = stored.is_open | stored.is_today
    if campaign.reentry_after_days is None:
        return blocked | stored.is_prior
    return blocked | (stored.is_prior & (stored.entered_on > today - campaign.reentry_after_days))


def _schedule(active: _Active, campaign: Campaign, today: int, people: _People) -> None:
    """Set the wave due today, the waves fallen due, exits and the next wave's date."""
    waves = campaign.waves
    total = waves.max_waves
    n = len(active)
    offset = today - active.entered_on - waves.first_after_days
    if waves.interval_days:
        step = waves.interval_days
        due = (offset >= 0) & (offset % step == 0) & (offset // step < total)
        wave = offset // step + 1
        before = np.clip((offset + step - 1) // step, 0, total)
    else:
        due = offset == 0
        wave = np.ones(n, dtype=np.int64)
        before = (offset > 0).astype(np.int64)
    if waves.stops_on_repurchase:
        last_order = _take(people.last_order_day, active.code, _NAT).astype(np.int64)
        repurchased = (last_order != _NAT) & (last_order > active.entered_on)
    else:
        repurchased = np.zeros(n, dtype=bool)
    due &= ~repurchased
    crow = _take(people.crow, active.code, -1)
    opted_all = np.ones(n, dtype=bool)
    for v in pd.unique(active.variant):
        of_v = active.variant == v
        out = np.ones(n, dtype=bool)
        for channel in campaign.offer("", v).channels:
            out &= _take(people.opted_out[channel], crow, False).astype(bool)
        opted_all[of_v] = out[of_v]
    last_wave = before + due
    reason = np.full(n, None, dtype=object)
    reason[last_wave >= total] = COMPLETED
    reason[opted_all] = OPTED_OUT
    reason[repurchased] = REPURCHASED
    exiting = reason != None  # noqa: E711 - element-wise on an object array
    nxt = active.entered_on + waves.first_after_days + last_wave * (waves.interval_days or 0)
    active.due = due
    active.wave = np.where(due, wave, 0).astype(np.int64)
    active.last_wave = last_wave.astype(np.int64)
    active.next_wave_on = np.where(exiting | (last_wave >= total), _NAT, nxt).astype(np.int64)
    active.exit_reason = reason


@dataclass
class _Due:
    """The waves due today while they are decided (steps 4a-4e), as arrays in the order of the
    campaign days; ``reason`` is None until a step suppresses the wave."""

    day: np.ndarray  # index into the list of campaign days
    code: np.ndarray
    customer_id: np.ndarray
    entered_on: np.ndarray  # day numbers
    wave: np.ndarray
    arm: np.ndarray
    variant: np.ndarray
    channels: np.ndarray
    messages: np.ndarray  # what the wave sends if treated
    reason: np.ndarray
    fresh: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))  # of an entry made now
    priority: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    counts_toward_cap: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    outcome: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=object))
    value: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # coupon cents, -1 = none
    min_spend: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    expires: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # day numbers

    def still_open(self) -> np.ndarray:
        return self.reason == None  # noqa: E711 - element-wise on an object array

    def take(self, order: np.ndarray) -> _Due:
        """The waves in ``order``."""
        return _Due(**{f.name: getattr(self, f.name)[order] for f in fields(self)})

    @classmethod
    def empty(cls) -> _Due:
        ints, objects = np.empty(0, dtype=np.int64), np.empty(0, dtype=object)
        return cls(ints, ints, objects, ints, ints, objects, objects, objects, ints, objects)


@dataclass(frozen=True)
class _Waves:
    """The day's decided waves: the frame of :data:`WAVE_COLUMNS`, and its rows as arrays."""

    frame: pd.DataFrame
    rows: _Due  # in the frame's order


def _due_waves(days: list[_CampaignDay], people: _People) -> _Due | None:
    """Every wave due today, with the channels that reach its customer (a.; None: no wave due)."""
    cols = _stacked(_due_of(i, d, people) for i, d in enumerate(days) if d.active.due.any())
    if cols is None:
        return None
    due = _Due(**cols)
    due.priority = np.array([d.campaign.priority for d in days], dtype=np.int64)[due.day]
    due.counts_toward_cap = np.array([d.campaign.counts_toward_caps for d in days], dtype=bool)[due.day]
    return due


def _due_of(i: int, campaign_day: _CampaignDay, people: _People) -> dict[str, np.ndarray]:
    """The waves of the ``i``-th campaign day due today, as _Due's arrays."""
    a, due = campaign_day.active, campaign_day.active.due
    code, variant = a.code[due], a.variant[due]
    channels, messages, reason = _reach(code, variant, campaign_day.campaign, people)
    return {
        "day": np.full(len(code), i, dtype=np.int64),
        "code": code,
        "customer_id": a.customer_id[due],
        "entered_on": a.entered_on[due],
        "wave": a.wave[due],
        "arm": a.arm[due],
        "variant": variant,
        "channels": channels,
        "messages": messages,
        "reason": reason,
        "fresh": a.fresh[due],
    }


def _stacked(parts: Iterable[dict[str, np.ndarray]]) -> dict[str, np.ndarray] | None:
    """The arrays of the campaign days, stacked by name in the days' order (None: no part)."""
    parts = list(parts)
    if not parts:
        return None
    return {k: np.concatenate([part[k] for part in parts]) for k in parts[0]}


def _member_caps(
    due: _Due, people: _People, history: pd.DataFrame | None, today: int, pressure: ContactPressure
) -> None:
    """b. Suppress ``cap_member_tier`` the capped waves of customers with as many capped contacts
    in their tier's window as the tier allows."""
    tier_code, tier_names = pd.factorize(_take(people.member_tier, due.code, None), use_na_sentinel=False)
    caps = [pressure.cap_for(None if _is_missing(t) else t) for t in tier_names]
    limit = np.array([c.max_contacts for c in caps], dtype=np.int64)[tier_code]
    window = np.array([c.per_days for c in caps], dtype=np.int64)[tier_code]
    counts = _history_counts(history, today, set(window.tolist()), people)
    before = np.zeros(len(due.code), dtype=np.int64)
    for d, per_customer in counts.items():
        sel = window == d
        before[sel] = per_customer[due.code[sel]]
    capped = due.still_open() & due.counts_toward_cap & (before >= limit)
    due.reason[capped] = CAP_MEMBER_TIER


def _priority(due: _Due, customers: int) -> None:
    """c. One campaign per customer per day: the highest priority wins, the others are
    suppressed ``lower_priority`` (``customers``: how many codes ``due.code`` counts)."""
    open_ = due.still_open()
    offered = np.where(open_, due.priority, -1)
    best = np.full(customers, np.iinfo(np.int64).min, dtype=np.int64)
    np.maximum.at(best, due.code, offered)
    due.reason[open_ & (due.priority < best[due.code])] = LOWER_PRIORITY


def _global_cap(due: _Due, cap: int | None, business_date: date) -> None:
    """d. The daily global cap, blind to the arm: the winners in order of priority, then a
    deterministic random order, while the messages actually sent stay within the cap."""
    if cap is None:
        return
    winners = np.flatnonzero(due.still_open())
    ids = due.customer_id[winners]
    tie = uniforms(("daily_global_cap", business_date.isoformat()), ids)
    order = winners[np.lexsort((ids.astype(str), tie, -due.priority[winners]))]
    as_if = due.messages[order]
    sent = np.where(due.arm[order] == TREATMENT, as_if, 0)
    before_sent = np.cumsum(sent) - sent
    fits = np.logical_and.accumulate(before_sent + as_if <= cap) if len(order) else np.zeros(0, dtype=bool)
    due.reason[order[~fits]] = CAP_DAILY_GLOBAL


def _outcomes(due: _Due) -> np.ndarray:
    """e. ``suppressed`` with a reason, else ``treated`` or ``held_out`` by the arm."""
    outcome = np.where(~due.still_open(), SUPPRESSED, np.where(due.arm == HOLDOUT, HELD_OUT, TREATED))
    return outcome.astype(object)


def _coupon_terms(due: _Due, days: list[_Slot], today: int) -> None:
    """The coupon terms (value, minimum spend, expiry) of the treated waves whose variant gives one."""
    size = len(due.code)
    due.value = np.full(size, -1, dtype=np.int64)
    due.min_spend = np.full(size, -1, dtype=np.int64)
    due.expires = np.full(size, _NAT, dtype=np.int64)
    treated = due.outcome == TREATED
    for i, campaign_day in enumerate(days):
        of_campaign = due.day == i
        if not of_campaign.any():
            continue
        for v in set(due.variant[of_campaign]):
            coupon = campaign_day.campaign.offer(campaign_day.name, v).coupon
            if coupon is None:
                continue
            sel = of_campaign & (due.variant == v) & treated
            due.value[sel] = coupon.value_cents
            due.min_spend[sel] = coupon.min_spend_cents
            due.expires[sel] = today + coupon.valid_days


def _name_rank(days: list[_Slot]) -> np.ndarray:
    """Each campaign day's rank by campaign name."""
    names = np.array([d.name for d in days], dtype=object)
    return np.argsort(np.argsort(names, kind="stable"), kind="stable")


def _waves_frame(due: _Due, days: list[_Slot], today: int) -> _Waves:
    """The decided waves sorted by priority (highest first), campaign, customer id (``due.code``
    is the id's rank), entry day and wave, as the frame of :data:`WAVE_COLUMNS` and as arrays."""
    order = np.lexsort((due.wave, due.entered_on, due.code, _name_rank(days)[due.day], -due.priority))
    rows = due.take(order)
    frame = pd.DataFrame(
        {
            "campaign": _column(np.array([d.name for d in days], dtype=object)[rows.day]),
            "customer_id": _column(_none(rows.customer_id)),
            "entered_on": _column(_dates(rows.entered_on)),
            "wave": rows.wave.astype(np.int64),
            "due_on": _column(_dates(np.full(len(rows.code), today, dtype=np.int64))),
            "arm": _column(_none(rows.arm)),
            "variant": _column(_none(rows.variant)),
            "kind": _column(np.array([d.campaign.kind for d in days], dtype=object)[rows.day]),
            "priority": rows.priority,
            "outcome": _column(rows.outcome),
            "reason": _column(rows.reason),
            "channels": _column(rows.channels),
            "counts_toward_cap": rows.counts_toward_cap,
            "coupon_value_cents": _nullable(rows.value),
            "coupon_min_spend_cents": _nullable(rows.min_spend),
            "coupon_expires_on": _column(_dates(rows.expires)),
        },
        copy=False,
    )
    return _Waves(frame, rows)


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value) or value is pd.NA


def _no_waves() -> _Waves:
    return _Waves(_empty_waves(), _Due.empty())


def _nullable(cents: np.ndarray) -> pd.arrays.IntegerArray:
    """Cents with -1 meaning "no coupon" as a nullable Int64 array."""
    return pd.arrays.IntegerArray(np.where(cents >= 0, cents, 0).astype(np.int64), cents < 0)


def _reach(
    code: np.ndarray, variant: np.ndarray, campaign: Campaign, people: _People
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Chosen channels ("email,sms"), their number, and the reason when none is reachable."""
    n = len(code)
    crow = _take(people.crow, code, -1)
    channels = np.full(n, "", dtype=object)
    count = np.zeros(n, dtype=np.int64)
    reason = np.full(n, None, dtype=object)
    for v in set(variant):
        sel = variant == v
        offer = campaign.offer("", v)
        chosen_any = np.zeros(n, dtype=bool)
        all_out = np.ones(n, dtype=bool)
        for channel in offer.channels:
            out = _take(people.opted_out[channel], crow, False).astype(bool)
            ok = _take(people.has[channel], crow, False).astype(bool) & ~out
            all_out &= out
            if campaign.channel_policy == "first_reachable":
                ok &= ~chosen_any
            pick = sel & ok
            first = pick & (count == 0)
            channels[first] = channel
            more = pick & ~first
            if more.any():
                channels[more] = channels[more] + "," + channel
            count[pick] += 1
            chosen_any |= ok
        none = sel & ~chosen_any
        reason[none & all_out] = OPTED_OUT
        reason[none & ~all_out] = NO_CONTACT
    return channels, count, reason


def _empty_waves() -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series([], dtype=object) for c in WAVE_COLUMNS})
    for c in ("wave", "priority"):
        frame[c] = pd.Series([], dtype=np.int64)
    frame["counts_toward_cap"] = pd.Series([], dtype=bool)
    for c in ("coupon_value_cents", "coupon_min_spend_cents"):
        frame[c] = pd.Series([], dtype="Int64")
    return frame[list(WAVE_COLUMNS)]


def _touched_entries(days: list[_CampaignDay]) -> dict[str, np.ndarray] | None:
    """The entries new today, with a wave due or exiting, as arrays (None: no such entry)."""
    return _stacked(part for i, d in enumerate(days) if (part := _touched_of(i, d)) is not None)


def _touched_of(i: int, campaign_day: _CampaignDay) -> dict[str, np.ndarray] | None:
    """The entries of the ``i``-th campaign day new today, with a wave due or exiting (None: none)."""
    a = campaign_day.active
    exiting = a.exit_reason != None  # noqa: E711 - element-wise on an object array
    touched = a.is_new | a.due | exiting
    if not touched.any():
        return None
    return {
        "day": np.full(int(touched.sum()), i, dtype=np.int64),
        "customer_id": a.customer_id[touched],
        "entered_on": a.entered_on[touched],
        "arm": a.arm[touched],
        "variant": a.variant[touched],
        "last_wave": a.last_wave[touched],
        "next": a.next_wave_on[touched],
        "reason": a.exit_reason[touched],
        "fresh": a.fresh[touched],
    }


def _no_sends() -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series([], dtype=object) for c in SEND_COLUMNS})
    frame["wave"] = frame["wave"].astype(np.int64)
    for c in ("coupon_value_cents", "coupon_min_spend_cents"):
        frame[c] = pd.Series([], dtype="Int64")
    return frame


def _sends(waves: _Waves, days: list[_Slot], people: _People, today: int) -> pd.DataFrame:
    """Step 5: one row per treated wave and chosen channel, with its template and address."""
    due = waves.rows
    treated = np.flatnonzero(due.outcome == TREATED)
    if len(treated) == 0:
        return _no_sends()
    row, channel = _channel_rows(due.channels, treated)
    day_of, code, variant = due.day[row], due.code[row], _none(due.variant[row])
    crow = _take(people.crow, code, -1)
    phone = _take(people.phone, crow, None)
    email = _take(people.email, crow, None)
    return pd.DataFrame(
        {
            "campaign": _column(np.array([d.name for d in days], dtype=object)[day_of]),
            "customer_id": _column(_none(due.customer_id[row])),
            "entered_on": _column(_dates(due.entered_on[row])),
            "wave": due.wave[row].astype(np.int64),
            "variant": _column(variant),
            "channel": _column(channel),
            "template": _column(_templates(days, day_of, variant, channel)),
            "recipient": _column(_none(np.where(channel == EMAIL, email, phone))),
            "business_date": _column(_dates(np.full(len(row), today, dtype=np.int64))),
            "category_group": _column(_none(_take(people.category_group, code, None))),
            "coupon_value_cents": _nullable(due.value[row]),
            "coupon_min_spend_cents": _nullable(due.min_spend[row]),
            "coupon_expires_on": _column(_dates(due.expires[row])),
        },
        copy=False,
    )


def _channel_rows(channels: np.ndarray, treated: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One row per chosen channel of the treated waves, in the order of each wave's channels:
    the wave of each row and its channel."""
    channel_code, channel_sets = pd.factorize(channels[treated])
    split = [str(s).split(",") for s in channel_sets]
    per_row = np.array([len(s) for s in split], dtype=np.int64)[channel_code]
    row = np.repeat(treated, per_row)
    start = np.cumsum(per_row) - per_row
    position = np.arange(len(row), dtype=np.int64) - np.repeat(start, per_row)
    table = np.full((len(split), max(len(s) for s in split)), None, dtype=object)
    for i, s in enumerate(split):
        table[i, : len(s)] = s
    return row, table[np.repeat(channel_code, per_row), position]


def _templates(days: list[_Slot], day_of: np.ndarray, variant: np.ndarray, channel: np.ndarray) -> np.ndarray:
    """The template each message uses: its campaign's offer for its variant, on its channel."""
    templates = np.full(len(day_of), None, dtype=object)
    for i in np.unique(day_of):
        campaign_day = days[int(i)]
        of_campaign = day_of == i
        for v in set(variant[of_campaign]):
            offer = campaign_day.campaign.offer(campaign_day.name, v)
            of_variant = of_campaign & (variant == v)
            for ch in set(channel[of_variant]):
                templates[of_variant & (channel == ch)] = offer.template_for(ch)
    return templates
