"""The alembic environment of the catalog.

Runs on the connection that :mod:`wkjupyter.catalog.migrate` hands over in
``config.attributes["connection"]``, inside the transaction (and lock) it already holds, so
no ``alembic.ini`` and no engine of its own are needed.
"""

from __future__ import annotations

from alembic import context

from wkjupyter.catalog.migrate import include_name
from wkjupyter.catalog.models import Base

if context.is_offline_mode():
    msg = "offline (--sql) migrations are not supported: use wkjupyter.catalog.migrate"
    raise RuntimeError(msg)

_connection = context.config.attributes.get("connection")
if _connection is None:
    msg = "no connection: run migrations through wkjupyter.catalog.migrate"
    raise RuntimeError(msg)

context.configure(
    connection=_connection,
    target_metadata=Base.metadata,
    include_name=include_name,
    # SQLite runs DDL inside transactions too; the caller's transaction holds the whole upgrade.
    transactional_ddl=True,
)
with context.begin_transaction():
    context.run_migrations()
