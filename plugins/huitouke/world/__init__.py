"""A world that answers: a ground-truth shop simulator whose truth is what the evaluation estimates.

The demo shop (:mod:`huitouke.demo_shop`) makes a shop's history; the world takes its customers
from the season's first day on and lives through the season one day at a time: customers buy on
their own (a natural repurchase hazard by category cycle, acquisition source and the 11.11 and
12.12 calendar), new customers arrive, and the messages the pipeline sends have a true effect
(by campaign, segment, channel and wave; some add purchases, some only pull them forward). Some
recipients reply ``T``, a few numbers are invalid, some orders are refunded. Because every draw
that depends on a message is a hash of the message (common random numbers), the world knows each
customer's outcome with and without it, and so the true intention-to-treat effect of every wave.

Driving it (one calendar day at a time, the season loop or a test)::

    world = World.from_shop(shop, start, end, effects=TRUE_EFFECTS, seed=7)
    world.people.customers                    # shop_customers rows, new customers included
    day = world.step(d, messages)             # messages that left on d at 09:00 (planned on d - 1)
    day.orders, day.items                     # the day's shop rows (demo shop convention)
    day.replies, day.undelivered              # 'T' replies; invalid numbers and other bounces
    world.invalid_numbers()                   # phones the gateway simulator should fail
    shop_as_of(grown_shop(shop, world, days_so_far), d)  # the shop database at the end of d
    truth = true_effects(world, waves)        # per campaign, wave, due_on, window: the truth

Modules: ``effects`` (the planted effects), ``hazard`` (the natural cycle), ``population`` (the
customers), ``clocks`` (the per-message draws), ``ledger`` (what happened), ``world`` (the day
step), ``truth`` (the estimand), ``season`` (a season at library level, for tests and benches).
See docs/world.md.
"""

from huitouke.world.effects import TRUE_EFFECTS, Effect, without_effects
from huitouke.world.truth import TRUTH_COLUMNS, true_effects
from huitouke.world.world import World, WorldDay, grown_shop

__all__ = [
    "TRUE_EFFECTS",
    "TRUTH_COLUMNS",
    "Effect",
    "World",
    "WorldDay",
    "grown_shop",
    "true_effects",
    "without_effects",
]
