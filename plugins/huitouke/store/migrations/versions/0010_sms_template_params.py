"""Approved SMS templates: the outbox keeps the provider's approved template code and the
parameters that fill it (JSON), rendered with the body (playbook ``approved_sms_templates``).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_OUTBOX_COLUMNS = (
    ("template_code", sa.String(64)),
    ("template_params", sa.Text()),
)


def upgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        for name, type_ in _OUTBOX_COLUMNS:
            batch.add_column(sa.Column(name, type_))


def downgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        for name, _ in reversed(_OUTBOX_COLUMNS):
            batch.drop_column(name)
