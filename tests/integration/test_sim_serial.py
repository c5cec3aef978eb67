"""Serial readers inside a simulated site: the timeline reaches them as it reaches LLRP readers.

A scenario with two LLRP readers and a desk reader on a pty, read through the real drivers
(readers.llrp.LlrpReader, readers.serial.SerialReader) over real sockets and pseudo-terminals.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from readers import supervise
from readers.base import ReaderState
from readers.llrp import LlrpReader
from readers.serial import SerialReader
from readers.supervise import Backoff
from simulator import Scenario, SimulatedSite, World
from simulator.llrp.testing import RecordingSink, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "simulator" / "scenarios"
WITH_DESK = SCENARIOS / "store-with-desk.toml"
WAIT_S = 20.0  # a ceiling for conditions, never a timing assertion

SCENARIO = """
[scenario]
name = "two-llrp-one-desk"
seed = 11
catalog = "maison-catalog.csv"

[zones.stockroom]
kind = "stock"
read_probability = 0.9

[zones.floor]
kind = "floor"

[zones.pos]
kind = "pos"
read_probability = 1.0
rssi_mean_dbm = -40.0
rssi_stddev_dbm = 1.0

[readers.stockroom-1]
antennas = { 1 = "stockroom", 2 = "stockroom" }
reads_per_s = 800

[readers.floor-1]
antennas = { 1 = "floor" }
reads_per_s = 800

[serial_readers.pos-desk]
zone = "pos"
protocol = "PROTOCOL"
antenna = 2
interval_s = 0.02

[[population]]
zone = "stockroom"
count = 30

[[population]]
zone = "floor"
count = 20

[[timeline]]
t = 3.0
action = "move"
from = "floor"
to = "pos"
count = 2

[[timeline]]
t = 5.0
action = "fault"
reader = "pos-desk"
fault = "unplug"
duration_s = 2.0

[[timeline]]
t = 9.0
action = "move"
from = "stockroom"
to = "pos"
count = 1
"""

TIME_SCALE = 2.0  # the timeline in 4.5 s


def transitions(sink: RecordingSink, reader: str) -> list[ReaderState]:
    out: list[ReaderState] = []
    for name, st, _why, _t in list(sink.states):
        if name == reader and st is not ReaderState.CONNECTING and (not out or out[-1] is not st):
            out.append(st)
    return out


@pytest.mark.parametrize("protocol", ["binary", "ascii"])
def test_timeline_moves_reach_the_desk_and_an_unplug_is_survived(
    protocol: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(supervise, "BACKOFF_INITIAL_S", 0.05)
    scenario = Scenario.parse(SCENARIO.replace("PROTOCOL", protocol), "<test>", SCENARIOS)
    assert set(scenario.readers) == {"stockroom-1", "floor-1"}  # serial ones kept apart
    assert set(scenario.serial_readers) == {"pos-desk"}
    initial = {i.epc_hex: i.zone for i in scenario.items()}
    llrp_sink, desk_sink = RecordingSink(), RecordingSink()
    site = SimulatedSite(scenario, time_scale=TIME_SCALE, clock=time.time)
    t0 = time.time()
    with site:
        sim = site.serial_readers["pos-desk"]
        desk = SerialReader("pos-desk", site.serial_paths["pos-desk"], protocol,  # type: ignore[arg-type]
                            poll_interval_ms=10, antennas=(2,), sink=desk_sink,
                            backoff=Backoff(0.02, 0.2, 0.2), response_timeout_s=0.5)
        llrp = [LlrpReader(name, "127.0.0.1", {"port": port, "report_every_n_tags": 20,
                                               "report_timeout_ms": 100},
                           sorted(scenario.readers[name].antenna_zones()), llrp_sink)
                for name, port in site.ports.items()]
        drivers: list[SerialReader | LlrpReader] = [desk, *llrp]
        for d in drivers:
            d.start()
        try:
            assert site.wait_timeline(WAIT_S)
            moved = [i for a in site.applied if a.action.action == "move" for i in a.items]
            assert len(moved) == 3 and all(i.zone == "pos" for i in moved)
            assert wait_until(lambda: desk_sink.epcs() >= {i.epc_hex for i in moved}, WAIT_S)
            assert wait_until(lambda: set(initial) <= llrp_sink.epcs(), WAIT_S)
            assert desk.state is ReaderState.ONLINE
        finally:
            for d in drivers:
                d.stop()
    # The desk saw exactly the items the timeline brought to it, where it is (antenna 2 = pos).
    assert desk_sink.epcs() == {i.epc_hex for i in moved}
    assert {initial[i.epc_hex] for i in moved} == {"floor", "stockroom"}
    assert all(r.reader == "pos-desk" and r.antenna == 2 and r.rssi_dbm is not None
               and -50 <= r.rssi_dbm <= -30 for r in desk_sink.reads)
    # ...and never before the step that moved it (the site ran on the drivers' clock).
    moved_at = {i.epc_hex: a.action.t for a in site.applied if a.action.action == "move"
                for i in a.items}
    for r in desk_sink.reads:
        assert r.seen_at >= t0 + moved_at[r.epc] / TIME_SCALE, r
    # The LLRP readers saw the same items where they started.
    assert {r.epc for r in llrp_sink.reads if r.epc in moved_at} == set(moved_at)
    # The unplug came from the timeline; the driver went offline and came back, once.
    faults = [a for a in site.applied if a.action.action == "fault"]
    assert [(a.action.reader, a.action.fault) for a in faults] == [("pos-desk", "unplug")]
    assert sim.stats.plugs == 2
    assert transitions(desk_sink, "pos-desk") == [ReaderState.ONLINE, ReaderState.OFFLINE,
                                                  ReaderState.ONLINE, ReaderState.OFFLINE]
    assert desk.stats.reconnects == 1
    # The item moved after the replug arrived: reads resumed after recovery.
    last = next(i.epc_hex for a in site.applied if a.action.t == 9.0 for i in a.items)
    assert last in desk_sink.epcs()
    assert not os.path.lexists(sim.path)  # the device node went away with the site


def test_timeline_faults_on_the_desk(tmp_path: Path) -> None:
    """garbage, bad_checksum, silent and reboot from the timeline: counted by the driver,
    never a bad read, reads resume."""
    body = SCENARIO.replace("PROTOCOL", "binary").split("[[timeline]]")[0] + """
