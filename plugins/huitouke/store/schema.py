"""The CRM store's tables, as SQLAlchemy Core metadata.

Tables are named for what a row is. Times are stored as naive UTC ``DateTime`` values; business
dates (``Date``) are calendar days in the shop's timezone. Money is stored in integer cents (fen)
so that sums are exact and fast.

The migrations in ``migrations/versions`` create exactly this schema; a test compares the two.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# A buyer, identified by the shop's own buyer id (e.g. the Taobao member name).
customers = Table(
    "customers",
    metadata,
    Column("customer_id", String(64), primary_key=True),
    Column("name", String(128)),
    Column("phone", String(32)),
    Column("email", String(255)),
    Column("birthday", Date),
    Column("sms_opt_out", Boolean, nullable=False, default=False),
    Column("email_opt_out", Boolean, nullable=False, default=False),
    Column("first_seen_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
)

# An order as the shop's source last reported it. Refunds and cancellations change `status`;
# they never add revenue. `content_hash` covers what may not change once stored
# (customer, paid time, amount, lines): a row that disagrees is quarantined.
orders = Table(
    "orders",
    metadata,
    Column("order_id", String(64), primary_key=True),
    Column("customer_id", String(64), nullable=False, index=True),
    Column("paid_at", DateTime),
    Column("business_date", Date, index=True),
    Column("status", String(16), nullable=False),
    Column("amount_cents", BigInteger, nullable=False),
    # The part of amount_cents refunded so far (partial refunds; 0: none). It only grows: a paid
    # order counts amount_cents - refunded_cents as spend (huitouke.segments.state).
    Column("refunded_cents", BigInteger, nullable=False, server_default=text("0")),
    Column("acquisition_source", String(32), nullable=False),
    Column("coupon_code", String(64)),
    Column("content_hash", String(64), nullable=False),
    Column("source", String(64), nullable=False),
    Column("source_updated_at", DateTime),
    Column("loaded_at", DateTime, nullable=False),
    Column("status_changed_at", DateTime, nullable=False),
    # Null until stage 2 has folded this order (as it now is) into the customer's state.
    Column("state_applied_at", DateTime),
    # For an order waiting to be folded again (state_applied_at null) after intake moved its status:
    # whether the state counted it as paid. Null for an order the state never counted, and once
    # folded (then the state counts it as its status says). See huitouke.segments.fold.
    Column("folded_as_paid", Boolean),
    # The orders stage 2 has still to fold in, by customer: small, and what the daily run scans.
    Index(
        "ix_orders_unapplied_customer_id",
        "customer_id",
        sqlite_where=text("state_applied_at IS NULL"),
        postgresql_where=text("state_applied_at IS NULL"),
    ),
)

# One line of an order, with its product category.
order_lines = Table(
    "order_lines",
    metadata,
    Column("order_id", String(64), ForeignKey("orders.order_id", ondelete="CASCADE"), primary_key=True),
    Column("line_no", Integer, primary_key=True),
    Column("sku", String(64)),
    Column("product_name", String(255)),
    Column("category", String(64), nullable=False),
    Column("quantity", Integer),
    Column("amount_cents", BigInteger),
)

# A row (or part of one) that was not loaded, with the reason and the raw row, so nothing is lost.
# `row_key` makes re-running a day idempotent: the same bad row is stored once.
quarantine = Table(
    "quarantine",
    metadata,
    Column("quarantine_id", Integer, primary_key=True, autoincrement=True),
    Column("row_key", String(64), nullable=False, unique=True),
    Column("business_date", Date, nullable=False, index=True),
    Column("source", String(64), nullable=False),
    Column("source_ref", String(255)),
    Column("reason", String(64), nullable=False, index=True),
    Column("detail", Text, nullable=False),
    Column("order_id", String(64)),
    Column("raw", Text, nullable=False),
    Column("quarantined_at", DateTime, nullable=False),
)

# What one intake did: the figures the task log and the UI show. A daily run covers one business
# day (last_business_date = business_date); a history load covers a period. One row per attempt
# (1, 2, ...): a re-run or a backfill adds its row beside the ones before it.
intake_runs = Table(
    "intake_runs",
    metadata,
    Column("business_date", Date, primary_key=True),
    Column("source", String(64), primary_key=True),
    Column("attempt", Integer, primary_key=True, autoincrement=False),
    Column("last_business_date", Date, nullable=False),
    Column("rows_read", Integer, nullable=False),
    Column("orders_read", Integer, nullable=False),
    Column("inserted", Integer, nullable=False),
    Column("updated", Integer, nullable=False),
    Column("unchanged", Integer, nullable=False),
    Column("quarantined", Integer, nullable=False),
    Column("quarantined_by_reason", Text, nullable=False),
    Column("finished_at", DateTime, nullable=False),
)

# The daily run's calendar (huitouke.calendar): one row per business day the stateful stages opened.
# status "open" from the day's first task until its last stateful stage, then "completed"; a day
# opens only when the day before it completed (or when it is the store's first day).
business_days = Table(
    "business_days",
    metadata,
    Column("business_date", Date, primary_key=True),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("run_id", String(250)),  # the Airflow run of the latest attempt
    Column("run_type", String(32)),  # scheduled, manual, backfill, ...
    Column("opened_at", DateTime, nullable=False),
    Column("completed_at", DateTime),
    # Why the latest attempt stopped before completing (a stale day's freshness message); cleared
    # when an attempt opens. The next day's wait repeats it.
    Column("stop_reason", Text),
)

# Per-customer state derived from paid orders, kept current by stage 2 (huitouke.segments.state):
# a customer's row depends only on their orders, so the daily update recomputes the customers whose
# orders changed. Customers with no paid order have no row.
customer_state = Table(
    "customer_state",
    metadata,
    Column("customer_id", String(64), primary_key=True),
    Column("first_paid_at", DateTime, nullable=False),
    Column("last_paid_at", DateTime, nullable=False),
    Column("first_business_date", Date, nullable=False),
    Column("last_business_date", Date, nullable=False),
    Column("paid_orders", Integer, nullable=False),
    Column("total_cents", BigInteger, nullable=False),
    Column("aov_cents", BigInteger, nullable=False),
    Column("main_category_group", String(64)),
    Column("acquisition_source", String(32)),
    # Room on each PostgreSQL page: the daily upsert rewrites rows in place, HOT (migration 0006).
    postgresql_with={"fillfactor": 85},
)

# Paid spend per customer and category group (every group the customer bought from): what moves
# the main category group when a new order is folded in without reading the customer's history.
customer_spend = Table(
    "customer_spend",
    metadata,
    Column("customer_id", String(64), primary_key=True),
    Column("category_group", String(64), primary_key=True),
    Column("spend_cents", BigInteger, nullable=False),
    Column("paid_lines", Integer, nullable=False),  # a refund of the group's last line removes the row
    sqlite_with_rowid=False,  # read by customer: the primary key is the table
    postgresql_with={"fillfactor": 85},  # as customer_state
)

# A customer's segment over a range of business dates [valid_from, valid_to); open when valid_to is null.
segment_history = Table(
    "segment_history",
    metadata,
    Column("segment_id", Integer, primary_key=True, autoincrement=True),
    Column("customer_id", String(64), nullable=False),
    Column("valid_from", Date, nullable=False),
    Column("valid_to", Date),
    Column("lifecycle", String(16), nullable=False),
    Column("r_score", Integer),
    Column("f_score", Integer),
    Column("m_score", Integer),
    Column("member_tier", String(16)),
    Column("value_tier", String(16)),
    Column("low_value_acquisition", Boolean, nullable=False, default=False),
    Column("category_group", String(64)),
    Index("ix_segment_history_customer_id_valid_from", "customer_id", "valid_from"),
    # No index on valid_to: a day's closes then rewrite their rows in place (migration 0006).
    postgresql_with={"fillfactor": 85},
)

# The day's segment KPIs: the headline figures as columns, the whole table set as JSON.
segment_kpis = Table(
    "segment_kpis",
    metadata,
    Column("business_date", Date, primary_key=True),
    Column("customers", Integer, nullable=False),
    Column("paid_orders", BigInteger, nullable=False),
    Column("gmv_cents", BigInteger, nullable=False),
    Column("churned_customers", Integer, nullable=False),
    Column("churn_rate", Float, nullable=False),
    Column("repeat_customers", Integer, nullable=False),
    Column("repeat_rate", Float, nullable=False),
    Column("history_rows_closed", Integer, nullable=False),
    Column("history_rows_opened", Integer, nullable=False),
    Column("state_fingerprint", String(16), nullable=False),
    Column("figures", Text, nullable=False),
    Column("computed_at", DateTime, nullable=False),
)

# The customer shards' runs of stage 2 (scale.shards > 1): which shard folded its customers' orders
# for a business day, by which state definition. The reduce checks that every shard of the day ran;
# a single-transaction run clears the table, and does not trust its local snapshot while a row is
# left (a shard changed the state since).
segment_shard_runs = Table(
    "segment_shard_runs",
    metadata,
    Column("business_date", Date, primary_key=True),
    Column("shard_count", Integer, primary_key=True),
    Column("shard_index", Integer, primary_key=True),
    Column("state_fingerprint", String(16), nullable=False),
    Column("customers_recomputed", Integer, nullable=False),
    Column("orders_folded", Integer, nullable=False),
    Column("computed_at", DateTime, nullable=False),
)

# How many customers moved from one lifecycle to another on a business day ("none": no paid order).
segment_transitions = Table(
    "segment_transitions",
    metadata,
    Column("business_date", Date, primary_key=True),
    Column("from_lifecycle", String(16), primary_key=True),
    Column("to_lifecycle", String(16), primary_key=True),
    Column("customers", Integer, nullable=False),
)

# A customer's passage through a campaign: arm (treatment or holdout, decided once at entry),
# the variant chosen at entry, the waves fallen due, the exit. Holdout entries are kept exactly
# like treated ones, so that evaluation compares like with like.
campaign_entries = Table(
    "campaign_entries",
    metadata,
    Column("entry_id", Integer, primary_key=True, autoincrement=True),
    Column("campaign", String(64), nullable=False),
    Column("customer_id", String(64), nullable=False),
    Column("arm", String(16), nullable=False),
    Column("variant", String(32), nullable=False, default=""),
    Column("entered_on", Date, nullable=False),
    Column("last_wave", Integer, nullable=False, default=0),
    Column("next_wave_on", Date),
    Column("exited_on", Date),
    Column("exit_reason", String(32)),
    Column("planned_at", DateTime, nullable=False),
    UniqueConstraint("campaign", "customer_id", "entered_on"),
    Index("ix_campaign_entries_customer_id", "customer_id"),
    Index("ix_campaign_entries_campaign_exited_on", "campaign", "exited_on"),
)

# One wave of one entry that fell due on a business day, with what was decided for it: treated,
# held_out (holdout arm: nothing sent) or suppressed (reason). Both arms are decided alike, so
# the waves of a (campaign, wave, due_on) are the cohorts that evaluation compares.
campaign_waves = Table(
    "campaign_waves",
    metadata,
    Column("campaign", String(64), primary_key=True),
    Column("customer_id", String(64), primary_key=True),
    Column("entered_on", Date, primary_key=True),
    Column("wave", Integer, primary_key=True),
    Column("due_on", Date, nullable=False),
    Column("arm", String(16), nullable=False),
    Column("variant", String(32), nullable=False, default=""),
    Column("kind", String(16), nullable=False),
    Column("priority", Integer, nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("reason", String(32)),
    Column("channels", String(64), nullable=False, default=""),
    Column("counts_toward_cap", Boolean, nullable=False),
    Column("planned_at", DateTime, nullable=False),
    Index("ix_campaign_waves_customer_id_due_on", "customer_id", "due_on"),
    Index("ix_campaign_waves_due_on_outcome", "due_on", "outcome"),
)

# A coupon issued with a treated wave: a unique, unguessable code per (campaign, customer,
# entry, wave); redeemed when an incoming order carries the code.
coupons = Table(
    "coupons",
    metadata,
    Column("code", String(24), primary_key=True),
    Column("campaign", String(64), nullable=False),
    Column("customer_id", String(64), nullable=False),
    Column("entered_on", Date, nullable=False),
    Column("wave", Integer, nullable=False),
    Column("value_cents", BigInteger, nullable=False),
    Column("min_spend_cents", BigInteger, nullable=False),
    Column("issued_on", Date, nullable=False),
    Column("expires_on", Date, nullable=False),
    Column("redeemed_order_id", String(64)),
    Column("redeemed_on", Date),
    Column("created_at", DateTime, nullable=False),
    UniqueConstraint("campaign", "customer_id", "entered_on", "wave"),
    Index("ix_coupons_customer_id", "customer_id"),
)

# What the planner decided for one campaign on one business day (the task log's table), and
# whether its messages were rendered: status planned -> queued, or failed with the error.
campaign_days = Table(
    "campaign_days",
    metadata,
    Column("business_date", Date, primary_key=True),
    Column("campaign", String(64), primary_key=True),
    Column("priority", Integer, nullable=False),
    Column("entered", Integer, nullable=False),
    Column("due", Integer, nullable=False),
    Column("treated", Integer, nullable=False),
    Column("held_out", Integer, nullable=False),
    Column("suppressed", Integer, nullable=False),
    Column("exited", Integer, nullable=False),
    Column("messages_planned", Integer, nullable=False),
    Column("messages_queued", Integer, nullable=False, default=0),
    Column("status", String(16), nullable=False),
    Column("error", Text),
    Column("figures", Text, nullable=False),
    Column("planned_at", DateTime, nullable=False),
    Column("rendered_at", DateTime),
)

# One shard's planning candidates for a business day (huitouke.campaigns.daily.plan_shard), kept
# until the day's reduce step decides over all shards and stores the plan (then they are dropped).
# ``entries`` and ``waves`` are the candidate frames as Parquet; ``figures`` the small rest (JSON).
campaign_plan_shards = Table(
    "campaign_plan_shards",
    metadata,
    Column("business_date", Date, primary_key=True),
    Column("shard_count", Integer, primary_key=True),
    Column("shard", Integer, primary_key=True),
    Column("figures", Text, nullable=False),
    Column("entries", LargeBinary, nullable=False),
    Column("waves", LargeBinary, nullable=False),
    Column("staged_at", DateTime, nullable=False),
)


# A rendered message waiting to be delivered, or its delivery outcome. The unique key is the
# one place that guarantees at most one message per (campaign, entry, wave, channel): re-running
# a day queues nothing new.
def _bucket_of_row(context) -> int:
    """An outbox row's ``bucket`` when its insert leaves it out: the bucket of its customer."""
    from huitouke.shards import bucket_of

    return bucket_of(context.get_current_parameters()["customer_id"])


