"""LLRP driver pieces that need no socket: settings, tag conversion, backoff, supervision."""

from __future__ import annotations

import random
import threading
from typing import Any

import pytest

from readers import supervise
from readers.base import ReaderState
from readers.llrp import LlrpReader, LlrpSettings
from readers.supervise import Backoff, Supervisor
from rfidd.config import LlrpOptions
from simulator.llrp.testing import RecordingSink, wait_until

NOW = 1_790_000_000.0


def make_reader(sink: RecordingSink, **opts: Any) -> LlrpReader:
    return LlrpReader("dock", "127.0.0.1", opts, [1, 2], sink, wall_clock=lambda: NOW)


def tag(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"EPC-96": b"3034257bf7194e4000001a85", "AntennaID": 2,
                            "PeakRSSI": -57, "FirstSeenTimestampUTC": int((NOW - 1) * 1e6),
                            "TagSeenCount": 4}
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


def test_settings_from_llrp_options_mapping_and_errors() -> None:
    opts = LlrpOptions.model_validate({"port": 15084, "keepalive_s": 2.0, "epc_filter": ["30"],
                                       "report_every_n_tags": 7})
    s = LlrpSettings.from_any(opts)
    assert (s.port, s.keepalive_s, s.epc_filter, s.report_every_n_tags) == (15084, 2.0, ("30",), 7)
    assert s.session == 1 and isinstance(s.session, int)
    assert LlrpSettings.from_any({"port": 1}).port == 1
    assert LlrpSettings.from_any(None) == LlrpSettings()
    with pytest.raises(ValueError, match="keepalive"):
        LlrpSettings.from_any({"keepalive": 3})


def test_sllurp_config_asks_for_every_field_and_n_tags() -> None:
    r = make_reader(RecordingSink(), report_every_n_tags=25, tx_power_dbm=27, keepalive_s=0.5)
    cfg = r.sllurp_config()
    sel = cfg["tag_content_selector"]
    assert sel["EnableAntennaID"] and sel["EnablePeakRSSI"] and sel["EnableFirstSeenTimestamp"]
    assert sel["EnableTagSeenCount"]
    assert cfg["report_every_n_tags"] == 25 and cfg["antennas"] == [1, 2]
    assert cfg["tx_power_dbm"] == 27.0 and isinstance(cfg["tx_power_dbm"], float)
    assert cfg["keepalive_interval"] == 500 and cfg["reconnect"] is False
    assert "impinj_search_mode" not in cfg


def test_convert_good_tags() -> None:
    sink = RecordingSink()
    make_reader(sink).convert_and_deliver([tag(), tag(**{"EPC-96": None,
                                                        "EPC": b"e2801160600002054cc2"})])
    a, b = sink.reads
    assert a.epc == "3034257BF7194E4000001A85" and a.antenna == 2 and a.rssi_dbm == -57.0
    assert a.seen_at == pytest.approx(NOW - 1) and a.seen_count == 4 and a.reader == "dock"
    assert b.epc == "E2801160600002054CC2"
    assert not sink.anomalies


def test_bad_tags_are_counted_never_raised() -> None:
    sink = RecordingSink()
    reader = make_reader(sink)
    reader.convert_and_deliver([tag(**{"EPC-96": b"zz"}), {"AntennaID": 1}, "junk", tag()])
    reader.convert_and_deliver(None)
    assert len(sink.reads) == 1
    kinds = [k for _, k, _ in sink.anomalies]
    assert kinds.count("bad_tag") == 3 and "bad_report" in kinds


def test_missing_optional_fields_and_skewed_clock() -> None:
    sink = RecordingSink()
    reader = make_reader(sink)
    reader.convert_and_deliver([tag(AntennaID=None, PeakRSSI=None, FirstSeenTimestampUTC=None,
                                    TagSeenCount=None)] * 3)
    reader.convert_and_deliver([tag(FirstSeenTimestampUTC=5_000_000)])  # reader clock unset
    r = sink.reads[0]
    assert r.antenna == 0 and r.rssi_dbm is None and r.seen_at == NOW and r.seen_count == 1
    assert sink.reads[-1].seen_at == NOW
    missing = [d for _, k, d in sink.anomalies if k == "missing_field"]
    assert "3 tag(s) reported without AntennaID" in missing and len(missing) == 3
    assert "reader_clock" in sink.anomaly_kinds()


def test_epc_filter_keeps_only_prefixes() -> None:
    sink = RecordingSink()
    make_reader(sink, epc_filter=["30"]).convert_and_deliver(
        [tag(), tag(**{"EPC-96": b"e2801160600002054cc2ffff"})])
    assert [r.epc[:2] for r in sink.reads] == ["30"]


def test_sink_errors_do_not_escape() -> None:
    class Exploding(RecordingSink):
        def on_reads(self, reader: str, reads: list[Any]) -> None:
            raise RuntimeError("queue full")

    sink = Exploding()
    make_reader(sink).convert_and_deliver([tag()])
    assert "sink_error" in sink.anomaly_kinds()


