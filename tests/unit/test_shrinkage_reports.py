"""Shrinkage and replenishment tables (inventory.reports)."""

from __future__ import annotations

from decimal import Decimal

from inventory.catalog import Catalog, Product
from inventory.replenishment import replenishment_list
from inventory.reports import (
    replenishment_csv,
    shrinkage_breakdown_rows,
    shrinkage_csv,
)
from inventory.shrinkage import SuspectedLoss, shrinkage_report

G1 = "80614141123458"
CAT = Catalog([Product(G1, "SC-1", "Scarf", "U", "navy", "scarves", Decimal("450.00"), "EUR")])


def E(n: int) -> str:
    return f"3034257BF40C0E40{n:08X}"


def test_shrinkage_tables() -> None:
    rep = shrinkage_report(
        0, 10, suspected=[SuspectedLoss(E(1), "stock", 2, 0.995, 1.0, 2.0)], exit_alerts=[],
        sales_value=Decimal(4500), currency="EUR", catalog=CAT, gtin_of=lambda e: G1,
    )
    lines = shrinkage_csv(rep).splitlines()
    assert lines[1] == f"{E(1)},suspected,{G1},SC-1,scarves,stock,450.00,0.995"
    assert shrinkage_breakdown_rows(rep, "zone") == (
        ["zone", "items", "confirmed", "suspected", "value"],
        [["stock", 1, 0, 1, Decimal("450.00")]],
    )


def test_replenishment_csv() -> None:
    lines = replenishment_list({E(1): "stock"}, gtin_of=lambda e: G1, catalog=CAT,
                               stock_zones=["stock"], floor_zones=["floor"])
    assert replenishment_csv(lines).splitlines() == [
        "category,sku,name,size,colour,stock_qty,floor_qty,suggested",
        "scarves,SC-1,Scarf,U,navy,1,0,1",
    ]
