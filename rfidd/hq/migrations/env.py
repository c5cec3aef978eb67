"""Alembic environment of the HQ consumer's tables.

Run programmatically by `HqStore.upgrade()`, which hands over an open connection in
`config.attributes["connection"]`. The version table is `hq_alembic_version`, so the HQ schema
never mixes its revisions with the site daemon's.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from rfidd.hq.store import VERSION_TABLE, metadata

config = context.config


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if context.is_offline_mode() or connection is None:
    raise RuntimeError("HQ migrations run through `rfidd hq run` / HqStore.upgrade() only")
_run(connection)
