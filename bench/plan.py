"""Planning and rendering at 1,000,000 eligible customers: ``plan_day`` in memory, then the store path.

Issue 4: "planning and rendering for 1,000,000 eligible customers; goal >= 100,000 SMS rendered per
second on one core, side by side in the same run with a naive loop that compiles the template for
every message". ``bench/render.py`` measures rendering alone; this measures the day around it.

The day (2025-11-11, generated with numpy, seed 4): N customers (``BENCH_CUSTOMERS``, 1,000,000),
every one eligible for at least one campaign of the shipped playbook:

- 15% first order today (``thank_you`` variant ``new``; 45% of them >= 299 CNY: ``coupon_waves``),
  15% returning customers ordering today (``thank_you`` ``returning``; 30% of them thanked less
  than 30 days ago: not again), 8% first order 3 days ago (``care_tips``), 7% latest order 15
  days ago (``phone_followup``: premium, or 2+ orders), 5% at-risk / churned one-time buyers
  (``win_back``; 30% of them with an open entry whose wave 2 is due today), and 50% with an open
  ``coupon_waves`` entry whose wave (1 to 5) is due today (500,000 at 1M; premium one-time buyers,
  so also in ``new_product_premium``); 1% have their birthday today;
- contacts: 97% with a phone, 25% an e-mail, 3% SMS opt-outs, 5% e-mail opt-outs, 40% a birthday,
  95% a name; member tiers 70% normal, 20% active, 10% vip;
- contact history: ``BENCH_HISTORY`` (N) treated waves in the last 30 days, on 40% of the
  customers (85% of them count toward the caps);
- the shipped playbook (``load_playbook()``: 2,000 new entries a day for ``new_product_premium``
  and ``win_back``, ``daily_global_cap`` 20,000) and the same without those limits ("unlimited":
  every eligible customer enters, every winner is treated).

Parts:

1. ``plan_day`` in memory, both playbooks, best of ``BENCH_REPEATS`` (3); its steps timed (the
   module's internal functions wrapped with timers) and a cProfile of one run (``BENCH_PROFILE``,
   1); a digest of each plan (every frame, row for row). ``BENCH_PLAN_REFERENCE=path.py`` loads
   another ``plan.py`` (e.g. ``git show HEAD:plugins/huitouke/campaigns/plan.py > /tmp/ref.py``),
   times it once on the same inputs and checks that its plan is identical (``assert_frame_equal``
   of entries, waves, sends and summary, exact), after the peak RSS of part 1 is taken. The
   reference imports the rest of ``huitouke.campaigns`` from this checkout, so it must call it as
   this one does (``entry_mask(rule, RuleInputs(...))`` since issue 11); across such a change,
   compare the digests printed by two runs instead.
2. The store path on a SQLite file: the schema by ``migrate.upgrade``, then the customers (5%
   more without a paid order), one order per customer on its latest order day (1-2 lines),
   ``customer_state``, one open ``segment_history`` row each, the stored entries and the history
   (as treated ``campaign_waves``) bulk-inserted with ``sqlite3`` (not timed as pipeline work).
   Then, each in a fresh process as Airflow runs the tasks, with the unlimited playbook: the
   ``plan_campaigns`` task (``huitouke.campaigns.daily.run_day(engine, day, playbook,
   segments=...)``) on a fresh copy of the store (split: reads, ``plan_day``, ``issue_coupons``,
   ``write_plan``), and the ``render_messages`` task (``huitouke.render.daily.run_day``) of every
   campaign with treated waves, pinned to one core (``BENCH_CPU``, default the first) (split:
   reads, sends + context building, ``render_batch``, outbox insert; a repeat deletes the
   campaign's outbox rows first). Inside the same render process, the first ``BENCH_NAIVE``
   (20,000) contexts of each message are rendered again: by ``render_batch`` alone (best of 3) and
   by the naive loop (jinja2's ``Environment.from_string(source)``, compile + render, for every
   message, then the same signature, footer and segment count), whose text must be the same.
   Peak RSS (VmHWM) per process.
3. The plan task runs ``BENCH_STORE_REPEATS`` (3) times, each on a fresh copy of the store, and
   each render task as many times on the last plan (queuing the campaign's messages again; the
   outbox rows must be the same every time); the best run is reported. (The first version of this
   benchmark measured the store path as first written: ``read_last_orders`` could not finish at
   1M — SQLite planned its join on ``ix_orders_business_date`` — and ``segments_on`` with one IN
   list of every customer failed; both are fixed in the library, see bench/README.md.)

Run: ``.venv/bin/python bench/plan.py``: about 35 minutes at 1,000,000 customers on the 2-core
machine (peak RSS 2.8 GB in part 1 before the reference planner runs, 3.4 GB in the plan task);
``BENCH_CUSTOMERS=100000`` for a quick run (about 3 minutes). ``BENCH_HISTORY`` (N history rows),
``BENCH_STORE=0`` skips parts 2-3, ``BENCH_DIR`` keeps the SQLite files and ``results.json`` there
(default: a temporary folder, deleted).
"""

from __future__ import annotations

import cProfile
import datetime as dt
import gc
import hashlib
import importlib.util
import io
import json
import os
import pstats
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins"))

from huitouke.campaigns import assign_arms, load_playbook, plan_day  # noqa: E402
from huitouke.campaigns import plan as plan_module  # noqa: E402
from huitouke.campaigns.playbook import Playbook  # noqa: E402
from huitouke.campaigns.tables import columns_of  # noqa: E402
from huitouke.render.persist import MESSAGE_KEY, OUTBOX_COLUMNS  # noqa: E402
from huitouke.store.schema import campaign_entries  # noqa: E402

CUSTOMERS = int(os.environ.get("BENCH_CUSTOMERS", "1000000"))
HISTORY = int(os.environ.get("BENCH_HISTORY", str(CUSTOMERS)))
REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))
STORE_REPEATS = int(os.environ.get("BENCH_STORE_REPEATS", "3"))
NAIVE = int(os.environ.get("BENCH_NAIVE", "20000"))
STORE = os.environ.get("BENCH_STORE", "1") == "1"
PROFILE = os.environ.get("BENCH_PROFILE", "1") == "1"
REFERENCE = os.environ.get("BENCH_PLAN_REFERENCE", "")
DAY = dt.date(2025, 11, 11)
NOW = dt.datetime(2025, 11, 12, 0, 30)
SEED = 4
GOAL_RENDER = 100_000
GOAL_PLAN_S = 10.0

