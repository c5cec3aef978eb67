"""The ingest thread's rules that need no sockets: backlog-aware departures, queue overflow."""

from __future__ import annotations

import json
import logging
import threading

import pytest

from inventory.epc import EpcClassifier, sgtin96_hex
from inventory.presence import PresenceTracker
from readers.base import ReaderState, TagRead
from rfidd.ingest import Ingestor
from rfidd.intake import IngestQueue
from rfidd.metrics import Metrics
from rfidd.store.db import open_database


def _ingestor(maxsize: int = 100) -> tuple[Ingestor, IngestQueue]:
    metrics = Metrics()
    q = IngestQueue(metrics, maxsize=maxsize)
    db = open_database("sqlite://")
    tracker = PresenceTracker(departure_s=10, move_margin_db=0, move_margin_decay_s=1)
    ing = Ingestor(source=q, database=db, tracker=tracker, lock=threading.RLock(),
                   classifier=EpcClassifier(()), zone_of={("r1", 1): "floor"},
                   rules=lambda changes, decoded: [], encode=lambda ev: {}, metrics=metrics,
                   stop=threading.Event())
    q.on_state("r1", ReaderState.ONLINE, "test")
    return ing, q


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


def test_a_failing_hook_loses_its_part_only() -> None:
    from sqlalchemy.orm import Session

    from rfidd.store import repo
    from rfidd.store.models import OutboxMessage, ZonePresence

    ing, _ = _ingestor()

    def good(s: Session, changes: list[object], decoded: object) -> None:
        repo.apply_batch(s, messages=[repo.Message("alert", "alerts", {"ok": len(changes)})])

    def bad(s: Session, changes: list[object], decoded: object) -> None:
        repo.apply_batch(s, messages=[repo.Message("alert", "alerts", {"bad": True})])
        raise RuntimeError("hook bug")

    ing.hooks = [bad, good]
    ing.process([("r1", [TagRead(EPC, "r1", 1, -50.0, 1000.0)])])
    with ing.db.session() as s:
        assert [r.epc for r in s.query(ZonePresence)] == [EPC]  # the batch itself committed
        assert [json.loads(r.payload) for r in s.query(OutboxMessage)] == [{"ok": 1}]
    assert ing.stats.hook_errors == 1


def test_departures_are_committed_when_read_hooks_are_registered() -> None:
    """A sweep has no reads: the read hooks (an exit gate's) must not break its batch."""
    from rfidd.store.models import ZonePresence

    ing, _ = _ingestor()
    seen: list[object] = []
    ing.read_hooks = [(frozenset({"exit"}), lambda s, reads: seen.append(reads))]
    ing.process([("r1", [TagRead(EPC, "r1", 1, -50.0, 1000.0)])])
    ing.sweep(now=2000.0)
    with ing.db.session() as s:
        assert s.query(ZonePresence).count() == 0  # the departure reached the database
    assert ing.stats.batch_errors == 0 and seen == []
