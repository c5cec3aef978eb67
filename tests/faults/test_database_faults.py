"""The site database full, or read-only, for a while, while the store keeps reading.

- Full: the SQLite database lives on a tmpfs of the test's own (mount needs root with
  CAP_SYS_ADMIN, as the CI container has); "full" is a filler file taking every free byte.
- Read-only: what a site on PostgreSQL meets when its primary fails over to a hot standby that
  is not promoted yet: every connection is cut, and the new ones only read. Made true to that on
  a database of the test's own: `ALTER DATABASE ... SET default_transaction_read_only = on` and
  its backends terminated; then back (RESET, terminated again) as after the promotion. (A
  read-only remount of the SQLite filesystem is refused while the daemon holds the file open,
  "mount point is busy", and root ignores file modes.)
"""

from __future__ import annotations

import errno
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import missing_service
from harness import FaultStore, Row, outage_s
from waits import wait_until

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.timeout(900)]


@pytest.fixture
def outage(request: pytest.FixtureRequest) -> float:
    return outage_s(bool(request.config.getoption("--long")))


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "dbfs"
    mnt.mkdir()
    mount = shutil.which("mount")
    done = subprocess.run([mount or "mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mnt)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        missing_service(f"mount -t tmpfs (root with CAP_SYS_ADMIN): {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


@pytest.fixture
def store(tmp_path: Path, private_mosquitto: Any, small_fs: Path) -> Iterator[FaultStore]:
    s = FaultStore(tmp_path, private_mosquitto, db_dir=small_fs)
    try:
        s.start()
        s.stream()
        wait_until(lambda: len(s.hq.received()) >= 20, "events flowing to HQ", timeout=60)
        yield s
    finally:
        s.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def pg_database(_pg_admin_url: str | None) -> Iterator[tuple[str, Any]]:
    """(URL, admin engine) of a PostgreSQL database of this test alone, dropped after it."""
    if _pg_admin_url is None:
        missing_service("PostgreSQL on 127.0.0.1:5432 (database test, user root or postgres)")
    from sqlalchemy import create_engine, make_url, text

    name = f"rfidd_ro_{uuid.uuid4().hex[:12]}"
    admin = create_engine(str(_pg_admin_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(str(_pg_admin_url)).set(database=name)
    try:
        yield url.render_as_string(hide_password=False), admin
    finally:
        with admin.connect() as c:
            c.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                           "WHERE datname = :db AND pid <> pg_backend_pid()"), {"db": name})
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


def _read_only(admin: Any, db: str, on: bool) -> int:
    """The hot standby's view (on) or the promoted primary's (off): the setting changed and the
    database's connections cut, as a failover cuts them; returns how many were cut."""
    from sqlalchemy import text

    with admin.connect() as c:
        c.execute(text(f'ALTER DATABASE "{db}" SET default_transaction_read_only = '
                       f'{"on" if on else "off"}'))
        return int(c.execute(text(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = :db AND pid <> pg_backend_pid()"), {"db": db}).scalar_one())


def _fill(path: Path) -> int:
    """Write zeros until the filesystem is full; returns the bytes written."""
    n = 0
    chunk = b"\0" * 65536
    with path.open("wb", buffering=0) as f:
        while True:
            try:
                n += f.write(chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
    return n


def _check(store: FaultStore, row: Row) -> None:
    assert row.expected > 0
    assert row.lost == 0, row


def test_database_out_of_space_for_a_while(store: FaultStore, outage: float,
                                           small_fs: Path) -> None:
    filler = small_fs / "filler"
    _fill(filler)
    time.sleep(outage)
    alive = store.daemon.alive
    filler.unlink()
    end = time.monotonic()
    time.sleep(2.0)
    alive = alive and store.daemon.alive
    row = store.finish("database disk full", end, timeout=60,
                       note="" if alive else "daemon exited")
    _check(store, row)
    assert alive, "the daemon exited while the disk was full"


@pytest.fixture
def pg_store(tmp_path: Path, private_mosquitto: Any,
             pg_database: tuple[str, Any]) -> Iterator[FaultStore]:
    s = FaultStore(tmp_path, private_mosquitto, db_url=pg_database[0], http_port=_free_port(),
                   notify=True)
    try:
        s.start()
        s.stream()
        wait_until(lambda: len(s.hq.received()) >= 20, "events flowing to HQ", timeout=60)
        yield s
    finally:
        s.close()


def test_database_read_only_for_a_while(pg_store: FaultStore, outage: float,
                                        pg_database: tuple[str, Any]) -> None:
    """PostgreSQL read-only (failover to a hot standby) for a while: nothing lost, the daemon
    keeps running, and the outage shows in /metrics, systemd's STATUS= and an alert to HQ."""
    from sqlalchemy import make_url

    store, (url, admin) = pg_store, pg_database
    db = str(make_url(url).database)
    assert store.metric("rfidd_database_up") == 1.0
    errors_before = store.metric("rfidd_database_errors_total") or 0.0
    assert _read_only(admin, db, True) > 0  # the daemon's connections were cut
    start = time.monotonic()
    wait_until(lambda: store.metric("rfidd_database_up") == 0.0, "rfidd_database_up 0",
               timeout=60)
    wait_until(lambda: any(st.startswith("database unavailable")
                           for st in store.daemon.notify.statuses()),  # type: ignore[union-attr]
               "STATUS=database unavailable", timeout=30)
    wait_until(lambda: any(a.get("type") == "database_unavailable" and "until" not in a
                           for a in store.hq.alerts()), "the outage alert at HQ", timeout=30)
    time.sleep(max(0.0, outage - (time.monotonic() - start)))
    alive = store.daemon.alive
    errors = (store.metric("rfidd_database_errors_total") or 0.0) - errors_before
    _read_only(admin, db, False)
    end = time.monotonic()
    wait_until(lambda: store.metric("rfidd_database_up") == 1.0, "rfidd_database_up 1",
               timeout=90)
    row = store.finish("database read-only (failover)", end, timeout=90,
                       note="" if alive else "daemon exited")
    _check(store, row)
    assert alive, "the daemon exited while the database was read-only"
    assert errors > 0
    statuses = store.daemon.notify.statuses()  # type: ignore[union-attr]
    assert any(st.startswith("database back after") for st in statuses), statuses[-5:]
    back = [a for a in store.hq.alerts() if a.get("type") == "database_unavailable"
            and "until" in a]
    assert back and back[-1]["down_s"] > 0, store.hq.alerts()
    # Cut off first, then a standby that only reads: the alert and STATUS= name both.
    assert "read-only" in back[-1].get("last_reason", back[-1]["reason"]), back[-1]
    assert any("read-only" in st for st in statuses), statuses[-5:]
