"""The item lifecycle (DESIGN.md, GS1 CBV business steps and dispositions) as a state machine.

`Lifecycle.apply(state, transition)` is pure: it returns an `Outcome` with the new `ItemState`
and the `ItemEvent`s that record the fact, or a rejection with a reason a person can act on
("sell rejected for 3034...: already sold in transaction R-17"). Business rejections are
values, not exceptions: a POS replaying a sale, a reader seeing a sold item at the exit, a
count finding an item shipped elsewhere are all normal days in a store.

Each site keeps its own states, so an item's state is what *this* site knows. An item announced
by an ASN enters the site's books with `ItemState.shipped_to` (the sender produced the shipping
event); items sold elsewhere in the chain can be returned or repaired here
(`accept_unknown_customer_items`).

Event ids are `stable_event_id(site, epc, bizStep, key)` where key is the business transaction
(`type:id`) when there is one, else the transition time: a replayed sale or reception produces
the same eventID, which HQ drops as a duplicate.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from inventory.epcis import biz_transaction_uri
from inventory.events import Action, ItemEvent, stable_event_id


class Step(enum.StrEnum):
    COMMISSION = "commission"
    PACK = "pack"
    SHIP = "ship"
    RECEIVE = "receive"
    STOCK = "stock"
    STORE = "store"
    SELL = "sell"
    RETURN = "return"
    REPAIR_IN = "repair_in"
    REPAIR_OUT = "repair_out"
    LOAN_OUT = "loan_out"
    LOAN_BACK = "loan_back"
    TRANSFER_OUT = "transfer_out"
    TRANSFER_IN = "transfer_in"
    EXIT_UNSOLD = "exit_unsold"
    DESTROY = "destroy"
    DECOMMISSION = "decommission"
    COUNT = "count"
    TAKEOVER = "takeover"  # found by a count, never received through rfidd: on the books
    HOLD = "hold"  # reserved for a client
    RELEASE = "release"  # the reservation ends without a sale: back to sellable stock
    COLLECT = "collect"  # a sold item awaiting collection leaves with its client
    RESTOCK = "restock"  # a returned item, inspected: to stock, floor, repair or destruction
    REINSTATE = "reinstate"  # an exit alert resolved as a false alarm or the item recovered


class Status(enum.StrEnum):
    """Where the item is in its life, as far as this site knows."""

    COMMISSIONED = "commissioned"
    PACKED = "packed"
    IN_TRANSIT = "in_transit"
    IN_STOCK = "in_stock"  # stockroom, sellable_not_accessible
    ON_FLOOR = "on_floor"  # sales floor, sellable_accessible
    SOLD = "sold"
    RETURNED = "returned"
    IN_REPAIR = "in_repair"
    ON_LOAN = "on_loan"
    MISSING = "missing"  # left through the exit unsold: stolen (suspected)
    HELD = "held"  # reserved for a client (or another store's client): out of sellable stock
    AWAITING_COLLECTION = "awaiting_collection"  # sold, still in the store (alteration, gift wrap)
    DESTROYED = "destroyed"
    DECOMMISSIONED = "decommissioned"


# CBV short names (EPCIS 2.0 JSON-LD accepts them as bizStep/disposition values)
BIZ_STEP: dict[Step, str] = {
    Step.COMMISSION: "commissioning",
    Step.PACK: "packing",
    Step.SHIP: "shipping",
    Step.RECEIVE: "receiving",
    Step.STOCK: "stocking",
    Step.STORE: "storing",
    Step.SELL: "retail_selling",
    Step.RETURN: "receiving",
    Step.REPAIR_IN: "repairing",
    Step.REPAIR_OUT: "repairing",
    Step.LOAN_OUT: "shipping",
    Step.LOAN_BACK: "receiving",
    Step.TRANSFER_OUT: "shipping",
    Step.TRANSFER_IN: "receiving",
    Step.EXIT_UNSOLD: "entering_exiting",
    Step.DESTROY: "destroying",
    Step.DECOMMISSION: "decommissioning",
    Step.COUNT: "cycle_counting",
    Step.TAKEOVER: "cycle_counting",
    Step.HOLD: "holding",
    Step.RELEASE: "stocking",  # or storing: decided by where the item goes back to
    Step.COLLECT: "departing",
    Step.RESTOCK: "stocking",  # or storing, repairing, destroying: by the restock target
    Step.REINSTATE: "storing",  # or stocking: by the zone the item is found in
}

_DISPOSITION: dict[Status, str] = {
    Status.COMMISSIONED: "active",
    Status.PACKED: "in_progress",
    Status.IN_TRANSIT: "in_transit",
    Status.IN_STOCK: "sellable_not_accessible",
    Status.ON_FLOOR: "sellable_accessible",
    Status.SOLD: "retail_sold",
    Status.RETURNED: "returned",
    Status.IN_REPAIR: "needs_replacement",
    Status.ON_LOAN: "in_transit",
    Status.MISSING: "stolen",
    Status.DESTROYED: "destroyed",
    Status.DECOMMISSIONED: "inactive",
    Status.HELD: "reserved",
    Status.AWAITING_COLLECTION: "retail_sold",
}

# Steps after which the item is no longer at the site: EPCIS bizLocation is omitted.
_LEAVES_SITE = frozenset(
    {
        Step.SHIP,
        Step.SELL,
        Step.LOAN_OUT,
        Step.TRANSFER_OUT,
        Step.EXIT_UNSOLD,
        Step.DESTROY,
        Step.DECOMMISSION,
        Step.COLLECT,
    }
)

# The business transaction type each step's `txn` is (EPCIS 2.0 bizTransaction type values).
_TXN_TYPE: dict[Step, str] = {
    Step.SHIP: "desadv",
    Step.RECEIVE: "desadv",
    Step.TRANSFER_OUT: "desadv",
    Step.TRANSFER_IN: "desadv",
    Step.RETURN: "rma",
}

_FROM_STATUS = object()  # sentinel: the event's disposition follows from the new status
_SELLABLE = frozenset({Status.IN_STOCK, Status.ON_FLOOR})
_AT_SITE = frozenset(
    {
        Status.COMMISSIONED,
        Status.PACKED,
        Status.IN_STOCK,
        Status.ON_FLOOR,
        Status.RETURNED,
        Status.IN_REPAIR,
        Status.HELD,
        Status.AWAITING_COLLECTION,
    }
)
# Zone kinds whose items are on display (sellable_accessible); every other zone is the back.
FLOOR_KINDS = frozenset({"floor", "fitting"})
RESTOCK_TARGETS = ("stock", "floor", "repair", "destroy")


@dataclass(frozen=True, slots=True)
class Hold:
    """A reservation: the client (a reference, not a name), the staff member who placed it,
    when it expires, and the store it is held for when another store asked (None: here)."""

    client: str
    staff: str | None = None
    until: float | None = None
    for_site: str | None = None


@dataclass(frozen=True, slots=True)
class ItemState:
    """What this site knows about one item. `site` holds it (the selling/lending site for sold
    and lent items, the sender while in transit); `destination` is set while in transit."""

    epc: str
    status: Status
    disposition: str
    site: str | None
    since: float
    biz_step: str | None = None
    destination: str | None = None
    shipment: str | None = None  # desadv the item travels under
    sale_txn: str | None = None
    loan_due: float | None = None
    after_repair: Status | None = None  # status to resume when the repair is done
    counted_at: float | None = None
    hold: Hold | None = None  # while HELD: for whom, by whom, until when
    held_from: Status | None = None  # status to resume when a hold is released

    @classmethod
    def shipped_to(
        cls, epc: str, to_site: str, at: float, shipment: str | None = None
    ) -> ItemState:
        """An item announced by an ASN: in transit to `to_site` (the sender recorded shipping)."""
        return cls(
            epc=epc,
            status=Status.IN_TRANSIT,
            disposition="in_transit",
            site=None,
            since=at,
            biz_step="shipping",
            destination=to_site,
            shipment=shipment,
        )


@dataclass(frozen=True, slots=True)
class Transition:
    """Something that happens to one item at `site` (whose SGLN is `site_sgln`).

    `txn` is the business document of the step: the desadv (ship/receive/transfer), the sale
    receipt (sell), the RMA (return), the count session (count); a bare id becomes
    `urn:epcglobal:cbv:bt:<site GLN>:<id>`, a URI is kept as is (documents issued by another
    party should come as URIs). `due` is the loan's due time; `parent_id` the case or pallet
    (SSCC URI) an item is packed into.
    """

    step: Step
    epc: str
    at: float
    site: str
    site_sgln: str
    read_point: str | None = None
    zone: str | None = None
    to_site: str | None = None
    txn: str | None = None
    due: float | None = None
    parent_id: str | None = None
    zone_kind: str | None = None  # kind of `zone` (stock, floor, ...): where the item goes
    seen_kind: str | None = None  # readers see the item now in a zone of this kind
    seen_since: float | None = None  # ... since this time
    hold: Hold | None = None
    collect_later: bool = False  # a sale whose item stays in the store until collected
    target: str | None = None  # restock: stock, floor, repair or destroy


@dataclass(frozen=True, slots=True)
class Outcome:
    """`state` is the new state when accepted, the unchanged input when rejected."""

    accepted: bool
    state: ItemState | None
    events: tuple[ItemEvent, ...] = ()
    reason: str | None = None
    note: str | None = None
    note_code: str | None = None  # bounded label of a note worth counting (an exception)
    reason_code: str | None = None  # bounded label of a rejection, where the rule names one


NOTE_CODES = ("no_record", "resold_unrestocked", "unverified_return", "recovered",
              "taken_over", "late")
"""Bounded values of Outcome.note_code."""


class Lifecycle:
    """The transition rules. `sale_bt_type` is the bizTransaction type of a POS receipt: CBV 2.0
    has no receipt type, an invoice (`inv`) is the closest standard one."""

    def __init__(self, accept_unknown_customer_items: bool = True, sale_bt_type: str = "inv",
                 sell_unrecorded_items: bool = True, return_seen_window_s: float = 1800.0):
        self.accept_unknown_customer_items = accept_unknown_customer_items
        # The till is the authority on a sale: an item this site has no record of (stock on
        # the shelves before rfidd came, never received through it) is sold all the same,
        # with a note, rather than refused at the POS and then flagged at the exit.
        self.sell_unrecorded_items = sell_unrecorded_items
        self.sale_bt_type = sale_bt_type
        # A customer brings a returned item in just now; one the readers have seen in the
        # store for longer than this (or in the stockroom at all) never left it.
        self.return_seen_window_s = return_seen_window_s

    def apply(self, state: ItemState | None, tr: Transition) -> Outcome:
        if state is not None and state.epc != tr.epc:
            return _reject(state, tr, f"state is for another item ({state.epc})")
        handler = _HANDLERS.get(tr.step)
        if handler is None:
            return Outcome(False, state, reason=f"unknown lifecycle step {tr.step!r} for {tr.epc}")
        return handler(self, state, tr)

    # -- handlers: each returns an Outcome ----------------------------------------------------

    def _commission(self, s: ItemState | None, tr: Transition) -> Outcome:
        if s is not None:
            return _reject(s, tr, f"already commissioned ({_describe(s)})")
        return self._accept(None, tr, Status.COMMISSIONED, action=Action.ADD)

    def _pack(self, s: ItemState | None, tr: Transition) -> Outcome:
        allowed = {Status.COMMISSIONED, Status.IN_STOCK, Status.ON_FLOOR, Status.RETURNED}
        if (why := _check(s, tr, allowed)) is not None:
            return _reject(s, tr, why)
        action = Action.ADD if tr.parent_id else Action.OBSERVE  # aggregation: add to the case
        return self._accept(s, tr, Status.PACKED, action=action)

    def _ship(self, s: ItemState | None, tr: Transition) -> Outcome:
        allowed = {
            Status.COMMISSIONED,
            Status.PACKED,
            Status.IN_STOCK,
            Status.ON_FLOOR,
            Status.RETURNED,
        }
        if tr.step is Step.TRANSFER_OUT:
            allowed -= {Status.COMMISSIONED}
            # A hold asked by another store: the item travels to that store's client.
            if s is not None and s.status is Status.HELD and s.hold is not None \
                    and s.hold.for_site is not None and s.hold.for_site == tr.to_site:
                allowed |= {Status.HELD}
        if not tr.to_site:
            return _reject(s, tr, "no destination site")
        if tr.to_site == tr.site:
            return _reject(s, tr, f"destination is this site ({tr.site})")
        if (why := _check(s, tr, allowed)) is not None:
            return _reject(s, tr, why)
        return self._accept(
            s, tr, Status.IN_TRANSIT, destination=tr.to_site, shipment=tr.txn, site=tr.site,
            hold=None, held_from=None,
        )

    def _receive(self, s: ItemState | None, tr: Transition) -> Outcome:
        if s is None:
            return _reject(s, tr, f"never shipped to this site ({tr.site})")
        if s.status is not Status.IN_TRANSIT:
            return _reject(s, tr, f"not in transit: {_describe(s)}")
        if s.destination != tr.site:
            return _reject(s, tr, f"shipped to {s.destination}, not to this site ({tr.site})")
        note = None
        if tr.txn and s.shipment and tr.txn != s.shipment:
            note = f"received against {tr.txn} but shipped under {s.shipment}"
        return self._accept(s, tr, Status.IN_STOCK, shipment=None, note=note)

    def _stock(self, s: ItemState | None, tr: Transition) -> Outcome:
        if s is not None and s.status is Status.ON_FLOOR and s.site == tr.site:
            return _reject(s, tr, "already on the sales floor")
        if (why := _check(s, tr, {Status.IN_STOCK, Status.RETURNED})) is not None:
            return _reject(s, tr, why)
        return self._accept(s, tr, Status.ON_FLOOR)

    def _store(self, s: ItemState | None, tr: Transition) -> Outcome:
        if s is not None and s.status is Status.IN_STOCK and s.site == tr.site:
            return _reject(s, tr, "already in the stockroom")
        if (why := _check(s, tr, {Status.ON_FLOOR, Status.RETURNED})) is not None:
            return _reject(s, tr, why)
        return self._accept(s, tr, Status.IN_STOCK)

    def _sell(self, s: ItemState | None, tr: Transition) -> Outcome:
        if not tr.txn:
            return _reject(s, tr, "no sale transaction id")
        if s is not None and s.status in (Status.SOLD, Status.AWAITING_COLLECTION):
            return _reject(s, tr, f"already sold in transaction {s.sale_txn}")
        status = Status.AWAITING_COLLECTION if tr.collect_later else Status.SOLD
        sold = {"sale_txn": tr.txn, "loan_due": None, "hold": None, "held_from": None,
                "bt_type": self.sale_bt_type}
        if s is None and self.sell_unrecorded_items:
            return self._accept(
                s, tr, status, **sold,  # type: ignore[arg-type]
                note="sold; this site's books had no receipt for it (stock from before rfidd, "
                "or never received through it)", note_code="no_record",
            )
        if s is not None and s.status is Status.RETURNED and s.site == tr.site:
            # The till is never blocked: a returned piece sold again before staff restocked it.
            return self._accept(
                s, tr, status, **sold,  # type: ignore[arg-type]
                note="sold again before it was restocked after its return",
                note_code="resold_unrestocked",
            )
        # ON_LOAN: a client-approval loan ends in a sale without the item coming back first.
        # HELD: the reservation ends in its sale.
        allowed = {Status.IN_STOCK, Status.ON_FLOOR, Status.ON_LOAN, Status.HELD}
        if (why := _check(s, tr, allowed)) is not None:
            return _reject(s, tr, why)
        return self._accept(s, tr, status, **sold)  # type: ignore[arg-type]

    def _return(self, s: ItemState | None, tr: Transition) -> Outcome:
        if s is None or (s.status not in (Status.SOLD, Status.AWAITING_COLLECTION)
                         and s.site == tr.site):
            present = self._seen_unsold(tr)
            if present is not None:  # refund fraud: the "returned" piece never left
                what = _describe(s) if s is not None else "no sale on record here"
                return _reject(s, tr, f"{what}, and {present}: not sold, cannot be returned",
                               code="present_unsold")
        if s is None:
            if not self.accept_unknown_customer_items:
                return _reject(s, tr, "no sale of this item on record at this site")
            return self._accept(
                s, tr, Status.RETURNED,
                note="no sale on record here: flagged for HQ to check the chain's sales",
                note_code="unverified_return",
            )
        if s.status not in (Status.SOLD, Status.AWAITING_COLLECTION):
            return _reject(s, tr, f"not sold: {_describe(s)}")
        return self._accept(s, tr, Status.RETURNED, sale_txn=None)

    def _seen_unsold(self, tr: Transition) -> str | None:
        """Why the readers say the item never left (None when they do not)."""
        if tr.seen_kind is None:
            return None
        if tr.seen_kind == "stock":
            return "the readers see it in the stockroom"
        if tr.seen_since is not None and tr.at - tr.seen_since > self.return_seen_window_s:
            return (f"the readers have seen it in the store since {_iso(tr.seen_since)}, "
                    "before the return")
        return None

    def _repair_in(self, s: ItemState | None, tr: Transition) -> Outcome:
        if s is None or s.status is Status.SOLD:  # after-sales: the customer's item
            if s is None and not self.accept_unknown_customer_items:
                return _reject(s, tr, "unknown item: no sale on record at this site")
            note = "no sale on record here: sold elsewhere in the chain" if s is None else None
            return self._accept(s, tr, Status.IN_REPAIR, after_repair=Status.SOLD, note=note)
        allowed = {Status.IN_STOCK, Status.ON_FLOOR, Status.RETURNED}
        if s.status is Status.IN_REPAIR:
            return _reject(s, tr, "already in repair")
        if (why := _check(s, tr, allowed)) is not None:
            return _reject(s, tr, why)
        return self._accept(s, tr, Status.IN_REPAIR, after_repair=Status.IN_STOCK)

    def _repair_out(self, s: ItemState | None, tr: Transition) -> Outcome:
        if (why := _check(s, tr, {Status.IN_REPAIR})) is not None:
            return _reject(s, tr, why)
        assert s is not None
        back = s.after_repair or Status.IN_STOCK
        # DESIGN: repairing ends with disposition `available`, whatever the item goes back to.
        return self._accept(s, tr, back, disposition="available", after_repair=None)

    def _loan_out(self, s: ItemState | None, tr: Transition) -> Outcome:
        if tr.due is None:
            return _reject(s, tr, "no due date")
        if tr.due <= tr.at:
            return _reject(s, tr, f"due date {_iso(tr.due)} is not after the loan ({_iso(tr.at)})")
        if (why := _check(s, tr, _SELLABLE)) is not None:
            return _reject(s, tr, why)
        return self._accept(
            s, tr, Status.ON_LOAN, loan_due=tr.due, extensions={"loanDue": _iso(tr.due)}
        )

    def _loan_back(self, s: ItemState | None, tr: Transition) -> Outcome:
        if (why := _check(s, tr, {Status.ON_LOAN})) is not None:
            return _reject(s, tr, why)
        assert s is not None
        note = None
        if s.loan_due is not None and tr.at > s.loan_due:
            note = f"returned {(tr.at - s.loan_due) / 86400:.1f} days after due"
        return self._accept(s, tr, Status.IN_STOCK, loan_due=None, note=note,
                            note_code="late" if note else None)

    def _transfer_in(self, s: ItemState | None, tr: Transition) -> Outcome:
        return self._receive(s, tr)

    def _exit_unsold(self, s: ItemState | None, tr: Transition) -> Outcome:
        if s is not None and s.status is Status.SOLD:
            return _reject(s, tr, f"sold in transaction {s.sale_txn}: free to leave")
        if s is not None and s.status is Status.ON_LOAN:
            return _reject(s, tr, f"on loan until {_iso(s.loan_due)}: expected to leave")
        if s is not None and s.status is Status.MISSING:
            return _reject(s, tr, "already suspected stolen")
        if s is not None and s.status is Status.AWAITING_COLLECTION:
            # Paid for: the alert is raised (not collected), the client's item stays sold.
            return _reject(s, tr, f"sold in transaction {s.sale_txn} but not collected")
        allowed = {Status.IN_STOCK, Status.ON_FLOOR, Status.RETURNED, Status.COMMISSIONED,
                   Status.HELD}
        if (why := _check(s, tr, allowed)) is not None:
            return _reject(s, tr, why)
        return self._accept(s, tr, Status.MISSING)

    def _destroy(self, s: ItemState | None, tr: Transition) -> Outcome:
        if s is not None and s.status in (Status.SOLD, Status.AWAITING_COLLECTION, Status.HELD):
            return _reject(s, tr, f"{_describe(s)}: the customer's item")
        if s is not None and s.status is Status.IN_REPAIR and s.after_repair is Status.SOLD:
            return _reject(s, tr, "in after-sales repair: the customer's item")
        if (why := _check(s, tr, _AT_SITE)) is not None:
            return _reject(s, tr, why)
        return self._accept(s, tr, Status.DESTROYED)

    def _decommission(self, s: ItemState | None, tr: Transition) -> Outcome:
        if s is None:
            return _reject(s, tr, "unknown item")
        if s.status is Status.DECOMMISSIONED:
            return _reject(s, tr, "already decommissioned")
        # A sold item's tag may be killed at any store on the customer's request.
        if (
            s.status not in (Status.SOLD, Status.AWAITING_COLLECTION)
            and (why := _check(s, tr, _AT_SITE | {Status.DESTROYED})) is not None
        ):
            return _reject(s, tr, why)
        return self._accept(s, tr, Status.DECOMMISSIONED, action=Action.DELETE)

    def _count(self, s: ItemState | None, tr: Transition) -> Outcome:
        if s is None:
            return _reject(s, tr, "unknown item: not on record at this site")
        if s.status is Status.IN_TRANSIT and s.destination == tr.site:
            return _reject(s, tr, f"shipped here under {s.shipment} but not received yet")
        if s.status is Status.MISSING and s.site == tr.site:
            # Found by a count: back in the books at the zone it was found in.
            return self._accept(s, tr, _stock_status(tr.zone_kind), counted_at=tr.at,
                                note="recovered", note_code="recovered")
        if (why := _check(s, tr, _AT_SITE)) is not None:
            return _reject(s, tr, f"found on site but {why}")
        if s.status in _SELLABLE and tr.zone_kind is not None \
                and _stock_status(tr.zone_kind) is not s.status:
            # The count is the booked position: a piece found on the floor is on the floor.
            return self._accept(s, tr, _stock_status(tr.zone_kind), counted_at=tr.at)
        # A count is an observation: the status and the time it began stay as they were.
        return self._accept(
            s,
            tr,
            s.status,
            disposition=None,
            counted_at=tr.at,
            since=s.since,
            biz_step=s.biz_step,
        )

    def _takeover(self, s: ItemState | None, tr: Transition) -> Outcome:
        """Stock from before rfidd, found by a count: on the books where it was found."""
        if s is not None and s.status is Status.MISSING and s.site == tr.site:
            return self._count(s, tr)
        if s is not None and s.status is not Status.DECOMMISSIONED:
            return _reject(s, tr, f"already on the books ({_describe(s)})")
        return self._accept(s, tr, _stock_status(tr.zone_kind), counted_at=tr.at,
                            note="taken over: found by a count, never received through rfidd",
                            note_code="taken_over", extensions={"takenOver": True},
                            sale_txn=None, after_repair=None)

    def _hold(self, s: ItemState | None, tr: Transition) -> Outcome:
        h = tr.hold
        if h is None or not h.client:
            return _reject(s, tr, "no client for the hold")
        if h.until is not None and h.until <= tr.at:
            return _reject(s, tr, f"hold expiry {_iso(h.until)} is not after {_iso(tr.at)}")
        if h.for_site is not None and h.for_site == tr.site:
            h = replace(h, for_site=None)
        if s is not None and s.status is Status.HELD and s.hold is not None:
            return _reject(s, tr, f"already held for client {s.hold.client}"
                           + (f" until {_iso(s.hold.until)}" if s.hold.until else ""))
        if (why := _check(s, tr, _SELLABLE)) is not None:
            return _reject(s, tr, why)
        assert s is not None
        ext: dict[str, object] = {"holdClient": h.client}
        if h.until is not None:
            ext["holdUntil"] = _iso(h.until)
        if h.for_site is not None:
            ext["heldForSite"] = h.for_site
        return self._accept(s, tr, Status.HELD, hold=h, held_from=s.status, extensions=ext)

    def _release(self, s: ItemState | None, tr: Transition) -> Outcome:
        if (why := _check(s, tr, {Status.HELD})) is not None:
            return _reject(s, tr, why)
        assert s is not None
        back = _stock_status(tr.zone_kind) if tr.zone_kind else (s.held_from or Status.IN_STOCK)
        return self._accept(s, tr, back, event_step=_SHELF_STEP[back], hold=None, held_from=None)

    def _collect(self, s: ItemState | None, tr: Transition) -> Outcome:
        if (why := _check(s, tr, {Status.AWAITING_COLLECTION})) is not None:
            return _reject(s, tr, why)
        return self._accept(s, tr, Status.SOLD)

    def _restock(self, s: ItemState | None, tr: Transition) -> Outcome:
        if tr.target not in RESTOCK_TARGETS:
            return _reject(s, tr, f"restock target {tr.target!r} is not one of "
                           f"{', '.join(RESTOCK_TARGETS)}")
        if (why := _check(s, tr, {Status.RETURNED})) is not None:
            return _reject(s, tr, why)
        match tr.target:
            case "repair":
                return self._accept(s, tr, Status.IN_REPAIR, event_step="repairing",
                                    after_repair=Status.IN_STOCK)
            case "destroy":
                return self._accept(s, tr, Status.DESTROYED, event_step="destroying")
            case _:
                back = Status.ON_FLOOR if tr.target == "floor" else Status.IN_STOCK
                return self._accept(s, tr, back, event_step=_SHELF_STEP[back])

    def _reinstate(self, s: ItemState | None, tr: Transition) -> Outcome:
        if s is None:
            return _reject(s, tr, "unknown item: not on record at this site")
        if s.status is not Status.MISSING or s.site != tr.site:
            return _reject(s, tr, f"not suspected stolen here: {_describe(s)}")
        back = _stock_status(tr.zone_kind)
        return self._accept(s, tr, back, event_step=_SHELF_STEP[back], note="reinstated",
                            note_code="recovered")

    # -- building outcomes --------------------------------------------------------------------

    def _accept(
        self,
        s: ItemState | None,
        tr: Transition,
        status: Status,
        *,
        action: Action = Action.OBSERVE,
        disposition: object = _FROM_STATUS,
        bt_type: str | None = None,
        note: str | None = None,
        note_code: str | None = None,
        event_step: str | None = None,
        extensions: Mapping[str, object] | None = None,
        **changes: object,
    ) -> Outcome:
        """Accept `tr`: new state with `status`, one event. The event's disposition is the
        status's unless given; None means unchanged (omitted from the event, kept in the state)."""
        biz_step = event_step or BIZ_STEP[tr.step]
        if disposition is _FROM_STATUS:
            event_disp: str | None = _DISPOSITION[status]
        else:
            event_disp = disposition if isinstance(disposition, str) else None
        bt_type = bt_type or _TXN_TYPE.get(tr.step)
        txns: tuple[tuple[str, str], ...] = ()
        key: object = tr.at
        if tr.txn and tr.step in (Step.COUNT, Step.TAKEOVER):
            key = f"count:{tr.txn}"
        elif tr.txn and bt_type:
            txns = ((bt_type, biz_transaction_uri(tr.txn, tr.site_sgln)),)
            key = f"{bt_type}:{tr.txn}"
        event = ItemEvent(
            event_id=stable_event_id(tr.site, tr.epc, biz_step, key),
            event_time=tr.at,
            action=action,
            epcs=(tr.epc,),
            biz_step=biz_step,
            disposition=event_disp,
            read_point=tr.read_point or tr.site_sgln,
            biz_location=None if tr.step in _LEAVES_SITE else tr.site_sgln,
            biz_transactions=txns,
            zone=tr.zone,
            parent_id=tr.parent_id if tr.step is Step.PACK else None,
            kind="AggregationEvent" if tr.step is Step.PACK and tr.parent_id else "ObjectEvent",
            extensions=dict(extensions or {}),
        )
        state_disp = event_disp if event_disp is not None else (s.disposition if s else "")
        fields: dict[str, object] = {
            "status": status,
            "disposition": state_disp,
            "since": tr.at,
            "biz_step": biz_step,
            "site": tr.site,
            "destination": None,
        }
        if status is not Status.HELD:  # a hold ends with whatever ends the reservation
            fields["hold"] = None
            fields["held_from"] = None
        fields.update(changes)
        if s is None:
            base = ItemState(
                epc=tr.epc, status=status, disposition=state_disp, site=tr.site, since=tr.at
            )
        else:
            base = s
        new = replace(base, **fields)  # type: ignore[arg-type]
        return Outcome(accepted=True, state=new, events=(event,), note=note, note_code=note_code)


