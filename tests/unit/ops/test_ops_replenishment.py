"""ReplenishmentService: stockroom -> floor from presence, catalog products only."""

from __future__ import annotations

import pytest
from opskit import BAG, SCARF, epc, read

from rfidd.context import ServiceContext
from rfidd.ops import CatalogService, OpsError, ReplenishmentService


def test_replenishment_from_presence(ctx: ServiceContext, catalog: CatalogService) -> None:
    service = ReplenishmentService(ctx, catalog)
    read(ctx, 1.0, [(epc(BAG, 1), "stockroom"), (epc(SCARF, 1), "stockroom"),
                    (epc(SCARF, 2), "floor"), (epc("03760001009996", 1), "stockroom")])
    lines = service.replenishment()
    assert [(ln.sku, ln.stock_qty, ln.floor_qty) for ln in lines] == [("BAG-1", 1, 0)]
    with pytest.raises(OpsError, match="floor_min"):
        service.replenishment(0)
