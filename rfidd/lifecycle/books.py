"""The books: the lifecycle record of items at this site, loaded in bulk.

One query per table (lifecycle_items, items) per 500 EPCs: the ingest loads the records of a
whole batch at once, and every command loads the items it names the same way. Another writer of
`items.disposition` (the store-operations reception) is honoured: an item without lifecycle
state, or whose disposition was changed by someone else since the lifecycle last wrote it, takes
its state from `items.disposition` ("adoption").
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from inventory.lifecycle import ItemState, Status
from rfidd.lifecycle.models import LifecycleItem
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
