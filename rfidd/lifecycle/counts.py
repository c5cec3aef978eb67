"""What counts, replenishment and resolved alerts do to the lifecycle books.

A closed count is the booked position: every item it saw in a counted zone gets its
`cycle_counting` event (one per item) through the lifecycle rules: found where the books have
it (an observation), found on the other side of the stockroom door (booked there), found after
an exit alert (recovered), or never received through rfidd (taken over, when the count adopts
what it finds). Everything runs in the caller's transaction, so the count report, the books and
the events commit together.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Counter
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from inventory.events import Action, ItemEvent, stable_event_id
from inventory.lifecycle import ItemState, Lifecycle, Status, Step, Transition
from rfidd.config import ZoneKind
from rfidd.lifecycle.books import Books, Raw, load_raw, states_of
from rfidd.lifecycle.models import LifecycleItem
from rfidd.store import repo
from rfidd.store.models import Item

# Items the store holds that are not sellable stock: their own sections of a count.
SECTIONS: dict[Status, str] = {
    Status.HELD: "held",
    Status.AWAITING_COLLECTION: "awaiting_collection",
    Status.RETURNED: "returned",
    Status.IN_REPAIR: "in_repair",
    Status.ON_LOAN: "on_loan",
    Status.SOLD: "sold",
}
# ...of which these are expected in the store (the others, if seen, are reported where seen).
_KEPT_HERE = frozenset({Status.HELD, Status.AWAITING_COLLECTION, Status.RETURNED,
                        Status.IN_REPAIR})
SELLABLE = frozenset({Status.IN_STOCK, Status.ON_FLOOR})
_SHELF_KINDS = (ZoneKind.STOCK, ZoneKind.FLOOR, ZoneKind.FITTING)


@dataclass(slots=True)
class BookedCount:
    """How a count changed the books (the `books` section of its report)."""

    observed: int = 0
    moved: list[str] = field(default_factory=list)  # booked on the other side of the door
    taken_over: list[str] = field(default_factory=list)
    recovered: list[str] = field(default_factory=list)
    not_on_books: list[str] = field(default_factory=list)  # seen, no record, not adopted
    not_stock: list[str] = field(default_factory=list)  # seen, but the books say elsewhere
    events: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"observed": self.observed, "events": self.events,
                "moved": sorted(self.moved), "taken_over": sorted(self.taken_over),
                "recovered": sorted(self.recovered),
                "not_on_books": sorted(self.not_on_books),
                "not_stock": sorted(self.not_stock)}


@dataclass(slots=True)
class CountChunk:
    """A chunk of a count's books, planned: what it read, what it writes."""

    raw: Raw  # the books as read when it was planned (rows compare as tuples)
    states: dict[str, ItemState | None]  # ...and the states they stand for
    new_states: dict[str, ItemState]
    events: list[ItemEvent]
    records: list[repo.EventRecord]  # the events, encoded (EPCIS JSON) when planned
    counted: list[str]  # observed where the books have them: counted_at only
    homes: dict[str, str]
    at: float
    notes: list[tuple[str, str]]  # (step, note) to count once written
    booked: BookedCount


def _observation(tr: Transition) -> ItemEvent:
    """A count's event for an item the books do not change: seen here, nothing more."""
    return ItemEvent(
        event_id=stable_event_id(tr.site, tr.epc, "cycle_counting", f"count:{tr.txn}"),
        event_time=tr.at, action=Action.OBSERVE, epcs=(tr.epc,), biz_step="cycle_counting",
        disposition=None, read_point=tr.read_point or tr.site_sgln, biz_location=tr.site_sgln,
        zone=tr.zone)


