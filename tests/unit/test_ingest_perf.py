"""The ingest's work per read at scale: present items are not decoded again, last-seen flushes
go out in bounded transactions between batches, shed reads are counted per reader."""

from __future__ import annotations

import pytest
from fakes import make_ingestor
from sqlalchemy import func, select

import rfidd.ingest
from inventory.epc import sgtin96_hex
from readers.base import TagRead
from rfidd.ingest import Ingestor
from rfidd.intake import IngestQueue
from rfidd.store.db import open_database
from rfidd.store.models import ZonePresence

EPCS = [sgtin96_hex("03760001001013", i, 7) for i in range(1, 51)]


def _ingestor(maxsize: int = 100) -> tuple[Ingestor, IngestQueue]:
    return make_ingestor(open_database("sqlite://"), {("r1", 1): "floor", ("r2", 1): "floor"},
                         {"floor": "floor"}, maxsize=maxsize)


def test_present_items_are_not_decoded_again(monkeypatch: pytest.MonkeyPatch) -> None:
    ing, _ = _ingestor()
    calls: list[str] = []
    real = rfidd.ingest.decode

    def counting(epc: str) -> object:
        calls.append(epc)
        return real(epc)

    monkeypatch.setattr(rfidd.ingest, "decode", counting)
    ing.process([("r1", [TagRead(e, "r1", 1, -50.0, 1000.0) for e in EPCS])])
    assert sorted(set(calls)) == sorted(EPCS)
    calls.clear()
    for k in range(3):
        ing.process([("r1", [TagRead(e, "r1", 1, -50.0, 1001.0 + k) for e in EPCS])])
    assert calls == []
    assert ing.stats.reads == ing.stats.committed_reads == 4 * len(EPCS)
    assert ing.tracker.get(EPCS[0]).read_count == 4  # type: ignore[union-attr]


def test_last_seen_flush_goes_in_bounded_chunks_between_batches() -> None:
    ing, _q = _ingestor()
    ing.flush_rows_per_tx = 20
    ing.process([("r1", [TagRead(e, "r1", 1, -50.0, 1000.0) for e in EPCS])])
    ing.process([("r1", [TagRead(e, "r1", 1, -50.0, 1010.0) for e in EPCS])])

    def stale() -> int:
        with ing.db.session() as s:
            return int(s.scalar(select(func.count()).select_from(ZonePresence)
                                .where(ZonePresence.last_seen < 1010.0)) or 0)

    assert stale() == len(EPCS)
    ing._start_flush()
    assert ing._flush_chunk() == 20  # one bounded transaction ...
    assert stale() == len(EPCS) - 20
    ing.process([("r1", [TagRead(EPCS[0], "r1", 1, -50.0, 1020.0)])])  # ... reads in between
    while ing._flush_todo:
        assert ing._flush_chunk() <= 20
    assert stale() == 0
    assert ing.flush_last_seen() == 1  # the item read during the flush goes in the next one
    with ing.db.session() as s:
        row = s.get(ZonePresence, EPCS[0])
        assert row is not None and row.last_seen == 1020.0


def test_shed_reads_are_counted_per_reader() -> None:
    ing, q = _ingestor(maxsize=1)
    q.on_reads("r1", [TagRead(EPCS[0], "r1", 1, -50.0, 1000.0)])
    q.on_reads("r1", [TagRead(e, "r1", 1, -50.0, 1000.0) for e in EPCS[:3]])
    q.on_reads("r2", [TagRead(e, "r2", 1, -50.0, 1000.0) for e in EPCS[:5]])
    value = ing.metrics.registry.get_sample_value
    assert value("rfidd_ingest_dropped_reads_total", {"reader": "r1"}) == 3
    assert value("rfidd_ingest_dropped_reads_total", {"reader": "r2"}) == 5


def test_past_capacity_each_reader_keeps_its_share_of_the_queue() -> None:
    """A reader that floods the full queue is shed past its share; a quieter one is not shed
    at all (without shares, whoever delivers after the flood loses everything)."""
    ing, q = _ingestor(maxsize=10)
    one = [TagRead(EPCS[0], "r1", 1, -50.0, 1000.0)]
    q.on_reads("r1", one)
    q.on_reads("r2", [TagRead(EPCS[1], "r2", 1, -50.0, 1000.0)])  # both readers known
    value = ing.metrics.registry.get_sample_value

    def dropped(reader: str) -> float:
        return value("rfidd_ingest_dropped_reads_total", {"reader": reader}) or 0.0

    offered = {"r1": 0, "r2": 0}
    for _turn in range(50):  # r1 offers four times what r2 does; the ingest takes 2 a turn
        for _ in range(4):
            q.on_reads("r1", one)
            offered["r1"] += 1
        q.on_reads("r2", [TagRead(EPCS[1], "r2", 1, -50.0, 1000.0)])
        offered["r2"] += 1
        for _ in range(2):
            q.get(0.01)
    assert dropped("r2") == 0
    assert dropped("r1") >= offered["r1"] - 2 * 50  # what did not fit is r1's, counted
    assert q.queued("r1") <= 5 and q.q.qsize() <= 10
