"""The order model: the canonical record every source produces, the fields of a stored order, line
and customer, and the order status vocabulary.

Every source (SQL, files, HTTP) turns what it reads into a pandas DataFrame whose columns are
named as below, one row per order line (or one row per order when the source has no lines).
Values stay as the source gave them (strings, numbers, timestamps): parsing and validation
happen in one place, :mod:`huitouke.intake.validate`, so that every source quarantines bad
input for the same reasons.
"""

from __future__ import annotations

# Order-level fields. A row without them cannot become an order.
REQUIRED_COLUMNS: tuple[str, ...] = ("order_id", "customer_id", "paid_at", "amount", "status")

# Optional order-level and customer fields.
ORDER_COLUMNS: tuple[str, ...] = (
    *REQUIRED_COLUMNS,
    "acquisition_source",  # organic / flash_sale / points (how this order was won)
    "coupon_code",  # a huitouke coupon code redeemed with this order, if any
    "updated_at",  # when the source last changed the order (refund, cancellation)
    "refund_amount",  # refunded so far (Taobao 退款金额): a partial refund keeps the order's status
)
CUSTOMER_COLUMNS: tuple[str, ...] = ("customer_name", "phone", "email", "birthday")

# Optional line-level fields: one row per line when present.
LINE_COLUMNS: tuple[str, ...] = ("sku", "product_name", "category", "quantity", "line_amount")

ALL_COLUMNS: tuple[str, ...] = (*ORDER_COLUMNS, *CUSTOMER_COLUMNS, *LINE_COLUMNS)

# Where a row came from ("orders.csv:17", "GET /orders page 3 item 5", "sql:shop_db row 4"): every
# source adds it, validation copies it into the quarantine rows.
SOURCE_REF_COLUMN = "_source_ref"

# A validated order, line and customer, as intake stores them (columns of the store's tables).
# PAYMENT_FIELDS are what the customer state is a function of: who paid how much, when, how won.
PAYMENT_FIELDS: tuple[str, ...] = (
    "order_id",
    "customer_id",
    "paid_at",
    "business_date",
    "status",
    "amount_cents",
    "acquisition_source",
)
# refunded_cents (0 without a refund, at most amount_cents) is not part of the content hash nor of
# FIXED_ORDER_FIELDS: a (partial) refund changes it after the order was stored.
ORDER_FIELDS: tuple[str, ...] = (
    *PAYMENT_FIELDS,
    "coupon_code",
    "source_updated_at",
    "content_hash",
    "refunded_cents",
)
LINE_FIELDS: tuple[str, ...] = (
    "order_id",
    "line_no",
    "sku",
    "product_name",
    "category",
    "quantity",
    "amount_cents",
)
CUSTOMER_FIELDS: tuple[str, ...] = ("customer_id", "name", "phone", "email", "birthday")
# The contact details of a customer: the latest non-empty value the source gives wins.
CONTACT_FIELDS: tuple[str, ...] = tuple(f for f in CUSTOMER_FIELDS if f != "customer_id")
# What an order may never change once stored (its lines neither; all of them make its content_hash):
# rows that disagree on them are quarantined, in one read or against the store.
FIXED_ORDER_FIELDS: tuple[str, ...] = ("customer_id", "paid_at", "amount_cents")

# Canonical statuses. Only PAID_STATUSES count as revenue; refunds and cancellations never do.
PENDING = "pending"
PAID = "paid"
SHIPPED = "shipped"
COMPLETED = "completed"
REFUNDED = "refunded"
CANCELLED = "cancelled"
STATUSES: tuple[str, ...] = (PENDING, PAID, SHIPPED, COMPLETED, REFUNDED, CANCELLED)
PAID_STATUSES: frozenset[str] = frozenset({PAID, SHIPPED, COMPLETED})
VOID_STATUSES: frozenset[str] = frozenset({REFUNDED, CANCELLED})

# How far an order has progressed. A stored order may move forward (paid -> completed ->
# refunded) but never back: a row that would move it back is quarantined.
STATUS_RANK: dict[str, int] = {
    PENDING: 0,
    PAID: 1,
    SHIPPED: 2,
    COMPLETED: 3,
    REFUNDED: 4,
    CANCELLED: 4,
}

# Words that sources use for each canonical status, English and Taobao/Tmall Chinese.
STATUS_SYNONYMS: dict[str, str] = {
    "pending": PENDING,
    "unpaid": PENDING,
    "created": PENDING,
    "wait_buyer_pay": PENDING,
    "等待买家付款": PENDING,
    "paid": PAID,
    "wait_seller_send_goods": PAID,
    "买家已付款，等待卖家发货": PAID,
    "买家已付款,等待卖家发货": PAID,
    "等待卖家发货": PAID,
    "已付款": PAID,
    "shipped": SHIPPED,
    "wait_buyer_confirm_goods": SHIPPED,
    "卖家已发货，等待买家确认": SHIPPED,
    "卖家已发货,等待买家确认": SHIPPED,
    "已发货": SHIPPED,
    "completed": COMPLETED,
    "complete": COMPLETED,
    "finished": COMPLETED,
    "trade_finished": COMPLETED,
    "交易成功": COMPLETED,
    "已完成": COMPLETED,
    "refunded": REFUNDED,
    "refund": REFUNDED,
    "退款成功": REFUNDED,
    "已退款": REFUNDED,
    "cancelled": CANCELLED,
    "canceled": CANCELLED,
    "closed": CANCELLED,
    "trade_closed": CANCELLED,
    "交易关闭": CANCELLED,
    "已取消": CANCELLED,
}

# Acquisition sources (DOMAIN.md: flash-sale and points customers rarely come back).
ORGANIC = "organic"
FLASH_SALE = "flash_sale"
POINTS = "points"
ACQUISITION_SOURCES: tuple[str, ...] = (ORGANIC, FLASH_SALE, POINTS)
ACQUISITION_SYNONYMS: dict[str, str] = {
    "organic": ORGANIC,
    "": ORGANIC,
    "flash_sale": FLASH_SALE,
    "flash-sale": FLASH_SALE,
    "聚划算": FLASH_SALE,
    "points": POINTS,
    "淘金币": POINTS,
}

# Product categories of the demo shop and the default playbook.
CATEGORIES: tuple[str, ...] = (
    "food",
    "kids_clothing",
    "daily_goods",
    "durables",
    "womens_clothing",
    "cosmetics",
    "3c",
)
UNKNOWN_CATEGORY = "unknown"


def canonical_status(value: object) -> str | None:
    """The canonical status for a source's word, or None when the word is unknown."""
    if value is None:
        return None
    text = str(value).strip()
    return STATUS_SYNONYMS.get(text.lower(), STATUS_SYNONYMS.get(text))
