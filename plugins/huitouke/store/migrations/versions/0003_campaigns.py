"""Stages 3 and 4, campaigns: campaign_entries and outbox reshaped, campaign_waves, coupons,
campaign_days, and a partial index on the orders stage 2 has still to fold in.

campaign_entries and outbox were placeholders that no earlier revision's code wrote; they are
recreated with their real shape.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

UNAPPLIED = sa.text("state_applied_at IS NULL")


def upgrade() -> None:
    op.create_index(
        "ix_orders_unapplied_customer_id",
        "orders",
        ["customer_id"],
        sqlite_where=UNAPPLIED,
        postgresql_where=UNAPPLIED,
    )
    op.drop_index("ix_campaign_entries_customer_id", table_name="campaign_entries")
    op.drop_table("campaign_entries")
    op.create_table(
        "campaign_entries",
        sa.Column("entry_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("campaign", sa.String(64), nullable=False),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("arm", sa.String(16), nullable=False),
        sa.Column("variant", sa.String(32), nullable=False),
        sa.Column("entered_on", sa.Date(), nullable=False),
        sa.Column("last_wave", sa.Integer(), nullable=False),
        sa.Column("next_wave_on", sa.Date()),
        sa.Column("exited_on", sa.Date()),
        sa.Column("exit_reason", sa.String(32)),
        sa.Column("planned_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("entry_id", name="pk_campaign_entries"),
        sa.UniqueConstraint(
            "campaign",
            "customer_id",
            "entered_on",
            name="uq_campaign_entries_campaign_customer_id_entered_on",
        ),
    )
    op.create_index("ix_campaign_entries_customer_id", "campaign_entries", ["customer_id"])
    op.create_index("ix_campaign_entries_campaign_exited_on", "campaign_entries", ["campaign", "exited_on"])
    op.create_table(
        "campaign_waves",
        sa.Column("campaign", sa.String(64), nullable=False),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("entered_on", sa.Date(), nullable=False),
        sa.Column("wave", sa.Integer(), nullable=False),
        sa.Column("due_on", sa.Date(), nullable=False),
        sa.Column("arm", sa.String(16), nullable=False),
        sa.Column("variant", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(32)),
        sa.Column("channels", sa.String(64), nullable=False),
        sa.Column("counts_toward_cap", sa.Boolean(), nullable=False),
        sa.Column("planned_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("campaign", "customer_id", "entered_on", "wave", name="pk_campaign_waves"),
    )
    op.create_index("ix_campaign_waves_customer_id_due_on", "campaign_waves", ["customer_id", "due_on"])
    op.create_index("ix_campaign_waves_due_on_outcome", "campaign_waves", ["due_on", "outcome"])
    op.create_table(
        "coupons",
        sa.Column("code", sa.String(24), nullable=False),
        sa.Column("campaign", sa.String(64), nullable=False),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("entered_on", sa.Date(), nullable=False),
        sa.Column("wave", sa.Integer(), nullable=False),
        sa.Column("value_cents", sa.BigInteger(), nullable=False),
        sa.Column("min_spend_cents", sa.BigInteger(), nullable=False),
        sa.Column("issued_on", sa.Date(), nullable=False),
        sa.Column("expires_on", sa.Date(), nullable=False),
        sa.Column("redeemed_order_id", sa.String(64)),
        sa.Column("redeemed_on", sa.Date()),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("code", name="pk_coupons"),
        sa.UniqueConstraint(
            "campaign",
            "customer_id",
            "entered_on",
            "wave",
            name="uq_coupons_campaign_customer_id_entered_on_wave",
        ),
    )
    op.create_index("ix_coupons_customer_id", "coupons", ["customer_id"])
    op.create_table(
        "campaign_days",
        sa.Column("business_date", sa.Date(), nullable=False),
        sa.Column("campaign", sa.String(64), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("entered", sa.Integer(), nullable=False),
        sa.Column("due", sa.Integer(), nullable=False),
        sa.Column("treated", sa.Integer(), nullable=False),
        sa.Column("held_out", sa.Integer(), nullable=False),
        sa.Column("suppressed", sa.Integer(), nullable=False),
        sa.Column("exited", sa.Integer(), nullable=False),
        sa.Column("messages_planned", sa.Integer(), nullable=False),
        sa.Column("messages_queued", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.Text()),
        sa.Column("figures", sa.Text(), nullable=False),
        sa.Column("planned_at", sa.DateTime(), nullable=False),
        sa.Column("rendered_at", sa.DateTime()),
        sa.PrimaryKeyConstraint("business_date", "campaign", name="pk_campaign_days"),
    )
    op.drop_index("ix_outbox_business_date", table_name="outbox")
    op.drop_table("outbox")
    _create_outbox()


def _create_outbox() -> None:
    op.create_table(
        "outbox",
        sa.Column("message_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("campaign", sa.String(64), nullable=False),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("entered_on", sa.Date(), nullable=False),
        sa.Column("wave", sa.Integer(), nullable=False),
        sa.Column("variant", sa.String(32), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("template", sa.String(255), nullable=False),
        sa.Column("business_date", sa.Date(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("recipient", sa.String(255)),
        sa.Column("subject", sa.String(255)),
        sa.Column("body", sa.Text()),
        sa.Column("html", sa.Text()),
        sa.Column("sms_segments", sa.Integer()),
        sa.Column("coupon_code", sa.String(24)),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text()),
        sa.Column("provider_message_id", sa.String(128)),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("sent_at", sa.DateTime()),
        sa.PrimaryKeyConstraint("message_id", name="pk_outbox"),
        sa.UniqueConstraint(
            "campaign",
            "customer_id",
            "entered_on",
            "wave",
            "channel",
            name="uq_outbox_campaign_customer_id_entered_on_wave_channel",
        ),
    )
    op.create_index("ix_outbox_business_date_status", "outbox", ["business_date", "status"])


def downgrade() -> None:
    op.drop_index("ix_outbox_business_date_status", table_name="outbox")
    op.drop_table("outbox")
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
    op.drop_table("campaign_days")
    op.drop_index("ix_coupons_customer_id", table_name="coupons")
    op.drop_table("coupons")
    op.drop_index("ix_campaign_waves_due_on_outcome", table_name="campaign_waves")
    op.drop_index("ix_campaign_waves_customer_id_due_on", table_name="campaign_waves")
    op.drop_table("campaign_waves")
    op.drop_index("ix_campaign_entries_campaign_exited_on", table_name="campaign_entries")
    op.drop_index("ix_campaign_entries_customer_id", table_name="campaign_entries")
    op.drop_table("campaign_entries")
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
    op.drop_index("ix_orders_unapplied_customer_id", table_name="orders")
