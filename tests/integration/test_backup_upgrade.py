"""Backup while the daemon writes, restore, and schema upgrade from every release.

"Every release" is every Alembic revision in rfidd/store/migrations/versions: a site database
left at any of them (with rows in it) must upgrade to head on SQLite and PostgreSQL, and the
result must equal a fresh database (models vs migrations).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from alembic.script import ScriptDirectory
from click.testing import CliRunner
from sqlalchemy import inspect, text

from rfidd.backup import backup, restore
from rfidd.cli import main
from rfidd.store import repo
from rfidd.store.db import (
    Database,
    alembic_config,
    create_db_engine,
    head_revision,
    open_database,
    upgrade,
)

pytestmark = pytest.mark.integration

REVISIONS = [s.revision for s in
             reversed(list(ScriptDirectory.from_config(alembic_config()).walk_revisions()))]


def _write_config(tmp_path: Path, db_file: Path, port: int = 0, http: bool = False) -> Path:
    cfg = tmp_path / "rfidd.toml"
    cfg.write_text(f"""
[site]
id = "bk-store"
name = "Backup store"
sgln = "urn:epc:id:sgln:3760001.00001.0"
[database]
url = "sqlite:///{db_file}"
[mqtt]
enabled = false
[http]
enabled = {"true" if http else "false"}
port = {port}
[zones.floor]
kind = "floor"
""")
    return cfg


def _messages(db: Database, start: int, n: int) -> None:
    with db.write() as s:
        repo.enqueue(s, [repo.Message("report", "reports/x", {"n": i}, event_id=f"m{i}")
                         for i in range(start, start + n)])


def _count(path: Path) -> int:
    with sqlite3.connect(path) as c:
        return int(c.execute("SELECT count(*) FROM outbox").fetchone()[0])


def test_backup_while_writing_is_consistent_and_restores(tmp_path: Path) -> None:
    db_file = tmp_path / "site.db"
    db = open_database(f"sqlite:///{db_file}")
    _messages(db, 0, 5000)
    stop = threading.Event()
    written = [5000]

    def writer() -> None:  # the daemon keeps committing during the backup
        while not stop.is_set():
            _messages(db, written[0], 50)
            written[0] += 50

    t = threading.Thread(target=writer)
    t.start()
    try:
        res = CliRunner().invoke(main, ["backup", str(tmp_path / "b.db"), "-c",
                                        str(_write_config(tmp_path, db_file)), "--json"])
    finally:
        stop.set()
        t.join()
    assert res.exit_code == 0, res.output
    copied = _count(tmp_path / "b.db")
    assert 5000 <= copied <= written[0] and copied % 50 == 0  # whole transactions only
    with sqlite3.connect(tmp_path / "b.db") as c:
        assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert c.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    db.dispose()

    # Restore over the newer database: the old one is kept, the schema is at head.
    res = CliRunner().invoke(main, ["restore", str(tmp_path / "b.db"), "-c",
                                    str(_write_config(tmp_path, db_file))])
    assert res.exit_code == 0, res.output
    assert "HQ backfill" in res.output and "cycle count" in res.output
    assert _count(db_file) == copied
    kept = list(tmp_path.glob("site.db.before-restore-*"))
    assert len(kept) == 1 and _count(kept[0]) == written[0]


def test_restore_refuses_a_running_daemon_and_a_bad_file(tmp_path: Path) -> None:
    import socket

    db_file = tmp_path / "site.db"
    open_database(f"sqlite:///{db_file}").dispose()
    backup(db_file, tmp_path / "b.db")
    with socket.socket() as srv:  # something answers HTTP on the configured API port
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        port = srv.getsockname()[1]

        def answer() -> None:
            conn, _ = srv.accept()
            conn.recv(4096)
            conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            conn.close()

        t = threading.Thread(target=answer)
        t.start()
        res = CliRunner().invoke(main, ["restore", str(tmp_path / "b.db"), "-c",
                                        str(_write_config(tmp_path, db_file, port, True))])
        t.join(10)
    assert res.exit_code == 75 and "systemctl stop rfidd first" in res.output
    (tmp_path / "junk.db").write_bytes(b"not a database" * 100)
    res = CliRunner().invoke(main, ["restore", str(tmp_path / "junk.db"), "-c",
                                    str(_write_config(tmp_path, db_file))])
    assert res.exit_code == 65 and "not an SQLite database" in res.output
    with sqlite3.connect(tmp_path / "empty.db") as c:
        c.execute("CREATE TABLE x (y)")
    with pytest.raises(Exception, match="not an rfidd database"):
        restore(tmp_path / "empty.db", db_file)


def test_backup_of_postgresql_says_pg_dump(tmp_path: Path) -> None:
    cfg = tmp_path / "pg.toml"
    cfg.write_text(_write_config(tmp_path, tmp_path / "x.db").read_text().replace(
        f"sqlite:///{tmp_path / 'x.db'}", "postgresql+psycopg://rfidd:secret@db.local/rfidd"))
    res = CliRunner().invoke(main, ["backup", str(tmp_path / "b.db"), "-c", str(cfg)])
    assert res.exit_code == 64
    assert "pg_dump -Fc" in res.output and "pg_restore" in res.output
    assert "secret" not in res.output


def _seed(url: str, revision: str) -> None:
    """Rows a real site has at that revision (items, events, outbox; ops tables after 0002)."""
    eng = create_db_engine(url)
    with eng.begin() as c:
        now = time.time()
        c.execute(text("INSERT INTO items (epc, first_seen, last_seen, updated) "
                       "VALUES ('3034E57E0C0000400000002A', :t, :t, :t)"), {"t": now})
        c.execute(text("INSERT INTO outbox (stream, topic, payload, event_id, created_at) "
                       "VALUES ('report', 'reports/x', '{}', 'e1', :t)"), {"t": now})
        if "ops_state" in inspect(c).get_table_names():
            c.execute(text("INSERT INTO ops_state (key, value, updated) VALUES "
                           "('loss_tracker', '{}', :t)"), {"t": now})
    eng.dispose()


@pytest.mark.parametrize("revision", REVISIONS[:-1] or ["(only one revision)"])
def test_upgrade_from_every_release(db_url: str, revision: str) -> None:
    if revision == "(only one revision)":
        pytest.skip("a single migration: nothing to upgrade from")
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from rfidd.store.db import import_all_models
    from rfidd.store.models import Base

    db = Database(create_db_engine(db_url))
    upgrade(db, revision)
    assert db.current_revision() == revision
    db.dispose()
    _seed(db_url, revision)
    db = open_database(db_url)  # what `rfidd run` does at start
    try:
        assert db.current_revision() == head_revision()
        import_all_models()
        with db.engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            diff: list[Any] = compare_metadata(ctx, Base.metadata)
            rows = conn.execute(text("SELECT count(*) FROM outbox")).scalar_one()
            items = conn.execute(text("SELECT count(*) FROM items")).scalar_one()
        assert diff == []
        assert (rows, items) == (1, 1)  # nothing lost on the way
    finally:
        db.dispose()


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_backup_is_owner_only_and_a_restore_keeps_the_daemons_owner(tmp_path: Path) -> None:
    """Run as root (as the guide does), a backup must not be world-readable, and the restored
    database must stay the daemon's: a root-owned file would be read-only to the service."""
    import pwd

    nobody = pwd.getpwnam("nobody")
    # The state directory is the daemon's (and reachable by it: pytest's own tmp is root-only).
    state = Path(tempfile.mkdtemp(prefix="rfidd-restore-"))
    os.chown(state, nobody.pw_uid, nobody.pw_gid)
    db_file = state / "site.db"
    db = open_database(f"sqlite:///{db_file}")
    _messages(db, 0, 10)
    db.dispose()
    os.chown(db_file, nobody.pw_uid, nobody.pw_gid)
    db_file.chmod(0o640)
    cfg = str(_write_config(tmp_path, db_file))
    res = CliRunner().invoke(main, ["backup", str(tmp_path / "b.db"), "-c", cfg])
    assert res.exit_code == 0, res.output
    assert stat.S_IMODE((tmp_path / "b.db").stat().st_mode) == 0o600
    res = CliRunner().invoke(main, ["restore", str(tmp_path / "b.db"), "-c", cfg])
    assert res.exit_code == 0, res.output
    st = db_file.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (nobody.pw_uid, nobody.pw_gid,
                                                                0o640)
    # The daemon's user can write it (a read-only database otherwise).
    code = ("import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
            "c.execute('CREATE TABLE written_by_the_daemon (x)'); c.commit()")
    # The system Python: this venv may sit where nobody cannot reach.
    python = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
    done = subprocess.run([python, "-c", code, str(db_file)], capture_output=True,
                          text=True, user=nobody.pw_uid, group=nobody.pw_gid,
                          cwd=state)
    shutil.rmtree(state)
    assert done.returncode == 0, done.stderr


