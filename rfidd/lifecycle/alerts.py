"""The alert workflow in the daemon: alerts stored with their state, staff steps, HQ updates.

Alerts are raised by the service that sees the fact (an exit read, a refused return), inside
the transaction of that fact (`raise_alert`). Staff acknowledge and resolve them (`acknowledge`,
`resolve`: CLI and API); each transition is written and queued for HQ on `alerts` in one
transaction. An exit alert resolved as a false alarm or recovered puts the item back on the
books as stock where it is now (the reinstate step), so the loss figures follow.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from prometheus_client import Counter
from sqlalchemy import select
from sqlalchemy.orm import Session

from inventory.alerts import (
    CLEARS_LOSS,
    Alert,
    AlertOutcome,
    AlertState,
    Resolution,
    acknowledge,
    resolve,
)
from inventory.events import stable_event_id
from rfidd.context import ServiceContext
from rfidd.lifecycle.counts import CountBooks
from rfidd.lifecycle.models import AlertRecord
from rfidd.store import repo

log = logging.getLogger("rfidd.alerts")

ACTIONS = ("acknowledge", "resolve")
RESULTS = ("accepted", "duplicate", "rejected")


class AlertNotFound(KeyError):
    pass


class AlertRejected(ValueError):
    """A workflow step that does not apply; the message names the alert's state."""


def _alert(r: AlertRecord) -> Alert:
    return Alert(
        alert_id=r.alert_id, kind=r.kind, epc=r.epc, zone=r.zone, raised_at=r.raised_at,
        home_zone=r.home_zone, state=AlertState(r.state), acknowledged_by=r.acknowledged_by,
        acknowledged_at=r.acknowledged_at, acknowledged_note=r.acknowledged_note,
        resolution=Resolution(r.resolution) if r.resolution else None,
        resolved_by=r.resolved_by, resolved_at=r.resolved_at, resolved_note=r.resolved_note)


def _write(r: AlertRecord, a: Alert) -> None:
    r.state = a.state.value
    r.acknowledged_by, r.acknowledged_at = a.acknowledged_by, a.acknowledged_at
    r.acknowledged_note = a.acknowledged_note
    r.resolution = a.resolution.value if a.resolution else None
    r.resolved_by, r.resolved_at, r.resolved_note = a.resolved_by, a.resolved_at, a.resolved_note


