"""The initial CRM store: customers, orders and lines, quarantine, intake runs, customer state,
segment history, campaign entries, outbox, evaluations.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "customers",
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(128)),
        sa.Column("phone", sa.String(32)),
        sa.Column("email", sa.String(255)),
        sa.Column("birthday", sa.Date()),
        sa.Column("sms_opt_out", sa.Boolean(), nullable=False),
        sa.Column("email_opt_out", sa.Boolean(), nullable=False),
        sa.Column("first_seen_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("customer_id", name="pk_customers"),
    )
    op.create_table(
        "orders",
        sa.Column("order_id", sa.String(64), nullable=False),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("paid_at", sa.DateTime()),
        sa.Column("business_date", sa.Date()),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("acquisition_source", sa.String(32), nullable=False),
        sa.Column("coupon_code", sa.String(64)),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("source_updated_at", sa.DateTime()),
        sa.Column("loaded_at", sa.DateTime(), nullable=False),
        sa.Column("status_changed_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("order_id", name="pk_orders"),
    )
    op.create_index("ix_orders_customer_id", "orders", ["customer_id"])
    op.create_index("ix_orders_business_date", "orders", ["business_date"])
    op.create_table(
        "order_lines",
        sa.Column("order_id", sa.String(64), nullable=False),
        sa.Column("line_no", sa.Integer(), nullable=False),
        sa.Column("sku", sa.String(64)),
        sa.Column("product_name", sa.String(255)),
        sa.Column("category", sa.String(64), nullable=False),
        sa.Column("quantity", sa.Integer()),
        sa.Column("amount_cents", sa.BigInteger()),
        sa.ForeignKeyConstraint(
            ["order_id"], ["orders.order_id"], name="fk_order_lines_order_id_orders", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("order_id", "line_no", name="pk_order_lines"),
    )
    op.create_index("ix_order_lines_category", "order_lines", ["category"])
    op.create_table(
        "quarantine",
        sa.Column("quarantine_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("row_key", sa.String(64), nullable=False),
        sa.Column("business_date", sa.Date(), nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("source_ref", sa.String(255)),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("order_id", sa.String(64)),
        sa.Column("raw", sa.Text(), nullable=False),
        sa.Column("quarantined_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("quarantine_id", name="pk_quarantine"),
        sa.UniqueConstraint("row_key", name="uq_quarantine_row_key"),
    )
    op.create_index("ix_quarantine_business_date", "quarantine", ["business_date"])
    op.create_index("ix_quarantine_reason", "quarantine", ["reason"])
    op.create_table(
        "intake_runs",
        sa.Column("business_date", sa.Date(), nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("last_business_date", sa.Date(), nullable=False),
        sa.Column("rows_read", sa.Integer(), nullable=False),
        sa.Column("orders_read", sa.Integer(), nullable=False),
        sa.Column("inserted", sa.Integer(), nullable=False),
        sa.Column("updated", sa.Integer(), nullable=False),
        sa.Column("unchanged", sa.Integer(), nullable=False),
        sa.Column("quarantined", sa.Integer(), nullable=False),
        sa.Column("quarantined_by_reason", sa.Text(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("business_date", "source", name="pk_intake_runs"),
    )
    op.create_table(
        "customer_state",
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("first_paid_at", sa.DateTime(), nullable=False),
        sa.Column("last_paid_at", sa.DateTime(), nullable=False),
        sa.Column("paid_orders", sa.Integer(), nullable=False),
        sa.Column("total_cents", sa.BigInteger(), nullable=False),
        sa.Column("main_category_group", sa.String(64)),
        sa.Column("acquisition_source", sa.String(32)),
        sa.Column("as_of", sa.Date(), nullable=False),
        sa.PrimaryKeyConstraint("customer_id", name="pk_customer_state"),
    )
    op.create_table(
        "segment_history",
        sa.Column("segment_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("valid_from", sa.Date(), nullable=False),
        sa.Column("valid_to", sa.Date()),
        sa.Column("lifecycle", sa.String(16), nullable=False),
        sa.Column("r_score", sa.Integer()),
        sa.Column("f_score", sa.Integer()),
        sa.Column("m_score", sa.Integer()),
        sa.Column("member_tier", sa.String(16)),
        sa.Column("value_tier", sa.String(16)),
        sa.Column("low_value_acquisition", sa.Boolean(), nullable=False),
        sa.Column("category_group", sa.String(64)),
        sa.PrimaryKeyConstraint("segment_id", name="pk_segment_history"),
    )
    op.create_index(
        "ix_segment_history_customer_id_valid_from", "segment_history", ["customer_id", "valid_from"]
    )
    op.create_table(
        "campaign_entries",
        sa.Column("entry_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("campaign", sa.String(64), nullable=False),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("arm", sa.String(16), nullable=False),
        sa.Column("entered_on", sa.Date(), nullable=False),
        sa.Column("last_wave", sa.Integer(), nullable=False),
        sa.Column("next_wave_on", sa.Date()),
        sa.Column("exited_on", sa.Date()),
        sa.Column("exit_reason", sa.String(32)),
        sa.PrimaryKeyConstraint("entry_id", name="pk_campaign_entries"),
        sa.UniqueConstraint(
            "campaign",
            "customer_id",
            "entered_on",
            name="uq_campaign_entries_campaign_customer_id_entered_on",
        ),
    )
    op.create_index("ix_campaign_entries_customer_id", "campaign_entries", ["customer_id"])
    op.create_table(
        "outbox",
        sa.Column("message_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("campaign", sa.String(64), nullable=False),
        sa.Column("wave", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("business_date", sa.Date(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("recipient", sa.String(255)),
        sa.Column("subject", sa.String(255)),
        sa.Column("body", sa.Text()),
        sa.Column("sms_segments", sa.Integer()),
        sa.Column("coupon_code", sa.String(64)),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text()),
        sa.Column("provider_message_id", sa.String(128)),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("sent_at", sa.DateTime()),
        sa.PrimaryKeyConstraint("message_id", name="pk_outbox"),
        sa.UniqueConstraint(
            "campaign", "wave", "customer_id", "channel", name="uq_outbox_campaign_wave_customer_id_channel"
        ),
    )
    op.create_index("ix_outbox_business_date", "outbox", ["business_date"])
    op.create_table(
        "evaluations",
        sa.Column("evaluation_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("campaign", sa.String(64), nullable=False),
        sa.Column("wave", sa.Integer(), nullable=False),
        sa.Column("window_days", sa.Integer(), nullable=False),
        sa.Column("arm", sa.String(16), nullable=False),
        sa.Column("evaluated_on", sa.Date(), nullable=False),
        sa.Column("customers", sa.Integer(), nullable=False),
        sa.Column("responders", sa.Integer(), nullable=False),
        sa.Column("revenue_cents", sa.BigInteger(), nullable=False),
        sa.Column("figures", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("evaluation_id", name="pk_evaluations"),
        sa.UniqueConstraint(
            "campaign", "wave", "window_days", "arm", name="uq_evaluations_campaign_wave_window_days_arm"
        ),
    )


def downgrade() -> None:
    for table in (
        "evaluations",
        "outbox",
        "campaign_entries",
        "segment_history",
        "customer_state",
        "intake_runs",
        "quarantine",
        "order_lines",
        "orders",
        "customers",
    ):
        op.drop_table(table)
