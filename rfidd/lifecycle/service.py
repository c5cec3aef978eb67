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
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Counter
from sqlalchemy import select
from sqlalchemy.orm import Session

from inventory.asn import parse_asn_object
from inventory.epc import decode
from inventory.epcis import biz_transaction_uri
from inventory.events import ItemEvent, stable_event_id
from inventory.lifecycle import (
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
from rfidd.lifecycle import books
from rfidd.lifecycle import commands as C
from rfidd.lifecycle.books import write_row
from rfidd.lifecycle.models import (
    CommissioningBind,
    CommissioningSession,
    LifecycleApplied,
    LifecycleItem,
)
from rfidd.pipeline import BatchPlan, BatchView
from rfidd.store import repo

log = logging.getLogger("rfidd.lifecycle")

ALERT_STREAM = "alert"
ALERT_TOPIC = "alerts"
ASN_STREAM = "asn"
ASN_TOPIC = "asn"

REASONS = (
    "unknown_item",
    "not_shipped_here",
    "already_done",
    "wrong_site",
    "bad_request",
    "sold",
    "in_transit",
    "on_loan",
    "wrong_status",
    "wrong_product",
    "shipment_conflict",
    "shipment_incomplete",
)
"""The bounded label values of rfidd_lifecycle_rejections_total{reason}."""

# command name -> (step, model). The same names on MQTT (cmd/<name>) and HTTP.
STEP_COMMANDS: dict[str, tuple[Step, type[C.ItemsCommand]]] = {
    "sale": (Step.SELL, C.ItemsCommand),
    "return": (Step.RETURN, C.ReturnCommand),
    "ship": (Step.SHIP, C.ShipCommand),
    "transfer_out": (Step.TRANSFER_OUT, C.ShipCommand),
    "transfer_in": (Step.TRANSFER_IN, C.ItemsCommand),
    "receive": (Step.RECEIVE, C.ItemsCommand),
    "loan_out": (Step.LOAN_OUT, C.LoanOutCommand),
    "loan_back": (Step.LOAN_BACK, C.ItemsCommand),
    "repair_in": (Step.REPAIR_IN, C.ItemsCommand),
    "repair_out": (Step.REPAIR_OUT, C.ItemsCommand),
}
MQTT_COMMANDS = ("sale", "return", "ship", "transfer_out", "transfer_in", "loan_out",
                 "loan_back", "repair_in", "repair_out", "shipment")
"""`receive` is HTTP only: HQ's reception of ASNs is the store-operations `asn` command."""

_SHIPPING = (Step.SHIP, Step.TRANSFER_OUT)

@dataclass(slots=True)
class ItemResult:
    epc: str
    result: str  # accepted | duplicate | rejected
    reason: str | None = None
    reason_code: str | None = None
    event_ids: list[str] = field(default_factory=list)
    note: str | None = None

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"epc": self.epc, "result": self.result}
        for k in ("reason", "reason_code", "note"):
            if getattr(self, k) is not None:
                d[k] = getattr(self, k)
        if self.event_ids:
            d["event_ids"] = self.event_ids
        return d


@dataclass(slots=True)
class ApplyResult:
    command: str
    txn: str | None
    items: list[ItemResult] = field(default_factory=list)
    asn: dict[str, Any] | None = None

    def count(self, result: str) -> int:
        return sum(1 for i in self.items if i.result == result)

    @property
    def rejected(self) -> int:
        return self.count("rejected")

    def summary(self) -> str:
        s = (f"{self.command} {self.txn or ''}: {self.count('accepted')} accepted, "
             f"{self.count('duplicate')} duplicate, {self.rejected} rejected")
        first = next((i for i in self.items if i.result == "rejected"), None)
        return s + (f" (first: {first.reason})" if first else "")

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "command": self.command,
            "txn": self.txn,
            "accepted": self.count("accepted"),
            "duplicates": self.count("duplicate"),
            "rejected": self.rejected,
            "items": [i.to_json() for i in self.items],
        }
        if self.asn is not None:
            d["asn"] = self.asn
        return d


