"""The lifecycle service: every item transition of this site through `inventory.lifecycle`.

Commands (HQ over MQTT, the local HTTP API, the CLI through it) and presence changes (bench
commissioning, stockroom <-> floor) become `Transition`s applied to the item's *stored* state.
An accepted one writes, in one transaction, the new state (`lifecycle_items`, and the coarse
`items.biz_step/disposition` every service reads), the EPCIS event (journal + outbox) and any
message (ASN); a rejected one changes nothing, is counted in
`rfidd_lifecycle_rejections_total{step,reason}` and goes to HQ as an exception on `alerts`.

Idempotency: commands carry a business transaction id; (epc, step, txn) already applied is
answered as a duplicate and nothing is written, and the event ids are stable from the txn, so
even a replay racing the first application gives HQ a duplicate it drops.

Other writers of `items.disposition` (the store-operations reception) are honoured: an item
without lifecycle state, or whose disposition was changed by someone else since we last wrote
it, takes its state from `items.disposition` ("adoption").

Shipping to another site: the ASN goes on this site's `asn` topic (outbox, same transaction as
the shipping events). Sites never publish on each other's topics (a store's broker credentials
must not let it command other stores); HQ relays the ASN to the destination's `cmd/asn`
(reception) and `cmd/shipment` (lifecycle books the items as in transit here): see relay.py.
"""


from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Counter
from sqlalchemy import select
from sqlalchemy.orm import Session

from inventory.authenticity import TidCheck
from inventory.epcis import biz_transaction_uri
from inventory.events import ItemEvent, stable_event_id
from inventory.lifecycle import (
    NOTE_CODES,
    STOCK_STATUSES,
    ItemState,
    Lifecycle,
    Outcome,
    Status,
    Step,
    Transition,
)
from inventory.lifecycle import may_leave as _may_leave
from inventory.presence import ChangeKind, PresenceChange
from rfidd.config import ZoneKind
from rfidd.context import ServiceContext
from rfidd.lifecycle import commands as C
from rfidd.lifecycle import messages as M
from rfidd.lifecycle.alerts import AlertWorkflow
from rfidd.lifecycle.authenticity import INTAKE_POINTS, TagAuthenticity, TidSource
from rfidd.lifecycle.books import (
    Books,
    Held,
    describe,
    held,
    item_upserts,
    set_home_zones,
    write_rows,
)
from rfidd.lifecycle.commands import MQTT_COMMANDS, STEP_COMMANDS
from rfidd.lifecycle.commissioning import Commissioning
from rfidd.lifecycle.counts import CountBooks
from rfidd.lifecycle.models import CommissioningBind, CommissioningSession, LifecycleItem
from rfidd.lifecycle.results import REASONS, ApplyResult, ItemResult, reason_code
from rfidd.lifecycle.shipments import all_or_nothing, announce_shipment
from rfidd.pipeline import BatchPlan, BatchView
from rfidd.store import repo

log = logging.getLogger("rfidd.lifecycle")

ASN_STREAM = "asn"
ASN_TOPIC = "asn"

_SHIPPING = (Step.SHIP, Step.TRANSFER_OUT)
_SHELF_KINDS = (ZoneKind.STOCK, ZoneKind.FLOOR, ZoneKind.FITTING)
# The (step, note) children of rfidd_lifecycle_noted_total created at start.
_NOTED = ((Step.SELL, "no_record"), (Step.SELL, "resold_unrestocked"),
          (Step.RETURN, "unverified_return"), (Step.TAKEOVER, "taken_over"),
          (Step.COUNT, "recovered"), (Step.REINSTATE, "recovered"), (Step.LOAN_BACK, "late"))
assert all(n in NOTE_CODES for _, n in _NOTED)


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")



