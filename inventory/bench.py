"""Benchmarks of the store-operations core on generated data (the CLI `rfidd bench` calls these).

Each run plants known discrepancies and checks the result names exactly those, so a fast but wrong
reconciliation cannot pass as a good figure. Timings are wall-clock `perf_counter` seconds; the
data generation itself is not timed. Database load is the daemon's part and is timed there.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from inventory.asn import Asn
from inventory.counting import CountSession
from inventory.epc import sgtin96_hex
from inventory.reception import ReceptionSession
from inventory.reports import count_csv, reception_csv, to_json

ZONES = ("stockroom", "sales_floor", "fitting_room")
BATCH = 500  # tags per reader report, roughly one LLRP RO_ACCESS_REPORT under load


@dataclass(frozen=True, slots=True)
class BenchFigure:
    name: str
    items: int
    seconds: dict[str, float]  # phase -> seconds; "total" is the sum of timed phases
    ok: bool  # the result matched the planted discrepancies exactly
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "items": self.items, "seconds": self.seconds, "ok": self.ok,
                "details": self.details}


def _gtins(n: int) -> list[str]:
    """n valid GTIN-14s under the GS1 example company prefix 0614141."""
    from inventory.catalog import gtin_check_digit

    out = []
    for i in range(n):
        body = f"00614141{i:05d}"
        out.append(body + str(gtin_check_digit(body)))
    return out


def generate_epcs(n: int, n_gtins: int) -> tuple[list[str], dict[str, str]]:
    """n SGTIN-96 EPCs spread over n_gtins GTINs, and the EPC -> GTIN map.

    The serial is the low 38 bits of an SGTIN-96, so one encoding per GTIN plus integer addition
    gives valid EPCs a thousand times faster than encoding each one.
    """
    gtins = _gtins(n_gtins)
    bases = [int(sgtin96_hex(g, 0, 7), 16) for g in gtins]
    epcs: list[str] = []
    gtin_of: dict[str, str] = {}
    for i in range(n):
        k = i % n_gtins
        e = f"{bases[k] + 1 + i // n_gtins:024X}"
        epcs.append(e)
        gtin_of[e] = gtins[k]
    return epcs, gtin_of


def epc_batches(n: int, n_gtins: int, size: int) -> Iterator[list[str]]:
    """`generate_epcs(n, n_gtins)[0]`, the same EPCs in the same order, made `size` at a time
    (a memory benchmark must not hold them all: only what it measures should)."""
    bases = [int(sgtin96_hex(g, 0, 7), 16) for g in _gtins(n_gtins)]
    for start in range(0, n, size):
        yield [f"{bases[i % n_gtins] + 1 + i // n_gtins:024X}"
               for i in range(start, min(n, start + size))]


def _timed(phases: dict[str, float], name: str, fn: Callable[[], Any]) -> Any:
    t = time.perf_counter()
    out = fn()
    phases[name] = time.perf_counter() - t
    return out


def plant_count(
    booked: list[str], extra: list[str], rng: random.Random, missing_rate: float,
    misplaced_rate: float,
) -> tuple[dict[str, str], dict[str, list[str]], set[str], set[str]]:
    """A count's book over ZONES and what the readers find, with planted discrepancies:
    (book, reads by zone, planted missing, planted misplaced); `extra` items are unexpected."""
    book = {e: ZONES[i % len(ZONES)] for i, e in enumerate(booked)}
    by_zone: dict[str, list[str]] = {z: [] for z in ZONES}
    missing: set[str] = set()
    misplaced: set[str] = set()
    for i, e in enumerate(booked):
        r = rng.random()
        if r < missing_rate:
            missing.add(e)
            continue
        z = ZONES[i % len(ZONES)]
        if r < missing_rate + misplaced_rate:
            misplaced.add(e)
            z = ZONES[(i + 1) % len(ZONES)]
        by_zone[z].append(e)
    for j, e in enumerate(extra):
        by_zone[ZONES[j % len(ZONES)]].append(e)
    return book, by_zone, missing, misplaced


def run_count(n: int, *, seed: int = 0, n_skus: int | None = None,
              missing_rate: float = 0.01, misplaced_rate: float = 0.01,
              unexpected: int | None = None) -> BenchFigure:
    """Reconcile an n-item count over three zones with planted missing/misplaced/unexpected."""
    rng = random.Random(seed)
    n_skus = n_skus or max(1, min(20_000, n // 50))
    n_unexpected = unexpected if unexpected is not None else max(1, n // 200)
    epcs, gtin_of = generate_epcs(n + n_unexpected, n_skus)
    booked_epcs, extra = epcs[:n], epcs[n:]
    book, by_zone, planted_missing, planted_misplaced = plant_count(
        booked_epcs, extra, rng, missing_rate, misplaced_rate)
    for zone_reads in by_zone.values():
        rng.shuffle(zone_reads)

    phases: dict[str, float] = {}
    session = _timed(
        phases, "load_book",
        lambda: CountSession(ZONES, book, record_of=gtin_of, session_id="bench", started_at=0.0),
    )

    def feed() -> None:
        for z, reads in by_zone.items():
            for k in range(0, len(reads), BATCH):
                session.observe_zone(z, reads[k:k + BATCH])

    _timed(phases, "ingest_reads", feed)
    result = _timed(phases, "reconcile", lambda: session.finish(at=1.0))
    doc = _timed(phases, "report", lambda: (to_json(result), count_csv(result)))
    phases["total"] = sum(phases.values())
    ok = (
        {m.epc for m in result.missing} == planted_missing
        and {m.epc for m in result.misplaced} == planted_misplaced
        and {u.epc for u in result.unexpected} == set(extra)
        and len(result.found) == n - len(planted_missing) - len(planted_misplaced)
    )
    return BenchFigure(
        name=f"count_{n}",
        items=n,
        seconds=phases,
        ok=ok,
        details={
            "totals": result.totals(),
            "record_accuracy": result.accuracy.record,
            "aggregate_accuracy": result.accuracy.aggregate,
            "report_json_bytes": len(doc[0].encode()),
        },
    )


def run_reception(n: int = 5000, *, seed: int = 0, n_gtins: int = 100, missing: int = 7,
                  unexpected: int = 5) -> BenchFigure:
    """An n-item ASN received with planted missing and unexpected items."""
    rng = random.Random(seed)
    epcs, gtin_of = generate_epcs(n + unexpected, n_gtins)
    listed, extra = epcs[:n], epcs[n:]
    asn = Asn("BENCH-ASN", "WH", "STORE", datetime(2024, 1, 1, tzinfo=UTC),
              tuple(sorted(listed)), ())
    planted_missing = set(rng.sample(listed, missing))
    reads = [e for e in listed if e not in planted_missing] + extra
    rng.shuffle(reads)
    session = ReceptionSession(asn, gtin_of=gtin_of.get, session_id="bench", opened_at=0.0)
    phases: dict[str, float] = {}

    def feed() -> None:
        for k in range(0, len(reads), 50):
            session.observe(reads[k:k + 50], at=1.0)

    _timed(phases, "ingest_reads", feed)
    report = _timed(phases, "reconcile", lambda: session.close(at=2.0))
    _timed(phases, "report", lambda: (to_json(report), reception_csv(report)))
    phases["total"] = sum(phases.values())
    ok = set(report.missing) == planted_missing and set(report.unexpected) == set(extra)
    return BenchFigure(name=f"reception_{n}", items=n, seconds=phases, ok=ok,
                       details={"totals": report.totals()})


def run(sizes: tuple[int, ...] = (100_000, 1_000_000), asn_items: int = 5000) -> list[BenchFigure]:
    """The issue's benchmark set: counts of each size and one ASN reception."""
    return [*(run_count(n) for n in sizes), run_reception(asn_items)]


def format_figures(figures: list[BenchFigure]) -> str:
    """Plain text lines for a CLI."""
    lines = []
    for f in figures:
        phases = ", ".join(f"{k} {v:.3f}s" for k, v in f.seconds.items() if k != "total")
        lines.append(f"{f.name:>16}: {f.seconds['total']:.3f}s total ({phases})"
                     f"{'' if f.ok else '  RESULT MISMATCH'}")
    return "\n".join(lines)
