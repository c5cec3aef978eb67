"""ReplenishmentService: what to bring from the stockroom to the floor, from where presence
says every item is now (stock zones vs floor and fitting-room zones, per product); with the
lifecycle books (`books`), sellable stock only: sold, awaiting collection, held, lent, in
repair and returned pieces do not count."""

from __future__ import annotations

from typing import TYPE_CHECKING

from inventory.replenishment import ReplenishmentLine, replenishment_list
from rfidd.config import ZoneKind
from rfidd.context import ServiceContext
from rfidd.ops import books as B
from rfidd.ops.catalog import CatalogService
from rfidd.ops.common import OpsError, zones_of_kind

if TYPE_CHECKING:
    from rfidd.lifecycle.service import LifecycleService


class ReplenishmentService:
    """The replenishment list (read-only: no state of its own)."""

    def __init__(self, ctx: ServiceContext, catalog: CatalogService,
                 books: LifecycleService | None = None) -> None:
        self.ctx = ctx
        self.catalog = catalog
        self.books = books
        self.stock_zones = zones_of_kind(ctx.config, ZoneKind.STOCK)
        self.floor_zones = zones_of_kind(ctx.config, ZoneKind.FLOOR, ZoneKind.FITTING)

    def replenishment(self, floor_min: int = 1) -> tuple[ReplenishmentLine, ...]:
        return self.replenishment_and_unbooked(floor_min)[0]

    def replenishment_and_unbooked(self, floor_min: int = 1
                                   ) -> tuple[tuple[ReplenishmentLine, ...], list[str]]:
        """(the list, the pieces on the shelves the books do not hold: left out of it, as the
        count leaves them out, and named apart so staff check them)."""
        if floor_min < 1:
            raise OpsError(400, "floor_min: must be >= 1")
        with self.ctx.tracker_lock:
            locations = [(r.epc, r.zone) for r in self.ctx.tracker.snapshot()]
            catalog = self.catalog.catalog
        gtin_of = self.catalog.gtin_of

        def ours(epc: str) -> str | None:
            g = gtin_of(epc)
            return g if g is not None and (not len(catalog) or g in catalog) else None

        with self.ctx.db.session() as s:
            sellable, unbooked = B.sellable(self.books, s, [e for e, z in locations
                                                    if z in self.stock_zones
                                                    or z in self.floor_zones])
        lines = replenishment_list(locations, gtin_of=ours, catalog=catalog,
                                   stock_zones=self.stock_zones, floor_zones=self.floor_zones,
                                   floor_min=floor_min, sellable=sellable)
        return lines, sorted(e for e in unbooked if ours(e) is not None)


__all__ = ["ReplenishmentService"]