outbox = Table(
    "outbox",
    metadata,
    Column("message_id", Integer, primary_key=True, autoincrement=True),
    Column("campaign", String(64), nullable=False),
    Column("customer_id", String(64), nullable=False),
    Column("entered_on", Date, nullable=False),
    Column("wave", Integer, nullable=False),
    Column("variant", String(32), nullable=False, default=""),
    Column("channel", String(16), nullable=False),
    Column("template", String(255), nullable=False),
    Column("business_date", Date, nullable=False),
    Column("status", String(16), nullable=False),
    Column("recipient", String(255)),
    Column("subject", String(255)),
    Column("body", Text),
    Column("html", Text),
    Column("sms_segments", Integer),
    Column("coupon_code", String(24)),
    Column("attempts", Integer, nullable=False, default=0),
    Column("last_error", Text),
    Column("provider_message_id", String(128)),
    Column("created_at", DateTime, nullable=False),
    Column("sent_at", DateTime),
    # Delivery (huitouke.deliver): which provider took the message; the lease of the sender that
    # claimed it (a row `sending` past its lease is resolved by a status query, never resent
    # blindly); when a retryable failure may be tried again; what the provider billed; the
    # delivery receipt; a call's feedback.
    Column("provider", String(32)),
    Column("out_id", String(40)),  # huitouke's id for the message at its provider (deliver.states.out_id_of)
    Column("claimed_by", String(128)),
    Column("claimed_at", DateTime),  # the latest claim: status queries search the provider from it
    Column("lease_until", DateTime),
    Column("next_attempt_at", DateTime),
    Column("billed_segments", Integer),
    Column("receipt", String(16)),  # delivered | undelivered
    Column("receipt_code", String(64)),
    Column("receipt_at", DateTime),
    Column("feedback", Text),
    # An SMS sent through a provider that delivers only approved templates (Aliyun): the approved
    # template's code and the parameters that fill it (a JSON object of texts), rendered with the
    # body (playbook approved_sms_templates).
    Column("template_code", String(64)),
    Column("template_params", Text),
    # The customer's bucket (huitouke.shards.bucket_of): a shard's sender claims the rows with
    # `bucket % count = index` (issue 16). Filled by rendering; any other insert gets it from the
    # customer id (the Python default).
    Column("bucket", SmallInteger, nullable=False, default=_bucket_of_row),
    UniqueConstraint("campaign", "customer_id", "entered_on", "wave", "channel"),
    Index("ix_outbox_business_date_status", "business_date", "status"),
    Index("ix_outbox_status_channel_message_id", "status", "channel", "message_id"),  # claims, in order
    Index(
        "ix_outbox_status_channel_bucket_message_id", "status", "channel", "bucket", "message_id"
    ),  # shards' claims
    Index("ix_outbox_out_id", "out_id"),
    Index("ix_outbox_recipient", "recipient"),  # a reply's sender back to its customers
    Index("ix_outbox_provider_message_id", "provider_message_id"),  # a receipt back to its row
    Index("ix_outbox_customer_id_status", "customer_id", "status"),  # caps: sent to these customers
)

