"""The shop database: its three tables (:func:`shop_metadata`), the intake's query against them
(:data:`SHOP_ORDER_QUERY`), and writing a generated shop into them (:func:`write_shop`)."""

from __future__ import annotations

import time

import sqlalchemy as sa

from huitouke.demo_shop.shop import DemoShop
from huitouke.pii import get_logger

log = get_logger(__name__)


def shop_metadata() -> sa.MetaData:
    """The three shop tables. Columns that may hold bad data are TEXT, as in a sloppy shop system."""
    metadata = sa.MetaData()
    sa.Table(
        "shop_customers",
        metadata,
        sa.Column("customer_id", sa.Text, primary_key=True),
        sa.Column("nickname", sa.Text),
        sa.Column("name", sa.Text),
        sa.Column("phone", sa.Text),
        sa.Column("email", sa.Text),
        sa.Column("birthday", sa.Text, nullable=True),
        sa.Column("registered_at", sa.Text),
    )
    sa.Table(
        "shop_orders",
        metadata,
        sa.Column("order_id", sa.Text, primary_key=True),
        sa.Column("customer_id", sa.Text, nullable=True),
        sa.Column("paid_at", sa.Text),
        sa.Column("pay_amount", sa.Text),
        sa.Column("status", sa.Text),
        sa.Column("channel", sa.Text),
        sa.Column("coupon_code", sa.Text, nullable=True),
        sa.Column("updated_at", sa.Text, nullable=False),
        sa.Index("ix_shop_orders_updated_at", "updated_at"),
    )
    sa.Table(
        "shop_order_items",
        metadata,
        sa.Column("order_id", sa.Text, primary_key=True),
        sa.Column("line_no", sa.Integer, primary_key=True),
        sa.Column("sku", sa.Text),
        sa.Column("title", sa.Text),
        sa.Column("category", sa.Text),
        sa.Column("qty", sa.Integer),
        sa.Column("amount", sa.Text),
    )
    return metadata


SHOP_TABLES: tuple[str, ...] = ("shop_customers", "shop_orders", "shop_order_items")
WRITE_CHUNK_ROWS = 50_000

SHOP_ORDER_QUERY: str = """
SELECT
    o.order_id     AS order_id,
    o.customer_id  AS customer_id,
    o.paid_at      AS paid_at,
    o.pay_amount   AS amount,
    o.status       AS status,
    o.channel      AS acquisition_source,
    o.coupon_code  AS coupon_code,
    o.updated_at   AS updated_at,
    NULL           AS refund_amount,  -- the demo shop refunds whole orders only
    c.name         AS customer_name,
    c.phone        AS phone,
    c.email        AS email,
    c.birthday     AS birthday,
    i.sku          AS sku,
    i.title        AS product_name,
    i.category     AS category,
    i.qty          AS quantity,
    i.amount       AS line_amount
FROM shop_orders o
LEFT JOIN shop_customers c ON c.customer_id = o.customer_id
LEFT JOIN shop_order_items i ON i.order_id = o.order_id
WHERE o.updated_at >= :start AND o.updated_at < :end
ORDER BY o.order_id, i.line_no
""".strip()
"""The intake's query against the shop database: one row per order line of the orders that changed
in the half-open interval [:start, :end) ('YYYY-MM-DD HH:MM:SS', shop local time), columns named
as in :mod:`huitouke.records`."""


def write_shop(shop: DemoShop, url: str | sa.Engine) -> dict[str, int]:
    """Drop and recreate the three shop tables at ``url`` and fill them; returns rows per table."""
    engine = sa.create_engine(url) if isinstance(url, str) else url
    metadata = shop_metadata()
    frames = {"shop_customers": shop.customers, "shop_orders": shop.orders, "shop_order_items": shop.items}
    started = time.perf_counter()
    try:
        with engine.begin() as connection:
            metadata.drop_all(connection)
            metadata.create_all(connection)
            for table in SHOP_TABLES:
                frames[table].to_sql(
                    table,
                    connection,
                    if_exists="append",
                    index=False,
                    chunksize=WRITE_CHUNK_ROWS,
                    method=None,
                )
    finally:
        if isinstance(url, str):
            engine.dispose()
    counts = {table: len(frames[table]) for table in SHOP_TABLES}
    log.info(
        "wrote demo shop to %s: %s in %.2fs",
        engine.url.render_as_string(hide_password=True),
        counts,
        time.perf_counter() - started,
    )
    return counts
