"""20 simulated readers at full rate through the whole daemon: every read ingested, none lost."""

from __future__ import annotations

import pytest

from rfidd.bench_ingest import run

pytestmark = pytest.mark.integration


def test_twenty_readers_at_full_rate_all_ingested() -> None:
    f = run(readers=20, rate=1100.0, seconds=3.0, items_per_zone=50, sim_process=True)
    assert f.sent > 20 * 1000  # the simulators really ran near full rate for a few seconds
    assert f.ingested == f.sent, f
    assert f.dropped_batches == 0
    assert f.items_located == f.items == 1000
