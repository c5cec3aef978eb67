"""The books: the lifecycle record of items at this site, loaded in bulk.

One query per table (lifecycle_items, items) per 500 EPCs: the ingest loads the records of a
whole batch at once, and every command loads the items it names the same way. Another writer of
`items.disposition` (the store-operations reception) is honoured: an item without lifecycle
state, or whose disposition was changed by someone else since the lifecycle last wrote it, takes
its state from `items.disposition` ("adoption").
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import NamedTuple

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from inventory.epc import decode
from inventory.events import ItemEvent
from inventory.lifecycle import Hold, ItemState, Status, Step
from rfidd.context import ServiceContext
from rfidd.lifecycle.models import LifecycleApplied, LifecycleItem
from rfidd.store import repo
from rfidd.store.models import Item

# items.disposition written by another service -> the lifecycle status it stands for.
_ADOPT: dict[str, Status] = {
    "active": Status.COMMISSIONED,
    "in_progress": Status.PACKED,
    "in_transit": Status.IN_TRANSIT,
    "sellable_not_accessible": Status.IN_STOCK,
    "sellable_accessible": Status.ON_FLOOR,
    "retail_sold": Status.SOLD,
    "returned": Status.RETURNED,
    "needs_replacement": Status.IN_REPAIR,
    "available": Status.IN_STOCK,
    "stolen": Status.MISSING,
    "reserved": Status.HELD,
    "destroyed": Status.DESTROYED,
    "inactive": Status.DECOMMISSIONED,
}


def state_of(row: LifecycleItem) -> ItemState:
    return ItemState(
        epc=row.epc, status=Status(row.status), disposition=row.disposition, site=row.site,
        since=row.since, biz_step=row.biz_step, destination=row.destination,
        shipment=row.shipment, sale_txn=row.sale_txn, loan_due=row.loan_due,
        after_repair=Status(row.after_repair) if row.after_repair else None,
        counted_at=row.counted_at,
        hold=Hold(row.hold_client, row.hold_staff, row.hold_until, row.hold_for_site)
        if row.hold_client else None,
        held_from=Status(row.held_from) if row.held_from else None,
    )


def write_row(row: LifecycleItem, st: ItemState, now: float) -> None:
    row.status = st.status.value
    row.disposition = st.disposition
    row.site = st.site
    row.since = st.since
    row.biz_step = st.biz_step
    row.destination = st.destination
    row.shipment = st.shipment
    row.sale_txn = st.sale_txn
    row.loan_due = st.loan_due
    row.after_repair = st.after_repair.value if st.after_repair else None
    row.counted_at = st.counted_at
    h = st.hold
    row.hold_client = h.client if h else None
    row.hold_staff = h.staff if h else None
    row.hold_until = h.until if h else None
    row.hold_for_site = h.for_site if h else None
    row.held_from = st.held_from.value if st.held_from else None
    row.updated = now


def load(s: Session, epcs: Sequence[str], site: str
         ) -> tuple[dict[str, ItemState | None], dict[str, LifecycleItem]]:
    """The state of each of `epcs` (None: not on the books) and the lifecycle rows found."""
    rows: dict[str, LifecycleItem] = {}
    items: dict[str, tuple[str | None, str | None, float]] = {}
    for i in range(0, len(epcs), 500):
        part = list(epcs[i:i + 500])
        rows.update((r.epc, r) for r in s.scalars(
            select(LifecycleItem).where(LifecycleItem.epc.in_(part))))
        items.update((e, (d, b, u)) for e, d, b, u in s.execute(
            select(Item.epc, Item.disposition, Item.biz_step, Item.updated)
            .where(Item.epc.in_(part))))
    states: dict[str, ItemState | None] = {}
    for epc in epcs:
        row = rows.get(epc)
        it = items.get(epc)
        if row is not None and not (it and it[0] and it[0] != row.disposition
                                    and it[2] > row.updated):
            states[epc] = state_of(row)
        elif it is not None and it[0] in _ADOPT:
            states[epc] = adopt(epc, it[0], it[1], it[2], row, site)
        else:
            states[epc] = state_of(row) if row is not None else None
    return states, rows


def load_states(s: Session, epcs: Sequence[str], site: str) -> dict[str, ItemState | None]:
    """`load` without the rows: the ingest's view of a batch."""
    return load(s, epcs, site)[0]


def adopt(epc: str, disposition: str, biz_step: str | None, since: float,
          row: LifecycleItem | None, site: str) -> ItemState:
    """The state `items.disposition`, written by another service, stands for."""
    status = _ADOPT[disposition]
    if row is not None and status is Status.IN_TRANSIT and row.destination:
        return state_of(row)
    return ItemState(
        epc=epc, status=status, disposition=disposition,
        site=None if status is Status.IN_TRANSIT else site, since=since,
        biz_step=biz_step,
        destination=site if status is Status.IN_TRANSIT else None,
        after_repair=Status.IN_STOCK if status is Status.IN_REPAIR else None,
    )


