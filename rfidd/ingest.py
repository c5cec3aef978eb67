"""The ingest path: reader batches -> zones -> presence -> events -> one transaction per batch.

Reader callbacks only enqueue (`IngestQueue.on_reads` never blocks); one ingest thread updates
the presence tracker and batches database writes (`batch_max_rows` reads or `batch_max_ms`,
whichever first). It holds the domain-state lock across a batch (tracker, transaction, service
hooks) so staff and HQ commands see the tracker and the database agree.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from inventory.epc import DecodedEpc, EpcClass, EpcClassifier, decode
from inventory.events import ItemEvent
from inventory.presence import PresenceChange, PresenceTracker, ZoneRead
from readers.base import ReaderState, TagRead
from rfidd.intake import IngestQueue
from rfidd.metrics import Metrics
from rfidd.store import repo
from rfidd.store.db import Database

log = logging.getLogger("rfidd.ingest")

EventHook = Callable[[list[PresenceChange], dict[str, DecodedEpc]], list[ItemEvent]]
BatchHook = Callable[[Session, list[PresenceChange], dict[str, DecodedEpc]], None]
ReadHook = Callable[[Session, list[tuple[str, str, float]]], None]
EventEncoder = Callable[[ItemEvent], dict[str, object]]


@dataclass(slots=True)
class IngestStats:
    reads: int = 0
    batches: int = 0
    commits: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    unmapped: int = 0
    events: int = 0
    unknown_products: int = 0
    hook_errors: int = 0
    db_errors: int = 0
    batch_errors: int = 0


class Ingestor:
    """The single thread that owns presence state and writes the database."""

    def __init__(
        self,
        *,
        source: IngestQueue,
        database: Database,
        tracker: PresenceTracker,
        lock: threading.RLock,
        classifier: EpcClassifier,
        zone_of: dict[tuple[str, int], str],
        rules: EventHook,
        encode: EventEncoder,
        hooks: Sequence[BatchHook] = (),
        read_hooks: Sequence[tuple[frozenset[str], ReadHook]] = (),
        metrics: Metrics,
        stop: threading.Event,
        batch_max_rows: int = 500,
        batch_max_ms: int = 250,
        on_commit: Callable[[], None] | None = None,
    ) -> None:
        self.source = source
        self.db = database
        self.tracker = tracker
        self.classifier = classifier
        self.zone_of = zone_of
        self.rules = rules
        self.hooks = hooks
        self.read_hooks = read_hooks
        self.encode = encode
        self.metrics = metrics
        self.stop_event = stop
        self.batch_max_rows = batch_max_rows
        self.batch_max_s = batch_max_ms / 1000.0
        self.on_commit = on_commit
        self.stats = IngestStats()
        self._thread: threading.Thread | None = None
        self._pending_sweep = threading.Event()
        self._pending_flush = threading.Event()
        self._flush_mark = tracker.mark
        self._unknown_products: set[str] = set()
        self._last_read_at = 0.0  # latest seen_at processed (the backlog-aware sweep clock)
        self.heartbeat = time.monotonic()  # last loop turn: the supervisor's liveness check
        self._lock = lock  # the domain-state lock (ServiceContext.tracker_lock): see there

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="ingest", daemon=True)
        self._thread.start()

    def join(self, timeout: float = 10.0) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def request_sweep(self) -> None:
        self._pending_sweep.set()

    def request_flush(self) -> None:
        """Ask for the periodic last-seen flush (reads of present items are not written)."""
        self._pending_flush.set()

    def _run(self) -> None:
        while True:
            try:
                batch = self._collect()
                if batch:
                    self.process(batch)
                if self._pending_sweep.is_set():
                    self._pending_sweep.clear()
                    self.sweep(time.time())
                if self._pending_flush.is_set() or self.stop_event.is_set():
                    self._pending_flush.clear()
                    self.flush_last_seen()
            except Exception:  # a bug on one batch must not end ingestion for good
                self.stats.batch_errors += 1
                log.exception("ingest: batch failed; carrying on with the next one")
            self.heartbeat = time.monotonic()
            if self.stop_event.is_set() and self.source.q.empty():
                return

    def flush_last_seen(self) -> int:
        """Write last-seen times of items read since the previous flush; returns how many."""
        with self._lock:
            rows = self.tracker.touched_since(self._flush_mark)
            self._flush_mark = self.tracker.mark
        if not rows:
            return 0
        presence = [repo.PresenceRow(epc=r.epc, zone=r.zone, since=r.since,
                                     last_seen=r.last_seen, rssi_dbm=r.rssi_dbm) for r in rows]
        items = [repo.ItemUpsert(epc=r.epc, seen_at=r.last_seen) for r in rows]
        with self.db.write() as s:
            repo.apply_batch(s, items, presence=presence)
        return len(rows)

    def _collect(self) -> list[tuple[str, list[TagRead]]]:
        batch: list[tuple[str, list[TagRead]]] = []
        rows = 0
        deadline = time.monotonic() + self.batch_max_s
        while rows < self.batch_max_rows:
            timeout = deadline - time.monotonic()
            if timeout <= 0:
                break
            try:
                item = self.source.q.get(timeout=min(timeout, 0.05))
            except queue.Empty:
                if self.stop_event.is_set() or (batch and self._pending_sweep.is_set()):
                    break
                continue
            batch.append(item)
            rows += len(item[1])
        self.metrics.ingest_queue_depth.set(self.source.q.qsize())
        return batch

    def process(self, batch: Sequence[tuple[str, list[TagRead]]]) -> None:
        """Decode, locate and persist one batch: the unit of one database transaction."""
        zone_reads: list[ZoneRead] = []
        decoded: dict[str, DecodedEpc] = {}
        for reader, reads in batch:
            self.stats.batches += 1
            for r in reads:
                self.stats.reads += 1
                zone = self.zone_of.get((reader, r.antenna))
                if zone is None:
                    self.stats.unmapped += 1
                    self.source.on_anomaly(reader, "unmapped_antenna",
                                           f"antenna {r.antenna} is not mapped to a zone")
                    continue
                d = decoded.get(r.epc)
                if d is None:
                    d = decode(r.epc)
                    cls = self.classifier.classify(d)
                    if cls is EpcClass.UNKNOWN_PRODUCT:
                        # Ours but not in the catalog (not synced yet, or a new product at
                        # the workshop): located all the same, and counted once per EPC.
                        self._flag_unknown_product(r.epc)
                    elif cls is not EpcClass.OURS:
                        self.stats.rejected[str(cls)] = self.stats.rejected.get(str(cls), 0) + 1
                        self.metrics.rejected_epcs.labels(str(cls)).inc()
                        continue
                    decoded[r.epc] = d
                zone_reads.append(ZoneRead(r.epc, zone, r.rssi_dbm, r.seen_at, r.seen_count))
                if r.seen_at > self._last_read_at:
                    self._last_read_at = r.seen_at
        with self._lock:  # tracker and database move together (see tracker_lock)
            changes = self.tracker.observe(zone_reads)
            self._persist(changes, decoded, self._watched(zone_reads))

    def paused_zones(self) -> set[str]:
        """Zones one of whose readers is not online: silence there is not absence."""
        down = {r for r, a in self.source.activity.items() if a.state is not ReaderState.ONLINE}
        never_seen = {r for r, _ in self.zone_of} - set(self.source.activity)
        return {zone for (reader, _), zone in self.zone_of.items()
                if reader in down or reader in never_seen}

    def set_catalog(self, gtins: frozenset[str] | None) -> None:
        """Called when the catalog changes; one reference swap, read by the ingest thread."""
        self.classifier = self.classifier.with_catalog(gtins)
        self._unknown_products.clear()

    def _flag_unknown_product(self, epc: str) -> None:
        if epc in self._unknown_products or len(self._unknown_products) >= 100_000:
            return
        self._unknown_products.add(epc)
        self.stats.unknown_products += 1
        self.metrics.unknown_product_epcs.inc()

    def sweep(self, now: float) -> None:
        """Departures. When reads are waiting in the queue, the clock is the time of the last
        read processed: under a backlog, "unseen for departure_s" is judged on what was
        processed, not on wall time (else every item departs and arrives again, and the
        extra events deepen the backlog)."""
        if not self.source.q.empty() and self._last_read_at:
            now = min(now, self._last_read_at)
        paused = self.paused_zones()
        with self._lock:
            changes = self.tracker.sweep(now, paused_zones=paused)
            if changes:
                self._persist(changes, {})

    def _watched(self, zone_reads: list[ZoneRead]) -> list[list[tuple[str, str, float]]]:
        """Per read hook, the first read of each EPC in the zones it watches (few zones: the
        per-read cost is one set lookup per hook)."""
        out: list[list[tuple[str, str, float]]] = []
        for zones, _hook in self.read_hooks:
            first: dict[tuple[str, str], float] = {}
            for zr in zone_reads:
                if zr.zone in zones and (zr.epc, zr.zone) not in first:
                    first[(zr.epc, zr.zone)] = zr.seen_at
            out.append([(e, z, t) for (e, z), t in first.items()])
        return out

    def _persist(self, changes: list[PresenceChange], decoded: dict[str, DecodedEpc],
                 watched: list[list[tuple[str, str, float]]] | None = None) -> None:
        watched = watched or []
        if not changes and not any(watched):
            return
        for c in changes:
            if c.epc not in decoded:
                decoded[c.epc] = decode(c.epc)
        events = self.rules(changes, decoded)
        upserts: list[repo.ItemUpsert] = []
        presence: list[repo.PresenceRow] = []
        departed: list[str] = []
        for c in changes:
            d = decoded[c.epc]
            if c.kind == "departed" or c.zone is None:
                departed.append(c.epc)
                upserts.append(repo.ItemUpsert(epc=c.epc, seen_at=None, zone=None))
                continue
            upserts.append(repo.ItemUpsert(
                epc=c.epc, seen_at=c.at, zone=c.zone, epc_uri=d.uri, gtin=d.gtin14,
                serial=d.serial_text,
            ))
            presence.append(repo.PresenceRow(epc=c.epc, zone=c.zone, since=c.at, last_seen=c.at))
        records = [repo.event_record(e, self.encode(e)) for e in events]
        t0 = time.perf_counter()
        dup = self._commit_with_retry(changes, decoded, upserts, records, presence, departed,
                                      watched)
        self.metrics.batch_commit.observe(time.perf_counter() - t0)
        self.stats.commits += 1
        for e in events:
            if e.event_id not in dup:  # a replayed event is not a new one
                self.stats.events += 1
                self.metrics.events.labels(e.biz_step or "observe").inc()
        if self.on_commit is not None:
            self.on_commit()

    def _commit_with_retry(self, changes: list[PresenceChange], decoded: dict[str, DecodedEpc],
                           upserts: list[repo.ItemUpsert], records: list[repo.EventRecord],
                           presence: list[repo.PresenceRow], departed: list[str],
                           watched: list[list[tuple[str, str, float]]]) -> set[str]:
        """The tracker has already moved: the batch must reach the database, so a database
        error (locked, disk full, PostgreSQL restarting) is retried with backoff until it
        passes or the daemon stops; meanwhile reads wait in the bounded queue."""
        delay = 0.5
        while True:
            try:
                return self._commit(changes, decoded, upserts, records, presence, departed,
                                    watched)
            except DBAPIError as exc:
                self.stats.db_errors += 1
                if self.stop_event.is_set():
                    log.error("database error while stopping, batch of %d changes lost: %s",
                              len(changes), exc)
                    return set()
                log.error("database error, retrying the batch in %.1f s: %s", delay, exc)
                self.stop_event.wait(delay)
                self.heartbeat = time.monotonic()  # waiting on the database, not hung
                delay = min(delay * 2, 30.0)

    def _commit(self, changes: list[PresenceChange], decoded: dict[str, DecodedEpc],
                upserts: list[repo.ItemUpsert], records: list[repo.EventRecord],
                presence: list[repo.PresenceRow], departed: list[str],
                watched: list[list[tuple[str, str, float]]]) -> set[str]:
        """One batch in one transaction; the ids of events the journal already had."""
        with self.db.write() as s:
            res = repo.apply_batch(s, upserts, records, presence=presence, departed=departed)
            for hook in self.hooks:
                try:
                    with s.begin_nested():  # a failing hook rolls back its part only
                        hook(s, changes, decoded)
                except Exception:
                    self.stats.hook_errors += 1
                    log.exception("change hook %s failed on %d changes; its part of the batch "
                                  "is rolled back", getattr(hook, "__qualname__", hook),
                                  len(changes))
            for (_zones, read_hook), reads in zip(self.read_hooks, watched, strict=False):
                if not reads:
                    continue
                try:
                    with s.begin_nested():
                        read_hook(s, reads)
                except Exception:
                    self.stats.hook_errors += 1
                    log.exception("read hook %s failed on %d reads; its part of the batch is "
                                  "rolled back", getattr(read_hook, "__qualname__", read_hook),
                                  len(reads))
        return set(res.duplicate_events)
