"""ExitService: exit and loss. Unsold items read at an exit raise an alert; items a count
keeps missing become suspected losses (the loss tracker), reinstated when seen again; the
shrinkage report puts both next to the sales of the period.

Threads: the change hook and the exit read hook run on the ingest thread, inside the batch's
transaction; API calls run on theirs. The loss tracker is guarded by the domain-state lock
(ctx.tracker_lock), the exit monitor by its own lock.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session

from inventory.counting import CountResult
from inventory.epc import DecodedEpc
from inventory.events import stable_event_id
from inventory.presence import ChangeKind, PresenceChange
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
from rfidd.store import repo

log = logging.getLogger("rfidd.ops")


class ExitService:
    """Exit alerts, the loss tracker and the shrinkage report (see the module docstring)."""

    def __init__(self, ctx: ServiceContext, catalog: CatalogService,
                 settings: OpsSettings | None = None) -> None:
        self.ctx = ctx
        self.catalog = catalog
        self.settings = settings or OpsSettings()
        cfg = ctx.config
        self.site_id = cfg.site.id
        self.exit_zones = zones_of_kind(cfg, ZoneKind.EXIT)
        self._lock = ctx.tracker_lock  # the domain-state lock: taken before any transaction
        self._exit_lock = threading.Lock()
        self.may_leave: Callable[[str], bool] | None = None
        self.loss = LossTracker(cfg.shrinkage.counts_before_suspected,
                                min_confidence=self.settings.loss_min_confidence)
        debounce = self.settings.exit_debounce_s
        self.exit_monitor = ExitMonitor(
            self.exit_zones, is_sold=self._is_sold,
            debounce_s=cfg.shrinkage.exit_alert_debounce_s if debounce is None else debounce)
        self.hook_errors = 0
        ctx.change_hooks.append(self._on_changes)
        # Exit gates: a tag passes too fast, or too close to the floor antennas, to settle in
        # the exit zone; every read there counts (the monitor debounces per item).
        ctx.watch_reads(self.exit_zones, self._on_exit)

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

    def _is_sold(self, epc: str) -> bool:
        """May this item leave without an alert? The daemon plugs in the lifecycle's answer
        (`may_leave`: sold, lent, shipped, a customer's repair); alone, ops knows sales only."""
        if self.may_leave is not None:
            return self.may_leave(epc)
        with self.ctx.db.session() as s:
            return store.dispositions(s, [epc]).get(epc) == store.SOLD

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

    # -- ingest hooks ------------------------------------------------------------------------
    def _on_changes(self, s: Session, changes: list[PresenceChange],
                    decoded: dict[str, DecodedEpc]) -> None:
        """Feed the loss tracker and the exit monitor; exit alerts are staged in the ingest
        batch's transaction. An error is counted in hook_errors and re-raised: the ingest
        rolls back this hook's savepoint and keeps the rest of the batch."""
        try:
            exits: list[tuple[str, str, float]] = []
            present: list[str] = []
            for c in changes:
                if c.kind is ChangeKind.DEPARTED or c.zone is None:
                    continue
                present.append(c.epc)
                if c.zone in self.exit_zones:
                    exits.append((c.epc, c.zone, c.at))
            with self._lock:
                for e in present:
                    if self.loss.seen(e):
                        log.info("ops: %s suspected lost, seen again: reinstated", e)
            if exits:
                self._on_exit(s, exits)
        except Exception:
            self.hook_errors += 1
            log.exception("ops: change hook failed (batch of %d changes skipped by ops)",
                          len(changes))
            raise  # the ingest rolls back this hook's savepoint

    def _on_exit(self, s: Session, reads: list[tuple[str, str, float]]) -> None:
        """Unsold items in an exit zone: alert + entering_exiting event, staged in the
        transaction of the reads that saw them."""
        with self._exit_lock:
            alerts: list[ExitAlert] = self.exit_monitor.observe_many(reads)
            if not alerts:
                return
            cfg = self.ctx.config
            events = [a.to_event(cfg.zone_read_point(a.zone)) for a in alerts]
            messages = [repo.Message(ALERT_STREAM, self.ctx.topic("alerts"),
                                     {**a.to_dict(), "site": self.site_id,
                                      **self.catalog.product(a.epc)},
                                     event_id=a.alert_id) for a in alerts]
            upserts = [repo.ItemUpsert(a.epc, biz_step="entering_exiting",
                                       disposition=events[i].disposition)
                       for i, a in enumerate(alerts)]
            self.ctx.stage(s, events, messages, upserts)
            for a in alerts:
                store.insert_exit_alert(s, a.alert_id, a.epc, a.zone, a.at)
        for a in alerts:
            self.ctx.metrics.alerts.labels("exit_unsold").inc()
            log.warning("ops: ALERT unsold item %s at exit %s", a.epc, a.zone)

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
        # Sold since it was suspected: not a loss after all.
        suspected = [x for x in suspected if disp.get(x.epc) != store.SOLD]

        def home(epc: str) -> str | None:
            z = zones.get(epc)
            return None if z in self.exit_zones else z

        report = shrinkage_report(
            start, end, suspected=suspected,
            exit_alerts=[ExitAlert(a, e, z, t) for a, e, z, t in alerts],
            sales_value=sales, currency=cur, catalog=catalog, gtin_of=self.catalog.gtin_of,
            home_zone_of=home)
        if publish:
            doc = {**report.to_dict(), "site": self.site_id}
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
