"""One lock order between the ingest thread and staff/HQ commands: no 'database is locked'
(SQLite) and no row-lock deadlock (PostgreSQL) when a sale lands during an ingest batch."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from fakes import make_ingestor
from sqlalchemy.orm import Session

import rfidd.store.db as dbmod
from inventory.epc import sgtin96_hex
from inventory.presence import PresenceTracker
from readers.base import TagRead
from rfidd.config import Config
from rfidd.context import ServiceContext
from rfidd.health import DomainLock
from rfidd.lifecycle import books
from rfidd.lifecycle.service import LifecycleService
from rfidd.metrics import Metrics
from rfidd.pipeline import BatchPlan, BatchView
from rfidd.store import repo
from rfidd.store.db import open_database


def test_sale_during_an_ingest_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dbmod, "SQLITE_BUSY_TIMEOUT_MS", 1000)  # a wrong order fails fast
    cfg = Config.model_validate({
        "site": {"id": "s1", "name": "U", "sgln": "urn:epc:id:sgln:3760001.00001.0",
                 "company_prefixes": ["3760001"]},
        "database": {"url": f"sqlite:///{tmp_path / 'r.db'}"},
        "mqtt": {"enabled": False}, "http": {"enabled": False},
        "zones": {"stockroom": {"kind": "stock"}, "floor": {"kind": "floor"}},
    })
    db = open_database(cfg.database.url)
    metrics = Metrics()
    tracker = PresenceTracker(300, 0, 1)
    ctx = ServiceContext(cfg, db, metrics, tracker, DomainLock())
    lc = LifecycleService(ctx)
    moving, sold = (sgtin96_hex("03760001001013", i, 7) for i in (1, 2))
    ctx.emit(items=[repo.ItemUpsert(e, seen_at=1.0, zone="stockroom",
                                    disposition="sellable_not_accessible")
                    for e in (moving, sold)])
    in_batch = threading.Event()

    class Slow:
        """Holds the batch's transaction open while the sale arrives."""

        name = "slow"
        watched_zones: frozenset[str] = frozenset()

        def plan(self, view: BatchView) -> BatchPlan:
            def write(s: Session) -> None:
                in_batch.set()
                time.sleep(0.5)

            return BatchPlan(write=write)

    ing, _ = make_ingestor(db, {("r1", 1): "floor", ("r1", 2): "stockroom"},
                           {"floor": "floor", "stockroom": "stock"}, lock=ctx.tracker_lock,
                           metrics=metrics, tracker=tracker,
                           books=lambda s, epcs: books.load_states(s, epcs, "s1"))
    ing.process([("r1", [TagRead(moving, "r1", 2, -50.0, 2.0)])])  # located in the stockroom
    # The next batch moves it to the floor (the lifecycle plans stocking) while the batch's
    # transaction is held open and a sale arrives: one lock order, no 'database is locked'.
    ing.add_component(Slow())
    ing.add_component(lc)
    t = threading.Thread(target=ing.process,
                         args=([("r1", [TagRead(moving, "r1", 1, -40.0, 10.0)])],))
    t.start()
    assert in_batch.wait(5)
    result = lc.handle("sale", {"txn": "R-1", "epcs": [sold]})
    t.join(10)
    assert not t.is_alive()
    assert result.rejected == 0, result.to_json()
    assert ing.stats.hook_errors == 0 and ing.stats.db_errors == 0
    assert tracker.zone_of(moving) == "floor"
    assert lc.item_state(moving)["status"] == "on_floor"  # type: ignore[index]
    db.dispose()
