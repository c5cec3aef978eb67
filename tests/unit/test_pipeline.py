"""Plan, commit, apply: a database error mid-batch is retried with the same plans, and no lock
is held while the ingest waits (staff get a prompt 503, the watchdog is fed)."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
from fakes import make_ingestor
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session
from waits import wait_until

from inventory.epc import sgtin96_hex
from readers.base import TagRead
from rfidd.health import DomainLock, ServiceUnavailable
from rfidd.pipeline import BatchPlan, BatchView
from rfidd.store import repo
from rfidd.store.db import open_database
from rfidd.store.models import OutboxMessage

EPC = sgtin96_hex("03760001001013", 1, 7)


def disk_full() -> OperationalError:
    return OperationalError("INSERT INTO outbox ...", {},
                            sqlite3.OperationalError("database or disk is full"))


class Flaky:
    """Plans one alert per batch; its write fails with a database error `failures` times,
    then blocks on `gate` if one is given (a database that hangs)."""

    name = "flaky"
    watched_zones: frozenset[str] = frozenset()

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.writes = 0
        self.applied: list[str] = []
        self.failing = threading.Event()

    def plan(self, view: BatchView) -> BatchPlan:
        alert_id = f"alert-{view.changes[0].epc}"

        def write(s: Session) -> None:
            self.writes += 1
            if self.writes <= self.failures:
                self.failing.set()
                raise disk_full()
            self.failing.clear()

        return BatchPlan(messages=[repo.Message("alert", "alerts", {"id": alert_id},
                                                event_id=alert_id)],
                         write=write, apply=lambda: self.applied.append(alert_id))


def _outbox(ing: object) -> list[tuple[str, str | None]]:
    with ing.db.session() as s:  # type: ignore[attr-defined]
        return [(r.stream, r.event_id) for r in s.query(OutboxMessage)]


def test_a_retried_commit_replays_the_same_plans(tmp_path: Path) -> None:
    ing, _ = make_ingestor(open_database(f"sqlite:///{tmp_path / 'r.db'}"),
                           {("r1", 1): "floor"}, {"floor": "floor"})
    flaky = Flaky(failures=3)
    ing.add_component(flaky)
    ing.process([("r1", [TagRead(EPC, "r1", 1, -50.0, 1000.0)])])
    rows = _outbox(ing)
    # The arrival event and the alert, each exactly once; applied once, after the commit.
    assert sorted(st for st, _ in rows) == ["alert", "epcis"]
    assert flaky.applied == [f"alert-{EPC}"] and flaky.writes == 4
    assert ing.stats.db_errors == 3 and ing.stats.commits == 1 and ing.stats.events == 1
    reg = ing.metrics.registry
    assert reg.get_sample_value("rfidd_database_errors_total") == 3
    assert reg.get_sample_value("rfidd_database_up") == 1
    assert reg.get_sample_value("rfidd_events_total", {"biz_step": "observe"}) == 1
    assert ing.health.up


def test_no_lock_is_held_while_the_database_is_retried(tmp_path: Path) -> None:
    lock = DomainLock(timeout_s=0.5)
    ing, _ = make_ingestor(open_database(f"sqlite:///{tmp_path / 'r.db'}"),
                           {("r1", 1): "floor"}, {"floor": "floor"}, lock=lock)
    ing.retry_initial_s = ing.retry_max_s = 0.2
    flaky = Flaky(failures=10**9)  # down until the test says otherwise
    ing.add_component(flaky)
    t = threading.Thread(target=ing.process,
                         args=([("r1", [TagRead(EPC, "r1", 1, -50.0, 1000.0)])],))
    t.start()
    try:
        wait_until(lambda: not ing.health.up, "the ingest to see the database down")
        # Staff: the lock is free between attempts (entered within its 0.5 s timeout), and a
        # write is refused at once with the reason instead of queueing behind the outage.
        for _ in range(5):
            with lock:
                pass
        with pytest.raises(ServiceUnavailable, match="database or disk is full"):
            ing.health.check()
        beat = ing.heartbeat
        wait_until(lambda: ing.heartbeat > beat, "a heartbeat while waiting on the database")
        assert flaky.applied == []  # nothing applied while nothing is committed
    finally:
        flaky.failures = 0  # space is back
        t.join(10)
    assert not t.is_alive()
    assert flaky.applied == [f"alert-{EPC}"]
    assert sorted(st for st, _ in _outbox(ing)) == ["alert", "epcis"]
    assert ing.health.up


def test_staff_transactions_answer_unavailable_while_the_database_is_down(
        tmp_path: Path) -> None:
    from fakes import service_context

    ctx = service_context(tmp_path)
    ctx.health.failed("database or disk is full")
    with pytest.raises(ServiceUnavailable, match="database unavailable"), ctx.transaction():
        pass
    ctx.health.recovered()
    with ctx.transaction() as s:
        repo.apply_batch(s, messages=[repo.Message("alert", "alerts", {"x": 1})])
