"""An item's history on this site, from the events journal (`events.payload` is the EPCIS event).

The journal has no EPC column (an event may name thousands of items), so the lookup is a
`LIKE` on the quoted EPC URI, confirmed by parsing each candidate's epcList/childEPCs/parentID:
a scan, fine for a person asking about one item (measured in the tests' report), not for bulk.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import select

from inventory.epc import decode
from rfidd.store.db import Database
from rfidd.store.models import Event


@dataclass(frozen=True, slots=True)
class TraceEntry:
    event_time: float
    time: str  # EPCIS eventTime (UTC)
    offset: str | None
    type: str
    action: str | None
    biz_step: str | None
    disposition: str | None
    read_point: str | None
    zone: str | None
    biz_transactions: list[str]
    parent: str | None
    event_id: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def epc_uri_of(epc_hex: str) -> str:
    uri = decode(epc_hex).epcis_uri
    if uri is None:
        raise ValueError(f"EPC {epc_hex} has no URI")
    return uri


def _escape_like(s: str) -> str:
    return s.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def trace(db: Database, epc_hex: str, limit: int = 1000) -> list[TraceEntry]:
    """Events naming the item (as object, child or parent), oldest first."""
    uri = epc_uri_of(epc_hex)
    needle = json.dumps(uri)  # with its quotes: ...:1 must not match ...:12
    q = (select(Event.event_time, Event.event_id, Event.kind, Event.zone, Event.payload)
         .where(Event.payload.like(f"%{_escape_like(needle)}%", escape="\\"))
         .order_by(Event.event_time, Event.id).limit(limit))
    out: list[TraceEntry] = []
    with db.session() as s:
        for t, event_id, kind, zone, payload in s.execute(q):
            try:
                ev = json.loads(payload)
            except ValueError:
                continue
            names = [*ev.get("epcList", []), *ev.get("childEPCs", [])]
            parent = ev.get("parentID")
            if uri not in names and parent != uri:
                continue
            out.append(TraceEntry(
                event_time=t,
                time=str(ev.get("eventTime", "")),
                offset=ev.get("eventTimeZoneOffset"),
                type=str(ev.get("type", kind)),
                action=ev.get("action"),
                biz_step=ev.get("bizStep"),
                disposition=ev.get("disposition"),
                read_point=(ev.get("readPoint") or {}).get("id"),
                zone=zone,
                biz_transactions=[f"{b.get('type', '?')}:{b.get('bizTransaction', '')}"
                                  for b in ev.get("bizTransactionList", [])],
                parent=parent if parent != uri else None,
                event_id=event_id,
            ))
    return out
