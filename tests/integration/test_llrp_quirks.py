"""Field quirks of real LLRP readers, each reproduced by a simulator mode, against the driver.

Every test here stalls or misreports on a driver that trusts ENABLE_ROSPEC_RESPONSE, sends
Impinj extensions blindly, gives up on a vendor parameter or a refused ModeIndex, drops reports
that precede the ENABLE_ROSPEC response, or believes a ROSpec it installed is still there.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from waits import wait_until

from readers import llrp_session, supervise
from readers.base import ReaderState
from readers.llrp import LlrpReader
from simulator.llrp import IDENTITIES, FieldTag, ReaderQuirks, SimulatedReader, StaticField
from simulator.llrp.testing import RecordingSink

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

EPCS = {1: [f"3034E57E0400194000{n:06X}" for n in range(25)],
        2: [f"3034E57E04001B8000{n:06X}" for n in range(25)]}
ALL = {e for es in EPCS.values() for e in es}


@pytest.fixture(autouse=True)
def fast_supervision(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervise, "BACKOFF_INITIAL_S", 0.05)
    monkeypatch.setattr(supervise, "BACKOFF_MAX_S", 0.2)
    monkeypatch.setattr(supervise, "BACKOFF_JITTER", 0.0)
    monkeypatch.setattr(supervise, "POLL_S", 0.01)


class Rig:
    def __init__(self, quirks: ReaderQuirks | None = None, identity: str = "generic",
                 antennas: tuple[int, ...] = (1, 2), field: dict[int, list[str]] | None = None,
                 buffered: tuple[str, ...] = (), clones: tuple[str, ...] = (),
                 **options: Any) -> None:
        self.sim = SimulatedReader(
            "dock", StaticField.of_hex(EPCS if field is None else field, clones=clones),
            antennas=[1, 2, 3, 4], reads_per_s=600, quirks=quirks,
            identity=IDENTITIES[identity], seed=5,
            buffered=[FieldTag(bytes.fromhex(e)) for e in buffered])
        self.sim.start()
        self.sink = RecordingSink()
        opts: dict[str, Any] = {"port": self.sim.port, "keepalive_s": 0.15,
                                "handshake_timeout_s": 3.0, "report_every_n_tags": 10,
                                "report_timeout_ms": 100, "verify_s": 0.3,
                                "antenna_check_s": 0.5}
        opts.update(options)
        self.driver = LlrpReader("dock", "127.0.0.1", opts, list(antennas), self.sink,
                                 disconnect_timeout_s=0.5)

    def online(self) -> bool:
        return self.driver.state is ReaderState.ONLINE

    def close(self) -> None:
        self.driver.stop(timeout=5)
        self.sim.stop()


@pytest.fixture
def make_rig() -> Iterator[Any]:
    rigs: list[Rig] = []

    def make(**kw: Any) -> Rig:
        rig = Rig(**kw)
        rigs.append(rig)
        rig.driver.start()
        return rig

    yield make
    for rig in rigs:
        rig.close()


def test_reader_needing_start_rospec_reads_every_tag_within_seconds(make_rig: Any) -> None:
    """The independent reader of issue 11: Immediate trigger left Enabled until START_ROSPEC."""
    rig = make_rig(quirks=ReaderQuirks(needs_start_rospec=True))
    wait_until(lambda: rig.sink.epcs() >= ALL, "every planted tag read", timeout=5)
    assert rig.online()
    assert rig.sim.stats.requests.get("START_ROSPEC", 0) >= 1
    assert "rospec_not_started" in rig.sink.anomaly_kinds()
    assert rig.sim.stats.connections == 1


def test_not_online_until_the_rospec_is_active(make_rig: Any) -> None:
    """Enabled is not Active: the driver reports connected_not_reading until it is."""
    rig = make_rig(quirks=ReaderQuirks(needs_start_rospec=True))
    wait_until(rig.online, "online")
    states = [st for _, st, _, _ in rig.sink.states]
    assert states.index(ReaderState.ONLINE) > states.index(ReaderState.CONNECTING)
    assert rig.sim.inventorying


def test_get_rospecs_unsupported_falls_back_to_start_rospec(make_rig: Any) -> None:
    rig = make_rig(quirks=ReaderQuirks(needs_start_rospec=True, no_get_rospecs=True))
    wait_until(lambda: rig.sink.epcs() >= ALL, "every planted tag read", timeout=5)
    assert {"get_rospecs_unsupported"} <= rig.sink.anomaly_kinds()
    assert rig.sim.stats.connections == 1


def test_start_rospec_refused_as_already_active_is_tolerated(make_rig: Any) -> None:
    rig = make_rig(quirks=ReaderQuirks(no_get_rospecs=True, start_active_refused=True))
    wait_until(lambda: rig.online() and rig.sink.count() > 100, "reading")
    assert "start_rospec_already_active" in rig.sink.anomaly_kinds()
    assert rig.sim.stats.connections == 1


def test_every_mapped_antenna_configured_and_a_silent_one_named(make_rig: Any) -> None:
    rig = make_rig(quirks=ReaderQuirks(antenna1_unless_configured=True), antennas=(1, 2, 3))
    wait_until(lambda: rig.sink.epcs() >= ALL, "tags of antennas 1 and 2")
    assert rig.sim.stats.antennas_configured == [1, 2, 3]
    assert {r.antenna for r in rig.sink.reads} == {1, 2}
    wait_until(lambda: "antenna_silent" in rig.sink.anomaly_kinds(), "antenna 3 named")
    detail = next(d for _, k, d in rig.sink.anomalies if k == "antenna_silent")
    assert "[3]" in detail
    assert rig.driver.info()["antennas_reporting"] == [1, 2]


def test_impinj_extensions_not_sent_to_a_non_impinj_reader(make_rig: Any) -> None:
    rig = make_rig(identity="zebra", impinj_extensions=True, search_mode=2)
    wait_until(lambda: rig.online() and rig.sink.epcs() >= ALL, "reading")
    assert "CUSTOM_MESSAGE" not in rig.sim.stats.requests
    assert "vendor_extension_skipped" in rig.sink.anomaly_kinds()
    assert rig.driver.info()["vendor"] == "zebra" and rig.driver.info()["extensions"] is None
    assert rig.sim.stats.connections == 1


def test_impinj_extensions_sent_once_the_capabilities_say_impinj(make_rig: Any) -> None:
    rig = make_rig(identity="impinj", impinj_extensions=True, search_mode=2)
    wait_until(lambda: rig.online() and rig.sink.epcs() >= ALL, "reading")
    assert rig.sim.stats.impinj_extensions
    assert rig.sim.stats.vendor_rospec_parameters == 2  # search mode on each antenna
    info = rig.driver.info()
    assert (info["vendor"], info["extensions"], info["model"]) == ("impinj", "impinj", 2001002)
    assert "vendor_extension_skipped" not in rig.sink.anomaly_kinds()


def test_undecodable_vendor_parameters_skipped_and_counted(make_rig: Any) -> None:
    rig = make_rig(identity="zebra", quirks=ReaderQuirks(undecodable_vendor_params=True))
    wait_until(lambda: rig.online() and rig.sink.epcs() >= ALL, "reading despite them")
    assert "undecodable_vendor_parameter" in rig.sink.anomaly_kinds()
    assert rig.driver.anomaly_counts()["undecodable_vendor_parameter"] > 2  # caps + reports
    assert rig.sim.stats.connections == 1
    # A report with a vendor parameter sllurp knows goes to sllurp, as before: counted.
    assert "report_decoded_by_sllurp" in rig.sink.anomaly_kinds()


def test_reports_never_become_sllurp_objects(make_rig: Any,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The struct decoder takes every standard report; sllurp decodes every other message."""
    decoded: list[str] = []

    class Counting(llrp_session.LLRPMessage):  # type: ignore[misc,name-defined]
        def __init__(self, *args: Any, **kw: Any) -> None:
            super().__init__(*args, **kw)
            decoded.append(self.getName())

    monkeypatch.setattr(llrp_session, "LLRPMessage", Counting)
    rig = make_rig(identity="impinj", clones=(EPCS[1][0],), read_tid=True)
    wait_until(lambda: rig.online() and rig.sink.epcs() >= ALL, "reading")
    wait_until(lambda: any(r.tid for r in rig.sink.reads), "a TID through the fast decoder")
    wait_until(lambda: "KEEPALIVE" in decoded, "a keepalive, through sllurp")
    assert "RO_ACCESS_REPORT" not in decoded
    assert {"ADD_ROSPEC_RESPONSE", "ENABLE_ROSPEC_RESPONSE"} <= set(decoded), decoded
    assert "report_decoded_by_sllurp" not in rig.sink.anomaly_kinds()