def test_exit_alerts_move_into_the_workflow_table_and_back(db_url: str) -> None:
    """0007: one table for exit alerts. A row both tables had keeps its workflow state; a row
    only the old table had (raised before 0004) arrives open; a downgrade gives both back."""
    from alembic import command

    db = Database(create_db_engine(db_url))
    upgrade(db, "0006_event_seq")
    with db.engine.begin() as c:
        for aid, at in (("both", 10.0), ("old-only", 20.0)):
            c.execute(text("INSERT INTO ops_exit_alerts (alert_id, epc, zone, at) "
                           "VALUES (:a, :e, 'exit', :t)"), {"a": aid, "e": f"E-{aid}", "t": at})
        c.execute(text("INSERT INTO alerts (alert_id, kind, epc, zone, raised_at, state, "
                       "resolution) VALUES ('both', 'exit_unsold', 'E-both', 'exit', 10.0, "
                       "'resolved', 'found')"))
    upgrade(db)
    with db.engine.connect() as c:
        rows = {r[0]: r[1:] for r in c.execute(text(
            "SELECT alert_id, kind, epc, zone, raised_at, state, resolution, detail "
            "FROM alerts ORDER BY alert_id"))}
        tables = set(inspect(c).get_table_names())
    assert rows["both"] == ("exit_unsold", "E-both", "exit", 10.0, "resolved", "found", None)
    assert rows["old-only"][:6] == ("exit_unsold", "E-old-only", "exit", 20.0, "open", None)
    assert "ops_exit_alerts" in str(rows["old-only"][6])
    assert "ops_exit_alerts" not in tables
    # The shrinkage report reads them from there.
    from sqlalchemy.orm import Session

    from rfidd.ops.store import exit_alerts
    with Session(db.engine) as s:
        assert [a[0] for a in exit_alerts(s, 0.0, 100.0)] == ["both", "old-only"]
        assert [a[0] for a in exit_alerts(s, 15.0, 100.0)] == ["old-only"]
    cfg = alembic_config()
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0006_event_seq")
    with db.engine.connect() as c:
        back = sorted(c.execute(text("SELECT alert_id, epc, zone, at FROM ops_exit_alerts")))
    assert [tuple(r) for r in back] == [("both", "E-both", "exit", 10.0),
                                        ("old-only", "E-old-only", "exit", 20.0)]
    db.dispose()
