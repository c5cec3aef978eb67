"""Fixtures of the store-operations unit tests: each service built alone, on its collaborators."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opskit import CATALOG_CSV, SITE, feed, ingestor

from inventory.presence import PresenceTracker
from rfidd.config import Config
from rfidd.context import ServiceContext
from rfidd.health import DomainLock
from rfidd.metrics import Metrics
from rfidd.ops import CatalogService, ExitService, OpsSettings
from rfidd.store.db import open_database


@pytest.fixture
def ctx() -> Iterator[ServiceContext]:
    cfg = Config.model_validate({
        "site": {"id": SITE, "name": "Unit", "sgln": "urn:epc:id:sgln:3760001.00001.0",
                 "company_prefixes": ["3760001"]},
        "database": {"url": "sqlite://"},
        "mqtt": {"enabled": False},
        "http": {"enabled": False},
        "shrinkage": {"exit_alert_debounce_s": 60.0, "counts_before_suspected": 2},
        "zones": {"stockroom": {"kind": "stock"}, "floor": {"kind": "floor"},
                  "reception": {"kind": "reception"}, "exit": {"kind": "exit"}},
    })
    db = open_database(cfg.database.url)
    tracker = PresenceTracker(departure_s=300, move_margin_db=0, move_margin_decay_s=1)
    c = ServiceContext(cfg, db, Metrics(), tracker, DomainLock())
    ingestor(c)
    try:
        yield c
    finally:
        db.dispose()


@pytest.fixture
def settings() -> OpsSettings:
    return OpsSettings(loss_min_confidence=0.5)


@pytest.fixture
def catalog(ctx: ServiceContext) -> CatalogService:
    c = CatalogService(ctx)
    c.start()
    res = c.import_catalog_text(CATALOG_CSV, "csv", "catalog.csv")
    assert res["imported"] == 2 and not res["errors"]
    return c


@pytest.fixture
def exits(ctx: ServiceContext, catalog: CatalogService, settings: OpsSettings) -> ExitService:
    e = ExitService(ctx, catalog, settings)
    e.start()
    feed(ctx, e)
    return e