@dataclass(slots=True)
class _Session:
    id: str
    gtin: str | None
    expected: int
    commissioned: int
    zone: str | None


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def reason_code(state: ItemState | None, tr: Transition, text: str) -> str:
    """A rejection's bounded label (the text goes to the alert, never to the metric)."""
    why = text.split(": ", 1)[1] if ": " in text else text
    if why.startswith(("no sale transaction", "no due date", "due date", "no destination",
                       "destination is this site")):
        return "bad_request"
    if tr.step in (Step.RECEIVE, Step.TRANSFER_IN) and (
        state is None or (state.status is Status.IN_TRANSIT and state.destination != tr.site)
    ):
        return "not_shipped_here"
    if state is None:
        return "unknown_item"
    if why.startswith("already"):
        return "already_done"
    if state.status is Status.SOLD:
        return "sold"
    if state.status is Status.IN_TRANSIT:
        return "in_transit"
    if state.status is Status.ON_LOAN:
        return "on_loan"
    if state.site is not None and state.site != tr.site:
        return "wrong_site"
    return "wrong_status"


class LifecycleService:
    """Wired by app.py: `LifecycleService(ctx)`; HQ commands and the change hook are registered
    here, so constructing it is enough. `clock` is injectable for tests."""

    def __init__(self, ctx: ServiceContext, *, clock: Callable[[], float] = time.time,
                 lifecycle: Lifecycle | None = None) -> None:
        self.ctx = ctx
        self.site = ctx.config.site.id
        self.sgln = ctx.config.site.sgln
        self.clock = clock
        self.lifecycle = lifecycle or Lifecycle()
        self._lock = ctx.tracker_lock  # the domain-state lock: taken before any transaction
        self.rejections = Counter(
            "lifecycle_rejections", "Lifecycle transitions rejected, by step and reason.",
            ["step", "reason"], namespace="rfidd", registry=ctx.metrics.registry,
        )
        self.hook_errors = Counter(
            "lifecycle_hook_errors", "Presence batches the lifecycle hook failed to handle.",
            namespace="rfidd", registry=ctx.metrics.registry,
        )
        self._zone_kinds = {z: zc.kind for z, zc in ctx.config.zones.items()}
        self._sessions: dict[str, _Session] = {}
        self._binds: dict[str, tuple[str, str | None]] = {}
        self._load_sessions()
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
        result = ApplyResult(name, cmd.txn)
        with self._lock, self.ctx.transaction() as s:
            states, rows = self._load(s, cmd.epcs)
            done = self._applied(s, step, cmd.txn)
            events: list[ItemEvent] = []
            messages: list[repo.Message] = []
            new_states: dict[str, ItemState] = {}
            rejects: list[tuple[ItemState | None, Transition, str, str]] = []
            for epc in cmd.epcs:
                if epc in done:
                    result.items.append(ItemResult(epc, "duplicate", event_ids=[done[epc]]))
                    continue
                trs = []
                if step in _SHIPPING and carton:
                    trs.append(self._tr(Step.PACK, epc, at, txn=cmd.txn, parent_id=carton))
                trs.append(self._tr(step, epc, at, txn=cmd.txn, to_site=to_site, due=due))
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
                    code = reason_code(st, tr, out.reason or "")
                    rejects.append((st, tr, out.reason or "rejected", code))
                    result.items.append(ItemResult(epc, "rejected", out.reason, code))
                    continue
                assert st is not None
                new_states[epc] = st
                events.extend(evs)
                result.items.append(ItemResult(epc, "accepted", event_ids=[e.event_id for e in evs],
                                               note=out.note))
            if step in _SHIPPING:
                self._shipment_all_or_nothing(result, done, new_states, events)
            for st, tr, text, code in rejects:
                messages.append(self._rejection(st, tr, text, code, source))
            if step in _SHIPPING and new_states and to_site:
                result.asn = {
                    "asn_id": cmd.txn, "origin": self.site, "destination": to_site,
                    "shipped_at": _iso(at), "epcs": sorted(new_states), "lines": [],
                }
                messages.append(repo.Message(ASN_STREAM, ASN_TOPIC, result.asn,
                                             event_id=stable_event_id(self.site, "asn", cmd.txn)))
            applied = [(r.epc, step, cmd.txn, r.event_ids[-1]) for r in result.items
                       if r.result == "accepted"]
            self._commit(s, rows, new_states, events, messages, applied)
        if result.rejected:
            log.warning("lifecycle %s", result.summary())
        return result

    def _shipment_all_or_nothing(self, result: ApplyResult, done: dict[str, str],
                                 new_states: dict[str, ItemState],
                                 events: list[ItemEvent]) -> None:
        """An ASN lists exactly what left: a shipment with a rejected item, or one reusing a
        shipped ASN id for other items, ships nothing."""
        rejected = result.rejected
        conflict = bool(done) and bool(new_states)
        if not new_states or (not rejected and not conflict):
            return
        why = (f"ASN {result.txn} was already shipped with other items; use a new ASN id"
               if conflict else
               f"shipment {result.txn} not sent: {rejected} item(s) rejected")
        code = "shipment_conflict" if conflict else "shipment_incomplete"
        for r in result.items:
            if r.result == "accepted":
                r.result, r.reason, r.reason_code, r.event_ids = "rejected", why, code, []
        new_states.clear()
        events.clear()
        if conflict:  # the items' own states were fine: one exception for the shipment
            self.rejections.labels("ship", code).inc()

    def _tr(self, step: Step, epc: str, at: float, *, txn: str | None = None,
            to_site: str | None = None, due: float | None = None,
            parent_id: str | None = None, zone: str | None = None) -> Transition:
        rp = self.ctx.config.zone_read_point(zone) if zone in self._zone_kinds else None
        return Transition(step=step, epc=epc, at=at, site=self.site, site_sgln=self.sgln,
                          read_point=rp, zone=zone, to_site=to_site, txn=txn, due=due,
                          parent_id=parent_id)

    def _rejection(self, st: ItemState | None, tr: Transition, text: str, code: str,
                   source: str, count: bool = True) -> repo.Message:
        """The exception HQ gets; its id makes a repeated bad command one alert. `count`
        False: the caller counts it once committed (an ingest plan)."""
        if count:
            self.rejections.labels(tr.step.value, code).inc()
            self.ctx.metrics.alerts.labels("lifecycle_rejected").inc()
        payload = {
            "type": "lifecycle_rejected",
            "site": self.site,
            "step": tr.step.value,
            "epc": tr.epc,
            "epc_uri": decode(tr.epc).epcis_uri,
            "txn": tr.txn,
            "reason": code,
            "message": text,
            "state": st.status.value if st else None,
            "source": source,
            "time": _iso(tr.at),
        }
        key = tr.txn if tr.txn else tr.at
        return repo.Message(ALERT_STREAM, ALERT_TOPIC, payload,
                            event_id=stable_event_id(self.site, "lifecycle-rejection",
                                                     tr.step.value, tr.epc, key))

    # ------------------------------------------------------------------ state I/O

    def _load(self, s: Session, epcs: Sequence[str]
              ) -> tuple[dict[str, ItemState | None], dict[str, LifecycleItem]]:
        return books.load(s, epcs, self.site)

    def _applied(self, s: Session, step: Step, txn: str) -> dict[str, str]:
        q = select(LifecycleApplied.epc, LifecycleApplied.event_id).where(
            LifecycleApplied.step == step.value, LifecycleApplied.txn == txn)
        return {e: ev for e, ev in s.execute(q)}

    def _commit(self, s: Session, rows: dict[str, LifecycleItem],
                new_states: dict[str, ItemState], events: Sequence[ItemEvent],
                messages: Sequence[repo.Message],
                applied: Iterable[tuple[str, Step, str, str]],
                tids: dict[str, str | None] | None = None) -> None:
        self.ctx.stage(s, events, messages, self._item_upserts(new_states))
        self._write_rows(s, rows, new_states, tids)
        now = time.time()
        for epc, step, txn, event_id in applied:
            s.add(LifecycleApplied(epc=epc, step=step.value, txn=txn, event_id=event_id,
                                   applied_at=now))

    @staticmethod
    def _item_upserts(new_states: dict[str, ItemState]) -> list[repo.ItemUpsert]:
        """The coarse items.biz_step/disposition every service reads."""
        upserts = []
        for epc, st in new_states.items():
            d = decode(epc)
            upserts.append(repo.ItemUpsert(
                epc=epc, biz_step=st.biz_step, disposition=st.disposition, epc_uri=d.uri,
                gtin=d.gtin14, serial=d.serial_text))
        return upserts

    @staticmethod
    def _write_rows(s: Session, rows: dict[str, LifecycleItem],
                    new_states: dict[str, ItemState], tids: dict[str, str | None] | None
                    ) -> None:
        """The lifecycle rows, written after the items rows: never older than them."""
        now = time.time()
        for epc, st in new_states.items():
            row = rows.get(epc)
            if row is None:
                row = LifecycleItem(epc=epc)
                s.add(row)
                rows[epc] = row
            write_row(row, st, now)
            if tids and tids.get(epc):
                row.tid = tids[epc]

    # ------------------------------------------------------------------ inbound shipments

    def announce_shipment(self, data: Any, source: str = "mqtt") -> ApplyResult:
        """An ASN addressed to this site (HQ relays it to cmd/shipment): its items are booked
        as in transit here, so receiving them is allowed and receiving others is not."""
        if not isinstance(data, dict):
            raise ValueError("command shipment: payload must be an ASN JSON object")
        parsed = parse_asn_object(data, source=f"shipment ({source})")
        if not parsed.ok:
            raise ValueError("command shipment: " + "; ".join(
                f"{e.field or 'ASN'}: {e.message}" for e in parsed.errors[:20]))
        asn = parsed.asns[0]
        if asn.destination != self.site:
            raise ValueError(f"command shipment: destination: ASN {asn.asn_id} is for "
                             f"{asn.destination!r}, this site is {self.site!r}")
        result = ApplyResult("shipment", asn.asn_id)
        at = asn.shipped_at.timestamp()
        with self._lock, self.ctx.transaction() as s:
            states, rows = self._load(s, asn.epcs)
            booked: dict[str, ItemState] = {}
            for epc in asn.epcs:
                st = states.get(epc)
                if st is not None and st.status is Status.IN_TRANSIT and \
                        st.destination == self.site and st.shipment == asn.asn_id:
                    result.items.append(ItemResult(epc, "duplicate"))
                    continue
                if st is not None and st.site == self.site and st.status not in (
                        Status.SOLD, Status.MISSING, Status.IN_TRANSIT):
                    result.items.append(ItemResult(
                        epc, "accepted", note=f"already here ({st.status.value}): not booked"))
                    continue
                booked[epc] = replace(
                    ItemState.shipped_to(epc, self.site, at, asn.asn_id),
                    site=st.site if st is not None else asn.origin)
                result.items.append(ItemResult(epc, "accepted"))
            self._commit(s, rows, booked, (), (), ())
        return result

    # ------------------------------------------------------------------ workshop: commissioning

    def _load_sessions(self) -> None:
        with self.ctx.db.session() as s:
            for r in s.scalars(select(CommissioningSession).where(
                    CommissioningSession.closed_at.is_(None))):
                self._sessions[r.id] = _Session(r.id, r.gtin, r.expected, r.commissioned, r.zone)
            for b in s.scalars(select(CommissioningBind).where(
                    CommissioningBind.used_at.is_(None))):
                self._binds[b.epc] = (b.session_id, b.tid)

    def open_session(self, data: Any) -> dict[str, Any]:
        cmd = C.parse(C.OpenSessionCommand, data, "commissioning")
        if cmd.zone is not None and self._zone_kinds.get(cmd.zone) is not ZoneKind.BENCH:
            raise ValueError(f"command commissioning: zone: {cmd.zone!r} is not a bench zone "
                             f"(bench zones: {', '.join(self.bench_zones()) or 'none'})")
        if not self.bench_zones():
            raise ValueError("command commissioning: this site has no zone of kind 'bench'")
        now = self.clock()
        sid = cmd.id or f"C{int(now * 1000):x}"
        with self._lock, self.ctx.transaction() as s:
            if s.get(CommissioningSession, sid) is not None:
                raise ValueError(f"command commissioning: id: session {sid!r} exists")
            s.add(CommissioningSession(id=sid, gtin=cmd.gtin, expected=cmd.expected,
                                       commissioned=0, zone=cmd.zone, opened_at=now))
            self._sessions[sid] = _Session(sid, cmd.gtin, cmd.expected, 0, cmd.zone)
        return self.session_json(sid)

    def close_session(self, sid: str) -> dict[str, Any]:
        with self._lock, self.ctx.transaction() as s:
            row = s.get(CommissioningSession, sid)
            if row is None:
                raise KeyError(sid)
            if row.closed_at is None:
                row.closed_at = self.clock()
            self._sessions.pop(sid, None)
        return self.session_json(sid)

    def bind(self, data: Any) -> dict[str, Any]:
        cmd = C.parse(C.BindCommand, data, "bind")
        sid = cmd.session or "bind"
        with self._lock, self.ctx.transaction() as s:
            states, _ = self._load(s, [cmd.epc])
            if states[cmd.epc] is not None:
                raise ValueError(f"command bind: epc: {cmd.epc} is already known here "
                                 f"({states[cmd.epc].status.value})")  # type: ignore[union-attr]
            row = s.get(CommissioningBind, cmd.epc)
            if row is None:
                s.add(CommissioningBind(epc=cmd.epc, session_id=sid, tid=cmd.tid,
                                        created_at=self.clock()))
            else:
                row.session_id, row.tid = sid, cmd.tid
            self._binds[cmd.epc] = (sid, cmd.tid)
        return {"epc": cmd.epc, "session": sid, "tid": cmd.tid}

    def sessions(self, include_closed: bool = False) -> list[dict[str, Any]]:
        with self.ctx.db.session() as s:
            q = select(CommissioningSession).order_by(CommissioningSession.opened_at)
            if not include_closed:
                q = q.where(CommissioningSession.closed_at.is_(None))
            return [self._session_dict(r) for r in s.scalars(q)]

    def session_json(self, sid: str) -> dict[str, Any]:
        with self.ctx.db.session() as s:
            row = s.get(CommissioningSession, sid)
            if row is None:
                raise KeyError(sid)
            return self._session_dict(row)

    @staticmethod
    def _session_dict(r: CommissioningSession) -> dict[str, Any]:
        return {"id": r.id, "gtin": r.gtin, "expected": r.expected,
                "commissioned": r.commissioned, "zone": r.zone, "opened_at": _iso(r.opened_at),
                "closed_at": _iso(r.closed_at) if r.closed_at else None}

    def bench_zones(self) -> list[str]:
        return sorted(z for z, k in self._zone_kinds.items() if k is ZoneKind.BENCH)

    # ------------------------------------------------------------------ ingest component

    name = "lifecycle"
    watched_zones: frozenset[str] = frozenset()

    def plan(self, view: BatchView) -> BatchPlan | None:
        """The books' part of a batch (rfidd.pipeline): bench commissioning, and stocking /
        storing of the items these books hold (the site rules stand aside for those). Planned
        from the view's records; the commissioning counters move only once committed."""
        bench, moves = [], []
        for c in view.changes:
            kind = self._zone_kinds.get(c.zone) if c.zone else None
            if kind is ZoneKind.BENCH and c.kind in (ChangeKind.ARRIVED, ChangeKind.MOVED):
                bench.append(c)
            elif c.kind is ChangeKind.MOVED and kind in (ZoneKind.STOCK, ZoneKind.FLOOR) \
                    and self._zone_kinds.get(c.from_zone or "") is not kind:
                moves.append(c)  # onto the floor or into the stockroom, from anywhere
        with self._lock:
            commissioning = bool(self._sessions or self._binds)
            if not moves and not (bench and commissioning):
                return None
            return self._plan(view, bench if commissioning else [], moves)

    def _plan(self, view: BatchView, bench: list[PresenceChange],
              moves: list[PresenceChange]) -> BatchPlan:
        events: list[ItemEvent] = []
        messages: list[repo.Message] = []
        rejected: list[tuple[str, str]] = []
        new_states: dict[str, ItemState] = {}
        tids: dict[str, str | None] = {}
        counted: dict[str, int] = {}
        used_binds: list[tuple[str, float]] = []

        def reject(st: ItemState | None, tr: Transition, text: str, code: str) -> None:
            messages.append(self._rejection(st, tr, text, code, "reader", count=False))
            rejected.append((tr.step.value, code))

        for c in bench:
            if view.record(c.epc) is not None or c.epc in new_states:
                continue  # only unknown tags are commissioned
            d = view.decoded.get(c.epc) or decode(c.epc)
            sid, tid = self._binds.get(c.epc, (None, None))
            session = None
            if sid is None:
                candidates = [x for x in self._sessions.values()
                              if x.zone in (None, c.zone)
                              and x.commissioned + counted.get(x.id, 0) < x.expected]
                session = next((x for x in candidates if x.gtin == d.gtin14), None)
                if session is None:
                    if candidates:
                        tr = self._tr(Step.COMMISSION, c.epc, c.at, zone=c.zone,
                                      txn=candidates[0].id)
                        gtins = ", ".join(sorted({x.gtin or "?" for x in candidates}))
                        reject(None, tr, f"commission rejected for {c.epc}: GTIN {d.gtin14} "
                               f"is not the product of the open session(s) ({gtins})",
                               "wrong_product")
                    continue
                sid = session.id
            else:
                used_binds.append((c.epc, c.at))
            tr = self._tr(Step.COMMISSION, c.epc, c.at, zone=c.zone)
            out = self.lifecycle.apply(None, tr)
            if not out.accepted or out.state is None:  # pragma: no cover - unknown item
                continue
            evs = list(out.events)
            if tid:
                evs = [replace(e, extensions={**e.extensions, "tid": tid}) for e in evs]
                tids[c.epc] = tid
            events.extend(evs)
            new_states[c.epc] = out.state
            if session is not None:
                counted[session.id] = counted.get(session.id, 0) + 1
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
            return BatchPlan()
        closed: dict[str, int] = {}  # session -> its committed count, once complete

        def write(s: Session) -> None:
            rows = {r.epc: r for r in s.scalars(select(LifecycleItem).where(
                LifecycleItem.epc.in_(list(new_states))))} if new_states else {}
            self._write_rows(s, rows, new_states, tids)
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
            for step, code in rejected:
                self.rejections.labels(step, code).inc()
                self.ctx.metrics.alerts.labels("lifecycle_rejected").inc()

        return BatchPlan(events=events, messages=messages,
                         upserts=self._item_upserts(new_states), write=write, apply=apply)

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
            states, _ = self._load(s, [epc])
        return states.get(epc)

    def check_overdue(self, now: float | None = None) -> int:
        """One alert per overdue loan (scheduled by app.py); returns how many were new."""
        now = self.clock() if now is None else now
        with self._lock, self.ctx.transaction() as s:
            rows = list(s.scalars(select(LifecycleItem).where(
                LifecycleItem.status == Status.ON_LOAN.value, LifecycleItem.loan_due < now)))
            msgs = []
            for r in rows:
                assert r.loan_due is not None
                msgs.append(repo.Message(ALERT_STREAM, ALERT_TOPIC, {
                    "type": "loan_overdue", "site": self.site, "epc": r.epc,
                    "epc_uri": decode(r.epc).epcis_uri, "due": _iso(r.loan_due),
                    "overdue_days": round((now - r.loan_due) / 86400, 2),
                    "since": _iso(r.since), "time": _iso(now),
                }, event_id=stable_event_id(self.site, "loan-overdue", r.epc, r.loan_due)))
            res = self.ctx.stage(s, messages=msgs)
        if res.messages:
            self.ctx.metrics.alerts.labels("loan_overdue").inc(res.messages)
            log.warning("%d loan(s) overdue", res.messages)
        return res.messages

    # ------------------------------------------------------------------ reads

    def item_state(self, epc: str) -> dict[str, Any] | None:
        with self.ctx.db.session() as s:
            states, rows = self._load(s, [epc])
            st = states[epc]
            if st is None:
                return None
            row = rows.get(epc)
            return {
                "epc": epc, "status": st.status.value, "disposition": st.disposition,
                "site": st.site, "since": _iso(st.since), "biz_step": st.biz_step,
                "destination": st.destination, "shipment": st.shipment,
                "sale_txn": st.sale_txn, "loan_due": _iso(st.loan_due) if st.loan_due else None,
                "tid": row.tid if row is not None else None,
            }