def test_backoff_doubles_to_cap_with_bounded_jitter() -> None:
    rng = random.Random(1)
    b = Backoff(initial_s=1.0, maximum_s=8.0, jitter=0.0)
    assert [b.delay(i, rng) for i in range(6)] == [1, 2, 4, 8, 8, 8]
    j = Backoff(initial_s=1.0, maximum_s=8.0, jitter=0.5)
    delays = [j.delay(2, rng) for _ in range(50)]
    assert all(4.0 <= d <= 6.0 for d in delays) and len(set(delays)) > 1


class FakeSession:
    """A session whose health the test drives (the supervisor's contract, no sockets)."""

    def __init__(self, clock: list[float]) -> None:
        self.clock = clock
        self.is_ready = False
        self.is_reading: bool | None = None  # None: reading as soon as ready
        self.is_alive = True
        self.why: str | None = None
        self.last = clock[0]
        self.closed: list[bool] = []

    def ready(self) -> bool:
        return self.is_ready

    def reading(self) -> bool:
        return self.is_ready if self.is_reading is None else self.is_reading

    def not_reading_reason(self) -> str:
        return "ROSpec Inactive"

    def alive(self) -> bool:
        return self.is_alive

    def failure(self) -> str | None:
        return self.why

    def last_activity(self) -> float:
        return self.last

    def close(self, polite: bool) -> None:
        self.closed.append(polite)


@pytest.fixture(autouse=True)
def fast_supervision(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervise, "BACKOFF_INITIAL_S", 0.0)
    monkeypatch.setattr(supervise, "BACKOFF_JITTER", 0.0)
    monkeypatch.setattr(supervise, "POLL_S", 0.005)


class Harness:
    def __init__(self, fail_connects: int = 0) -> None:
        self.clock = [0.0]
        self.sessions: list[FakeSession] = []
        self.fail_connects = fail_connects
        self.sink = RecordingSink()
        self.sup = Supervisor("r", self.sink, self.connect, watchdog_s=30.0,
                              handshake_timeout_s=15.0, clock=lambda: self.clock[0])

    def connect(self) -> FakeSession:
        if self.fail_connects:
            self.fail_connects -= 1
            raise ConnectionRefusedError("refused")
        s = FakeSession(self.clock)
        self.sessions.append(s)
        return s

    def states(self) -> list[tuple[ReaderState, str]]:
        return [(st, why) for _, st, why, _ in self.sink.states]


def test_supervisor_reconnects_on_each_failure_kind() -> None:
    h = Harness(fail_connects=2)
    h.sup.start()
    try:
        assert wait_until(lambda: len(h.sessions) == 1)
        h.sessions[0].is_ready = True
        assert wait_until(lambda: h.sup.state is ReaderState.ONLINE)
        h.sessions[0].why = "connection closed"  # reported failure
        assert wait_until(lambda: len(h.sessions) == 2)
        h.sessions[1].is_ready = True
        assert wait_until(lambda: h.sup.state is ReaderState.ONLINE)
        h.sessions[1].is_alive = False  # sllurp's thread died silently
        assert wait_until(lambda: len(h.sessions) == 3)
        h.sessions[2].is_ready = True
        assert wait_until(lambda: h.sup.state is ReaderState.ONLINE)
        h.clock[0] += 31  # no message for longer than the watchdog
        assert wait_until(lambda: len(h.sessions) == 4)
        h.clock[0] += 16  # never completes the handshake
        assert wait_until(lambda: len(h.sessions) == 5)
    finally:
        h.sup.stop()
    reasons = [why for st, why in h.states() if st is ReaderState.OFFLINE]
    assert reasons[:2] == ["connect failed: refused"] * 2
    assert reasons[2] == "connection closed" and reasons[3] == "driver thread died"
    assert reasons[4].startswith("reader silent for 31.0s")
    assert reasons[5] == "handshake timed out after 15s" and reasons[-1] == "stopped"
    assert all(s.closed == [False] for s in h.sessions[:4])
    assert h.sessions[-1].closed == [True]  # the clean stop closes politely


