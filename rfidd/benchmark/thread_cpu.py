"""The ingest thread's own cost: CPU of that one thread per batch and per read, from the kernel's
per-thread accounting (/proc/self/task/<tid>/schedstat), so other threads and processes on a
loaded machine do not blur it the way they blur wall-clock rates.

`write_path` runs the whole daemon (every batch component, SQLite, no broker) with test readers
that put reads straight into the ingest queue, as fast as the ingest takes them, over a
churning population (arrivals, moves and departures in every second): the ingest thread is then
the only bottleneck, and `1 / cpu per read` is what it could commit with a core to itself.
"""

from __future__ import annotations

import random
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inventory.epc import sgtin96_hex


def thread_cpu_s(native_id: int | None) -> float:
    """CPU seconds the thread `native_id` of this process has run (0.0 if unknown)."""
    if native_id is None:
        return 0.0
    try:
        with open(f"/proc/self/task/{native_id}/schedstat") as f:
            return int(f.read().split()[0]) / 1e9
    except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
        return 0.0


def ingest_thread_id(ingestor: Any) -> int | None:
    t = getattr(ingestor, "_thread", None)
    return getattr(t, "native_id", None)


@dataclass(frozen=True)
class ThreadCost:
    reads: int
    batches: int
    cpu_s: float
    wall_s: float

    @property
    def us_per_read(self) -> float:
        return self.cpu_s / max(self.reads, 1) * 1e6

    @property
    def ms_per_batch(self) -> float:
        return self.cpu_s / max(self.batches, 1) * 1e3

    @property
    def reads_per_cpu_s(self) -> float:
        return self.reads / self.cpu_s if self.cpu_s > 0 else 0.0


class _PushReader:
    """A reader driver that the harness drives: `read` enqueues like a driver callback."""

    def __init__(self, name: str, sink: Any) -> None:
        from readers.base import ReaderState

        self.name, self.sink, self._state = name, sink, ReaderState.OFFLINE

    def start(self) -> None:
        from readers.base import ReaderState

        self._state = ReaderState.ONLINE
        self.sink.on_state(self.name, ReaderState.ONLINE, "bench")

    def stop(self, timeout: float = 5.0) -> None:
        from readers.base import ReaderState

        self._state = ReaderState.OFFLINE

    @property
    def state(self) -> Any:
        return self._state

    def running(self) -> bool:
        return True

    def hung_for(self) -> float:
        return 0.0


def write_path(zones: int = 20, items_per_zone: int = 200, seconds: float = 5.0,
               report: int = 50, churn_per_s: int = 20, db_url: str | None = None,
               batch_max_rows: int = 500,
               ) -> ThreadCost:
    """The ingest thread's CPU over `seconds` of a saturated queue (see the module doc).
    Each zone has one reader; `churn_per_s` items per zone arrive, move on to the next zone
    and stop being read (so depart) every second."""
    from readers.base import TagRead
    from rfidd.app import Daemon, Timings
    from rfidd.config import Config

    names = [f"z{i:02d}" for i in range(zones)]
    with tempfile.TemporaryDirectory(prefix="rfidd-bench-") as tmp:
        cfg = Config.model_validate({
            "site": {"id": "bench", "name": "bench", "sgln": "urn:epc:id:sgln:3760001.00001.0",
                     "company_prefixes": ["3760001"]},
            "database": {"url": db_url or f"sqlite:///{Path(tmp) / 'w.db'}",
                         "batch_max_rows": batch_max_rows},
            "mqtt": {"enabled": False}, "http": {"enabled": False},
            "presence": {"departure_s": 2.0, "move_margin_db": 3.0, "move_margin_decay_s": 2.0},
            "zones": {z: {"kind": "stock"} for z in names},
            "readers": {f"r{z}": {"kind": "llrp", "address": "127.0.0.1",
                                  "antennas": {"1": z}} for z in names},
        })
        drivers: dict[str, _PushReader] = {}

        def factory(name: str, _rc: Any, q: Any) -> _PushReader:
            drivers[name] = _PushReader(name, q)
            return drivers[name]

        daemon = Daemon(cfg, timings=Timings(sweep_s=0.5), reader_factory=factory)
        daemon.start()
        try:
            ing, q = daemon.ingestor, daemon.queue
            assert ing is not None and q is not None
            rnd = random.Random(7)
            serial = [0]

            def new_epc() -> str:
                serial[0] += 1
                return sgtin96_hex("03760001001013", serial[0], 7)

            where: dict[str, list[str]] = {z: [new_epc() for _ in range(items_per_zone)]
                                           for z in names}
            stop = threading.Event()

            def feed() -> None:
                last_churn = time.monotonic()
                while not stop.is_set():
                    now = time.monotonic()
                    if now - last_churn >= 1.0 / max(churn_per_s, 1):
                        last_churn = now
                        for i, z in enumerate(names):  # one arrival, one move, one departure
                            nxt = names[(i + 1) % zones]
                            items = where[z]
                            items.pop(rnd.randrange(len(items)))  # no longer read: departs
                            where[nxt].append(items.pop(rnd.randrange(len(items))))
                            items.append(new_epc())
                    if q.q.qsize() > 4 * zones:
                        time.sleep(0.002)
                        continue
                    at = time.time()
                    for z in names:
                        items = where[z]
                        epcs = rnd.sample(items, min(report, len(items)))
                        q.on_reads(f"r{z}", [TagRead(e, f"r{z}", 1, -50.0, at) for e in epcs])

            feeder = threading.Thread(target=feed, name="bench-feed", daemon=True)
            feeder.start()
            tid = ingest_thread_id(ing)
            time.sleep(2.0)  # the initial population's arrivals are not the steady state
            r0, b0, c0, t0 = (ing.stats.committed_reads, turns(ing), thread_cpu_s(tid),
                              time.monotonic())
            time.sleep(seconds)
            r1, b1, c1, t1 = (ing.stats.committed_reads, turns(ing), thread_cpu_s(tid),
                              time.monotonic())
            stop.set()
            feeder.join(5)
        finally:
            daemon.stop()
    return ThreadCost(r1 - r0, b1 - b0, c1 - c0, t1 - t0)


def turns(ing: Any) -> int:
    """Batches processed (one `process` call each); an older ingest without the count falls
    back to its commits."""
    stats = ing.stats
    return int(getattr(stats, "processed", stats.commits))
