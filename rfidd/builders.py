"""Builders the composition root (rfidd/app.py) calls: each builds one group of services on a
`ServiceContext` and wires them to each other; app.py wires the groups to the daemon (ingest,
scheduler, HTTP API). Nothing here is started or registered on its own.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from rfidd.context import ServiceContext
from rfidd.health import ServiceUnavailable
from rfidd.lifecycle.service import LifecycleService
from rfidd.ops import (
    CatalogService,
    CountingService,
    ExitService,
    OpsSettings,
    ReceptionService,
    ReplenishmentService,
    Schedules,
)
from rfidd.ops import register_routes as register_ops_routes
from rfidd.pipeline import BatchComponent
from rfidd.web.server import WebServer

log = logging.getLogger("rfidd.ops")


@dataclass(frozen=True)
class OpsServices:
    """The store-operations services of a daemon, one job each (see rfidd/ops/)."""

    catalog: CatalogService
    reception: ReceptionService
    exits: ExitService
    counting: CountingService
    replenishment: ReplenishmentService
    schedules: Schedules

    def start(self) -> None:
        """The catalog first: receptions resumed and counts need its products."""
        self.catalog.start()
        self.exits.start()
        self.counting.start()
        self.reception.start()

    def stop(self) -> None:
        """Only the loss tracker has state to save; sessions stay open in the database."""
        self.exits.stop()

    def components(self) -> tuple[BatchComponent, ...]:
        """The services the ingest feeds with every batch."""
        return (self.reception, self.exits)

    def register_routes(self, api: WebServer) -> None:
        """The /api/v1/ops routes, each on the service that owns it."""
        register_ops_routes(api, catalog=self.catalog, reception=self.reception,
                            counting=self.counting, schedules=self.schedules,
                            exits=self.exits, replenishment=self.replenishment)


def build_ops(ctx: ServiceContext, settings: OpsSettings | None = None,
              books: LifecycleService | None = None) -> OpsServices:
    """Build the store-operations services on `ctx` (each registers its own ingest hooks and
    HQ commands); start them with `.start()`, add their jobs with `schedules.attach_scheduler`.
    `books`: the lifecycle service, when the daemon runs one (counts, exits, shrinkage and
    replenishment then follow the books: rfidd/ops/books.py)."""
    settings = settings or OpsSettings()
    catalog = CatalogService(ctx)
    reception = ReceptionService(ctx, catalog, settings,
                                 authenticity=books.authenticity if books else None)
    exits = ExitService(ctx, catalog, settings, books=books)
    counting = CountingService(ctx, catalog, exits, settings, books=books)

    skipping: list[int] = [0]  # ticks skipped in a row: one warning per outage, not per tick

    def ops_tick() -> None:
        """The periodic ops job: live counts and their timed stops, then the reception rules.
        When the store's state is busy (a long staff commit, the database down) the tick is
        skipped, not a traceback: counted, logged once per outage, and the next one, a second
        later, does the same work (a due count stays due, an open reception stays open)."""
        try:
            counting.tick()
            reception.tick()
        except ServiceUnavailable as exc:
            ctx.metrics.ops_ticks_skipped.inc()
            if skipping[0] == 0:
                log.warning("ops tick skipped until the store's state is available: %s", exc)
            skipping[0] += 1
            return
        if skipping[0]:
            log.info("ops tick done again after %d skipped", skipping[0])
            skipping[0] = 0

    schedules = Schedules(ctx, counting.start_count, ops_tick, settings,
                          publish_shrinkage=lambda a, b: exits.shrinkage(a, b, publish=True),
                          busy=lambda: counting.busy() or reception.busy())
    counting.on_active = reception.on_active = schedules.wake_tick
    return OpsServices(catalog, reception, exits, counting,
                       ReplenishmentService(ctx, catalog, books=books), schedules)
