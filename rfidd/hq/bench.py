"""`rfidd hq bench`: what this HQ database sustains, measured on this machine.

1. the bulk: all but the last `real` events are loaded by COPY straight into the HQ tables
   (PostgreSQL; the same rows the writer would store, partitions made first), so a 10-million
   event database takes minutes, not hours -> its own events/s, labelled as the loader's;
2. storage: the last `real` events written through the consumer's own batch writer on top of
   the bulk (HqStore.write_batch: dedup by eventID, EPC rows, sequence bookkeeping) -> events/s;
3. the standard EPCIS queries through the REST interface's query code (MATCH_epc, bizStep in a
   one-day eventTime window, one event by id, EQ_bizLocation, GE_recordTime paged by
   nextPageToken) -> p50/p99 in ms;
4. backfill: a site journal re-queued through its outbox (rfidd.store.repo.queue_replay) on
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
    events: int  # in the database when the queries ran
    bulk: int  # of them loaded by COPY
    bulk_s: float
    real: int  # of them stored through HqStore.write_batch
    store_s: float
    queries: dict[str, tuple[float, float]]  # name -> (p50 ms, p99 ms)
    replay_queue_per_s: float
    replay_store_per_s: float

    def lines(self) -> list[str]:
        out = []
        if self.bulk:
            out.append(f"bulk: {self.bulk:,} events loaded by COPY in {self.bulk_s:.0f} s = "
                       f"{self.bulk / self.bulk_s:,.0f} events/s (the loader, not HQ's path)")
        out.append(f"stored {self.real:,} events through HQ's batch writer in "
                   f"{self.store_s:.1f} s = {self.real / self.store_s:,.0f} events/s "
                   f"(into a database of {self.events - self.real:,} before them)")
        for name, (p50, p99) in self.queries.items():
            out.append(f"query {name} at {self.events:,} events: p50 {p50:.1f} ms, "
                       f"p99 {p99:.1f} ms")
        out.append(f"backfill: site re-queues {self.replay_queue_per_s:,.0f} events/s; "
                   f"HQ stores replayed copies at {self.replay_store_per_s:,.0f} events/s")
        return out

    def to_json(self) -> dict[str, Any]:
        return {"events": self.events, "bulk_events": self.bulk, "bulk_s": self.bulk_s,
                "bulk_events_per_s": self.bulk / self.bulk_s if self.bulk else None,
                "stored_events": self.real, "store_s": self.store_s,
                "store_events_per_s": self.real / self.store_s,
                "queries_ms": {k: {"p50": a, "p99": b} for k, (a, b) in self.queries.items()},
                "replay_queue_events_per_s": self.replay_queue_per_s,
                "replay_store_events_per_s": self.replay_store_per_s}


@dataclass(frozen=True, slots=True)
class Layout:
    """Where synthetic event n goes: its site, time, EPC, ids (one formula for the loader,
    the writer and the queries that look for them)."""

    tag: str
    names: list[str]
    events: int
    span_s: float = 365 * 86400

    def site(self, n: int) -> str:
        return self.names[n % len(self.names)]

    def seq(self, n: int) -> int:
        return n // len(self.names) + 1

    def time(self, n: int) -> datetime:
        return T0 + timedelta(seconds=self.span_s * n / self.events)

    @staticmethod
    def epc(n: int) -> str:
        return f"urn:epc:id:sgtin:0614141.{100000 + n % 50000:06d}.{n}"

    def event_id(self, n: int) -> str:
        return f"urn:uuid:{self.tag}-{self.site(n)}-{n}"

    @staticmethod
    def location(site: str) -> tuple[str, str]:
        """(readPoint, bizLocation)"""
        return (f"urn:epc:id:sgln:0614141.{site[-2:]}000.stock",
                f"urn:epc:id:sgln:0614141.{site[-2:]}000.0")

    def row(self, n: int) -> EventRow:
        site = self.site(n)
        step, disp = STEPS[n % len(STEPS)]
        epc, t, eid, seq = self.epc(n), self.time(n), self.event_id(n), self.seq(n)
        rp, loc = self.location(site)
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
        replay_events: int = 20_000, real: int | None = None,
        progress: Callable[[str], None] = print) -> BenchResult:
    """`real` events (default: all, or 200,000 of a bigger run on PostgreSQL) go through the
    batch writer, the rest through the COPY loader first."""
    lay = Layout(uuid.uuid4().hex[:8], [f"bench-{i:02d}" for i in range(sites)], events)
    if real is None:
        real = events if store.dialect != "postgresql" else min(events, 200_000)
    real = max(1, min(real, events))
    bulk = events - real
    bulk_s = 0.0
    if bulk:
        from rfidd.hq.bench_load import bulk_load

        bulk_s = bulk_load(store, lay, bulk, progress)
    t0 = time.perf_counter()
    done = bulk
    while done < events:
        rows = [lay.row(n) for n in range(done, min(events, done + batch))]
        store.write_batch(Batch(events=rows, trusted=True))
        done += len(rows)
        if (done - bulk) % (batch * 50) == 0:
            progress(f"  {done - bulk:,} events stored "
                     f"({(done - bulk) / (time.perf_counter() - t0):,.0f}/s)")
    store_s = time.perf_counter() - t0
    if store.dialect == "postgresql":  # fresh statistics, as autovacuum would give them
        from sqlalchemy import text

        with store.engine.begin() as conn:
            for table in ("hq_events", "hq_event_epcs", "hq_event_ids"):
                conn.execute(text(f"ANALYZE {table}"))
    held = _count(store)
    progress(f"  queries at {held:,} events...")
    results = _queries(store, lay, queries)
    queue_rate = _site_requeue_rate(replay_events)
    # HQ receiving a backfill of what it already holds: every copy is a counted duplicate.
    n_replay = min(replay_events, events)
    t1 = time.perf_counter()
    for lo in range(0, n_replay, batch):
        store.write_batch(Batch(events=[lay.row(n) for n in range(lo, min(n_replay, lo + batch))],
                                trusted=True))
    replay_store = n_replay / max(1e-9, time.perf_counter() - t1)
    return BenchResult(held, bulk, bulk_s, real, store_s, results, queue_rate, replay_store)


def _count(store: HqStore) -> int:
    """Events in the database when the queries run (this run's and any before it)."""
    from sqlalchemy import func, select

    from rfidd.hq.store import hq_events

    with store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(hq_events)).scalar_one())