def test_supervisor_backoff_grows_until_online(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []

    class Spy(Backoff):
        def delay(self, attempt: int, rng: random.Random) -> float:
            seen.append(attempt)
            return 0.0

    h = Harness(fail_connects=3)
    h.sup = Supervisor("r", h.sink, h.connect, watchdog_s=None, handshake_timeout_s=15.0,
                       backoff=Spy(), clock=lambda: h.clock[0])
    h.sup.start()
    try:
        assert wait_until(lambda: len(h.sessions) == 1)
        h.sessions[0].is_ready = True
        assert wait_until(lambda: h.sup.state is ReaderState.ONLINE)
        h.sessions[0].why = "gone"
        assert wait_until(lambda: len(h.sessions) == 2)
    finally:
        h.sup.stop()
    assert seen == [0, 1, 2, 0]  # reset once the reader was online


def test_shared_stop_event_stops_promptly() -> None:
    stop = threading.Event()
    h = Harness(fail_connects=10**6)
    sup = Supervisor("r", h.sink, h.connect, watchdog_s=None, handshake_timeout_s=1.0,
                     backoff=Backoff(initial_s=3600.0), stop_event=stop)
    sup.start()
    assert wait_until(lambda: sup.state is ReaderState.OFFLINE and sup.reconnects >= 1)
    stop.set()  # the daemon's one stop Event, not sup.stop(): the hour-long backoff ends now
    assert wait_until(lambda: sup._thread is not None and not sup._thread.is_alive(), 5.0)
    assert sup.state is ReaderState.OFFLINE


def test_reader_clock_minutes_off_is_replaced_by_ours() -> None:
    """A reader 10 minutes slow would make every item depart at each sweep; 2 s is normal."""
    sink = RecordingSink()
    reader = make_reader(sink)
    reader.convert_and_deliver([tag(FirstSeenTimestampUTC=int((NOW - 600) * 1e6))])
    reader.convert_and_deliver([tag(FirstSeenTimestampUTC=int((NOW - 2) * 1e6))])
    assert [r.seen_at for r in sink.reads] == [NOW, NOW - 2]
    assert [k for _, k, _ in sink.anomalies].count("reader_clock") == 1


def test_connected_is_not_online_until_reading_and_stuck_sessions_are_restarted() -> None:
    h = Harness()
    h.sup = Supervisor("r", h.sink, h.connect, watchdog_s=30.0, handshake_timeout_s=15.0,
                       clock=lambda: h.clock[0], not_reading_reconnect_s=60.0)
    h.sup.start()
    try:
        assert wait_until(lambda: len(h.sessions) == 1)
        s = h.sessions[0]
        s.is_reading = False
        s.is_ready = True  # handshake done, ROSpec not active
        assert wait_until(lambda: h.sup.state is ReaderState.CONNECTED_NOT_READING)
        s.is_reading = True
        assert wait_until(lambda: h.sup.state is ReaderState.ONLINE)
        s.is_reading = False  # the reader stopped inventorying
        assert wait_until(lambda: h.sup.state is ReaderState.CONNECTED_NOT_READING)
        h.clock[0] += 20  # within the limit, and within the watchdog
        s.last = h.clock[0]
        h.sup.wake()
        assert wait_until(lambda: len(h.sink.states) >= 4)
        assert len(h.sessions) == 1
        h.clock[0] += 41  # 61 s not reading: start afresh
        s.last = h.clock[0]
        assert wait_until(lambda: len(h.sessions) == 2)
    finally:
        h.sup.stop()
    states = h.states()
    assert [st for st, _ in states[:4]] == [ReaderState.CONNECTING,
                                            ReaderState.CONNECTED_NOT_READING,
                                            ReaderState.ONLINE, ReaderState.CONNECTED_NOT_READING]
    assert states[1][1] == "ROSpec Inactive"
    offline = [why for st, why in states if st is ReaderState.OFFLINE]
    assert offline[0].startswith("connected but not inventorying for 61.0s")


def test_sllurp_config_sends_no_impinj_extension_before_knowing_the_vendor() -> None:
    r = make_reader(RecordingSink(), impinj_extensions=True, search_mode=2)
    cfg = r.sllurp_config()
    assert "impinj_search_mode" not in cfg and cfg["event_selector"] == {"ROSpecEvent": True}


def test_device_profile_detected_beats_configured() -> None:
    from readers.llrp_profiles import DeviceInfo

    sink = RecordingSink()
    r = make_reader(sink, vendor="impinj")
    assert r.profile.vendor == "impinj"
    profile = r.on_device(DeviceInfo(161, 7500, "3.10", 4, (0, 1, 2)))
    assert profile.vendor == "zebra" and not profile.impinj_extensions
    assert "vendor_mismatch" in sink.anomaly_kinds()
    info = r.info()
    assert (info["vendor"], info["vendor_configured"], info["model"]) == ("zebra", "impinj", 7500)


def test_tid_from_an_access_spec_read_or_impinj_serialized_tid() -> None:
    sink = RecordingSink()
    r = make_reader(sink)
    r.convert_and_deliver([
        tag(C1G2ReadOpSpecResult={"Result": 0, "OpSpecID": 1,
                                   "ReadData": bytes.fromhex("E2801160200074CF")}),
        tag(ImpinjSerializedTID={"TID": bytes.fromhex("E2801105200078AA")}),
        tag(),
    ])
    assert [x.tid for x in sink.reads] == ["E2801160200074CF", "E2801105200078AA", None]


def test_an_answer_owed_as_we_hang_up_is_dropped_not_an_error() -> None:
    """A keepalive that comes in while the driver closes the connection: sllurp answers it on
    a socket already gone. Raised, that is "Disconnected because of a reader configuration
    error" at ERROR level on every clean stop (`rfidd demo` ended with three of them)."""
    from sllurp.llrp import ReaderConfigurationError

    from readers.llrp_session import SllurpSession

    client = SllurpSession(make_reader(RecordingSink())).client
    keepalive_ack = bytes.fromhex("0448" "0000000a" "00000001")
    with pytest.raises(ReaderConfigurationError, match="Not connected"):
        client.send_data(keepalive_ack)  # not connected and not closing: sllurp's own error
    client.hard_disconnect()
    client.send_data(keepalive_ack)  # closing: nowhere to send it, and no error