# A customer's "stop" on a channel (sms, email, call, or all), from wherever it came: a reply
# (T, 退订, STOP...), an e-mail unsubscribe link, a provider's refusal (Twilio 21610), a call, an
# imported list. Kept apart from `customers`' flags, which intake rewrites from the shop's data:
# an opt-out recorded here is never undone by a later intake. Checked at planning and at send time.
opt_outs = Table(
    "opt_outs",
    metadata,
    Column("customer_id", String(64), primary_key=True),
    Column("channel", String(8), primary_key=True),
    Column("source", String(16), nullable=False),  # reply, link, provider, call, import
    Column("received_at", DateTime, nullable=False),
    Column("message_id", Integer),  # the outbox message it answered, when known
    Column("recorded_at", DateTime, nullable=False),
)

# Where each provider's receipt and reply feeds were read up to (their cursors).
delivery_cursors = Table(
    "delivery_cursors",
    metadata,
    Column("provider", String(32), primary_key=True),
    Column("feed", String(16), primary_key=True),  # receipts, replies
    Column("cursor", Text),
    Column("updated_at", DateTime, nullable=False),
)

# What this store is, marked by the code that created it (name -> value). `purpose = demo`: the
# demo's store, the only one that accepts a run with a simulated clock (huitouke.clock).
store_marks = Table(
    "store_marks",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("value", String(255), nullable=False),
    Column("marked_at", DateTime, nullable=False),
)

