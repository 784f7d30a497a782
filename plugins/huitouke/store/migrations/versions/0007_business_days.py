"""The daily run's calendar: ``business_days`` (one row per business day the stateful stages have
opened, with its status and attempts), and one ``intake_runs`` row per attempt (``attempt`` joins
its key: a re-run or a backfill no longer replaces the audit of the run before it).

A store that already ran gets a ``completed`` row for every business day with stored segment KPIs:
those days were computed, and the calendar goes on from the latest of them.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "business_days",
        sa.Column("business_date", sa.Date(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.String(250)),
        sa.Column("run_type", sa.String(32)),
        sa.Column("opened_at", sa.DateTime(), nullable=False),
        sa.Column("completed_at", sa.DateTime()),
        sa.PrimaryKeyConstraint("business_date", name="pk_business_days"),
    )
    op.execute(
        "INSERT INTO business_days (business_date, status, attempts, run_type, opened_at, completed_at) "
        "SELECT business_date, 'completed', 1, 'before_calendar', computed_at, computed_at FROM segment_kpis"
    )
    with op.batch_alter_table("intake_runs") as batch:
        batch.add_column(sa.Column("attempt", sa.Integer(), nullable=False, server_default="1"))
        batch.drop_constraint("pk_intake_runs", type_="primary")
        batch.create_primary_key("pk_intake_runs", ["business_date", "source", "attempt"])


def downgrade() -> None:
    op.execute(
        "DELETE FROM intake_runs WHERE attempt < (SELECT MAX(attempt) FROM intake_runs AS later "
        "WHERE later.business_date = intake_runs.business_date AND later.source = intake_runs.source)"
    )
    with op.batch_alter_table("intake_runs") as batch:
        batch.drop_constraint("pk_intake_runs", type_="primary")
        batch.create_primary_key("pk_intake_runs", ["business_date", "source"])
        batch.drop_column("attempt")
    op.drop_table("business_days")
