"""Stage 3 of the daily run: campaigns — the playbook, entries, holdouts, waves, caps and coupons.

Plain functions over pandas DataFrames, with the store and Airflow at the edges::

    playbook = load_playbook()                       # include/playbook.yaml, validated
    plan = plan_day(playbook, day, segments, contacts, orders, entries, history)
    coupons = issue_coupons(plan.waves, playbook, existing=stored_coupons_of_those_waves)
    sends = with_codes(plan.sends, coupons)           # -> render -> outbox
    print(plan.as_text())                             # per campaign: entered, due, treated, ...

:func:`redeemed_codes` marks the coupons that the day's orders used. The stage's task is
:func:`huitouke.campaigns.daily.run_day`, its store edge :mod:`huitouke.campaigns.persist`; see
docs/campaigns.md.
"""

from huitouke.campaigns.coupons import (
    COUPON_COLUMNS,
    REDEMPTION_COLUMNS,
    issue_coupons,
    redeemed_codes,
    with_codes,
)
from huitouke.campaigns.holdout import HOLDOUT, TREATMENT, assign_arms, holdout_draws
from huitouke.campaigns.plan import (
    CONTACT_COLUMNS,
    ENTRY_COLUMNS,
    EXIT_REASONS,
    HISTORY_COLUMNS,
    OUTCOMES,
    SEND_COLUMNS,
    SUMMARY_COLUMNS,
    SUPPRESSION_REASONS,
    WAVE_COLUMNS,
    DayPlan,
    empty_entries,
    plan_day,
)
from huitouke.campaigns.playbook import Campaign, Playbook, load_playbook, parse_playbook
from huitouke.campaigns.rules import ORDER_COLUMNS

__all__ = [
    "CONTACT_COLUMNS",
    "COUPON_COLUMNS",
    "ENTRY_COLUMNS",
    "EXIT_REASONS",
    "HISTORY_COLUMNS",
    "HOLDOUT",
    "ORDER_COLUMNS",
    "OUTCOMES",
    "REDEMPTION_COLUMNS",
    "SEND_COLUMNS",
    "SUMMARY_COLUMNS",
    "SUPPRESSION_REASONS",
    "TREATMENT",
    "WAVE_COLUMNS",
    "Campaign",
    "DayPlan",
    "Playbook",
    "assign_arms",
    "empty_entries",
    "holdout_draws",
    "issue_coupons",
    "load_playbook",
    "parse_playbook",
    "plan_day",
    "redeemed_codes",
    "with_codes",
]
