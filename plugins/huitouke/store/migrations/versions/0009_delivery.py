"""Delivery: the outbox's sending columns (provider, lease, next attempt, billing, receipt, call
feedback), the opt-outs recorded by delivery, and the providers' feed cursors.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_OUTBOX_COLUMNS = (
    ("provider", sa.String(32)),
    ("out_id", sa.String(40)),
    ("claimed_by", sa.String(128)),
    ("claimed_at", sa.DateTime()),
    ("lease_until", sa.DateTime()),
    ("next_attempt_at", sa.DateTime()),
    ("billed_segments", sa.Integer()),
    ("receipt", sa.String(16)),
    ("receipt_code", sa.String(64)),
    ("receipt_at", sa.DateTime()),
    ("feedback", sa.Text()),
)


def upgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        for name, type_ in _OUTBOX_COLUMNS:
            batch.add_column(sa.Column(name, type_))
        batch.create_index("ix_outbox_status_channel", ["status", "channel"])
        batch.create_index("ix_outbox_out_id", ["out_id"])
        batch.create_index("ix_outbox_recipient", ["recipient"])
    op.create_table(
        "opt_outs",
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("channel", sa.String(8), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.Column("message_id", sa.Integer()),
        sa.Column("recorded_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("customer_id", "channel", name="pk_opt_outs"),
    )
    op.create_table(
        "delivery_cursors",
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("feed", sa.String(16), nullable=False),
        sa.Column("cursor", sa.Text()),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("provider", "feed", name="pk_delivery_cursors"),
    )


def downgrade() -> None:
    op.drop_table("delivery_cursors")
    op.drop_table("opt_outs")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_index("ix_outbox_recipient")
        batch.drop_index("ix_outbox_out_id")
        batch.drop_index("ix_outbox_status_channel")
        for name, _ in reversed(_OUTBOX_COLUMNS):
            batch.drop_column(name)
