"""Faults at the HQ end, with the real `rfidd hq run` consumer storing into PostgreSQL:
consumer SIGKILLed, its database connections terminated, and the broker SIGKILLed just after
acknowledging a burst it had not yet persisted."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import RESULTS, FaultStore, RealHq, Row, outage_s
from waits import wait_until

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.postgres,
              pytest.mark.timeout(900)]


@pytest.fixture
def outage(request: pytest.FixtureRequest) -> float:
    return outage_s(bool(request.config.getoption("--long")))


@pytest.fixture
def hq_store(tmp_path: Path, private_mosquitto: Any, postgres_url: str
             ) -> Iterator[tuple[FaultStore, RealHq]]:
    s = FaultStore(tmp_path, private_mosquitto)
    hq = RealHq(tmp_path, private_mosquitto.host, private_mosquitto.port, postgres_url)
    try:
        hq.start()
        s.start()
        s.stream()
        wait_until(lambda: len(hq.stored()) >= 20, "events stored at HQ", timeout=60)
        yield s, hq
    finally:
        s.close()
        hq.close()


def _finish(s: FaultStore, hq: RealHq, fault: str, end: float, timeout: float,
            note: str = "") -> Row:
    """Like FaultStore.finish, but delivered means stored in HQ's database."""
    s.stop_stream()
    recovered = end
    with contextlib.suppress(AssertionError):  # what never arrives is counted as lost
        wait_until(lambda: s.journal() <= hq.stored(), "HQ storing every journaled event",
                   timeout=timeout, poll_s=0.3)
        recovered = time.monotonic()
    if s.daemon.alive:
        s.daemon.terminate()
    expected = s.journal()
    with contextlib.suppress(AssertionError):
        wait_until(lambda: expected <= hq.stored(), "the last events at HQ", timeout=15,
                   poll_s=0.3)
    stored = hq.stored()
    tap = s.hq.received()
    delivered = len(expected & stored)
    row = Row(fault, len(expected), delivered, len(expected) - delivered,
              sum(n - 1 for n in tap.values() if n > 1), max(0.0, recovered - end), note)
    RESULTS.append(row)
    return row


def test_hq_consumer_sigkilled(hq_store: tuple[FaultStore, RealHq], outage: float) -> None:
    s, hq = hq_store
    hq.kill()
    time.sleep(outage)
    hq.start()
    end = time.monotonic()
    row = _finish(s, hq, "HQ consumer (rfidd hq run) SIGKILL", end, 60 + outage)
    assert row.expected > 0 and row.lost == 0, row


def test_hq_database_connections_terminated(hq_store: tuple[FaultStore, RealHq],
                                            outage: float) -> None:
    s, hq = hq_store
    deadline = time.monotonic() + outage
    killed = 0
    while time.monotonic() < deadline:  # again and again for the whole outage
        killed += hq.terminate_connections()
        time.sleep(0.5)
    end = time.monotonic()
    assert killed > 0, "no HQ connection to terminate"
    row = _finish(s, hq, "HQ PostgreSQL connections terminated", end, 60 + outage,
                  note=f"{killed} connections killed")
    assert hq.proc is not None and hq.proc.poll() is None, "the HQ consumer died"
    assert row.expected > 0 and row.lost == 0, row


@pytest.mark.xfail(strict=True, reason=(
    "needs HQ gap repair (issue 13): Mosquitto acknowledges a QoS 1 publish before it is on "
    "disk, so a broker SIGKILLed before its autosave loses what HQ had not yet received; only "
    "HQ asking the site to replay its journal (cmd/replay) can recover it"))
def test_broker_sigkilled_after_acknowledging_an_unpersisted_burst(
        hq_store: tuple[FaultStore, RealHq], outage: float) -> None:
    s, hq = hq_store
    broker = s.broker
    broker.restart()  # a clean stop saves HQ's session; from here on nothing is saved
    hq.kill()  # HQ away: the burst waits in its session, in the broker's memory only
    s.hq.kill()
    before = len(s.journal())
    wait_until(lambda: len(s.journal()) >= before + 30, "a burst journaled", timeout=60)

    def all_acknowledged() -> bool:
        with sqlite3.connect(f"file:{s.db_file}?mode=ro", uri=True) as c:
            return c.execute("SELECT count(*) FROM outbox WHERE sent_at IS NULL AND "
                             "stream = 'epcis'").fetchone()[0] == 0

    s.stop_stream()
    wait_until(all_acknowledged, "the broker acknowledging the burst", timeout=60)
    assert broker.proc is not None
    broker.proc.kill()  # SIGKILL: no save
    broker.proc.wait(10)
    broker.proc = None
    broker.start()
    hq.start()
    s.hq.start()
    end = time.monotonic()
    row = _finish(s, hq, "broker SIGKILL after PUBACK (unpersisted)", end, 30 + outage,
                  note="xfail until HQ gap repair")
    assert row.lost == 0, row