def test_mode_by_identifier(make_rig: Any) -> None:
    rig = make_rig(mode_identifier=1002)
    wait_until(rig.online, "online")
    assert rig.sim.stats.mode_selected == 1002
    assert rig.driver.info()["mode_index"] == "identifier"


def test_mode_index_taken_as_position_is_retried_so(make_rig: Any) -> None:
    rig = make_rig(quirks=ReaderQuirks(mode_index_is_position=True), mode_identifier=1002)
    wait_until(lambda: rig.online() and rig.sink.count() > 50, "reading")
    assert rig.sim.stats.mode_selected == 1002  # the mode asked for, not another one
    assert "mode_index_by_position" in rig.sink.anomaly_kinds()
    assert rig.sim.stats.connections == 1
    info = rig.driver.info()
    assert (info["mode"], info["mode_index"]) == (1002, "position")


def test_reports_before_the_enable_response_are_kept(make_rig: Any) -> None:
    early = tuple(f"3034E57E0400200000{n:06X}" for n in range(12))
    rig = make_rig(quirks=ReaderQuirks(reports_before_enable_response=True), buffered=early)
    wait_until(lambda: rig.sink.epcs() >= set(early), "the buffered reads")
    assert "report_before_enable_response" in rig.sink.anomaly_kinds()