FAMILY = list("王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗") + ["欧阳", "司马", "诸葛"]
GIVEN = list("伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰晓雨欣怡子涵")
GROUPS = ("food", "kids_clothing", "daily_goods", "durables", "womens_clothing", "cosmetics", "3c")
# kind of customer: share of the day
KINDS = {
    "today_new": 0.15,
    "today_returning": 0.15,
    "care": 0.08,
    "followup": 0.07,
    "waves": 0.50,
    "winback": 0.05,
}


def rss_gb() -> float:
    """Peak resident memory of this process so far (Linux: ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def best_of(repeats: int, run: Callable[[], Any]) -> tuple[float, list[float], Any]:
    times, result = [], None
    for _ in range(repeats):
        result = None
        gc.collect()
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    return min(times), times, result


def _str(values: Any) -> pd.Series:
    return pd.Series(pd.array(np.asarray(values, dtype=object), dtype="str"))


# ---------------------------------------------------------------------------------------- the day


@dataclass
class Shop:
    """The generated day: the planner's five frames plus what the store needs besides."""

    segments: pd.DataFrame
    contacts: pd.DataFrame  # with name
    orders: pd.DataFrame  # the day's paid orders
    entries: pd.DataFrame  # stored entries (ENTRY_COLUMNS)
    history: pd.DataFrame  # customer_id, contacted_on, counts_toward_cap, campaign
    last_order: pd.DataFrame  # one order per customer: its latest (the store's orders table)


@dataclass
class _Profile:
    """Each generated customer's kind and order history (one value per customer)."""

    is_: dict[str, np.ndarray]
    dsf: np.ndarray
    dsl: np.ndarray
    paid: np.ndarray
    aov: np.ndarray
    low_value: np.ndarray
    wave_k: np.ndarray


def generate(n: int, history_rows: int, seed: int = SEED) -> Shop:
    """The day's shop (see the module docstring); the draws in the same order for every seed."""
    rng = np.random.default_rng(seed)
    ids = np.array([f"C{i:08d}" for i in range(n)], dtype=object)
    profile = _profile(rng, n)
    segments, group = _segments(rng, ids, profile)
    contacts = _contacts(rng, ids)
    last_order, orders = _orders(rng, ids, group, profile)
    entries = _entries(rng, ids, profile)
    history = _history(rng, ids, history_rows)
    return Shop(segments, contacts, orders, entries, history, last_order)


def _profile(rng: np.random.Generator, n: int) -> _Profile:
    """Each customer's kind (:data:`KINDS`), first and last order days, orders and their value."""
    names = list(KINDS)
    kind = rng.choice(len(names), n, p=list(KINDS.values()))
    is_ = {name: kind == i for i, name in enumerate(names)}

    dsf = np.zeros(n, dtype=np.int64)
    dsl = np.zeros(n, dtype=np.int64)
    paid = np.ones(n, dtype=np.int64)
    aov = rng.integers(3_000, 30_000, n)
    low_value = rng.random(n) < 0.10

    m = is_["today_new"]
    big = rng.random(n) < 0.45
    aov[m & big] = rng.integers(29_900, 80_000, n)[m & big]
    aov[m & ~big] = rng.integers(3_000, 29_800, n)[m & ~big]

    m = is_["today_returning"]
    paid[m] = 2 + rng.geometric(0.45, n)[m] - 1
    dsf[m] = rng.integers(31, 1_000, n)[m]

    m = is_["care"]
    dsf[m] = dsl[m] = 3

    m = is_["followup"]
    multi = rng.random(n) < 0.5
    paid[m & multi] = rng.integers(2, 7, n)[m & multi]
    dsl[m] = 15
    dsf[m] = np.where(multi, rng.integers(30, 800, n), 15)[m]
    premium = rng.random(n) < 0.4
    aov[m & premium] = rng.integers(15_000, 60_000, n)[m & premium]
    aov[m & ~premium] = rng.integers(3_000, 14_000, n)[m & ~premium]

    m = is_["waves"]
    wave_k = rng.integers(0, 5, n)  # waves already sent: today's is wave k + 1
    dsf[m] = dsl[m] = (30 * (wave_k + 1))[m]
    aov[m] = rng.integers(29_900, 100_000, n)[m]
    low_value[m] = False

    m = is_["winback"]
    dsf[m] = dsl[m] = rng.integers(180, 700, n)[m]
    aov[m] = rng.integers(2_000, 29_800, n)[m]
    return _Profile(is_, dsf, dsl, paid, aov, low_value, wave_k)


def _segments(
    rng: np.random.Generator, ids: np.ndarray, profile: _Profile
) -> tuple[pd.DataFrame, np.ndarray]:
    """The day's segments, and each customer's category group."""
    n = len(ids)
    dsf, dsl, paid, aov, low_value = profile.dsf, profile.dsl, profile.paid, profile.aov, profile.low_value
    total = aov * paid
    group_code = rng.integers(0, len(GROUPS), n)
    group = np.array(GROUPS, dtype=object)[group_code]
    at_risk = np.where(group == "durables", 365, 180)
    churn = np.where(group == "durables", 730, 365)
    lifecycle = np.where(
        dsf < 30,
        "new",
        np.where(
            dsl >= churn,
            "churned",
            np.where(
                dsl >= at_risk,
                "at_risk",
                np.where(paid >= 4, "loyal", np.where(paid >= 2, "repeat", "one_time")),
            ),
        ),
    ).astype(object)
    value_tier = np.where(aov > 14_000, "premium", np.where(aov > 7_000, "mid", "low")).astype(object)
    member_tier = np.array(["normal", "active", "vip"], dtype=object)[rng.choice(3, n, p=[0.7, 0.2, 0.1])]
    source = np.where(low_value, np.where(rng.random(n) < 0.7, "flash_sale", "points"), "organic").astype(
        object
    )
    segments = pd.DataFrame(
        {
            "customer_id": _str(ids),
            "lifecycle": _str(lifecycle),
            "r_score": rng.integers(1, 6, n),
            "f_score": rng.integers(1, 6, n),
            "m_score": rng.integers(1, 6, n),
            "member_tier": _str(member_tier),
            "value_tier": _str(value_tier),
            "low_value_acquisition": low_value,
            "category_group": _str(group),
            "acquisition_source": _str(source),
            "days_since_first_order": dsf,
            "days_since_last_order": dsl,
            "paid_orders": paid,
            "total_cents": total,
            "aov_cents": aov,
        }
    )
    return segments, group


