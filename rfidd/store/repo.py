"""Repository functions: every write of one ingest batch, the outbox queue, restart state.

Functions take a Session the caller opened (`Database.write()` / `Database.session()`), so one
transaction can span several of them. The hot paths are DB-API executemany statements compiled once
(rfidd.store.hot), not ORM unit-of-work flushes: thousands of rows per commit is the normal case.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from inventory.events import ItemEvent

from . import hot
from .models import Item, OutboxMessage, Product, ZonePresence

# The sequence and replay functions live in .sequence; callers reach them through repo too.
from .sequence import EPCIS_STREAM as EPCIS_STREAM
from .sequence import EPCIS_TOPIC as EPCIS_TOPIC
from .sequence import REPLAY_STREAM as REPLAY_STREAM
from .sequence import last_seq as last_seq
from .sequence import published_through as published_through
from .sequence import queue_replay as queue_replay
from .sequence import seq_since as seq_since
from .sequence import take_seq

if TYPE_CHECKING:
    from sqlalchemy.dialects import postgresql, sqlite

# Bound on bound parameters per statement chunk (SQLite's limit is 32766 since 3.32).
_IN_CHUNK = 500


class StoreInputError(ValueError):
    """A row handed to the store is malformed; the message names the row and the field."""


@dataclass(frozen=True, slots=True)
class ItemUpsert:
    """Create or update one item. None leaves the stored value unchanged."""

    epc: str
    seen_at: float | None = None  # widens first_seen/last_seen
    zone: str | None = None
    biz_step: str | None = None
    disposition: str | None = None
    epc_uri: str | None = None
    gtin: str | None = None
    serial: str | None = None


@dataclass(frozen=True, slots=True)
class PresenceRow:
    """The current zone of an item that is present (what `load_presence` gives back)."""

    epc: str
    zone: str
    since: float
    last_seen: float
    reader: str | None = None
    antenna: int | None = None
    rssi_dbm: float | None = None


@dataclass(frozen=True, slots=True)
class EventRecord:
    """A business event to journal and queue for HQ as EPCIS.

    `payload` is the JSON-able event dict handed later, unchanged, to the EPCIS document
    builder; the other fields are indexable metadata.
    """

    event_id: str
    event_time: float
    payload: Mapping[str, Any]
    kind: str = "ObjectEvent"
    action: str | None = None
    biz_step: str | None = None
    disposition: str | None = None
    zone: str | None = None
    epc_count: int = 0


@dataclass(frozen=True, slots=True)
class Message:
    """A non-EPCIS message for HQ (report, alert...). `topic` is the suffix after the site."""

    stream: str
    topic: str
    payload: Mapping[str, Any] | str
    event_id: str | None = None  # set it to make a replay of the message a no-op


@dataclass(frozen=True, slots=True)
class OutboxRow:
    id: int
    stream: str
    topic: str
    payload: str
    event_id: str | None
    created_at: float
    seq: int | None = None  # the journal's sequence number of an EPCIS row


@dataclass(slots=True)
class BatchResult:
    items: int = 0
    presence: int = 0
    departed: int = 0
    events: int = 0
    duplicate_events: list[str] = field(default_factory=list)
    messages: int = 0


def item_event_dict(ev: ItemEvent) -> dict[str, Any]:
    """An ItemEvent as plain JSON types (tuples -> lists, enums -> strings)."""
    d = dataclasses.asdict(ev)
    d["action"] = str(ev.action)
    d["epcs"] = list(ev.epcs)
    d["biz_transactions"] = [list(t) for t in ev.biz_transactions]
    return d


def event_record(ev: ItemEvent, payload: Mapping[str, Any] | None = None) -> EventRecord:
    """The EventRecord of a domain event; `payload` defaults to `item_event_dict(ev)`."""
    return EventRecord(
        event_id=ev.event_id,
        event_time=ev.event_time,
        payload=payload if payload is not None else item_event_dict(ev),
        kind=ev.kind,
        action=str(ev.action),
        biz_step=ev.biz_step,
        disposition=ev.disposition,
        zone=ev.zone,
        epc_count=len(ev.epcs),
    )


def _insert(session: Session, table: Any) -> sqlite.Insert | postgresql.Insert:
    """A dialect insert that knows ON CONFLICT (SQLite >= 3.24 and PostgreSQL share the syntax)."""
    name = session.get_bind().dialect.name
    # Imported for the site's own dialect only: an SQLite site never loads the PostgreSQL
    # dialect and its five drivers' modules (~2 MiB).
    if name == "sqlite":
        from sqlalchemy.dialects import sqlite

        return sqlite.insert(table)
    if name == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(table)
    raise NotImplementedError(f"dialect {name} is not supported")


def _json(value: Mapping[str, Any] | str, where: str) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=_json_default)
    except (TypeError, ValueError) as exc:
        raise StoreInputError(f"{where}: payload is not JSON-serialisable: {exc}") from exc


def _json_default(o: object) -> object:
    if isinstance(o, Decimal):
        return str(o)
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    raise TypeError(f"{type(o).__name__} is not JSON-serialisable")


def item_row(r: ItemUpsert, now: float) -> tuple[Any, ...]:
    """An ItemUpsert as the tuple of `hot.ITEM_COLS`."""
    return (r.epc, r.epc_uri, r.gtin, r.serial, r.zone, r.biz_step, r.disposition, r.seen_at,
            r.seen_at, now)


def upsert_items(session: Session, rows: Sequence[ItemUpsert], now: float) -> int:
    for i, r in enumerate(rows):
        if not r.epc:
            raise StoreInputError(f"item_upserts[{i}]: empty epc")
    hot.execute_many(session, "items", [item_row(r, now) for r in rows])
    return len(rows)


def upsert_presence(session: Session, rows: Sequence[PresenceRow]) -> int:
    hot.execute_many(session, "presence", [(r.epc, r.zone, r.since, r.last_seen, r.reader,
                                            r.antenna, r.rssi_dbm) for r in rows])
    return len(rows)


def apply_batch(
    session: Session,
    item_upserts: Sequence[ItemUpsert] = (),
    events: Sequence[EventRecord] = (),
    messages: Sequence[Message] = (),
    *,
    presence: Sequence[PresenceRow] = (),
    departed: Sequence[str] = (),
    now: float | None = None,
    item_rows: Sequence[tuple[Any, ...]] = (),
    presence_rows: Sequence[tuple[Any, ...]] = (),
) -> BatchResult:
    """Every write of one ingest batch, in the caller's transaction.

    Order matters for foreign keys: items first, then presence. Each event is journalled and
    queued on the `epcis` stream in the same transaction as the state change that caused it.
    An event (or message) whose event_id is already stored is skipped: replaying a batch after
    a crash is a no-op. Presence rows for epcs in `departed` are deleted. `item_rows` and
    `presence_rows` are rows already in the tuple shape of `hot.ITEM_COLS` and
    `hot.PRESENCE_COLS` (the ingest's own, checked by the ingest), written with the others.
    """
    now = time.time() if now is None else now
    res = BatchResult()
    res.items = upsert_items(session, item_upserts, now)
    hot.execute_many(session, "items", item_rows)
    res.items += len(item_rows)
    res.presence = upsert_presence(session, presence)
    hot.execute_many(session, "presence", presence_rows)
    res.presence += len(presence_rows)
    if departed:
        hot.delete_presence(session, departed)
        res.departed = len(departed)

    keyed = [e.event_id for e in events] + [m.event_id for m in messages if m.event_id]
    existing = hot.existing_event_ids(session, keyed) if keyed else set()
    seen = set(existing)
    ev_rows: list[list[Any]] = []  # hot.EVENT_COLS, seq last (set below)
    out_rows: list[list[Any]] = []  # hot.OUTBOX_COLS, seq last
    for i, e in enumerate(events):
        if not e.event_id:
            raise StoreInputError(f"events[{i}]: empty event_id")
        if e.event_id in seen:
            res.duplicate_events.append(e.event_id)
            continue
        seen.add(e.event_id)
        payload = _json(e.payload, f"events[{i}] ({e.event_id})")
        ev_rows.append([e.event_id, e.event_time, e.kind, e.action, e.biz_step, e.disposition,
                        e.zone, e.epc_count, payload, now, None])
        out_rows.append([EPCIS_STREAM, EPCIS_TOPIC, payload, e.event_id, now, None])
    for i, m in enumerate(messages):
        if not m.stream or not m.topic or any(c in m.topic for c in "#+\x00"):
            raise StoreInputError(f"messages[{i}]: bad stream {m.stream!r} or topic {m.topic!r}")
        if m.event_id is not None:
            if m.event_id in seen:
                res.duplicate_events.append(m.event_id)
                continue
            seen.add(m.event_id)
        out_rows.append([m.stream, m.topic, _json(m.payload, f"messages[{i}] ({m.topic})"),
                         m.event_id, now, None])
        res.messages += 1
    if ev_rows:
        # Numbered last, under the counter's row lock: no other writer journals an event until
        # this transaction ends, so a second look at the journal is exact and no number is
        # lost to an ON CONFLICT skip (gap-free is what HQ's loss detection relies on).
        late = hot.existing_event_ids(session, [r[0] for r in ev_rows]) \
            if session.get_bind().dialect.name != "sqlite" else set()
        first = take_seq(session, len(ev_rows) - len(late))
        if late:
            res.duplicate_events.extend(sorted(late))
            ev_rows = [r for r in ev_rows if r[0] not in late]
            out_rows = [r for r in out_rows if r[3] not in late]
        by_id: dict[str, int] = {}
        for n, r in enumerate(ev_rows):
            r[-1] = by_id[r[0]] = first + n
        for r in out_rows:
            r[-1] = by_id.get(r[3]) if r[3] is not None else None
    if ev_rows:
        hot.execute_many(session, "events", [tuple(r) for r in ev_rows])
        res.events = len(ev_rows)
    if out_rows:
        # Keyed and unkeyed rows in one executemany keep the id (publish) order of the batch.
        hot.execute_many(session, "outbox", [tuple(r) for r in out_rows])
    return res


def enqueue(session: Session, messages: Sequence[Message], now: float | None = None) -> int:
    """Queue messages outside an ingest batch (reports, alerts); returns how many were new."""
    return apply_batch(session, messages=messages, now=now).messages


def outbox_pending(session: Session, limit: int, after_id: int = 0) -> list[OutboxRow]:
    """Pending rows in publish order, starting after `after_id` (rows already in flight)."""
    o = OutboxMessage
    stmt = (
        select(o.id, o.stream, o.topic, o.payload, o.event_id, o.created_at, o.seq)
        .where(o.sent_at.is_(None), o.failed_at.is_(None), o.id > after_id)
        .order_by(o.id)
        .limit(limit)
    )
    return [OutboxRow(*r) for r in session.execute(stmt)]


def mark_sent(session: Session, ids: Sequence[int], now: float | None = None) -> int:
    """Mark rows acknowledged by the broker. Marking twice is harmless."""
    now = time.time() if now is None else now
    n = 0
    for i in range(0, len(ids), _IN_CHUNK):
        part = list(ids[i : i + _IN_CHUNK])
        r = session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id.in_(part), OutboxMessage.sent_at.is_(None))
            .values(sent_at=now)
            .execution_options(synchronize_session=False)
        )
        n += int(getattr(r, "rowcount", 0) or 0)
    return n


def mark_failed(session: Session, ids: Sequence[int], error: str, now: float | None = None) -> int:
    """Take rows that can never be published out of the queue, keeping them with the reason."""
    now = time.time() if now is None else now
    r = session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id.in_(list(ids)), OutboxMessage.sent_at.is_(None))
        .values(failed_at=now, error=error[:2000])
        .execution_options(synchronize_session=False)
    )
    return int(getattr(r, "rowcount", 0) or 0)


def outbox_stats(session: Session, now: float | None = None) -> tuple[int, float]:
    """(pending rows, age in seconds of the oldest pending row; 0 when empty)."""
    now = time.time() if now is None else now
    o = OutboxMessage
    depth, oldest = session.execute(
        select(func.count(o.id), func.min(o.created_at)).where(
            o.sent_at.is_(None), o.failed_at.is_(None)
        )
    ).one()
    return int(depth), (max(0.0, now - float(oldest)) if oldest is not None else 0.0)


def purge_sent(session: Session, older_than_s: float, now: float | None = None) -> int:
    """Delete rows acknowledged more than `older_than_s` ago (the events journal stays)."""
    now = time.time() if now is None else now
    r = session.execute(
        delete(OutboxMessage)
        .where(OutboxMessage.sent_at.is_not(None), OutboxMessage.sent_at < now - older_than_s)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(r, "rowcount", 0) or 0)


def load_presence(session: Session) -> list[PresenceRow]:
    """Every present item, to rebuild the presence tracker after a restart."""
    z = ZonePresence
    stmt = select(z.epc, z.zone, z.since, z.last_seen, z.reader, z.antenna, z.rssi_dbm)
    return [PresenceRow(*r) for r in session.execute(stmt.order_by(z.epc))]


def get_item(session: Session, epc: str) -> Item | None:
    return session.get(Item, epc)


def upsert_products(session: Session, products: Sequence[Mapping[str, Any]], now: float) -> int:
    """Insert or replace catalog rows (HQ catalog command); each needs a `gtin`."""
    cols = ("sku", "name", "size", "colour", "category", "price", "currency", "cost")
    rows = []
    for i, p in enumerate(products):
        gtin = p.get("gtin")
        if not isinstance(gtin, str) or not gtin.isdigit() or len(gtin) > 14:
            raise StoreInputError(f"products[{i}]: gtin {gtin!r} is not up to 14 digits")
        unknown = set(p) - {"gtin", *cols}
        if unknown:
            raise StoreInputError(f"products[{i}] ({gtin}): unknown fields {sorted(unknown)}")
        row: dict[str, Any] = {c: p.get(c) for c in cols}
        for money in ("price", "cost"):
            if row[money] is not None:
                try:
                    row[money] = Decimal(str(row[money]))
                except ArithmeticError as exc:
                    raise StoreInputError(f"products[{i}] ({gtin}): bad {money}") from exc
        rows.append({"gtin": gtin.zfill(14), **row, "updated": now})
    if not rows:
        return 0
    t = Product.__table__
    ins = _insert(session, t)
    stmt = ins.on_conflict_do_update(
        index_elements=[t.c.gtin],
        set_={c: ins.excluded[c] for c in (*cols, "updated")},
    )
    session.execute(stmt, rows)
    return len(rows)
