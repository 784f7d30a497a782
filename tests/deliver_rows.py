"""A CRM store with a day of queued messages, for the delivery tests: customers (with phones and
e-mail addresses), their campaign waves (treated, or held out) and the outbox rows rendering
would have queued. Plain inserts: delivery reads nothing else."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, insert

from huitouke.deliver.daily import DeliveryJob
from huitouke.deliver.policy import DeliveryRules
from huitouke.deliver.wiring import message_factory
from huitouke.store.schema import campaign_waves, customers, outbox

SHOP_TZ = ZoneInfo("Asia/Shanghai")
CAMPAIGN = "new_customer_coupon"
FAST_RULES = DeliveryRules(
    lease_seconds=3, max_attempts=8, backoff_seconds=0.05, max_backoff_seconds=0.2, settle_seconds=0.3
)
ALL_DAY = (time(0, 0), time(23, 59, 59))


def shop_today() -> date:
    return datetime.now(UTC).astimezone(SHOP_TZ).date()


def yesterday() -> date:
    return shop_today() - timedelta(days=1)


def phone(i: int) -> str:
    return f"+86138{i:08d}"


def seed(
    engine: Engine,
    people_of: int | range,
    day: date | None = None,
    channel: str = "sms",
    held_out: set[int] = frozenset(),
    opted_out: set[int] = frozenset(),
    campaign: str = CAMPAIGN,
    new: tuple[str, ...] = ("customers", "waves"),
) -> list[int]:
    """Customers c<i> (``people_of``: how many from c0, or which ones), one queued message each on
    ``channel`` for ``day`` (yesterday by default); returns the message ids."""
    day = day or yesterday()
    now = datetime(2025, 1, 1)
    ids = range(people_of) if isinstance(people_of, int) else people_of
    people = [
        {
            "customer_id": f"c{i}",
            "name": f"顾客{i}",
            "phone": phone(i),
            "email": f"c{i}@example.com",
            "sms_opt_out": i in opted_out,
            "email_opt_out": i in opted_out,
            "first_seen_at": now,
            "updated_at": now,
        }
        for i in ids
    ]
    waves = [
        {
            "campaign": campaign,
            "customer_id": f"c{i}",
            "entered_on": day,
            "wave": 1,
            "due_on": day,
            "arm": "holdout" if i in held_out else "treatment",
            "variant": "",
            "kind": "marketing",
            "priority": 50,
            "outcome": "held_out" if i in held_out else "treated",
            "channels": channel,
            "counts_toward_cap": False,
            "planned_at": now,
        }
        for i in ids
    ]
    messages = [
        {
            "campaign": campaign,
            "customer_id": f"c{i}",
            "entered_on": day,
            "wave": 1,
            "variant": "",
            "channel": channel,
            "template": f"{channel}/coupon",
            "business_date": day,
            "status": "queued",
            "recipient": f"c{i}@example.com" if channel == "email" else phone(i),
            "subject": "优惠券" if channel == "email" else None,
            "body": f"【小店】顾客{i}，您的优惠券已到账 回T退订",
            "sms_segments": 1,
            "attempts": 0,
            "created_at": now,
        }
        for i in ids
    ]
    with engine.begin() as conn:
        if "customers" in new:  # not when they already have a message (another campaign, channel)
            conn.execute(insert(customers), people)
        if "waves" in new:
            conn.execute(insert(campaign_waves), waves)
        conn.execute(insert(outbox), messages)
        rows = conn.execute(outbox.select().where(outbox.c.campaign == campaign)).all()
    return [r.message_id for r in rows if r.customer_id in {f"c{i}" for i in ids}]


def job(providers: dict, day: date | None = None, run_type: str = "scheduled", **changes) -> DeliveryJob:
    values = {
        "day": day or yesterday(),
        "run_type": run_type,
        "owner": "test-run/deliver_messages/1",
        "providers": providers,
        "message_of": message_factory(None, None, "小店"),
        "rules": FAST_RULES,
        "window": ALL_DAY,
        "tz": SHOP_TZ,
        "cap_of": lambda tier: (2, 7),
    }
    return DeliveryJob(**{**values, **changes})


def statuses(engine: Engine) -> dict[int, tuple[str, str | None]]:
    with engine.connect() as conn:
        return {r.message_id: (r.status, r.last_error) for r in conn.execute(outbox.select())}
