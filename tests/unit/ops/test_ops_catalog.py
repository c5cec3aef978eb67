"""CatalogService: imports (files, HQ command), product lookups, classification."""

from __future__ import annotations

import pytest
from opskit import BAG, SCARF, book, epc, hook

from inventory.presence import ChangeKind, PresenceChange
from rfidd.context import ServiceContext
from rfidd.ops import CatalogService, OpsError


def test_catalog_command_imports_good_rows_and_names_bad_fields(ctx: ServiceContext,
                                                                 catalog: CatalogService) -> None:
    assert "catalog" in ctx.command_handlers
    good = {"gtin": "03760001001037", "sku": "C-1", "name": "Cabas", "price": "10",
            "currency": "EUR"}
    bad = {**good, "gtin": "03760001001044", "price": "ten"}
    with pytest.raises(ValueError, match=r"record 1\] field 'price'"):
        ctx.command_handlers["catalog"]({"products": [good, bad]})
    assert catalog.catalog["03760001001037"].name == "Cabas"
    assert "03760001001044" not in catalog.catalog
    with pytest.raises(ValueError, match="products"):
        ctx.command_handlers["catalog"]("nope")
    with pytest.raises(OpsError, match="format"):
        catalog.import_catalog_text("", "xml", "x.xml")


def test_lookups_follow_the_catalog(ctx: ServiceContext, catalog: CatalogService) -> None:
    unlisted = epc("03760001009996", 1)
    assert catalog.record_of(epc(BAG, 1)) == "BAG-1"
    assert catalog.record_of(unlisted) is None  # a catalog exists: unlisted GTINs are not stock
    assert catalog.product(epc(SCARF, 3)) == {"gtin": SCARF, "sku": "BAG-2",
                                              "name": "Sac Céleste"}
    assert catalog.currency() == "EUR"
    ctx.command_handlers.clear()
    empty = CatalogService(ctx)  # before any import: every GTIN is a stock record
    assert empty.record_of(unlisted) == "03760001009996"
    assert empty.record_of("E2801160600002084F6F7A49") is None  # not a GS1 SGTIN


def test_start_loads_the_stored_catalog_and_tells_the_ingest(ctx: ServiceContext,
                                                             catalog: CatalogService) -> None:
    heard: list[frozenset[str] | None] = []
    ctx.catalog_listeners.append(heard.append)
    ctx.command_handlers.clear()
    again = CatalogService(ctx)
    again.start()
    assert set(again.catalog) == {BAG, SCARF} and heard == [frozenset({BAG, SCARF})]


def test_classification_counts_unknown_products(ctx: ServiceContext,
                                                catalog: CatalogService) -> None:
    book(ctx, {epc(BAG, 1): "floor", epc("03760001009996", 1): "floor"})
    res = catalog.classification()
    assert res["items"] == {"ours": 1, "unknown_product": 1}
    assert res["unknown_gtins"] == {"03760001009996": 1}


def test_whereabouts_say_where_an_item_is_or_was_last_seen(ctx: ServiceContext,
                                                           catalog: CatalogService) -> None:
    here, gone = epc(BAG, 11), epc(BAG, 12)
    hook(ctx, PresenceChange(ChangeKind.ARRIVED, here, "floor", None, 1000.0),
         PresenceChange(ChangeKind.ARRIVED, gone, "stockroom", None, 1000.0))
    hook(ctx, PresenceChange(ChangeKind.DEPARTED, gone, None, "stockroom", 1300.0))
    where = catalog.whereabouts([here, gone, epc(BAG, 13)])
    assert where[here].here == "floor" and where[here].zone == "floor"
    assert where[gone].here is None and where[gone].zone == "stockroom"
    assert where[gone].last_seen is not None
    assert epc(BAG, 13) not in where  # never read: the books do not know it
    assert catalog.whereabouts([]) == {}
