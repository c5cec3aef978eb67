"""The books: the lifecycle record of items at this site, loaded in bulk.

One query per table (lifecycle_items, items) per 2,000 EPCs: the ingest loads the records of a
whole batch at once, and every command loads the items it names the same way. Another writer of
`items.disposition` (the store-operations reception) is honoured: an item without lifecycle
state, or whose disposition was changed by someone else since the lifecycle last wrote it, takes
its state from `items.disposition` ("adoption").
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

from sqlalchemy import Row, func, insert, select, update
from sqlalchemy.orm import Session

from inventory.epc import decode
from inventory.events import ItemEvent
from inventory.lifecycle import Hold, ItemState, Status, Step
from rfidd.context import ServiceContext
from rfidd.lifecycle.models import LifecycleApplied, LifecycleItem
from rfidd.store import hot, repo
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


# A lifecycle_items row as read (attribute access by column name): LifecycleItem or a Row.
BookRow = Any
_IN_CHUNK = 2000  # EPCs per IN list: well under SQLite's and PostgreSQL's parameter limits


def state_of(row: BookRow) -> ItemState:
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


_STATE_COLUMNS = ("status", "disposition", "site", "since", "biz_step", "destination",
                  "shipment", "sale_txn", "loan_due", "after_repair", "counted_at",
                  "hold_client", "hold_staff", "hold_until", "hold_for_site", "held_from",
                  "updated")


def row_values(st: ItemState, now: float) -> dict[str, Any]:
    """The lifecycle_items columns of a state (all but tid and home_zone)."""
    h = st.hold
    return {
        "epc": st.epc, "status": st.status.value, "disposition": st.disposition,
        "site": st.site, "since": st.since, "biz_step": st.biz_step,
        "destination": st.destination, "shipment": st.shipment, "sale_txn": st.sale_txn,
        "loan_due": st.loan_due,
        "after_repair": st.after_repair.value if st.after_repair else None,
        "counted_at": st.counted_at,
        "hold_client": h.client if h else None, "hold_staff": h.staff if h else None,
        "hold_until": h.until if h else None, "hold_for_site": h.for_site if h else None,
        "held_from": st.held_from.value if st.held_from else None, "updated": now,
    }


def _insert(s: Session, table: Any) -> Any:
    name = s.get_bind().dialect.name
    if name == "sqlite":  # imported per site: an SQLite site never loads the PostgreSQL one
        from sqlalchemy.dialects import sqlite

        return sqlite.insert(table)
    if name == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(table)
    raise NotImplementedError(f"dialect {name} is not supported")


Raw = tuple[dict[str, BookRow], dict[str, tuple[str | None, str | None, float]]]


def load_raw(s: Session, epcs: Sequence[str]) -> Raw:
    """The lifecycle rows and the items' (disposition, biz_step, updated) of `epcs`, as read
    (plain rows, not ORM objects: a count of 100,000 items loads them in one pass)."""
    rows: dict[str, BookRow] = {}
    items: dict[str, tuple[str | None, str | None, float]] = {}
    t = LifecycleItem.__table__
    for i in range(0, len(epcs), _IN_CHUNK):
        part = list(epcs[i:i + _IN_CHUNK])
        rows.update((r.epc, r) for r in s.execute(select(t).where(t.c.epc.in_(part))))
        items.update((e, (d, b, u)) for e, d, b, u in s.execute(
            select(Item.epc, Item.disposition, Item.biz_step, Item.updated)
            .where(Item.epc.in_(part))))
    return rows, items


def states_of(epcs: Sequence[str], raw: Raw, site: str) -> dict[str, ItemState | None]:
    """The state of each of `epcs` (None: not on the books) from what `load_raw` read."""
    rows, items = raw
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
    return states


def load(s: Session, epcs: Sequence[str], site: str
         ) -> tuple[dict[str, ItemState | None], dict[str, BookRow]]:
    """The state of each of `epcs` (None: not on the books) and the lifecycle rows found."""
    raw = load_raw(s, epcs)
    return states_of(epcs, raw, site), raw[0]


def load_states(s: Session, epcs: Sequence[str], site: str) -> dict[str, ItemState | None]:
    """`load` without the rows: the ingest's view of a batch, read as plain rows in plain SQL
    (no ORM identity map, no per-statement build: the view only reads them, once per batch)."""
    t = LifecycleItem.__table__
    cols = ", ".join(c.name for c in t.c)
    mark = hot.placeholder(s)
    conn = s.connection()
    rows: dict[str, Row[Any]] = {}
    items: dict[str, tuple[str | None, str | None, float]] = {}
    for i in range(0, len(epcs), 500):
        part = tuple(epcs[i:i + 500])
        marks = ", ".join([mark] * len(part))
        rows.update((r.epc, r) for r in conn.exec_driver_sql(
            f"SELECT {cols} FROM {LifecycleItem.__tablename__} WHERE epc IN ({marks})", part))
        items.update((e, (d, b, u)) for e, d, b, u in conn.exec_driver_sql(
            f"SELECT epc, disposition, biz_step, updated FROM items WHERE epc IN ({marks})",
            part))
    return states_of(epcs, (rows, items), site)


def adopt(epc: str, disposition: str, biz_step: str | None, since: float,
          row: BookRow | None, site: str) -> ItemState:
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


def describe(st: ItemState, row: BookRow | None) -> dict[str, object]:
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


def write_rows(s: Session, new_states: dict[str, ItemState],
               tids: dict[str, str | None] | None = None) -> None:
    """The lifecycle rows, written after the items rows (never older than them): one
    INSERT ... ON CONFLICT DO UPDATE for all of them (a bound TID is kept unless a new one
    is given; home_zone is set_home_zones')."""
    if not new_states:
        return
    now = time.time()
    params = []
    for epc, st in new_states.items():
        v = row_values(st, now)
        v["tid"] = tids.get(epc) or None if tids else None
        params.append(v)
    t = LifecycleItem.__table__
    ins = _insert(s, t)
    ex = ins.excluded
    set_ = {c: ex[c] for c in _STATE_COLUMNS}
    set_["tid"] = func.coalesce(ex.tid, t.c.tid)
    s.execute(ins.on_conflict_do_update(index_elements=[t.c.epc], set_=set_), params)


def set_home_zones(s: Session, zone_of: dict[str, str]) -> None:
    """The last stock or floor zone of each item the books hold (where a loss is from)."""
    by_zone: dict[str, list[str]] = {}
    for epc, zone in zone_of.items():
        by_zone.setdefault(zone, []).append(epc)
    for zone, epcs in by_zone.items():
        for i in range(0, len(epcs), _IN_CHUNK):
            s.execute(update(LifecycleItem).where(LifecycleItem.epc.in_(epcs[i:i + _IN_CHUNK]))
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

    def commit(self, s: Session, new_states: dict[str, ItemState],
               events: Sequence[ItemEvent], messages: Sequence[repo.Message],
               applied: Iterable[tuple[str, Step, str, str]],
               tids: dict[str, str | None] | None = None,
               records: Sequence[repo.EventRecord] | None = None) -> None:
        """`records`: the events already encoded (`ctx.records(events)`)."""
        self.ctx.stage(s, events, messages, item_upserts(new_states), records=records)
        write_rows(s, new_states, tids)
        now = time.time()
        done = [{"epc": epc, "step": step.value, "txn": txn, "event_id": event_id,
                 "applied_at": now} for epc, step, txn, event_id in applied]
        if done:  # a Core insert: no ORM object per row
            table: Any = LifecycleApplied.__table__
            s.execute(insert(table), done)

    set_home_zones = staticmethod(set_home_zones)

    @staticmethod
    def mark_counted(s: Session, epcs: Sequence[str], at: float) -> None:
        """Items a count observed where the books have them: only the time changes."""
        for i in range(0, len(epcs), _IN_CHUNK):
            s.execute(update(LifecycleItem).where(LifecycleItem.epc.in_(epcs[i:i + _IN_CHUNK]))
                      .values(counted_at=at).execution_options(synchronize_session=False))

    @staticmethod
    def home_zones(s: Session, epcs: Sequence[str]) -> dict[str, str | None]:
        out: dict[str, str | None] = {}
        for i in range(0, len(epcs), _IN_CHUNK):
            out.update((e, z) for e, z in s.execute(
                select(LifecycleItem.epc, LifecycleItem.home_zone)
                .where(LifecycleItem.epc.in_(list(epcs[i:i + _IN_CHUNK])))))
        return out
