"""Chain-wide views over the HQ tables: stock per store by product, an item's whole life with
site names, alerts and reports per store; and the catalog HQ publishes to the stores.

The rules of what counts as stock live in inventory.chain (pure); this module only reads.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, func, select

from inventory.catalog import Product
from inventory.chain import stock_by_site
from rfidd.hq.store import hq_event_epcs, hq_events, hq_products, hq_site_messages, hq_sites, utc

MAX_COMMAND_BYTES = 200 * 1024  # under the site's 256 KiB command limit


@dataclass(frozen=True, slots=True)
class StockRow:
    site: str
    site_name: str | None
    gtin: str
    sku: str | None
    name: str | None
    size: str | None
    colour: str | None
    count: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def site_names(engine: Engine) -> dict[str, str | None]:
    with engine.connect() as conn:
        return {r[0]: r[1] for r in conn.execute(select(hq_sites.c.site, hq_sites.c.name))}


def latest_per_item(engine: Engine) -> list[tuple[str, str, str | None]]:
    """(epc, site, disposition) of each item's latest event (by eventTime, then arrival)."""
    x, e = hq_event_epcs, hq_events
    ranked = (
        select(x.c.epc, e.c.site, e.c.disposition,
               func.row_number().over(partition_by=x.c.epc,
                                      order_by=(x.c.event_time.desc(), e.c.received_at.desc(),
                                                func.coalesce(e.c.seq, 0).desc(),  # see query
                                                e.c.id.desc())).label("rn"))
        .join(e, (e.c.event_id == x.c.event_id) & (e.c.event_time == x.c.event_time))
        .where(e.c.disposition.is_not(None))
        .subquery()
    )
    with engine.connect() as conn:
        rows = conn.execute(select(ranked.c.epc, ranked.c.site, ranked.c.disposition)
                            .where(ranked.c.rn == 1)).all()
    return [(r[0], r[1], r[2]) for r in rows]


def stock(engine: Engine, *, site: str | None = None, sku: str | None = None,
          size: str | None = None, colour: str | None = None,
          text: str | None = None) -> list[StockRow]:
    """Stock per store and product, with names; filters are exact (text: in the name/SKU)."""
    counts = stock_by_site(latest_per_item(engine))
    with engine.connect() as conn:
        products = {r.gtin: r for r in conn.execute(select(hq_products))}
    names = site_names(engine)
    out = []
    for (s, gtin), n in counts.items():
        p = products.get(gtin)
        row = StockRow(s, names.get(s), gtin, p.sku if p else None, p.name if p else None,
                       p.size if p else None, p.colour if p else None, n)
        if site is not None and s != site:
            continue
        if sku is not None and row.sku != sku:
            continue
        if size is not None and (row.size or "").lower() != size.lower():
            continue
        if colour is not None and (row.colour or "").lower() != colour.lower():
            continue
        if text and text.lower() not in f"{row.name or ''} {row.sku or ''}".lower():
            continue
        out.append(row)
    return sorted(out, key=lambda r: (r.sku or r.gtin, r.size or "", r.colour or "", r.site))


def life(engine: Engine, epc: str) -> list[dict[str, Any]]:
    """Every event of the item, oldest first, with the name of the site that recorded it."""
    from rfidd.hq import query

    names = site_names(engine)
    out = []
    for ev in query.history(engine, epc):
        d = ev.to_json()
        d["site_name"] = names.get(ev.site)
        out.append(d)
    return out


def site_messages(engine: Engine, kind_prefix: str, *, site: str | None = None,
                  limit: int = 50) -> list[dict[str, Any]]:
    """The latest alerts ("alert") or reports ("report/") per store, newest first."""
    m = hq_site_messages
    stmt = select(m.c.site, m.c.kind, m.c.payload, m.c.received_at)
    stmt = stmt.where(m.c.kind == kind_prefix) if not kind_prefix.endswith("/") else \
        stmt.where(m.c.kind.like(kind_prefix + "%"))
    if site is not None:
        stmt = stmt.where(m.c.site == site)
    names = site_names(engine)
    with engine.connect() as conn:
        rows = conn.execute(stmt.order_by(m.c.received_at.desc(), m.c.id.desc())
                            .limit(limit)).all()
    out = []
    for r in rows:
        t = utc(r.received_at)
        out.append({"site": r.site, "site_name": names.get(r.site), "kind": r.kind,
                    "received_at": t.isoformat() if t else None, "payload": r.payload})
    return out


def latest_reports(engine: Engine) -> list[dict[str, Any]]:
    """The latest report of each kind (reception, count, shrinkage) per store."""
    seen: set[tuple[str, str]] = set()
    out = []
    for r in site_messages(engine, "report/", limit=2000):
        key = (r["site"], r["kind"])
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


def save_catalog(engine: Engine, products: Sequence[Product], now: datetime) -> int:
    """Upsert the catalog HQ publishes (kept for the chain views' names, sizes, colours)."""
    if not products:
        return 0
    from sqlalchemy.dialects import postgresql, sqlite

    ins = (postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert)(
        hq_products)
    cols = ("sku", "name", "size", "colour", "category", "price", "currency", "updated")
    rows = [{"gtin": p.gtin14, "sku": p.sku, "name": p.name, "size": p.size,
             "colour": p.colour, "category": p.category, "price": Decimal(p.price),
             "currency": p.currency, "updated": now} for p in products]
    with engine.begin() as conn:
        conn.execute(ins.on_conflict_do_update(index_elements=["gtin"],
                                               set_={c: ins.excluded[c] for c in cols}), rows)
    return len(rows)


def catalog_messages(prefix: str, sites: Sequence[str], products: Sequence[Product]
                     ) -> list[tuple[str, bytes]]:
    """cmd/catalog payloads for each site, split under the site's command size limit (each
    part is an upsert at the site, so the parts may arrive in any order)."""
    parts: list[list[dict[str, str]]] = [[]]
    size = 0
    for p in products:
        d = p.to_dict()
        n = len(json.dumps(d, ensure_ascii=False).encode()) + 2
        if parts[-1] and size + n > MAX_COMMAND_BYTES:
            parts.append([])
            size = 0
        parts[-1].append(d)
        size += n
    return [(f"{prefix}/{s}/cmd/catalog",
             json.dumps({"products": part}, ensure_ascii=False).encode())
            for s in sites for part in parts if part]
