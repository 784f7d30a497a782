"""An index on ``outbox.provider_message_id``: delivery receipts find their row by the provider's
id (Twilio's SID, the webhook's id, Aliyun's BizId with the recipient). Without it every receipt
was a scan of the sent rows: 2,000 receipts a pull against 100,000 sent rows took minutes.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06
"""

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_outbox_provider_message_id", "outbox", ["provider_message_id"])


def downgrade() -> None:
    op.drop_index("ix_outbox_provider_message_id", table_name="outbox")
