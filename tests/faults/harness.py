"""The fault suite's store: simulated LLRP readers, `rfidd run` as a real process, a private
Mosquitto, and an "HQ" process that records every eventID it receives.

- Expected events: the site's own journal (`events` table), read after the daemon stopped.
- Delivered: distinct eventIDs HQ received; duplicated: deliveries beyond the first (allowed:
  delivery is at-least-once, HQ deduplicates on eventID); lost: journaled, never received.
- Recovery: seconds from the end of the fault until HQ holds every event journaled so far.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from waits import wait_until

from rfidd.demo import demo_config
from simulator import Scenario, SimulatedSite
from simulator.scenario import Action

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = ROOT / "simulator" / "scenarios" / "demo-store.toml"

# Seconds an outage lasts: tens of seconds in CI (RFIDD_FAULTS_SCALE=ci, the default),
# minutes with `pytest --long`.
OUTAGE_S = {"ci": 5.0, "long": 150.0}
RESULTS: list[Row] = []


def outage_s(long: bool) -> float:
    scale = "long" if long else os.environ.get("RFIDD_FAULTS_SCALE", "ci")
    return OUTAGE_S.get(scale, OUTAGE_S["ci"])


@dataclass
class Row:
    fault: str
    expected: int
    delivered: int
    lost: int
    duplicated: int
    recovery_s: float
    note: str = ""


def table(rows: list[Row]) -> str:
    head = "fault | events expected | delivered | lost | duplicated | recovery s"
    lines = [head, "|".join("-" * len(c) for c in head.split("|"))]
    for r in rows:
        lines.append(f"{r.fault} | {r.expected} | {r.delivered} | {r.lost} | {r.duplicated} | "
                     f"{r.recovery_s:.1f}" + (f"  ({r.note})" if r.note else ""))
    return "\n".join(lines)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"no TOML for {v!r}")


def to_toml(d: dict[str, Any], prefix: str = "") -> str:
    """Just enough TOML for a Config dump (tables, scalars, lists of scalars)."""
    scalars = [f"{json.dumps(k)} = {_toml_value(v)}" for k, v in d.items()
               if not isinstance(v, dict) and v is not None]
    out = ([f"[{prefix}]"] if prefix and scalars else []) + scalars
    for k, v in d.items():
        if isinstance(v, dict):
            key = f"{prefix}.{json.dumps(k)}" if prefix else json.dumps(k)
            sub = to_toml(v, key)
            if sub:
                out.append(sub)
    return "\n".join(out)


HQ_SCRIPT = textwrap.dedent("""
    import json, sys
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties
    host, port, topic, client_id, out = sys.argv[1:6]
    f = open(out, "a", buffering=1)
    def on_connect(c, u, fl, rc, p):
        c.subscribe(topic, qos=1)
        f.write("#connected\\n")
    def on_message(c, u, m):  # written before paho acknowledges: at-least-once
        try:
            doc = json.loads(m.payload)
            ids = [e["eventID"] for e in doc["epcisBody"]["eventList"]]
        except Exception as exc:
            ids = ["#bad " + repr(exc)]
        f.write("\\n".join(ids) + "\\n")
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    c.on_connect, c.on_message = on_connect, on_message
    c.reconnect_delay_set(0.1, 1)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    c.connect(host, int(port), keepalive=10, clean_start=False, properties=props)
    c.loop_forever(retry_first_connection=True)
