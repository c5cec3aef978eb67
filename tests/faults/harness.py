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
import socket
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

from tomlout import to_toml
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


def note(rows: list[Row], long: bool) -> str:
    """The table as a note quotes it: Markdown, with what it was measured under."""
    from datetime import UTC, datetime

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    head = (f"Fault suite, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: outages of "
            f"{outage_s(long):.0f} s ({'--long' if long else 'CI scale'}), "
            f"{os.cpu_count()} cores, load average {load} (1, 5, 15 min). "
            "Lost = journaled at the site, never received at HQ.")
    lines = table(rows).splitlines()
    return "\n".join([head, "", *(f"| {ln} |" for ln in lines)]) + "\n"


HQ_SCRIPT = textwrap.dedent("""
    import json, sys
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties
    host, port, topic, client_id, out = sys.argv[1:6]
    alerts = topic.rsplit("/", 1)[0] + "/alerts"
    f = open(out, "a", buffering=1)
    def on_connect(c, u, fl, rc, p):
        c.subscribe([(topic, 1), (alerts, 1)])
        f.write("#connected\\n")
    def on_message(c, u, m):  # written before paho acknowledges: at-least-once
        if m.topic == alerts:  # the site's alerts, one line each
            f.write("#alert " + m.payload.decode(errors="replace").replace("\\n", " ") + "\\n")
            return
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

    def alerts(self) -> list[dict[str, Any]]:
        """The alerts the site published (`rfidd/v1/<site>/alerts`), oldest first."""
        return [json.loads(ln[len("#alert "):]) for ln in self._lines()
                if ln.startswith("#alert ")]


class NotifySocket:
    """A systemd notification socket of the test's own (abstract: no path to clean up): what
    the daemon would tell systemd (READY=1, STATUS=...), as systemd would receive it."""

    def __init__(self) -> None:
        self.address = f"@rfidd-fault-{uuid.uuid4().hex}"
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind("\0" + self.address[1:])
        self._sock.settimeout(0.2)
        self.messages: list[str] = []
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="notify-socket")
        self._thread.start()

    def _run(self) -> None:
        while not self._closed.is_set():
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            self.messages.extend(data.decode(errors="replace").splitlines())

    def statuses(self) -> list[str]:
        return [m[len("STATUS="):] for m in list(self.messages) if m.startswith("STATUS=")]

    def close(self) -> None:
        self._closed.set()
        self._thread.join(2)
        self._sock.close()


class LoggedProcess:
    """A child process with its output in a log file; `start()` returns once the log shows
    `marker` once more than before (the process says it is up)."""

    def __init__(self, args: list[str], log: Path, marker: str, what: str) -> None:
        self.args, self.log, self.marker, self.what = args, log, marker, what
        self.env: dict[str, str] = dict(os.environ)
        self.proc: subprocess.Popen[bytes] | None = None

    def _marks(self) -> int:
        return self.log.read_text().count(self.marker) if self.log.exists() else 0

    def start(self) -> None:
        before = self._marks()
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT,
                                         env=self.env)
        wait_until(lambda: self._marks() > before, self.what, timeout=60)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def terminate(self, timeout: float = 60) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        self.proc = None
        return code

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class DaemonProcess(LoggedProcess):
    """`rfidd run -c FILE` as a child process with its log in a file; `notify`: with a
    systemd notification socket (`self.notify`) as under `Type=notify`."""

    def __init__(self, workdir: Path, config: dict[str, Any], notify: bool = False) -> None:
        self.config_file = workdir / "rfidd.toml"
        self.config_file.write_text(to_toml(config) + "\n")
        super().__init__([sys.executable, "-m", "rfidd.cli", "run", "-c", str(self.config_file),
                          "--log-format", "kv"], workdir / "rfidd.log", " up: ", "the daemon up")
        self.env["RFIDD_LOG_FORMAT"] = "kv"
        self.notify = NotifySocket() if notify else None
        if self.notify is not None:
            self.env["NOTIFY_SOCKET"] = self.notify.address

    def errors(self) -> list[str]:
        """rfidd's own errors. sllurp logs its own disconnect during a clean stop as an error
        ("Disconnected because of a reader configuration error"): that line is not ours."""
        return [ln for ln in self.log.read_text().splitlines()
                if ("level=error" in ln or "level=critical" in ln)
                and "logger=sllurp" not in ln]

    def close(self) -> None:
        self.kill()
        if self.notify is not None:
            self.notify.close()


@dataclass
class FaultStore:
    """One store under test; `stream()` keeps shipments arriving until stopped."""

    workdir: Path
    broker: Any  # conftest.MosquittoProcess
    site_id: str = field(default_factory=lambda: f"fault-{uuid.uuid4().hex[:8]}")
    db_dir: Path | None = None  # e.g. a small filesystem of the test's own
    db_url: str | None = None  # another database than SQLite in db_dir (PostgreSQL)
    http_port: int | None = None  # the local API (/metrics) on this port; None: off
    notify: bool = False  # a systemd notification socket (daemon.notify)

    def __post_init__(self) -> None:
        self.scenario = Scenario.load(SCENARIO)
        self.sim = SimulatedSite(self.scenario, run_timeline=False)
        self.sim.start()
        self.db_file = (self.db_dir or self.workdir) / "site.db"
        self._engine: Any = None
        url = self.db_url or f"sqlite:///{self.db_file}"
        http = None if self.http_port is None else {"enabled": True, "port": self.http_port}
        cfg = demo_config(self.scenario, self.sim.ports, url,
                          f"mqtt://{self.broker.host}:{self.broker.port}", "5",
                          site_id=self.site_id, http=http)
        data = cfg.model_dump(mode="json", exclude_none=True)
        data["mqtt"]["client_id"] = f"rfidd-{self.site_id}"
        data["mqtt"]["reconnect_max_s"] = 2
        self.daemon = DaemonProcess(self.workdir, data, notify=self.notify)
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
        if self.db_url is not None:
            return self._journal_sqlalchemy()
        if not self.db_file.exists():
            return set()
        with sqlite3.connect(f"file:{self.db_file}?mode=ro", uri=True, timeout=30) as c:
            try:
                return {r[0] for r in c.execute(
                    "SELECT event_id FROM outbox WHERE stream = 'epcis' AND event_id IS NOT "
                    "NULL UNION SELECT event_id FROM events")}
            except sqlite3.OperationalError:  # not migrated yet
                return set()

    def _journal_sqlalchemy(self) -> set[str]:
        from sqlalchemy import create_engine, text
        from sqlalchemy.exc import DBAPIError

        if self._engine is None:
            self._engine = create_engine(str(self.db_url), pool_pre_ping=True)
        try:
            with self._engine.connect() as c:
                return {r[0] for r in c.execute(text(
                    "SELECT event_id FROM outbox WHERE stream = 'epcis' AND event_id IS NOT "
                    "NULL UNION SELECT event_id FROM events"))}
        except DBAPIError:  # not migrated yet, or our connection terminated: next poll
            return set()

    def metric(self, name: str) -> float | None:
        """One unlabelled sample of the daemon's /metrics (None: not exposed, or no answer)."""
        import urllib.request

        assert self.http_port is not None, "FaultStore(http_port=...) for /metrics"
        # The token the daemon wrote for the local CLI (conftest points RFIDD_TOKEN_FILE at a
        # file of the test's own), as a Prometheus scrape would carry its own.
        token_file = Path(os.environ["RFIDD_TOKEN_FILE"])
        token = token_file.read_text().strip() if token_file.exists() else ""
        req = urllib.request.Request(f"http://127.0.0.1:{self.http_port}/metrics",
                                     headers={"Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                body = r.read().decode()
        except OSError:
            return None
        for ln in body.splitlines():
            if ln.startswith(name + " "):
                return float(ln.split()[1])
        return None

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
        self.daemon.close()
        self.hq.kill()
        self.sim.stop()
        if self._engine is not None:
            self._engine.dispose()


class RealHq(LoggedProcess):
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
        from sqlalchemy import create_engine

        self.engine = create_engine(reader_url, pool_pre_ping=True)
        super().__init__([sys.executable, "-m", "rfidd.cli", "hq", "run", "-c",
                          str(self.config_file)], workdir / "hq.log", 'msg="connected to',
                         "HQ consumer connected")

    def stop(self) -> None:
        if self.proc is not None:
            self.terminate(30)

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