class Held(NamedTuple):
    """An item held for a client: who for, since and until when."""

    epc: str
    client: str | None
    since: float
    until: float | None


def held(s: Session, limit: int) -> list[Held]:
    """The items held for a client, oldest hold first (at most `limit`)."""
    li = LifecycleItem
    return [Held(*r) for r in s.execute(
        select(li.epc, li.hold_client, li.since, li.hold_until)
        .where(li.status == Status.HELD.value).order_by(li.since).limit(limit))]


def describe(st: ItemState, row: LifecycleItem | None) -> dict[str, object]:
    """One item's state as the API shows it."""
    def iso(t: float | None) -> str | None:
        return None if t is None else datetime.fromtimestamp(t, UTC).isoformat(
            timespec="milliseconds").replace("+00:00", "Z")

    h = st.hold
    return {
        "epc": st.epc, "status": st.status.value, "disposition": st.disposition,
        "site": st.site, "since": iso(st.since), "biz_step": st.biz_step,
        "destination": st.destination, "shipment": st.shipment, "sale_txn": st.sale_txn,
        "loan_due": iso(st.loan_due),
        "hold": None if h is None else {"client": h.client, "staff": h.staff,
                                        "until": iso(h.until), "for_site": h.for_site},
        "home_zone": row.home_zone if row is not None else None,
        "tid": row.tid if row is not None else None,
    }


def item_upserts(new_states: dict[str, ItemState]) -> list[repo.ItemUpsert]:
    """The coarse items.biz_step/disposition every service reads."""
    upserts = []
    for epc, st in new_states.items():
        d = decode(epc)
        upserts.append(repo.ItemUpsert(
            epc=epc, biz_step=st.biz_step, disposition=st.disposition, epc_uri=d.uri,
            gtin=d.gtin14, serial=d.serial_text))
    return upserts


def write_rows(s: Session, rows: dict[str, LifecycleItem], new_states: dict[str, ItemState],
               tids: dict[str, str | None] | None = None) -> None:
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


def set_home_zones(s: Session, zone_of: dict[str, str]) -> None:
    """The last stock or floor zone of each item the books hold (where a loss is from)."""
    by_zone: dict[str, list[str]] = {}
    for epc, zone in zone_of.items():
        by_zone.setdefault(zone, []).append(epc)
    for zone, epcs in by_zone.items():
        for i in range(0, len(epcs), 500):
            s.execute(update(LifecycleItem).where(LifecycleItem.epc.in_(epcs[i:i + 500]))
                      .values(home_zone=zone).execution_options(synchronize_session=False))


class Books:
    """The books in a service's transaction (no lock of its own: callers hold the domain
    lock): load, write with the events and messages of the step, what counts need."""

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.site = ctx.config.site.id

    def load(self, s: Session, epcs: Sequence[str]
             ) -> tuple[dict[str, ItemState | None], dict[str, LifecycleItem]]:
        return load(s, epcs, self.site)

    @staticmethod
    def applied(s: Session, step: Step, txn: str) -> dict[str, str]:
        q = select(LifecycleApplied.epc, LifecycleApplied.event_id).where(
            LifecycleApplied.step == step.value, LifecycleApplied.txn == txn)
        return {e: ev for e, ev in s.execute(q)}

    def commit(self, s: Session, rows: dict[str, LifecycleItem],
               new_states: dict[str, ItemState], events: Sequence[ItemEvent],
               messages: Sequence[repo.Message],
               applied: Iterable[tuple[str, Step, str, str]],
               tids: dict[str, str | None] | None = None) -> None:
        self.ctx.stage(s, events, messages, item_upserts(new_states))
        write_rows(s, rows, new_states, tids)
        now = time.time()
        for epc, step, txn, event_id in applied:
            s.add(LifecycleApplied(epc=epc, step=step.value, txn=txn, event_id=event_id,
                                   applied_at=now))

    set_home_zones = staticmethod(set_home_zones)

    @staticmethod
    def mark_counted(s: Session, epcs: Sequence[str], at: float) -> None:
        """Items a count observed where the books have them: only the time changes."""
        for i in range(0, len(epcs), 500):
            s.execute(update(LifecycleItem).where(LifecycleItem.epc.in_(epcs[i:i + 500]))
                      .values(counted_at=at).execution_options(synchronize_session=False))

    @staticmethod
    def home_zones(s: Session, epcs: Sequence[str]) -> dict[str, str | None]:
        out: dict[str, str | None] = {}
        for i in range(0, len(epcs), 500):
            out.update((e, z) for e, z in s.execute(
                select(LifecycleItem.epc, LifecycleItem.home_zone)
                .where(LifecycleItem.epc.in_(list(epcs[i:i + 500])))))
        return out
