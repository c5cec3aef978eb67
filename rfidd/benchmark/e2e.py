"""End-to-end figures: simulated LLRP readers in their own process -> the whole daemon (sllurp
drivers, ingest, database, outbox) -> MQTT QoS 1 to a real broker.

A read counts when its batch is committed (`IngestStats.committed_reads`), not when the ingest
thread takes it. The population churns all the run (shipments, moves, removals every half
second), so commits, events and publishes happen in the measured window. Latency is first read
(the event's `eventTime`, the simulators' clock on this machine) -> the document delivered to a
subscriber of the same broker, which is after the broker's PUBACK to rfidd.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from inventory.epcis import parse_datetime
from rfidd.app import Daemon, Timings
from rfidd.bench_ingest import _SimProcess, scenario_text
from rfidd.benchmark import cpu_split
from rfidd.benchmark.thread_cpu import ingest_thread_id, thread_cpu_s, turns
from rfidd.demo import demo_config

CHURN_EVERY_S = 0.5


def llrp_process_default() -> bool:
    """Whether the daemon runs its LLRP readers in a child process (what the figures measure;
    `llrp_process = false` in a config keeps them in the daemon's threads)."""
    from rfidd.config import Config

    return bool(Config.model_fields["llrp_process"].default)


def churn_timeline(readers: int, seconds: float, per_step: int) -> str:
    """Items arriving, moving and leaving throughout the run (zones z00..zNN)."""
    out: list[str] = []
    t, k = 0.5, 0
    while t < seconds:
        a, b = f"z{k % readers:02d}", f"z{(k + 1) % readers:02d}"
        out.append(f'[[timeline]]\nt = {t:.2f}\naction = "shipment"\nzone = "{a}"\n'
                   f"count = {per_step}\n")
        out.append(f'[[timeline]]\nt = {t:.2f}\naction = "move"\nfrom = "{a}"\nto = "{b}"\n'
                   f"count = {per_step}\n")
        out.append(f'[[timeline]]\nt = {t:.2f}\naction = "remove"\nfrom = "{b}"\n'
                   f"count = {per_step}\n")
        t += CHURN_EVERY_S
        k += 1
    return "\n".join(out)


@dataclass
class IngestRun:
    readers: int
    offered_per_s: float
    window_s: float
    committed_reads_per_s: float
    cpu_per_1k_reads_per_s: float
    events: int
    published_events: int
    p99_read_to_publish_s: float | None
    dropped_batches: int
    lost: int
    reader_host_cpu_per_1k_reads_per_s: float
    """The part of `cpu_per_1k_reads_per_s` spent in the reader host (0: readers in-process)."""
    reader_share_min: float | None
    reader_share_max: float | None
    """The least and most served reader's reads ingested over the mean (1.0 each: fair)."""
    shed_per_s: float = 0.0
    """Reads shed (counted per reader) per second of the window: > 0, the daemon took all it
    could, and `committed_reads_per_s` is its ceiling."""
    ingest_thread_us_per_read: float | None = None
    ingest_thread_ms_per_batch: float | None = None
    """CPU of the ingest thread alone (its schedstat) per committed read and per batch."""
    sent_per_s: float | None = None
    """Reads the simulators actually sent per second of the window (`offered_per_s` is what
    they were asked for: on a loaded machine they may not manage it)."""
    received_per_s: float | None = None
    """Reads the daemon's readers received (ingested or shed) per second of the window."""
    cpu: dict[str, float] = field(default_factory=dict)
    """Cores used in the window, per process and per daemon thread (`cpu_split.split`)."""


class _Latency:
    """Subscribes to the site's EPCIS topic and records first read -> delivery per event."""

    def __init__(self, url: str, topic: str) -> None:
        host, port = url.split("://", 1)[1].rsplit(":", 1)
        self.samples: list[float] = []
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2,
                             client_id=f"rfidd-bench-{uuid.uuid4().hex[:8]}")
        self.c.on_message = self._msg
        self.c.connect(host, int(port))
        self.c.subscribe(topic, qos=1)
        self.c.loop_start()
        self.recording = False

    def _msg(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        now = time.time()
        doc = json.loads(msg.payload)
        for ev in doc.get("epcisBody", {}).get("eventList", []):
            if self.recording and "eventTime" in ev:
                at = parse_datetime(ev["eventTime"], "eventTime").timestamp()
                self.samples.append(now - at)

    def p99(self) -> float | None:
        if not self.samples:
            return None
        s = sorted(self.samples)
        return s[min(len(s) - 1, int(len(s) * 0.99))]

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


def ingest(readers: int, rate: float, seconds: float, mqtt_url: str, items_per_zone: int = 200,
           churn: int = 5, decode_only: bool = False, llrp_process: bool | None = None,
           ) -> tuple[IngestRun, float | None]:
    """One run of the daemon against `readers` x `rate`; with `decode_only`, first the same
    stream into bare sllurp clients (the floor). Returns the run and the floor's reads/s.
    `llrp_process` overrides the config's default (False: readers as the daemon's threads)."""
    import simulator
    from simulator import Scenario

    catalog = Path(simulator.__file__).parent / "scenarios" / "maison-catalog.csv"
    text = scenario_text(readers, items_per_zone, rate, catalog)
    text += "\n" + churn_timeline(readers, 4 * seconds + 60, churn)
    with tempfile.TemporaryDirectory(prefix="rfidd-bench-") as tmp:
        path = Path(tmp) / "bench.toml"
        path.write_text(text)
        scenario = Scenario.parse(text, str(path), Path(tmp))
        floor = None
        if decode_only:  # the same scenario, its own simulators: their counts stay separate
            bare = _SimProcess(path)
            bare.expected = readers
            with bare:
                floor = bare_sllurp(bare.ports, seconds)
        sim = _SimProcess(path)
        sim.expected = readers
        with sim:
            run = _daemon_run(scenario, sim, seconds, readers, rate, f"sqlite:///{tmp}/b.db",
                              mqtt_url, llrp_process)
    return run, floor


def _daemon_run(scenario: Any, sim: _SimProcess, seconds: float, readers: int, rate: float,
                db_url: str, mqtt_url: str, llrp_process: bool | None = None) -> IngestRun:
    site = f"bench{uuid.uuid4().hex[:6]}"
    cfg = demo_config(scenario, sim.ports, db_url, mqtt_url, site_id=site)
    if llrp_process is not None:
        cfg = cfg.model_copy(update={"llrp_process": llrp_process})
    lat = _Latency(mqtt_url, f"rfidd/v1/{site}/epcis")
    daemon = Daemon(cfg, timings=Timings(supervisor_s=0.5))
    daemon.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and sum(
                1 for a in (daemon.queue.activity.values() if daemon.queue else ())
                if a.state.value == "online") < readers:
            time.sleep(0.1)
        ing = daemon.ingestor
        assert ing is not None
        # The initial population's arrivals (one event each) are not the steady state: the
        # window opens once they are in and the backlog is gone.
        population = len(scenario.items())
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (
                len(ing.tracker) < 0.9 * population
                or ing.source.q.qsize() > 2 * readers):  # the backlog is not the window
            time.sleep(0.2)
        time.sleep(min(1.0, seconds / 2))
        lat.recording = True
        counted = _committed(ing)
        tid = ingest_thread_id(ing)
        host = getattr(daemon, "reader_host", None)
        host_pid = host.pid if host is not None else None
        sim_pid = sim.proc.pid
        s0, i0, b0 = _shed(daemon), thread_cpu_s(tid), turns(ing)
        n0, g0 = sim.sent(), _received(daemon)
        r0, c0, t0, h0 = counted(), _cpu_s(daemon), time.monotonic(), _host_cpu_s(daemon)
        p0 = cpu_split.sample(t0, sim_pid, host_pid)
        time.sleep(seconds)
        r1, c1, t1 = counted(), _cpu_s(daemon), time.monotonic()
        cpu = cpu_split.split(p0, cpu_split.sample(t1, sim_pid, host_pid))  # threads alive
        s1, i1, b1 = _shed(daemon), thread_cpu_s(tid), turns(ing)
        n1, g1 = sim.sent(), _received(daemon)
        lat.recording = False
        h1 = _host_cpu_s(daemon)
        sent = sim.hold()
        deadline = time.monotonic() + 60
        while ing.stats.reads + _shed(daemon) < sent and time.monotonic() < deadline:
            time.sleep(0.1)
        link = daemon.hq
        deadline = time.monotonic() + 30  # the outbox drains to the broker
        while link is not None and time.monotonic() < deadline and (
                link.stats.acked_rows < ing.stats.events):
            time.sleep(0.1)
        samples = daemon.metrics.registry.get_sample_value
        dropped = int(samples("rfidd_ingest_dropped_batches_total") or 0)
        reads_dropped = _shed(daemon)
        lost = sent - ing.stats.reads - reads_dropped
        shares = _reader_shares(daemon)
        events = ing.stats.events
        published = link.stats.acked_rows if link is not None else 0
    finally:
        daemon.stop()
        lat.close()
    rps = (r1 - r0) / (t1 - t0)
    per_1k = max(rps / 1000, 1e-9)
    return IngestRun(readers, readers * rate, t1 - t0, rps,
                     (c1 - c0) / (t1 - t0) / per_1k, events, published,
                     lat.p99(), dropped, max(0, lost), (h1 - h0) / (t1 - t0) / per_1k,
                     min(shares, default=None), max(shares, default=None),
                     (s1 - s0) / (t1 - t0),
                     (i1 - i0) / (r1 - r0) * 1e6 if r1 > r0 and tid else None,
                     (i1 - i0) / (b1 - b0) * 1e3 if b1 > b0 and tid else None,
                     (n1 - n0) / (t1 - t0), (g1 - g0) / (t1 - t0), cpu)


def _received(daemon: Daemon) -> int:
    """Reads the daemon's readers received so far (ingested or shed: rfidd_reads_total)."""
    return int(sum(s.value for m in daemon.metrics.registry.collect()
                   if m.name == "rfidd_reads" for s in m.samples
                   if s.name.endswith("_total")))


def _shed(daemon: Daemon) -> int:
    """Reads shed (counted per reader) so far."""
    return int(sum(s.value for m in daemon.metrics.registry.collect()
                   if m.name == "rfidd_ingest_dropped_reads" for s in m.samples
                   if s.name.endswith("_total")))


def _reader_shares(daemon: Daemon) -> list[float]:
    """Per reader, the reads ingested (received less shed) over the readers' mean: 1.0 for
    each when shedding is fair to readers that offer alike."""
    got: dict[str, float] = {}
    shed: dict[str, float] = {}
    for m in daemon.metrics.registry.collect():
        for smp in m.samples:
            if smp.name == "rfidd_reads_total":
                got[smp.labels["reader"]] = got.get(smp.labels["reader"], 0.0) + smp.value
            elif smp.name == "rfidd_ingest_dropped_reads_total":
                shed[smp.labels["reader"]] = smp.value
    kept = [n - shed.get(r, 0.0) for r, n in got.items()]
    mean = sum(kept) / len(kept) if kept else 0.0
    return [k / mean for k in kept] if mean else []


def _host_cpu_s(daemon: Daemon) -> float:
    host = getattr(daemon, "reader_host", None)
    pid = host.pid if host is not None else None
    return cpu_split.process_cpu_s(pid)


_BARE = r"""
import sys, threading, time
from sllurp.llrp import LLRPReaderClient, LLRPReaderConfig
ports = [int(p) for p in sys.argv[1].split(",")]
seconds = float(sys.argv[2])
n = [0]
lock = threading.Lock()
def on_tags(_c, tags):
    with lock:
        n[0] += len(tags)
clients = []
for p in ports:
    cfg = LLRPReaderConfig({"antennas": [1, 2], "report_every_n_tags": 50,
        "report_timeout_ms": 100, "start_inventory": True, "reset_on_connect": True,
        "reconnect": False, "tx_power": 0, "tag_content_selector": {
        "EnableAntennaID": True, "EnablePeakRSSI": True, "EnableFirstSeenTimestamp": True,
        "EnableTagSeenCount": True}})
    c = LLRPReaderClient("127.0.0.1", p, cfg)
    c.add_tag_report_callback(on_tags)
    c.connect()
    clients.append(c)
time.sleep(1.0)
n0, c0, t0 = n[0], time.process_time(), time.monotonic()
time.sleep(seconds)
n1, c1, t1 = n[0], time.process_time(), time.monotonic()
print((n1 - n0) / (t1 - t0), (c1 - c0) / (t1 - t0), flush=True)
for c in clients:
    try:
        c.hard_disconnect()
    except Exception:
        pass
import os
os._exit(0)
"""

bare_cpu: list[float] = []


def bare_sllurp(ports: dict[str, int], seconds: float) -> float:
    """Reads/s that bare sllurp clients (no rfidd) decode from the same simulators; the CPU
    share they used goes to `bare_cpu`."""
    out = subprocess.run([sys.executable, "-c", _BARE, ",".join(str(p) for p in ports.values()),
                          str(seconds)], capture_output=True, text=True, timeout=seconds + 60,
                         check=True)
    rps, cpu = (float(x) for x in out.stdout.split()[:2])
    bare_cpu.append(cpu / max(rps / 1000, 1e-9))
    return rps


def _cpu_s(daemon: Daemon) -> float:
    """CPU seconds of the daemon: this process and its reader host child (the readers'
    decoding is the daemon's work wherever it runs)."""
    return time.process_time() + _host_cpu_s(daemon)


def _committed(ing: Any) -> Any:
    """Reads whose batch is committed; an older ingest without that count (the "before" column
    of a comparison) falls back to the reads it took."""
    stats = ing.stats
    if hasattr(stats, "committed_reads"):
        return lambda: stats.committed_reads
    return lambda: stats.reads
