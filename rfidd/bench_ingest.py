"""`rfidd bench-ingest`: reads/s the whole daemon sustains from many simulated LLRP readers.

Not a test: it prints figures. N simulated readers (one zone each) run at a given read rate;
the real daemon (sllurp drivers, ingest thread, SQLite or PostgreSQL, optional MQTT) ingests
them. Reported: reads/s ingested over the window, reads sent vs ingested (nothing may be lost),
batch commit latency, and the deepest the ingest queue got.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from rfidd.app import Daemon, Timings
from rfidd.console import table_console
from rfidd.demo import demo_config


@dataclass
class IngestFigures:
    readers: int
    rate_per_reader: float
    seconds: float
    sent: int
    ingested: int
    reads_per_s: float
    max_queue_depth: int
    commits: int
    commit_p50_ms: float
    commit_max_ms: float
    dropped_batches: int
    items_located: int
    items: int


def scenario_text(readers: int, items_per_zone: int, rate: float, catalog: Path) -> str:
    lines = [f'[scenario]\nname = "bench"\nseed = 3\ncatalog = "{catalog}"\n']
    for i in range(readers):
        lines.append(f'[zones.z{i:02d}]\nkind = "stock"\nread_probability = 0.95\n')
        lines.append(f'[readers.r{i:02d}]\nantennas = {{ 1 = "z{i:02d}", 2 = "z{i:02d}" }}\n'
                     f"reads_per_s = {rate}\n")
        lines.append(f'[[population]]\nzone = "z{i:02d}"\ncount = {items_per_zone}\n')
    return "\n".join(lines)


class _SimProcess:
    """The simulators in their own process (`rfidd-sim run`), as real readers would be: the
    daemon's process then holds only its own threads."""

    def __init__(self, scenario_path: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "simulator.cli", "run", "--scenario", str(scenario_path)],
            stdout=subprocess.PIPE, text=True)
        self.ports: dict[str, int] = {}

    def __enter__(self) -> _SimProcess:
        assert self.proc.stdout is not None
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("rfidd-sim exited before listing its readers")
            name, addr = line.split()[:2]
            self.ports[name] = int(addr.rsplit(":", 1)[1])
            if len(self.ports) == self.expected:
                return self

    expected = 0

    def hold(self) -> int:
        """Stop the reads; the number of tag reports the simulators sent."""
        assert self.proc.stdout is not None
        self.proc.send_signal(signal.SIGUSR1)
        line = self.proc.stdout.readline()
        return int(line.split("reported=")[1])

    def sent(self) -> int:
        """The tag reports the simulators sent so far (they go on reading)."""
        assert self.proc.stdout is not None
        self.proc.send_signal(signal.SIGUSR2)
        line = self.proc.stdout.readline()
        return int(line.split("reported=")[1])

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.wait(30)


class _SimThreads:
    """The simulators in this process (tests: no subprocess, deterministic)."""

    def __init__(self, scenario: Any) -> None:
        from simulator import SimulatedSite

        self.site = SimulatedSite(scenario, run_timeline=False)
        self.ports: dict[str, int] = {}

    def __enter__(self) -> _SimThreads:
        self.site.start()
        self.ports = self.site.ports
        return self

    def hold(self) -> int:
        self.site.hold(True)
        return sum(r.stats.tags_reported for r in self.site.readers.values())

    def __exit__(self, *exc: object) -> None:
        self.site.stop()


def run(readers: int = 20, rate: float = 1100.0, seconds: float = 10.0,
        items_per_zone: int = 100, db_url: str | None = None,
        mqtt_url: str | None = None, sim_process: bool = True) -> IngestFigures:
    import simulator
    from simulator import Scenario

    catalog = Path(simulator.__file__).parent / "scenarios" / "maison-catalog.csv"
    text = scenario_text(readers, items_per_zone, rate, catalog)
    with tempfile.TemporaryDirectory(prefix="rfidd-bench-") as tmp:
        scenario_path = Path(tmp) / "bench.toml"
        scenario = Scenario.parse(text, str(scenario_path), Path(tmp))
        sim: _SimProcess | _SimThreads
        if sim_process:
            scenario_path.write_text(text)
            sim = _SimProcess(scenario_path)
            sim.expected = readers
        else:
            sim = _SimThreads(scenario)
        with sim:
            return _measure(scenario, sim, seconds, readers,
                            db_url or f"sqlite:///{tmp}/bench.db", mqtt_url, rate)


