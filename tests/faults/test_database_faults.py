"""The site database's filesystem full for a while, while the store keeps reading.

The database lives on a tmpfs of the test's own (mount needs root with CAP_SYS_ADMIN, as the
CI container has); "full" is a filler file taking every free byte. (A read-only remount is
refused while the daemon holds the database open for writing: "mount point is busy".)
"""

from __future__ import annotations

import errno
import shutil
import subprocess
import time
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
