"""What a message template may use: the documented context, as a schema, and how to build it.

A template sees seven objects (:data:`CONTEXT`), each a dict of plain values (text, integers,
amounts, dates), never a Python object with methods::

    customer  who receives the message (id, name, 称呼 first_name, tiers, lifecycle, ...)
    shop      the shop (name, currency, url)
    coupon    the coupon this message carries (code, value, threshold, expiry)
    order     the order the message is about (id, date, amount, categories)
    category  the customer's category group and its Chinese display name
    campaign  the campaign (name, display name)
    wave      which wave of the campaign this is (number, of)

The lint (:mod:`huitouke.render.lint`) checks every ``{{ customer.xxx }}`` of a template against
this schema; ``include/templates/README.md`` carries the reference generated from it
(:func:`context_reference_markdown`, a test keeps the two equal). The planning side builds one
context per customer with :func:`message_context` and the small builders below;
:func:`sample_context` is what ``huitouke templates preview`` and the lint render with.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

__all__ = [
    "CATEGORY_DISPLAY_ZH",
    "CONTEXT",
    "ContextField",
    "ContextObject",
    "SAMPLE_SHOP",
    "ShopInfo",
    "campaign_context",
    "category_context",
    "context_reference_markdown",
    "coupon_context",
    "customer_context",
    "message_context",
    "order_context",
    "salutation",
    "sample_context",
    "shop_context",
    "template_language",
    "wave_context",
]


@dataclass(frozen=True)
class ShopInfo:
    """The shop as messages need it; the playbook's ``shop:`` section builds it.

    ``sms_signature_brackets``: the SMS signature is ``【name】`` (True, required by Chinese
    operators) or ``name: `` (False; the brackets alone make any SMS UCS-2).
    """

    name: str
    currency: str = "CNY"
    opt_out_footer: str = "回T退订"
    sms_signature_brackets: bool = True
    url: str | None = None


SAMPLE_SHOP = ShopInfo(name="暖暖母婴旗舰店", url="https://nuannuan.example.com")

# Display names of the category groups (records.CATEGORIES plus the fallback groups).
# A playbook's own group (e.g. ``baby``) is displayed by its name unless added here.
CATEGORY_DISPLAY_ZH: dict[str, str] = {
    "food": "奶粉辅食",
    "kids_clothing": "童装",
    "daily_goods": "母婴日用",
    "durables": "耐用品",
    "womens_clothing": "女装",
    "cosmetics": "美妆护肤",
    "3c": "数码3C",
    "other": "其他",
    "unknown": "其他",
}


@dataclass(frozen=True)
class ContextField:
    """One field of a context object."""

    name: str
    type: str  # text, integer, amount (CNY), date, list of text
    description: str
    example: Any
    nullable: bool = False  # may be empty for some customers: guard with {% if %} or |default


@dataclass(frozen=True)
class ContextObject:
    """One object of the context (``customer``, ``coupon``, ...) and its fields."""

    name: str
    description: str
    fields: tuple[ContextField, ...]

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    def field(self, name: str) -> ContextField | None:
        return next((f for f in self.fields if f.name == name), None)


_F = ContextField
CONTEXT: dict[str, ContextObject] = {
    o.name: o
    for o in (
        ContextObject(
            "customer",
            "the customer who receives the message (收件客户)",
            (
                _F("id", "text", "the shop's customer id (客户编号)", "C0012345"),
                _F("name", "text", "the name as recorded (姓名); may be empty", "欧阳晓雨", nullable=True),
                _F(
                    "first_name",
                    "text",
                    "how to address the customer (称呼): the name, the given name of a Latin name, "
                    "or 亲 when no name is known; never empty",
                    "欧阳晓雨",
                ),
                _F("member_tier", "text", "member tier (会员等级): normal, active, vip", "active"),
                _F(
                    "value_tier",
                    "text",
                    "value tier by average order value (客单价分层): low, mid, premium",
                    "premium",
                ),
                _F(
                    "lifecycle",
                    "text",
                    "lifecycle (生命周期): new, one_time, repeat, loyal, at_risk, churned",
                    "new",
                ),
                _F(
                    "category_group",
                    "text",
                    "main category group (主要品类), e.g. food, womens_clothing",
                    "food",
                ),
                _F("paid_orders", "integer", "number of paid orders (付款订单数)", 3),
                _F(
                    "last_order_date",
                    "date",
                    "day of the last paid order (最近下单日)",
                    dt.date(2025, 11, 11),
                ),
                _F(
                    "birthday",
                    "date",
                    "birthday from the profile form (生日); may be empty",
                    dt.date(1992, 11, 20),
                    True,
                ),
            ),
        ),
        ContextObject(
            "shop",
            "the shop (店铺), from the playbook's shop section",
            (
                _F("name", "text", "shop name (店铺名), also the SMS signature 【…】", SAMPLE_SHOP.name),
                _F("currency", "text", "currency code", "CNY"),
                _F("url", "text", "shop address (店铺链接); may be empty", SAMPLE_SHOP.url, nullable=True),
            ),
        ),
        ContextObject(
            "coupon",
            "the coupon this message carries (优惠券), for campaigns with a coupon",
            (
                _F("code", "text", "coupon code (券码)", "HTK8K2Q"),
                _F("value_cny", "amount (CNY)", "coupon value (面额)", 20),
                _F("min_spend_cny", "amount (CNY)", "minimum spend to use it (满…可用); 0 = none", 199),
                _F("expires_on", "date", "last day it can be used (有效期至)", dt.date(2025, 11, 25)),
            ),
        ),
        ContextObject(
            "order",
            "the order the message is about (订单), e.g. the 11.11 order thanked for",
            (
                _F("id", "text", "order id (订单号)", "T2025111100012345"),
                _F("date", "date", "business day of the order (下单日)", dt.date(2025, 11, 11)),
                _F("amount_cny", "amount (CNY)", "amount paid (实付金额)", Decimal("329.00")),
                _F("categories", "list of text", "display names of its categories (品类)", ["奶粉辅食"]),
            ),
        ),
        ContextObject(
            "category",
            "the customer's category group (品类分组), which picks the variant of care tips",
            (
                _F("group", "text", "group name, e.g. food, kids_clothing, 3c", "food"),
                _F("display_name", "text", "Chinese display name (品类名称)", CATEGORY_DISPLAY_ZH["food"]),
            ),
        ),
        ContextObject(
            "campaign",
            "the campaign (活动) sending the message",
            (
                _F("name", "text", "campaign name in the playbook", "thank_you_new"),
                _F("display_name", "text", "display name (活动名称)", "双11新客感谢"),
            ),
        ),
        ContextObject(
            "wave",
            "which wave of the campaign this is (第几波), e.g. coupon waves 1 to 5",
            (
                _F("number", "integer", "this wave, from 1", 1),
                _F("of", "integer", "number of waves of the campaign", 5),
            ),
        ),
    )
}


def salutation(name: str | None, fallback: str = "亲") -> str:
    """称呼: a Chinese name as written, the first word of a Latin name, ``fallback`` without a name."""
    text = " ".join(str(name or "").split())
    if not text:
        return fallback
    if text.isascii():
        return text.split(" ")[0][:20]
    return text[:8]


def shop_context(shop: ShopInfo) -> dict[str, Any]:
    return {"name": shop.name, "currency": shop.currency, "url": shop.url}


def category_context(group: str) -> dict[str, Any]:
    return {"group": group, "display_name": CATEGORY_DISPLAY_ZH.get(group, group)}


def campaign_context(name: str, display_name: str | None = None) -> dict[str, Any]:
    return {"name": name, "display_name": display_name or name}


def wave_context(number: int, of: int) -> dict[str, Any]:
    return {"number": int(number), "of": int(of)}


def coupon_context(code: str, value_cny: Any, min_spend_cny: Any, expires_on: dt.date) -> dict[str, Any]:
    return {"code": code, "value_cny": value_cny, "min_spend_cny": min_spend_cny, "expires_on": expires_on}


def order_context(order_id: str, date: dt.date, amount_cny: Any, categories: list[str]) -> dict[str, Any]:
    return {
        "id": order_id,
        "date": date,
        "amount_cny": amount_cny,
        "categories": [CATEGORY_DISPLAY_ZH.get(c, c) for c in categories],
    }


def _date_or_none(value: Any) -> dt.date | None:
    if value is None or value != value:  # None, NaN, NaT
        return None
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if hasattr(value, "date"):  # pandas Timestamp
        return value.date()
    return dt.date.fromisoformat(str(value)[:10])


def customer_context(row: Mapping[str, Any]) -> dict[str, Any]:
    """A ``customer`` object from a row of the segments table joined with the customer's profile.

    Reads ``customer_id``, ``name``, ``member_tier``, ``value_tier``, ``lifecycle``,
    ``category_group``, ``paid_orders``, ``last_order_date`` (or ``last_business_date``) and
    ``birthday``; ``first_name`` is derived from the name (:func:`salutation`).
    """
    name = row.get("name")
    name = None if name is None or name != name or not str(name).strip() else str(name).strip()
    last = row.get("last_order_date", row.get("last_business_date"))
    return {
        "id": str(row["customer_id"]),
        "name": name,
        "first_name": salutation(name),
        "member_tier": _value(row.get("member_tier")),
        "value_tier": _value(row.get("value_tier")),
        "lifecycle": _value(row.get("lifecycle")),
        "category_group": _value(row.get("category_group")),
        "paid_orders": int(_value(row.get("paid_orders")) or 0),
        "last_order_date": _date_or_none(last),
        "birthday": _date_or_none(row.get("birthday")),
    }


def _value(value: Any) -> Any:
    """A joined cell as a template sees it: a missing one (None, or NaN from a join that found no
    segment row, e.g. a customer whose first order is not folded yet) is None."""
    return None if value is None or value != value else value


def message_context(
    *,
    customer: dict[str, Any],
    shop: ShopInfo | dict[str, Any] | None = None,
    coupon: dict[str, Any] | None = None,
    order: dict[str, Any] | None = None,
    category: dict[str, Any] | None = None,
    campaign: dict[str, Any] | None = None,
    wave: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One message's context. Objects left out are absent: a template using them fails loudly.

    ``shop`` may be left out too: a compiled message adds its own shop. ``category`` defaults to
    the customer's main category group.
    """
    context: dict[str, Any] = {"customer": customer}
    if shop is not None:
        context["shop"] = shop_context(shop) if isinstance(shop, ShopInfo) else shop
    if category is None and customer.get("category_group"):
        category = category_context(customer["category_group"])
    for key, value in (
        ("coupon", coupon),
        ("order", order),
        ("category", category),
        ("campaign", campaign),
        ("wave", wave),
    ):
        if value is not None:
            context[key] = value
    return context


