"""The draws of the world that must not depend on who was in which arm: one hash per message.

Whether a message brings a response, when, whether that order is later voided, whether its coupon
is typed in, whether an SMS gets a ``T``: each is a uniform number that depends only on the seed,
the purpose and the message's key (campaign, customer, entry day, wave), through
:func:`huitouke.campaigns.holdout.uniforms`. So a held-out customer's *would-be* response is the
same draw as the response they would have had if treated: the common random numbers that let the
world know both potential outcomes of every customer of every wave.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from huitouke.campaigns.holdout import uniforms
from huitouke.demo_shop.parameters import CANCEL_SHARE, REFUND_SHARE, VOID_DELAY_SECONDS
from huitouke.world.effects import MAX_DELAY_DAYS

NOT_VOIDED = np.inf
MIN_DELAY_DAYS = 60 / 86_400  # a response takes at least a minute


def message_keys(frame: pd.DataFrame) -> np.ndarray:
    """The key of each row's message: campaign, customer, entry day, wave (str)."""
    entered = pd.to_datetime(frame["entered_on"]).dt.strftime("%Y-%m-%d")
    parts = [
        frame["campaign"].astype(str),
        frame["customer_id"].astype(str),
        entered,
        frame["wave"].astype(str),
    ]
    return (parts[0] + "|" + parts[1] + "|" + parts[2] + "|" + parts[3]).to_numpy(dtype=object)


@dataclass(frozen=True)
class Responses:
    """Per message: when its response would come (``inf``: none) and when that order would be
    voided (refund or cancellation; ``inf``: never), as epoch days."""

    fire: np.ndarray
    void_at: np.ndarray


def responses(
    seed: int, keys: np.ndarray, sent_at: np.ndarray, probability: np.ndarray, delay_days: np.ndarray
) -> Responses:
    """The response of each message sent at ``sent_at`` with the given chance and mean delay."""
    u = uniforms((str(seed), "respond"), keys)
    wait = -np.log1p(-uniforms((str(seed), "delay"), keys)) * delay_days
    wait = np.clip(wait, MIN_DELAY_DAYS, MAX_DELAY_DAYS)
    fire = np.where(u < probability, sent_at + wait, np.inf)
    return Responses(fire=fire, void_at=fire + void_delays(uniforms((str(seed), "void"), keys)))


def void_delays(u: np.ndarray) -> np.ndarray:
    """How long after payment an order is voided (``inf``: never), from a uniform draw: refunds
    and cancellations at the demo shop's shares, 1-10 days after payment."""
    lo, hi = VOID_DELAY_SECONDS[0] / 86_400, VOID_DELAY_SECONDS[1] / 86_400
    voided = u < REFUND_SHARE + CANCEL_SHARE
    spread = u / (REFUND_SHARE + CANCEL_SHARE)  # uniform again, inside the voided share
    return np.where(voided, lo + spread * (hi - lo), NOT_VOIDED)


def void_kinds(u_void_delay: np.ndarray) -> np.ndarray:
    """Which voided orders were refunded (True) rather than cancelled, from their delay."""
    lo, hi = VOID_DELAY_SECONDS[0] / 86_400, VOID_DELAY_SECONDS[1] / 86_400
    share = (u_void_delay - lo) / (hi - lo)
    return share < REFUND_SHARE / (REFUND_SHARE + CANCEL_SHARE)
