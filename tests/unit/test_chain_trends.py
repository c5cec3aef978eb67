"""HQ's count-accuracy trend (/chain, /chain/trends) from the counts the stores published."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rfidd.hq.chain_charts import accuracy_trend
from rfidd.hq.registry import register_site
from rfidd.hq.store import Batch, HqStore, SiteMessageRow

D0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
D1 = D0 + timedelta(days=1)


def _count(session: str, at: datetime, found: int, expected: int, **extra: Any) -> dict[str, Any]:
    return {"type": "count", "session_id": session, "finished_at": at.timestamp(),
            "totals": {"found": found, "expected": expected}, **extra}


def test_a_take_over_count_is_no_accuracy_day(tmp_path: Path) -> None:
    store = HqStore.open(f"sqlite:///{tmp_path / 'hq.db'}", known_sites_only=True)
    register_site(store.engine, "st-1", "Paris", D0)
    store.write_batch(Batch(site_messages=[
        # go-live: 310 pieces put on the books, none expected
        SiteMessageRow("st-1", "report/count", _count("t0", D0, 0, 0, adopt=True), D0),
        SiteMessageRow("st-1", "report/count", _count("c1", D1, 94, 95), D1),
    ]))
    t = accuracy_trend(store.engine)
    assert t.days == ["2026-11-03"]
    assert t.stores == {"Paris": [98.9]} and t.chain == [98.9]