def test_rospec_lost_by_the_reader_is_reinstalled(make_rig: Any) -> None:
    rig = make_rig(quirks=ReaderQuirks(loses_rospec_after_s=0.5))
    wait_until(lambda: rig.sim.stats.rospecs_lost == 1, "the reader losing its ROSpec")
    before = rig.sink.count()
    wait_until(lambda: rig.sink.count() > before + 100, "reads resuming")
    assert "rospec_lost" in rig.sink.anomaly_kinds()
    assert rig.sim.stats.requests["ADD_ROSPEC"] == 2
    assert rig.sim.stats.connections == 1  # reinstalled in place, no reconnect


def test_rospec_stopped_by_the_reader_is_seen_at_its_end_event_and_restarted(
        make_rig: Any) -> None:
    rig = make_rig(verify_s=600.0)  # only the ROSpec event can tell, within this test
    wait_until(lambda: rig.online() and rig.sink.count() > 50, "reading")
    assert rig.sim.stats.rospec_events >= 1  # the start event, asked for in SET_READER_CONFIG
    starts = rig.sim.stats.requests.get("START_ROSPEC", 0)
    mark = len(rig.sink.anomalies)
    rig.sim.stop_rospec()
    wait_until(lambda: rig.sim.stats.requests.get("START_ROSPEC", 0) > starts, "a restart")
    wait_until(lambda: rig.online() and rig.sim.inventorying, "reading again")
    before = rig.sink.count()
    wait_until(lambda: rig.sink.count() > before + 50, "reads resuming")
    assert "rospec_not_started" in {k for _, k, _ in rig.sink.anomalies[mark:]}
    assert rig.sim.stats.connections == 1


