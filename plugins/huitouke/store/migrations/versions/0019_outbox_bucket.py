"""``outbox.bucket``: each message's customer bucket (:func:`huitouke.shards.bucket_of`, a CRC-32
of the customer id in 4096 buckets), so that a shard's sender claims only its customers' messages
(``bucket % :count = :index``) through ``ix_outbox_status_channel_bucket_message_id``. Existing
rows are filled here, the bucket computed in Python (the same function rendering uses) on SQLite
and PostgreSQL alike; one UPDATE per bucket and chunk of customers.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

CHUNK = 500


def _fill_buckets() -> None:
    from huitouke.shards import bucket_of

    conn = op.get_bind()
    outbox = sa.table("outbox", sa.column("customer_id", sa.String), sa.column("bucket", sa.SmallInteger))
    ids = conn.execute(sa.select(outbox.c.customer_id).distinct()).scalars().all()
    by_bucket: dict[int, list[str]] = {}
    for customer_id in ids:
        by_bucket.setdefault(bucket_of(customer_id), []).append(customer_id)
    for bucket, members in sorted(by_bucket.items()):
        for start in range(0, len(members), CHUNK):
            chunk = members[start : start + CHUNK]
            conn.execute(outbox.update().where(outbox.c.customer_id.in_(chunk)).values(bucket=bucket))


def upgrade() -> None:
    op.add_column("outbox", sa.Column("bucket", sa.SmallInteger(), nullable=True))
    _fill_buckets()
    with op.batch_alter_table("outbox") as batch:
        batch.alter_column("bucket", existing_type=sa.SmallInteger(), nullable=False)
        batch.create_index(
            "ix_outbox_status_channel_bucket_message_id", ["status", "channel", "bucket", "message_id"]
        )


def downgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.drop_index("ix_outbox_status_channel_bucket_message_id")
        batch.drop_column("bucket")
