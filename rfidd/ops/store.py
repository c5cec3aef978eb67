"""Database access of store operations (the tables in rfidd.ops.models, plus reads of the core
tables). Functions take the caller's Session so a report, its events and its outbox message share
one transaction.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any, NamedTuple

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from inventory.asn import Asn, parse_asn_object
from inventory.catalog import Catalog, Product, gtin_check_digit
from rfidd.lifecycle.models import AlertRecord
from rfidd.ops.models import (
    OpsAsn,
    OpsCountSchedule,
    OpsCountSession,
    OpsReceptionSession,
    OpsState,
)
from rfidd.store.models import Event, Item, ZonePresence
from rfidd.store.models import Product as ProductRow

# Dispositions of items that are not stock of this site: a count does not expect them.
NOT_IN_STOCK = ("retail_sold", "in_transit", "destroyed", "inactive")
SOLD = "retail_sold"
# The alert workflow's kind of an unsold item read at an exit (rfidd/lifecycle/service.py).
EXIT_ALERT_KIND = "exit_unsold"


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=_default)


def _default(o: object) -> object:
    if isinstance(o, Decimal):
        return str(o)
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    raise TypeError(f"{type(o).__name__} is not JSON-serialisable")


# -- catalog ------------------------------------------------------------------------------------
def load_catalog(s: Session) -> Catalog:
    """The products table as the domain's Catalog. A row without a price or currency gets
    price 0 and currency "" so reports list it as unpriced instead of valuing it at 0."""
    products = []
    for r in s.scalars(select(ProductRow)):
        products.append(Product(
            gtin14=r.gtin, sku=r.sku or "", name=r.name or "", size=r.size or "",
            colour=r.colour or "", category=r.category or "",
            price=r.price if r.price is not None else Decimal(0),
            currency=r.currency if r.price is not None and r.currency else "",
            cost=r.cost,
        ))
    return Catalog(products)


# -- ASNs ---------------------------------------------------------------------------------------
def asn_hash(s: Session, asn_id: str) -> str | None:
    return s.scalar(select(OpsAsn.content_hash).where(OpsAsn.asn_id == asn_id))


def insert_asn(s: Session, asn: Asn, source: str, now: float) -> None:
    s.add(OpsAsn(
        asn_id=asn.asn_id, content_hash=asn.content_hash, origin=asn.origin,
        destination=asn.destination, shipped_at=asn.shipped_at.timestamp(),
        expected_items=asn.expected_items, document=dumps(asn.to_dict()), source=source[:256],
        imported_at=now,
    ))
    s.flush()


def load_asns(s: Session, asn_ids: Sequence[str]) -> dict[str, tuple[Asn, str | None]]:
    """ASNs by id with the reception session that used them (ids not stored are absent)."""
    out: dict[str, tuple[Asn, str | None]] = {}
    for row in s.scalars(select(OpsAsn).where(OpsAsn.asn_id.in_(list(asn_ids)))):
        res = parse_asn_object(json.loads(row.document), source=f"ops_asns[{row.asn_id}]")
        if not res.asns:  # stored by us, so this means the table was edited by hand
            raise ValueError(f"stored ASN {row.asn_id} no longer parses: "
                             + "; ".join(str(e) for e in res.errors))
        out[row.asn_id] = (res.asns[0], row.session_id)
    return out


def asn_summary(s: Session, asn_id: str) -> dict[str, Any] | None:
    row = s.get(OpsAsn, asn_id)
    if row is None:
        return None
    return {"asn_id": row.asn_id, "origin": row.origin, "destination": row.destination,
            "shipped_at": row.shipped_at, "expected_items": row.expected_items,
            "imported_at": row.imported_at, "source": row.source, "session_id": row.session_id,
            "content_hash": row.content_hash}


def set_asn_session(s: Session, asn_ids: Iterable[str], session_id: str) -> None:
    s.execute(update(OpsAsn).where(OpsAsn.asn_id.in_(list(asn_ids)))
              .values(session_id=session_id))


# -- reception sessions -------------------------------------------------------------------------
def insert_reception(s: Session, session_id: str, asn_ids: Sequence[str], opened_by: str,
                     opened_at: float) -> None:
    s.add(OpsReceptionSession(id=session_id, status="open", asn_ids=dumps(list(asn_ids)),
                              opened_by=opened_by, opened_at=opened_at))
    s.flush()


def update_reception_asns(s: Session, session_id: str, asn_ids: Sequence[str]) -> None:
    s.execute(update(OpsReceptionSession).where(OpsReceptionSession.id == session_id)
              .values(asn_ids=dumps(list(asn_ids))))


def close_reception(s: Session, session_id: str, closed_at: float, doc: Mapping[str, Any],
                    text: str | None = None) -> None:
    """`text`: the report already serialised (`dumps(doc)`)."""
    s.execute(update(OpsReceptionSession).where(OpsReceptionSession.id == session_id).values(
        status="closed", closed_at=closed_at, totals=dumps(doc.get("totals")),
        report=dumps(doc) if text is None else text))


def closing_reception(s: Session, session_id: str, done: int, of: int) -> None:
    """A reception being closed chunk by chunk: how many items are received (until its
    report)."""
    s.execute(update(OpsReceptionSession).where(OpsReceptionSession.id == session_id).values(
        status="closing", totals=dumps({"closing": {"received": done, "of": of}})))


def partial_receptions(s: Session, now: float) -> dict[str, Any]:
    """Receptions a previous process was closing: some items received, no report sent;
    marked partial. Returns id -> how far it got."""
    partial = {i: json.loads(t or "{}").get("closing") for i, t in s.execute(
        select(OpsReceptionSession.id, OpsReceptionSession.totals)
        .where(OpsReceptionSession.status == "closing"))}
    if partial:
        s.execute(update(OpsReceptionSession)
                  .where(OpsReceptionSession.id.in_(list(partial)))
                  .values(status="partial", closed_at=now))
    return partial


def open_receptions(s: Session) -> list[OpsReceptionSession]:
    return list(s.scalars(select(OpsReceptionSession)
                          .where(OpsReceptionSession.status == "open")
                          .order_by(OpsReceptionSession.opened_at)))


def reception_rows(s: Session, limit: int = 50) -> list[dict[str, Any]]:
    rows = s.scalars(select(OpsReceptionSession)
                     .order_by(OpsReceptionSession.opened_at.desc()).limit(limit))
    return [{"session_id": r.id, "status": r.status, "asn_ids": json.loads(r.asn_ids),
             "opened_by": r.opened_by, "opened_at": r.opened_at, "closed_at": r.closed_at,
             "totals": json.loads(r.totals) if r.totals else None} for r in rows]


def reception_report(s: Session, session_id: str) -> dict[str, Any] | None:
    row = s.get(OpsReceptionSession, session_id)
    if row is None or row.report is None:
        return None
    doc: dict[str, Any] = json.loads(row.report)
    return doc


# -- count sessions -----------------------------------------------------------------------------
def load_book(s: Session) -> tuple[dict[str, str], dict[str, str | None]]:
    """(epc -> booked zone, epc -> GTIN) of every item this site has in stock.

    The items table is the book: each item's last zone, kept after it stops being read (so an
    item that vanished is still expected where it was). Sold, shipped and destroyed items are
    not stock. The GTIN column saves decoding a million EPCs at count start.
    """
    book: dict[str, str] = {}
    gtins: dict[str, str | None] = {}
    stmt = (select(Item.epc, Item.zone, Item.gtin)
            .where(Item.zone.is_not(None))
            .where((Item.disposition.is_(None)) | (Item.disposition.not_in(NOT_IN_STOCK))))
    for epc, zone, gtin in s.execute(stmt.execution_options(yield_per=50_000)):
        book[epc] = zone or ""
        gtins[epc] = gtin
    return book, gtins


def insert_count(s: Session, count_id: str, zones: Sequence[str], trigger: str,
                 started_at: float, expected: int) -> None:
    s.add(OpsCountSession(id=count_id, status="running", zones=dumps(list(zones)),
                          trigger=trigger, started_at=started_at, expected=expected))
    s.flush()


def finish_count(s: Session, count_id: str, finished_at: float, doc: Mapping[str, Any],
                 accuracy: float | None, text: str | None = None) -> None:
    """`text`: the report already serialised (`dumps(doc)`)."""
    s.execute(update(OpsCountSession).where(OpsCountSession.id == count_id).values(
        status="finished", finished_at=finished_at, totals=dumps(doc.get("totals")),
        report=dumps(doc) if text is None else text, accuracy=accuracy))


def closing_count(s: Session, count_id: str, booked: int, of: int) -> None:
    """A count being closed chunk by chunk: how far its books are (until its report)."""
    s.execute(update(OpsCountSession).where(OpsCountSession.id == count_id).values(
        status="closing", totals=dumps({"closing": {"booked": booked, "of": of}})))


def abort_running_counts(s: Session, now: float) -> tuple[list[str], dict[str, Any]]:
    """Counts left running by a previous process: their sightings were in memory, so they
    cannot be finished; marked aborted so nobody waits for them. Counts it was closing are
    marked partial: some of their items were booked, their report never sent. Returns
    (aborted ids, partial id -> how far it got)."""
    ids = list(s.scalars(select(OpsCountSession.id).where(OpsCountSession.status == "running")))
    if ids:
        s.execute(update(OpsCountSession).where(OpsCountSession.id.in_(ids))
                  .values(status="aborted", finished_at=now))
    partial = {i: json.loads(t or "{}").get("closing") for i, t in s.execute(
        select(OpsCountSession.id, OpsCountSession.totals)
        .where(OpsCountSession.status == "closing"))}
    if partial:
        s.execute(update(OpsCountSession).where(OpsCountSession.id.in_(list(partial)))
                  .values(status="partial", finished_at=now))
    return ids, partial


def count_rows(s: Session, limit: int = 50) -> list[dict[str, Any]]:
    rows = s.scalars(select(OpsCountSession).order_by(OpsCountSession.started_at.desc())
                     .limit(limit))
    return [{"session_id": r.id, "status": r.status, "zones": json.loads(r.zones),
             "trigger": r.trigger, "started_at": r.started_at, "finished_at": r.finished_at,
             "expected": r.expected, "record_accuracy": r.accuracy,
             "totals": json.loads(r.totals) if r.totals else None} for r in rows]


def count_report(s: Session, count_id: str) -> dict[str, Any] | None:
    row = s.get(OpsCountSession, count_id)
    if row is None or row.report is None:
        return None
    doc: dict[str, Any] = json.loads(row.report)
    return doc


def count_status(s: Session, count_id: str) -> str | None:
    return s.scalar(select(OpsCountSession.status).where(OpsCountSession.id == count_id))


# -- schedules ----------------------------------------------------------------------------------
def add_schedule(s: Session, cron: str, zones: Sequence[str], duration_s: float,
                 now: float) -> int:
    row = OpsCountSchedule(cron=cron, zones=dumps(list(zones)), duration_s=duration_s,
                           created_at=now)
    s.add(row)
    s.flush()
    return int(row.id)


def schedules(s: Session) -> list[dict[str, Any]]:
    return [{"id": r.id, "cron": r.cron, "zones": json.loads(r.zones),
             "duration_s": r.duration_s, "created_at": r.created_at}
            for r in s.scalars(select(OpsCountSchedule).order_by(OpsCountSchedule.id))]


def delete_schedule(s: Session, schedule_id: int) -> bool:
    row = s.get(OpsCountSchedule, schedule_id)
    if row is None:
        return False
    s.delete(row)
    return True


# -- items, exits, sales ------------------------------------------------------------------------
def _item_column(s: Session, column: Any, epcs: Sequence[str]) -> dict[str, str | None]:
    """epc -> one items column, in chunks that stay under the databases' parameter limits."""
    out: dict[str, str | None] = {}
    for i in range(0, len(epcs), 500):
        part = list(epcs[i:i + 500])
        out.update({e: v for e, v in s.execute(
            select(Item.epc, column).where(Item.epc.in_(part)))})
    return out


