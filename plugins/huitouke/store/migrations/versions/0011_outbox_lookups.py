"""Two outbox indexes delivery reads by, each a scan of the sent rows before:

- ``provider_message_id``: delivery receipts find their row by the provider's id (Twilio's SID,
  the webhook's id, Aliyun's BizId with the recipient); 2,000 receipts a pull against 100,000
  sent rows took minutes;
- ``(customer_id, status)``: each claim reads the messages already sent to its customers (the
  contact caps); the claims of a 100,000-message day grew from 30 to 130 ms of 400 rows.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06
"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_outbox_provider_message_id", "outbox", ["provider_message_id"])
    op.create_index("ix_outbox_customer_id_status", "outbox", ["customer_id", "status"])


def downgrade() -> None:
    op.drop_index("ix_outbox_customer_id_status", table_name="outbox")
    op.drop_index("ix_outbox_provider_message_id", table_name="outbox")
