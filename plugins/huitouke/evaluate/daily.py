"""Stage 6 of a business day: evaluate every campaign wave whose windows matured, and store it.

:func:`run_day` reads what :func:`huitouke.evaluate.waves.evaluate_waves` needs from the
store (:mod:`huitouke.evaluate.persist`) — the waves of the look-back period with each customer's
segment on the wave's day, the cohort's orders, the outbox, the coupons, the keys already
recorded — evaluates, and stores the new rows under their keys (``evaluations``: once per
campaign, wave, due day, window and view; ``evaluation_details`` and ``evaluation_sequences``
replaced for the day). Re-running a day adds nothing and changes nothing already recorded.

A wave planned on business day D goes out the next morning at the send window's start (the plan
is made after D ends), so its send time is D + 1 at ``shop.send_window.start``, shop time.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

from sqlalchemy import Engine

from huitouke.campaigns.playbook import Playbook
from huitouke.evaluate import persist
from huitouke.evaluate.result import WaveEvaluation
from huitouke.evaluate.waves import MessageCosts, WaveOptions, evaluate_waves, planned_send_time
from huitouke.pii import get_logger

log = get_logger(__name__)

__all__ = ["SEGMENT_DIMENSIONS", "lookback_days", "run_day", "wave_options"]

# The segment columns evaluation breaks results down by (the customer's segment on the wave's day).
SEGMENT_DIMENSIONS = ("lifecycle", "member_tier", "value_tier", "category_group")


def lookback_days(playbook: Playbook) -> int:
    """How far back a wave can still have a window to evaluate: the longest sequence of waves plus
    the longest window, plus the day between planning and sending."""
    longest = 0
    for campaign in playbook.campaigns.values():
        waves = campaign.waves
        sequence = waves.first_after_days + (waves.max_waves - 1) * (waves.interval_days or 0)
        longest = max(longest, sequence + max(campaign.evaluation.windows_days))
    return longest + 2


def wave_options(playbook: Playbook, timezone: str) -> WaveOptions:
    """The playbook's evaluation: each campaign's windows and primary window, the send time (the
    day after the wave's due day, at the send window's start), the shop's unit costs in fen."""
    send_at = playbook.shop.send_window.start
    costs = playbook.shop.unit_costs
    return WaveOptions(
        windows={n: c.evaluation.windows_days for n, c in playbook.campaigns.items()},
        primary={n: c.evaluation.primary_days for n, c in playbook.campaigns.items()},
        send_time=lambda due: planned_send_time(due + timedelta(days=1), timezone, send_at),
        timezone=timezone,
        costs=MessageCosts(
            sms_segment_cents=costs.sms_segment_cny * 100,
            email_cents=costs.email_cny * 100,
            call_cents=costs.call_cny * 100,
        ),
        segment_columns=SEGMENT_DIMENSIONS,
    )


def run_day(
    engine: Engine, day: date, playbook: Playbook, timezone: str, now: datetime | None = None
) -> WaveEvaluation:
    """Evaluate on business day ``day`` and store the new rows (see the module docstring)."""
    now = now or datetime.now()
    since = day - timedelta(days=lookback_days(playbook))
    with engine.begin() as conn:
        already_stored = persist.count_evaluated_on(conn, day)
        evaluation = evaluate_waves(
            persist.read_waves(conn, since, day, SEGMENT_DIMENSIONS),
            persist.read_orders(conn, since, day, timezone),
            day,
            messages=persist.read_messages(conn, since),
            coupons=persist.read_coupons(conn, since),
            recorded=persist.read_recorded(conn, since),
            options=wave_options(playbook, timezone),
        )
        persist.write_evaluation(conn, evaluation, day, now)
    evaluation.already_stored = already_stored
    return evaluation
