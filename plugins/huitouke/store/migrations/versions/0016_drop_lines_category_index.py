"""Drop ``ix_order_lines_category``: no query reads order lines by category (they are read by order
id, through the primary key), and every line loaded paid for its upkeep (a first load of a million
lines: about 10% of the lines' insert).

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07
"""

from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_order_lines_category", table_name="order_lines")


def downgrade() -> None:
    op.create_index("ix_order_lines_category", "order_lines", ["category"])