def _queries(store: HqStore, lay: Layout, n: int) -> dict[str, tuple[float, float]]:
    rnd = random.Random(1)
    events = lay.events

    def ask(params: dict[str, list[str]]) -> tuple[list[dict[str, Any]], str | None]:
        return eq.run(store.engine, eq.parse_query(params))

    def by_epc() -> Any:
        return ask({"MATCH_epc": [lay.epc(rnd.randrange(events))]})

    def by_class() -> Any:  # an idpat: every item of one product (a few events here)
        ref = 100000 + rnd.randrange(50000)
        return ask({"MATCH_epc": [f"urn:epc:idpat:sgtin:0614141.{ref:06d}.*"],
                    "perPage": ["100"]})

    def window() -> Any:
        start = T0 + timedelta(seconds=rnd.uniform(0, lay.span_s - 86400))
        return ask({"EQ_bizStep": ["receiving"], "GE_eventTime": [start.isoformat()],
                    "LT_eventTime": [(start + timedelta(days=1)).isoformat()],
                    "perPage": ["100"]})

    def by_id() -> Any:
        return ask({"EQ_eventID": [lay.event_id(rnd.randrange(events))]})

    def by_location() -> Any:
        return ask({"EQ_bizLocation": [lay.location(lay.names[rnd.randrange(len(lay.names))])[1]],
                    "perPage": ["100"]})

    # GE_recordTime: the last tenth of what is stored, read page after page by its tokens.
    since = _record_time_at(store, 0.9)
    pages: list[str | None] = [None]

    def record_page() -> Any:
        params = {"GE_recordTime": [since.isoformat()], "perPage": ["100"]}
        if pages[-1] is not None:
            params["nextPageToken"] = [str(pages[-1])]
        _evs, token = ask(params)
        pages.append(token)
        return token

    return {
        "MATCH_epc": _timed(by_epc, n),
        "MATCH_epc of an idpat (perPage 100)": _timed(by_class, n),
        "EQ_bizStep + one-day eventTime window (perPage 100)": _timed(window, n),
        "EQ_eventID": _timed(by_id, n),
        "EQ_bizLocation (perPage 100)": _timed(by_location, n),
        "GE_recordTime, next page by nextPageToken (perPage 100)": _timed(record_page, n),
    }


def _record_time_at(store: HqStore, fraction: float) -> datetime:
    """The recordTime (received_at) of the row at `fraction` of the table, by id."""
    from sqlalchemy import func, select

    from rfidd.hq.store import hq_events, utc

    with store.engine.connect() as conn:
        lo, hi = conn.execute(select(func.min(hq_events.c.id), func.max(hq_events.c.id))).one()
        at = conn.execute(select(func.min(hq_events.c.received_at))
                          .where(hq_events.c.id >= lo + int((hi - lo) * fraction))).scalar()
    t = utc(at)
    assert t is not None
    return t


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
