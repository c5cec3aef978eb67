"""The reader intake: the sink every reader driver writes to.

Reader callbacks run on the drivers' own threads; `IngestQueue.on_reads` counts and enqueues and
never blocks them. `ReaderActivity` is what the supervisor knows of each reader (state, last
report), read by the alerting and status code.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from itertools import repeat
from operator import attrgetter, is_
from typing import Any

from readers.base import ReaderState, TagRead
from rfidd.metrics import Metrics

log = logging.getLogger("rfidd.ingest")
_ANTENNA = attrgetter("antenna")
_TID = attrgetter("tid")


@dataclass(slots=True)
class ReaderActivity:
    """What the supervisor loop needs to know about each reader (last report, state)."""

    state: ReaderState = ReaderState.OFFLINE
    last_report: float = 0.0
    reason: str = ""
    since: float = field(default_factory=time.time)  # when it last went up or down
    connects: int = 0
    down_alerted: bool = False
    reads: int = 0  # tag reads reported since start (one writer: the reader's own thread)


class TidMemory:
    """The TIDs recently read with each EPC, with when each was last read (bounded: least
    recently read EPC forgotten first, at most `per_epc` chips kept per EPC).

    What an authenticity check needs at a return or repair desk: the chip(s) that carried the
    EPC just now (inventory.authenticity.check_binding against the commissioning TID). `of`
    takes a `within_s` so that a chip read last week does not vouch for the one on the desk."""

    def __init__(self, max_epcs: int = 50_000, per_epc: int = 4,
                 clock: Callable[[], float] = time.time) -> None:
        self._tids: OrderedDict[str, dict[str, float]] = OrderedDict()
        self._max = max_epcs
        self._per_epc = per_epc
        self._clock = clock
        self._lock = threading.Lock()  # reader threads record concurrently

    def record(self, reads: list[TagRead]) -> None:
        now = self._clock()
        with self._lock:
            for r in reads:
                if r.tid is None:
                    continue
                seen = self._tids.pop(r.epc, None) or {}
                seen[r.tid] = now  # first-read order kept; the time is the last read's
                if len(seen) > self._per_epc:  # forget the chip read least recently
                    del seen[min(seen, key=seen.__getitem__)]
                self._tids[r.epc] = seen
            while len(self._tids) > self._max:
                self._tids.popitem(last=False)

    def of(self, epc: str, within_s: float | None = None) -> tuple[str, ...]:
        """The TIDs read with `epc` (in the last `within_s` seconds when given), in the order
        first read."""
        since = None if within_s is None else self._clock() - within_s
        with self._lock:
            seen = self._tids.get(epc.upper(), {})
            return tuple(t for t, at in seen.items() if since is None or at >= since)


WAKE: tuple[str, list[TagRead]] = ("", [])
"""Put by `IngestQueue.wake`: ends the ingest thread's wait without a read (`get` returns this
very object; it is no batch and counts for no reader)."""


class IngestQueue:
    """The ReaderSink of every driver: counts, enqueues, never blocks the reader thread."""

    def __init__(
        self,
        metrics: Metrics,
        maxsize: int = 10_000,
        on_state: Callable[[str, ReaderState, str], None] | None = None,
        activity: dict[str, ReaderActivity] | None = None,
    ) -> None:
        """`activity` is the reader monitor's (rfidd.reader_monitor), which owns reader states
        and is `on_state`: this sink records each change there, then tells it."""
        # A SimpleQueue (C, no Python-level mutex or condition): with 20-80 reader threads a
        # queue.Queue's lock, taken for every put and qsize, became a convoy that kept the
        # readers from delivering. The bound is checked before the put: concurrent readers can
        # overshoot it by at most one batch each.
        self.q: queue.SimpleQueue[tuple[str, list[TagRead]]] = queue.SimpleQueue()
        self.maxsize = maxsize
        self.metrics = metrics
        self.activity: dict[str, ReaderActivity] = {} if activity is None else activity
        self.tids = TidMemory()
        self._on_state = on_state
        self._warned: set[tuple[str, str]] = set()
        self._dropped = 0
        self._dropped_logged = -1e9
        self._drop_lock = threading.Lock()
        self._read_counters: dict[tuple[str, int], Any] = {}
        # Fair shedding: each reader may hold at most its share of the queue (maxsize / the
        # readers that delivered). Two counts per reader, each with one writer (the thread
        # delivering that reader's batches; the ingest thread), so no lock: queued = put - taken.
        self._put: dict[str, int] = {}
        self._taken: dict[str, int] = {}
        self._share = maxsize
        self.last_shed: dict[str, float] = {}
        """Per reader, when (wall clock, as reads' seen_at) its reads were last shed: the
        ingest does not depart items of its zones for that long (silence is not absence)."""

    def get(self, timeout: float) -> tuple[str, list[TagRead]]:
        """The next batch (the ingest thread, its only consumer); queue.Empty on timeout."""
        item = self.q.get(timeout=timeout)
        if item is WAKE:
            return item
        taken = self._taken
        taken[item[0]] = taken.get(item[0], 0) + 1
        return item

    def wake(self) -> None:
        """End the ingest thread's wait now (a sweep or flush asked, the daemon stopping)."""
        self.q.put_nowait(WAKE)

    def admits(self, reader: str) -> bool:
        """Whether a batch of `reader` delivered now would be queued (within its share)."""
        mine = self._put.get(reader)
        if mine is None:
            return self.q.qsize() < self.maxsize
        return mine - self._taken.get(reader, 0) < self._share and \
            self.q.qsize() < self.maxsize

    def queued(self, reader: str) -> int:
        """Batches of `reader` waiting in the queue."""
        return self._put.get(reader, 0) - self._taken.get(reader, 0)

    def on_reads(self, reader: str, reads: list[TagRead],
                 per_antenna: Mapping[int, int] | None = None) -> None:
        """`per_antenna`: the reads' count per antenna, when the caller has it (the reader
        host's child counts them); else counted here. Both in C loops: this runs on the
        thread that delivers every read of the site."""
        act = self.activity.setdefault(reader, ReaderActivity())
        act.last_report = time.time()
        if not reads:
            return
        act.reads += len(reads)
        if per_antenna is None:
            per_antenna = Counter(map(_ANTENNA, reads))
        if not all(map(is_, map(_TID, reads), repeat(None))):  # any read with a TID
            self.tids.record(reads)
        self._count_reads(reader, per_antenna)
        put = self._put
        mine = put.get(reader)
        if mine is None:  # a reader's first batch: the shares shrink
            mine = put[reader] = 0
            self._share = max(1, self.maxsize // len(put))
        # Past capacity every reader keeps its share and loses the rest: one that offers more
        # than the others is shed more, none is starved by the others' luck.
        if mine - self._taken.get(reader, 0) < self._share and self.q.qsize() < self.maxsize:
            put[reader] = mine + 1
            self.q.put_nowait((reader, reads))
        else:
            self.shed(reader, len(reads))

    def _count_reads(self, reader: str, per_antenna: Mapping[int, int]) -> None:
        counters = self._read_counters
        for antenna, n in per_antenna.items():
            c = counters.get((reader, antenna))
            if c is None:  # fetched once per read point (labels() takes a shared lock)
                c = counters[(reader, antenna)] = self.metrics.reads.labels(reader, str(antenna))
            c.inc(n)

    def shed_at_source(self, reader: str, per_antenna: dict[int, int]) -> None:
        """Reads the reader host received but shed before sending them (this process fell
        behind): counted as read, and as shed, like those shed here."""
        act = self.activity.setdefault(reader, ReaderActivity())
        act.last_report = time.time()
        self._count_reads(reader, per_antenna)
        self.shed(reader, sum(per_antenna.values()))

    def shed(self, reader: str, reads: int) -> None:
        """A batch of `reads` reads of `reader` dropped (here, or by the reader host when the
        daemon fell behind): counted per reader, logged at most once per 10 s."""
        self.last_shed[reader] = time.time()
        self.metrics.ingest_dropped.inc()
        self.metrics.ingest_dropped_reads.labels(reader).inc(reads)
        with self._drop_lock:  # reader threads drop concurrently; one line per 10 s
            self._dropped += reads
            now = time.monotonic()
            if now - self._dropped_logged < 10.0:
                return
            dropped, self._dropped, self._dropped_logged = self._dropped, 0, now
        log.warning("ingest queue full: dropped %d reads (the ingest thread cannot keep up; "
                    "each reader is shed past its share of the queue, counted in "
                    "rfidd_ingest_dropped_reads_total{reader}); next report in 10 s", dropped)

    def on_state(self, reader: str, state: ReaderState, reason: str) -> None:
        act = self.activity.setdefault(reader, ReaderActivity())
        now = time.time()
        if (state is ReaderState.ONLINE) != (act.state is ReaderState.ONLINE):
            act.since = now  # up or down since; CONNECTING<->OFFLINE retries are still down
        if state is ReaderState.ONLINE and act.state is not ReaderState.ONLINE:
            act.last_report = now
            act.connects += 1
            act.down_alerted = False
            if act.connects > 1:
                self.metrics.reader_reconnects.labels(reader).inc()
        act.state, act.reason = state, reason
        if self._on_state is not None:
            self._on_state(reader, state, reason)

    def on_anomaly(self, reader: str, kind: str, detail: str) -> None:
        self.metrics.reader_anomalies.labels(reader, kind).inc()
        key = (reader, kind)
        if key not in self._warned:  # log once per kind; the counter tells how often
            self._warned.add(key)
            log.warning("reader %s: %s: %s (further ones only counted)", reader, kind, detail)
