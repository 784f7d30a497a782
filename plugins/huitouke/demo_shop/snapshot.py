"""The shop as it stood on a given day: :func:`shop_as_of`, what the daily intake sees of the
generated shop's final state at the end of each business day."""

from __future__ import annotations

import datetime

import numpy as np
import pandas as pd

from huitouke.demo_shop.shop import TIME_FORMAT, DemoShop
from huitouke.records import CANCELLED, COMPLETED, PAID, REFUNDED, SHIPPED

# How an order moves on in the shop system: shipped a day after payment, completed (the buyer
# confirmed receipt) eight days after. Refunds and cancellations happen when `updated_at` says.
SHIPPED_AFTER = pd.Timedelta(days=1)
COMPLETED_AFTER = pd.Timedelta(days=8)


def shop_as_of(shop: DemoShop, day: datetime.date) -> DemoShop:
    """The shop database as it stood at the end of ``day`` (shop-local).

    Orders not yet paid are left out; every other order shows the status it had then, with
    ``updated_at`` at its last change: paid, shipped after :data:`SHIPPED_AFTER`, completed after
    :data:`COMPLETED_AFTER`, or refunded/cancelled once that has happened. Writing one snapshot
    per business day lets the daily intake see what a real shop database shows it: new orders,
    orders moving on, and refunds of earlier orders. Malformed rows appear, as they are, from
    their ``updated_at``. Customers and truth are unchanged.
    """
    end = pd.Timestamp(day) + pd.Timedelta(days=1)
    orders = shop.orders
    paid = pd.to_datetime(orders["paid_at"], format=TIME_FORMAT, errors="coerce")
    updated = pd.to_datetime(orders["updated_at"], format=TIME_FORMAT, errors="coerce")
    bad = orders["order_id"].isin(shop.bad_rows["order_id"]).to_numpy()
    voided_by_then = orders["status"].isin([REFUNDED, CANCELLED]).to_numpy() & (updated < end).to_numpy()
    shipped_at, completed_at = paid + SHIPPED_AFTER, paid + COMPLETED_AFTER
    keep = np.where(bad, (updated < end).to_numpy(), (paid < end).to_numpy())

    status = np.select(
        [bad, voided_by_then, (completed_at < end).to_numpy(), (shipped_at < end).to_numpy()],
        [
            orders["status"].to_numpy(dtype=object),
            orders["status"].to_numpy(dtype=object),
            COMPLETED,
            SHIPPED,
        ],
        default=PAID,
    )
    changed = np.select(
        [bad | voided_by_then, (completed_at < end).to_numpy(), (shipped_at < end).to_numpy()],
        [updated.to_numpy(), completed_at.to_numpy(), shipped_at.to_numpy()],
        default=paid.to_numpy(),
    )
    snapshot = orders.assign(
        status=pd.Series(status, index=orders.index, dtype="str"),
        updated_at=pd.Series(
            pd.DatetimeIndex(changed).strftime(TIME_FORMAT), index=orders.index, dtype="str"
        ),
    )[keep].reset_index(drop=True)
    items = shop.items[shop.items["order_id"].isin(snapshot["order_id"])].reset_index(drop=True)
    return DemoShop(
        customers=shop.customers, orders=snapshot, items=items, truth=shop.truth, bad_rows=shop.bad_rows
    )
