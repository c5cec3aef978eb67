"""SerialReader against the simulated reader over real pseudo-terminals (pyserial on both ends)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from readers.base import ReaderState, TagRead
from readers.serial import SerialReader
from readers.supervise import Backoff
from simulator.serial_sim import SerialReaderSim, SimTag, sgtin_like_epcs

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

WAIT_S = 15.0  # a generous ceiling for conditions, never a timing assertion


class Sink:
    def __init__(self) -> None:
        self.reads: list[TagRead] = []
        self.states: list[tuple[ReaderState, str]] = []
        self.anomalies: list[tuple[str, str]] = []
        self.cond = threading.Condition()

    def on_reads(self, reader: str, reads: list[TagRead]) -> None:
        with self.cond:
            self.reads.extend(reads)
            self.cond.notify_all()

    def on_state(self, reader: str, state: ReaderState, reason: str) -> None:
        with self.cond:
            self.states.append((state, reason))
            self.cond.notify_all()

    def on_anomaly(self, reader: str, kind: str, detail: str) -> None:
        with self.cond:
            self.anomalies.append((kind, detail))
            self.cond.notify_all()

    def kinds(self, kind: str) -> int:
        with self.cond:
            return sum(1 for k, _ in self.anomalies if k == kind)

    def wait(self, pred: Callable[[], bool], what: str) -> None:
        """Driver stats change without notifying the sink: poll as well as listen."""
        deadline = time.monotonic() + WAIT_S
        with self.cond:
            while not pred():
                left = deadline - time.monotonic()
                assert left > 0, f"not reached within {WAIT_S} s: {what}"
                self.cond.wait(min(left, 0.01))

    def epcs(self) -> set[str]:
        with self.cond:
            return {r.epc for r in self.reads}


def transitions(states: list[tuple[ReaderState, str]]) -> list[ReaderState]:
    """ONLINE/OFFLINE changes, without the CONNECTING between retries."""
    out: list[ReaderState] = []
    for st, _ in states:
        if st is not ReaderState.CONNECTING and (not out or out[-1] is not st):
            out.append(st)
    return out


def planted(n: int = 12) -> list[SimTag]:
    """Tags over two antennas with distinct RSSI each, so a mix-up cannot pass."""
    return [
        SimTag(epc, antenna=1 + i % 2, rssi_dbm=float(-35 - i))
        for i, epc in enumerate(sgtin_like_epcs(n))
    ]


def reader(path: str, sink: Sink, protocol: str, **kw: Any) -> SerialReader:
    return SerialReader(
        "desk1", path, protocol=protocol, poll_interval_ms=kw.pop("poll_interval_ms", 10),  # type: ignore[arg-type]
        antennas=kw.pop("antennas", (1, 2)), sink=sink,
        backoff=Backoff(0.02, 0.2, 0.2), response_timeout_s=kw.pop("response_timeout_s", 1.0),
        **kw,
    )


@pytest.fixture
def sims() -> Iterator[list[SerialReaderSim]]:
    made: list[SerialReaderSim] = []
    yield made
    for s in made:
        s.stop()


def start_sim(sims: list[SerialReaderSim], *a: Any, **kw: Any) -> SerialReaderSim:
    sim = SerialReaderSim(*a, **kw)
    sims.append(sim)
    sim.start()
    return sim


def assert_reads_match(sink: Sink, tags: list[SimTag]) -> None:
    truth = {t.epc: (t.antenna, t.rssi_dbm) for t in tags}
    with sink.cond:
        reads = list(sink.reads)
    assert {r.epc for r in reads} == set(truth)
    for r in reads:
        assert (r.antenna, r.rssi_dbm) == truth[r.epc], r
        assert r.reader == "desk1"


@pytest.mark.parametrize("protocol", ["binary", "ascii"])
def test_every_planted_epc_with_antenna_and_rssi(
    protocol: str, sims: list[SerialReaderSim]
) -> None:
    tags = planted()
    sim = start_sim(sims, tags, protocol, ascii_interval_s=0.02)
    sink = Sink()
    r = reader(sim.path, sink, protocol)
    r.start()
    try:
        sink.wait(lambda: len(sink.epcs()) == len(tags), "all planted EPCs")
        sink.wait(lambda: len(sink.reads) >= 3 * len(tags), "three rounds")
    finally:
        r.stop()
    assert_reads_match(sink, tags)
    assert sink.anomalies == []
    assert transitions(sink.states) == [ReaderState.ONLINE, ReaderState.OFFLINE]


def test_binary_faults_counted_and_no_bad_record(sims: list[SerialReaderSim]) -> None:
    tags = planted()
    sim = start_sim(
        sims, tags, "binary", split_frames=True, garbage_every=4, bad_checksum_every=7, seed=3
    )
    sink = Sink()
    r = reader(sim.path, sink, "binary")
    r.start()
    try:
        sink.wait(
            lambda: len(sink.epcs()) == len(tags) and sim.stats.bad_checksums >= 3
            and sim.stats.rounds >= 10,
            "every EPC despite faults",
        )
    finally:
        r.stop()
        sim.unplug()
    assert_reads_match(sink, tags)  # garbage and bad frames never became a read
    assert sink.kinds("checksum") >= 3
    assert sink.kinds("garbage") >= 1
    # Every good record the simulator sent arrived once; corrupted ones never did.
    assert r.stats.reads <= sim.stats.tag_frames
    assert r.stats.reads >= sim.stats.tag_frames - len(tags)  # at most the round cut by stop


def test_ascii_garbage_lines_counted(sims: list[SerialReaderSim]) -> None:
    tags = planted(4)
    sim = start_sim(sims, tags, "ascii", ascii_auto=False)
    sink = Sink()
    r = reader(sim.path, sink, "ascii")
    r.start()
    try:
        sink.wait(lambda: r.state is ReaderState.ONLINE, "online")
        sim.write_line("READER v1.2 ready")
        sim.inject_garbage(b"\x00\xff\x13\xa0garbage\r\n")
        sim.emit_round()
        sim.write_line(tags[0].epc[:-2] + ",-40,1")  # EPC cut short
        sim.emit_round()
        sink.wait(lambda: len(sink.reads) == 2 * len(tags), "two rounds")
        sink.wait(lambda: sink.kinds("garbage_line") == 3, "three garbage lines")
    finally:
        r.stop()
    assert_reads_match(sink, tags)


def _stable(sink: Sink, r: SerialReader, quiet_s: float = 0.3) -> None:
    """Wait until no read arrived for `quiet_s` (the simulator has no tag in the field)."""
    deadline = time.monotonic() + WAIT_S
    last = -1
    while time.monotonic() < deadline:
        n = r.stats.reads
        if n == last:
            return
        last = n
        time.sleep(quiet_s)
    raise AssertionError("reads never settled")


def test_binary_unplug_replug_resumes_without_loss_or_duplicate(
    sims: list[SerialReaderSim],
) -> None:
    tags = planted()
    sim = start_sim(sims, tags, "binary")
    sink = Sink()
    r = reader(sim.path, sink, "binary", response_timeout_s=0.5)
    r.start()
    try:
        sink.wait(lambda: len(sink.reads) >= 5 * len(tags) and r.state is ReaderState.ONLINE,
                  "reads before unplug")
        sim.set_tags([])  # empty field: nothing in flight when the cable goes
        _stable(sink, r)
        assert r.stats.reads == sim.stats.tag_frames
        before = r.stats.reads

        sim.unplug()
        sink.wait(lambda: r.state is ReaderState.OFFLINE, "offline after unplug")
        sink.wait(lambda: r.stats.connect_failures >= 2, "reopen attempts while unplugged")
        sim.replug()
        t_replug = time.monotonic()
        sim.set_tags(tags)
        sink.wait(lambda: r.stats.reads > before, "reads after replug")
        recovery = time.monotonic() - t_replug
        sink.wait(lambda: len(sink.reads) >= before + 5 * len(tags), "steady reads after replug")
        sim.set_tags([])
        _stable(sink, r)
    finally:
        r.stop()
    assert r.stats.reads == sim.stats.tag_frames  # nothing lost, nothing delivered twice
    assert len(sink.reads) == r.stats.reads
    assert r.stats.reconnects == 1
    assert transitions(sink.states) == [ReaderState.ONLINE, ReaderState.OFFLINE,
                                        ReaderState.ONLINE, ReaderState.OFFLINE]
    assert_reads_match(sink, tags)
    print(f"\nbinary recovery after replug: {recovery * 1000:.0f} ms")


def test_ascii_unplug_replug_delivers_each_line_exactly_once(
    sims: list[SerialReaderSim],
) -> None:
    sim = start_sim(sims, [], "ascii", ascii_auto=False)
    sink = Sink()
    r = reader(sim.path, sink, "ascii", antennas=(1,))
    r.start()
    first, second = sgtin_like_epcs(40)[:20], sgtin_like_epcs(40)[20:]
    try:
        sink.wait(lambda: r.state is ReaderState.ONLINE, "online")
        sim.write_lines([f"{e},-50,1" for e in first])
        sink.wait(lambda: len(sink.reads) == 20, "first batch")
        sim.unplug()
        sink.wait(lambda: r.state is ReaderState.OFFLINE, "offline after unplug")
        sim.replug()
        t_replug = time.monotonic()
        sink.wait(lambda: r.state is ReaderState.ONLINE, "online after replug")
        recovery = time.monotonic() - t_replug
        sim.write_lines([f"{e},-51,1" for e in second])
        sink.wait(lambda: len(sink.reads) >= 40, "second batch")
        time.sleep(0.2)  # room for a duplicate to show up, were there one
    finally:
        r.stop()
    assert [x.epc for x in sink.reads] == first + second
    assert [x.rssi_dbm for x in sink.reads] == [-50.0] * 20 + [-51.0] * 20
    assert r.stats.reconnects == 1
    print(f"\nascii recovery after replug: {recovery * 1000:.0f} ms")


def test_hung_binary_reader_is_reopened_and_resumes(sims: list[SerialReaderSim]) -> None:
    tags = planted(4)
    sim = start_sim(sims, tags, "binary")
    sink = Sink()
    r = reader(sim.path, sink, "binary", response_timeout_s=0.1)
    r.start()
    try:
        sink.wait(lambda: len(sink.epcs()) == len(tags), "reads before the hang")
        sim.silent = True
        sink.wait(lambda: r.state is not ReaderState.ONLINE, "hang detected")
        sink.wait(lambda: sink.kinds("no_response") >= 2, "unanswered polls counted")
        n = r.stats.reads
        sim.silent = False
        sink.wait(lambda: r.stats.reads > n and r.state is ReaderState.ONLINE, "reads resume")
    finally:
        r.stop()
    assert r.stats.reconnects >= 1
    assert any("no answer" in why for st, why in sink.states if st is ReaderState.OFFLINE)


def test_reader_started_before_device_exists(sims: list[SerialReaderSim]) -> None:
    tags = planted(4)
    sim = SerialReaderSim(tags, "binary")
    sims.append(sim)
    sim.start()
    sim.unplug()  # the device path is known but nothing is plugged in yet
    sink = Sink()
    r = reader(sim.path, sink, "binary")
    r.start()
    try:
        sink.wait(lambda: r.stats.connect_failures >= 3, "retries while absent")
        assert r.state is ReaderState.OFFLINE
        sim.replug()
        sink.wait(lambda: len(sink.epcs()) == len(tags), "reads once plugged")
    finally:
        r.stop()
    assert r.stats.reconnects == 0  # the first successful session is not a reconnect
    first_offline = next(why for st, why in sink.states if st is ReaderState.OFFLINE)
    assert "could not open port" in first_offline


@pytest.mark.parametrize("protocol", ["binary", "ascii"])
def test_throughput_through_a_pty(protocol: str, sims: list[SerialReaderSim]) -> None:
    """Measures reads/s (printed); asserts only that every record sent arrived once."""
    tags = [SimTag(e, 1, -50.0) for e in sgtin_like_epcs(200)]
    sim = start_sim(sims, [], protocol, ascii_interval_s=0.0)
    sink = Sink()
    r = reader(sim.path, sink, protocol, poll_interval_ms=0, antennas=(1,))
    r.start()
    try:
        # Tags enter the field once the port is open: an ASCII reader's earlier output is
        # flushed on open by design.
        sink.wait(lambda: r.state is ReaderState.ONLINE, "online")
        sim.set_tags(tags)
        sink.wait(lambda: r.stats.reads >= 2000, "a first 2000 reads")
        n0, t0 = r.stats.reads, time.monotonic()
        time.sleep(1.0)
        n1, t1 = r.stats.reads, time.monotonic()
        sim.set_tags([])
        _stable(sink, r)
    finally:
        r.stop()
    rate = (n1 - n0) / (t1 - t0)
    print(f"\n{protocol}: {rate:.0f} reads/s through a pty")
    assert sim.stats.dropped_bytes == 0  # the driver kept up: the pty never filled for 0.5 s
    sent = sim.stats.tag_frames if protocol == "binary" else sim.stats.lines
    assert r.stats.reads == sent
    assert len({x.epc for x in sink.reads}) == 200


def test_tsl_handheld_inventory_trigger_find_and_replug(sims: list[SerialReaderSim]) -> None:
    """A TSL ASCII 2.0 handheld: inventory, trigger pulls, find one item, unplug/replug."""
    tags = [SimTag(e, antenna=1, rssi_dbm=-40.0 - i) for i, e in enumerate(sgtin_like_epcs(8))]
    sim = start_sim(sims, tags, "tsl")
    sink = Sink()
    r = reader(sim.path, sink, "tsl", antennas=(1,), poll_interval_ms=3_600_000)
    r.start()
    try:
        sink.wait(lambda: sink.epcs() == {t.epc for t in tags}, "the first inventory round")
        assert r.state is ReaderState.ONLINE
        assert_reads_match(sink, tags)
        with sink.cond:
            before = len(sink.reads)
        sim.pull_trigger()  # the next poll is an hour away: these reads come unasked
        sink.wait(lambda: len(sink.reads) == before + len(tags), "reads of the trigger pull")
        target = tags[5].epc
        r.poll_interval_s = 0.02
        r.find(target)  # starts at once, without waiting for the next poll
        sink.wait(lambda: len(r.finder.samples) >= 5, "RSSI samples of the item looked for")
        with sink.cond:
            assert {x.epc for x in sink.reads[-3:]} == {target}  # only that item now
        assert {rssi for _, rssi in r.finder.samples} == {-45.0}
        r.find(None)
        sim.unplug(0.3)
        sink.wait(lambda: ReaderState.OFFLINE in transitions(sink.states), "offline on unplug")
        sink.wait(lambda: transitions(sink.states)[-1] is ReaderState.ONLINE, "back online")
        assert r.info()["vendor"] == "tsl" and sink.kinds("bad_line") == 0
    finally:
        r.stop()
