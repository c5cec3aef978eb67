"""The demo scenario end to end: simulated site + supervised drivers, and the rfidd-sim CLI."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from readers import supervise
from readers.base import ReaderState
from readers.llrp import LlrpReader
from simulator import Scenario, SimulatedSite
from simulator.llrp.testing import RecordingSink, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "simulator" / "scenarios" / "demo-store.toml"


def test_demo_site_timeline_seen_through_drivers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervise, "BACKOFF_INITIAL_S", 0.05)
    scenario = Scenario.load(DEMO)
    initial = {i.epc_hex: i.zone for i in scenario.items()}
    zone_of_read = {(name, ant): zone for name, spec in scenario.readers.items()
                    for ant, zone in spec.antenna_zones().items()}
    sink = RecordingSink()
    with SimulatedSite(scenario, time_scale=4.0) as site:
        drivers = [LlrpReader(name, "127.0.0.1", {"port": port, "report_every_n_tags": 50,
                                                  "report_timeout_ms": 100},
                              sorted(scenario.readers[name].antenna_zones()), sink)
                   for name, port in site.ports.items()]
        for d in drivers:
            d.start()
        try:
            assert site.wait_timeline(20)  # shipment, move, exit, then the exited item is gone
            assert wait_until(lambda: set(initial) <= sink.epcs(), 20)
            assert all(d.state is ReaderState.ONLINE for d in drivers)
        finally:
            for d in drivers:
                d.stop()
    steps = {a.action.action: a for a in site.applied}
    shipped = {i.epc_hex for i in steps["shipment"].items}
    exited = steps["exit"].items[0].epc_hex
    assert len(shipped) == 36 and shipped.isdisjoint(initial)
    seen_zones: dict[str, set[str]] = {}
    for r in sink.reads:
        seen_zones.setdefault(r.epc, set()).add(zone_of_read[(r.reader, r.antenna)])
    assert all(initial[e] in seen_zones[e] for e in initial)  # everyone read where it was put
    assert all(seen_zones.get(e) == {"reception"} for e in shipped)
    assert "exit" in seen_zones[exited] and initial[exited] == "floor"
    assert all(-128 <= (r.rssi_dbm or 0) <= 0 for r in sink.reads)
    assert {e for e, z in seen_zones.items() if "exit" in z} == {exited}


def test_cli_run_prints_ports_and_stops_on_sigterm() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "simulator.cli", "run", "--scenario", str(DEMO)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(3)]
        ports = {m[1]: int(m[2]) for line in lines
                 if (m := re.match(r"(\S+) 127\.0\.0\.1:(\d+)", line))}
        assert set(ports) == {"stockroom-1", "floor-1", "backdoor-1"}
        for port in ports.values():
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                assert s.recv(10)[:2] == b"\x04\x3f"  # READER_EVENT_NOTIFICATION, version 1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_reports_scenario_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[scenario]\nname = "x"\ncatalog = "missing.csv"\n[zones.a]\n'
                   '[readers.r]\nantennas = { 1 = "b" }\n', encoding="utf-8")
    out = subprocess.run([sys.executable, "-m", "simulator.cli", "llrp", "--port", "0",
                          "--scenario", str(bad)], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=30)
    assert out.returncode != 0
    assert "readers.r.antennas.1: unknown zone 'b'" in out.stderr
