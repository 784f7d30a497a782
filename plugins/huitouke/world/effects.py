"""The true effects: what a delivered message does to its customer, per campaign.

A message that reaches a customer gives them, with some probability, a *response*: a purchase
``delay`` days after it arrives (exponential, mean ``delay_days``), unless they buy earlier anyway
(any purchase cancels the pending responses: the message's job is done). The probability is

    (respond + pull · [natural purchase due within pull_days])
        × wave_decay^(wave - 1) × by_category[main category] × by_channel[best channel]
        × SOURCE_RESPONSE[acquisition source] × (off_target unless first order >= new_min_cny)

``respond`` *adds* purchases; ``pull`` only moves a purchase that was coming anyway to the days
after the message, so it lifts the 2-day window and hardly the 30-day one. The figures follow
DOMAIN.md (see docs/world.md): coupon waves work on new customers of 299 CNY or more, each wave
less than the one before (the women's clothing case, 003); care tips mostly pull food buyers
forward and do nothing for durables (the mother-and-baby case, 003); a thank-you barely moves
anyone; flash-sale and points customers came for the price and answer little (001).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np

from huitouke.records import ACQUISITION_SOURCES, CATEGORIES


@dataclass(frozen=True)
class Effect:
    """What one delivered message of a campaign does (module docstring)."""

    respond: float = 0.0
    pull: float = 0.0
    pull_days: float = 21.0
    wave_decay: float = 1.0
    delay_days: float = 3.0
    by_category: Mapping[str, float] = field(default_factory=dict)  # default 1
    by_channel: Mapping[str, float] = field(default_factory=dict)  # default 1
    new_min_cny: float | None = None
    off_target: float = 1.0

    @property
    def is_zero(self) -> bool:
        return self.respond == 0.0 and self.pull == 0.0


# Flash-sale (聚划算) and points (淘金币) customers came for the price: they answer little (001).
SOURCE_RESPONSE: dict[str, float] = {"organic": 1.0, "flash_sale": 0.4, "points": 0.15}

TRUE_EFFECTS: dict[str, Effect] = {
    "coupon_waves": Effect(respond=0.12, wave_decay=0.6, delay_days=3.0, new_min_cny=299.0, off_target=0.3),
    "care_tips": Effect(
        respond=0.01,
        pull=0.45,
        pull_days=21.0,
        delay_days=0.8,
        by_category={
            "food": 1.0,
            "daily_goods": 0.6,
            "kids_clothing": 0.4,
            "cosmetics": 0.3,
            "womens_clothing": 0.2,
            "3c": 0.0,
            "durables": 0.0,
        },
    ),
    "thank_you": Effect(respond=0.004, delay_days=6.0),
    "birthday": Effect(respond=0.06, delay_days=4.0),
    "phone_followup": Effect(respond=0.05, pull=0.10, delay_days=3.0),
    "new_product_premium": Effect(respond=0.05, delay_days=3.0, by_channel={"email": 0.5}),
    "win_back": Effect(respond=0.03, wave_decay=0.6, delay_days=3.0),
}
"""The planted effects of the shipped playbook's campaigns; a campaign not listed has none."""

MAX_DELAY_DAYS = 20.0  # a response comes within this many days of the message, or never


def without_effects(effects: Mapping[str, Effect]) -> dict[str, Effect]:
    """The same campaigns with every planted effect set to zero (the null world)."""
    return {name: replace(effect, respond=0.0, pull=0.0) for name, effect in effects.items()}


@dataclass(frozen=True)
class Recipients:
    """Who would receive a message, as arrays of one length: what the probability depends on."""

    campaign: np.ndarray  # str
    wave: np.ndarray  # int
    category: np.ndarray  # codes into CATEGORIES
    source: np.ndarray  # codes into ACQUISITION_SOURCES
    first_order_cny: np.ndarray
    channels: np.ndarray  # str: the channels that reach the customer, comma-separated
    due_soon: np.ndarray  # bool: the natural purchase is due within the effect's pull_days


def response_probability(effects: Mapping[str, Effect], who: Recipients) -> np.ndarray:
    """The chance each message of ``who`` brings a response purchase (module docstring)."""
    out = np.zeros(who.campaign.size)
    source = np.array([SOURCE_RESPONSE.get(s, 1.0) for s in ACQUISITION_SOURCES])[who.source]
    for name in np.unique(who.campaign):
        effect = effects.get(str(name))
        if effect is None or effect.is_zero:
            continue
        at = who.campaign == name
        base = effect.respond + effect.pull * who.due_soon[at]
        decay = effect.wave_decay ** (who.wave[at].astype(float) - 1.0)
        category = np.array([effect.by_category.get(c, 1.0) for c in CATEGORIES])[who.category[at]]
        channel = np.array([_channel_factor(effect, text) for text in who.channels[at]])
        target = np.ones(int(at.sum()))
        if effect.new_min_cny is not None:
            target = np.where(who.first_order_cny[at] >= effect.new_min_cny, 1.0, effect.off_target)
        out[at] = base * decay * category * channel * source[at] * target
    return np.clip(out, 0.0, 1.0)


def _channel_factor(effect: Effect, channels: str) -> float:
    """The best factor among the channels that reach the customer (0 when none does)."""
    names = [c for c in str(channels).split(",") if c]
    return max((effect.by_channel.get(c, 1.0) for c in names), default=0.0)
