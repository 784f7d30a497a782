"""Stage 6, evaluation: evaluations reshaped (one row per campaign wave, window and view),
evaluation_details and evaluation_sequences. Also drops ix_orders_state_applied_at: stage 2 finds
unfolded orders through the partial index of 0003, and the full index only made every stamp of
state_applied_at dearer (10M index entries rewritten on a first run).

evaluations was a placeholder that no earlier revision's code wrote; it is recreated.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_orders_state_applied_at", table_name="orders")
    op.drop_table("evaluations")
    op.create_table(
        "evaluations",
        sa.Column("campaign", sa.String(64), nullable=False),
        sa.Column("wave", sa.Integer(), nullable=False),
        sa.Column("due_on", sa.Date(), nullable=False),
        sa.Column("window_days", sa.Integer(), nullable=False),
        sa.Column("view", sa.String(8), nullable=False),
        sa.Column("evaluated_on", sa.Date(), nullable=False),
        sa.Column("primary_window", sa.Boolean(), nullable=False),
        sa.Column("send_time", sa.DateTime(), nullable=False),
        sa.Column("customers", sa.Integer(), nullable=False),
        sa.Column("control_customers", sa.Integer(), nullable=False),
        sa.Column("responders", sa.Integer(), nullable=False),
        sa.Column("control_responders", sa.Integer(), nullable=False),
        sa.Column("response_rate", sa.Float()),
        sa.Column("control_rate", sa.Float()),
        sa.Column("lift", sa.Float()),
        sa.Column("lift_low", sa.Float()),
        sa.Column("lift_high", sa.Float()),
        sa.Column("p_value", sa.Float()),
        sa.Column("incremental_revenue_cents", sa.BigInteger()),
        sa.Column("cost_cents", sa.BigInteger()),
        sa.Column("incremental_roi", sa.Float()),
        sa.Column("naive_roi", sa.Float()),
        sa.Column("verdict", sa.String(16), nullable=False),
        sa.Column("figures", sa.Text(), nullable=False),
        sa.Column("computed_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("campaign", "wave", "due_on", "window_days", "view", name="pk_evaluations"),
    )
    op.create_index("ix_evaluations_evaluated_on", "evaluations", ["evaluated_on"])
    op.create_table(
        "evaluation_details",
        sa.Column("campaign", sa.String(64), nullable=False),
        sa.Column("wave", sa.Integer(), nullable=False),
        sa.Column("due_on", sa.Date(), nullable=False),
        sa.Column("window_days", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("evaluated_on", sa.Date(), nullable=False),
        sa.Column("figures", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint(
            "campaign", "wave", "due_on", "window_days", "kind", name="pk_evaluation_details"
        ),
    )
    op.create_table(
        "evaluation_sequences",
        sa.Column("campaign", sa.String(64), nullable=False),
        sa.Column("through_wave", sa.Integer(), nullable=False),
        sa.Column("window_days", sa.Integer(), nullable=False),
        sa.Column("view", sa.String(8), nullable=False),
        sa.Column("evaluated_on", sa.Date(), nullable=False),
        sa.Column("customers", sa.Integer(), nullable=False),
        sa.Column("control_customers", sa.Integer(), nullable=False),
        sa.Column("lift", sa.Float()),
        sa.Column("lift_low", sa.Float()),
        sa.Column("lift_high", sa.Float()),
        sa.Column("verdict", sa.String(16), nullable=False),
        sa.Column("figures", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint(
            "campaign", "through_wave", "window_days", "view", "evaluated_on", name="pk_evaluation_sequences"
        ),
    )


def downgrade() -> None:
    op.drop_table("evaluation_sequences")
    op.drop_table("evaluation_details")
    op.drop_index("ix_evaluations_evaluated_on", table_name="evaluations")
    op.drop_table("evaluations")
    op.create_table(
        "evaluations",
        sa.Column("evaluation_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("campaign", sa.String(64), nullable=False),
        sa.Column("wave", sa.Integer(), nullable=False),
        sa.Column("window_days", sa.Integer(), nullable=False),
        sa.Column("arm", sa.String(16), nullable=False),
        sa.Column("evaluated_on", sa.Date(), nullable=False),
        sa.Column("customers", sa.Integer(), nullable=False),
        sa.Column("responders", sa.Integer(), nullable=False),
        sa.Column("revenue_cents", sa.BigInteger(), nullable=False),
        sa.Column("figures", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("evaluation_id", name="pk_evaluations"),
        sa.UniqueConstraint(
            "campaign", "wave", "window_days", "arm", name="uq_evaluations_campaign_wave_window_days_arm"
        ),
    )
    op.create_index("ix_orders_state_applied_at", "orders", ["state_applied_at"])