def _measure(scenario: Any, site: _SimProcess | _SimThreads, seconds: float, readers: int,
             db_url: str, mqtt_url: str | None, rate: float) -> IngestFigures:
    cfg = demo_config(scenario, site.ports, db_url, mqtt_url)
    daemon = Daemon(cfg, timings=Timings(supervisor_s=0.5))
    daemon.start()
    depth = [0]
    stop = threading.Event()

    def watch_queue() -> None:
        while not stop.wait(0.05):
            if daemon.queue is not None:
                depth[0] = max(depth[0], daemon.queue.q.qsize())

    watcher = threading.Thread(target=watch_queue, daemon=True)
    watcher.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and sum(
                1 for a in (daemon.queue.activity.values() if daemon.queue else ())
                if a.state.value == "online") < readers:
            time.sleep(0.1)
        assert daemon.ingestor is not None
        r0, t0 = daemon.ingestor.stats.reads, time.monotonic()
        time.sleep(seconds)
        r1, t1 = daemon.ingestor.stats.reads, time.monotonic()
        sent = site.hold()
        deadline = time.monotonic() + 60  # what is queued or in flight reaches ingest
        while daemon.ingestor.stats.reads < sent and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(0.5)
        ingested = daemon.ingestor.stats.reads
        located = sum(daemon.ingestor.zone_counts.values())  # once every read is ingested
    finally:
        stop.set()
        daemon.stop()
    samples = daemon.metrics.registry.get_sample_value
    commits = int(samples("rfidd_batch_commit_duration_seconds_count") or 0)
    total = samples("rfidd_batch_commit_duration_seconds_sum") or 0.0
    p50, worst = _histogram_p50_max(daemon)
    return IngestFigures(
        readers=readers, rate_per_reader=rate, seconds=t1 - t0, sent=sent,
        ingested=ingested, reads_per_s=(r1 - r0) / (t1 - t0),
        max_queue_depth=depth[0], commits=commits,
        commit_p50_ms=p50 if commits else total, commit_max_ms=worst,
        dropped_batches=int(samples("rfidd_ingest_dropped_batches_total") or 0),
        items_located=located, items=len(scenario.items()),
    )


def _histogram_p50_max(daemon: Daemon) -> tuple[float, float]:
    """Median and upper bound of commit latency from the histogram buckets (ms)."""
    buckets: list[tuple[float, float]] = []
    for metric in daemon.metrics.registry.collect():
        if metric.name != "rfidd_batch_commit_duration_seconds":
            continue
        for s in metric.samples:
            if s.name.endswith("_bucket"):
                buckets.append((float(s.labels["le"]), s.value))
    buckets.sort()
    total = buckets[-1][1] if buckets else 0
    p50 = next((le for le, n in buckets if n >= total / 2), 0.0)
    worst = next((le for le, n in buckets if n >= total), 0.0)
    return p50 * 1000, worst * 1000


def print_figures(f: IngestFigures, console: Console | None = None) -> None:
    console = console or table_console()
    t = Table(title=f"Ingest: {f.readers} simulated LLRP readers x {f.rate_per_reader:,.0f} "
                    "reads/s asked")
    t.add_column("figure")
    t.add_column("value", justify="right")
    t.add_row("window", f"{f.seconds:.1f} s")
    t.add_row("tag reads ingested per second", f"{f.reads_per_s:,.0f}")
    t.add_row("tag reads sent by the simulators (whole run)", f"{f.sent:,}")
    t.add_row("tag reads ingested (whole run)", f"{f.ingested:,}")
    t.add_row("lost", f"{f.sent - f.ingested:,}")
    t.add_row("items located / present", f"{f.items_located:,} / {f.items:,}")
    t.add_row("batch commits", f"{f.commits:,}")
    t.add_row("commit latency p50 (bucket bound)", f"≤ {f.commit_p50_ms:.0f} ms")
    t.add_row("commit latency max (bucket bound)", f"≤ {f.commit_max_ms:.0f} ms")
    t.add_row("deepest ingest queue (batches)", f"{f.max_queue_depth:,}")
    t.add_row("batches dropped (queue full)", f"{f.dropped_batches:,}")
    console.print(t)
