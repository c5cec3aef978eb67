"""`rfidd backup FILE` and `rfidd restore FILE`: the site database, while the daemon runs.

SQLite: the online backup API copies a consistent snapshot (every committed transaction,
WAL included) page by page without stopping the daemon's writers for more than a step.
PostgreSQL: `pg_dump`/`pg_restore` are the tools; these commands print the commands to run.
A restore needs the daemon stopped, keeps the database it replaces next to it, and upgrades the
restored schema to this version (migrations also run at every start).
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import click
from sqlalchemy.engine import make_url

from rfidd.config import EX_CONFIG, Config, ConfigError, load_config

EX_USAGE = 64
EX_DATAERR = 65
EX_TEMPFAIL = 75
PAGES_PER_STEP = 1024  # 4 MiB at a time with the default page size: writers wait at most a step

AFTER_RESTORE = """\
After a restore:
  1. Start rfidd (systemctl start rfidd): the schema is upgraded at start if the backup is older.
  2. HQ: events made after the backup are gone from this site's journal, but HQ stored them
     (eventID dedup). At its next start rfidd reads its retained sequence head from the broker
     (up to 30 s; without a broker it jumps far ahead) and numbers new events above anything it
     numbered before, announcing the numbers it skipped: HQ does not wait for them and alerts
     (sequence_lost) with the ranges it never received, which no site still has. The outbox
     resends what was unsent at backup time: HQ drops the duplicates. HQ backfill
     (rfidd hq backfill --since ...) fills whatever else HQ lacks of the restored journal.
  3. Readers re-sync by themselves: presence is re-learnt from the next reads (items not read
     within presence.departure_s after the start depart). Run a full cycle count of every zone
     (rfidd ops count start ...) before trusting shrinkage and replenishment figures.
  4. Re-import catalog or ASNs sent after the backup if HQ does not resend them."""


class BackupError(Exception):
    """The backup or restore cannot be done; the message says why and what to do."""


@dataclass(frozen=True)
class Copied:
    path: Path
    bytes: int
    seconds: float
    revision: str | None


def sqlite_path(url: str) -> Path:
    u = make_url(url)
    if u.get_backend_name() != "sqlite":
        raise BackupError(_pg_guidance(url))
    if u.database in (None, "", ":memory:"):
        raise BackupError(f"{url}: an in-memory database has nothing to back up")
    return Path(u.database).expanduser()


def _pg_guidance(url: str) -> str:
    u = make_url(url)
    shown = u.render_as_string(hide_password=True)
    conn = f"-h {u.host or 'localhost'} -p {u.port or 5432} -U {u.username or 'rfidd'} " \
           f"{u.database or 'rfidd'}"
    return (f"{shown} is PostgreSQL: back it up with pg_dump while rfidd runs, e.g.\n"
            f"  pg_dump -Fc -f rfidd-$(date +%F).dump {conn}\n"
            f"and restore (rfidd stopped) into an empty database with\n"
            f"  pg_restore --clean --if-exists -d {u.database or 'rfidd'} rfidd-DATE.dump\n"
            "then, before starting rfidd, mark it restored (no sequence number reused):\n"
            "  rfidd restore --mark-restored -c /etc/rfidd/rfidd.toml\n"
            "The password comes from ~/.pgpass or PGPASSWORD, never the command line.")


def _revision(conn: sqlite3.Connection) -> str | None:
    try:
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.DatabaseError:
        return None
    return str(row[0]) if row else None


def _copy(src: sqlite3.Connection, target: Path) -> None:
    """Online backup of `src` into a new file at `target` (written beside it, then renamed)."""
    tmp = target.with_name(target.name + ".partial")
    tmp.unlink(missing_ok=True)
    # Owner-only from the first byte: a backup holds the audit log and every sale (umask 022
    # would leave it readable by every account on the PC).
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    dst = sqlite3.connect(tmp)
    try:
        src.backup(dst, pages=PAGES_PER_STEP, sleep=0.005)
        dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
        check = dst.execute("PRAGMA integrity_check").fetchone()
        if check is None or check[0] != "ok":
            raise BackupError(f"integrity check of the copy failed: {check}")
    finally:
        dst.close()
    tmp.replace(target)


def backup(db_file: Path, target: Path) -> Copied:
    if not db_file.is_file():
        raise BackupError(f"{db_file}: no such database")
    target.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    src = sqlite3.connect(f"file:{db_file}?mode=ro", uri=True, timeout=30)
    try:
        revision = _revision(src)
        _copy(src, target)
    except sqlite3.Error as exc:
        raise BackupError(f"{db_file}: {exc}") from exc
    finally:
        src.close()
    return Copied(target, target.stat().st_size, time.monotonic() - t0, revision)


def daemon_answers(cfg: Config) -> bool:
    """Whether a daemon serves this config's HTTP API (a restore under it would be lost)."""
    if not cfg.http.enabled or cfg.http.port == 0:
        return False
    host = "127.0.0.1" if cfg.http.listen in ("0.0.0.0", "::") else cfg.http.listen
    try:
        with urllib.request.urlopen(f"http://{host}:{cfg.http.port}/healthz", timeout=2):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def restore(source: Path, db_file: Path) -> tuple[Copied, Path | None]:
    """Replace `db_file` with the backup `source`; returns the copy and where the old one is."""
    if not source.is_file():
        raise BackupError(f"{source}: no such backup file")
    try:
        src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
        try:
            check = src.execute("PRAGMA integrity_check").fetchone()
            revision = _revision(src)
        finally:
            src.close()
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"{source}: not an SQLite database ({exc})") from exc
    if check is None or check[0] != "ok":
        raise BackupError(f"{source}: integrity check failed: {check}")
    if revision is None:
        raise BackupError(f"{source}: not an rfidd database (no schema revision)")
    kept = None
    if db_file.exists():
        kept = db_file.with_name(f"{db_file.name}.before-restore-{time.strftime('%Y%m%dT%H%M%S')}")
        src = sqlite3.connect(db_file)
        try:
            _copy(src, kept)  # consistent even if a WAL is pending
        finally:
            src.close()
    # The daemon's own user must still write it: under DynamicUser= systemd does not chown a
    # state directory whose top is already the service's, so a root-owned file restored there
    # would be a read-only database at the next start. Same owner and mode as the file it
    # replaces, else the directory's owner with the daemon's 0640 (UMask=0027).
    ref = os.stat(db_file if db_file.exists() else db_file.parent)
    mode = (ref.st_mode & 0o666) if db_file.exists() else 0o640
    t0 = time.monotonic()
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    try:
        _copy(src, db_file)
    finally:
        src.close()
    if os.geteuid() == 0:
        os.chown(db_file, ref.st_uid, ref.st_gid)
    db_file.chmod(mode)
    for suffix in ("-wal", "-shm"):  # the replaced database's; they would corrupt the new one
        Path(f"{db_file}{suffix}").unlink(missing_ok=True)
    return Copied(db_file, db_file.stat().st_size, time.monotonic() - t0, revision), kept


