"""`rfidd bench`: the store-operations benchmark, including the database.

The pure figures come from inventory.bench (generated data with planted discrepancies, checked).
The database figures insert the book (one row per item) into a real database, then time what a
count does when staff press stop on a big store: load the book from the items table, take the
sightings, reconcile, render the report. Insertion is reported but not part of the target: in a
store the items table fills up over months.
"""

from __future__ import annotations

import random
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from rich.table import Table
from sqlalchemy import insert

from inventory import bench
from inventory.asn import Asn
from inventory.counting import CountSession
from inventory.reports import count_csv, to_json
from readers.base import ReaderState, TagRead
from rfidd.console import table_console
from rfidd.ops import store
from rfidd.store.db import Database, open_database
from rfidd.store.models import Item

TARGETS = {100_000: 1.0, 1_000_000: 10.0, 5000: 1.0}
INSERT_CHUNK = 20_000


def insert_items(db: Database, book: dict[str, str], gtin_of: dict[str, str]) -> float:
    """Insert the book as item rows; returns seconds."""
    t0 = time.perf_counter()
    now = time.time()
    rows = [{"epc": e, "gtin": gtin_of[e], "zone": z, "disposition": "sellable_not_accessible",
             "first_seen": now, "last_seen": now, "updated": now} for e, z in book.items()]
    with db.write() as s:
        for i in range(0, len(rows), INSERT_CHUNK):
            s.execute(insert(Item), rows[i:i + INSERT_CHUNK])
    return time.perf_counter() - t0


