"""A season at library level: the world answering the pipeline's own functions, day by day.

What the daily DAG's tasks call, minus the database, Airflow and the gateway: the customers'
state and segments (:func:`huitouke.segments.update_state`, :func:`~huitouke.segments.classify`),
the plan with its holdouts, caps and priorities (:func:`huitouke.campaigns.plan_day`), and at
the end the evaluation (:func:`huitouke.evaluate.evaluate_waves` with the DAG's
:func:`huitouke.evaluate.daily.wave_options`). Delivery is the world's: a planned message is
``sent`` unless the world finds the number invalid (``failed``) or the customer opted out
(``suppressed``). A wave planned on day D leaves on D + 1 at 09:00, as in the DAG.

It is what the acceptance test (``tests/test_world_acceptance.py``) and ``bench/`` run; the demo
drives the same :class:`~huitouke.world.World` through Airflow instead.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import pandas as pd

from huitouke.campaigns import empty_entries, plan_day
from huitouke.campaigns.playbook import Playbook
from huitouke.demo_shop.shop import DemoShop
from huitouke.evaluate.daily import wave_options
from huitouke.evaluate.result import WaveEvaluation
from huitouke.evaluate.waves import evaluate_waves
from huitouke.records import PAID_STATUSES
from huitouke.segments import build_state, classify, update_state
from huitouke.world.effects import TRUE_EFFECTS, Effect
from huitouke.world.truth import true_effects
from huitouke.world.world import PHONE_CHANNELS, World

OUTBOX_KEY = ["campaign", "customer_id", "entered_on", "wave", "channel"]
ENTRY_KEY = ["campaign", "customer_id", "entered_on"]


@dataclass
class Season:
    """A season's record: the world, every wave and message, the evaluation and the truth."""

    world: World
    waves: pd.DataFrame  # every campaign_waves row planned
    outbox: pd.DataFrame  # every message planned, with the status delivery gave it
    evaluation: WaveEvaluation
    truth: pd.DataFrame  # huitouke.world.TRUTH_COLUMNS
    timezone: str

    def compared(self, view: str = "itt") -> pd.DataFrame:
        """The evaluation's rows of ``view`` beside the truth of their wave and window."""
        results = self.evaluation.results
        results = results[results["view"] == view]
        truth = self.truth.assign(due_on=pd.to_datetime(self.truth["due_on"]).dt.date)
        return results.merge(truth, on=["campaign", "wave", "due_on", "window_days"], how="inner")

    def sends_to_opted_out(self) -> int:
        """Messages planned by phone to a customer who had replied T before the plan was made."""
        sms = self.outbox[self.outbox["channel"].isin(PHONE_CHANNELS)]
        pos = self.world.index.get_indexer(sms["customer_id"].astype(str))
        planned_end = np.array([(d - date(1970, 1, 1)).days + 1 for d in sms["business_date"]], dtype=float)
        return int((self.world.opted_out_at[pos] < planned_end).sum())

    def sends_to_holdout(self) -> int:
        arms = self.waves[[*ENTRY_KEY, "wave", "arm"]].drop_duplicates([*ENTRY_KEY, "wave"])
        joined = self.outbox.merge(arms, on=[*ENTRY_KEY, "wave"], how="left")
        return int((joined["arm"] != "treatment").sum())

    def double_sends(self) -> int:
        return int(self.outbox.duplicated(OUTBOX_KEY).sum())


def run_season(
    shop: DemoShop,
    start: date,
    end: date,
    playbook: Playbook,
    *,
    effects: Mapping[str, Effect] = TRUE_EFFECTS,
    seed: int = 7,
    timezone: str = "Asia/Shanghai",
) -> Season:
    """Live ``start`` .. ``end`` in the world of ``shop`` (generated up to ``start - 1``) with the
    pipeline's functions, then evaluate every matured window on ``end`` and tell the truth."""
    world = World.from_shop(shop, start, end, effects=effects, seed=seed)
    book = _Books(world, shop, playbook, timezone, start)
    leaving: pd.DataFrame | None = None
    day = start
    while day <= end:
        happened = world.step(day, leaving)
        book.deliveries(happened)
        book.take_in(happened, day)
        leaving = book.plan(day)
        day += timedelta(days=1)
    options = dataclasses.replace(wave_options(playbook, timezone), segment_columns=())
    outbox = book.outbox()
    evaluation = evaluate_waves(book.waves(), book.orders_as_of(end), end, messages=outbox, options=options)
    windows = tuple(sorted({w for c in playbook.campaigns.values() for w in c.evaluation.windows_days}))
    truth = true_effects(world, book.waves(), windows, as_of=end)
    return Season(world, book.waves(), outbox, evaluation, truth, timezone)


