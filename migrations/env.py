"""Alembic environment for durapipe: always handed a live connection by durapipe itself."""

from __future__ import annotations

from alembic import context

from durapipe._store.migrate import VERSION_TABLE
from durapipe._store.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run durapipe's migrations with `durapipe db upgrade`, not the alembic command")

context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=VERSION_TABLE,
    render_as_batch=connection.dialect.name == "sqlite",
    transaction_per_migration=False,
)
context.run_migrations()
