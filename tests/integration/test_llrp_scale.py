"""20 simulated readers at full rate, 20 supervised drivers: every reported tag is ingested."""

from __future__ import annotations

import time

import pytest

from readers import supervise
from readers.base import ReaderState
from readers.llrp import LlrpReader
from simulator.llrp import SimulatedReader, StaticField
from simulator.llrp.testing import RecordingSink, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

N_READERS = 20
RATE = 1100.0  # reads/s: the Gen2 air-interface ceiling of a real fixed reader


def test_twenty_readers_at_full_rate_all_ingested(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervise, "BACKOFF_INITIAL_S", 0.05)
    sims = []
    for i in range(N_READERS):
        field = StaticField.of_hex({ant: [f"30{i:02X}{ant:02X}E57E040019400000{n:04X}"
                                          for n in range(200)] for ant in (1, 2)})
        sims.append(SimulatedReader(f"r{i:02d}", field, antennas=[1, 2], reads_per_s=RATE,
                                    seed=i))
    sink = RecordingSink(keep_reads=False)
    drivers = []
    try:
        for sim in sims:
            sim.start()
            drivers.append(LlrpReader(sim.name, "127.0.0.1",
                                      {"port": sim.port, "report_every_n_tags": 100,
                                       "report_timeout_ms": 200, "keepalive_s": 5.0},
                                      [1, 2], sink))
        for d in drivers:
            d.start()
        assert wait_until(lambda: all(d.state is ReaderState.ONLINE for d in drivers), 30)
        start_count = sink.count()
        t0 = time.monotonic()
        time.sleep(3.0)  # let them run at full rate (no assertion on timing)
        elapsed = time.monotonic() - t0
        for sim in sims:
            sim.hold()

        def sent() -> int:
            return sum(s.stats.tags_reported for s in sims)

        # once generation is held, whatever the readers sent must all reach the sink (the
        # simulator counts a report just after sending it: compare per reader until stable)
        def settled() -> bool:
            return all(sink.count(s.name) == s.stats.tags_reported > 0 for s in sims)

        assert wait_until(settled, 30), (sink.count(), sent())
        time.sleep(0.3)
        assert settled() and sink.count() == sent()
        assert not sink.anomalies
        assert all(d.supervisor.reconnects == 0 for d in drivers)
        rate = (sink.count() - start_count) / elapsed
        print(f"\n{N_READERS} readers: {rate:,.0f} tag reports/s ingested")
    finally:
        for d in drivers:
            d.stop(timeout=5)
        for sim in sims:
            sim.stop()