# A campaign whose sending an operator paused (`huitouke deliver pause --campaign X`): its queued
# messages are not claimed, they stay queued until `huitouke deliver resume` (or expire as usual).
campaign_pauses = Table(
    "campaign_pauses",
    metadata,
    Column("campaign", String(64), primary_key=True),
    Column("paused_at", DateTime, nullable=False),
    Column("note", String(255)),
)

# A record Aliyun SMS pushed to huitouke's report relay (huitouke.deliver.aliyun_relay): a delivery
# receipt (feed sms_report) or an inbound message (sms_up), kept as pushed (JSON) until the Aliyun
# provider pulls it by cursor (record_id). `record_key` (a hash of the record's natural key) makes
# Aliyun's retries of a push store nothing new.
aliyun_push_records = Table(
    "aliyun_push_records",
    metadata,
    Column("record_id", Integer, primary_key=True, autoincrement=True),
    Column("feed", String(16), nullable=False),  # sms_report, sms_up
    Column("record_key", String(64), nullable=False),
    Column("received_at", DateTime, nullable=False),
    Column("record", Text, nullable=False),
    UniqueConstraint("feed", "record_key"),
    Index("ix_aliyun_push_records_feed_record_id", "feed", "record_id"),  # pulls, in order
    Index("ix_aliyun_push_records_received_at", "received_at"),  # pruning
)