class CountBooks:
    """Given the books, the rules and how the service builds a Transition (`make_tr`)."""

    def __init__(self, books: Books, lifecycle: Lifecycle,
                 make_tr: Callable[..., Transition], zone_kinds: Mapping[str, ZoneKind],
                 notes: Counter) -> None:
        self.books = books
        self.lifecycle = lifecycle
        self.make_tr = make_tr
        self.zone_kinds = zone_kinds
        self.notes = notes

    def book_count(self, s: Session, count_id: str, seen: Mapping[str, str], *, adopt: bool,
                   at: float, out: BookedCount | None = None,
                   planned: CountChunk | None = None) -> BookedCount:
        """Apply a closed count (`seen`: epc -> the counted zone it was found in), or one
        chunk of it: `out` adds up the chunks (each its own transaction, in EPC order).
        `planned`: the chunk planned outside the domain lock (`plan_count`) on the books as
        they were; used as is if they have not changed since, planned again if they have."""
        out = BookedCount() if out is None else out
        epcs = sorted(seen)
        raw = load_raw(s, epcs)
        p = planned
        if p is not None and p.raw != raw and (  # rows touched since (a last-seen flush...)
                p.raw[0].keys() != raw[0].keys()
                or states_of(epcs, raw, self.books.site) != p.states):
            p = None  # the books changed since: planned again, here
        if p is None:
            p = self._plan(count_id, seen, epcs, raw, adopt, at)
        self._write(s, p)
        for step, note in p.notes:
            self.notes.labels(step, note).inc()
        b = p.booked
        out.observed += b.observed
        out.events += b.events
        for mine, theirs in ((out.moved, b.moved), (out.taken_over, b.taken_over),
                             (out.recovered, b.recovered), (out.not_on_books, b.not_on_books),
                             (out.not_stock, b.not_stock)):
            mine.extend(theirs)
        return out

    def plan_count(self, s: Session, count_id: str, seen: Mapping[str, str], *, adopt: bool,
                   at: float) -> CountChunk:
        """A chunk of a closed count planned on the books as `s` reads them (no lock: the
        write checks they did not change)."""
        epcs = sorted(seen)
        return self._plan(count_id, seen, epcs, load_raw(s, epcs), adopt, at)

    def _plan(self, count_id: str, seen: Mapping[str, str], epcs: list[str], raw: Raw,
              adopt: bool, at: float) -> CountChunk:
        states = states_of(epcs, raw, self.books.site)
        in_books = raw[0]
        out = BookedCount()
        new_states: dict[str, ItemState] = {}
        observed: list[str] = []  # unchanged: their event, and counted_at, nothing else
        events: list[ItemEvent] = []
        notes: list[tuple[str, str]] = []
        for epc in epcs:
            st = states.get(epc)
            step = Step.TAKEOVER if st is None else Step.COUNT
            tr = self.make_tr(step, epc, at, txn=count_id, zone=seen[epc])
            if st is None and not adopt:
                out.not_on_books.append(epc)
                events.append(_observation(tr))
                continue
            o = self.lifecycle.apply(st, tr)
            if not o.accepted or o.state is None:
                out.not_stock.append(epc)
                events.append(_observation(tr))
                continue
            events.extend(o.events)
            if st is not None and o.state.status is st.status and o.note_code is None:
                out.observed += 1
                observed.append(epc)
                continue
            new_states[epc] = o.state
            if o.note_code is not None:
                notes.append((step.value, o.note_code))
            if o.note_code == "taken_over":
                out.taken_over.append(epc)
            elif o.note_code == "recovered":
                out.recovered.append(epc)
            else:
                out.moved.append(epc)
        out.events = len(events)
        counted = [e for e in observed if e in in_books]
        homes = {e: seen[e] for e in (*new_states, *counted)
                 if self.zone_kinds.get(seen[e]) in _SHELF_KINDS}
        return CountChunk(raw, states, new_states, events,
                          self.books.ctx.records(events), counted, homes, at, notes, out)

    def _write(self, s: Session, p: CountChunk) -> None:
        """Write a planned chunk: the events (records made when planned), the rows."""
        self.books.commit(s, p.new_states, p.events, (), (), records=p.records)
        self.books.mark_counted(s, p.counted, p.at)
        self.books.set_home_zones(s, p.homes)

    def reinstate(self, s: Session, epc: str, zone: str | None, at: float,
                  txn: str) -> tuple[bool, str | None]:
        """An exit alert cleared (false alarm, recovered): the item back on the books as stock
        where it is now. (accepted, reason)."""
        states, _ = self.books.load(s, [epc])
        o = self.lifecycle.apply(states.get(epc), self.make_tr(Step.REINSTATE, epc, at,
                                                                zone=zone, txn=txn))
        if not o.accepted or o.state is None:
            return False, o.reason
        self.books.commit(s, {epc: o.state}, o.events, (), ())
        if o.note_code is not None:
            self.notes.labels(Step.REINSTATE.value, o.note_code).inc()
        return True, None

    def exit_state(self, s: Session, epc: str, zone: str, at: float) -> tuple[str | None, bool]:
        """An unsold item read at the exit: (its home zone, whether it is now suspected stolen).

        The books decide: stock and held items become suspected stolen; a sold item awaiting
        collection stays the client's (the alert still says it was not collected); an item the
        books have no record of is suspected stolen as today (items.disposition)."""
        states, _ = self.books.load(s, [epc])
        st = states.get(epc)
        home = self.books.home_zones(s, [epc]).get(epc)
        if home is None:
            last = s.scalar(select(Item.zone).where(Item.epc == epc))
            home = last if self.zone_kinds.get(last or "") in _SHELF_KINDS else None
        o = self.lifecycle.apply(st, self.make_tr(Step.EXIT_UNSOLD, epc, at, zone=zone))
        if o.accepted and o.state is not None:
            self.books.commit(s, {epc: o.state}, (), (), ())
        return home, (o.accepted or st is None)

    @staticmethod
    def set_aside(s: Session) -> dict[str, tuple[str, str | None]]:
        """epc -> (section, booked zone) of every item the books hold that is not sellable
        stock: what a count reports in its own sections, never as unexpected or missing."""
        q = (select(LifecycleItem.epc, LifecycleItem.status,
                    func.coalesce(Item.zone, LifecycleItem.home_zone))
             .join(Item, Item.epc == LifecycleItem.epc, isouter=True)
             .where(LifecycleItem.status.in_([x.value for x in SECTIONS])))
        out: dict[str, tuple[str, str | None]] = {}
        for epc, status, zone in s.execute(q):
            st = Status(status)
            out[epc] = (SECTIONS[st], zone if st in _KEPT_HERE else None)
        return out

    def shelf_stock(self, s: Session, epcs: list[str]) -> tuple[set[str], set[str]]:
        """(those of `epcs` that are sellable stock on the books, as a count expects them;
        those the books have no record of) for replenishment: a piece not on the books (a
        reception's unexpected serial, never taken over) is what the count calls "not on the
        books", so not stock to bring out but a piece to check; sold, held, lent, returned
        pieces are not sellable."""
        states = states_of(epcs, load_raw(s, epcs), self.books.site)
        return ({e for e, st in states.items() if st is not None and st.status in SELLABLE},
                {e for e, st in states.items() if st is None})