_HANDLERS = {
    Step.COMMISSION: Lifecycle._commission,
    Step.PACK: Lifecycle._pack,
    Step.SHIP: Lifecycle._ship,
    Step.RECEIVE: Lifecycle._receive,
    Step.STOCK: Lifecycle._stock,
    Step.STORE: Lifecycle._store,
    Step.SELL: Lifecycle._sell,
    Step.RETURN: Lifecycle._return,
    Step.REPAIR_IN: Lifecycle._repair_in,
    Step.REPAIR_OUT: Lifecycle._repair_out,
    Step.LOAN_OUT: Lifecycle._loan_out,
    Step.LOAN_BACK: Lifecycle._loan_back,
    Step.TRANSFER_OUT: Lifecycle._ship,
    Step.TRANSFER_IN: Lifecycle._transfer_in,
    Step.EXIT_UNSOLD: Lifecycle._exit_unsold,
    Step.DESTROY: Lifecycle._destroy,
    Step.DECOMMISSION: Lifecycle._decommission,
    Step.COUNT: Lifecycle._count,
    Step.TAKEOVER: Lifecycle._takeover,
    Step.HOLD: Lifecycle._hold,
    Step.RELEASE: Lifecycle._release,
    Step.COLLECT: Lifecycle._collect,
    Step.RESTOCK: Lifecycle._restock,
    Step.REINSTATE: Lifecycle._reinstate,
}

