"""Outages over real processes and sockets: no event the site journaled may be lost.

Each test runs a store (simulated LLRP readers, `rfidd run`, a private Mosquitto, an HQ
process), keeps shipments arriving, injects one fault mid-stream, and adds a row to the table
printed at the end of the run (`fault | events expected | delivered | lost | duplicated |
recovery s`). Outages last OUTAGE_S seconds (tens in CI, minutes with --long).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import FaultStore, Row, outage_s
from waits import wait_until

from simulator.scenario import Action

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.timeout(900)]


@pytest.fixture
def outage(request: pytest.FixtureRequest) -> float:
    return outage_s(bool(request.config.getoption("--long")))


@pytest.fixture
def store(tmp_path: Path, private_mosquitto: object) -> Iterator[FaultStore]:
    s = FaultStore(tmp_path, private_mosquitto)
    try:
        s.start()
        s.stream()
        wait_until(lambda: len(s.hq.received()) >= 20, "events flowing to HQ", timeout=60)
        yield s
    finally:
        s.close()


def _assert_nothing_lost(store: FaultStore, row: Row) -> None:
    assert store.hq.bad() == []
    assert row.expected > 0
    assert row.lost == 0, row


def test_broker_down_mid_stream(store: FaultStore, outage: float) -> None:
    broker = store.broker
    broker.stop()
    before = len(store.journal())
    time.sleep(outage)  # the outage itself: the stream goes on, the outbox grows
    assert len(store.journal()) > before, "the site kept journaling while the broker was down"
    broker.start()
    end = time.monotonic()
    time.sleep(1.0)
    row = store.finish("broker down", end, timeout=60 + outage)
    _assert_nothing_lost(store, row)
    assert store.daemon.errors() == [], store.daemon.errors()[:5]


def test_daemon_sigkilled_mid_ingest_and_restarted(store: FaultStore, outage: float) -> None:
    store.daemon.kill()
    time.sleep(min(outage, 10.0))  # systemd's RestartSec=5 and the start-up
    store.daemon.start()
    end = time.monotonic()
    time.sleep(2.0)
    row = store.finish("daemon SIGKILL + restart", end, timeout=60 + outage)
    _assert_nothing_lost(store, row)


def test_hq_consumer_killed_and_restarted(store: FaultStore, outage: float) -> None:
    store.hq.kill()
    time.sleep(outage)  # its session keeps the feed queued at the broker
    store.hq.start()
    end = time.monotonic()
    row = store.finish("HQ consumer SIGKILL", end, timeout=60 + outage)
    _assert_nothing_lost(store, row)


def test_readers_dropped_garbled_silenced_rebooted(store: FaultStore, outage: float) -> None:
    readers = sorted(store.sim.readers)
    start = time.monotonic()
    for fault in ("drop", "garbage", "huge_frame", "silent", "reboot"):
        for name in readers:
            store.sim.apply(Action(t=0, action="fault", reader=name, fault=fault,
                                   duration_s=min(outage, 6.0)))
        time.sleep(min(outage, 6.0) / 2)
    wait_until(lambda: all(r.inventorying for r in store.sim.readers.values()),
               "every reader inventorying again", timeout=60)
    end = time.monotonic()
    # Events keep coming after the faults: the daemon reconnected every reader.
    after = len(store.hq.received())
    wait_until(lambda: len(store.hq.received()) > after + 5, "events after the reader faults",
               timeout=60)
    row = store.finish("readers drop/garbage/huge/silent/reboot", end, timeout=60,
                       note=f"{len(readers)} readers, {end - start:.0f} s of faults")
    _assert_nothing_lost(store, row)
    assert store.daemon.alive is False  # stopped cleanly by finish()


def test_database_locked_for_longer_than_the_busy_timeout(store: FaultStore,
                                                          outage: float) -> None:
    """Another process holds the SQLite write lock past busy_timeout (10 s)."""
    hold = max(outage, 12.0)
    locked = threading.Event()

    def locker() -> None:
        c = sqlite3.connect(store.db_file, timeout=30, isolation_level=None)
        c.execute("BEGIN EXCLUSIVE")
        locked.set()
        time.sleep(hold)
        c.execute("ROLLBACK")
        c.close()

    t = threading.Thread(target=locker)
    t.start()
    assert locked.wait(30)
    t.join()
    end = time.monotonic()
    time.sleep(2.0)
    alive = store.daemon.alive
    row = store.finish("database locked", end, timeout=60,
                       note=f"locked {hold:.0f} s" + ("" if alive else "; daemon exited"))
    _assert_nothing_lost(store, row)
    assert alive, "the daemon exited while the database was locked"


def test_clean_sigterm_logs_no_error(store: FaultStore) -> None:
    """The issue's "ERROR ... Client is not connected" on SIGTERM came from paho racing our
    own disconnect. sllurp's own "Exception encountered in main loop" when its socket is
    closed under its select() is the reader drivers' to silence (readers/): left out here."""
    code = store.daemon.terminate()
    assert code == 0
    log = store.daemon.log.read_text()
    assert "level=info logger=rfidd msg=\"rfidd stopped\"" in log
    ours = [ln for ln in store.daemon.errors() if "logger=sllurp" not in ln]
    assert ours == [], ours[:5]
