"""Stage 2, additive daily fold: ``orders.folded_as_paid`` (what the state counted of an order that
waits to be folded again) and ``customer_spend`` (paid spend per customer and category group).

A store migrated from 0004 has no spend rows yet: the state fingerprint of this version differs
from the one its last run stored, so the next ``update_segments`` rebuilds the state (and the spend
rows) from every order, as it does when the category groups change.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("orders", sa.Column("folded_as_paid", sa.Boolean()))
    op.create_table(
        "customer_spend",
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("category_group", sa.String(64), nullable=False),
        sa.Column("spend_cents", sa.BigInteger(), nullable=False),
        sa.Column("paid_lines", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("customer_id", "category_group", name="pk_customer_spend"),
        sqlite_with_rowid=False,  # read by customer: the primary key is the table
    )


def downgrade() -> None:
    op.drop_table("customer_spend")
    with op.batch_alter_table("orders") as batch:
        batch.drop_column("folded_as_paid")