""")


class Hq:
    """The HQ end, in its own process so that it can be SIGKILLed and restarted."""

    def __init__(self, workdir: Path, host: str, port: int, site: str) -> None:
        self.file = workdir / "hq-received.txt"
        self.script = workdir / "hq.py"
        self.script.write_text(HQ_SCRIPT)
        self.args = [host, str(port), f"rfidd/v1/{site}/epcis", f"hq-{uuid.uuid4().hex[:8]}",
                     str(self.file)]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        before = self.connections()
        self.proc = subprocess.Popen([sys.executable, str(self.script), *self.args])
        wait_until(lambda: self.connections() > before, "HQ subscribed", timeout=20)

    def connections(self) -> int:
        return sum(1 for ln in self._lines() if ln == "#connected")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    def _lines(self) -> list[str]:
        if not self.file.exists():
            return []
        return [ln for ln in self.file.read_text().splitlines() if ln]

    def received(self) -> Counter[str]:
        return Counter(ln for ln in self._lines() if not ln.startswith("#"))

    def bad(self) -> list[str]:
        return [ln for ln in self._lines() if ln.startswith("#bad")]


class DaemonProcess:
    """`rfidd run -c FILE` as a child process with its log in a file."""

    def __init__(self, workdir: Path, config: dict[str, Any]) -> None:
        self.config_file = workdir / "rfidd.toml"
        self.config_file.write_text(to_toml(config) + "\n")
        self.log = workdir / "rfidd.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "rfidd.cli", "run", "-c", str(self.config_file),
                 "--log-format", "kv"], stdout=log, stderr=subprocess.STDOUT,
                env={**os.environ, "RFIDD_LOG_FORMAT": "kv"})
        self.starts += 1
        n = self.starts
        wait_until(lambda: self.log.read_text().count(" up: ") >= n, "the daemon up",
                   timeout=60)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)
        self.proc = None

    def terminate(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(60)
        self.proc = None
        return code

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def errors(self) -> list[str]:
        """rfidd's own errors. sllurp logs its own disconnect during a clean stop as an error
        ("Disconnected because of a reader configuration error"): that line is not ours."""
        return [ln for ln in self.log.read_text().splitlines()
                if ("level=error" in ln or "level=critical" in ln)
                and "logger=sllurp" not in ln]


@dataclass
class FaultStore:
    """One store under test; `stream()` keeps shipments arriving until stopped."""

    workdir: Path
    broker: Any  # conftest.MosquittoProcess
    site_id: str = field(default_factory=lambda: f"fault-{uuid.uuid4().hex[:8]}")
    db_dir: Path | None = None  # e.g. a small filesystem of the test's own

    def __post_init__(self) -> None:
        self.scenario = Scenario.load(SCENARIO)
        self.sim = SimulatedSite(self.scenario, run_timeline=False)
        self.sim.start()
        self.db_file = (self.db_dir or self.workdir) / "site.db"
        cfg = demo_config(self.scenario, self.sim.ports, f"sqlite:///{self.db_file}",
                          f"mqtt://{self.broker.host}:{self.broker.port}", "5",
                          site_id=self.site_id)
        data = cfg.model_dump(mode="json", exclude_none=True)
        data["mqtt"]["client_id"] = f"rfidd-{self.site_id}"
        data["mqtt"]["reconnect_max_s"] = 2
        self.daemon = DaemonProcess(self.workdir, data)
        self.hq = Hq(self.workdir, self.broker.host, self.broker.port, self.site_id)
        self._streaming = threading.Event()
        self._stream_thread: threading.Thread | None = None
        self.shipments = 0

    # -- the stream of business events ------------------------------------------------------
    def stream(self, every_s: float = 0.4, count: int = 3) -> None:
        def run() -> None:
            while self._streaming.is_set():
                self.sim.apply(Action(t=0, action="shipment", zone="reception", count=count))
                self.shipments += 1
                time.sleep(every_s)

        self._streaming.set()
        self._stream_thread = threading.Thread(target=run, daemon=True, name="fault-stream")
        self._stream_thread.start()

    def stop_stream(self) -> None:
        self._streaming.clear()
        if self._stream_thread is not None:
            self._stream_thread.join(10)

    # -- what the site journaled and what HQ got ---------------------------------------------
    def journal(self) -> set[str]:
        if not self.db_file.exists():
            return set()
        with sqlite3.connect(f"file:{self.db_file}?mode=ro", uri=True, timeout=30) as c:
            try:
                return {r[0] for r in c.execute(
                    "SELECT event_id FROM outbox WHERE stream = 'epcis' AND event_id IS NOT "
                    "NULL UNION SELECT event_id FROM events")}
            except sqlite3.OperationalError:  # not migrated yet
                return set()

    def wait_delivered(self, timeout: float) -> float:
        """Block until HQ holds every event journaled so far; returns when that first held."""
        def done() -> bool:
            return self.journal() <= set(self.hq.received())

        wait_until(done, "HQ to hold every journaled event", timeout=timeout, poll_s=0.2)
        return time.monotonic()

    def start(self) -> None:
        self.hq.start()
        self.daemon.start()

    def finish(self, fault: str, fault_end: float, timeout: float, note: str = "") -> Row:
        """Stop the stream, let the site drain, stop it cleanly, and record the table row."""
        self.stop_stream()
        recovered = fault_end
        with contextlib.suppress(AssertionError):  # what never arrives is counted as lost
            recovered = self.wait_delivered(timeout)
        if self.daemon.alive:
            self.daemon.terminate()
        expected = self.journal()
        with contextlib.suppress(AssertionError):
            wait_until(lambda: expected <= set(self.hq.received()), "last events at HQ",
                       timeout=15, poll_s=0.2)
        got = self.hq.received()
        delivered = len(expected & set(got))
        row = Row(fault, len(expected), delivered, len(expected) - delivered,
                  sum(n - 1 for n in got.values() if n > 1),
                  max(0.0, recovered - fault_end), note)
        RESULTS.append(row)
        return row

    def close(self) -> None:
        self.stop_stream()
        if self.daemon.alive:
            self.daemon.kill()
        self.hq.kill()
        self.sim.stop()


class RealHq:
    """`rfidd hq run` as a child process storing into PostgreSQL (deduplicated on eventID)."""

    def __init__(self, workdir: Path, host: str, port: int, db_url: str) -> None:
        # Its connections carry a name of their own: terminating them touches nobody else's.
        self.app_name = f"hqfault{uuid.uuid4().hex[:10]}"
        reader_url = db_url
        db_url = f"{db_url}{'&' if '?' in db_url else '?'}application_name={self.app_name}"
        self.db_url = db_url
        self.config_file = workdir / "hq.toml"
        self.config_file.write_text(to_toml({
            "database": {"url": db_url, "batch_max_ms": 100},
            "mqtt": {"url": f"mqtt://{host}:{port}", "share_group": "", "relay_asns": False,
                     "client_id": f"hq-{uuid.uuid4().hex[:8]}", "reconnect_max_s": 2},
            # Fault sites are not registered; the EPCIS port must not collide between runs.
            "sites": {"accept_unknown": True},
            "epcis": {"port": 0},
        }) + "\n")
        self.log = workdir / "hq.log"
        self.proc: subprocess.Popen[bytes] | None = None
        from sqlalchemy import create_engine

        self.engine = create_engine(reader_url, pool_pre_ping=True)

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "rfidd.cli", "hq", "run", "-c", str(self.config_file)],
                stdout=log, stderr=subprocess.STDOUT)
        n = self.log.read_text().count("msg=\"connected to") if self.log.exists() else 0
        wait_until(lambda: self.log.read_text().count("msg=\"connected to") > n,
                   "HQ consumer connected", timeout=60)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(30)
            self.proc = None

    def stored(self) -> set[str]:
        from sqlalchemy import text
        from sqlalchemy.exc import DBAPIError

        try:
            with self.engine.connect() as c:
                return {r[0] for r in c.execute(text("SELECT event_id FROM hq_events"))}
        except DBAPIError:  # not created yet
            return set()

    def terminate_connections(self) -> int:
        """pg_terminate_backend on every connection of the HQ process (same user, not ours)."""
        from sqlalchemy import text

        with self.engine.connect() as c:
            n = c.execute(text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = :app AND pid <> pg_backend_pid()"),
                {"app": self.app_name}).scalar_one()
            c.commit()
        return int(n)

    def close(self) -> None:
        self.kill()
        self.engine.dispose()
