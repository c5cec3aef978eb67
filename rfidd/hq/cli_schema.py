"""`rfidd hq migrate`: create or upgrade the HQ schema without starting the consumer (the
read-only commands name it when the database has no HQ schema or an older one)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from rfidd.hq.cli import _database_url, hq_command


@hq_command.command("migrate")
@click.option("-c", "--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
              help="HQ TOML configuration file (for the database URL).")
@click.option("--database-url", help="SQLAlchemy URL of the HQ database (overrides -c).")
def migrate_cmd(config_file: Path | None, database_url: str | None) -> None:
    """Create the HQ schema, or upgrade it to this rfidd's (what `rfidd hq run` does at start)."""
    from rfidd.config import EX_CONFIG
    from rfidd.hq.store import HqDatabaseError, HqStore

    url = _database_url(config_file, database_url)
    try:
        store = HqStore.open(url, migrate=False)
        before = store.current_revision()
        store.upgrade()
        after = store.current_revision()
        store.dispose()
    except HqDatabaseError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EX_CONFIG)
    click.echo(f"HQ schema at {after}" + (" (already)" if before == after else
                                          f" (was {before or 'none'})"))