def run_db_count(db: Database, n: int, *, seed: int = 0, missing_rate: float = 0.01,
                 misplaced_rate: float = 0.01) -> bench.BenchFigure:
    """An n-item count whose book comes from the database, with planted discrepancies."""
    rng = random.Random(seed)
    zones = bench.ZONES
    n_unexpected = max(1, n // 200)
    epcs, gtin_of = bench.generate_epcs(n + n_unexpected, max(1, min(20_000, n // 50)))
    booked, extra = epcs[:n], epcs[n:]
    book, reads, missing, misplaced = bench.plant_count(booked, extra, rng, missing_rate,
                                                        misplaced_rate)
    insert_s = insert_items(db, book, gtin_of)

    phases: dict[str, float] = {}
    t = time.perf_counter()
    with db.session() as s:
        db_book, db_gtins = store.load_book(s)
    phases["db_load"] = time.perf_counter() - t

    def record_of(epc: str) -> str | None:
        g = db_gtins.get(epc)
        return g if g is not None else gtin_of.get(epc)

    t = time.perf_counter()
    session = CountSession(zones, db_book, record_of=record_of, session_id="bench-db",
                           started_at=0.0)
    phases["load_book"] = time.perf_counter() - t
    t = time.perf_counter()
    for z, zr in reads.items():
        for k in range(0, len(zr), bench.BATCH):
            session.observe_zone(z, zr[k:k + bench.BATCH])
    phases["ingest_reads"] = time.perf_counter() - t
    t = time.perf_counter()
    result = session.finish(at=1.0)
    phases["reconcile"] = time.perf_counter() - t
    t = time.perf_counter()
    doc = to_json(result)
    count_csv(result)
    phases["report"] = time.perf_counter() - t
    phases["total"] = sum(phases.values())
    ok = ({m.epc for m in result.missing} == missing
          and {m.epc for m in result.misplaced} == misplaced
          and {u.epc for u in result.unexpected} == set(extra)
          and len(db_book) == n)
    return bench.BenchFigure(f"db_count_{n}", n, phases, ok, details={
        "insert_s": insert_s, "totals": result.totals(), "report_json_bytes": len(doc)})


class _Dock:
    """The benchmark's reader: it hands the daemon's ingest queue the reads it is given."""

    def __init__(self, name: str, sink: Any) -> None:
        self.name, self.sink = name, sink

    def start(self) -> None:
        self.sink.on_state(self.name, ReaderState.ONLINE, "bench")

    def stop(self, timeout: float = 5.0) -> None:
        self.sink.on_state(self.name, ReaderState.OFFLINE, "bench")

    @property
    def state(self) -> ReaderState:
        return ReaderState.ONLINE

    def running(self) -> bool:
        return True

    def hung_for(self) -> float:
        return 0.0


def run_db_reception(url: str, n: int, *, missing: int = 7,
                     unexpected: int = 5) -> bench.BenchFigure:
    """An n-item ASN received by a whole daemon (app.Daemon, reads through its ingest): the
    timed part is `close_reception` (reconcile, one `receiving` event per item from the
    lifecycle rules, report, one commit)."""
    from rfidd.app import Daemon
    from rfidd.config import Config

    cfg = Config.model_validate({
        "site": {"id": "bench", "name": "bench", "sgln": "urn:epc:id:sgln:0614141.00001.0"},
        "database": {"url": url}, "mqtt": {"enabled": False},
        "http": {"enabled": False}, "zones": {"reception": {"kind": "reception"}},
        "readers": {"dock": {"kind": "llrp", "address": "127.0.0.1",
                             "antennas": {"1": "reception"}}},
    })
    docks: list[_Dock] = []

    def dock(name: str, _rc: Any, sink: Any) -> _Dock:
        docks.append(_Dock(name, sink))
        return docks[-1]

    daemon = Daemon(cfg, reader_factory=dock, with_lifecycle=False)
    daemon.start()
    try:
        assert daemon.ops is not None
        reception = daemon.ops.reception
        epcs, _ = bench.generate_epcs(n + unexpected, 100)
        listed, extra = epcs[:n], epcs[n:]
        rng = random.Random(1)
        planted = set(rng.sample(listed, missing))
        asn = Asn("BENCH-DESADV", "WH", "bench", datetime(2024, 1, 1, tzinfo=UTC),
                  tuple(sorted(listed)), ())
        phases: dict[str, float] = {}
        t = time.perf_counter()
        reception.import_asns([asn], "bench")
        phases["import"] = time.perf_counter() - t
        reads = [e for e in listed if e not in planted] + extra
        sid = reception.receptions()[0]["session_id"]
        t = time.perf_counter()
        now = time.time()
        for k in range(0, len(reads), 50):
            docks[0].sink.on_reads("dock", [TagRead(e, "dock", 1, -50.0, now)
                                            for e in reads[k:k + 50]])
        deadline = time.monotonic() + 120
        while reception.reception(sid)["progress"]["read"] < len(reads):
            if time.monotonic() > deadline:
                raise RuntimeError("bench: the reads never reached the reception")
            time.sleep(0.01)
        phases["ingest_reads"] = time.perf_counter() - t
        t = time.perf_counter()
        doc = reception.close_reception()
        phases["close"] = time.perf_counter() - t
        phases["total"] = phases["close"]
    finally:
        daemon.stop()
    ok = ({m["epc"] for m in doc["missing"]} == planted
          and {u["epc"] for u in doc["unexpected"]} == set(extra))
    return bench.BenchFigure(f"db_reception_{n}", n, phases, ok, details={
        "totals": doc["totals"], "receiving_events": len(doc["received"])})


def run(sizes: tuple[int, ...], asn_items: int, db_url: str | None,
        with_db: bool = True) -> list[bench.BenchFigure]:
    figures = bench.run(sizes, asn_items)
    if not with_db:
        return figures
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix="rfidd-bench-") as tmp:
            url = db_url or f"sqlite:///{Path(tmp) / 'bench.db'}"
            db = open_database(url)
            try:
                if db_url is not None:  # a given database: start from an empty items table
                    with db.write() as s:
                        s.query(Item).delete()
                figures.append(run_db_count(db, n))
                if db_url is not None:
                    with db.write() as s:
                        s.query(Item).delete()
            finally:
                db.dispose()
    if asn_items and db_url is None:  # writes ops tables: only on a throwaway database
        with tempfile.TemporaryDirectory(prefix="rfidd-bench-") as tmp:
            figures.append(run_db_reception(f"sqlite:///{Path(tmp) / 'reception.db'}",
                                            asn_items))
    return figures


PHASES = (("db_load", "db load"), ("load_book", "book"), ("ingest_reads", "reads"),
          ("reconcile", "reconcile"), ("report", "report"), ("close", "close"))


def figures_table(figures: list[bench.BenchFigure]) -> Table:
    """Totals against targets, phases in one wrapped column so it fits an 80-column terminal."""
    t = Table(title="rfidd bench — store operations")
    for c in ("benchmark", "items", "total", "target", "result", "phases (s)"):
        t.add_column(c, justify="right" if c in ("items", "total", "target") else "left")
    for f in figures:
        target = TARGETS.get(f.items)
        total = f.seconds["total"]
        met = target is None or total < target
        verdict = ("[green]ok[/]" if f.ok else "[red]WRONG RESULT[/]") + (
            "" if met else " [yellow](over target)[/]")
        phases = [f"{label} {f.seconds[k]:.3f}" for k, label in PHASES if k in f.seconds]
        insert_s = f.details.get("insert_s")
        if insert_s is not None:
            phases.append(f"(setup: insert {insert_s:.1f}, not timed)")
        t.add_row(f.name, f"{f.items:,}", f"{total:.3f}s",
                  "" if target is None else f"< {target:g}s", verdict, " · ".join(phases))
    return t


@click.command("bench")
@click.option("--sizes", default="100000,1000000", show_default=True,
              help="Comma-separated count sizes.")
@click.option("--asn-items", default=5000, show_default=True, type=int)
@click.option("--db-url", default=None,
              help="Database for the DB figures (default: a temporary SQLite file). Its items "
                   "table is emptied.")
@click.option("--no-db", is_flag=True, help="Only the in-memory figures.")
@click.option("--json", "as_json", is_flag=True)
def bench_command(sizes: str, asn_items: int, db_url: str | None, no_db: bool,
                  as_json: bool) -> None:
    """Benchmark counts (100k, 1M items) and a 5,000-item reception, including the database."""
    try:
        ns = tuple(int(x) for x in sizes.split(",") if x.strip())
    except ValueError:
        raise click.BadParameter(f"{sizes!r} is not a list of integers",
                                 param_hint="--sizes") from None
    if not ns or any(n < 1 for n in ns):
        raise click.BadParameter("sizes must be positive", param_hint="--sizes")
    figures = run(ns, asn_items, db_url, with_db=not no_db)
    if as_json:
        import json

        click.echo(json.dumps([f.to_dict() for f in figures], indent=2, default=_default))
    else:
        table_console().print(figures_table(figures))
    if not all(f.ok for f in figures):
        raise SystemExit(1)


def _default(o: Any) -> Any:
    return str(o)
