"""``campaign_pauses``: campaigns whose sending an operator paused (``huitouke deliver pause``).
A paused campaign's queued messages are not claimed: they stay queued until it is resumed (or
they expire as usual); the send-time checks read this table (huitouke.deliver.checks).

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "campaign_pauses",
        sa.Column("campaign", sa.String(64), nullable=False),
        sa.Column("paused_at", sa.DateTime(), nullable=False),
        sa.Column("note", sa.String(255), nullable=True),
        sa.PrimaryKeyConstraint("campaign", name="pk_campaign_pauses"),
    )


def downgrade() -> None:
    op.drop_table("campaign_pauses")