# One campaign wave's response against its holdout for one window and view, recorded on the
# day the window matured (huitouke.evaluate.waves). The headline figures are columns; the whole
# comparison row is in `figures` (JSON). Stored once per key: a re-run of the day adds nothing.
evaluations = Table(
    "evaluations",
    metadata,
    Column("campaign", String(64), primary_key=True),
    Column("wave", Integer, primary_key=True),
    Column("due_on", Date, primary_key=True),
    Column("window_days", Integer, primary_key=True),
    Column("view", String(8), primary_key=True),  # itt: everyone assigned; sent: messages sent
    Column("evaluated_on", Date, nullable=False),
    Column("primary_window", Boolean, nullable=False),
    Column("send_time", DateTime, nullable=False),
    Column("customers", Integer, nullable=False),
    Column("control_customers", Integer, nullable=False),
    Column("responders", Integer, nullable=False),
    Column("control_responders", Integer, nullable=False),
    Column("response_rate", Float),
    Column("control_rate", Float),
    Column("lift", Float),
    Column("lift_low", Float),
    Column("lift_high", Float),
    Column("p_value", Float),
    Column("incremental_revenue_cents", BigInteger),
    Column("cost_cents", BigInteger),
    Column("incremental_roi", Float),
    Column("naive_roi", Float),
    Column("verdict", String(16), nullable=False),
    Column("figures", Text, nullable=False),
    Column("computed_at", DateTime, nullable=False),
    Index("ix_evaluations_evaluated_on", "evaluated_on"),
)

