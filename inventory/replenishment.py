"""Replenishment: what to bring from the stockroom to the sales floor.

A product variant (SKU x size x colour) with sellable stock in the stockroom and none on the
floor is a lost sale waiting to happen; `floor_min` raises the bar for variants that should
show more than one piece. Built from item locations (presence), so it is only as fresh as the
last reads.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from inventory.catalog import Product

GtinOf = Callable[[str], str | None]


@dataclass(frozen=True, slots=True)
class ReplenishmentLine:
    sku: str
    size: str
    colour: str
    name: str | None
    category: str | None
    gtins: tuple[str, ...]
    stock_qty: int
    floor_qty: int
    suggested: int  # pieces to bring out: up to floor_min, never more than the stockroom has

    def to_dict(self) -> dict[str, Any]:
        return {
            "sku": self.sku, "size": self.size, "colour": self.colour, "name": self.name,
            "category": self.category, "gtins": list(self.gtins), "stock_qty": self.stock_qty,
            "floor_qty": self.floor_qty, "suggested": self.suggested,
        }


def replenishment_list(
    locations: Mapping[str, str] | Iterable[tuple[str, str]],
    *,
    gtin_of: GtinOf,
    catalog: Mapping[str, Product],
    stock_zones: Iterable[str],
    floor_zones: Iterable[str],
    floor_min: int = 1,
    sellable: Callable[[str], bool] | None = None,
) -> tuple[ReplenishmentLine, ...]:
    """Variants with stock in `stock_zones` and fewer than `floor_min` pieces in `floor_zones`.

    `locations` is the current zone of each item read (epc -> zone, or pairs). Only sellable
    stock counts: `sellable(epc)` False (sold, awaiting collection, held, lent, in repair,
    returned) keeps the piece out of both sides, so a client's ring awaiting collection is
    neither stock to bring out nor the display piece. Items with no GTIN are ignored; GTINs
    missing from the catalog form their own variant named by GTIN.
    Sorted by category, SKU, size, colour.
    """
    if floor_min < 1:
        raise ValueError("floor_min must be >= 1")
    stock, floor = frozenset(stock_zones), frozenset(floor_zones)
    if stock & floor:
        raise ValueError(f"zones both stockroom and floor: {sorted(stock & floor)}")
    pairs = locations.items() if isinstance(locations, Mapping) else locations
    stock_by_gtin: Counter[str] = Counter()
    floor_by_gtin: Counter[str] = Counter()
    for epc, zone in pairs:
        if zone in stock:
            target = stock_by_gtin
        elif zone in floor:
            target = floor_by_gtin
        else:
            continue
        if sellable is not None and not sellable(epc):
            continue
        g = gtin_of(epc)
        if g is not None:
            target[g] += 1

    Key = tuple[str, str, str]
    variants: dict[Key, list[str]] = {}
    products: dict[Key, Product | None] = {}
    for g in stock_by_gtin.keys() | floor_by_gtin.keys():
        p = catalog.get(g)
        key = (p.sku, p.size, p.colour) if p is not None else (f"GTIN {g}", "", "")
        variants.setdefault(key, []).append(g)
        products.setdefault(key, p)

    lines = []
    for key, gtins in variants.items():
        s = sum(stock_by_gtin[g] for g in gtins)
        f = sum(floor_by_gtin[g] for g in gtins)
        if s > 0 and f < floor_min:
            p = products[key]
            lines.append(
                ReplenishmentLine(
                    sku=key[0], size=key[1], colour=key[2],
                    name=p.name if p else None, category=p.category if p else None,
                    gtins=tuple(sorted(gtins)), stock_qty=s, floor_qty=f,
                    suggested=min(s, floor_min - f),
                )
            )
    lines.sort(key=lambda ln: (ln.category or "", ln.sku, ln.size, ln.colour))
    return tuple(lines)
