"""Where is an item now, and where has it been: queries over the HQ tables.

"Now" is the event with the latest eventTime (the business time at the site), not the latest
received: a site that was offline for hours delivers old events late, and they must not move the
item back in time. Ties (same eventTime) are broken by arrival order.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, func, select

from rfidd.hq.gaps import SiteSequence, site_sequences
from rfidd.hq.store import CAPTURE_SOURCE, hq_event_epcs, hq_events, hq_sites, utc

_HEX = re.compile(r"^[0-9A-Fa-f]+$")
_URI = re.compile(r"^(urn:epc:|urn:epc:raw:|https?://)", re.IGNORECASE)


class EpcInputError(ValueError):
    """What the user typed is neither an EPC URI nor a decodable hex EPC."""


def normalize_epc(text: str) -> str:
    """A pure-identity URI (kept as is) or a hex EPC bank (EPC-96...) -> the URI stored by sites."""
    value = text.strip()
    if not value:
        raise EpcInputError("empty EPC")
    if _URI.match(value):
        return value
    if _HEX.match(value):
        if len(value) % 4:
            raise EpcInputError(f"hex EPC {value!r}: length {len(value)} is not a whole number "
                                "of 16-bit words")
        from inventory.epc import decode

        decoded = decode(value.upper())
        if not decoded.ok or decoded.uri is None:
            raise EpcInputError(
                f"hex EPC {value!r} does not decode to a pure identity: "
                f"{decoded.error or decoded.status}"
            )
        return decoded.uri
    raise EpcInputError(
        f"{value!r} is neither an EPC URI (urn:epc:id:sgtin:...) nor a hex EPC"
    )


@dataclass(frozen=True, slots=True)
class ItemEvent:
    event_id: str
    event_time: datetime
    site: str
    type: str
    action: str | None
    biz_step: str | None
    disposition: str | None
    read_point: str | None
    biz_location: str | None
    biz_transactions: list[dict[str, Any]] | None

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["event_time"] = self.event_time.isoformat()
        return out


@dataclass(frozen=True, slots=True)
class SiteState:
    site: str
    status: str | None
    status_at: datetime | None
    last_seen: datetime | None
    name: str | None = None
    registered_at: datetime | None = None
    rejected: int = 0  # messages dropped while the site was not registered
    sequence: SiteSequence | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "site": self.site,
            "name": self.name,
            "registered": self.registered_at is not None,
            "registered_at": self.registered_at.isoformat() if self.registered_at else None,
            "status": self.status,
            "status_at": self.status_at.isoformat() if self.status_at else None,
            "last_seen": self.last_seen.isoformat() if self.last_seen else None,
            "rejected": self.rejected,
            **(self.sequence.to_json() if self.sequence else {}),
        }


_COLS = (
    hq_events.c.event_id, hq_events.c.event_time, hq_events.c.site, hq_events.c.type,
    hq_events.c.action, hq_events.c.biz_step, hq_events.c.disposition,
    hq_events.c.read_point, hq_events.c.biz_location, hq_events.c.biz_transactions,
)


def _row(r: Any) -> ItemEvent:
    t = utc(r.event_time)
    assert t is not None
    return ItemEvent(
        event_id=r.event_id, event_time=t, site=r.site, type=r.type, action=r.action,
        biz_step=r.biz_step, disposition=r.disposition, read_point=r.read_point,
        biz_location=r.biz_location, biz_transactions=r.biz_transactions,
    )


# Events of one instant and one batch (an exit's read, then its `stolen` event) are stored in
# eventID order, so the row id is no order: the site's sequence number is (captures: none).
_SITE_ORDER = func.coalesce(hq_events.c.seq, 0)


def _base(epc: str) -> Any:
    return (
        select(*_COLS)
        # event_time too: on PostgreSQL each event is looked up in its own month's partition
        .join(hq_event_epcs, (hq_event_epcs.c.event_id == hq_events.c.event_id)
              & (hq_event_epcs.c.event_time == hq_events.c.event_time))
        .where(hq_event_epcs.c.epc == epc)
    )


def history(engine: Engine, epc: str, limit: int | None = None) -> list[ItemEvent]:
    """Every event naming the EPC, across sites, oldest first."""
    stmt = _base(epc).order_by(
        hq_event_epcs.c.event_time, hq_events.c.received_at, _SITE_ORDER, hq_events.c.id
    )
    if limit is not None:
        stmt = stmt.limit(limit)
    with engine.connect() as conn:
        return [_row(r) for r in conn.execute(stmt)]


def where(engine: Engine, epc: str) -> ItemEvent | None:
    """The latest event (by eventTime) naming the EPC: its site, location, disposition."""
    stmt = _base(epc).order_by(
        hq_event_epcs.c.event_time.desc(), hq_events.c.received_at.desc(), _SITE_ORDER.desc(),
        hq_events.c.id.desc()
    ).limit(1)
    with engine.connect() as conn:
        r = conn.execute(stmt).first()
    return None if r is None else _row(r)


def sites(engine: Engine, *, registered_only: bool = False) -> list[SiteState]:
    """Every site heard of or registered (or only the registered ones), with its sequence
    state and gaps: registered sites first, each group by site id."""
    stmt = (select(hq_sites).order_by(hq_sites.c.registered_at.is_(None), hq_sites.c.site)
            # "@{token}": events an integrator captured, no store (its row keeps their mark)
            .where(hq_sites.c.site.not_like(f"{CAPTURE_SOURCE}%")))
    if registered_only:
        stmt = stmt.where(hq_sites.c.registered_at.is_not(None))
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
    seqs = {s.site: s for s in site_sequences(engine, [r.site for r in rows])}
    return [SiteState(r.site, r.status, utc(r.status_at), utc(r.last_seen), r.name,
                      utc(r.registered_at), int(r.rejected or 0), seqs.get(r.site))
            for r in rows]
