"""ExitService: exit and loss. Unsold items read at an exit raise an alert; items a count
keeps missing become suspected losses (the loss tracker), reinstated when seen again; the
shrinkage report puts both next to the sales of the period.

An ingest component (rfidd.pipeline): it watches every read of the exit zones (a tag passes
a gate too fast to settle there), decides from the books in the batch view whether each item
may leave (inventory.lifecycle.may_leave), and plans the alerts; the exit monitor's debounce and
the loss tracker's reinstatements move only once the batch committed, so a retried commit loses
no alert. API calls run on their own threads; the loss tracker and the exit monitor are guarded
by the domain-state lock (ctx.tracker_lock).

With the lifecycle books (`books`), each alert enters the alert workflow with the item's home
zone and the books record the exit (a sold piece awaiting collection stays the client's), and
the shrinkage report follows the resolutions, net sales and the catalog's costs.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from inventory.counting import CountResult
from inventory.events import stable_event_id
from inventory.lifecycle import Status, may_leave
from inventory.presence import ChangeKind
from inventory.reports import shrinkage_csv
from inventory.shrinkage import (
    ExitAlert,
    ExitMonitor,
    LossTracker,
    LossUpdate,
    ShrinkageReport,
    shrinkage_report,
)
from rfidd.config import ZoneKind
from rfidd.context import ServiceContext
from rfidd.ops import books as B
from rfidd.ops import store
from rfidd.ops.catalog import CatalogService
from rfidd.ops.common import (
    ALERT_STREAM,
    LOSS_STATE_KEY,
    REPORT_STREAM,
    OpsError,
    OpsSettings,
    zones_of_kind,
)
from rfidd.pipeline import BatchPlan, BatchView
from rfidd.store import repo

if TYPE_CHECKING:
    from rfidd.lifecycle.service import LifecycleService

log = logging.getLogger("rfidd.ops")


class ExitService:
    """Exit alerts, the loss tracker and the shrinkage report (see the module docstring)."""

    def __init__(self, ctx: ServiceContext, catalog: CatalogService,
                 settings: OpsSettings | None = None,
                 books: LifecycleService | None = None) -> None:
        self.ctx = ctx
        self.catalog = catalog
        self.books = books
        self.settings = settings or OpsSettings()
        cfg = ctx.config
        self.site_id = cfg.site.id
        self.exit_zones = zones_of_kind(cfg, ZoneKind.EXIT)
        self._lock = ctx.tracker_lock  # the domain-state lock: taken before any transaction
        self.loss = LossTracker(cfg.shrinkage.counts_before_suspected,
                                min_confidence=self.settings.loss_min_confidence)
        debounce = self.settings.exit_debounce_s
        self.exit_monitor = ExitMonitor(
            self.exit_zones, is_sold=lambda _epc: False,
            debounce_s=cfg.shrinkage.exit_alert_debounce_s if debounce is None else debounce)
        self.watched_zones = self.exit_zones

    def start(self) -> None:
        """Load the loss tracker's state (a bad one is logged and started afresh)."""
        with self.ctx.db.session() as s:
            state = store.load_state(s, LOSS_STATE_KEY)
        if state is not None:
            try:
                self.loss.load_state(state)
            except ValueError as exc:
                log.error("ops: %s; starting the loss tracker afresh", exc)
        log.info("ops: %d suspected losses", len(self.loss.suspected()))

    def stop(self) -> None:
        """Persist the loss tracker."""
        try:
            with self._lock, self.ctx.transaction() as s:
                store.save_state(s, LOSS_STATE_KEY, self.loss.to_state())
        except Exception:
            log.exception("ops: saving the loss tracker state failed")

    # -- the loss tracker, for counts (the caller holds the domain-state lock) ------------------
    def loss_state(self) -> dict[str, Any]:
        """The loss tracker's state: saved with a count, restored if its commit fails."""
        return self.loss.to_state()

    def restore_loss_state(self, state: dict[str, Any]) -> None:
        self.loss.load_state(state)

    def record_count(self, result: CountResult, at: float) -> LossUpdate:
        """A finished count: items missed again become suspected, items found reinstated."""
        return self.loss.record_count(result, at=at)

    def save_loss_state(self, s: Session, now: float) -> None:
        """Stage the loss tracker's state in the caller's transaction."""
        store.save_state(s, LOSS_STATE_KEY, self.loss.to_state(), now)

    # -- ingest component ------------------------------------------------------------------
    name = "exits"

    def plan(self, view: BatchView) -> BatchPlan | None:
        """Exit alerts for the unsold items read at an exit (each read handled once), and the
        suspected losses seen again; nothing moves in memory before the commit."""
        present = [c.epc for c in view.changes
                   if c.kind is not ChangeKind.DEPARTED and c.zone is not None]
        exits = view.reads_in(self.exit_zones)
        with self._lock:
            seen_again = [e for e in present if self.loss.is_suspected(e)]
            alerts = self.exit_monitor.decide(
                exits, may_leave=lambda epc: may_leave(view.record(epc)))
        if not alerts and not seen_again:
            return None
        cfg = self.ctx.config
        events = [a.to_event(cfg.zone_read_point(a.zone)) for a in alerts]
        bodies = [{**a.to_dict(), "site": self.site_id, **self.catalog.product(a.epc)}
                  for a in alerts]
        messages = [repo.Message(ALERT_STREAM, self.ctx.topic("alerts"), body,
                                 event_id=a.alert_id) for a, body in zip(alerts, bodies,
                                                                          strict=True)]

        def kept(epc: str) -> bool:  # paid for: the client's item, not a suspected theft
            st = view.record(epc)
            return st is not None and st.status is Status.AWAITING_COLLECTION

        upserts = [repo.ItemUpsert(a.epc, biz_step="entering_exiting",
                                   disposition=ev.disposition)
                   for a, ev in zip(alerts, events, strict=True) if not kept(a.epc)]

        def write(s: Session) -> None:
            for a, body in zip(alerts, bodies, strict=True):
                B.record_exit(self.books, s, a.alert_id, a.epc, a.zone, a.at, body)

        def apply() -> None:
            with self._lock:
                self.exit_monitor.record(alerts)
                for e in seen_again:
                    if self.loss.seen(e):
                        log.info("ops: %s suspected lost, seen again: reinstated", e)
            for a in alerts:
                self.ctx.metrics.alerts.labels("exit_unsold").inc()
                log.warning("ops: ALERT unsold item %s at exit %s", a.epc, a.zone)

        return BatchPlan(events=events, messages=messages, upserts=upserts,
                         write=write if alerts else None, apply=apply)

    # -- reports -----------------------------------------------------------------------------
    def shrinkage(self, start: float, end: float, currency: str | None = None,
                  publish: bool = False) -> ShrinkageReport:
        if end <= start:
            raise OpsError(400, "until: must be after since")
        cur = currency or self.catalog.currency()
        with self._lock:
            suspected = list(self.loss.suspected())
            catalog = self.catalog.catalog
        with self.ctx.db.session() as s:
            alerts = store.exit_alerts(s, start, end)
            epcs = sorted({a[1] for a in alerts} | {x.epc for x in suspected})
            disp = store.dispositions(s, epcs)
            zones = store.item_zones(s, epcs)
            sales, _ = store.sales_value(s, start, end, catalog, cur)
            inputs = B.shrinkage_inputs(self.books, s, [a[0] for a in alerts], start, end,
                                        catalog, cur)
        # Sold since it was suspected: not a loss after all.
        suspected = [x for x in suspected if disp.get(x.epc) != store.SOLD]
        alert_of = {e: a for a, e, _z, _t in alerts}

        def home(epc: str) -> str | None:
            h = inputs.home_zones.get(alert_of.get(epc, ""))
            if h is not None:
                return h
            z = zones.get(epc)
            return None if z in self.exit_zones else z

        report = shrinkage_report(
            start, end, suspected=suspected,
            exit_alerts=[ExitAlert(a, e, z, t) for a, e, z, t in alerts],
            sales_value=sales, currency=cur, catalog=catalog, gtin_of=self.catalog.gtin_of,
            home_zone_of=home, resolutions=inputs.resolutions,
            returns_value=inputs.returns_value, cost_of=inputs.cost_of)
        if publish:
            # HQ buckets the report by the day of its period in the site's time zone
            doc = {**report.to_dict(), "site": self.site_id,
                   "timezone": self.ctx.config.site.timezone}
            msg = repo.Message(REPORT_STREAM, self.ctx.topic("reports", "shrinkage"), doc,
                               event_id=stable_event_id(self.site_id, "shrinkage_report",
                                                        start, end, len(report.items),
                                                        str(report.lost_value)))
            self.ctx.emit(messages=[msg])
        return report

    def shrinkage_csv(self, start: float, end: float, currency: str | None = None) -> str:
        return shrinkage_csv(self.shrinkage(start, end, currency))

    def suspected(self) -> dict[str, Any]:
        with self._lock:
            return {"suspected": [x.to_dict() for x in self.loss.suspected()],
                    "read_rates": {z: r.to_dict() for z, r in self.loss.read_rates().items()}}


__all__ = ["ExitService"]
