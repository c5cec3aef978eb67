"""Engine, sessions and schema upgrade of the site database (SQLite or PostgreSQL)."""

from __future__ import annotations

import importlib
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 10_000
_WRITE_OPTION = "rfidd_write"


class DatabaseError(Exception):
    """The database cannot be opened or migrated; the message names the URL (no password).
    A temporary failure (EX_TEMPFAIL, 75: systemd retries) unless it is a DatabaseConfigError."""


class DatabaseConfigError(DatabaseError):
    """The URL itself cannot work (unsupported scheme, driver not installed): EX_CONFIG, 78."""


def import_all_models() -> None:
    """Import every `rfidd/<area>/models.py`: areas declare tables on the shared `Base` in their
    own module, and autogenerate (or the models-vs-migrations test) must see all of them."""
    root = Path(__file__).resolve().parents[1]
    for path in sorted(root.glob("*/models.py")):
        importlib.import_module(f"rfidd.{path.parent.name}.models")


def alembic_config() -> AlembicConfig:
    """Alembic settings from the packaged migrations, independent of the current directory."""
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


_REVISION = re.compile(r'^(down_revision|revision)\s*(?::[^=]*)?=\s*"([^"]+)"', re.M)


def packaged_head() -> str | None:
    """The newest migration, read from the version files without importing Alembic (and
    Mako, Pygments: ~11 MiB a daemon would keep for good). None unless the chain has exactly
    one head; `open_database` then asks Alembic."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in (MIGRATIONS / "versions").glob("*.py"):
        found = dict(_REVISION.findall(path.read_text(encoding="utf-8")))
        if "revision" not in found:
            return None
        revisions.add(found["revision"])
        if "down_revision" in found:
            parents.add(found["down_revision"])
    heads = revisions - parents
    return next(iter(heads)) if len(heads) == 1 else None


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    """Per-connection SQLite settings.

    - WAL: readers (API, publisher) never block the ingest writer, and vice versa.
    - synchronous=FULL: in WAL mode NORMAL may lose the last commits on power loss; a committed
      event must survive a power cut, because the outbox row *is* the only copy of the event
      before HQ acknowledges it. The cost is one fsync per commit, amortised by batching.
    - foreign_keys=ON: SQLite leaves them off by default.
    - busy_timeout: the publisher's mark_sent and the ingest batch may briefly contend.
    - isolation_level=None: the driver stops issuing its own implicit BEGIN, so the `begin`
      hook below decides (BEGIN IMMEDIATE for writers avoids SQLITE_BUSY on lock upgrade).
    """
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    try:
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    finally:
        cur.close()


def _sqlite_begin(conn: Any) -> None:
    immediate = conn.get_execution_options().get(_WRITE_OPTION, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


class Database:
    """One engine plus session factories; share one instance across threads."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self._read = sessionmaker(engine, expire_on_commit=False)
        self._write = sessionmaker(
            engine.execution_options(**{_WRITE_OPTION: True}), expire_on_commit=False
        )

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A read session (no lock taken up front); commits if the block wrote and succeeded."""
        with self._read() as s, s.begin():
            yield s

    @contextmanager
    def write(self) -> Iterator[Session]:
        """One write transaction: committed at the end of the block, rolled back on error."""
        with self._write() as s, s.begin():
            yield s

    def current_revision(self) -> str | None:
        from alembic.runtime.migration import MigrationContext

        with self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def at_revision(self, revision: str) -> bool:
        """Whether the schema is at exactly `revision` (one plain query, no Alembic)."""
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(text("SELECT version_num FROM alembic_version")).all()
        except Exception:  # no version table yet (an empty database): not at it
            return False
        return [r[0] for r in rows] == [revision]

    def dispose(self) -> None:
        self.engine.dispose()


def create_db_engine(url: str, *, echo: bool = False) -> Engine:
    u = make_url(url)
    kwargs: dict[str, Any] = {"echo": echo}
    if u.get_backend_name() == "sqlite":
        if u.database in (None, "", ":memory:"):
            # One shared connection, or every session would see its own empty database.
            kwargs["poolclass"] = StaticPool
            kwargs["connect_args"] = {"check_same_thread": False}
        else:
            Path(u.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(u, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    if u.get_backend_name() == "postgresql":
        kwargs["pool_pre_ping"] = True
        return create_engine(u, **kwargs)
    raise DatabaseConfigError(f"{u.render_as_string(hide_password=True)}: unsupported database")


def upgrade(database: Database, revision: str = "head") -> None:
    """Run the packaged Alembic migrations up to `revision` inside one transaction."""
    from alembic import command

    cfg = alembic_config()
    with database.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def open_database(url: str, *, migrate: bool = True, echo: bool = False,
                  migrate_in_child: bool = False) -> Database:
    """Open the database at `url` and bring its schema to the newest revision.

    `migrate_in_child`: an upgrade, when one is needed, runs in a child process
    (rfidd.store.migrate) so Alembic never loads here; an in-memory SQLite database, which a
    child cannot see, is upgraded here anyway.
    Raises DatabaseError naming the URL (password hidden) when it cannot be reached or
    migrated, so the daemon can exit with a message instead of a traceback.
    """
    shown = make_url(url).render_as_string(hide_password=True)
    try:
        db = Database(create_db_engine(url, echo=echo))
    except DatabaseError:
        raise
    except ModuleNotFoundError as exc:
        raise DatabaseConfigError(f"{shown}: the database driver is not installed ({exc}); for "
                            "PostgreSQL: pip install 'rfidd[postgres]'") from exc
    except Exception as exc:
        raise DatabaseError(f"{shown}: {exc}") from exc
    if migrate and not _at_packaged_head(db):
        in_child = migrate_in_child and not _in_memory(url)
        try:
            if in_child:
                from rfidd.store.migrate import run_upgrade

                db.engine.dispose()  # no connection of ours open while the child migrates
                before, after = run_upgrade(url)
            else:
                before = db.current_revision()
                upgrade(db)
                after = db.current_revision()
        except Exception as exc:
            db.dispose()
            raise DatabaseError(f"{shown}: schema upgrade failed: {exc}") from exc
        if before != after:
            log.info("database %s migrated from %s to %s", shown, before or "empty", after)
    return db


def _in_memory(url: str) -> bool:
    u = make_url(url)
    return u.get_backend_name() == "sqlite" and u.database in (None, "", ":memory:")


def _at_packaged_head(db: Database) -> bool:
    head = packaged_head()
    return head is not None and db.at_revision(head)
