"""The claim's index: ``(status, channel, message_id)`` instead of ``(status, channel)``.

A claim takes the first queued rows of its channels by message id. PostgreSQL keeps the entries
of equal keys in heap order, so with ``(status, channel)`` it read and sorted every queued row of
the channel for each claim of 2,000 (a 100,000-message day: the first claims sorted 100,000
rows). With the message id in the index, the scan stops after the rows it takes. SQLite keeps
equal keys in rowid (message id) order already; the index is the same size there. The
statements that looked up by status and channel use the new index as they did the old one.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06
"""

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_outbox_status_channel_message_id", "outbox", ["status", "channel", "message_id"])
    op.drop_index("ix_outbox_status_channel", table_name="outbox")


def downgrade() -> None:
    op.create_index("ix_outbox_status_channel", "outbox", ["status", "channel"])
    op.drop_index("ix_outbox_status_channel_message_id", table_name="outbox")
