"""Workshop commissioning sessions and per-tag binds: what a bench read of an unknown tag
commissions (the commissioning itself happens in the lifecycle service's presence hook)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from inventory.epc import decode
from inventory.events import ItemEvent
from inventory.lifecycle import ItemState, Lifecycle, Step, Transition
from inventory.presence import PresenceChange
from rfidd.config import ZoneKind
from rfidd.context import ServiceContext
from rfidd.lifecycle import commands as C
from rfidd.lifecycle.authenticity import TagAuthenticity
from rfidd.lifecycle.books import Books
from rfidd.lifecycle.models import CommissioningBind, CommissioningSession
from rfidd.pipeline import BatchView


@dataclass(slots=True)
class Session:
    id: str
    gtin: str | None
    expected: int
    commissioned: int
    zone: str | None


@dataclass(slots=True)
class BenchPlan:
    """What a batch's bench reads commission (committed by the lifecycle service's plan)."""

    events: list[ItemEvent] = field(default_factory=list)
    new_states: dict[str, ItemState] = field(default_factory=dict)
    tids: dict[str, str | None] = field(default_factory=dict)  # the bindings made
    counted: dict[str, int] = field(default_factory=dict)  # session -> items commissioned
    used_binds: list[tuple[str, float]] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)  # how each TID was bound (counted later)


Reject = Callable[[ItemState | None, Transition, str, str], None]


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


class Commissioning:
    """Open sessions and pending binds, in memory and in the database (domain lock held for
    every write, as everywhere)."""

    def __init__(self, ctx: ServiceContext, books: Books, clock: Callable[[], float],
                 zone_kinds: Mapping[str, ZoneKind]) -> None:
        self.ctx = ctx
        self.books = books
        self.clock = clock
        self._zone_kinds = zone_kinds
        self._lock = ctx.tracker_lock
        self.open: dict[str, Session] = {}
        self.binds: dict[str, tuple[str, str | None]] = {}
        self._load_sessions()

    def _load_sessions(self) -> None:
        with self.ctx.db.session() as s:
            for r in s.scalars(select(CommissioningSession).where(
                    CommissioningSession.closed_at.is_(None))):
                self.open[r.id] = Session(r.id, r.gtin, r.expected, r.commissioned, r.zone)
            for b in s.scalars(select(CommissioningBind).where(
                    CommissioningBind.used_at.is_(None))):
                self.binds[b.epc] = (b.session_id, b.tid)

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
            self.open[sid] = Session(sid, cmd.gtin, cmd.expected, 0, cmd.zone)
        return self.session_json(sid)

    def close_session(self, sid: str) -> dict[str, Any]:
        with self._lock, self.ctx.transaction() as s:
            row = s.get(CommissioningSession, sid)
            if row is None:
                raise KeyError(sid)
            if row.closed_at is None:
                row.closed_at = self.clock()
            self.open.pop(sid, None)
        return self.session_json(sid)

    def bind(self, data: Any) -> dict[str, Any]:
        cmd = C.parse(C.BindCommand, data, "bind")
        sid = cmd.session or "bind"
        with self._lock, self.ctx.transaction() as s:
            states, _ = self.books.load(s, [cmd.epc])
            if states[cmd.epc] is not None:
                raise ValueError(f"command bind: epc: {cmd.epc} is already known here "
                                 f"({states[cmd.epc].status.value})")  # type: ignore[union-attr]
            row = s.get(CommissioningBind, cmd.epc)
            if row is None:
                s.add(CommissioningBind(epc=cmd.epc, session_id=sid, tid=cmd.tid,
                                        created_at=self.clock()))
            else:
                row.session_id, row.tid = sid, cmd.tid
            self.binds[cmd.epc] = (sid, cmd.tid)
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

    def plan_bench(self, view: BatchView, bench: list[PresenceChange],
                   tr_of: Callable[..., Transition], lifecycle: Lifecycle,
                   authenticity: TagAuthenticity, reject: Reject) -> BenchPlan:
        """Unknown tags read at a bench: commissioned by their bind or an open session of
        their product, bound to the TID of the bind or the one chip the bench read (caller
        holds the domain lock)."""
        bp = BenchPlan()
        for c in bench:
            if view.record(c.epc) is not None or c.epc in bp.new_states:
                continue  # only unknown tags are commissioned
            d = view.decoded.get(c.epc) or decode(c.epc)
            sid, tid = self.binds.get(c.epc, (None, None))
            session = None
            if sid is None:
                candidates = [x for x in self.open.values()
                              if x.zone in (None, c.zone)
                              and x.commissioned + bp.counted.get(x.id, 0) < x.expected]
                session = next((x for x in candidates if x.gtin == d.gtin14), None)
                if session is None:
                    if candidates:
                        tr = tr_of(Step.COMMISSION, c.epc, c.at, zone=c.zone,
                                   txn=candidates[0].id)
                        gtins = ", ".join(sorted({x.gtin or "?" for x in candidates}))
                        reject(None, tr, f"commission rejected for {c.epc}: GTIN {d.gtin14} "
                               f"is not the product of the open session(s) ({gtins})",
                               "wrong_product")
                    continue
            else:
                bp.used_binds.append((c.epc, c.at))
            out = lifecycle.apply(None, tr_of(Step.COMMISSION, c.epc, c.at, zone=c.zone))
            if not out.accepted or out.state is None:  # pragma: no cover - unknown item
                continue
            evs = list(out.events)
            tid, how = authenticity.commissioning_tid(c.epc, tid)
            bp.sources.append(how)
            if tid:
                evs = [replace(e, extensions={**e.extensions, "tid": tid}) for e in evs]
                bp.tids[c.epc] = tid
            bp.events.extend(evs)
            bp.new_states[c.epc] = out.state
            if session is not None:
                bp.counted[session.id] = bp.counted.get(session.id, 0) + 1
        return bp

    def bench_zones(self) -> list[str]:
        return sorted(z for z, k in self._zone_kinds.items() if k is ZoneKind.BENCH)