# What goes with an evaluated wave, as JSON tables: per segment / channel / variant
# ("breakdowns", per window), what responders bought ("categories", per window), the repurchase
# curve ("curve", window_days 0, replaced as more days mature).
evaluation_details = Table(
    "evaluation_details",
    metadata,
    Column("campaign", String(64), primary_key=True),
    Column("wave", Integer, primary_key=True),
    Column("due_on", Date, primary_key=True),
    Column("window_days", Integer, primary_key=True),
    Column("kind", String(16), primary_key=True),
    Column("evaluated_on", Date, nullable=False),
    Column("figures", Text, nullable=False),
)

# A multi-wave campaign's response over its sequence so far: all entries with a first wave,
# response from wave 1 through wave `through_wave` plus the primary window, on a given day.
evaluation_sequences = Table(
    "evaluation_sequences",
    metadata,
    Column("campaign", String(64), primary_key=True),
    Column("through_wave", Integer, primary_key=True),
    Column("window_days", Integer, primary_key=True),
    Column("view", String(8), primary_key=True),
    Column("evaluated_on", Date, primary_key=True),
    Column("customers", Integer, nullable=False),
    Column("control_customers", Integer, nullable=False),
    Column("lift", Float),
    Column("lift_low", Float),
    Column("lift_high", Float),
    Column("verdict", String(16), nullable=False),
    Column("figures", Text, nullable=False),
)
