"""The Aliyun report relay's store: ``aliyun_push_records``, the receipts (``SmsReport``) and
inbound messages (``SmsUp``) Aliyun pushes, kept until the Aliyun provider pulls them by cursor.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "aliyun_push_records",
        sa.Column("record_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("feed", sa.String(16), nullable=False),
        sa.Column("record_key", sa.String(64), nullable=False),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.Column("record", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("record_id", name="pk_aliyun_push_records"),
        sa.UniqueConstraint("feed", "record_key", name="uq_aliyun_push_records_feed_record_key"),
    )
    op.create_index("ix_aliyun_push_records_feed_record_id", "aliyun_push_records", ["feed", "record_id"])
    op.create_index("ix_aliyun_push_records_received_at", "aliyun_push_records", ["received_at"])


def downgrade() -> None:
    op.drop_index("ix_aliyun_push_records_received_at", table_name="aliyun_push_records")
    op.drop_index("ix_aliyun_push_records_feed_record_id", table_name="aliyun_push_records")
    op.drop_table("aliyun_push_records")
