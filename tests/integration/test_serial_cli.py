"""`rfidd-sim serial` end to end: a scenario zone on a pty, read by SerialReader, then SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from readers.base import ReaderState, TagRead
from readers.serial import SerialReader
from simulator.scenario import Scenario

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = ROOT / "simulator" / "scenarios" / "demo-store.toml"


class Sink:
    def __init__(self) -> None:
        self.reads: list[TagRead] = []
        self.lock = threading.Lock()

    def on_reads(self, reader: str, reads: list[TagRead]) -> None:
        with self.lock:
            self.reads.extend(reads)

    def on_state(self, reader: str, state: ReaderState, reason: str) -> None:
        pass

    def on_anomaly(self, reader: str, kind: str, detail: str) -> None:
        pass


def _sim(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "simulator.cli", "serial", *args],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


@pytest.mark.parametrize("protocol", ["binary", "ascii"])
def test_scenario_zone_served_on_a_pty(protocol: str, tmp_path: Path) -> None:
    zone = "reception" if protocol == "ascii" else "floor"
    expected = {i.epc_hex for i in Scenario.load(SCENARIO).items() if i.zone == zone}
    link = tmp_path / "ttyRFID0"
    proc = _sim("--protocol", protocol, "--scenario", str(SCENARIO), "--zone", zone,
                "--link", str(link), "--interval", "0.02")
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().split()
        assert line[:4] == [str(link), str(len(expected)), "tags", protocol], line
        sink = Sink()
        reader = SerialReader("pos-1", str(link), protocol,  # type: ignore[arg-type]
                              poll_interval_ms=10, sink=sink)
        reader.start()
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                with sink.lock:
                    if {r.epc for r in sink.reads} >= expected:
                        break
                time.sleep(0.05)
        finally:
            reader.stop()
        with sink.lock:
            reads = list(sink.reads)
        assert {r.epc for r in reads} == expected
        assert all(r.antenna == 1 and r.rssi_dbm is not None and -99 <= r.rssi_dbm <= -20
                   for r in reads)
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert not link.exists()  # the device node goes away with the simulator


def test_unknown_zone_is_a_clear_error() -> None:
    proc = _sim("--scenario", str(SCENARIO), "--zone", "pos")
    _out, err = proc.communicate(timeout=20)
    assert proc.returncode == 2
    assert "no zone 'pos'" in err and "floor" in err