def dispositions(s: Session, epcs: Sequence[str]) -> dict[str, str | None]:
    return _item_column(s, Item.disposition, epcs)


def item_zones(s: Session, epcs: Sequence[str]) -> dict[str, str | None]:
    return _item_column(s, Item.zone, epcs)


class Whereabouts(NamedTuple):
    """Where an item is: `here` the zone a reader sees it in now (None: not present), else
    the zone and time it was last seen."""

    here: str | None
    zone: str | None
    last_seen: float | None


def whereabouts(s: Session, epcs: Sequence[str]) -> dict[str, Whereabouts]:
    """epc -> its whereabouts, for the items the books know (in chunks, as _item_column)."""
    out: dict[str, Whereabouts] = {}
    for i in range(0, len(epcs), 500):
        part = list(epcs[i:i + 500])
        out.update({epc: Whereabouts(here, zone, seen) for epc, here, zone, seen in s.execute(
            select(Item.epc, ZonePresence.zone, Item.zone, Item.last_seen)
            .outerjoin(ZonePresence, ZonePresence.epc == Item.epc)
            .where(Item.epc.in_(part)))})
    return out


def exit_alerts(s: Session, start: float, end: float) -> list[tuple[str, str, str, float]]:
    """(alert_id, epc, zone, at) of exit alerts raised in [start, end), oldest first: the
    alert workflow's rows (one table for the page, HQ and the shrinkage report)."""
    stmt = (select(AlertRecord.alert_id, AlertRecord.epc, AlertRecord.zone,
                   AlertRecord.raised_at)
            .where(AlertRecord.kind == EXIT_ALERT_KIND, AlertRecord.raised_at >= start,
                   AlertRecord.raised_at < end)
            .order_by(AlertRecord.raised_at))
    return [(a, e, z or "", t) for a, e, z, t in s.execute(stmt)]


