"""Partial refunds: ``orders.refunded_cents``, the part of an order's amount refunded so far (0:
none). A paid order counts ``amount_cents - refunded_cents`` as its customer's spend; a later row
with a larger refund moves it forward as a status move does (huitouke.intake.load).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain ADD COLUMN (SQLite too: a constant default needs no copy of the table).
    op.add_column("orders", sa.Column("refunded_cents", sa.BigInteger(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("orders") as batch:
        batch.drop_column("refunded_cents")
