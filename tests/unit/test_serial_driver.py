"""SerialReader against an in-memory port: rounds, batching, errors, reconnects, backoff."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import serial

import readers.serial as rs
from readers.base import ReaderState, TagRead
from readers.serial import ReaderTimeout, ReplugBackoff, SerialReader
from readers.serial_protocols import FrameDecoder, encode_frame, tag_record_data
from readers.supervise import Backoff

EPCS = [f"30340000000000000000{i:04X}" for i in range(6)]


class Sink:
    def __init__(self, fail_reads: int = 0) -> None:
        self.batches: list[list[TagRead]] = []
        self.states: list[tuple[ReaderState, str]] = []
        self.anomalies: list[tuple[str, str]] = []
        self.fail_reads = fail_reads
        self.cond = threading.Condition()

    def on_reads(self, reader: str, reads: list[TagRead]) -> None:
        with self.cond:
            if self.fail_reads:
                self.fail_reads -= 1
                raise RuntimeError("sink is broken")
            self.batches.append(list(reads))
            self.cond.notify_all()

    def on_state(self, reader: str, state: ReaderState, reason: str) -> None:
        with self.cond:
            self.states.append((state, reason))
            self.cond.notify_all()

    def on_anomaly(self, reader: str, kind: str, detail: str) -> None:
        with self.cond:
            self.anomalies.append((kind, detail))
            self.cond.notify_all()

    @property
    def reads(self) -> list[TagRead]:
        return [r for b in self.batches for r in b]

    def kinds(self, kind: str) -> int:
        return sum(1 for k, _ in self.anomalies if k == kind)

    def wait(self, pred: Callable[[], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not pred():
                left = deadline - time.monotonic()
                assert left > 0, "condition not reached"
                self.cond.wait(min(left, 0.01))


class FakeDevice:
    """The reader behind the port: answers the 0xA0 commands from a tag list."""

    def __init__(self, tags: list[tuple[str, int, int]], answer: bool = True) -> None:
        self.tags = tags  # (epc, antenna, rssi)
        self.answer = answer
        self.present = True
        self.open_failures = 0
        self.work_antenna = 1
        self.commands: list[tuple[int, bytes]] = []
        self.end_rounds = True
        self.die_after_rounds: int | None = None
        self.rounds = 0

    def handle(self, data: bytes) -> bytes:
        out = b""
        for f in FrameDecoder().feed(data):
            self.commands.append((f.cmd, f.data))
            if not self.answer:
                continue
            if f.cmd == 0x72:
                out += encode_frame(1, 0x72, b"\x01\x02")
            elif f.cmd == 0x74:
                self.work_antenna = f.data[0] + 1
                out += encode_frame(1, 0x74, b"\x10")
            elif f.cmd == 0x89:
                self.rounds += 1
                n = 0
                for epc, ant, rssi in self.tags:
                    if ant == self.work_antenna:
                        out += encode_frame(1, 0x89, tag_record_data(ant, bytes.fromhex(epc), rssi))
                        n += 1
                if self.end_rounds:
                    out += encode_frame(1, 0x89, bytes([self.work_antenna - 1, 0, 0, 0, 0, 0, n]))
        return out


class FakePort:
    def __init__(self, dev: FakeDevice, timeout: float) -> None:
        self.dev = dev
        self.timeout = timeout
        self.rx = bytearray()
        self.closed = False

    def _check(self) -> None:
        if not self.dev.present:
            raise serial.SerialException("device disconnected")
        limit = self.dev.die_after_rounds
        dying = limit is not None and self.dev.rounds >= limit
        if dying and not self.rx:
            self.dev.present = False
            raise serial.SerialException("device disconnected mid-round")

    @property
    def in_waiting(self) -> int:
        self._check()
        return len(self.rx)

    def read(self, size: int = 1) -> bytes:
        self._check()
        if not self.rx:
            time.sleep(self.timeout)
            return b""
        out = bytes(self.rx[:size])
        del self.rx[:size]
        return out

    def write(self, data: bytes) -> int:
        self._check()
        self.rx += self.dev.handle(data)
        return len(data)

    def reset_input_buffer(self) -> None:
        self.rx.clear()

    def close(self) -> None:
        self.closed = True


def transitions(states: list[tuple[ReaderState, str]]) -> list[ReaderState]:
    """ONLINE/OFFLINE changes, without the CONNECTING between retries."""
    out: list[ReaderState] = []
    for st, _ in states:
        if st is not ReaderState.CONNECTING and (not out or out[-1] is not st):
            out.append(st)
    return out


def factory(dev: FakeDevice) -> Callable[..., Any]:
    def open_port(device: str, **kw: Any) -> FakePort:
        if not dev.present:
            dev.open_failures += 1
            raise serial.SerialException(f"could not open port {device}: no such file")
        return FakePort(dev, kw["timeout"])

    return open_port


def make(dev: FakeDevice, sink: Sink, **kw: Any) -> SerialReader:
    defaults: dict[str, Any] = dict(
        protocol="binary", poll_interval_ms=0, antennas=(1,), read_timeout_s=0.001,
        response_timeout_s=0.05, backoff=Backoff(0.0, 0.0, 0.0),
    )
    defaults.update(kw)
    return SerialReader("desk", "/dev/fake", sink=sink, serial_factory=factory(dev), **defaults)


# --- backoff -----------------------------------------------------------------------------------


def test_replug_backoff_is_the_supervisor_backoff_while_the_node_exists(tmp_path: Any) -> None:
    node = tmp_path / "ttyUSB0"
    node.write_text("")
    b = ReplugBackoff(1.0, 4.0, 0.0, device=str(node), stop=threading.Event())
    rng = random.Random(1)
    assert [b.delay(a, rng) for a in range(4)] == [1.0, 2.0, 4.0, 4.0]


def test_replug_backoff_returns_as_soon_as_the_node_reappears(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rs, "NODE_POLL_S", 0.005)
    node = tmp_path / "ttyUSB0"
    stop = threading.Event()
    b = ReplugBackoff(60.0, 60.0, 0.0, device=str(node), stop=stop)
    threading.Timer(0.05, node.write_text, args=("",)).start()
    t0 = time.monotonic()
    assert b.delay(0, random.Random(1)) == 0.0
    assert time.monotonic() - t0 < 30  # far from the 60 s backoff: the replug cut it short
    # ...and a stop cuts it short as well.
    stop.set()
    assert ReplugBackoff(60.0, 60.0, 0.0, device=str(tmp_path / "gone"), stop=stop).delay(
        0, random.Random(1)) == 0.0


def test_patched_module_constants_reach_the_supervisor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rs, "BACKOFF_INITIAL_S", 0.0)
    monkeypatch.setattr(rs, "BACKOFF_MAX_S", 0.0)
    dev = FakeDevice([])
    dev.present = False
    sink = Sink()
    r = SerialReader("desk", "/dev/fake", sink=sink, serial_factory=factory(dev))
    r.start()
    try:
        sink.wait(lambda: dev.open_failures >= 20, timeout=5.0)  # no backoff delay at all
    finally:
        r.stop(2.0)


# --- construction ------------------------------------------------------------------------------


def test_bad_arguments_name_the_reader() -> None:
    sink = Sink()
    with pytest.raises(ValueError, match=r"desk.*protocol"):
        SerialReader("desk", "/dev/x", protocol="modbus", sink=sink)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"desk.*antennas must be 1-8"):
        SerialReader("desk", "/dev/x", antennas=(9,), sink=sink)
    with pytest.raises(ValueError, match="named group"):
        SerialReader("desk", "/dev/x", protocol="ascii", line_pattern="^x$", sink=sink)
    with pytest.raises(ValueError, match="sink"):
        SerialReader("desk", "/dev/x")


def test_from_config() -> None:
    from rfidd.config import ReaderConfig

    cfg = ReaderConfig.model_validate(
        {"kind": "serial", "address": "/dev/ttyUSB0", "antennas": {"1": "pos", "2": "pos"},
         "serial": {"protocol": "ascii", "baudrate": 9600, "poll_interval_ms": 50}}
    )
    r = SerialReader.from_config("pos1", cfg, Sink())
    assert (r.device, r.protocol, r.baudrate, r.antennas, r.poll_interval_s) == (
        "/dev/ttyUSB0", "ascii", 9600, [1, 2], 0.05
    )


# --- binary sessions ---------------------------------------------------------------------------


def run_session(reader: SerialReader, until: Callable[[], bool]) -> None:
    stop = threading.Event()
    t = threading.Thread(target=reader.run_once, args=(stop,), daemon=True)
    t.start()
    deadline = time.monotonic() + 10
    while not until() and time.monotonic() < deadline:
        time.sleep(0.005)
    stop.set()
    t.join(5)
    assert not t.is_alive()


def test_binary_round_becomes_one_batch_with_antenna_and_rssi() -> None:
    dev = FakeDevice([(e, 1, -40 - i) for i, e in enumerate(EPCS)])
    sink = Sink()
    r = make(dev, sink)
    run_session(r, lambda: len(sink.batches) >= 3)
    assert r.stats.sessions == 1
    for batch in sink.batches:
        assert [(x.epc, x.antenna, x.rssi_dbm) for x in batch] == [
            (e, 1, float(-40 - i)) for i, e in enumerate(EPCS)
        ]
    assert dev.commands[:2] == [(0x72, b""), (0x74, b"\x00")]  # firmware, then antenna 1
    assert all(c == (0x89, b"\x01") for c in dev.commands[2:])
    assert r.stats.rounds >= 3
    assert r.stats.reads == len(sink.reads)


def test_multi_antenna_rotates_work_antenna() -> None:
    dev = FakeDevice([(EPCS[0], 1, -50), (EPCS[1], 2, -60), (EPCS[2], 4, -70)])
    sink = Sink()
    r = make(dev, sink, antennas=(1, 2, 4))
    run_session(r, lambda: len(sink.batches) >= 6)
    set_ant = [d[0] for c, d in dev.commands if c == 0x74]
    assert set_ant[:6] == [0, 1, 3, 0, 1, 3]
    seen = {(x.epc, x.antenna, x.rssi_dbm) for x in sink.reads}
    assert seen == {(EPCS[0], 1, -50.0), (EPCS[1], 2, -60.0), (EPCS[2], 4, -70.0)}


def test_unconfigured_antenna_dropped_and_counted() -> None:
    dev = FakeDevice([(EPCS[0], 1, -50), (EPCS[1], 3, -50)])
    dev.work_antenna = 1
    sink = Sink()
    r = make(dev, sink, antennas=(1, 3))

    def tags_on_both() -> bool:
        return any(x.antenna == 3 for x in sink.reads)

    run_session(r, tags_on_both)
    assert {x.antenna for x in sink.reads} == {1, 3}
    # Now the reader reports antenna 3 while only antenna 1 is configured.
    dev2 = FakeDevice([(EPCS[1], 1, -50)])
    sink2 = Sink()
    r2 = make(dev2, sink2)
    orig = dev2.handle

    def misreport(data: bytes) -> bytes:
        out = orig(data)
        return out.replace(
            encode_frame(1, 0x89, tag_record_data(1, bytes.fromhex(EPCS[1]), -50)),
            encode_frame(1, 0x89, tag_record_data(3, bytes.fromhex(EPCS[1]), -50)),
        )

    dev2.handle = misreport  # type: ignore[method-assign]
    run_session(r2, lambda: sink2.kinds("unknown_antenna") >= 2)
    assert sink2.reads == []


def test_silent_reader_times_out() -> None:
    dev = FakeDevice([], answer=False)
    sink = Sink()
    r = make(dev, sink)
    with pytest.raises(ReaderTimeout, match="no answer to 3 firmware"):
        r.run_once(threading.Event())
    assert sink.kinds("no_response") == 2
    assert r.stats.sessions == 0  # never got as far as an answer


def test_round_cut_by_unplug_is_delivered_once() -> None:
    dev = FakeDevice([(e, 1, -50) for e in EPCS])
    dev.end_rounds = False  # the round never finishes...
    dev.die_after_rounds = 1  # ...because the cable is pulled
    sink = Sink()
    r = make(dev, sink, response_timeout_s=5.0)
    with pytest.raises(serial.SerialException, match="disconnected"):
        r.run_once(threading.Event())
    assert [x.epc for x in sink.reads] == EPCS
    assert r.stats.reads == len(EPCS)


def test_big_round_split_into_batches() -> None:
    dev = FakeDevice([(f"3034{i:020X}", 1, -50) for i in range(25)])
    sink = Sink()
    r = make(dev, sink, batch_max=10)
    run_session(r, lambda: r.stats.rounds >= 1)
    first_round = sink.reads[:25]
    assert [len(b) for b in sink.batches[:3]] == [10, 10, 5]
    assert len({x.epc for x in first_round}) == 25


def test_reader_error_code_counted_and_round_closed() -> None:
    dev = FakeDevice([])
    orig = dev.handle

    def fail_rounds(data: bytes) -> bytes:
        return orig(data).replace(encode_frame(1, 0x89, bytes(7)), encode_frame(1, 0x89, b"\x11"))

    dev.handle = fail_rounds  # type: ignore[method-assign]
    sink = Sink()
    r = make(dev, sink)
    run_session(r, lambda: sink.kinds("reader_error") >= 3)
    assert r.stats.rounds >= 3  # an error answer ends the round: polling goes on
    assert "0x11" in next(d for k, d in sink.anomalies if k == "reader_error")


# --- supervision loop --------------------------------------------------------------------------


def test_reconnects_after_unplug_and_counts() -> None:
    dev = FakeDevice([(e, 1, -50) for e in EPCS])
    sink = Sink()
    r = make(dev, sink)
    r.start()
    try:
        sink.wait(lambda: len(sink.batches) >= 2 and r.state is ReaderState.ONLINE)
        dev.present = False
        sink.wait(lambda: sink.states[-1][0] is ReaderState.OFFLINE)
        sink.wait(lambda: dev.open_failures >= 3)
        n = len(sink.reads)
        dev.present = True
        sink.wait(lambda: len(sink.reads) > n and r.state is ReaderState.ONLINE)
    finally:
        r.stop(2.0)
    assert not r.is_alive()
    assert r.stats.reconnects == 1
    assert r.stats.sessions == 2
    assert r.stats.connect_failures >= 3
    assert sink.states[0][0] is ReaderState.CONNECTING
    assert transitions(sink.states) == [ReaderState.ONLINE, ReaderState.OFFLINE,
                                        ReaderState.ONLINE, ReaderState.OFFLINE]
    first_offline = next(why for st, why in sink.states if st is ReaderState.OFFLINE)
    assert "disconnected" in first_offline


def test_broken_sink_does_not_kill_reader() -> None:
    dev = FakeDevice([(e, 1, -50) for e in EPCS])
    sink = Sink(fail_reads=3)
    r = make(dev, sink)
    r.start()
    try:
        sink.wait(lambda: len(sink.batches) >= 2)
    finally:
        r.stop(2.0)
    assert sink.kinds("sink_error") == 3
    assert r.stats.sessions == 1  # the session survived the sink's errors


def test_bug_in_session_is_retried_not_fatal(monkeypatch: pytest.MonkeyPatch) -> None:
    dev = FakeDevice([(e, 1, -50) for e in EPCS])
    sink = Sink()
    r = make(dev, sink)
    calls = {"n": 0}
    orig = r._on_frame

    def flaky(*a: Any) -> bool:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyError("boom")
        return orig(*a)

    monkeypatch.setattr(r, "_on_frame", flaky)
    r.start()
    try:
        sink.wait(lambda: r.stats.sessions >= 2 and len(sink.batches) >= 1)
    finally:
        r.stop(2.0)
    assert sink.kinds("driver_error") == 1