# Display names of the default campaigns, for the sample context only (the playbook has its own).
_SAMPLE_CAMPAIGN_NAMES = {
    "thank_you_new": "双11新客感谢",
    "thank_you_returning": "双11老客感谢",
    "care_tips": "购后关怀",
    "coupon_wave": "新客回购券",
    "phone_followup": "电话回访",
    "birthday": "生日礼券",
    "win_back": "流失客户召回",
    "new_product_premium": "高端会员新品尝鲜",
}


def sample_context(
    shop: ShopInfo | None = None,
    *,
    category_group: str = "food",
    wave: int = 1,
    waves: int = 5,
    campaign: str = "thank_you_new",
    language: str = "zh",
) -> dict[str, Any]:
    """A complete context with every documented field (the schema's examples), for previews and
    the lint's length check. The sample name is a long one (4 characters) so that a template
    within budget for the sample is within budget for most customers; ``language="en"`` gives
    the sample customer a Latin name (for templates under ``en/``)."""
    context: dict[str, Any] = {}
    for obj in CONTEXT.values():
        context[obj.name] = {
            f.name: (list(f.example) if isinstance(f.example, list) else f.example) for f in obj.fields
        }
    context["shop"] = shop_context(shop or SAMPLE_SHOP)
    context["category"] = category_context(category_group)
    context["customer"]["category_group"] = category_group
    context["order"]["categories"] = [context["category"]["display_name"]]
    context["campaign"] = campaign_context(campaign, _SAMPLE_CAMPAIGN_NAMES.get(campaign))
    context["wave"] = wave_context(wave, waves)
    if language != "zh":
        context["customer"].update(name="Alice Chen", first_name="Alice")
    return context


def template_language(name: str) -> str:
    """The language of a message from its name: ``en/thank_you_returning`` is English, the rest zh."""
    head, _, rest = name.partition("/")
    return head if rest and head in ("en",) else "zh"


def _example(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(map(str, value)) + "]"
    return str(value)


def context_reference_markdown() -> str:
    """The context reference, as the table in ``include/templates/README.md``."""
    lines = ["| variable | type | example | what |", "|---|---|---|---|"]
    for obj in CONTEXT.values():
        lines.append(f"| **`{obj.name}`** | | | {obj.description} |")
        for f in obj.fields:
            what = f.description + (
                " *(may be empty)*" if f.nullable and "empty" not in f.description else ""
            )
            lines.append(f"| `{obj.name}.{f.name}` | {f.type} | {_example(f.example)} | {what} |")
    return "\n".join(lines) + "\n"