_SHELF_STEP = {Status.ON_FLOOR: "stocking", Status.IN_STOCK: "storing"}


def _stock_status(zone_kind: str | None) -> Status:
    """Sellable stock in a zone of this kind: on the floor (display) or in the stockroom."""
    return Status.ON_FLOOR if zone_kind in FLOOR_KINDS else Status.IN_STOCK


def _check(
    s: ItemState | None, tr: Transition, allowed: set[Status] | frozenset[Status]
) -> str | None:
    """Why `tr` cannot apply to `s` (None if it can): the item must be here and allowed."""
    if s is None:
        return "unknown item: not on record at this site"
    if s.status not in allowed:
        return _describe(s)
    if s.site != tr.site:
        return f"the item is at site {s.site}, not here ({tr.site})"
    return None


def _describe(s: ItemState) -> str:
    match s.status:
        case Status.SOLD:
            return f"sold in transaction {s.sale_txn}" if s.sale_txn else "sold"
        case Status.IN_TRANSIT:
            return f"in transit to {s.destination}"
        case Status.ON_LOAN:
            return f"on loan until {_iso(s.loan_due)}"
        case Status.MISSING:
            return "suspected stolen (left through the exit unsold)"
        case Status.HELD:
            who = f" for client {s.hold.client}" if s.hold is not None else ""
            return f"held{who}"
        case Status.AWAITING_COLLECTION:
            return f"sold in transaction {s.sale_txn}, awaiting collection"
        case _:
            return s.status.value.replace("_", " ")


def _reject(s: ItemState | None, tr: Transition, why: str, code: str | None = None) -> Outcome:
    return Outcome(accepted=False, state=s, reason=f"{tr.step.value} rejected for {tr.epc}: {why}",
                   reason_code=code)


def _iso(t: float | None) -> str:
    if t is None:
        return "?"
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# Statuses whose moves between stockroom and floor are stocking/storing steps.
STOCK_STATUSES = frozenset({Status.IN_STOCK, Status.ON_FLOOR, Status.RETURNED})
# Statuses of items expected to walk out (no exit alert); MISSING was alerted already.
LEAVE_STATUSES = frozenset({Status.SOLD, Status.ON_LOAN, Status.IN_TRANSIT, Status.MISSING})


def may_leave(state: ItemState | None) -> bool:
    """The exit rule: an item this site sold, lent, shipped, or repairs for a customer leaves
    without an alert; stock, and items the books do not hold, do not."""
    if state is None:
        return False
    if state.status is Status.IN_REPAIR:
        return state.after_repair is Status.SOLD
    return state.status in LEAVE_STATUSES
