"""A seeded, realistic demo shop: the shop's own e-commerce database, which the pipeline reads.

Why it exists: the pipeline must be demonstrable and testable end to end without a real Taobao/Tmall
shop, and its segmentation and evaluation must be checkable against a known truth. This package
generates a shop whose figures follow DOMAIN.md (mean order value about 103 CNY, repeat rate rising
with the customer's order value, flash-sale and points customers who hardly come back, 11.11 and
12.12 peaks, refunds, cancellations and a share of malformed rows) and writes it into a separate
"shop database" (three tables, ``shop_customers``, ``shop_orders``, ``shop_order_items``). The
intake then reads that database through :data:`SHOP_ORDER_QUERY`, so the demo takes the same path
as a real deployment.

Everything is vectorised with numpy (one loop per repurchase "generation", never one per order;
string columns are Arrow-backed, low-cardinality ones built by ``take`` from small lookups), so a
shop of one million customers is generated in seconds within 2 GB. The same :class:`ShopSpec`
always gives byte-identical DataFrames.

All times are naive strings in the shop's local time (``ShopSpec.timezone``, no DST in China).

The modules, in the order a shop is made and used:

- ``shop``: what a shop is, :class:`ShopSpec` (what to generate) and :class:`DemoShop` (the tables
  and the truth);
- ``parameters``: what it is drawn from (DOMAIN.md's figures, statuses, bad-row kinds, catalogue);
- ``days``: the calendar (promotion days, flash events, the time of day);
- ``people``: names, nicknames, phones, e-mails, birthdays of the customers;
- ``generate``: :func:`generate_shop`, the customers, their orders, lines, bad rows and the truth;
- ``responses``: :func:`add_responses`, the orders the messages caused (the known uplift);
- ``snapshot``: :func:`shop_as_of`, the shop as it stood at the end of a day;
- ``store``: the shop database's tables, the intake's query, :func:`write_shop`;
- ``arrays``: formatting whole columns at once (times, days, amounts, strings from codes).

The season after the history, with customers who answer messages at a known true effect:
:mod:`huitouke.world` (docs/world.md).
"""

from huitouke.demo_shop.generate import generate_shop
from huitouke.demo_shop.parameters import BAD_ROW_KINDS, VALUE_TIERS
from huitouke.demo_shop.responses import RESPONSE_UPLIFT, add_responses
from huitouke.demo_shop.shop import DemoShop, ShopSpec
from huitouke.demo_shop.snapshot import shop_as_of
from huitouke.demo_shop.store import SHOP_ORDER_QUERY, shop_metadata, write_shop

__all__ = [
    "BAD_ROW_KINDS",
    "DemoShop",
    "SHOP_ORDER_QUERY",
    "ShopSpec",
    "RESPONSE_UPLIFT",
    "VALUE_TIERS",
    "add_responses",
    "generate_shop",
    "shop_as_of",
    "shop_metadata",
    "write_shop",
]
