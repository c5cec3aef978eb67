"""Shared data and helpers of the store-operations unit tests (an in-memory SQLite database, a
presence tracker fed by hand, change hooks called as the ingest thread calls them)."""

from __future__ import annotations

import json
from typing import Any

from fakes import make_ingestor
from sqlalchemy import select

from inventory.epc import decode, sgtin96_hex
from inventory.presence import ChangeKind, PresenceChange, ZoneRead
from rfidd.context import ServiceContext
from rfidd.ingest import Ingestor
from rfidd.lifecycle import books
from rfidd.pipeline import BatchComponent
from rfidd.store import repo
from rfidd.store.models import OutboxMessage

BAG, SCARF = "03760001001013", "03760001001020"
CATALOG_CSV = (
    "gtin,sku,name,size,colour,category,price,currency\n"
    f"{BAG},BAG-1,Sac Céleste,,noir,bags,3400.00,EUR\n"
    f"{SCARF},BAG-2,Sac Céleste,,caramel,bags,3400.00,EUR\n"
)
SITE = "unit-store"


def epc(gtin: str, serial: int) -> str:
    return sgtin96_hex(gtin, serial, 7)


INGESTORS: dict[int, Ingestor] = {}
"""The ingest of each test context (conftest's `ingest` fixture), by id(ctx)."""


def ingestor(ctx: ServiceContext) -> Ingestor:
    ing, _ = make_ingestor(ctx.db, {}, {z: str(zc.kind) for z, zc in ctx.config.zones.items()},
                           lock=ctx.tracker_lock, metrics=ctx.metrics, tracker=ctx.tracker,
                           books=lambda s, epcs: books.load_states(s, epcs, ctx.config.site.id))
    INGESTORS[id(ctx)] = ing
    return ing


def feed(ctx: ServiceContext, *components: BatchComponent) -> None:
    """Have the test ingest of `ctx` plan with `components` (as app.py wires them)."""
    for c in components:
        INGESTORS[id(ctx)].add_component(c)


def hook(ctx: ServiceContext, *changes: PresenceChange) -> None:
    """Presence changes through the ingest's view, plans, commit and apply."""
    INGESTORS[id(ctx)].handle_changes(list(changes))


def arrive(e: str, zone: str, at: float = 1000.0) -> PresenceChange:
    return PresenceChange(ChangeKind.ARRIVED, e, zone, None, at)


def read(ctx: ServiceContext, t: float, pairs: list[tuple[str, str]]) -> None:
    """Reads straight into the presence tracker (what counts and replenishment look at)."""
    with ctx.tracker_lock:
        ctx.tracker.observe([ZoneRead(e, z, -60.0, t) for e, z in pairs])


def outbox(ctx: ServiceContext, topic: str) -> list[dict[str, Any]]:
    with ctx.db.session() as s:
        return [json.loads(p) for p in s.scalars(
            select(OutboxMessage.payload).where(OutboxMessage.topic == topic)
            .order_by(OutboxMessage.id))]


def asn(asn_id: str, epcs: list[str], dest: str = SITE) -> dict[str, Any]:
    return {"asn_id": asn_id, "origin": "WH", "destination": dest,
            "shipped_at": "2024-05-02T08:00:00Z", "epcs": epcs, "lines": []}


def book(ctx: ServiceContext, items: dict[str, str]) -> None:
    """Items in the items table (the book a count reconciles against)."""
    with ctx.db.write() as s:
        repo.upsert_items(s, [repo.ItemUpsert(e, 500.0, z, gtin=decode(e).gtin14)
                              for e, z in items.items()], 500.0)
