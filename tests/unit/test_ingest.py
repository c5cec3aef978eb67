"""The ingest thread's rules that need no sockets: backlog-aware departures, queue overflow."""

from __future__ import annotations

import json
import logging
import time

import pytest
from fakes import make_ingestor
from sqlalchemy.orm import Session

from inventory.epc import sgtin96_hex
from readers.base import TagRead
from rfidd.ingest import Ingestor
from rfidd.intake import IngestQueue
from rfidd.pipeline import BatchPlan, BatchView
from rfidd.store import repo
from rfidd.store.db import open_database
from rfidd.store.models import OutboxMessage, ZonePresence


def _ingestor(maxsize: int = 100) -> tuple[Ingestor, IngestQueue]:
    return make_ingestor(open_database("sqlite://"), {("r1", 1): "floor"}, {"floor": "floor"},
                         maxsize=maxsize)


EPC = sgtin96_hex("03760001001013", 1, 7)


def test_a_backlog_is_not_an_absence() -> None:
    ing, q = _ingestor()
    ing.process([("r1", [TagRead(EPC, "r1", 1, -50.0, 1000.0)])])
    assert ing.tracker.zone_of(EPC) == "floor"
    # Reads of t=1015 are still queued: judged by the last read processed (t=1000), the item
    # was seen 0 s ago, not 30 s ago.
    q.on_reads("r1", [TagRead(EPC, "r1", 1, -50.0, 1015.0)])
    ing.sweep(now=1030.0)
    assert ing.tracker.zone_of(EPC) == "floor"
    ing.process([q.q.get_nowait()])
    ing.sweep(now=1030.0)  # queue empty: wall time; 15 s unseen > departure_s
    assert ing.tracker.zone_of(EPC) is None


def test_a_shed_reader_is_silence_not_absence() -> None:
    """Under overload, the items of a reader whose reads were shed are not departed (and then
    arrived again, events that would slow the ingest further) until it stops shedding."""
    ing, q = _ingestor(maxsize=1)
    other = sgtin96_hex("03760001001013", 1, 8)
    t = time.time()
    ing.process([("r1", [TagRead(EPC, "r1", 1, -50.0, t - 60.0)])])
    q.on_reads("r1", [TagRead(other, "r1", 1, -50.0, t)])  # queued
    q.on_reads("r1", [TagRead(EPC, "r1", 1, -50.0, t)])  # shed: the queue is full
    assert ing.metrics.registry.get_sample_value(
        "rfidd_ingest_dropped_reads_total", {"reader": "r1"}) == 1
    ing.process([q.q.get_nowait()])
    ing.sweep(now=time.time())  # EPC unseen for 60 s, but its reader's reads were shed
    assert ing.tracker.zone_of(EPC) == "floor"
    ing.sweep(now=time.time() + ing.tracker.departure_s + 1.0)  # no shed since: it departs
    assert ing.tracker.zone_of(EPC) is None


def test_queue_overflow_is_counted_and_logged_once_per_period(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ing, q = _ingestor(maxsize=2)
    with caplog.at_level(logging.WARNING, logger="rfidd.ingest"):
        for i in range(10):
            q.on_reads("r1", [TagRead(EPC, "r1", 1, -50.0, 1000.0 + i)])
    assert q.q.qsize() == 2
    assert ing.metrics.registry.get_sample_value("rfidd_ingest_dropped_batches_total") == 8
    assert len([r for r in caplog.records if "queue full" in r.message]) == 1


class Component:
    """A batch component that plans one message per batch; `fail` names the phase to break."""

    def __init__(self, name: str, fail: str = "", zones: frozenset[str] = frozenset()) -> None:
        self.name, self.fail, self.watched_zones = name, fail, zones
        self.applied = 0
        self.views: list[BatchView] = []

    def plan(self, view: BatchView) -> BatchPlan | None:
        self.views.append(view)
        if self.fail == "plan":
            raise RuntimeError("plan bug")

        def write(s: Session) -> None:
            if self.fail == "write":
                raise RuntimeError("write bug")

        def apply() -> None:
            if self.fail == "apply":
                raise RuntimeError("apply bug")
            self.applied += 1

        return BatchPlan(messages=[repo.Message("alert", "alerts", {self.name: len(view.changes)})],
                         write=write, apply=apply)


@pytest.mark.parametrize("phase", ["plan", "write", "apply"])
def test_a_failing_component_loses_its_part_only(phase: str) -> None:
    ing, _ = _ingestor()
    good, bad = Component("good"), Component("bad", fail=phase)
    ing.add_component(bad)
    ing.add_component(good)
    ing.process([("r1", [TagRead(EPC, "r1", 1, -50.0, 1000.0)])])
    with ing.db.session() as s:
        assert [r.epc for r in s.query(ZonePresence)] == [EPC]  # the batch itself committed
        payloads = [json.loads(r.payload) for r in s.query(OutboxMessage)
                    if r.stream == "alert"]
    # A component whose apply fails has committed its rows: only memory is behind.
    assert payloads == ([{"bad": 1}, {"good": 1}] if phase == "apply" else [{"good": 1}])
    assert ing.stats.hook_errors == 1 and good.applied == 1
    assert ing.metrics.registry.get_sample_value(
        "rfidd_ingest_component_errors_total", {"component": "bad"}) == 1


def test_departures_are_committed_when_reads_are_watched() -> None:
    """A sweep has no reads: a component watching an exit gate must not break its batch."""
    ing, _ = _ingestor()
    watcher = Component("exit", zones=frozenset({"exit"}))
    ing.add_component(watcher)
    ing.process([("r1", [TagRead(EPC, "r1", 1, -50.0, 1000.0)])])
    ing.sweep(now=2000.0)
    with ing.db.session() as s:
        assert s.query(ZonePresence).count() == 0  # the departure reached the database
    assert ing.stats.batch_errors == 0
    assert all(v.reads == [] for v in watcher.views)


def test_an_idle_ingest_wakes_for_requests_and_counts_every_batch_taken() -> None:
    """The idle wait ends on a read or a wake (sweep, flush, stop), never by polling; every batch
    it takes, the first of a window included, leaves the reader's queued count (a count that
    leaked one per window would shed that reader for good once it reached its share)."""
    ing, q = _ingestor()
    ing.idle_wait_s = 3600.0  # only a read or a wake can end the wait
    ing.batch_max_s = 0.0
    for i in range(3):
        q.on_reads("r1", [TagRead(EPC, "r1", 1, -50.0, 1000.0 + i)])
        assert q.queued("r1") == 1
        assert len(ing._collect()) == 1 and q.queued("r1") == 0
    q.wake()
    assert ing._collect() == [] and q.q.qsize() == 0  # woken: no batch, nothing left over
    ing.request_sweep()
    ing.request_flush()
    assert q.q.qsize() == 2 and q.queued("r1") == 0  # each request wakes a waiting ingest
