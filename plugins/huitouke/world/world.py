"""The world: simulated customers who buy on their own, and answer the messages they receive.

:class:`World` is driven one calendar day at a time (:meth:`World.step`): the night and morning
pass (natural purchases, responses to earlier messages), the day's messages arrive at 09:00
(they may bring a response, a ``T`` reply, or bounce off an invalid number), then the rest of
the day passes. Each step returns the day's orders in the demo shop's row format, the replies
and the messages that could not be delivered. :meth:`World.truth` then tells, for any cohort of
campaign waves, the true effect the evaluation estimates (:mod:`huitouke.world.truth`).

Everything per customer is an array; a step touches only the customers with an event that day.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import pandas as pd

from huitouke.campaigns.holdout import uniforms
from huitouke.demo_shop.arrays import day_number
from huitouke.demo_shop.shop import DemoShop
from huitouke.pii import get_logger
from huitouke.world import hazard
from huitouke.world.clocks import message_keys, responses, void_delays
from huitouke.world.effects import TRUE_EFFECTS, Effect, Recipients, response_probability
from huitouke.world.ledger import Ledger, empty_replies, empty_undelivered, reply_rows
from huitouke.world.population import Population, from_shop

log = get_logger(__name__)

SEND_AT_HOURS = 9.0  # messages reach the customers at the send window's start, shop time
HORIZON_DAYS = 45  # the calendar runs this long past the season (the last waves' windows)
OPT_OUT_SHARE = 0.004  # chance that a delivered SMS is answered with T (回T退订)
REPLY_HOURS = 3.0  # mean delay of such a reply
SENT = ("sent", "delivered")  # outbox statuses of a message that left
PHONE_CHANNELS = ("sms", "call")
CHANNELS = ("call", "email", "sms")  # sorted: a message's channels are joined in this order


@dataclass(frozen=True)
class WorldDay:
    """What one simulated day produced (shop-local times as 'YYYY-MM-DD HH:MM:SS' text).

    ``orders``/``items``: the day's new ``shop_orders``/``shop_order_items`` rows, in the demo
    shop's convention (final status: ``completed``, or ``refunded``/``cancelled`` with
    ``updated_at`` when that happens; :func:`huitouke.demo_shop.shop_as_of` shows them as they
    stand on any day). ``replies``: ``customer_id, phone, text, received_at`` (``T``: opt out).
    ``undelivered``: the day's messages that did not reach the customer: ``campaign,
    customer_id, entered_on, wave, channel, reason`` (``invalid_number``, ``opted_out``,
    ``no_address``, ``unknown_customer``).
    """

    day: date
    orders: pd.DataFrame
    items: pd.DataFrame
    replies: pd.DataFrame
    undelivered: pd.DataFrame
    delivered: int


class World:
    """The simulated shop's customers over a season (module docstring)."""

    def __init__(
        self,
        population: Population,
        start: date,
        end: date,
        *,
        effects: Mapping[str, Effect] = TRUE_EFFECTS,
        seed: int = 7,
    ) -> None:
        self.people, self.effects, self.seed = population, dict(effects), seed
        self.start, self.end = start, end
        self.calendar = hazard.Calendar(day_number(start), day_number(end) + HORIZON_DAYS)
        self.index = pd.Index(population.ids)
        self.rng = np.random.default_rng([seed, 31337])
        n = population.size
        self.next_natural = np.full(n, np.inf)
        self.natural_void = np.full(n, np.inf)  # delay from payment to void of the next natural order
        self.opted_out_at = np.full(n, np.inf)
        self.natural_at_send: dict[int, np.ndarray] = {}
        self.ledger = Ledger()
        self.today = day_number(start)
        self._start_cycles()
        log.info(
            "world %s .. %s: %d customers (%d arriving), effects planted for %d campaign(s)",
            start,
            end,
            n,
            int((~np.isnan(population.arrival)).sum()),
            sum(not e.is_zero for e in self.effects.values()),
        )

    @classmethod
    def from_shop(
        cls,
        shop: DemoShop,
        start: date,
        end: date,
        *,
        effects: Mapping[str, Effect] = TRUE_EFFECTS,
        arrivals: int | None = None,
        seed: int = 7,
    ) -> World:
        """The world of ``shop`` (generated up to the day before ``start``) from ``start`` to
        ``end``; ``arrivals`` new customers arrive meanwhile (default: the shop's pace)."""
        if arrivals is None:
            first = pd.to_datetime(shop.truth["first_paid_at"])
            history_days = max((first.max() - first.min()).days, 1)
            arrivals = round(len(shop.truth) / history_days * ((end - start).days + 1))
        population = from_shop(shop, day_number(start), day_number(end), arrivals, seed)
        return cls(population, start, end, effects=effects, seed=seed)

    def invalid_numbers(self) -> set[str]:
        """The phone numbers that do not exist: a gateway simulator should fail messages to them."""
        return {str(p) for p in self.people.phone[self.people.invalid_phone] if p is not None}

    # ------------------------------------------------------------------------- the natural cycle

    def _start_cycles(self) -> None:
        """Every customer's next natural purchase at the season's start: the customers of the
        shop where their cycle stands (returning at all with the chance left after the time
        already waited), the new ones at their first order."""
        p = self.people
        old = np.flatnonzero(~np.isnan(p.last))
        start = float(self.today)
        age = start - p.last[old]
        alive = hazard.survival(age, p.gap[old])
        still = p.propensity[old] * alive / (1.0 - p.propensity[old] + p.propensity[old] * alive)
        returning = old[self.rng.random(old.size) < still]
        self._project(returning, np.full(returning.size, start), p.last[returning])
        self.natural_void[old] = void_delays(self.rng.random(old.size))
        new = np.flatnonzero(~np.isnan(p.arrival))
        self.next_natural[new] = p.arrival[new]
        self.natural_void[new] = void_delays(self.rng.random(new.size))

    def _project(self, who: np.ndarray, start: np.ndarray, last: np.ndarray) -> None:
        """Draw the next natural purchase of ``who`` from ``start`` on (a fresh budget)."""
        budget = self.rng.exponential(1.0, who.size)
        self.next_natural[who] = hazard.next_purchase(
            start, last, self.people.gap[who], budget, self.calendar
        )

    def _renew(self, who: np.ndarray, when: np.ndarray) -> None:
        """After a purchase at ``when``: come back at all (a coin of the propensity), and when."""
        self.people.last[who] = when
        self.next_natural[who] = np.inf
        back = self.rng.random(who.size) < self.people.propensity[who]
        self._project(who[back], when[back], when[back])
        self.natural_void[who] = void_delays(self.rng.random(who.size))

    # ------------------------------------------------------------------------------- the day

    def step(self, day: date, messages: pd.DataFrame | None = None) -> WorldDay:
        """Simulate calendar ``day``; ``messages`` are the outbox rows that left for the customers
        that morning (``campaign, customer_id, entered_on, wave, channel`` and optionally
        ``status`` (rows not ``sent``/``delivered`` are ignored) and ``coupon_code``)."""
        d = day_number(day)
        if d != self.today:
            raise ValueError(
                f"the world is at {self.start + timedelta(days=self.today - day_number(self.start))}, not {day}"
            )
        first = self.ledger.purchase_count
        at = d + SEND_AT_HOURS / 24
        self._advance(float(d), at)
        self.natural_at_send[d] = self.next_natural.copy()
        undelivered, replies, delivered = self._deliver(messages, at)
        self._advance(at, float(d + 1))
        self.today = d + 1
        orders, items = self.ledger.shop_rows(self, first)
        return WorldDay(day, orders, items, replies, undelivered, delivered)

    def _advance(self, a: float, b: float) -> None:
        """Every purchase in [a, b): each customer's earliest event, until none is left."""
        for _ in range(20):
            customer, when, cause = self._earliest(a, b)
            if customer.size == 0:
                return
            self.ledger.buy(self, customer, when, cause)
            self._renew(customer, when)
        raise RuntimeError("a customer bought more than 20 times in one part of a day")

    def _earliest(self, a: float, b: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(customers, times, causes) of the first event in [a, b) of each customer who has one:
        the natural purchase (cause -1) or a pending response (its clock id)."""
        natural = np.flatnonzero((self.next_natural >= a) & (self.next_natural < b))
        pending = self.ledger.pending_between(a, b)
        customer = np.concatenate([natural, pending.customer])
        when = np.concatenate([self.next_natural[natural], pending.fire])
        cause = np.concatenate([np.full(natural.size, -1), pending.clock])
        order = np.lexsort((cause, when, customer))
        first = np.unique(customer[order], return_index=True)[1]
        pick = order[first]
        return customer[pick], when[pick], cause[pick]

    # ------------------------------------------------------------------------------ messages

    def _deliver(self, messages: pd.DataFrame | None, at: float) -> tuple[pd.DataFrame, pd.DataFrame, int]:
        """The morning's messages reach their customers: (undelivered rows, replies, delivered)."""
        if messages is None or messages.empty:
            return empty_undelivered(), empty_replies(), 0
        rows = messages.copy()
        if "status" in rows:
            rows = rows[rows["status"].astype(str).isin(SENT)]
        if "coupon_code" not in rows:
            rows["coupon_code"] = None
        rows = rows.reset_index(drop=True)
        rows["_pos"] = self.index.get_indexer(rows["customer_id"].astype(str))
        rows["_why"] = self._why_not_reached(rows, at)
        reached = rows[rows["_why"].isna()]
        undelivered = rows[rows["_why"].notna()].rename(columns={"_why": "reason"})
        self._start_responses(reached, at)
        replies = self._replies(reached, at)
        cols = ["campaign", "customer_id", "entered_on", "wave", "channel", "reason"]
        return (
            undelivered[cols].reset_index(drop=True),
            replies,
            int(reached.drop_duplicates("_pos").shape[0]),
        )

    def _why_not_reached(self, rows: pd.DataFrame, at: float) -> pd.Series:
        """Why each message does not reach its customer (None: it does)."""
        pos = rows["_pos"].to_numpy()
        known = pos >= 0
        safe = np.where(known, pos, 0)
        phone = rows["channel"].isin(PHONE_CHANNELS).to_numpy()
        email = (rows["channel"] == "email").to_numpy()
        why = np.full(len(rows), None, dtype=object)
        why[phone & self.people.invalid_phone[safe]] = "invalid_number"
        why[phone & (self.opted_out_at[safe] <= at)] = "opted_out"
        why[email & ~self.people.has_email[safe]] = "no_address"
        why[~known] = "unknown_customer"
        return pd.Series(why, index=rows.index, dtype=object)

    def _start_responses(self, reached: pd.DataFrame, at: float) -> None:
        """Draw each reached message's response (one per message, whatever its channels)."""
        if reached.empty:
            return
        key = ["campaign", "customer_id", "entered_on", "wave"]
        flags = reached.assign(**{f"_{c}": reached["channel"] == c for c in CHANNELS})
        per = flags.groupby(key, sort=True, as_index=False).agg(
            _pos=("_pos", "first"),
            coupon_code=("coupon_code", "first"),
            **{f"_{c}": (f"_{c}", "any") for c in CHANNELS},
        )
        per["channels"] = _joined(per)
        keys = message_keys(per)
        pos = per["_pos"].to_numpy()
        chance, delay = self.chances(
            per["campaign"], per["wave"], pos, per["channels"], self.next_natural[pos] - at
        )
        drawn = responses(self.seed, keys, np.full(pos.size, at), chance, delay)
        self.ledger.add_messages(per.assign(_key=keys), pos, at, drawn)

    def chances(
        self,
        campaign: pd.Series,
        wave: pd.Series,
        pos: np.ndarray,
        channels: pd.Series,
        natural_in: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Each message's chance of a response and its mean delay (days), for customers at
        positions ``pos`` whose natural purchase is ``natural_in`` days away."""
        campaigns = campaign.astype(str).to_numpy()
        pull_days = np.array([self.effects.get(c, Effect()).pull_days for c in campaigns])
        delay = np.array([self.effects.get(c, Effect()).delay_days for c in campaigns])
        who = Recipients(
            campaign=campaigns,
            wave=wave.to_numpy(dtype=np.int64),
            category=self.people.category[pos],
            source=self.people.source[pos],
            first_order_cny=self.people.first_cny[pos],
            channels=channels.astype(str).to_numpy(),
            due_soon=natural_in <= pull_days,
        )
        return response_probability(self.effects, who), delay

    def _replies(self, reached: pd.DataFrame, at: float) -> pd.DataFrame:
        """Some SMS recipients answer ``T``: they are opted out from the moment it arrives."""
        sms = reached[reached["channel"] == "sms"].drop_duplicates("_pos")
        if sms.empty:
            return reply_rows(self, np.empty(0, dtype=np.int64), np.empty(0))
        keys = message_keys(sms)
        says_t = uniforms((str(self.seed), "optout"), keys) < OPT_OUT_SHARE
        pos = sms["_pos"].to_numpy()[says_t]
        wait = -np.log1p(-uniforms((str(self.seed), "optout_delay"), keys[says_t])) * REPLY_HOURS / 24
        when = at + np.minimum(wait, 0.6)
        self.opted_out_at[pos] = np.minimum(self.opted_out_at[pos], when)
        return reply_rows(self, pos, when)


def _joined(per: pd.DataFrame) -> pd.Series:
    """Each message's channels, comma-separated in :data:`CHANNELS` order, from its ``_<channel>`` flags."""
    text = pd.Series("", index=per.index, dtype=object)
    for c in CHANNELS:
        text = text + np.where(per[f"_{c}"].to_numpy(dtype=bool), c + ",", "")
    return text.str.rstrip(",")


def grown_shop(shop: DemoShop, world: World, days: list[WorldDay]) -> DemoShop:
    """``shop`` with the world's customers (new ones included) and the orders of ``days``: what
    :func:`huitouke.demo_shop.shop_as_of` and :func:`~huitouke.demo_shop.write_shop` take."""
    return DemoShop(
        customers=world.people.customers,
        orders=pd.concat([shop.orders, *(d.orders for d in days)], ignore_index=True),
        items=pd.concat([shop.items, *(d.items for d in days)], ignore_index=True),
        truth=shop.truth,
        bad_rows=shop.bad_rows,
    )
