"""Stage 2 in customer shards: ``segment_shard_runs``, which shard folded its customers' orders for
a business day and by which state definition (the reduce checks every shard ran; a single-run day
clears it and trusts its local snapshot only when it is empty).

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "segment_shard_runs",
        sa.Column("business_date", sa.Date(), nullable=False),
        sa.Column("shard_count", sa.Integer(), nullable=False),
        sa.Column("shard_index", sa.Integer(), nullable=False),
        sa.Column("state_fingerprint", sa.String(16), nullable=False),
        sa.Column("customers_recomputed", sa.Integer(), nullable=False),
        sa.Column("orders_folded", sa.Integer(), nullable=False),
        sa.Column("computed_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("business_date", "shard_count", "shard_index", name="pk_segment_shard_runs"),
    )


def downgrade() -> None:
    op.drop_table("segment_shard_runs")
