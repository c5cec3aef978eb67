"""Staff operations at scale while reads flow: items/s of a take-over, a count close, a
reception close and a shipment, and the longest hold of the domain lock during each.

The stack is the daemon's (lifecycle books, store operations, an ingest on the same SQLite
file and the same lock); an ingest thread commits batches of reads of other items all along,
so each figure is what staff get while the store keeps reading, and `ingest_commits` says how
many of the ingest's commits landed while the operation ran (0 would mean it was stalled).
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from inventory import bench as inv_bench
from rfidd.health import DomainLock

ZONES = {"stockroom": "stock", "floor": "floor", "reception": "reception",
         "fitting": "fitting", "fitting2": "fitting"}
SITE_SGLN = "urn:epc:id:sgln:0614141.00001.0"


class TimedLock(DomainLock):
    """The domain lock, timing each outermost hold (re-entrant: nested holds are one)."""

    def __init__(self, timeout_s: float = 30.0) -> None:
        super().__init__(timeout_s)
        self._local = threading.local()
        self._mu = threading.Lock()
        self.max_hold_s = 0.0
        self.holds = 0
        self.by_thread: dict[str, float] = {}  # thread name -> its longest hold
        self.cpu_by_thread: dict[str, float] = {}  # ...and its most CPU time in one hold

    def _enter(self) -> None:
        depth = getattr(self._local, "depth", 0)
        if depth == 0:
            self._local.t0 = time.perf_counter()
            self._local.c0 = time.thread_time()
        self._local.depth = depth + 1

    def _exit(self) -> None:
        self._local.depth -= 1
        if self._local.depth == 0:
            held = time.perf_counter() - self._local.t0
            cpu = time.thread_time() - self._local.c0
            name = threading.current_thread().name
            with self._mu:
                self.holds += 1
                self.max_hold_s = max(self.max_hold_s, held)
                self.by_thread[name] = max(self.by_thread.get(name, 0.0), held)
                self.cpu_by_thread[name] = max(self.cpu_by_thread.get(name, 0.0), cpu)

    def __enter__(self) -> DomainLock:
        super().__enter__()
        self._enter()
        return self

    def __exit__(self, *exc: object) -> None:
        self._exit()
        super().__exit__(*exc)

    @contextmanager
    def waiting(self) -> Iterator[None]:
        with super().waiting():
            self._enter()
            try:
                yield
            finally:
                self._exit()

    def reset(self) -> None:
        with self._mu:
            self.max_hold_s, self.holds = 0.0, 0
            self.by_thread.clear()
            self.cpu_by_thread.clear()


@dataclass
class OpFigure:
    name: str
    items: int
    seconds: float
    cpu_s: float  # CPU time of the thread that ran the operation
    max_hold_ms: float  # the operation's longest hold of the domain lock
    max_hold_cpu_ms: float  # its most CPU time in one hold (wall time counts the load)
    ingest_max_hold_ms: float  # the ingest thread's, meanwhile
    ingest_commits: int

    @property
    def items_per_s(self) -> float:
        return self.items / self.seconds if self.seconds > 0 else 0.0

    @property
    def items_per_cpu_s(self) -> float:
        return self.items / self.cpu_s if self.cpu_s > 0 else 0.0


class _Churn:
    """An ingest thread committing batches of reads of its own items, moving them between two
    fitting rooms (so every batch has changes, events and a commit)."""

    def __init__(self, ing: Any, epcs: list[str], batch: int = 100) -> None:
        self.ing, self.epcs, self.batch = ing, epcs, batch
        self.stop = threading.Event()
        self.commits = 0
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, name="bench-churn", daemon=True)

    def _run(self) -> None:
        from readers.base import TagRead

        k, t = 0, time.time()
        try:
            while not self.stop.is_set():
                part = [self.epcs[(k * self.batch + i) % len(self.epcs)]
                        for i in range(self.batch)]
                ant = 1 + (k * self.batch // len(self.epcs)) % 2  # each pass moves them
                t += 0.001
                before = self.ing.stats.commits
                self.ing.process([("churn", [TagRead(e, "churn", ant, -50.0, t)
                                             for e in part])])
                self.commits += self.ing.stats.commits - before
                k += 1
        except BaseException as exc:  # reported by the caller, not swallowed
            self.errors.append(exc)


class Site:
    """A site's services on a SQLite file with a timed domain lock."""

    def __init__(self, tmp: str, *, churn_items: int = 200, chunk: int | None = None) -> None:
        """`chunk`: items per transaction of a count or reception close (default: the
        daemon's, OpsSettings.apply_chunk)."""
        from inventory.epc import EpcClassifier
        from inventory.presence import PresenceTracker
        from inventory.rules import SiteRules
        from rfidd.builders import build_ops
        from rfidd.config import Config
        from rfidd.context import ServiceContext
        from rfidd.ingest import Ingestor
        from rfidd.intake import IngestQueue
        from rfidd.lifecycle import books
        from rfidd.lifecycle.service import LifecycleService
        from rfidd.metrics import Metrics
        from rfidd.ops import OpsSettings
        from rfidd.store.db import open_database

        cfg = Config.model_validate({
            "site": {"id": "bench", "name": "bench", "sgln": SITE_SGLN},
            "database": {"url": f"sqlite:///{tmp}/staff.db"}, "mqtt": {"enabled": False},
            "http": {"enabled": False}, "zones": {z: {"kind": k} for z, k in ZONES.items()},
        })
        self.db = open_database(cfg.database.url)
        self.lock = TimedLock()
        metrics = Metrics()
        tracker = PresenceTracker(departure_s=3600, move_margin_db=0, move_margin_decay_s=1)
        self.ctx = ServiceContext(cfg, self.db, metrics, tracker, self.lock)
        self.books = LifecycleService(self.ctx)
        settings = OpsSettings() if chunk is None else OpsSettings(apply_chunk=chunk)
        self.ops = build_ops(self.ctx, settings, books=self.books)
        self.ops.start()
        q = IngestQueue(metrics)
        self.ing = Ingestor(
            source=q, database=self.db, tracker=tracker, lock=self.lock,
            classifier=EpcClassifier(()), zone_of={("churn", 1): "fitting",
                                                   ("churn", 2): "fitting2"},
            rules=SiteRules(SITE_SGLN, {z: f"{SITE_SGLN}.{z}" for z in ZONES}, ZONES, "bench"),
            encode=self.ctx.event_json, metrics=metrics, stop=threading.Event(),
            books=lambda s, epcs: books.load_states(s, epcs, "bench"))
        for c in (self.books, self.ops.reception, self.ops.exits):
            self.ing.add_component(c)
        self.churn_items = churn_items
        self.churn_epcs: list[str] = []  # the tail of the site's EPCs (`epcs`)

    def epcs(self, n: int) -> list[str]:
        """n EPCs for the figures; the churn thread reads the next ones."""
        epcs, _ = inv_bench.generate_epcs(n + self.churn_items, 200)
        self.churn_epcs = epcs[n:]
        return epcs[:n]

    def place(self, epcs: list[str], zone: str, at: float) -> None:
        """Items read in `zone` at `at`: the tracker and their items rows, as the ingest
        leaves them (the set-up of a figure, not timed)."""
        from inventory.epc import decode
        from inventory.presence import ZoneRead
        from rfidd.store import repo

        gtin = {e: decode(e).gtin14 for e in epcs}  # the ingest decodes what it reads
        with self.lock:
            for k in range(0, len(epcs), 5000):
                self.ctx.tracker.observe([ZoneRead(e, zone, -50.0, at)
                                          for e in epcs[k:k + 5000]])
        with self.db.write() as s:
            repo.upsert_items(s, [repo.ItemUpsert(e, at, zone, gtin=gtin[e]) for e in epcs], at)

    def timed(self, name: str, items: int, fn: Callable[[], Any]) -> tuple[OpFigure, Any]:
        """Run `fn` while the churn thread commits reads; its figure and its result."""
        churn = _Churn(self.ing, self.churn_epcs)
        churn.thread.start()
        while churn.commits < 2 and churn.thread.is_alive():  # the ingest is committing
            time.sleep(0.005)
        self.lock.reset()
        before = churn.commits
        c0, t0 = time.thread_time(), time.perf_counter()
        try:
            out = fn()
        finally:
            dt, cpu = time.perf_counter() - t0, time.thread_time() - c0
            during = churn.commits - before
            me = threading.current_thread().name
            hold = self.lock.by_thread.get(me, 0.0)
            ingest_hold = self.lock.by_thread.get(churn.thread.name, 0.0)
            hold_cpu = self.lock.cpu_by_thread.get(me, 0.0)
            churn.stop.set()
            churn.thread.join(60)
        if churn.errors:
            raise RuntimeError(f"bench: the ingest thread failed: {churn.errors[0]!r}")
        return OpFigure(name, items, dt, cpu, hold * 1000.0, hold_cpu * 1000.0,
                        ingest_hold * 1000.0, during), out

    def close(self) -> None:
        self.db.dispose()