class LifecycleService:
    """Wired by app.py: `LifecycleService(ctx, tids=queue.tids)`; HQ commands and the change
    hook are registered here, so constructing it is enough. `tids`: the TIDs the readers
    report (commissioning binds them, returns and repairs check them). `clock` for tests."""

    def __init__(self, ctx: ServiceContext, *, clock: Callable[[], float] = time.time,
                 lifecycle: Lifecycle | None = None, tids: TidSource | None = None) -> None:
        self.ctx = ctx
        self.authenticity = TagAuthenticity(ctx.metrics, tids)
        self.site = ctx.config.site.id
        self.sgln = ctx.config.site.sgln
        self.clock = clock
        self.lifecycle = lifecycle or Lifecycle()
        self.books = Books(ctx)
        self._lock = ctx.tracker_lock  # the domain-state lock: taken before any transaction
        self.rejections = Counter(
            "lifecycle_rejections", "Lifecycle transitions rejected, by step and reason.",
            ["step", "reason"], namespace="rfidd", registry=ctx.metrics.registry,
        )
        self.notes = Counter(
            "lifecycle_noted", "Lifecycle steps accepted with a note worth counting (a resale "
            "before restock, an unverified return, a take-over...), by step and note.",
            ["step", "note"], namespace="rfidd", registry=ctx.metrics.registry,
        )
        for step, note in _NOTED:
            self.notes.labels(step.value, note)
        for kind in ("lifecycle_rejected", "return_unverified", "loan_overdue", "hold_expired"):
            ctx.metrics.alerts.labels(kind)
        self.hook_errors = Counter(
            "lifecycle_hook_errors", "Presence batches the lifecycle hook failed to handle.",
            namespace="rfidd", registry=ctx.metrics.registry,
        )
        self._zone_kinds = {z: zc.kind for z, zc in ctx.config.zones.items()}
        self.commissioning = Commissioning(ctx, self.books, clock, self._zone_kinds)
        self.counts = CountBooks(self.books, self.lifecycle, self._tr, self._zone_kinds,
                                 self.notes)
        self.alerts = AlertWorkflow(ctx, self.counts, self._zone_now, clock=clock)
        self._sessions = self.commissioning.open  # shared with the bench part of the hook
        self._binds = self.commissioning.binds
        for name in MQTT_COMMANDS:
            ctx.register_command(name, self._mqtt_handler(name))

    def start(self) -> None:
        log.info("lifecycle: %d open commissioning sessions, %d pending binds",
                 len(self._sessions), len(self._binds))

    def stop(self) -> None:
        """Nothing runs in the background: every call finishes its transaction."""

    # ------------------------------------------------------------------ commands

    def _mqtt_handler(self, name: str) -> Callable[[Any], str]:
        def handle(data: Any) -> str:
            return self.handle(name, data, source="mqtt").summary()

        return handle

    def handle(self, name: str, data: Any, source: str = "api") -> ApplyResult:
        """Validate and apply one command; ValueError (naming the field) when malformed."""
        if name == "shipment":
            return self.announce_shipment(data, source=source)
        spec = STEP_COMMANDS.get(name)
        if spec is None:
            known = ", ".join(sorted([*STEP_COMMANDS, "shipment"]))
            raise ValueError(f"unknown lifecycle command {name!r} (known: {known})")
        step, model = spec
        cmd = C.parse(model, data, name)
        return self.apply(name, step, cmd, source=source)

    def apply(self, name: str, step: Step, cmd: C.ItemsCommand, source: str = "api"
              ) -> ApplyResult:
        """Apply `step` to every item of `cmd` against their stored states, atomically."""
        if step in _SHIPPING:
            # The ASN id goes out as this shipper's bizTransaction URI, so the receiving site's
            # `receiving` events name the very same transaction HQ saw in `shipping`.
            uri = biz_transaction_uri(cmd.txn, self.ctx.config.site.sgln)
            cmd = cmd.model_copy(update={"txn": uri})
        at = cmd.at.timestamp() if cmd.at is not None else self.clock()
        to_site = getattr(cmd, "to_site", None)
        carton = getattr(cmd, "carton", None)
        due_dt = getattr(cmd, "due", None)
        due = due_dt.timestamp() if due_dt is not None else None
        extra = C.transition_fields(cmd)
        seen = self._seen(cmd.epcs) if step is Step.RETURN else {}
        point = INTAKE_POINTS.get(step)  # returns, repairs, loans back: a clone refused
        clones: list[repo.Message] = []
        result = ApplyResult(name, cmd.txn)
        with self._lock, self.ctx.transaction() as s:
            states, rows = self.books.load(s, cmd.epcs)
            done = self.books.applied(s, step, cmd.txn)
            events: list[ItemEvent] = []
            messages: list[repo.Message] = []
            new_states: dict[str, ItemState] = {}
            rejects: list[tuple[ItemState | None, Transition, str, str]] = []
            for epc in cmd.epcs:
                if epc in done:
                    result.items.append(ItemResult(epc, "duplicate", event_ids=[done[epc]]))
                    continue
                row = rows.get(epc)
                chk = self.authenticity.check(point, epc, row.tid if row else None) \
                    if point is not None else None
                if chk is not None and chk.refuse_at_intake:
                    clones.append(self._clone(s, chk, point or "", step, cmd.txn, at, source))
                    result.items.append(ItemResult(
                        epc, "rejected", chk.reason(), "cloned_tag", tag_check=chk.verdict.value,
                        state=st0.status.value if (st0 := states.get(epc)) else None))
                    continue
                trs = []
                if step in _SHIPPING and carton:
                    trs.append(self._tr(Step.PACK, epc, at, txn=cmd.txn, parent_id=carton))
                trs.append(self._tr(step, epc, at, txn=cmd.txn, to_site=to_site, due=due,
                                    **extra, **seen.get(epc, {})))
                st: ItemState | None = states.get(epc)
                evs: list[ItemEvent] = []
                out: Outcome | None = None
                for tr in trs:
                    out = self.lifecycle.apply(st, tr)
                    if not out.accepted:
                        break
                    st = out.state
                    evs.extend(out.events)
                assert out is not None
                if not out.accepted:
                    code = out.reason_code or reason_code(st, tr, out.reason or "")
                    rejects.append((st, tr, out.reason or "rejected", code))
                    result.items.append(ItemResult(epc, "rejected", out.reason, code,
                                                   state=st.status.value if st else None))
                    continue
                assert st is not None
                new_states[epc] = st
                events.extend(evs)
                result.items.append(ItemResult(
                    epc, "accepted", event_ids=[e.event_id for e in evs], note=out.note,
                    note_code=out.note_code, tag_check=chk.verdict.value if chk else None,
                    tag_note=chk.reason() if chk and chk.verdict.value != "match" else None))
                if out.note_code is not None:
                    self.notes.labels(tr.step.value, out.note_code).inc()
                    if out.note_code == "unverified_return":
                        messages.append(self._flag(tr, out.note or "", source))
            if step in _SHIPPING and all_or_nothing(result, done, new_states, events):
                self.rejections.labels("ship", "shipment_conflict").inc()
            for st, tr, text, code in rejects:
                msg = self._rejection(st, tr, text, code, source)
                messages.append(msg)
                if tr.step is Step.RETURN and msg.event_id and code != "already_done":
                    self.alerts.raise_alert(s, msg.event_id, "return_refused", tr.epc,
                                            self._zone_now(tr.epc), tr.at,
                                            detail={"reason": code, "message": text,
                                                    "txn": tr.txn})
            if step in _SHIPPING and new_states and to_site:
                result.asn = {
                    "asn_id": cmd.txn, "origin": self.site, "destination": to_site,
                    "shipped_at": _iso(at), "epcs": sorted(new_states), "lines": [],
                }
                bound = {e: r.tid for e in new_states if (r := rows.get(e)) and r.tid}
                if bound:  # the receiver checks the chips against them (authenticity)
                    result.asn["tids"] = dict(sorted(bound.items()))
                messages.append(repo.Message(ASN_STREAM, ASN_TOPIC, result.asn,
                                             event_id=stable_event_id(self.site, "asn", cmd.txn)))
            applied = [(r.epc, step, cmd.txn, r.event_ids[-1]) for r in result.items
                       if r.result == "accepted"]
            self.books.commit(s, new_states, events, messages + clones, applied)
        if clones:
            self.rejections.labels(step.value, "cloned_tag").inc(len(clones))
            self.authenticity.cloned(len(clones))
        if result.rejected:
            log.warning("lifecycle %s", result.summary())
        return result


    def _clone(self, s: Session, chk: TidCheck, point: str, step: Step, txn: str | None,
               at: float, source: str) -> repo.Message:
        """A clone refused at a return or repair desk: the cloned_tag alert, in the workflow
        (staff acknowledge and resolve it) and for HQ, in the command's transaction."""
        zone = self._zone_now(chk.epc)
        msg = M.cloned_tag(self.site, chk, point, at, step=step.value, txn=txn, zone=zone,
                           source=source, refused=True)
        self.alerts.raise_alert(s, msg.event_id or "", "cloned_tag", chk.epc, zone, at,
                                detail={"point": point, "step": step.value, "txn": txn,
                                        "bound_tid": chk.bound, "read_tids": list(chk.seen),
                                        "message": chk.reason()})
        return msg

    def _tr(self, step: Step, epc: str, at: float, *, txn: str | None = None,
            to_site: str | None = None, due: float | None = None,
            parent_id: str | None = None, zone: str | None = None,
            **extra: Any) -> Transition:
        rp = self.ctx.config.zone_read_point(zone) if zone in self._zone_kinds else None
        kind = self._zone_kinds.get(zone) if zone else None
        extra.setdefault("zone_kind", kind.value if kind is not None else None)
        return Transition(step=step, epc=epc, at=at, site=self.site, site_sgln=self.sgln,
                          read_point=rp, zone=zone, to_site=to_site, txn=txn, due=due,
                          parent_id=parent_id, **extra)

    def _seen(self, epcs: Sequence[str]) -> dict[str, dict[str, Any]]:
        """What the readers say of each item now (zone kind and since when): a return of a
        piece the stockroom antennas see was never sold."""
        with self.ctx.tracker_lock:
            rows = {e: self.ctx.tracker.get(e) for e in epcs}
        out: dict[str, dict[str, Any]] = {}
        for e, r in rows.items():
            kind = self._zone_kinds.get(r.zone) if r is not None else None
            if r is not None and kind in (ZoneKind.STOCK, ZoneKind.FLOOR, ZoneKind.FITTING):
                out[e] = {"seen_kind": kind.value, "seen_since": r.since}
        return out

    def _flag(self, tr: Transition, note: str, source: str) -> repo.Message:
        """A return this site cannot verify, for HQ to check against the chain's sales."""
        self.ctx.metrics.alerts.labels("return_unverified").inc()
        return M.unverified_return(self.site, tr, note, source)

    def _rejection(self, st: ItemState | None, tr: Transition, text: str, code: str,
                   source: str, count: bool = True) -> repo.Message:
        """The exception HQ gets; its id makes a repeated bad command one alert. `count`
        False: the caller counts it once committed (an ingest plan)."""
        if count:
            self.rejections.labels(tr.step.value, code).inc()
            self.ctx.metrics.alerts.labels("lifecycle_rejected").inc()
        return M.rejection(self.site, st, tr, text, code, source)

    def announce_shipment(self, data: Any, source: str = "mqtt") -> ApplyResult:
        """An ASN addressed to this site (HQ relays it to cmd/shipment): see shipments.py."""
        with self._lock:
            return announce_shipment(self.ctx, self.books, data, source)

    # ------------------------------------------------------------------ ingest component

    name = "lifecycle"
    watched_zones: frozenset[str] = frozenset()

    def plan(self, view: BatchView) -> BatchPlan | None:
        """The books' part of a batch (rfidd.pipeline): bench commissioning, and stocking /
        storing of the items these books hold (the site rules stand aside for those). Planned
        from the view's records; the commissioning counters move only once committed."""
        bench, moves = [], []
        homes: dict[str, str] = {}
        for c in view.changes:
            kind = self._zone_kinds.get(c.zone) if c.zone else None
            if c.zone is not None and kind in _SHELF_KINDS and view.on_books(c.epc):
                homes[c.epc] = c.zone  # where a loss is from: the last shelf before the exit
            if kind is ZoneKind.BENCH and c.kind in (ChangeKind.ARRIVED, ChangeKind.MOVED):
                bench.append(c)
            elif c.kind is ChangeKind.MOVED and kind in (ZoneKind.STOCK, ZoneKind.FLOOR) \
                    and self._zone_kinds.get(c.from_zone or "") is not kind:
                moves.append(c)  # onto the floor or into the stockroom, from anywhere
        with self._lock:
            commissioning = bool(self._sessions or self._binds)
            if not moves and not (bench and commissioning):
                if not homes:
                    return None
                return BatchPlan(write=lambda s: set_home_zones(s, homes))
            return self._plan(view, bench if commissioning else [], moves, homes)

    def _plan(self, view: BatchView, bench: list[PresenceChange],
              moves: list[PresenceChange], homes: dict[str, str]) -> BatchPlan:
        events: list[ItemEvent] = []
        messages: list[repo.Message] = []
        rejected: list[tuple[str, str]] = []
        new_states: dict[str, ItemState] = {}

        def reject(st: ItemState | None, tr: Transition, text: str, code: str) -> None:
            messages.append(self._rejection(st, tr, text, code, "reader", count=False))
            rejected.append((tr.step.value, code))

        bp = self.commissioning.plan_bench(view, bench, self._tr, self.lifecycle,
                                           self.authenticity, reject)
        events.extend(bp.events)
        new_states.update(bp.new_states)
        tids, counted, used_binds, bind_sources = bp.tids, bp.counted, bp.used_binds, bp.sources
        for c in moves:
            st = new_states.get(c.epc) or view.record(c.epc)
            if st is None or st.status not in STOCK_STATUSES:
                # Not in the books, or not stock (a customer walking through with a
                # purchase, an item in transit not yet received): a move, not a step.
                continue
            step = Step.STOCK if self._zone_kinds.get(c.zone or "") is ZoneKind.FLOOR \
                else Step.STORE
            if (step, st.status) in ((Step.STOCK, Status.ON_FLOOR),
                                     (Step.STORE, Status.IN_STOCK)):
                continue  # already there in the books (e.g. received straight to the floor)
            tr = self._tr(step, c.epc, c.at, zone=c.zone)
            out = self.lifecycle.apply(st, tr)
            if out.accepted and out.state is not None:
                new_states[c.epc] = out.state
                events.extend(out.events)
            else:
                reject(st, tr, out.reason or "rejected", reason_code(st, tr, out.reason or ""))
        if not (events or messages):
            return BatchPlan(write=(lambda s: set_home_zones(s, homes)) if homes else None)
        closed: dict[str, int] = {}  # session -> its committed count, once complete

        def write(s: Session) -> None:
            write_rows(s, new_states, tids)
            if homes:
                set_home_zones(s, homes)
            for epc, at in used_binds:
                bind = s.get(CommissioningBind, epc)
                if bind is not None:
                    bind.used_at = at
            closed.clear()
            for sid, n in counted.items():
                row = s.get(CommissioningSession, sid)
                if row is None:
                    continue
                row.commissioned += n
                if row.commissioned >= row.expected:
                    row.closed_at = self.clock()
                    closed[sid] = row.commissioned

        def apply() -> None:
            with self._lock:
                for sid, n in counted.items():
                    live = self._sessions.get(sid)
                    if live is not None:
                        live.commissioned += n
                for sid, n in closed.items():
                    self._sessions.pop(sid, None)
                    log.info("commissioning session %s complete: %d items", sid, n)
                for epc in new_states:
                    self._binds.pop(epc, None)
            for how in bind_sources:
                self.authenticity.count_binding(how)
            for step, code in rejected:
                self.rejections.labels(step, code).inc()
                self.ctx.metrics.alerts.labels("lifecycle_rejected").inc()

        return BatchPlan(events=events, messages=messages,
                         upserts=item_upserts(new_states), write=write, apply=apply)

    # ------------------------------------------------------------------ exits and counts

    def record_exit(self, s: Session, alert_id: str, epc: str, zone: str, at: float,
                    detail: dict[str, Any] | None = None) -> tuple[str | None, bool]:
        """For the exit module, in its transaction: the books' state after an unsold item
        went through the exit, and the alert in the workflow with the item's home zone.
        Returns (home zone, suspected stolen)."""
        with self._lock:
            home, stolen = self.counts.exit_state(s, epc, zone, at)
            self.alerts.raise_alert(s, alert_id, "exit_unsold", epc, zone, at, home_zone=home,
                                    detail=detail)
        return home, stolen

    # ------------------------------------------------------------------ loans

    def may_leave(self, epc: str) -> bool:
        """The exit rule (inventory.lifecycle.may_leave) on this item's books."""
        return _may_leave(self._state(epc))

    def has_no_record(self, epc: str) -> bool:
        return self._state(epc) is None

    def in_stock(self, epc: str) -> bool:
        """Items this site has no lifecycle record of count as stock (taken over as found)."""
        st = self._state(epc)
        return st is None or st.status in STOCK_STATUSES

    def _state(self, epc: str) -> ItemState | None:
        """One item's state in the books (a read-only session of its own)."""
        with self.ctx.db.session() as s:
            states, _ = self.books.load(s, [epc])
        return states.get(epc)

    def _zone_now(self, epc: str) -> str | None:
        with self.ctx.tracker_lock:
            return self.ctx.tracker.zone_of(epc)

    def check_overdue(self, now: float | None = None) -> int:
        """One alert per overdue loan and per expired hold (scheduled by app.py); returns how
        many were new."""
        now = self.clock() if now is None else now
        with self._lock, self.ctx.transaction() as s:
            loans = list(s.scalars(select(LifecycleItem).where(
                LifecycleItem.status == Status.ON_LOAN.value, LifecycleItem.loan_due < now)))
            res = self.ctx.stage(s, messages=[M.loan_overdue(self.site, r, now) for r in loans])
            holds = list(s.scalars(select(LifecycleItem).where(
                LifecycleItem.status == Status.HELD.value, LifecycleItem.hold_until < now)))
            held = self.ctx.stage(s, messages=[M.hold_expired(self.site, r, now) for r in holds])
        for kind, n in (("loan_overdue", res.messages), ("hold_expired", held.messages)):
            if n:
                self.ctx.metrics.alerts.labels(kind).inc(n)
                log.warning("%d new %s alert(s)", n, kind)
        return res.messages + held.messages

    # ------------------------------------------------------------------ reads

    def held_items(self, limit: int) -> list[Held]:
        """The items held for a client (the floor's holds screen), oldest first."""
        with self.ctx.db.session() as s:
            return held(s, limit)

    def item_state(self, epc: str) -> dict[str, Any] | None:
        with self.ctx.db.session() as s:
            states, rows = self.books.load(s, [epc])
            st = states[epc]
            if st is None:
                return None
            return describe(st, rows.get(epc))


__all__ = ["MQTT_COMMANDS", "REASONS", "STEP_COMMANDS", "LifecycleService"]