def _config(config_file: Path) -> Config:
    try:
        return load_config(config_file)
    except ConfigError as exc:
        for e in exc.errors:
            click.echo(f"{config_file}: {e}", err=True)
        sys.exit(EX_CONFIG)


@click.command("backup")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-c", "--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("/etc/rfidd/rfidd.toml"), show_default=True)
@click.option("--json", "as_json", is_flag=True)
def backup_command(file: Path, config_file: Path, as_json: bool) -> None:
    """Copy the site database to FILE while rfidd runs (SQLite; PostgreSQL: pg_dump)."""
    cfg = _config(config_file)
    try:
        copied = backup(sqlite_path(cfg.database.url), file)
    except BackupError as exc:
        click.echo(str(exc), err=True)
        sys.exit(EX_USAGE if "PostgreSQL" in str(exc) else EX_TEMPFAIL)
    if as_json:
        click.echo(json.dumps({"file": str(copied.path), "bytes": copied.bytes,
                               "seconds": round(copied.seconds, 3),
                               "revision": copied.revision}))
    else:
        click.echo(f"backup {copied.path}: {copied.bytes:,} bytes in {copied.seconds:.2f} s, "
                   f"schema {copied.revision}, integrity ok")


def mark_restored_database(url: str) -> str | None:
    """Upgrade the schema of a database restored by whatever means (`rfidd restore`, or
    `pg_restore` by hand) and mark it restored: the next start continues the event sequence
    above the numbers HQ holds (rfidd/seq_restore.py). Returns the schema revision."""
    from sqlalchemy.exc import SQLAlchemyError

    from rfidd.store.db import DatabaseError, open_database
    from rfidd.store.sequence import mark_restored

    db = open_database(url)  # the schema of this version
    try:
        after = db.current_revision()
        with db.write() as s:
            mark_restored(s, time.time())
    except SQLAlchemyError as exc:
        raise DatabaseError(f"cannot write the restored mark: {exc}") from exc
    finally:
        db.dispose()
    return after


@click.command("restore")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path), required=False)
@click.option("-c", "--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("/etc/rfidd/rfidd.toml"), show_default=True)
@click.option("--mark-restored", is_flag=True,
              help="No FILE: the database was restored by hand (PostgreSQL: pg_restore); "
                   "upgrade its schema and mark it restored, so the next start does not "
                   "reuse sequence numbers HQ already holds.")
def restore_command(file: Path | None, config_file: Path, mark_restored: bool) -> None:
    """Replace the site database with the backup FILE (stop rfidd first); or, with
    --mark-restored, mark a database restored by hand (pg_restore)."""
    if (file is None) == (not mark_restored):
        click.echo("give either the backup FILE (SQLite) or --mark-restored (a database "
                   "restored by hand, e.g. pg_restore), not both or neither", err=True)
        sys.exit(EX_USAGE)
    cfg = _config(config_file)
    if daemon_answers(cfg):
        click.echo(f"rfidd is running (its API answers on port {cfg.http.port}): "
                   "systemctl stop rfidd first", err=True)
        sys.exit(EX_TEMPFAIL)
    from rfidd.store.db import DatabaseError

    if file is None:
        shown = make_url(cfg.database.url).render_as_string(hide_password=True)
        try:
            after = mark_restored_database(cfg.database.url)
        except DatabaseError as exc:
            click.echo(f"{shown}: cannot mark it restored: {exc}", err=True)
            sys.exit(EX_TEMPFAIL)
        click.echo(f"marked {shown} restored (schema {after}): the next start continues the "
                   "event sequence above the numbers HQ holds")
        click.echo(AFTER_RESTORE)
        return
    try:
        copied, kept = restore(file, sqlite_path(cfg.database.url))
    except BackupError as exc:
        click.echo(str(exc), err=True)
        sys.exit(EX_USAGE if "PostgreSQL" in str(exc) else EX_DATAERR)
    try:
        after = mark_restored_database(cfg.database.url)
    except DatabaseError as exc:
        click.echo(f"restored, but the schema upgrade failed: {exc}", err=True)
        sys.exit(EX_DATAERR)
    click.echo(f"restored {file} into {copied.path} (schema {copied.revision} -> {after})")
    if kept is not None:
        click.echo(f"the database it replaces is kept as {kept}")
    click.echo(AFTER_RESTORE)


__all__ = ["AFTER_RESTORE", "BackupError", "backup", "backup_command", "mark_restored_database",
           "restore", "restore_command"]
