"""Is this database HQ's, at the schema this rfidd reads? Asked by the read-only HQ commands
(`rfidd hq sites|stock|reports|alerts|where|history`), which never migrate: on a database
without the HQ tables they printed SQLAlchemy's traceback of the first query. One line instead,
naming the database and what to run, and an exit code per rfidd's convention (sysexits)."""

from __future__ import annotations

from alembic.script import ScriptDirectory
from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from rfidd.config import EX_CONFIG, EX_TEMPFAIL
from rfidd.hq.store import HqDatabaseError, HqStore, alembic_config

MIGRATE = "rfidd hq migrate -c HQ.toml (or --database-url URL)"


class HqSchemaError(Exception):
    """The database cannot be read as HQ's; `exit_code` 78 (set-up to do: retrying cannot
    help) or 75 (cannot be reached now: worth a retry)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def open_checked(url: str) -> Engine:
    """The engine of an HQ database whose schema is this rfidd's (not migrated: read only)."""
    shown = make_url(url).render_as_string(hide_password=True)
    try:
        store = HqStore.open(url, migrate=False)
    except HqDatabaseError as exc:
        raise HqSchemaError(str(exc), EX_CONFIG) from None
    try:
        current = store.current_revision()
    except SQLAlchemyError as exc:
        store.dispose()
        first = (str(getattr(exc, "orig", None) or exc).splitlines() or ["?"])[0]
        raise HqSchemaError(f"{shown}: cannot read the database now ({first}); temporary "
                            f"failure, exit {EX_TEMPFAIL}: retry", EX_TEMPFAIL) from None
    head = head_revision()
    if current == head:
        return store.engine
    store.dispose()
    if current is None:
        raise HqSchemaError(f"{shown}: no HQ schema in this database (no hq_alembic_version "
                            f"table); create it with: {MIGRATE}", EX_CONFIG)
    known = {s.revision for s in ScriptDirectory.from_config(alembic_config()).walk_revisions()}
    if current not in known:
        raise HqSchemaError(f"{shown}: HQ schema {current} is newer than this rfidd "
                            f"(it knows up to {head}); upgrade rfidd", EX_CONFIG)
    raise HqSchemaError(f"{shown}: HQ schema {current} is older than this rfidd's ({head}); "
                        f"upgrade it with: {MIGRATE}", EX_CONFIG)


__all__ = ["HqSchemaError", "head_revision", "open_checked"]
