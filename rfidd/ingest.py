"""The ingest path: reader batches -> presence -> a view -> plans -> one commit -> apply.

Reader callbacks only enqueue (rfidd.intake); one ingest thread owns the presence tracker and
is the database's batch writer (`batch_max_rows` reads or `batch_max_ms`, whichever first). Per
batch it builds one read-only `BatchView` (changes, decoded EPCs, the first reads in watched
zones, the books' records of the items involved: one query per table), asks the site rules and
every `BatchComponent` for a plan, commits all plans in one transaction and only then lets each
component apply its plan to memory (rfidd.pipeline; the commit and apply: rfidd.ingest_write).

A database error is retried with backoff and the same plans, never holding the domain-state lock
across the wait: staff calls get a prompt 503 (rfidd.health), the supervisor keeps feeding the
systemd watchdog, and reads wait in the bounded queue.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from inventory.epc import DecodedEpc, EpcClass, EpcClassifier, decode
from inventory.presence import ChangeKind, PresenceChange, PresenceTracker, ZoneRead
from inventory.presence_keys import Key
from inventory.rules import SiteRules
from readers.base import ReaderState, TagRead
from rfidd.health import DatabaseHealth, DomainLock, retry_database
from rfidd.ingest_write import Base, BatchWriter, EventEncoder, Staged
from rfidd.intake import WAKE, IngestQueue
from rfidd.metrics import Metrics
from rfidd.pipeline import BatchComponent, BatchView, BooksLoader
from rfidd.store import repo
from rfidd.store.db import Database

log = logging.getLogger("rfidd.ingest")

T = TypeVar("T")


@dataclass(slots=True)
class IngestStats:
    reads: int = 0
    committed_reads: int = 0
    """Reads whose batch is committed (or needed no write): what a benchmark may count."""
    batches: int = 0
    processed: int = 0
    """Calls of `process`: one ingest batch (the reader batches it gathered) each."""
    commits: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    unmapped: int = 0
    events: int = 0
    unknown_products: int = 0
    hook_errors: int = 0
    db_errors: int = 0
    batch_errors: int = 0
    lost_batches: int = 0


class Ingestor:
    """The single thread that owns presence state and writes the database."""

    retry_initial_s = 0.5
    retry_max_s = 30.0
    idle_wait_s = 5.0
    """The longest an idle ingest thread sleeps: a read, a sweep or flush request and the
    daemon's stop (`wake`) end the wait at once, so this is only a safety net."""
    flush_rows_per_tx = 2000
    """Last-seen rows per flush transaction: one chunk per loop turn, reads ingested between."""

    def __init__(
        self,
        *,
        source: IngestQueue,
        database: Database,
        tracker: PresenceTracker,
        lock: DomainLock,
        classifier: EpcClassifier,
        zone_of: dict[tuple[str, int], str],
        rules: SiteRules,
        encode: EventEncoder,
        books: BooksLoader | None = None,
        health: DatabaseHealth | None = None,
        metrics: Metrics,
        stop: threading.Event,
        batch_max_rows: int = 2000,
        batch_max_ms: int = 250,
        on_commit: Callable[[], None] | None = None,
        on_database: Callable[[bool, str], None] | None = None,
    ) -> None:
        self.source = source
        self.db = database
        self.tracker = tracker
        self.classifier = classifier
        self.zone_of = zone_of
        self.rules = rules
        self.books = books
        self.health = health or DatabaseHealth()
        self.encode = encode
        self.metrics = metrics
        self.stop_event = stop
        self.batch_max_rows = batch_max_rows
        self.batch_max_s = batch_max_ms / 1000.0
        self.on_commit = on_commit
        self.on_database = on_database
        """Called (up, reason) when the database goes down or comes back (alerts, STATUS=)."""
        self.writer = BatchWriter(database, metrics, encode, self._component_failed)
        self.components: list[BatchComponent] = []
        self._watched: frozenset[str] = frozenset()
        self.stats = IngestStats()
        self.zone_counts: dict[str, int] = tracker.zone_counts()
        """Items present per zone after the last batch: read without the lock (metrics)."""
        self._thread: threading.Thread | None = None
        self._pending_sweep = threading.Event()
        self._pending_flush = threading.Event()
        self._flush_mark = tracker.mark
        self._flush_todo: list[str] = []  # EPCs of the flush under way, most recent first
        self._unknown_products: set[str] = set()
        self._last_read_at = 0.0  # latest seen_at processed (the backlog-aware sweep clock)
        self.heartbeat = time.monotonic()  # last loop turn: the supervisor's liveness check
        self._lock = lock

    def add_component(self, component: BatchComponent) -> None:
        """Have `component` plan every batch (before start: the ingest thread reads the list)."""
        self.components.append(component)
        self._watched = self._watched | component.watched_zones
        self.metrics.component_errors.labels(component.name)

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
        self.source.wake()

    def request_flush(self) -> None:
        """Ask for the periodic last-seen flush (reads of present items are not written)."""
        self._pending_flush.set()
        self.source.wake()

    def wake(self) -> None:
        """The stop event was set: see it now, not after `idle_wait_s`."""
        self.source.wake()

    def _run(self) -> None:
        while True:
            try:
                batch = self._collect()
                if batch:
                    self.process(batch)
                if self._pending_sweep.is_set():
                    self._pending_sweep.clear()
                    self.sweep(time.time())
                if self.stop_event.is_set():
                    self._pending_flush.clear()
                    self.flush_last_seen()
                elif self._pending_flush.is_set() and not self._flush_todo:
                    self._pending_flush.clear()
                    self._start_flush()
                if self._flush_todo and not self.stop_event.is_set():
                    self._flush_chunk()
            except Exception:  # a bug on one batch must not end ingestion for good
                self.stats.batch_errors += 1
                log.exception("ingest: batch failed; carrying on with the next one")
            self.heartbeat = time.monotonic()
            if self.stop_event.is_set() and self.source.q.empty():
                return

    def _collect(self) -> list[tuple[str, list[TagRead]]]:
        batch: list[tuple[str, list[TagRead]]] = []
        rows = 0
        if not (self._pending_sweep.is_set() or self._pending_flush.is_set()
                or self._flush_todo or self.stop_event.is_set()):
            # Nothing read and nothing to do: wait for the first read in one long wait (a
            # read ends it at once, and so do sweep, flush and stop: `wake`); the batch window
            # opens with it. Through `get`, so the reader's queued count follows.
            try:
                first = self.source.get(timeout=self.idle_wait_s)
            except queue.Empty:
                return batch
            if first is WAKE:
                return batch
            batch.append(first)
            rows = len(first[1])
        deadline = time.monotonic() + self.batch_max_s
        while rows < self.batch_max_rows:
            timeout = deadline - time.monotonic()
            if timeout <= 0:
                break
            try:
                item = self.source.get(timeout=min(timeout, 0.05))
            except queue.Empty:
                item = WAKE
            if item is WAKE:  # nothing read (yet), or woken
                if self.stop_event.is_set() or (batch and self._pending_sweep.is_set()):
                    break
                continue
            batch.append(item)
            rows += len(item[1])
        self.metrics.ingest_queue_depth.set(self.source.q.qsize())
        return batch

    # -- one batch ---------------------------------------------------------------------------
    def process(self, batch: Sequence[tuple[str, list[TagRead]]]) -> None:
        """Decode, locate and persist one batch: the unit of one database transaction."""
        zone_reads: list[ZoneRead] = []
        zone_keys: list[Key] = []  # the tracker's keys of zone_reads' EPCs, made once
        decoded: dict[str, DecodedEpc] = {}
        # The ingest thread is the tracker's only writer: it may read it without the lock.
        keys_of = self.tracker.keys
        known = self.tracker.known_keys
        new = tuple.__new__  # a ZoneRead per read without its Python __new__ (half the cost)
        n = 0
        for reader, reads in batch:
            self.stats.batches += 1
            n += len(reads)
            # Which EPCs are known, in C loops: at a million items each lookup is a cache miss,
            # and a tight loop lets the CPU overlap them instead of paying each in turn.
            keys = keys_of([r.epc for r in reads])
            present = known(keys)
            for r, key, is_known in zip(reads, keys, present, strict=True):
                zone = self.zone_of.get((reader, r.antenna))
                if zone is None:
                    self.stats.unmapped += 1
                    self.source.on_anomaly(reader, "unmapped_antenna",
                                           f"antenna {r.antenna} is not mapped to a zone")
                    continue
                if is_known:  # classified when it arrived: no decode, no classify
                    zone_reads.append(new(ZoneRead, (r.epc, zone, r.rssi_dbm, r.seen_at,
                                                     r.seen_count)))
                    zone_keys.append(key)
                    if r.seen_at > self._last_read_at:
                        self._last_read_at = r.seen_at
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
                zone_reads.append(new(ZoneRead, (r.epc, zone, r.rssi_dbm, r.seen_at,
                                                 r.seen_count)))
                zone_keys.append(key)
                if r.seen_at > self._last_read_at:
                    self._last_read_at = r.seen_at
        self.stats.reads += n
        self.stats.processed += 1
        with self._lock.waiting():
            changes = self.tracker.observe(zone_reads, zone_keys)
            self.zone_counts = self.tracker.zone_counts()
        if self._handle(changes, decoded, self._first_reads(zone_reads)):
            self.stats.committed_reads += n

    def sweep(self, now: float) -> None:
        """Departures. When reads are waiting in the queue, the clock is the time of the last
        read processed: under a backlog, "unseen for departure_s" is judged on what was
        processed, not on wall time (else every item departs and arrives again, and the
        extra events deepen the backlog)."""
        if not self.source.q.empty() and self._last_read_at:
            now = min(now, self._last_read_at)
        paused = self.paused_zones(shed_since=now - self.tracker.departure_s)
        with self._lock.waiting():
            changes = self.tracker.sweep(now, paused_zones=paused)
            self.zone_counts = self.tracker.zone_counts()
        if changes:
            self._handle(changes, {}, [])

    def handle_changes(self, changes: list[PresenceChange],
                       reads: list[tuple[str, str, float]] | None = None) -> None:
        """Presence changes made elsewhere (a handheld pass, a test): through the same view,
        plans, commit and apply as a batch of reads. Without `reads`, the changes into watched
        zones stand for their first reads there."""
        if reads is None:
            reads = [(c.epc, c.zone, c.at) for c in changes
                     if c.zone is not None and c.zone in self._watched]
        self._handle(changes, {}, reads)

    def _first_reads(self, zone_reads: list[ZoneRead]) -> list[tuple[str, str, float]]:
        """The first read of each EPC in each watched zone (few zones: one set lookup per
        read)."""
        watched = self._watched
        if not watched:
            return []
        first: dict[tuple[str, str], float] = {}
        for zr in zone_reads:
            if zr.zone in watched and (zr.epc, zr.zone) not in first:
                first[(zr.epc, zr.zone)] = zr.seen_at
        return [(e, z, t) for (e, z), t in first.items()]

    def _handle(self, changes: list[PresenceChange], decoded: dict[str, DecodedEpc],
                reads: list[tuple[str, str, float]]) -> bool:
        """View -> plans -> commit -> apply, the commit retried with the same plans. False:
        the batch was lost (the database failed while stopping)."""
        if not changes and not reads:
            return True
        for c in changes:
            if c.epc not in decoded:
                decoded[c.epc] = decode(c.epc)
        staged: list[Staged] | None = None
        base = Base()

        def attempt() -> set[str]:
            nonlocal staged
            with self._lock.waiting():
                if staged is None:
                    view = self._view(changes, decoded, reads)
                    self._base(base, view)
                    staged = self._plans(view)
                t0 = time.perf_counter()
                dup = self.writer.commit(base, staged)
                self.metrics.batch_commit.observe(time.perf_counter() - t0)
                self.writer.apply(staged)
                return dup

        dup = self._retry(attempt, f"a batch of {len(changes)} changes")
        if dup is None:
            self.stats.lost_batches += 1
            return False
        self.stats.commits += 1
        assert staged is not None
        events = [*base.events, *(e for x in staged if not x.skipped for e in x.plan.events)]
        for e in events:
            if e.event_id not in dup:  # a replayed event is not a new one
                self.stats.events += 1
                self.metrics.events.labels(e.biz_step or "observe").inc()
        if self.on_commit is not None:
            self.on_commit()
        return True

    def _view(self, changes: list[PresenceChange], decoded: dict[str, DecodedEpc],
              reads: list[tuple[str, str, float]]) -> BatchView:
        """The read-only view of the batch: the books are loaded once, for every item that
        arrived or moved and every item read in a watched zone."""
        books = {}
        if self.books is not None:
            epcs = list(dict.fromkeys([*(c.epc for c in changes
                                         if c.kind is not ChangeKind.DEPARTED),
                                       *(r[0] for r in reads)]))
            if epcs:
                with self.db.session() as s:
                    books = dict(self.books(s, epcs))
        return BatchView(changes=changes, decoded=decoded, reads=reads, books=books)

    def _base(self, base: Base, view: BatchView) -> None:
        """The ingest's own rows, as tuples (rfidd.store.hot's column order, `updated` added
        at commit): an item's identity and zone, its presence, or its departure."""
        held = {e for e, st in view.books.items() if st is not None}
        base.events = self.rules.events_for(view.changes, view.decoded, held)
        base.records = [repo.event_record(e, self.encode(e)) for e in base.events]
        for c in view.changes:
            if not c.epc:
                raise repo.StoreInputError(f"presence change {c!r}: empty epc")
            if c.kind is ChangeKind.DEPARTED or c.zone is None:
                base.departed.append(c.epc)
                base.items.append((c.epc, None, None, None, None, None, None, None, None))
                continue
            d = view.decoded[c.epc]
            base.items.append((c.epc, d.uri, d.gtin14, d.serial_text, c.zone, None, None,
                               c.at, c.at))
            base.presence.append((c.epc, c.zone, c.at, c.at, None, None, None))

    def _plans(self, view: BatchView) -> list[Staged]:
        """Each component's plan; one that fails to plan loses only its own part."""
        out: list[Staged] = []
        for comp in self.components:
            try:
                x = self.writer.stage(comp.name, comp.plan(view))
            except Exception:
                self.writer.failed(comp.name, "plan", len(view.changes), "bug")
                continue
            if x is not None:
                out.append(x)
        return out

    def _component_failed(self) -> None:
        self.stats.hook_errors += 1

    def _retry(self, fn: Callable[[], T], what: str) -> T | None:
        """Run `fn` until the database takes it or the daemon stops (None: given up), with
        rfidd.health.retry_database; the heartbeat shows the supervisor we wait, not hang."""

        def failed() -> None:
            self.stats.db_errors += 1

        def waited() -> None:
            self.heartbeat = time.monotonic()  # waiting on the database, not hung

        return retry_database(fn, what, health=self.health, metrics=self.metrics,
                              stop=self.stop_event, initial_s=self.retry_initial_s,
                              max_s=self.retry_max_s, log=log, on_database=self.on_database,
                              on_error=failed, on_wait=waited)

    # -- periodic ----------------------------------------------------------------------------
    def flush_last_seen(self) -> int:
        """Write last-seen times of items read since the previous flush, all at once (at stop,
        in tests); returns how many rows were written."""
        self._start_flush()
        written = 0
        while self._flush_todo:
            n = self._flush_chunk()
            if n < 0:
                break
            written += n
        return written

    def _start_flush(self) -> None:
        """Take the EPCs read since the last flush (no lock: this thread is the only writer
        of the tracker); they are written `flush_rows_per_tx` at a time, between batches."""
        todo = self.tracker.touched_epcs_since(self._flush_mark)
        self._flush_mark = self.tracker.mark
        self._flush_todo.extend(todo)

    def _flush_chunk(self) -> int:
        """One bounded transaction of the flush under way; rows are read at write time (an
        item that departed meanwhile is skipped: its departure wrote it). -1: given up."""
        chunk = self._flush_todo[-self.flush_rows_per_tx:]
        del self._flush_todo[-self.flush_rows_per_tx:]
        get = self.tracker.get
        with self._lock.waiting():  # a few thousand attribute reads: milliseconds
            rows = [r for r in map(get, chunk) if r is not None]
        if not rows:
            return 0
        # Tuples in rfidd.store.hot's column order: items get only their last-seen time.
        presence = [(r.epc, r.zone, r.since, r.last_seen, None, None, r.rssi_dbm) for r in rows]
        items = [(r.epc, None, None, None, None, None, None, r.last_seen, r.last_seen)
                 for r in rows]

        def write() -> bool:  # not None: `_retry` says None for "given up"
            with self.db.write() as s:
                now = time.time()
                repo.apply_batch(s, now=now, item_rows=[(*r, now) for r in items],
                                 presence_rows=presence)
            return True

        if self._retry(write, f"a last-seen flush of {len(rows)} items") is None:
            self._flush_todo.clear()
            return -1
        return len(rows)

    def paused_zones(self, shed_since: float | None = None) -> set[str]:
        """Zones one of whose readers is not online, or (with `shed_since`) had reads shed
        since then: silence there is not absence. Under overload a shed reader's items would
        otherwise depart and arrive again, and those events' writes and publishes slow the
        ingest further, so that it sheds more: the committed rate collapsed (9k reads/s at
        144k offered, the ingest thread at 20 µs a read). Their departures wait until the
        reader has gone `departure_s` without a shed read."""
        down = {r for r, a in self.source.activity.items() if a.state is not ReaderState.ONLINE}
        if shed_since is not None:
            down |= {r for r, at in list(self.source.last_shed.items()) if at >= shed_since}
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