def test_reader_that_never_starts_is_connected_not_reading(make_rig: Any) -> None:
    """START_ROSPEC accepted but the ROSpec never becomes Active: never called online."""
    rig = make_rig(quirks=ReaderQuirks(needs_start_rospec=True), not_reading_reconnect_s=30.0)
    rig.sim.refuse_start = True
    wait_until(lambda: rig.driver.state is ReaderState.CONNECTED_NOT_READING,
               "connected_not_reading")
    wait_until(lambda: rig.sim.stats.requests.get("START_ROSPEC", 0) >= 3, "retries")
    assert ReaderState.ONLINE not in [st for _, st, _, _ in rig.sink.states]
    assert rig.sink.count() == 0


def test_rfidd_sim_quirks_option_as_a_new_user_would() -> None:
    """`rfidd-sim llrp --quirks needs-start-rospec`: the driver reads within seconds."""
    scenario = Path(__file__).resolve().parents[2] / "simulator" / "scenarios" / "demo-store.toml"
    proc = subprocess.Popen(
        [sys.executable, "-m", "simulator.cli", "llrp", "--scenario", str(scenario), "--port",
         "0", "--reader", "floor-1", "--quirks", "needs-start-rospec,no-get-rospecs"],
        stdout=subprocess.PIPE, text=True)
    sink = RecordingSink()
    driver: LlrpReader | None = None
    try:
        assert proc.stdout is not None
        name, address = proc.stdout.readline().split()
        assert name == "floor-1"
        port = int(address.rsplit(":", 1)[1])
        driver = LlrpReader("floor-1", "127.0.0.1", {"port": port, "keepalive_s": 0.5,
                                                     "report_timeout_ms": 100},
                            [1, 2, 3, 4], sink, disconnect_timeout_s=0.5)
        driver.start()
        wait_until(lambda: len(sink.epcs()) >= 20, "reads from the quirky reader", timeout=8)
        assert driver.state is ReaderState.ONLINE
        assert {"get_rospecs_unsupported"} <= sink.anomaly_kinds()
    finally:
        if driver is not None:
            driver.stop(timeout=5)
        proc.terminate()
        proc.wait(10)


def test_tid_read_tells_a_cloned_tag_apart(make_rig: Any) -> None:
    """An AccessSpec reads each chip's TID; a second chip carrying the same EPC shows."""
    cloned = EPCS[1][3]
    rig = make_rig(field={1: EPCS[1][:10]}, clones=(cloned,), read_tid=True)

    def tids() -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for r in list(rig.sink.reads):
            if r.tid is not None:
                out.setdefault(r.epc, set()).add(r.tid)
        return out

    wait_until(lambda: sum(len(t) for t in tids().values()) == 11,
               "10 tags and the clone, each with its TID")
    got = tids()
    assert len(got) == 10 and len(got[cloned]) == 2
    assert all(len(t) == 1 for e, t in got.items() if e != cloned)
    assert all(len(tid) == 24 and tid.startswith("E2801160") for t in got.values() for tid in t)
    assert rig.driver.info()["tid"] is True
    mark = len(rig.sink.reads)
    wait_until(lambda: len(rig.sink.reads) > mark + 50, "more reads")
    assert all(r.tid is not None for r in rig.sink.reads[mark:])  # every read, once asked


def test_reader_without_tid_support_reads_on_and_says_so(make_rig: Any) -> None:
    """`no-tid-read`: ADD_ACCESSSPEC refused. Reads go on without TIDs, counted once; the
    connection stays (a TID is a bonus, not a need)."""
    rig = make_rig(quirks=ReaderQuirks(no_tid_read=True), read_tid=True)
    wait_until(lambda: rig.online() and rig.sink.epcs() >= ALL, "reading")
    wait_until(lambda: "tid_read_refused" in rig.sink.anomaly_kinds(), "the refusal counted")
    assert rig.driver.info()["tid"] is False
    assert all(r.tid is None for r in rig.sink.reads)
    assert rig.sim.stats.connections == 1