def _contacts(rng: np.random.Generator, ids: np.ndarray) -> pd.DataFrame:
    """Addresses, opt-outs, birthdays and names, and 5% more customers without a paid order."""
    n = len(ids)
    phone = np.array([f"13{x:09d}" for x in rng.integers(0, 10**9, n).tolist()], dtype=object)
    phone[rng.random(n) < 0.03] = None
    has_email = rng.random(n) < 0.25
    email = np.where(has_email, np.char.add(ids.astype(str), "@example.com").astype(object), None)
    born_today = rng.random(n) < 0.01
    has_birthday = born_today | (rng.random(n) < 0.39)
    years = rng.integers(1970, 2003, n)
    other = np.datetime64("1970-01-01") + rng.integers(0, 365, n)  # a day of 1970
    birthday = np.full(n, None, dtype=object)
    for i in np.flatnonzero(has_birthday):
        if born_today[i]:
            birthday[i] = dt.date(int(years[i]), DAY.month, DAY.day)
        else:
            d = other[i].astype(dt.date)
            birthday[i] = dt.date(int(years[i]), d.month, min(d.day, 28))
    family = np.array(FAMILY, dtype=object)[rng.integers(0, len(FAMILY), n)]
    given = np.array(GIVEN, dtype=object)[rng.integers(0, len(GIVEN), n)]
    second = np.where(rng.random(n) < 0.6, np.array(GIVEN, dtype=object)[rng.integers(0, len(GIVEN), n)], "")
    name = (family + given + second).astype(object)
    name[rng.random(n) < 0.05] = None
    # 5% more customers without a paid order (in the customers table, not in the day's segments)
    others = np.array([f"N{i:08d}" for i in range(n // 20)], dtype=object)
    contacts = pd.DataFrame(
        {
            "customer_id": ids,
            "name": name,
            "phone": phone,
            "email": email,
            "sms_opt_out": rng.random(n) < 0.03,
            "email_opt_out": has_email & (rng.random(n) < 0.05),
            "birthday": birthday,
        }
    )
    k = len(others)
    contacts = pd.concat(
        [
            contacts,
            pd.DataFrame(
                {
                    "customer_id": others,
                    "name": name[:k],
                    "phone": phone[:k],
                    "email": None,
                    "sms_opt_out": False,
                    "email_opt_out": False,
                    "birthday": None,
                }
            ),
        ],
        ignore_index=True,
    )
    return contacts


def _orders(
    rng: np.random.Generator, ids: np.ndarray, group: np.ndarray, profile: _Profile
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every customer's latest order (the day's orders are those of days_since_last_order == 0)."""
    n = len(ids)
    today = np.datetime64(DAY, "D")
    dsl, aov = profile.dsl, profile.aov
    second_cat = np.array(GROUPS, dtype=object)[rng.integers(0, len(GROUPS), n)]
    two = rng.random(n) < 0.3
    last_day = (today - dsl).astype("datetime64[D]")
    last_order = pd.DataFrame(
        {
            "order_id": np.array([f"T{i:010d}" for i in range(n)], dtype=object),
            "customer_id": ids,
            "business_date": last_day.astype(object),
            "amount_cents": aov,
            "category": group,
            "category2": np.where(two & (second_cat != group), second_cat, None),
        }
    )
    bought = dsl == 0
    day_orders = last_order[bought]
    orders = pd.DataFrame(
        {
            "order_id": day_orders["order_id"].to_numpy(),
            "customer_id": day_orders["customer_id"].to_numpy(),
            "business_date": day_orders["business_date"].to_numpy(),
            "amount_cents": day_orders["amount_cents"].to_numpy(),
            "categories": [
                tuple(sorted({a} | ({b} if isinstance(b, str) else set())))
                for a, b in zip(day_orders["category"], day_orders["category2"], strict=True)
            ],
            "coupon_code": None,
            "status": "paid",
        }
    )
    return last_order, orders


def _entries(rng: np.random.Generator, ids: np.ndarray, profile: _Profile) -> pd.DataFrame:
    """The stored entries: open coupon waves due today, recent thank-yous, open win-backs."""
    n = len(ids)
    today = np.datetime64(DAY, "D")
    is_, dsl, wave_k = profile.is_, profile.dsl, profile.wave_k
    playbook = load_playbook()
    parts = []

    def entries_of(campaign: str, who: np.ndarray, entered: np.ndarray, variant: Any, **more: Any) -> None:
        c = playbook.campaigns[campaign]
        arms = assign_arms(campaign, ids[who], c.holdout.share, c.holdout.salt)
        parts.append(
            pd.DataFrame(
                {
                    "campaign": campaign,
                    "customer_id": ids[who],
                    "entered_on": entered.astype(object),
                    "arm": arms,
                    "variant": variant,
                    **more,
                }
            )
        )

    m = is_["waves"]
    k = wave_k[m]
    entries_of(
        "coupon_waves",
        m,
        (today - dsl[m]).astype("datetime64[D]"),
        "",
        last_wave=k,
        next_wave_on=np.full(int(m.sum()), DAY, dtype=object),
        exited_on=None,
        exit_reason=None,
    )
    m = is_["today_returning"] & (rng.random(n) < 0.3)
    entered = (today - rng.integers(10, 30, n)[m]).astype("datetime64[D]")
    entries_of(
        "thank_you",
        m,
        entered,
        "returning",
        last_wave=1,
        next_wave_on=None,
        exited_on=entered.astype(object),
        exit_reason="completed",
    )
    m = is_["winback"] & (rng.random(n) < 0.3)
    entries_of(
        "win_back",
        m,
        np.full(int(m.sum()), today - 30, dtype="datetime64[D]"),
        "",
        last_wave=1,
        next_wave_on=np.full(int(m.sum()), DAY, dtype=object),
        exited_on=None,
        exit_reason=None,
    )
    entries = pd.concat(parts, ignore_index=True)
    entries["entered_on"] = [d for d in entries["entered_on"].to_numpy(dtype="datetime64[D]").astype(object)]
    return entries


def _history(rng: np.random.Generator, ids: np.ndarray, history_rows: int) -> pd.DataFrame:
    """Contact history: treated waves of the last 30 days, on 40% of the customers."""
    n = len(ids)
    today = np.datetime64(DAY, "D")
    contacted = rng.choice(np.flatnonzero(rng.random(n) < 0.4), history_rows)
    counts = rng.random(history_rows) < 0.85
    marketing = np.array(
        ["birthday", "thank_you", "coupon_waves", "new_product_premium", "win_back"], dtype=object
    )
    service = np.array(["care_tips", "phone_followup"], dtype=object)
    campaign = np.where(
        counts,
        marketing[rng.integers(0, len(marketing), history_rows)],
        service[rng.integers(0, len(service), history_rows)],
    )
    history = pd.DataFrame(
        {
            "customer_id": ids[contacted],
            "contacted_on": (today - rng.integers(1, 31, history_rows))
            .astype("datetime64[D]")
            .astype(object),
            "counts_toward_cap": counts,
            "campaign": campaign,
        }
    )
    history = history.drop_duplicates(["campaign", "customer_id", "contacted_on"]).reset_index(drop=True)
    return history


def unlimited(playbook: Playbook) -> Playbook:
    """The playbook without ``max_new_entries_per_day`` and without ``daily_global_cap``."""
    return playbook.model_copy(
        update={
            "campaigns": {
                name: c.model_copy(update={"max_new_entries_per_day": None})
                for name, c in playbook.campaigns.items()
            },
            "contact_pressure": playbook.contact_pressure.model_copy(update={"daily_global_cap": None}),
        }
    )


# ------------------------------------------------------------------------------- part 1: plan_day

# plan.py's internal steps (and the functions it calls), wrapped with timers, and how deep each
# is nested in the others (for the print-out)
STEPS: dict[str, int] = {
    "_normalise_contacts": 0,
    "_normalise_entries": 0,
    "_people": 0,
    "prepare_orders": 0,
    "_campaign_day": 0,
    "entry_mask": 1,
    "conditions_mask": 1,
    "assign_arms": 1,
    "_schedule": 1,
    "_decide": 0,
    "_due_waves": 1,
    "_reach": 2,
    "_member_caps": 1,
    "_history_counts": 2,
    "_priority": 1,
    "_global_cap": 1,
    "_coupon_terms": 1,
    "_waves_frame": 1,
    "_entry_rows": 0,
    "_sends": 0,
    "_summary": 0,
}


class Timers:
    """Wrap module functions with timers (seconds and calls accumulated per label)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self._undo: list[tuple[Any, str, Any]] = []

    def wrap(self, module: Any, name: str, label: str | None = None) -> None:
        original = getattr(module, name)
        label = label or name

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[label] = self.seconds.get(label, 0.0) + time.perf_counter() - start
                self.calls[label] = self.calls.get(label, 0) + 1

        setattr(module, name, timed)
        self._undo.append((module, name, original))

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()

    def restore(self) -> None:
        for module, name, original in reversed(self._undo):
            setattr(module, name, original)
        self._undo.clear()


def digest(plan: Any) -> str:
    """A short fingerprint of every frame of a plan, row for row."""
    h = hashlib.sha256()
    for name in ("entries", "waves", "sends", "summary"):
        frame = getattr(plan, name)
        h.update(name.encode())
        h.update(pd.util.hash_pandas_object(frame.astype(str), index=True).to_numpy().tobytes())
    return h.hexdigest()[:16]


def load_reference(path: str) -> Any:
    spec = importlib.util.spec_from_file_location("plan_reference", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules["plan_reference"] = module
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def plan_in_memory(shop: Shop) -> dict[str, Any]:
    history = shop.history[["customer_id", "contacted_on", "counts_toward_cap"]]
    inputs = (shop.segments, shop.contacts.drop(columns=["name"]), shop.orders, shop.entries, history)
    shipped = load_playbook()
    results: dict[str, Any] = {}
    for label, playbook in (("shipped", shipped), ("unlimited", unlimited(shipped))):
        results[label] = _best_plan(label, playbook, inputs)
    results.update(_step_times(unlimited(shipped), inputs))
    if PROFILE:
        _profile_once(unlimited(shipped), inputs)
    results["rss_gb"] = rss_gb()  # before the reference (the shipped planner needs more memory)
    if REFERENCE:
        _against_reference(shipped, inputs, results)
    return results


def _best_plan(label: str, playbook: Playbook, inputs: tuple[pd.DataFrame, ...]) -> dict[str, Any]:
    """plan_day, best of REPEATS, its figures and digest."""
    seconds, times, plan = best_of(REPEATS, lambda p=playbook: plan_day(p, DAY, *inputs))
    s = plan.summary
    print(
        f"plan_day, {label} playbook: {min(times):.2f} s (runs: {', '.join(f'{t:.2f}' for t in times)}); "
        f"{int(s['entered'].sum()):,} entered, {int(s['deferred'].sum()):,} deferred, {len(plan.waves):,} waves due "
        f"({int(s['treated'].sum()):,} treated, {int(s['held_out'].sum()):,} held out), "
        f"{len(plan.entries):,} entry rows, {len(plan.sends):,} messages; digest {digest(plan)}"
    )
    print("  " + plan.as_text().replace("\n", "\n  "))
    return {
        "seconds": seconds,
        "runs": times,
        "entered": int(s["entered"].sum()),
        "waves": len(plan.waves),
        "entry_rows": len(plan.entries),
        "messages": len(plan.sends),
        "treated": int(s["treated"].sum()),
        "digest": digest(plan),
    }


def _step_times(playbook: Playbook, inputs: tuple[pd.DataFrame, ...]) -> dict[str, Any]:
    """One plan_day with plan.py's steps (:data:`STEPS`) wrapped with timers."""
    timers = Timers()
    for name in STEPS:
        timers.wrap(plan_module, name)
    try:
        gc.collect()
        start = time.perf_counter()
        plan_day(playbook, DAY, *inputs)
        total = time.perf_counter() - start
    finally:
        timers.restore()
    print(f"\nplan_day steps (unlimited playbook, one run, {total:.2f} s; nested steps indented):")
    for name, depth in STEPS.items():
        if name in timers.seconds:
            pad = "  " * (depth + 1)
            print(f"{pad}{name:<{26 - len(pad)}} {timers.seconds[name]:6.2f} s  ({timers.calls[name]} calls)")
    return {"steps": dict(timers.seconds), "steps_total": total}


def _profile_once(playbook: Playbook, inputs: tuple[pd.DataFrame, ...]) -> None:
    profiler = cProfile.Profile()
    profiler.enable()
    plan_day(playbook, DAY, *inputs)
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(12)
    print("\ncProfile of one plan_day (unlimited), by own time:")
    print("\n".join(line for line in out.getvalue().splitlines() if line.strip())[:4000])


def _against_reference(shipped: Playbook, inputs: tuple[pd.DataFrame, ...], results: dict[str, Any]) -> None:
    """The reference planner on the same inputs: the same plan, frame for frame."""
    reference = load_reference(REFERENCE)
    for label, playbook in (("shipped", shipped), ("unlimited", unlimited(shipped))):
        plan = plan_day(playbook, DAY, *inputs)
        ref_s, _, ref_plan = best_of(1, lambda p=playbook: reference.plan_day(p, DAY, *inputs))
        same = ref_plan.notes == plan.notes
        for name in ("entries", "waves", "sends", "summary"):
            try:
                pd.testing.assert_frame_equal(getattr(ref_plan, name), getattr(plan, name), check_exact=True)
            except AssertionError as exc:
                same = False
                print(f"  {name} differs from the reference: {str(exc)[:300]}")
        print(
            f"reference planner {REFERENCE}, {label} playbook: {ref_s:.2f} s (this one: "
            f"{results[label]['seconds']:.2f} s); same plan (entries, waves, sends, summary): {same}"
        )
        results[label].update(reference_seconds=ref_s, same_as_reference=same)
        del plan, ref_plan
        gc.collect()


# ------------------------------------------------------------------------------ part 2: the store

NOW_SQL = NOW.strftime("%Y-%m-%d %H:%M:%S.%f")


def _day_text(values: Any) -> list[str | None]:
    """Dates (date objects or datetime64[D]) as SQLAlchemy stores them in SQLite ('YYYY-MM-DD')."""
    out = pd.Series(values, dtype=object)
    return [None if v is None or v != v else str(v)[:10] for v in out.tolist()]


def _bits(values: Any) -> list[int]:
    return np.asarray(values, dtype=bool).astype(np.int8).tolist()


def store_tables(shop: Shop) -> dict[str, tuple[list[str], list[list[Any]]]]:
    """The store's rows as columns of plain values, per table."""
    today = np.datetime64(DAY, "D")
    seg = shop.segments
    c = shop.contacts
    orders = shop.last_order
    n = len(orders)
    paid_at = [f"{d} 02:00:00.000000" for d in _day_text(orders["business_date"])]
    lines_first = orders.assign(line_no=1, cat=orders["category"])
    second = orders[orders["category2"].notna()]
    order_ids = np.concatenate(
        [orders["order_id"].to_numpy(dtype=object), second["order_id"].to_numpy(dtype=object)]
    )
    dsf = seg["days_since_first_order"].to_numpy()
    dsl = seg["days_since_last_order"].to_numpy()
    first_day = _day_text((today - dsf).astype("datetime64[D]"))
    last_day = _day_text((today - dsl).astype("datetime64[D]"))
    valid_from = _day_text((today - np.minimum(dsl, 90)).astype("datetime64[D]"))
    e = shop.entries
    h = shop.history
    marketing = {
        "birthday": 90,
        "thank_you": 80,
        "coupon_waves": 70,
        "new_product_premium": 40,
        "win_back": 30,
    }
    priority = {**marketing, "care_tips": 60, "phone_followup": 50}
    contacted = _day_text(h["contacted_on"])
    return {
        "customers": (
            [
                "customer_id",
                "name",
                "phone",
                "email",
                "birthday",
                "sms_opt_out",
                "email_opt_out",
                "first_seen_at",
                "updated_at",
            ],
            [
                c["customer_id"].tolist(),
                c["name"].astype(object).where(c["name"].notna(), None).tolist(),
                c["phone"].astype(object).where(c["phone"].notna(), None).tolist(),
                c["email"].astype(object).where(c["email"].notna(), None).tolist(),
                _day_text(c["birthday"]),
                _bits(c["sms_opt_out"]),
                _bits(c["email_opt_out"]),
                [NOW_SQL] * len(c),
                [NOW_SQL] * len(c),
            ],
        ),
        "orders": (
            [
                "order_id",
                "customer_id",
                "paid_at",
                "business_date",
                "status",
                "amount_cents",
                "acquisition_source",
                "coupon_code",
                "content_hash",
                "source",
                "loaded_at",
                "status_changed_at",
                "state_applied_at",
            ],
            [
                orders["order_id"].tolist(),
                orders["customer_id"].tolist(),
                paid_at,
                _day_text(orders["business_date"]),
                ["paid"] * n,
                orders["amount_cents"].astype(np.int64).tolist(),
                seg["acquisition_source"].astype(object).tolist(),
                [None] * n,
                orders["order_id"].tolist(),
                ["bench"] * n,
                [NOW_SQL] * n,
                [NOW_SQL] * n,
                [NOW_SQL] * n,
            ],
        ),
        "order_lines": (
            ["order_id", "line_no", "sku", "product_name", "category", "quantity", "amount_cents"],
            [
                order_ids.tolist(),
                [1] * n + [2] * len(second),
                [None] * len(order_ids),
                [None] * len(order_ids),
                lines_first["cat"].tolist() + second["category2"].tolist(),
                [1] * len(order_ids),
                orders["amount_cents"].astype(np.int64).tolist() + [0] * len(second),
            ],
        ),
        "customer_state": (
            [
                "customer_id",
                "first_paid_at",
                "last_paid_at",
                "first_business_date",
                "last_business_date",
                "paid_orders",
                "total_cents",
                "aov_cents",
                "main_category_group",
                "acquisition_source",
            ],
            [
                seg["customer_id"].astype(object).tolist(),
                [f"{d} 02:00:00.000000" for d in first_day],
                [f"{d} 02:00:00.000000" for d in last_day],
                first_day,
                last_day,
                seg["paid_orders"].astype(np.int64).tolist(),
                seg["total_cents"].astype(np.int64).tolist(),
                seg["aov_cents"].astype(np.int64).tolist(),
                seg["category_group"].astype(object).tolist(),
                seg["acquisition_source"].astype(object).tolist(),
            ],
        ),
        "segment_history": (
            [
                "customer_id",
                "valid_from",
                "valid_to",
                "lifecycle",
                "r_score",
                "f_score",
                "m_score",
                "member_tier",
                "value_tier",
                "low_value_acquisition",
                "category_group",
            ],
            [
                seg["customer_id"].astype(object).tolist(),
                valid_from,
                [None] * len(seg),
                seg["lifecycle"].astype(object).tolist(),
                seg["r_score"].astype(np.int64).tolist(),
                seg["f_score"].astype(np.int64).tolist(),
                seg["m_score"].astype(np.int64).tolist(),
                seg["member_tier"].astype(object).tolist(),
                seg["value_tier"].astype(object).tolist(),
                _bits(seg["low_value_acquisition"]),
                seg["category_group"].astype(object).tolist(),
            ],
        ),
        "campaign_entries": (
            list(columns_of(campaign_entries, without=("entry_id",))),
            [
                e["campaign"].astype(object).tolist(),
                e["customer_id"].astype(object).tolist(),
                e["arm"].astype(object).tolist(),
                e["variant"].astype(object).tolist(),
                _day_text(e["entered_on"]),
                e["last_wave"].astype(np.int64).tolist(),
                _day_text(e["next_wave_on"]),
                _day_text(e["exited_on"]),
                e["exit_reason"].astype(object).where(e["exit_reason"].notna(), None).tolist(),
                [NOW_SQL] * len(e),
            ],
        ),
        "campaign_waves": (
            [*plan_module.STORED_WAVE_COLUMNS, "planned_at"],
            [
                h["campaign"].astype(object).tolist(),
                h["customer_id"].astype(object).tolist(),
                contacted,
                [1] * len(h),
                contacted,
                ["treatment"] * len(h),
                [""] * len(h),
                ["marketing" if x in marketing else "service" for x in h["campaign"]],
                [priority[x] for x in h["campaign"]],
                ["treated"] * len(h),
                [None] * len(h),
                ["sms"] * len(h),
                _bits(h["counts_toward_cap"]),
                [NOW_SQL] * len(h),
            ],
        ),
    }


def build_store(path: Path, shop: Shop) -> dict[str, float]:
    """Migrate an empty SQLite file and bulk-insert the day's store (not timed as pipeline work)."""
    from huitouke.store.connection import make_engine
    from huitouke.store.migrate import upgrade

    marks: dict[str, float] = {}
    start = time.perf_counter()
    path.unlink(missing_ok=True)
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=OFF")
    for table, (columns, values) in store_tables(shop).items():
        t0 = time.perf_counter()
        sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
        con.execute("BEGIN")
        con.executemany(sql, zip(*values, strict=True))
        con.execute("COMMIT")
        marks[table] = time.perf_counter() - t0
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.execute("PRAGMA journal_mode=DELETE")  # the store's default, as make_engine leaves it
    con.close()
    marks["total"] = time.perf_counter() - start
    marks["size_gb"] = path.stat().st_size / 1024**3
    return marks


def vm_hwm_gb() -> float:
    """Peak resident memory of this process (VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024**2
    return rss_gb()


def _pin_one_core() -> str:
    if hasattr(os, "sched_setaffinity"):
        cpu = int(os.environ.get("BENCH_CPU", min(os.sched_getaffinity(0))))
        os.sched_setaffinity(0, {cpu})
        return f"CPU {cpu}"
    return "not pinned"


def _wrap_all(timers: Timers, module: Any, names: tuple[str, ...], prefix: str = "") -> None:
    for name in names:
        if hasattr(module, name):
            timers.wrap(module, name, prefix + name)


PLAN_READS = (
    "latest_planned_day",
    "redeem_coupons",
    "read_contacts",
    "read_day_orders",
    "read_entries",
    "read_contact_history",
    "stored_coupons",
)
RENDER_READS = (  # huitouke.render.persist
    "read_treated_waves",
    "read_queued_keys",
    "read_profiles",
    "read_segments",
    "read_last_orders",
    "read_coupons_of",
)
# huitouke.render.daily's steps between the reads and the outbox insert: the sends, the ones not
# queued yet, the customers' reads (and their dicts), the contexts, rows and render_batch calls
RENDER_STEPS = ("_sends_of", "_not_queued", "_read_customers", "_render")
CUSTOMER_READS = ("read_profiles", "read_segments", "read_last_orders", "read_coupons_of")


def task_plan(db: Path) -> dict[str, Any]:
    """The plan_campaigns task of the day on the store (a fresh process, as Airflow runs it)."""
    from huitouke.campaigns import daily, persist
    from huitouke.store.connection import make_engine

    segments = pd.read_parquet(db.with_name("segments.parquet"))
    playbook = unlimited(load_playbook())
    engine = make_engine(f"sqlite:///{db}")
    timers = Timers()
    _wrap_all(timers, persist, PLAN_READS)
    _wrap_all(timers, persist, ("write_plan", "_records", "upsert", "insert_new"))
    _wrap_all(timers, daily, ("plan_day", "issue_coupons"))
    gc.collect()
    start = time.perf_counter()
    result = daily.run_day(engine, DAY, playbook, segments=segments, now=NOW)
    total = time.perf_counter() - start
    timers.restore()
    return {
        "total": total,
        "parts": timers.seconds,
        "calls": timers.calls,
        "planned": result.planned,
        "summary": result.summary.drop(columns=["status"]).to_dict("records"),
        "rss_gb": vm_hwm_gb(),
    }


class Capture:
    """``render_batch`` wrapped: time and messages per compiled message, and the first contexts
    and bodies of each (for the naive loop, which must give the same text)."""

    def __init__(self, original: Callable[..., Any]) -> None:
        self.original = original
        self.by_message: dict[str, dict[str, Any]] = {}

    def __call__(self, compiled: Any, contexts: Any) -> Any:
        contexts = list(contexts)
        start = time.perf_counter()
        out = self.original(compiled, contexts)
        seconds = time.perf_counter() - start
        key = f"{compiled.channel}/{compiled.name}"
        entry = self.by_message.setdefault(
            key, {"compiled": compiled, "seconds": 0.0, "messages": 0, "sample": [], "bodies": []}
        )
        entry["seconds"] += seconds
        entry["messages"] += len(contexts)
        room = max(0, NAIVE - len(entry["sample"]))
        entry["sample"] += contexts[:room]
        entry["bodies"] += [m.body for m in out[:room]]
        return out


def naive_render(compiled: Any, contexts: list[dict[str, Any]]) -> list[str]:
    """The naive loop: the template's source compiled for every message (``from_string``) in the
    same sandboxed environment, rendered, then the same signature, footer and segment count."""
    from huitouke.render.context import shop_context
    from huitouke.render.messages import RenderedMessage
    from huitouke.render.sms import finalize_sms, sms_units

    env, shop = compiled.env, compiled.shop
    shop_ctx = shop_context(shop)
    sources: dict[str, str] = {}
    out = []
    for context in contexts:
        if "shop" not in context:
            context = {**context, "shop": shop_ctx}
        variant = compiled._variant(context)
        filename = variant.templates["body"].filename
        source = sources.get(filename)
        if source is None:
            source = sources[filename] = Path(filename).read_text(encoding="utf-8")
        body = env.from_string(source).render(context)
        if compiled.channel == "sms":
            text = finalize_sms(body, shop.name, shop.opt_out_footer, brackets=shop.sms_signature_brackets)
            encoding, units, segments = sms_units(text)
            out.append(
                RenderedMessage("sms", text, None, None, None, segments, encoding, variant.file, units)
            )
        else:
            text = body.strip() + "\n"
            out.append(RenderedMessage(compiled.channel, text, text=text, template=variant.file))
    return [m.body for m in out]


def task_render(db: Path, campaign: str, naive: bool = True) -> dict[str, Any]:
    """One campaign's render_messages task (a fresh process, pinned to one core, as a mapped
    Airflow task)."""
    from sqlalchemy import delete

    from huitouke.render import daily, persist
    from huitouke.store.connection import make_engine
    from huitouke.store.schema import outbox

    where = _pin_one_core()
    playbook = unlimited(load_playbook())
    engine = make_engine(f"sqlite:///{db}")
    with engine.begin() as conn:  # a repeat: the campaign's messages are queued again
        conn.execute(delete(outbox).where(outbox.c.campaign == campaign).where(outbox.c.business_date == DAY))
    timers = Timers()
    _wrap_all(timers, persist, RENDER_READS)
    _wrap_all(timers, persist, ("queue_messages", "record_queued", "insert_new"))
    _wrap_all(timers, daily, RENDER_STEPS)
    capture = Capture(daily.render_batch)
    daily.render_batch = capture
    gc.collect()
    start = time.perf_counter()
    result = daily.run_day(engine, DAY, campaign, playbook, now=NOW)
    total = time.perf_counter() - start
    timers.restore()
    daily.render_batch = capture.original

    rendered = {}
    for key, entry in capture.by_message.items():
        row = {"messages": entry["messages"], "seconds": entry["seconds"]}
        sample = entry["sample"]
        if naive and sample:  # the sample again: render_batch alone (best of 3), then the naive loop
            row["sample_messages"] = len(sample)
            row["sample_seconds"], _, _ = best_of(
                3, lambda c=entry["compiled"], xs=sample: capture.original(c, xs)
            )
            if entry["compiled"].channel != "email":
                gc.collect()
                t0 = time.perf_counter()
                bodies = naive_render(entry["compiled"], sample)
                row["naive_seconds"] = time.perf_counter() - t0
                row["same_text"] = bodies == entry["bodies"]
        rendered[key] = row
    return {
        "campaign": campaign,
        "total": total,
        "parts": timers.seconds,
        "calls": timers.calls,
        "queued": result.queued,
        "treated": result.treated,
        "skipped": result.skipped_no_address + result.skipped_opted_out,
        "rendered": rendered,
        "rss_gb": vm_hwm_gb(),
        "pinned": where,
    }


# --------------------------------------------------------------------------------------------- main


def run_task(args: list[str]) -> int:
    kind, db = args[0], Path(args[1])
    if kind == "plan":
        result = task_plan(db)
    else:
        result = task_render(db, args[2], naive=args[3] == "1")
    print("RESULT " + json.dumps(result, default=str))
    return 0


def in_process(*args: str) -> dict[str, Any]:
    """Run a store task in a fresh interpreter and return its result."""
    command = [sys.executable, str(Path(__file__).resolve()), "--task", *args]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    raise RuntimeError(f"task {args} failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}")


def table_digest(db: Path, sql: str) -> tuple[int, str]:
    con = sqlite3.connect(db)
    h = hashlib.sha256()
    n = 0
    for row in con.execute(sql):
        h.update(repr(row).encode())
        n += 1
    con.close()
    return n, h.hexdigest()[:16]


# The rows rendering writes to the outbox, of one campaign (the same on every run of it).
OUTBOX = f"SELECT {', '.join(OUTBOX_COLUMNS)} FROM outbox WHERE campaign = '{{c}}' ORDER BY {', '.join(MESSAGE_KEY)}"


def _plan_split(result: dict[str, Any]) -> dict[str, float]:
    parts = result["parts"]
    reads = sum(parts.get(k, 0.0) for k in PLAN_READS)
    out = {
        "reads": reads,
        "plan_day": parts.get("plan_day", 0.0),
        "issue_coupons": parts.get("issue_coupons", 0.0),
        "write_plan": parts.get("write_plan", 0.0),
    }
    out["other (commit, ...)"] = result["total"] - sum(out.values())
    return out


def _render_split(result: dict[str, Any]) -> dict[str, float]:
    parts = result["parts"]
    batch = sum(r["seconds"] for r in result["rendered"].values())
    reads_in_steps = sum(parts.get(k, 0.0) for k in CUSTOMER_READS)
    out = {
        "reads": sum(parts.get(k, 0.0) for k in RENDER_READS),
        "sends + contexts": sum(parts.get(k, 0.0) for k in RENDER_STEPS) - reads_in_steps - batch,
        "render_batch": batch,
        "outbox insert": parts.get("queue_messages", 0.0),
    }
    out["other (commit, ...)"] = result["total"] - sum(out.values())
    return out


def store_path(work: Path, shop: Shop) -> dict[str, Any]:
    pristine = work / "store.sqlite"
    print(f"\nbuilding the store: {pristine} ...", flush=True)
    marks = build_store(pristine, shop)
    shop.segments.to_parquet(work / "segments.parquet")
    print(
        f"store built in {marks['total']:.0f} s ({marks['size_gb']:.2f} GB): "
        + ", ".join(f"{k} {v:.1f} s" for k, v in marks.items() if k not in ("total", "size_gb"))
    )
    out: dict[str, Any] = {"build": marks}
    db = work / "day.sqlite"
    out.update(_plan_runs(pristine, db))
    summary = pd.DataFrame(out["plan"]["summary"])
    campaigns = [str(c) for c, t in zip(summary["campaign"], summary["treated"], strict=True) if t > 0]
    out["render"] = {campaign: _render_runs(db, campaign) for campaign in campaigns}
    return out


def _plan_runs(pristine: Path, db: Path) -> dict[str, Any]:
    """The plan task: best of STORE_REPEATS, each on a fresh copy of the store (the last stays)."""
    runs = []
    for _ in range(STORE_REPEATS):
        shutil.copyfile(pristine, db)
        runs.append(in_process("plan", str(db)))
        r = runs[-1]
        print(
            f"plan_campaigns: {r['total']:.1f} s = "
            + " + ".join(f"{k} {v:.1f}" for k, v in _plan_split(r).items())
            + f"; peak RSS {r['rss_gb']:.2f} GB",
            flush=True,
        )
    best_plan = min(runs, key=lambda x: x["total"])
    parts = best_plan["parts"]
    print(
        "  best run: reads "
        + ", ".join(f"{k} {parts[k]:.1f}" for k in PLAN_READS if k in parts)
        + f"; write_plan: _records {parts.get('_records', 0.0):.1f}, upsert (entries, days) "
        + f"{parts.get('upsert', 0.0):.1f}, insert (waves, coupons) {parts.get('insert_new', 0.0):.1f}"
    )
    return {"plan": best_plan, "plan_runs": [r["total"] for r in runs]}


def _render_runs(db: Path, campaign: str) -> dict[str, Any]:
    """One campaign's render task on the last plan: best of STORE_REPEATS (the first one with the
    naive loop), each repeat queuing the campaign's messages again and giving the same outbox rows."""
    render_runs, digests = [], set()
    for i in range(STORE_REPEATS):
        render_runs.append(in_process("render", str(db), campaign, "1" if i == 0 else "0"))
        digests.add(table_digest(db, OUTBOX.format(c=campaign)))
    best = min(render_runs, key=lambda r: r["total"])
    best["rendered_first_run"] = render_runs[0]["rendered"]
    queued = best["queued"]
    print(
        f"\nrender_messages {campaign}: {queued:,} messages queued ({best['skipped']:,} skipped); "
        f"same outbox rows on every run: {len(digests) == 1}"
    )
    print(
        f"  {best['total']:.1f} s (runs: {', '.join(format(r['total'], '.1f') for r in render_runs)}) = "
        + " + ".join(f"{k} {v:.1f}" for k, v in _render_split(best).items())
        + f"; {queued / best['total']:,.0f} messages/s end to end; peak RSS {best['rss_gb']:.2f} GB"
    )
    print("  reads: " + ", ".join(f"{k} {best['parts'][k]:.1f}" for k in RENDER_READS if k in best["parts"]))
    for key, r in render_runs[0]["rendered"].items():
        print(_render_batch_line(key, r))
    sys.stdout.flush()
    return {"best": best, "runs": [r["total"] for r in render_runs], "same_outbox": len(digests) == 1}


def _render_batch_line(key: str, r: dict[str, Any]) -> str:
    rate = r["messages"] / r["seconds"] if r["seconds"] else float("nan")
    line = f"  render_batch {key}: {r['messages']:,} in {r['seconds']:.2f} s = {rate:,.0f}/s in the task"
    if "sample_seconds" in r:
        pure = r["sample_messages"] / r["sample_seconds"]
        line += f"; first {r['sample_messages']:,} again, best of 3: {pure:,.0f}/s"
    if "naive_seconds" in r:
        naive = r["sample_messages"] / r["naive_seconds"]
        line += (
            f"; naive compile-per-message loop on them: {naive:,.0f}/s, ratio {pure / naive:,.0f}x; "
            f"same text: {r['same_text']}"
        )
    return line


def main() -> int:
    print(
        f"planning benchmark: {CUSTOMERS:,} customers, {HISTORY:,} history rows, business day {DAY}; "
        f"Python {sys.version.split()[0]}, pandas {pd.__version__}, numpy {np.__version__}, {os.cpu_count()} cores"
    )
    start = time.perf_counter()
    shop = generate(CUSTOMERS, HISTORY)
    print(
        f"generated in {time.perf_counter() - start:.1f} s: {len(shop.segments):,} customers in the segments, "
        f"{len(shop.contacts):,} contacts, {len(shop.orders):,} orders today, {len(shop.entries):,} stored entries "
        f"({int((shop.entries['campaign'] == 'coupon_waves').sum()):,} open coupon waves due today), "
        f"{len(shop.history):,} history rows; peak RSS {rss_gb():.2f} GB\n",
        flush=True,
    )
    memory = plan_in_memory(shop)
    print(f"\npeak RSS after part 1: {memory['rss_gb']:.2f} GB", flush=True)
    store: dict[str, Any] = {}
    if STORE:
        keep = os.environ.get("BENCH_DIR")
        work = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="bench-plan-"))
        work.mkdir(parents=True, exist_ok=True)
        try:
            store = store_path(work, shop)
        finally:
            if not keep:
                shutil.rmtree(work, ignore_errors=True)
    report(memory, store)
    if os.environ.get("BENCH_DIR"):
        out = Path(os.environ["BENCH_DIR"]) / "results.json"
        out.write_text(json.dumps({"memory": memory, "store": store}, default=str, indent=1))
        print(f"\nall figures: {out}")
    return 0


