"""``campaign_plan_shards``: one shard's planning candidates for a business day, staged until the
day's reduce step decides over all shards and stores the plan (issue 16: the planning of a day
split into customer shards, one mapped task per shard).

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "campaign_plan_shards",
        sa.Column("business_date", sa.Date(), nullable=False),
        sa.Column("shard_count", sa.Integer(), nullable=False),
        sa.Column("shard", sa.Integer(), nullable=False),
        sa.Column("figures", sa.Text(), nullable=False),
        sa.Column("entries", sa.LargeBinary(), nullable=False),
        sa.Column("waves", sa.LargeBinary(), nullable=False),
        sa.Column("staged_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("business_date", "shard_count", "shard", name="pk_campaign_plan_shards"),
    )


def downgrade() -> None:
    op.drop_table("campaign_plan_shards")
