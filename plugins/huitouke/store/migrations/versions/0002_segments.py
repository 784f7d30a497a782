"""Stage 2, segments: customer_state reshaped (business dates, AOV), orders.state_applied_at,
segment_kpis and segment_transitions, an index on open history rows.

customer_state was not written by any earlier revision; it is derived data and is recreated.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_table("customer_state")
    op.create_table(
        "customer_state",
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("first_paid_at", sa.DateTime(), nullable=False),
        sa.Column("last_paid_at", sa.DateTime(), nullable=False),
        sa.Column("first_business_date", sa.Date(), nullable=False),
        sa.Column("last_business_date", sa.Date(), nullable=False),
        sa.Column("paid_orders", sa.Integer(), nullable=False),
        sa.Column("total_cents", sa.BigInteger(), nullable=False),
        sa.Column("aov_cents", sa.BigInteger(), nullable=False),
        sa.Column("main_category_group", sa.String(64)),
        sa.Column("acquisition_source", sa.String(32)),
        sa.PrimaryKeyConstraint("customer_id", name="pk_customer_state"),
    )
    with op.batch_alter_table("orders") as batch:
        batch.add_column(sa.Column("state_applied_at", sa.DateTime()))
        batch.create_index("ix_orders_state_applied_at", ["state_applied_at"])
    op.create_index("ix_segment_history_valid_to", "segment_history", ["valid_to"])
    op.create_table(
        "segment_kpis",
        sa.Column("business_date", sa.Date(), nullable=False),
        sa.Column("customers", sa.Integer(), nullable=False),
        sa.Column("paid_orders", sa.BigInteger(), nullable=False),
        sa.Column("gmv_cents", sa.BigInteger(), nullable=False),
        sa.Column("churned_customers", sa.Integer(), nullable=False),
        sa.Column("churn_rate", sa.Float(), nullable=False),
        sa.Column("repeat_customers", sa.Integer(), nullable=False),
        sa.Column("repeat_rate", sa.Float(), nullable=False),
        sa.Column("history_rows_closed", sa.Integer(), nullable=False),
        sa.Column("history_rows_opened", sa.Integer(), nullable=False),
        sa.Column("state_fingerprint", sa.String(16), nullable=False),
        sa.Column("figures", sa.Text(), nullable=False),
        sa.Column("computed_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("business_date", name="pk_segment_kpis"),
    )
    op.create_table(
        "segment_transitions",
        sa.Column("business_date", sa.Date(), nullable=False),
        sa.Column("from_lifecycle", sa.String(16), nullable=False),
        sa.Column("to_lifecycle", sa.String(16), nullable=False),
        sa.Column("customers", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint(
            "business_date", "from_lifecycle", "to_lifecycle", name="pk_segment_transitions"
        ),
    )


def downgrade() -> None:
    op.drop_table("segment_transitions")
    op.drop_table("segment_kpis")
    op.drop_index("ix_segment_history_valid_to", table_name="segment_history")
    with op.batch_alter_table("orders") as batch:
        batch.drop_index("ix_orders_state_applied_at")
        batch.drop_column("state_applied_at")
    op.drop_table("customer_state")
    op.create_table(
        "customer_state",
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("first_paid_at", sa.DateTime(), nullable=False),
        sa.Column("last_paid_at", sa.DateTime(), nullable=False),
        sa.Column("paid_orders", sa.Integer(), nullable=False),
        sa.Column("total_cents", sa.BigInteger(), nullable=False),
        sa.Column("main_category_group", sa.String(64)),
        sa.Column("acquisition_source", sa.String(32)),
        sa.Column("as_of", sa.Date(), nullable=False),
        sa.PrimaryKeyConstraint("customer_id", name="pk_customer_state"),
    )