def report(memory: dict[str, Any], store: dict[str, Any]) -> None:
    print("\n" + "=" * 100)
    print(f"{'what':<70} {'goal':>10} {'measured':>16}")
    for label in ("shipped", "unlimited"):
        r = memory[label]
        print(
            f"{'plan_day in memory, ' + label + ' playbook (' + format(r['waves'], ',') + ' waves)':<70} "
            f"{'<= 10 s':>10} {r['seconds']:>14.2f} s"
        )
    print(f"{'peak RSS, generation + plan_day':<70} {'':>10} {memory['rss_gb']:>13.2f} GB")
    if not store:
        return
    print(f"{'plan_campaigns through SQLite':<70} {'':>10} {store['plan']['total']:>14.1f} s")
    total_messages = sum(r["best"]["queued"] for r in store["render"].values())
    total_seconds = sum(r["best"]["total"] for r in store["render"].values())
    print(
        f"{'render_messages, all campaigns (' + format(total_messages, ',') + ' messages)':<70} "
        f"{'':>10} {total_seconds:>14.1f} s"
    )
    for r in store["render"].values():
        for key, m in r["best"]["rendered_first_run"].items():
            if "naive_seconds" not in m:
                continue
            rate = m["messages"] / m["seconds"]
            pure = m["sample_messages"] / m["sample_seconds"]
            naive = m["sample_messages"] / m["naive_seconds"]
            label = f"render_batch {key} ({m['messages']:,} in the task / first {m['sample_messages']:,})"
            print(f"{label:<70} {'>= 100k/s':>10} {rate:>8,.0f} / {pure:,.0f}/s")
            print(
                f"{'  naive loop on the same first messages, ratio':<70} {'':>10} {naive:>8,.0f}/s {pure / naive:>4,.0f}x"
            )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--task":
        sys.exit(run_task(sys.argv[2:]))
    sys.exit(main())