def run(count_items: int = 100_000, items: int = 10_000, ship_items: int = 5000
        ) -> dict[str, Any]:
    """Every figure, checked: the take-over books what was found, the count finds it, the
    reception receives what was read, the shipment ships every item."""
    out: dict[str, Any] = {}
    figs: list[OpFigure] = []
    with tempfile.TemporaryDirectory(prefix="rfidd-bench-") as tmp:
        site = Site(tmp)
        try:
            epcs = site.epcs(count_items + items)
            stock, received = epcs[:count_items], epcs[count_items:]
            half = count_items // 2
            site.place(stock[:half], "stockroom", 1000.0)
            site.place(stock[half:], "floor", 1000.0)
            c = site.ops.counting
            c.start_count(["stockroom", "floor"], adopt=True)
            site.place(stock, "stockroom", 1100.0)  # the take-over's reads
            c.tick()  # the daemon's ops job: live progress (every tick_s)
            f, doc = site.timed(f"takeover_{count_items}", count_items, c.stop_count)
            figs.append(f)
            ok = len(doc["books"]["taken_over"]) == count_items
            c.start_count(["stockroom", "floor"])
            site.place(stock, "stockroom", 1200.0)
            c.tick()
            f, doc = site.timed(f"count_close_{count_items}", count_items, c.stop_count)
            figs.append(f)
            ok = ok and doc["totals"]["found"] == count_items and \
                doc["books"]["observed"] == count_items
            r = site.ops.reception
            from datetime import UTC, datetime

            from inventory.asn import Asn

            site.place(received, "reception", 1300.0)
            r.import_asns([Asn("BENCH-ASN", "WH", "bench", datetime(2026, 1, 1, tzinfo=UTC),
                               tuple(received), ())], "bench")
            f, doc = site.timed(f"reception_close_{items}", items, r.close_reception)
            figs.append(f)
            ok = ok and len(doc["received"]) == items
            ship = stock[:ship_items]
            f, res = site.timed(f"ship_{ship_items}", ship_items, lambda: site.books.handle(
                "ship", {"txn": "BENCH-SHIP", "epcs": ship, "to_site": "other"}))
            figs.append(f)
            ok = ok and res.rejected == 0
        finally:
            site.close()
    for f in figs:
        out[f.name] = {"items_per_s": f.items_per_s, "items_per_cpu_s": f.items_per_cpu_s,
                       "seconds": f.seconds, "max_hold_ms": f.max_hold_ms,
                       "max_hold_cpu_ms": f.max_hold_cpu_ms,
                       "ingest_max_hold_ms": f.ingest_max_hold_ms,
                       "ingest_commits": f.ingest_commits}
    out["ok"] = ok
    return out


if __name__ == "__main__":
    import json
    import sys

    from rfidd.app import tune_gc

    tune_gc()  # as `rfidd run` and `rfidd bench` do

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    print(json.dumps(run(n, min(n, 10_000), min(n, 5000)), indent=1))
