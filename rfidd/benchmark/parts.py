"""Component figures, each beside its floor measured in the same run: memory and re-read rate
at a million items, count reconcile with the database, outbox publishing, HQ storage."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from inventory import bench as inv_bench

if TYPE_CHECKING:
    from rfidd.config import MqttConfig
    from rfidd.store.db import Database

_RSS = r"""
import sys, time
import rfidd.app  # the daemon's imports: the baseline a real process pays
from inventory import bench
from inventory.epc import EpcClassifier, decode
from inventory.presence import PresenceTracker, ZoneRead
n, mode = int(sys.argv[1]), sys.argv[2]
zones = [f"z{i:02d}" for i in range(20)]
now = time.time()
# The EPCs come 500 at a time, as readers report them, and nothing but the tracker (or the
# dict) keeps them: the ingest never holds a list of every EPC it has read.
batches = bench.epc_batches(n, max(1, min(20_000, n // 50)), 500)
if mode == "floor":  # a dict EPC -> (zone, time)
    d = {}
    for k, part in enumerate(batches):
        for e in part:
            d[e] = (zones[k % 20], now + len(d) * 1e-6)
else:  # what the ingest keeps: tracker state, each new EPC decoded and classified once
    t = PresenceTracker(3600.0, 3.0, 10.0)
    cls = EpcClassifier(set())
    for k, part in enumerate(batches):
        for e in part:
            cls.classify(decode(e))
        t.observe([ZoneRead(e, zones[k % 20], -50.0, now + k * 5e-4) for e in part])
del batches, part
for line in open("/proc/self/status"):
    if line.startswith("VmRSS:"):
        print(int(line.split()[1]) / 1024)
"""


def rss(n: int, mode: str) -> float:
    """Resident MiB of a fresh interpreter holding n distinct EPCs ("tracker" or "floor")."""
    out = subprocess.run([sys.executable, "-c", _RSS, str(n), mode], capture_output=True,
                         text=True, check=True, timeout=600)
    return float(out.stdout.split()[-1])


def reread_rate(n: int, reads: int = 200_000) -> float:
    """Reads/s the ingest sustains re-reading present items (no change, nothing to commit) with
    n items present: `Ingestor.process` on the hot path."""
    from inventory.epc import EpcClassifier
    from inventory.presence import PresenceTracker
    from inventory.rules import SiteRules
    from readers.base import TagRead
    from rfidd.health import DomainLock
    from rfidd.ingest import Ingestor
    from rfidd.intake import IngestQueue
    from rfidd.metrics import Metrics
    from rfidd.store.db import open_database

    epcs, _ = inv_bench.generate_epcs(n, max(1, min(20_000, n // 50)))
    now = time.time()
    tracker = PresenceTracker(3600.0, 3.0, 10.0)
    tracker.restore((e, "z00", now) for e in epcs)
    metrics = Metrics()
    with tempfile.TemporaryDirectory(prefix="rfidd-bench-") as tmp:
        db = open_database(f"sqlite:///{tmp}/r.db")
        try:
            ing = Ingestor(
                source=IngestQueue(metrics), database=db, tracker=tracker, lock=DomainLock(),
                classifier=EpcClassifier(set()), zone_of={("r", 1): "z00"},
                rules=SiteRules("urn:epc:id:sgln:0614141.00001.0", {"z00": "z00"},
                                {"z00": "stock"}, "bench"),
                encode=lambda e: {}, metrics=metrics, stop=threading.Event())
            rng = random.Random(5)
            # Each read's EPC a string of its own, as a reader makes it from the report's
            # bytes (readers/llrp_wire.py), not the very object the tracker holds (which
            # would spare the lookup its hashing and its key comparison).
            fresh = bytes.fromhex
            batches = [[TagRead(fresh(epcs[rng.randrange(n)]).hex().upper(), "r", 1, -50.0,
                                now + 1 + i * 1e-4)
                        for i in range(500)] for _ in range(reads // 500)]
            t0 = time.perf_counter()
            for b in batches:
                ing.process([("r", b)])
            dt = time.perf_counter() - t0
            if ing.stats.events:
                raise RuntimeError("bench: re-reads of present items made events")
        finally:
            db.dispose()
    return len(batches) * 500 / dt


def reconcile(n: int) -> tuple[float, float, bool]:
    """Seconds for a count's stop at n items with the book in SQLite (load the book, reconcile,
    report); the floor: the same rows fetched by a bare DB-API cursor, then set differences and
    lookups; and whether the result matched what was planted."""
    from rfidd.ops.bench import run_db_count
    from rfidd.store.db import open_database

    with tempfile.TemporaryDirectory(prefix="rfidd-bench-") as tmp:
        db = open_database(f"sqlite:///{tmp}/c.db")
        try:
            fig = run_db_count(db, n)
            rng = random.Random(0)  # the sightings run_db_count planted (same seed)
            epcs, _ = inv_bench.generate_epcs(n + max(1, n // 200), max(1, min(20_000, n // 50)))
            _, reads, _, _ = inv_bench.plant_count(epcs[:n], epcs[n:], rng, 0.01, 0.01)
            seen = {e: z for z, zr in reads.items() for e in zr}
            t = time.perf_counter()
            raw = db.engine.raw_connection()
            try:
                cur = raw.cursor()
                cur.execute("SELECT epc, zone FROM items WHERE zone IS NOT NULL")
                book = dict(cur.fetchall())
            finally:
                raw.close()
            booked = book.keys()
            missing = booked - seen.keys()
            unexpected = seen.keys() - booked
            misplaced = [e for e in booked & seen.keys() if book[e] != seen[e]]
            floor = time.perf_counter() - t
        finally:
            db.dispose()
    s = fig.seconds
    total = s["db_load"] + s["load_book"] + s["reconcile"] + s["report"]
    ok = fig.ok and len(missing) + len(unexpected) + len(misplaced) > 0
    return total, floor, ok


def publish(mqtt_url: str, rows: int = 10_000) -> float:
    """Events/s the outbox publisher gets PUBACKed by the broker (SQLite outbox, 200 events a
    document)."""
    from inventory.events import stable_event_id
    from rfidd.config import MqttConfig
    from rfidd.store import EventRecord, apply_batch, open_database

    tag = uuid.uuid4().hex
    site = f"pub{tag[:8]}"
    with tempfile.TemporaryDirectory(prefix="rfidd-bench-") as tmp:
        db = open_database(f"sqlite:///{tmp}/o.db")
        try:
            for start in range(0, rows, 500):
                evs = []
                for i in range(start, min(rows, start + 500)):
                    eid = stable_event_id("bench", tag, i)
                    evs.append(EventRecord(eid, 1000.0 + i, {
                        "eventID": eid, "type": "ObjectEvent", "action": "OBSERVE",
                        "epcList": [f"urn:epc:id:sgtin:0614141.812345.{i}"],
                        "bizStep": "storing",
                    }, action="OBSERVE", biz_step="storing", zone="floor", epc_count=1))
                with db.write() as s:
                    apply_batch(s, events=evs)
            cfg = MqttConfig.model_validate({"url": mqtt_url, "client_id": f"rfidd-bench-{site}",
                                             "max_events_per_document": 200})
            dt, _ = drain_outbox(db, cfg, site)
        finally:
            db.dispose()
    return rows / dt


def drain_outbox(db: Database, cfg: MqttConfig, site: str,
                 timeout_s: float = 120.0) -> tuple[float, int]:
    """Publish `db`'s whole outbox with an HQ link (window 100, each document's events as they
    are); returns (seconds until every row was PUBACKed and marked sent, MQTT messages
    published). The link is stopped, `db` stays open; RuntimeError if it does not drain.
    Shared by `rfidd bench` and tests/integration/test_outbox_throughput.py."""
    from rfidd.metrics import Metrics
    from rfidd.mqtt import HqLink
    from rfidd.store import outbox_stats

    stop = threading.Event()
    link = HqLink(cfg, site, db, Metrics(), stop, session_expiry_s=0, max_inflight=100,
                  poll_interval_s=0.05, stats_interval_s=0.5,
                  document_builder=lambda ev, c, s: {"epcisBody": {"eventList": ev}})
    try:
        t0 = time.perf_counter()
        link.start()
        deadline = time.monotonic() + timeout_s
        while True:
            with db.session() as s:
                if outbox_stats(s)[0] == 0:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("bench: the outbox did not drain")
            time.sleep(0.01)
        dt = time.perf_counter() - t0
    finally:
        stop.set()
        link.stop()
    return dt, link.stats.published_messages


def hq_store(pg_url: str, events: int = 60_000, batch: int = 1000) -> tuple[float, float]:
    """Events/s HqStore.write_batch stores into PostgreSQL (HQ's code, as it is), and the floor:
    psycopg COPY of the same rows (events, their eventIDs, their EPC rows) into tables of the
    same columns without indexes. The rows are what sites publish (site_rows), and enough of
    them that the table's growth shows. The two alternate batch by batch, so a machine shared
    with other work slows both alike and the ratio stays meaningful."""
    import psycopg
    from sqlalchemy import create_engine, text

    from rfidd.hq.store import Batch, HqStore

    schema = f"bench_{uuid.uuid4().hex[:12]}"
    own = "search_path" not in pg_url  # a URL with its own schema (the tests') is used as is
    admin = create_engine(pg_url)
    url = pg_url
    if own:
        with admin.begin() as c:
            c.execute(text(f'CREATE SCHEMA "{schema}"'))
        sep = "&" if "?" in pg_url else "?"
        url = f"{pg_url}{sep}options=-csearch_path%3D{schema}"
    try:
        rows = site_rows(events)
        store = HqStore.open(url)
        dsn = url.replace("postgresql+psycopg://", "postgresql://", 1)
        stored_s = copy_s = 0.0
        try:
            with psycopg.connect(dsn) as conn:
                conn.execute("CREATE TABLE copy_floor (LIKE hq_events INCLUDING DEFAULTS)")
                conn.execute("CREATE TABLE copy_floor_ids (LIKE hq_event_ids)")
                conn.execute("CREATE TABLE copy_floor_epcs (LIKE hq_event_epcs "
                             "INCLUDING DEFAULTS)")
                conn.commit()
                store.write_batch(_batch(Batch, rows[:1]))  # partitions: made once
                _copy_floor(conn, rows[:1])
                for k in range(1, events, batch):
                    chunk = rows[k:k + batch]
                    t0 = time.perf_counter()
                    store.write_batch(_batch(Batch, chunk))
                    t1 = time.perf_counter()
                    _copy_floor(conn, chunk)
                    copy_s += time.perf_counter() - t1
                    stored_s += t1 - t0
        finally:
            store.dispose()
        events -= 1
    finally:
        if own:
            with admin.begin() as c:
                c.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()
    return events / stored_s, events / copy_s




def _batch(batch: Any, rows: list[Any]) -> Any:
    """A consumer's batch of these rows: its events, and each site seen (FeedParser's saw)."""
    now = datetime.now(UTC)
    return batch(events=rows, seen={ev.site: now for ev in rows})


SITES = 4
_DOC = 200  # events per EPCISDocument, a site's default


def site_rows(events: int, seed: int = 12) -> list[Any]:
    """HQ rows as real site traffic makes them: the site's EpcisSerializer output (eventIDs
    uuid5 of the fact, so random in arrival order; rfidd:seq per site; readPoint of the zone;
    the site's bizLocation, none for an item leaving), parsed by HQ's parse_event, in
    documents of 200 per site, the sites taking turns as their messages arrive. Most events
    name one item; a receiving or count names a carton's worth (2-40)."""
    from inventory.epcis import EpcisSerializer
    from inventory.events import Action, ItemEvent, stable_event_id
    from rfidd.hq.documents import parse_event
    from rfidd.mqtt_outbox import SEQ_FIELD

    rnd = random.Random(seed)
    ser = EpcisSerializer("Europe/Berlin")
    steps = (("stocking", "sellable_accessible"), ("storing", "sellable_not_accessible"),
             ("receiving", "in_progress"), ("departing", "in_transit"),
             ("retail_selling", "retail_sold"))
    t0 = datetime(2026, 1, 1, 8, tzinfo=UTC).timestamp()
    seq = [0] * SITES
    rows: list[Any] = []
    while len(rows) < events:
        for s in range(SITES):
            site, sgln = f"store-{s:03d}", f"urn:epc:id:sgln:4012345.{s + 10:05d}.0"
            for _ in range(min(_DOC, events - len(rows))):
                seq[s] += 1
                n = seq[s]
                step, disp = steps[rnd.randrange(len(steps))]
                size = 1 if rnd.random() < 0.85 else rnd.randint(2, 40)
                first = rnd.randrange(2_000_000)
                epcs = tuple(f"urn:epc:id:sgtin:4012345.{(first + j) % 500:06d}.{first + j}"
                             for j in range(size))
                at = t0 + n * 0.7 + s * 0.01
                ev = ItemEvent(stable_event_id(site, epcs[0], step, at), at, Action.OBSERVE,
                               epcs, step, disp, f"urn:epc:id:sgln:4012345.{s + 10:05d}."
                               f"{rnd.randrange(12)}", None if step == "departing" else sgln,
                               extensions={SEQ_FIELD: n})
                rows.append(parse_event(ser.event(ev), site))
            if len(rows) >= events:
                break
    return rows


def _copy_floor(conn: Any, rows: list[Any]) -> None:
    """One batch of the floor: every row HqStore writes, by COPY, one transaction."""
    now = datetime.now(UTC)
    with conn.cursor() as cur:
        with cur.copy("COPY copy_floor (event_id, site, type, event_time, action, biz_step, "
                      "disposition, read_point, biz_location, biz_transactions, raw, "
                      "received_at) FROM STDIN") as cp:
            for ev in rows:
                cp.write_row((ev.event_id, ev.site, ev.type, ev.event_time, ev.action,
                              ev.biz_step, ev.disposition, ev.read_point, ev.biz_location,
                              None, json.dumps(ev.raw), now))
        with cur.copy("COPY copy_floor_ids (event_id, event_time) FROM STDIN") as cp:
            for ev in rows:
                cp.write_row((ev.event_id, ev.event_time))
        with cur.copy("COPY copy_floor_epcs (event_id, epc, event_time) FROM STDIN") as cp:
            for ev in rows:
                for e in ev.epcs:
                    cp.write_row((ev.event_id, e, ev.event_time))
    conn.commit()
