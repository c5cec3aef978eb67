"""EPCIS 2.0 JSON documents from the sites -> rows for the HQ tables.

Validation is deliberately minimal (what HQ needs to store and answer queries: type, eventID,
eventTime, the EPCs), not the full schema: a site running a newer rfidd with extra fields must
still be heard. Each bad event is reported with its position and reason and skipped; the good
events of the same document are kept.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from inventory.epcis import parse_datetime

EVENT_TYPES = frozenset(
    {"ObjectEvent", "AggregationEvent", "TransactionEvent", "TransformationEvent",
     "AssociationEvent"}
)
# Fields holding EPCs an item can be looked up by (parentID: the carton of an aggregation).
_EPC_LISTS = ("epcList", "childEPCs", "inputEPCList", "outputEPCList")
_MAX_ID = 512
SEQ_FIELD = "rfidd:seq"
_MAX_EPC = 512


class DocumentError(ValueError):
    """The whole message is unusable (not JSON, not an EPCIS document)."""


@dataclass(frozen=True, slots=True)
class EventRow:
    event_id: str
    site: str
    type: str
    event_time: datetime  # UTC, aware
    action: str | None
    biz_step: str | None
    disposition: str | None
    read_point: str | None
    biz_location: str | None
    biz_transactions: list[dict[str, Any]] | None
    raw: dict[str, Any]
    epcs: tuple[str, ...]
    seq: int | None = None  # the site's gap-free sequence number (rfidd:seq)


@dataclass(slots=True)
class ParsedDocument:
    events: list[EventRow] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # one per rejected event


def parse_time(value: Any) -> datetime:
    """An EPCIS dateTimeStamp (offset required) as an aware UTC datetime."""
    return parse_datetime(value, "eventTime").astimezone(UTC)


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 80 else text[:77] + "..."


def _opt_str(event: dict[str, Any], key: str) -> str | None:
    v = event.get(key)
    if v is None:
        return None
    if not isinstance(v, str):
        raise ValueError(f"{key} is {type(v).__name__}, expected a string")
    return v


def _opt_id(event: dict[str, Any], key: str) -> str | None:
    """readPoint / bizLocation: {"id": "urn:..."} (EPCIS 2.0 JSON) or a bare string."""
    v = event.get(key)
    if v is None:
        return None
    if isinstance(v, dict):
        v = v.get("id")
    if not isinstance(v, str) or not v:
        raise ValueError(f"{key} has no id string")
    return v


def _epcs(event: dict[str, Any]) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for key in _EPC_LISTS:
        v = event.get(key)
        if v is None:
            continue
        if not isinstance(v, list):
            raise ValueError(f"{key} is {type(v).__name__}, expected a list of EPC URIs")
        for i, epc in enumerate(v):
            if not isinstance(epc, str) or not epc or len(epc) > _MAX_EPC:
                raise ValueError(f"{key}[{i}] is not an EPC URI: {_short(epc)}")
            seen[epc] = None
    parent = event.get("parentID")
    if parent is not None:
        if not isinstance(parent, str) or not parent or len(parent) > _MAX_EPC:
            raise ValueError(f"parentID is not an EPC URI: {_short(parent)}")
        seen[parent] = None
    return tuple(seen)


def parse_event(event: Any, site: str) -> EventRow:
    """One event -> row; ValueError says which field is wrong."""
    if not isinstance(event, dict):
        raise ValueError(f"event is {type(event).__name__}, expected an object")
    etype = event.get("type")
    if etype not in EVENT_TYPES:
        raise ValueError(f"type {_short(etype)} is not an EPCIS event type")
    event_id = event.get("eventID")
    if not isinstance(event_id, str) or not event_id.strip() or len(event_id) > _MAX_ID:
        raise ValueError(f"eventID missing or invalid: {_short(event_id)}")
    if "eventTime" not in event:
        raise ValueError("eventTime missing")
    event_time = parse_time(event["eventTime"])
    epcs = _epcs(event)
    if etype in ("ObjectEvent", "TransactionEvent"):
        if "epcList" not in event:
            raise ValueError(f"{etype} without an epcList")
        if not event["epcList"] and not event.get("quantityList"):
            raise ValueError(f"{etype} with an empty epcList and no quantityList")
    biz_tx = event.get("bizTransactionList")
    if biz_tx is not None and not (
        isinstance(biz_tx, list) and all(isinstance(t, dict) for t in biz_tx)
    ):
        raise ValueError("bizTransactionList is not a list of objects")
    seq = event.get(SEQ_FIELD)
    if seq is not None and (isinstance(seq, bool) or not isinstance(seq, int) or seq < 1
                            or seq >= 2**63):
        raise ValueError(f"{SEQ_FIELD} {_short(seq)} is not a sequence number (1, 2, 3...)")
    return EventRow(
        seq=seq,
        event_id=event_id,
        site=site,
        type=etype,
        event_time=event_time,
        action=_opt_str(event, "action"),
        biz_step=_opt_str(event, "bizStep"),
        disposition=_opt_str(event, "disposition"),
        read_point=_opt_id(event, "readPoint"),
        biz_location=_opt_id(event, "bizLocation"),
        biz_transactions=biz_tx,
        raw=event,
        epcs=epcs,
    )


def parse_document(payload: bytes | str, site: str) -> ParsedDocument:
    """An EPCISDocument (or a single bare event) -> its valid events and the reasons for the
    rejected ones. Raises DocumentError when nothing in the message is usable."""
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DocumentError(f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise DocumentError(f"top level is {type(doc).__name__}, expected an EPCISDocument")
    dtype = doc.get("type")
    if dtype in EVENT_TYPES:
        events: Any = [doc]
    elif dtype == "EPCISDocument":
        body = doc.get("epcisBody")
        events = body.get("eventList") if isinstance(body, dict) else None
        if not isinstance(events, list):
            raise DocumentError("EPCISDocument without epcisBody.eventList")
    else:
        raise DocumentError(f"type {_short(dtype)} is neither EPCISDocument nor an event type")
    out = ParsedDocument()
    for i, event in enumerate(events):
        try:
            out.events.append(parse_event(event, site))
        except ValueError as exc:
            eid = event.get("eventID") if isinstance(event, dict) else None
            label = f"eventList[{i}]" + (f" ({_short(eid)})" if isinstance(eid, str) else "")
            out.errors.append(f"{label}: {exc}")
    return out