def gtin_of_uri(uri: str) -> str | None:
    """GTIN-14 of an SGTIN pure-identity URI (urn:epc:id:sgtin:CP.IR.serial); None otherwise."""
    prefix = "urn:epc:id:sgtin:"
    if not uri.startswith(prefix):
        return None
    parts = uri[len(prefix):].split(".")
    if len(parts) != 3 or not (parts[0] + parts[1]).isdigit() or len(parts[0] + parts[1]) != 13:
        return None
    cp, ir = parts[0], parts[1]
    body = ir[0] + cp + ir[1:]
    return body + str(gtin_check_digit(body))


def sales_value(s: Session, start: float, end: float, catalog: Mapping[str, Product],
                currency: str) -> tuple[Decimal, int]:
    """(value at retail price, items) of `retail_selling` events in [start, end)."""
    stmt = select(Event.payload).where(Event.biz_step == "retail_selling",
                                       Event.event_time >= start, Event.event_time < end)
    return _retail_value(s, stmt, catalog, currency)


def returns_value(s: Session, start: float, end: float, catalog: Mapping[str, Product],
                  currency: str) -> tuple[Decimal, int]:
    """(value at retail price, items) of customer returns (`receiving`, disposition
    `returned`) in [start, end): what net sales deduct."""
    stmt = select(Event.payload).where(Event.biz_step == "receiving",
                                       Event.disposition == "returned",
                                       Event.event_time >= start, Event.event_time < end)
    return _retail_value(s, stmt, catalog, currency)