[[timeline]]
t = 0.5
action = "move"
from = "floor"
to = "pos"
count = 3
[[timeline]]
t = 1.0
action = "fault"
reader = "pos-desk"
fault = "garbage"
[[timeline]]
t = 1.5
action = "fault"
reader = "pos-desk"
fault = "bad_checksum"
count = 2
[[timeline]]
t = 2.0
action = "fault"
reader = "pos-desk"
fault = "silent"
duration_s = 1.0
[[timeline]]
t = 3.5
action = "fault"
reader = "pos-desk"
fault = "reboot"
duration_s = 1.0
"""
    body = body.replace("[serial_readers.pos-desk]",
                        f'[serial_readers.pos-desk]\nlink = "{tmp_path / "ttyDESK"}"')
    scenario = Scenario.parse(body, "<test>", SCENARIOS)
    sink = RecordingSink()
    with SimulatedSite(scenario, only=["pos-desk"], time_scale=2.0) as site:
        assert site.ports == {} and site.serial_paths == {"pos-desk": str(tmp_path / "ttyDESK")}
        sim = site.serial_readers["pos-desk"]
        desk = SerialReader("pos-desk", str(tmp_path / "ttyDESK"), "binary", poll_interval_ms=10,
                            antennas=(2,), sink=sink, backoff=Backoff(0.02, 0.2, 0.2),
                            response_timeout_s=0.2)
        desk.start()
        try:
            assert site.wait_timeline(WAIT_S)
            assert wait_until(lambda: sim.stats.plugs == 2 and sim.stats.rounds > 0
                              and desk.state is ReaderState.ONLINE, WAIT_S)
            n = sink.count()
            assert wait_until(lambda: sink.count() > n + 3, WAIT_S)  # reads resume after all
        finally:
            desk.stop()
    moved = {i.epc_hex for a in site.applied if a.action.action == "move" for i in a.items}
    assert sink.epcs() == moved
    assert sim.stats.bad_checksums == 2
    assert {"checksum", "no_response"} <= sink.anomaly_kinds()
    assert desk.stats.reconnects >= 2  # the hang and the reboot


def expected_at_pos(path: Path) -> set[str]:
    """Replays the scenario's population steps: same seed, same order, same items."""
    scenario = Scenario.load(path)
    world = World(scenario)
    for act in scenario.timeline:
        if act.action != "fault":
            world.apply(act)
    return {i.epc_hex for i in world.items() if i.zone == "pos"}


def test_cli_run_prints_serial_paths_and_the_desk_follows_the_timeline() -> None:
    expected = expected_at_pos(WITH_DESK)
    assert len(expected) == 3
    proc = subprocess.Popen(
        [sys.executable, "-m", "simulator.cli", "run", "--scenario", str(WITH_DESK),
         "--time-scale", "4"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    sink = RecordingSink()
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(4)]
        ports = {m[1] for line in lines if (m := re.match(r"(\S+) 127\.0\.0\.1:(\d+)$", line))}
        assert ports == {"stockroom-1", "floor-1", "backdoor-1"}
        serial = [line.split() for line in lines if " /" in line]
        assert len(serial) == 1 and serial[0][0] == "pos-desk" and serial[0][2] == "binary"
        path = serial[0][1]
        desk = SerialReader("pos-desk", path, "binary", poll_interval_ms=20, sink=sink,
                            backoff=Backoff(0.02, 0.2, 0.2))
        desk.start()
        try:
            assert wait_until(lambda: sink.epcs() == expected and desk.stats.reconnects >= 1,
                              WAIT_S), (sink.epcs(), desk.stats)
        finally:
            desk.stop()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert not os.path.lexists(path)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_serial_runs_one_scenario_desk_with_its_timeline(tmp_path: Path) -> None:
    expected = expected_at_pos(WITH_DESK)
    link = tmp_path / "ttyPOS"
    proc = subprocess.Popen(
        [sys.executable, "-m", "simulator.cli", "serial", "--scenario", str(WITH_DESK),
         "--reader", "pos-desk", "--link", str(link), "--time-scale", "4"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    sink = RecordingSink()
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().split() == [str(link), "0", "tags", "binary"]
        desk = SerialReader("pos-desk", str(link), "binary", poll_interval_ms=20, sink=sink,
                            backoff=Backoff(0.02, 0.2, 0.2))
        desk.start()
        try:
            assert wait_until(lambda: sink.epcs() == expected, WAIT_S), sink.epcs()
        finally:
            desk.stop()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert not os.path.lexists(link)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_serial_unknown_reader_is_a_clear_error() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "simulator.cli", "serial", "--scenario", str(WITH_DESK),
         "--reader", "floor-1"], capture_output=True, text=True, cwd=ROOT, timeout=30,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 2
    assert "no serial reader 'floor-1' (serial readers: pos-desk)" in out.stderr