class _Books:
    """The store's tables as frames: orders, state, contacts, entries, waves, outbox."""

    def __init__(self, world: World, shop: DemoShop, playbook: Playbook, timezone: str, start: date) -> None:
        self.world, self.playbook, self.timezone = world, playbook, timezone
        orders, lines = _store_rows(shop.orders, shop.items, shop.bad_rows, timezone)
        self._orders, self._lines = orders, lines
        self.state = build_state(
            self._status_as_of(orders, start - timedelta(days=1)), lines, settings=playbook.segments
        )
        people = world.people.customers
        self.contacts = pd.DataFrame(
            {
                "customer_id": people["customer_id"].astype(str),
                "phone": people["phone"].astype(object),
                "email": people["email"].astype(object),
                "sms_opt_out": False,
                "email_opt_out": False,
                "birthday": people["birthday"].astype(object),
            }
        )
        self.entries = empty_entries()
        self._waves: list[pd.DataFrame] = []
        self._sends: list[pd.DataFrame] = []
        self._contacted = pd.DataFrame(columns=["customer_id", "contacted_on", "counts_toward_cap"])
        self._today: pd.DataFrame = orders.iloc[:0]

    def deliveries(self, happened) -> None:
        """The morning's messages: bounced ones failed or suppressed, opt-outs recorded."""
        if self._sends and len(happened.undelivered):
            last = self._sends[-1]
            bounced = happened.undelivered.assign(
                entered_on=pd.to_datetime(happened.undelivered["entered_on"]).dt.date
            )
            merged = last.merge(bounced[[*OUTBOX_KEY, "reason"]], on=OUTBOX_KEY, how="left")
            status = np.where(merged["reason"] == "invalid_number", "failed", "sent")
            status = np.where(merged["reason"].isin(["opted_out", "no_address"]), "suppressed", status)
            self._sends[-1] = last.assign(status=status)
        opted = self.contacts["customer_id"].isin(happened.replies["customer_id"].astype(str))
        self.contacts.loc[opted, "sms_opt_out"] = True

    def take_in(self, happened, day: date) -> None:
        """The day's orders into the order book and the state (buyers and voided orders' customers)."""
        orders, lines = _store_rows(happened.orders, happened.items, None, self.timezone)
        self._orders = pd.concat([self._orders, orders], ignore_index=True)
        self._lines = pd.concat([self._lines, lines], ignore_index=True)
        end = _local_end(day)
        voided_today = (self._orders["_void_local"] >= end - 1) & (self._orders["_void_local"] < end)
        touched = set(orders["customer_id"]) | set(self._orders.loc[voided_today, "customer_id"])
        mine = self._status_as_of(self._orders[self._orders["customer_id"].isin(touched)], day)
        self.state = update_state(
            self.state,
            mine,
            self._lines[self._lines["order_id"].isin(mine["order_id"])],
            settings=self.playbook.segments,
        )
        self._today = orders.assign(
            categories=orders["order_id"].map(lines.groupby("order_id")["category"].agg(list))
        )

    def plan(self, day: date) -> pd.DataFrame:
        """Plan the day (as the plan task does) and queue its messages for the next morning."""
        segments = classify(self.state, day, self.playbook.segments)
        plan = plan_day(
            self.playbook, day, segments, self.contacts, self._today, self.entries, self._history(day)
        )
        if len(plan.entries):
            merged = pd.concat([self.entries, plan.entries], ignore_index=True)
            merged = merged.drop_duplicates(ENTRY_KEY, keep="last").sort_values("entered_on", kind="stable")
            # the latest entry of every (campaign, customer) is all the plan reads (open ones included)
            self.entries = merged.drop_duplicates(["campaign", "customer_id"], keep="last").reset_index(
                drop=True
            )
        if len(plan.waves):
            self._waves.append(plan.waves)
            treated = plan.waves[plan.waves["outcome"] == "treated"]
            fresh = treated.rename(columns={"due_on": "contacted_on"})[
                ["customer_id", "contacted_on", "counts_toward_cap"]
            ]
            self._contacted = pd.concat([self._contacted, fresh], ignore_index=True)
        sends = plan.sends.assign(coupon_code=None, status="sent")
        self._sends.append(sends)
        return sends

    def _history(self, day: date) -> pd.DataFrame:
        """The treated contacts of the caps' longest window (the plan's ``history``)."""
        since = day - timedelta(days=self.playbook.contact_pressure.longest_window_days)
        recent = pd.to_datetime(self._contacted["contacted_on"]).dt.date >= since
        self._contacted = self._contacted[recent.to_numpy(dtype=bool)].reset_index(drop=True)
        return self._contacted

    def waves(self) -> pd.DataFrame:
        return pd.concat(self._waves, ignore_index=True) if self._waves else pd.DataFrame()

    def outbox(self) -> pd.DataFrame:
        return pd.concat(self._sends, ignore_index=True) if self._sends else pd.DataFrame(columns=OUTBOX_KEY)

    def orders_as_of(self, day: date) -> pd.DataFrame:
        """Every order with its status at the end of ``day`` and its categories (evaluation's input)."""
        orders = self._status_as_of(self._orders, day)
        cats = self._lines.groupby("order_id")["category"].agg(list)
        return orders.assign(categories=orders["order_id"].map(cats))

    @staticmethod
    def _status_as_of(orders: pd.DataFrame, day: date) -> pd.DataFrame:
        voided = orders["_void_local"] < _local_end(day)
        return orders.assign(status=np.where(voided, "refunded", "paid"))


