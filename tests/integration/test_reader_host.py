"""The reader host: LLRP readers in a child process, over real sockets to a simulated reader.

What the daemon knew of in-process readers it still knows (reads, TIDs, states, anomalies and
their metrics in its own registry, what `rfidd readers` shows); the child is restarted when it
dies, stopped with the daemon, and goes away by itself when the daemon is killed."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from waits import wait_until

from readers import supervise
from readers.base import ReaderState, TagRead
from rfidd.intake import IngestQueue
from rfidd.metrics import Metrics
from rfidd.reader_host import ReaderHost
from simulator.llrp import ReaderQuirks, SimulatedReader, StaticField

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

EPCS = [f"3034E57E0400194000{n:06X}" for n in range(20)]
CLONED = EPCS[3]


@pytest.fixture(autouse=True)
def fast_supervision(monkeypatch: pytest.MonkeyPatch) -> None:
    """Patched here, used in the child too (the host passes the constants on)."""
    monkeypatch.setattr(supervise, "BACKOFF_INITIAL_S", 0.05)
    monkeypatch.setattr(supervise, "BACKOFF_MAX_S", 0.2)
    monkeypatch.setattr(supervise, "BACKOFF_JITTER", 0.0)
    monkeypatch.setattr(supervise, "POLL_S", 0.01)


@pytest.fixture
def sim() -> Iterator[SimulatedReader]:
    s = SimulatedReader("dock", StaticField.of_hex({1: EPCS}, clones=(CLONED,)),
                        antennas=[1, 2], reads_per_s=600,
                        quirks=ReaderQuirks(needs_start_rospec=True), seed=5)
    s.start()
    yield s
    s.stop()


def _spec(port: int) -> dict[str, Any]:
    return {"name": "dock", "host": "127.0.0.1", "antennas": [1, 2], "options": {
        "port": port, "keepalive_s": 0.15, "handshake_timeout_s": 3.0,
        "report_every_n_tags": 10, "report_timeout_ms": 100, "verify_s": 0.3,
        "read_tid": True}}


class Drain:
    """The ingest's end of the queue: what reached it."""

    def __init__(self, q: IngestQueue) -> None:
        self.q = q
        self.reads: list[TagRead] = []

    def __call__(self) -> int:
        while True:
            try:
                self.reads.extend(self.q.get(0.001)[1])
            except queue.Empty:
                return len(self.reads)


def test_hosted_reader_delivers_what_an_in_process_one_did(sim: SimulatedReader) -> None:
    metrics = Metrics()
    intake = IngestQueue(metrics)
    host = ReaderHost([_spec(sim.port)], intake)
    dock = host.readers["dock"]
    drain = Drain(intake)
    host.start()
    try:
        wait_until(lambda: dock.state is ReaderState.ONLINE, "online", timeout=20)
        assert host.pid is not None and host.pid != os.getpid()
        wait_until(lambda: drain() > 0 and {r.epc for r in drain.reads} >= set(EPCS),
                   "every tag read through the child", timeout=20)
        assert all(r.reader == "dock" and r.antenna == 1 for r in drain.reads)
        wait_until(lambda: drain() > 0 and len(intake.tids.of(CLONED)) == 2,
                   "the TIDs across the pipe: the clone shows", timeout=20)
        assert all(r.tid is not None for r in drain.reads[-50:])
        value = metrics.registry.get_sample_value
        assert value("rfidd_reads_total", {"reader": "dock", "antenna": "1"}) >= len(EPCS)
        assert value("rfidd_reader_anomalies_total",
                     {"reader": "dock", "kind": "rospec_not_started"}) >= 1
        wait_until(lambda: dock.info().get("tid") is True, "the child's driver info")
        info = dock.info()
        assert info["kind"] == "llrp" and info["antennas_reporting"] == [1]
        assert info["process"] == {"pid": host.pid, "restarts": 0}
        assert dock.running() and dock.hung_for() == 0.0
    finally:
        host.stop(timeout=2.0)
    assert host.proc is not None and host.proc.poll() == 0
    assert dock.state is ReaderState.OFFLINE and not dock.running()
    n = drain()
    assert intake.activity["dock"].reason == "stopped"
    assert drain() == n  # nothing after the stop


def test_a_dead_host_is_restarted_and_reads_resume(sim: SimulatedReader) -> None:
    intake = IngestQueue(Metrics())
    host = ReaderHost([_spec(sim.port)], intake)
    dock = host.readers["dock"]
    drain = Drain(intake)
    host.start()
    try:
        wait_until(lambda: dock.state is ReaderState.ONLINE, "online", timeout=20)
        first = host.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        wait_until(lambda: dock.state is ReaderState.OFFLINE, "offline when the child died")
        assert intake.activity["dock"].reason == "reader host process died"
        assert not dock.running()
        dock.start()  # what the daemon's supervisor turn does for a reader not running
        wait_until(lambda: dock.state is ReaderState.ONLINE, "online again", timeout=20)
        assert host.pid != first and host.restarts == 1
        mark = drain()
        wait_until(lambda: drain() > mark + 20, "reads after the restart", timeout=20)
    finally:
        host.stop(timeout=2.0)


_ORPHAN = r"""
import sys, time
from rfidd.intake import IngestQueue
from rfidd.metrics import Metrics
from rfidd.reader_host import ReaderHost
host = ReaderHost([{"name": "dock", "host": "127.0.0.1", "antennas": [1],
                    "options": {"port": int(sys.argv[1])}}], IngestQueue(Metrics()))
host.start()
print(host.pid, flush=True)
time.sleep(600)
"""


def test_the_host_goes_away_when_the_daemon_is_killed(sim: SimulatedReader) -> None:
    parent = subprocess.Popen([sys.executable, "-c", _ORPHAN, str(sim.port)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert _alive(child)
        parent.kill()
        parent.wait(10)
        wait_until(lambda: not _alive(child), "the orphaned reader host to exit", timeout=20)
    finally:
        if parent.poll() is None:
            parent.kill()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"  # a zombie has exited (its reaper is not ours)


def test_reads_the_host_cannot_pass_on_are_counted_as_read_and_shed(
        sim: SimulatedReader, monkeypatch: pytest.MonkeyPatch) -> None:
    """A daemon that stops reading the pipe makes the host shed: per reader and antenna, in
    this process's registry, so read = ingested + shed still holds."""
    from readers import host as host_mod

    monkeypatch.setattr(host_mod, "MAX_PENDING", -1)  # the child's outbox is always "full"
    metrics = Metrics()
    intake = IngestQueue(metrics)
    host = ReaderHost([_spec(sim.port)], intake)
    value = metrics.registry.get_sample_value
    host.start()
    try:
        wait_until(lambda: (value("rfidd_ingest_dropped_reads_total", {"reader": "dock"})
                            or 0) > 20, "reads shed by the host", timeout=20)
    finally:
        host.stop(timeout=2.0)
    read = value("rfidd_reads_total", {"reader": "dock", "antenna": "1"})
    assert read == value("rfidd_ingest_dropped_reads_total", {"reader": "dock"})
    assert intake.q.qsize() == 0
