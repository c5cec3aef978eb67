"""Stopping the daemon (systemctl stop, the demo's end) must not log CRITICAL: sllurp logs
"Could not start session on reader" at FATAL for any READER_EVENT_NOTIFICATION that arrives
while it is not yet (or no longer) in session — e.g. the ROSpec's end event that a reader sends
as the driver stops it — and journald priority 2 pages whoever watches the store PC."""

from __future__ import annotations

import logging

import pytest
from waits import wait_until

from readers import supervise
from readers.base import ReaderState
from readers.llrp import LlrpReader
from simulator.llrp import IDENTITIES, SimulatedReader, StaticField
from simulator.llrp.testing import RecordingSink

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

EPCS = {1: [f"3034E57E0400194000{n:06X}" for n in range(10)]}


@pytest.mark.parametrize("held", [False, True])
@pytest.mark.parametrize("round_", range(2))
def test_a_reader_stopped_after_inventorying_logs_nothing_critical(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, round_: int,
        held: bool) -> None:
    monkeypatch.setattr(supervise, "BACKOFF_INITIAL_S", 0.05)
    monkeypatch.setattr(supervise, "POLL_S", 0.01)
    sim = SimulatedReader("door", StaticField.of_hex(EPCS), antennas=[1], reads_per_s=400,
                          identity=IDENTITIES["generic"], seed=5 + round_)
    sim.start()
    sink = RecordingSink()
    driver = LlrpReader("door", "127.0.0.1", {"port": sim.port, "keepalive_s": 0.5,
                                              "handshake_timeout_s": 3.0,
                                              "report_timeout_ms": 100},
                        [1], sink, disconnect_timeout_s=1.0)
    try:
        with caplog.at_level(logging.DEBUG):
            driver.start()
            wait_until(lambda: driver.state is ReaderState.ONLINE, "the reader online")
            wait_until(lambda: len(sink.epcs()) >= 5, "reads")
            if held:  # the demo holds the simulator's reads before it stops the daemon
                sim.hold(True)
            driver.stop(timeout=5)
    finally:
        driver.stop(timeout=5)
        sim.stop()
    loud = [r for r in caplog.records if r.levelno >= logging.CRITICAL]
    assert not loud, [(r.name, r.getMessage()) for r in loud]