def _local_end(day: date) -> float:
    """The end of ``day`` (shop-local midnight) in epoch days."""
    return float((day - date(1970, 1, 1)).days + 1)


def _store_rows(
    orders: pd.DataFrame, items: pd.DataFrame, bad_rows: pd.DataFrame | None, timezone: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Shop rows as the store holds them (what intake would make of them): payment in naive UTC,
    business date, cents, source; ``_void_local``: when the order was refunded or cancelled
    (epoch days, shop time; ``inf``: never). Bad rows are left out, as the intake quarantines them."""
    if bad_rows is not None and len(bad_rows):
        orders = orders[~orders["order_id"].isin(bad_rows["order_id"])]
    local = pd.to_datetime(orders["paid_at"], format="%Y-%m-%d %H:%M:%S")
    updated = pd.to_datetime(orders["updated_at"], format="%Y-%m-%d %H:%M:%S")
    voided = ~orders["status"].isin(PAID_STATUSES).to_numpy()
    void_local = np.where(voided, (updated - pd.Timestamp("1970-01-01")) / pd.Timedelta(days=1), np.inf)
    utc = local.dt.tz_localize(timezone).dt.tz_convert("UTC").dt.tz_localize(None)
    frame = pd.DataFrame(
        {
            "order_id": orders["order_id"].astype(str).to_numpy(),
            "customer_id": orders["customer_id"].astype(str).to_numpy(),
            "paid_at": utc.to_numpy(),
            "business_date": local.dt.normalize().to_numpy(),
            "status": "paid",
            "amount_cents": (pd.to_numeric(orders["pay_amount"]) * 100).round().astype("int64").to_numpy(),
            "acquisition_source": orders["channel"].astype(str).to_numpy(),
            "coupon_code": orders["coupon_code"].astype(object).to_numpy(),
            "_void_local": void_local,
        }
    )
    lines = items[items["order_id"].isin(frame["order_id"])]
    lines = pd.DataFrame(
        {
            "order_id": lines["order_id"].astype(str).to_numpy(),
            "category": lines["category"].astype(str).to_numpy(),
            "amount_cents": (pd.to_numeric(lines["amount"]) * 100).round().astype("int64").to_numpy(),
        }
    )
    return frame, lines
