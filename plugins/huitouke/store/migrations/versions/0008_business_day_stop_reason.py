"""Why a business day's latest attempt stopped before completing (``business_days.stop_reason``):
a day stopped by the freshness guard stays open, and the next day, waiting for it, says why.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("business_days") as batch:
        batch.add_column(sa.Column("stop_reason", sa.Text()))


def downgrade() -> None:
    with op.batch_alter_table("business_days") as batch:
        batch.drop_column("stop_reason")
