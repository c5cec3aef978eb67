"""The real sllurp client against the simulator over loopback, and pyllrp's client too."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from pyllrp import pyllrp
from pyllrp.LLRPConnector import LLRPConnector
from sllurp.llrp import LLRPReaderClient, LLRPReaderConfig

from simulator.llrp import SimulatedReader, StaticField
from simulator.llrp import codec as c
from simulator.llrp.testing import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

PLANTED = {
    1: [f"3034E57E0400194000{n:06X}" for n in range(1, 41)],
    3: [f"3034E57E04001B8000{n:06X}" for n in range(100, 125)],
}
SELECTOR = {"EnableAntennaID": True, "EnablePeakRSSI": True, "EnableFirstSeenTimestamp": True,
            "EnableTagSeenCount": True}


@pytest.fixture
def reader() -> Iterator[SimulatedReader]:
    sim = SimulatedReader("sim", StaticField.of_hex(PLANTED, rssi_mean_dbm=-52.0),
                          antennas=[1, 3], reads_per_s=1000, seed=3)
    sim.start()
    yield sim
    sim.stop()


class Collector:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reports: list[list[dict[str, Any]]] = []

    def __call__(self, _client: Any, tags: list[dict[str, Any]]) -> None:
        with self.lock:
            self.reports.append(list(tags))

    def tags(self) -> list[dict[str, Any]]:
        with self.lock:
            return [t for r in self.reports for t in r]


def connect(port: int, **cfg: Any) -> tuple[LLRPReaderClient, Collector]:
    config = {"antennas": [1, 3], "tag_content_selector": SELECTOR, **cfg}
    client = LLRPReaderClient("127.0.0.1", port, LLRPReaderConfig(config))
    got = Collector()
    client.add_tag_report_callback(got)
    client.connect()
    return client, got


def test_sllurp_inventories_every_planted_epc(reader: SimulatedReader) -> None:
    client, got = connect(reader.port, report_every_n_tags=20, report_timeout_ms=200)
    try:
        want = {(e.lower(), ant) for ant, epcs in PLANTED.items() for e in epcs}
        assert wait_until(lambda: want <= {(t["EPC-96"].decode(), t["AntennaID"])
                                           for t in got.tags()}, 10)
    finally:
        client.disconnect(timeout=3)
    tags = got.tags()
    assert all(-80 <= t["PeakRSSI"] <= -25 for t in tags)
    assert all(t["TagSeenCount"] >= 1 and t["FirstSeenTimestampUTC"] > 1e15 for t in tags)
    # report_every_n_tags honoured: reports of exactly N entries (65 tags in the field > 20)
    sizes = [len(r) for r in got.reports]
    assert max(sizes) == 20 and sizes.count(20) >= len(sizes) - 2
    assert reader.stats.tags_reported >= len(tags)
    assert reader.stats.requests["ADD_ROSPEC"] == 1 and reader.stats.requests["ENABLE_ROSPEC"] == 1
    assert wait_until(lambda: not reader.connected, 5)  # polite disconnect closed the link


def test_keepalives_at_the_configured_period_and_acked(reader: SimulatedReader) -> None:
    reader.hold()
    client, _ = connect(reader.port, report_every_n_tags=10, keepalive_interval=100)
    try:
        assert wait_until(lambda: reader.stats.keepalive_acks >= 5, 10)
        # 5 keepalives need ~0.5 s at 100 ms, not the 60 s default: the period was honoured
        assert reader.stats.keepalives_sent >= reader.stats.keepalive_acks
    finally:
        client.disconnect(timeout=3)


def test_second_client_refused_with_connection_attempt_event(reader: SimulatedReader) -> None:
    client, _ = connect(reader.port, report_every_n_tags=10)
    try:
        assert wait_until(lambda: reader.inventorying, 5)
        with socket.create_connection(("127.0.0.1", reader.port), timeout=5) as s:
            data = b""
            while len(data) < c.HEADER_LEN or len(data) < c.decode_header(data).length:
                chunk = s.recv(4096)
                assert chunk, "closed before the event arrived"
                data += chunk
            assert s.recv(10) == b""  # then the reader closes the refused connection
        msg = pyllrp.UnpackMessage(pyllrp.bitstring.ConstBitStream(bytes=data))
        event = msg.getFirstParameterByClass(pyllrp.ConnectionAttemptEvent_Parameter)
        assert event.Status == pyllrp.ConnectionAttemptStatusType.Failed_A_Client_Initiated_Connection_Already_Exists  # noqa: E501
        assert reader.stats.refused == 1 and reader.connected
    finally:
        client.disconnect(timeout=3)


def test_pyllrp_client_conformance(reader: SimulatedReader) -> None:
    """pyllrp's own client (independent encoder and decoder) runs a full inventory."""
    conn = LLRPConnector()
    conn.connect("127.0.0.1", reader.port)
    try:
        caps = conn.transact(pyllrp.GET_READER_CAPABILITIES_Message(RequestedData=0))
        assert caps.success()
        gdc = caps.getFirstParameterByClass(pyllrp.GeneralDeviceCapabilities_Parameter)
        assert gdc.MaxNumberOfAntennaSupported >= 3
        assert conn.transact(pyllrp.GET_READER_CONFIG_Message(RequestedData=0)).success()
        assert conn.transact(pyllrp.DELETE_ROSPEC_Message(ROSpecID=0)).success()
        add = pyllrp.GetBasicAddRospecMessage(ROSpecID=123, antennas=[1, 3])
        assert conn.transact(add).success()
        # ROSpecID 0 is reserved: the reader must refuse it with a status, not die
        bad = pyllrp.GetBasicAddRospecMessage(ROSpecID=0, antennas=[1])
        assert not conn.transact(bad).success()
        tags: list[dict[str, Any]] = []
        done = threading.Event()

        def on_report(_conn: Any, msg: Any) -> None:
            tags.extend(msg.getTagData())
            if len({pyllrp.HexFormatToStr(t["EPC"]) for t in tags}) >= 65:
                done.set()

        conn.addHandler(pyllrp.RO_ACCESS_REPORT_Message, on_report)
        assert conn.transact(pyllrp.GetEnableRospecMesssage(MessageID=None, ROSpecID=123)).success()
        start = pyllrp.START_ROSPEC_Message(ROSpecID=123)
        assert conn.transact(start).success()
        conn.startListener()
        assert done.wait(10)
        conn.stopListener()
        assert conn.transact(pyllrp.STOP_ROSPEC_Message(ROSpecID=123)).success()
        assert conn.transact(pyllrp.DISABLE_ROSPEC_Message(ROSpecID=123)).success()
        assert conn.transact(pyllrp.DELETE_ROSPEC_Message(ROSpecID=123)).success()
    finally:
        response = conn.disconnect()
    assert response is not None and response.success()  # CLOSE_CONNECTION_RESPONSE
    want = {e for epcs in PLANTED.values() for e in epcs}
    assert {pyllrp.HexFormatToStr(t["EPC"]).zfill(24) for t in tags} == want
    assert {t["AntennaID"] for t in tags} == {1, 3}
