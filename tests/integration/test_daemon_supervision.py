"""The supervisor loop over a real daemon: the systemd watchdog is fed while the database is
down (and staff get a prompt 503), starved only by a thread that truly hangs; a dead reader
thread is started again; components stop in reverse order of start."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeReader, site_config
from sqlalchemy import event
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session
from waits import wait_until

import rfidd.ingest as ingest_mod
from inventory.epc import sgtin96_hex
from rfidd.app import Daemon, Timings
from rfidd.health import ServiceUnavailable
from rfidd.intake import IngestQueue
from rfidd.store.db import _WRITE_OPTION
from rfidd.store.models import OutboxMessage

pytestmark = pytest.mark.integration

EPCS = [sgtin96_hex("03760001001013", i, 7) for i in range(1, 4)]
MORE = [sgtin96_hex("03760001001013", i, 7) for i in range(4, 7)]


class RecordingNotifier:
    """Stands in for sd_notify: what the daemon told systemd."""

    watchdog_s = None

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def ready(self, status: str = "") -> None:
        self.calls.append(("ready", status))

    def stopping(self) -> None:
        self.calls.append(("stopping", ""))

    def watchdog(self) -> None:
        self.calls.append(("watchdog", ""))

    def status(self, text: str) -> None:
        self.calls.append(("status", text))

    def fed(self) -> int:
        return sum(1 for c, _ in self.calls if c == "watchdog")


def _daemon(tmp_path: Path) -> tuple[Daemon, dict[str, FakeReader], RecordingNotifier]:
    cfg = site_config(tmp_path, readers={
        "door": {"kind": "llrp", "address": "127.0.0.1",
                 "antennas": {"1": "floor", "2": "stockroom", "3": "exit"}}})
    readers: dict[str, FakeReader] = {}

    def factory(name: str, _rc: Any, q: IngestQueue) -> FakeReader:
        readers[name] = FakeReader(name, q)
        return readers[name]

    daemon = Daemon(cfg, timings=Timings(sweep_s=3600, stop_timeout_s=5.0),
                    reader_factory=factory)
    notifier = RecordingNotifier()
    daemon.notifier = notifier  # type: ignore[assignment]
    daemon.start()
    assert daemon.ingestor is not None
    daemon.ingestor.retry_initial_s = daemon.ingestor.retry_max_s = 0.05
    return daemon, readers, notifier


def _outbox_streams(daemon: Daemon) -> list[str]:
    assert daemon.db is not None
    with daemon.db.session() as s:
        return [r.stream for r in s.query(OutboxMessage)]


def test_the_watchdog_is_fed_while_the_database_is_down(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    daemon, readers, notifier = _daemon(tmp_path)
    real = ingest_mod.repo.apply_batch
    full = {"on": True}

    def apply_batch(*a: Any, **k: Any) -> Any:
        if full["on"]:
            raise OperationalError("INSERT ...", {},
                                   sqlite3.OperationalError("database or disk is full"))
        return real(*a, **k)

    monkeypatch.setattr(ingest_mod.repo, "apply_batch", apply_batch)
    try:
        readers["door"].read(EPCS)
        assert daemon.ctx is not None and daemon.lifecycle is not None
        wait_until(lambda: not daemon.ctx.health.up, "the ingest to find the database down")
        fed = notifier.fed()
        for _ in range(3):
            daemon.tick()
        assert notifier.fed() == fed + 3  # the outage does not get the daemon killed
        assert any(c == "status" and "database unavailable" in t for c, t in notifier.calls)
        t0 = time.monotonic()
        with pytest.raises(ServiceUnavailable, match="disk is full"):
            daemon.lifecycle.handle("sale", {"txn": "R-1", "epcs": [EPCS[0]]})
        assert time.monotonic() - t0 < 1.0  # a staff write answers at once, with the reason
        readers["door"].read(MORE, antenna=2)  # reads keep queueing meanwhile
    finally:
        full["on"] = False  # space is back
    wait_until(lambda: daemon.ctx is not None and daemon.ctx.health.up, "the database back")
    wait_until(lambda: _outbox_streams(daemon).count("epcis") >= 6,
               "every arrival committed")
    wait_until(lambda: "alert" in _outbox_streams(daemon), "the outage alert in the outbox")
    reg = daemon.metrics.registry
    assert (reg.get_sample_value("rfidd_database_errors_total") or 0) >= 1
    daemon.stop()


def test_an_exit_alert_survives_a_retried_commit(tmp_path: Path) -> None:
    """The disk fills at COMMIT time, twice, while an unsold bag passes the exit gate: the
    retried batch still carries its alert (once), and every event reaches the outbox once."""
    daemon, readers, _ = _daemon(tmp_path)
    failures = {"left": 2}

    def full_at_commit(session: Any) -> None:
        writing = session.connection().get_execution_options().get(_WRITE_OPTION, False)
        if writing and failures["left"] > 0 and threading.current_thread().name == "ingest":
            failures["left"] -= 1
            raise OperationalError("COMMIT", {},
                                   sqlite3.OperationalError("database or disk is full"))

    event.listen(Session, "before_commit", full_at_commit)
    try:
        readers["door"].read(EPCS[:1], antenna=3)  # the exit gate
        wait_until(lambda: _outbox_streams(daemon).count("alert") >= 2,
                   "the exit alert and the outage's", timeout=15)
    finally:
        event.remove(Session, "before_commit", full_at_commit)
    assert failures["left"] == 0
    assert daemon.db is not None
    with daemon.db.session() as s:
        rows = [(r.stream, r.event_id) for r in s.query(OutboxMessage)]
        kinds = [json.loads(r.payload)["type"] for r in s.query(OutboxMessage)
                 if r.stream == "alert"]
    assert sorted(kinds) == ["database_unavailable", "exit_unsold"]  # each once
    assert len({eid for _, eid in rows}) == len(rows)  # nothing twice
    assert daemon.ops is not None and daemon.ops.exits.exit_monitor.alerts == 1
    daemon.stop()


def test_a_dead_reader_thread_is_restarted_and_a_hung_one_starves_the_watchdog(
        tmp_path: Path) -> None:
    daemon, readers, notifier = _daemon(tmp_path)
    door = readers["door"]
    door.dead = True
    fed = notifier.fed()
    daemon.tick()
    assert door.starts == 2 and door.running()
    assert daemon.metrics.registry.get_sample_value(
        "rfidd_reader_thread_restarts_total", {"reader": "door"}) == 1
    assert notifier.fed() == fed + 1
    door.late_s = 45.0  # stuck in a driver call: Python cannot stop it, systemd restarts us
    daemon.tick()
    assert notifier.fed() == fed + 1
    door.late_s = 0.0
    daemon.tick()
    assert notifier.fed() == fed + 2
    daemon.stop()


def test_components_stop_in_reverse_order_and_the_last_reads_are_kept(
        tmp_path: Path) -> None:
    daemon, readers, _ = _daemon(tmp_path)
    readers["door"].read(EPCS)  # delivered just before the stop: still ingested
    daemon.stop()
    # Readers first (their last reads go in), the ingest drains before the services save
    # their state, the HQ link (when on) publishes what ingest committed, the database last.
    assert daemon.stopped == ["readers", "scheduler", "ingest", "store operations",
                              "lifecycle", "database"]
    from rfidd.store.db import open_database

    db = open_database(daemon.config.database.url)
    with db.session() as s:
        assert sum(1 for r in s.query(OutboxMessage) if r.stream == "epcis") == 3
    db.dispose()
