"""Alembic environment of rfidd.

Run programmatically by `rfidd.store.db.upgrade()`, which hands over an open connection in
`config.attributes["connection"]`; from the command line the URL comes from RFIDD_DATABASE_URL.
It configures no logging: the daemon's logging is the daemon's.
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import Connection, create_engine

from rfidd.store.db import import_all_models
from rfidd.store.models import Base

config = context.config
import_all_models()
target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things: batch mode recreates the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = os.environ.get("RFIDD_DATABASE_URL") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("set RFIDD_DATABASE_URL to the database to migrate")
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            _run(conn)
            conn.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise RuntimeError("offline (--sql) migrations are not supported; run against a database")
run_migrations_online()
