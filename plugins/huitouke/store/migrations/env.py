"""Alembic environment for the CRM store. Run through :mod:`huitouke.store.migrate`, which
passes an open connection in ``config.attributes["connection"]``."""

from alembic import context

from huitouke.store.migrate import VERSION_TABLE
from huitouke.store.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - guarded by huitouke.store.migrate
    raise RuntimeError("run migrations with `huitouke db upgrade`, which opens the connection")

context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=VERSION_TABLE,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
