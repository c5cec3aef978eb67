"""`rfidd hq bench`: what this HQ database sustains, measured on this machine.

1. storage: synthetic events of S sites written through the consumer's own batch writer
   (HqStore.write_batch: dedup by eventID, EPC index rows, sequence bookkeeping) -> events/s;
2. the standard EPCIS queries through the REST interface's query code (MATCH_epc, bizStep in a
   time window, eventType since a record time, one event by id) -> p50/p99 in ms;
3. backfill: a site journal re-queued through its outbox (rfidd.store.repo.queue_replay) on
   SQLite -> events/s; and HQ storing those replayed copies again (all duplicates) -> events/s.
Run it on a scratch database: it adds `bench-NN` sites and their events.
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rfidd.hq import epcis_query as eq
from rfidd.hq.documents import EventRow
from rfidd.hq.store import Batch, HqStore

STEPS = (("receiving", "sellable_not_accessible"), ("stocking", "sellable_accessible"),
         ("cycle_counting", "sellable_accessible"), ("retail_selling", "retail_sold"),
         ("shipping", "in_transit"))
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass(slots=True)
class BenchResult:
    events: int
    store_s: float
    queries: dict[str, tuple[float, float]]  # name -> (p50 ms, p99 ms)
    replay_queue_per_s: float
    replay_store_per_s: float

    def lines(self) -> list[str]:
        out = [f"stored {self.events:,} events in {self.store_s:.1f} s = "
               f"{self.events / self.store_s:,.0f} events/s"]
        for name, (p50, p99) in self.queries.items():
            out.append(f"query {name}: p50 {p50:.1f} ms, p99 {p99:.1f} ms")
        out.append(f"backfill: site re-queues {self.replay_queue_per_s:,.0f} events/s; "
                   f"HQ stores replayed copies at {self.replay_store_per_s:,.0f} events/s")
        return out


def _row(site: str, n: int, seq: int, span_s: float, tag: str) -> EventRow:
    step, disp = STEPS[n % len(STEPS)]
    epc = f"urn:epc:id:sgtin:0614141.{100000 + n % 50000:06d}.{n}"
    t = T0 + timedelta(seconds=span_s * (n / 1e6))
    eid = f"urn:uuid:{tag}-{site}-{n}"
    rp = f"urn:epc:id:sgln:0614141.{site[-2:]}000.stock"
    loc = f"urn:epc:id:sgln:0614141.{site[-2:]}000.0"
    raw: dict[str, Any] = {"type": "ObjectEvent", "eventID": eid,
           "eventTime": t.isoformat(), "eventTimeZoneOffset": "+00:00", "epcList": [epc],
           "action": "OBSERVE", "bizStep": step, "disposition": disp, "rfidd:seq": seq,
           "readPoint": {"id": rp}, "bizLocation": {"id": loc}}
    return EventRow(eid, site, "ObjectEvent", t, "OBSERVE", step, disp, rp, loc, None, raw,
                    (epc,), seq=seq)


def _timed(fn: Callable[[], Any], n: int) -> tuple[float, float]:
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    samples.sort()
    return statistics.median(samples), samples[min(len(samples) - 1, int(len(samples) * 0.99))]


def run(store: HqStore, events: int, sites: int = 10, batch: int = 2000, queries: int = 200,
        replay_events: int = 20_000, progress: Callable[[str], None] = print) -> BenchResult:
    tag = uuid.uuid4().hex[:8]
    names = [f"bench-{i:02d}" for i in range(sites)]
    rnd = random.Random(1)
    t0 = time.perf_counter()
    done = 0
    seqs = dict.fromkeys(names, 0)
    while done < events:
        rows = []
        for n in range(done, min(events, done + batch)):
            site = names[n % sites]
            seqs[site] += 1
            rows.append(_row(site, n, seqs[site], 365 * 86400, tag))
        store.write_batch(Batch(events=rows, trusted=True))
        done += len(rows)
        if done % (batch * 50) == 0:
            progress(f"  {done:,} events stored ({done / (time.perf_counter() - t0):,.0f}/s)")
    store_s = time.perf_counter() - t0
    if store.dialect == "postgresql":  # fresh statistics, as autovacuum would give them
        from sqlalchemy import text

        with store.engine.begin() as conn:
            conn.execute(text("ANALYZE hq_events"))
            conn.execute(text("ANALYZE hq_event_epcs"))

    def q(params: dict[str, list[str]]) -> Callable[[], Any]:
        return lambda: eq.run(store.engine, eq.parse_query(params))

    def by_epc() -> Any:
        n = rnd.randrange(events)
        return eq.run(store.engine, eq.parse_query(
            {"MATCH_epc": [f"urn:epc:id:sgtin:0614141.{100000 + n % 50000:06d}.{n}"]}))

    def window() -> Any:
        start = T0 + timedelta(days=rnd.randrange(360))
        return eq.run(store.engine, eq.parse_query({
            "EQ_bizStep": ["receiving"], "GE_eventTime": [start.isoformat()],
            "LT_eventTime": [(start + timedelta(days=1)).isoformat()], "perPage": ["100"]}))

    def by_id() -> Any:
        n = rnd.randrange(events)
        return eq.run(store.engine, eq.parse_query(
            {"EQ_eventID": [f"urn:uuid:{tag}-{names[n % sites]}-{n}"]}))

    recent = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    results = {
        "MATCH_epc": _timed(by_epc, queries),
        "EQ_bizStep + eventTime window (perPage 100)": _timed(window, queries),
        "EQ_eventID": _timed(by_id, queries),
        "eventType + GE_recordTime (perPage 100)": _timed(
            q({"eventType": ["ObjectEvent"], "GE_recordTime": [recent], "perPage": ["100"]}),
            queries),
    }
    queue_rate = _site_requeue_rate(replay_events)
    # HQ receiving a backfill of what it already holds: every copy is a counted duplicate.
    n_replay = min(replay_events, events)
    t1 = time.perf_counter()
    for lo in range(0, n_replay, batch):
        rows = []
        for n in range(lo, min(n_replay, lo + batch)):
            site = names[n % sites]
            rows.append(_row(site, n, n // sites + 1, 365 * 86400, tag))
        store.write_batch(Batch(events=rows, trusted=True))
    replay_store = n_replay / max(1e-9, time.perf_counter() - t1)
    return BenchResult(events, store_s, results, queue_rate, replay_store)


def _site_requeue_rate(n: int) -> float:
    """Events/s a site's journal is queued again for a replay (SQLite, as on a store PC)."""
    from inventory.events import Action, ItemEvent, stable_event_id
    from rfidd.store import apply_batch, event_record, mark_sent, open_database, repo

    with tempfile.TemporaryDirectory() as tmp:
        db = open_database(f"sqlite:///{Path(tmp) / 'site.db'}")
        try:
            for lo in range(0, n, 1000):
                evs = [ItemEvent(stable_event_id("bench", i), 1.79e9 + i, Action.OBSERVE,
                                 (f"3034257BF7194E40{i:08X}",), "storing",
                                 "sellable_not_accessible", None, None)
                       for i in range(lo, min(n, lo + 1000))]
                with db.write() as s:
                    apply_batch(s, events=[event_record(e) for e in evs])
                    mark_sent(s, [r.id for r in repo.outbox_pending(s, 1000)])
            t0 = time.perf_counter()
            for lo in range(1, n + 1, 5000):
                with db.write() as s:
                    repo.queue_replay(s, lo, min(n, lo + 4999))
            return n / max(1e-9, time.perf_counter() - t0)
        finally:
            db.dispose()