class AlertWorkflow:
    """Given the context and the count books (for reinstating); `clock` for tests."""

    def __init__(self, ctx: ServiceContext, counts: CountBooks,
                 zone_now: Callable[[str], str | None], *,
                 clock: Callable[[], float] = time.time) -> None:
        self.ctx = ctx
        self.site = ctx.config.site.id
        self.counts = counts
        self.zone_now = zone_now
        self.clock = clock
        self._lock = ctx.tracker_lock
        self.steps = Counter("alert_workflow_steps", "Alert workflow steps, by action and result.",
                             ["action", "result"], namespace="rfidd",
                             registry=ctx.metrics.registry)
        for a in ACTIONS:
            for r in RESULTS:
                self.steps.labels(a, r)

    # -- raising (in the caller's transaction) -----------------------------------------------
    @staticmethod
    def raise_alert(s: Session, alert_id: str, kind: str, epc: str, zone: str | None,
                    at: float, home_zone: str | None = None,
                    detail: dict[str, Any] | None = None) -> None:
        if s.get(AlertRecord, alert_id) is None:
            s.add(AlertRecord(alert_id=alert_id, kind=kind, epc=epc, zone=zone,
                              home_zone=home_zone, raised_at=at, state=AlertState.OPEN.value,
                              detail=json.dumps(detail) if detail else None))
            s.flush()

    # -- staff steps -------------------------------------------------------------------------
    def acknowledge(self, alert_id: str, who: str, note: str | None = None) -> dict[str, Any]:
        return self._step("acknowledge", alert_id,
                          lambda a, now: acknowledge(a, who, now, note))

    def resolve(self, alert_id: str, resolution: str, who: str,
                note: str | None = None) -> dict[str, Any]:
        return self._step("resolve", alert_id,
                          lambda a, now: resolve(a, resolution, who, now, note))

    def _step(self, action: str, alert_id: str,
              fn: Callable[[Alert, float], AlertOutcome]) -> dict[str, Any]:
        now = self.clock()
        with self._lock, self.ctx.transaction() as s:
            row = s.get(AlertRecord, alert_id)
            if row is None:
                raise AlertNotFound(alert_id)
            out = fn(_alert(row), now)
            if not out.accepted:
                self.steps.labels(action, "rejected").inc()
                raise AlertRejected(out.reason or f"{action} rejected")
            if out.duplicate:
                self.steps.labels(action, "duplicate").inc()
                return {**out.alert.to_dict(), "duplicate": True}
            a = out.alert
            reinstated = None
            if a.resolution in CLEARS_LOSS and a.kind == "exit_unsold":
                zone = self.zone_now(a.epc) or a.home_zone
                ok, why = self.counts.reinstate(s, a.epc, zone, now, txn=a.alert_id)
                reinstated = {"reinstated": ok, "zone": zone, "reason": why}
            _write(row, a)
            payload = {**a.to_dict(), "type": "alert_update", "alert_type": a.kind,
                       "site": self.site}
            if reinstated is not None:
                payload["books"] = reinstated
            self.ctx.stage(s, messages=[repo.Message(
                "alert", "alerts", payload,
                event_id=stable_event_id(self.site, "alert-update", a.alert_id, a.state.value))])
        self.steps.labels(action, "accepted").inc()
        log.info("alert %s %s by %s", alert_id, a.state.value,
                 a.resolved_by or a.acknowledged_by)
        return {**payload, "duplicate": False}

    # -- reads -------------------------------------------------------------------------------
    def get(self, alert_id: str) -> dict[str, Any]:
        with self.ctx.db.session() as s:
            row = s.get(AlertRecord, alert_id)
            if row is None:
                raise AlertNotFound(alert_id)
            return self._doc(row)

    def list(self, state: str | None = None, kind: str | None = None,
             limit: int = 200) -> list[dict[str, Any]]:
        if state is not None and state not in {x.value for x in AlertState}:
            raise ValueError(f"state: {state!r} is not one of "
                             f"{', '.join(x.value for x in AlertState)}")
        q = select(AlertRecord).order_by(AlertRecord.raised_at.desc()).limit(limit)
        if state is not None:
            q = q.where(AlertRecord.state == state)
        if kind is not None:
            q = q.where(AlertRecord.kind == kind)
        with self.ctx.db.session() as s:
            return [self._doc(r) for r in s.scalars(q)]

    @staticmethod
    def _doc(r: AlertRecord) -> dict[str, Any]:
        d = _alert(r).to_dict()
        if r.detail:
            d["detail"] = json.loads(r.detail)
        return d

    @staticmethod
    def resolutions(s: Session, alert_ids: Sequence[str]) -> dict[str, str | None]:
        """alert id -> resolution (None: unresolved) for the shrinkage report."""
        out: dict[str, str | None] = {}
        ids = list(alert_ids)
        for i in range(0, len(ids), 500):
            out.update((a, r) for a, r in s.execute(
                select(AlertRecord.alert_id, AlertRecord.resolution)
                .where(AlertRecord.alert_id.in_(ids[i:i + 500]))))
        return out

    @staticmethod
    def home_zones(s: Session, alert_ids: Sequence[str]) -> dict[str, str | None]:
        ids = list(alert_ids)
        out: dict[str, str | None] = {}
        for i in range(0, len(ids), 500):
            out.update((a, z) for a, z in s.execute(
                select(AlertRecord.alert_id, AlertRecord.home_zone)
                .where(AlertRecord.alert_id.in_(ids[i:i + 500]))))
        return out
