"""``store_marks``: what a CRM store is, set by the code that created it. The demo marks the store
it creates (``purpose = demo``); only a store so marked accepts a run with a simulated clock
(huitouke.clock), so a real deployment cannot switch it on by accident.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "store_marks",
        sa.Column("name", sa.String(32), nullable=False),
        sa.Column("value", sa.String(255), nullable=False),
        sa.Column("marked_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_store_marks"),
    )


def downgrade() -> None:
    op.drop_table("store_marks")
