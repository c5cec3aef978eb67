"""Replenishment list: stock in the stockroom, none (or too few) on the floor."""

from __future__ import annotations

from decimal import Decimal

import pytest

from inventory.catalog import Catalog, Product
from inventory.replenishment import replenishment_list

GA, GB, GC, GX = "80614141123458", "06291041500213", "00000096385074", "00614141123452"
CATALOG = Catalog([
    Product(GA, "SC-1", "Scarf", "U", "navy", "scarves", Decimal(450), "EUR"),
    Product(GB, "TO-1", "Tote", "M", "black", "bags", Decimal(1200), "EUR"),
    Product(GC, "TO-1", "Tote", "M", "black", "bags", Decimal(1200), "EUR"),  # same variant
])


def E(n: int) -> str:
    return f"3034257BF40C0E40{n:08X}"


GTIN = {E(1): GA, E(2): GA, E(3): GB, E(4): GC, E(5): GX, E(6): GA}


def test_variants_in_stock_and_absent_from_floor() -> None:
    locations = {E(1): "stock", E(2): "stock", E(3): "stock", E(4): "floor", E(5): "stock",
                 E(6): "pos", "FFFF0000": "stock"}
    lines = replenishment_list(locations, gtin_of=GTIN.get, catalog=CATALOG,
                               stock_zones=["stock"], floor_zones=["floor", "fitting"])
    assert [(ln.sku, ln.stock_qty, ln.floor_qty, ln.suggested) for ln in lines] == [
        (f"GTIN {GX}", 1, 0, 1),
        ("SC-1", 2, 0, 1),
    ]
    assert lines[1].name == "Scarf" and lines[1].gtins == (GA,)
    assert lines[0].name is None
    assert lines[1].to_dict()["category"] == "scarves"


def test_floor_min_and_pairs_input() -> None:
    pairs = [(E(1), "stock"), (E(2), "stock"), (E(6), "floor"), (E(3), "stock"), (E(4), "stock")]
    lines = replenishment_list(pairs, gtin_of=GTIN.get, catalog=CATALOG, stock_zones=["stock"],
                               floor_zones=["floor"], floor_min=3)
    got = {ln.sku: (ln.stock_qty, ln.floor_qty, ln.suggested, ln.gtins) for ln in lines}
    assert got == {"SC-1": (2, 1, 2, (GA,)), "TO-1": (2, 0, 2, (GC, GB))}


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="floor_min"):
        replenishment_list({}, gtin_of=GTIN.get, catalog=CATALOG, stock_zones=[], floor_zones=[],
                           floor_min=0)
    with pytest.raises(ValueError, match="both"):
        replenishment_list({}, gtin_of=GTIN.get, catalog=CATALOG, stock_zones=["a"],
                           floor_zones=["a"])