# -- state --------------------------------------------------------------------------------------
def load_state(s: Session, key: str) -> Any:
    row = s.get(OpsState, key)
    return None if row is None else json.loads(row.value)


def save_state(s: Session, key: str, value: Any, now: float | None = None) -> None:
    now = time.time() if now is None else now
    row = s.get(OpsState, key)
    if row is None:
        s.add(OpsState(key=key, value=dumps(value), updated=now))
    else:
        row.value = dumps(value)
        row.updated = now
    s.flush()


def hex_by_uri(s: Session) -> dict[str, str]:
    """Pure-identity URI -> EPC hex of every item this site has decoded."""
    return {u: e for e, u in s.execute(select(Item.epc, Item.epc_uri)
                                       .where(Item.epc_uri.is_not(None))) if u is not None}


def _retail_value(s: Session, stmt: Any, catalog: Mapping[str, Product],
                  currency: str) -> tuple[Decimal, int]:
    """(value at retail price in `currency`, items) of the events `stmt` selects."""
    total, n = Decimal(0), 0
    for (payload,) in s.execute(stmt):
        try:
            epcs = json.loads(payload).get("epcList", [])
        except (ValueError, AttributeError):
            continue
        for uri in epcs:
            g = gtin_of_uri(uri) if isinstance(uri, str) else None
            p = catalog.get(g) if g else None
            n += 1
            if p is not None and p.currency == currency:
                total += p.price
    return total, n
