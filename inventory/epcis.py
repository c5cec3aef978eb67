"""Domain events -> EPCIS 2.0 JSON(-LD): events and EPCISDocuments as plain dicts.

The output is ready for one `json.dumps` call. Serialising is on the ingest path (every arrival
and move of a store becomes an event), so the expensive parts are cached: EPC hex -> URI goes
through the decode cache, the time zone offset is cached per 15-minute bucket (checked at both
ends of the bucket, so a DST change inside one is computed exactly), and the second-resolution
part of eventTime is reused within the same second.

Values are CBV 2.0 short names (`receiving`, `sellable_accessible`, `desadv`), which the EPCIS 2.0
JSON-LD context expands; bizTransaction type URIs under `urn:epcglobal:cbv` are *not* accepted by
the EPCIS 2.0 JSON schema (only short names or non-CBV URIs), so short names are the only option.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from inventory.epc import decode
from inventory.events import Action, ItemEvent
from inventory.isotime import parse_iso_datetime

EPCIS_CONTEXT = "https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"
RFIDD_NS_PREFIX = "rfidd"
RFIDD_NS = "urn:rfidd:epcis:"
"""Extension fields (ItemEvent.extensions) are written as `rfidd:<name>` compact IRIs."""

_SGLN = re.compile(r"^urn:epc:id:sgln:(\d{6,12})\.(\d{0,6})\.")
_URI_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:\S+$")
_OFFSET_BUCKET_S = 900


class EpcisError(ValueError):
    """An event that cannot be written as EPCIS; the message names the event and the field."""


def parse_datetime(value: Any, what: str) -> datetime:
    """An ISO 8601 date-time with its offset as an aware datetime (replay's `since`, EPCIS
    eventTime): inventory.isotime's parser, the one of rfidd; the ValueError names `what`."""
    return parse_iso_datetime(value, what)


def gs1_check_digit(digits: str) -> str:
    """GS1 mod-10 check digit of a digit string (GLN, GTIN, SSCC bodies)."""
    total = 0
    for i, d in enumerate(reversed(digits)):
        total += int(d) * (3 if i % 2 == 0 else 1)
    return str((10 - total % 10) % 10)


@lru_cache(maxsize=256)  # a site has a handful of SGLNs; every event asks
def gln_of_sgln(sgln: str) -> str:
    """The 13-digit GLN of an SGLN URN (company prefix + location reference + check digit)."""
    m = _SGLN.match(sgln)
    if not m or len(m.group(1)) + len(m.group(2)) != 12:
        raise ValueError(f"not an SGLN pure-identity URN: {sgln!r}")
    body = m.group(1) + m.group(2)
    return body + gs1_check_digit(body)


@lru_cache(maxsize=4096)  # a reception or shipment asks once per item, same id
def biz_transaction_uri(doc_id: str, issuer_sgln: str) -> str:
    """A business transaction id as a URI: URIs are kept, bare ids become the CBV 2.0 form
    `urn:epcglobal:cbv:bt:<issuer GLN>:<id>` (the issuer being the site that records it)."""
    if _URI_SCHEME.match(doc_id):
        return doc_id
    return f"urn:epcglobal:cbv:bt:{gln_of_sgln(issuer_sgln)}:{quote(doc_id, safe='-._~')}"


def epc_uri(epc: str) -> str:
    """An EPC as EPCIS wants it: URIs pass through, EPC hex becomes its pure identity URI (or
    the TDS raw URI for tags without one)."""
    if epc.startswith("urn:"):
        return epc
    d = decode(epc)
    uri = d.epcis_uri
    if uri is None:
        raise EpcisError(f"EPC {epc!r} cannot be written as a URI: {d.error}")
    return uri


_ACTION_TEXT: dict[object, str] = {a: a.value for a in Action}
_URIS: dict[str, str] = {}  # EPC as given -> its EPCIS URI: skips decode() on the hot path
_URIS_MAX = 300_000


def _remember_uri(epc: str) -> str:
    uri = epc_uri(epc)
    if len(_URIS) >= _URIS_MAX:
        _URIS.clear()
    _URIS[epc] = uri
    return uri


class EpcisSerializer:
    """ItemEvents -> EPCIS 2.0 JSON dicts for one site (its IANA time zone gives the offsets)."""

    def __init__(self, timezone: str = "UTC") -> None:
        self.timezone = timezone
        self._tz = ZoneInfo(timezone)
        self._offsets: dict[int, str] = {}
        self._second: tuple[int, str] = (-1, "")  # one tuple: atomic to swap between threads

    def event(self, ev: ItemEvent) -> dict[str, Any]:
        """One event (without its own @context: documents carry it)."""
        try:
            return self._event(ev)
        except EpcisError as exc:
            raise EpcisError(f"event {ev.event_id}: {exc}") from None
        except (TypeError, ValueError, OverflowError) as exc:
            raise EpcisError(f"event {ev.event_id}: {type(exc).__name__}: {exc}") from exc

    def _event(self, ev: ItemEvent) -> dict[str, Any]:
        t = ev.event_time
        uris = _URIS
        epcs = []
        for e in ev.epcs:
            u = uris.get(e)
            epcs.append(u if u is not None else _remember_uri(e))
        action = _ACTION_TEXT.get(ev.action) or str(ev.action)
        if ev.parent_id is not None:
            d: dict[str, Any] = {
                "type": "AggregationEvent",
                "eventTime": self.time_text(t),
                "eventTimeZoneOffset": self.offset(t),
                "eventID": ev.event_id,
                "parentID": epc_uri(ev.parent_id),
                "childEPCs": epcs,
                "action": action,
            }
            if not epcs and action != "DELETE":
                raise EpcisError("an AggregationEvent needs at least one child EPC")
        else:
            if ev.kind != "ObjectEvent":
                raise EpcisError(f"cannot write a {ev.kind} without a parent id")
            d = {
                "type": "ObjectEvent",
                "eventTime": self.time_text(t),
                "eventTimeZoneOffset": self.offset(t),
                "eventID": ev.event_id,
                "epcList": epcs,
                "action": action,
            }
            if len(epcs) > 1 and len(set(epcs)) != len(epcs):
                raise EpcisError("epcList holds the same EPC twice")
        if ev.biz_step is not None:
            d["bizStep"] = ev.biz_step
        if ev.disposition is not None:
            d["disposition"] = ev.disposition
        if ev.read_point is not None:
            d["readPoint"] = {"id": ev.read_point}
        if ev.biz_location is not None:
            d["bizLocation"] = {"id": ev.biz_location}
        if ev.biz_transactions:
            d["bizTransactionList"] = [
                {"type": bt_type, "bizTransaction": bt} for bt_type, bt in ev.biz_transactions
            ]
        if ev.extensions:
            for key, value in ev.extensions.items():
                d[key if ":" in key else f"{RFIDD_NS_PREFIX}:{key}"] = value
        return d

    def events(self, events: Iterable[ItemEvent]) -> list[dict[str, Any]]:
        return [self.event(ev) for ev in events]

    def document(
        self,
        events: Iterable[ItemEvent],
        created: datetime | None = None,
        sender: str | None = None,
    ) -> dict[str, Any]:
        return epcis_document(self.events(events), created or datetime.now(UTC), sender)

    def time_text(self, t: float) -> str:
        """ISO 8601 UTC with milliseconds and 'Z' (e.g. 2024-03-01T09:30:00.123Z)."""
        total_ms = round(t * 1000)
        sec, ms = divmod(total_ms, 1000)
        cached_sec, text = self._second
        if sec != cached_sec:
            text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
            self._second = (sec, text)
        return f"{text}.{ms:03d}Z"

    def offset(self, t: float) -> str:
        """The site's UTC offset at instant `t`, as EPCIS wants it (+01:00, -05:00)."""
        bucket = int(t // _OFFSET_BUCKET_S)
        text = self._offsets.get(bucket)
        if text is not None:
            return text
        start = self._offset_at(bucket * _OFFSET_BUCKET_S)
        end = self._offset_at(bucket * _OFFSET_BUCKET_S + _OFFSET_BUCKET_S - 1)
        if start != end:  # a transition inside the bucket: no caching, exact per instant
            return self._offset_at(t)
        if len(self._offsets) > 4096:
            self._offsets.clear()
        self._offsets[bucket] = start
        return start

    def _offset_at(self, t: float) -> str:
        off = datetime.fromtimestamp(t, self._tz).utcoffset()
        minutes = round(off.total_seconds() / 60) if off is not None else 0
        sign = "+" if minutes >= 0 else "-"
        hh, mm = divmod(abs(minutes), 60)
        return f"{sign}{hh:02d}:{mm:02d}"


_serializers: dict[str, EpcisSerializer] = {}


def to_epcis(ev: ItemEvent, timezone: str = "UTC") -> dict[str, Any]:
    """One ItemEvent as an EPCIS 2.0 event dict (a serializer per time zone is kept)."""
    ser = _serializers.get(timezone)
    if ser is None:
        ser = _serializers[timezone] = EpcisSerializer(timezone)
    return ser.event(ev)


def epcis_document(
    events: list[dict[str, Any]], created: datetime, sender: str | None = None
) -> dict[str, Any]:
    """An EPCISDocument around already serialised events (one MQTT message to HQ)."""
    if created.tzinfo is None:
        raise ValueError("epcis_document: `created` must be timezone-aware (e.g. UTC)")
    stamp = created.astimezone(UTC)
    doc: dict[str, Any] = {
        "@context": [EPCIS_CONTEXT, {RFIDD_NS_PREFIX: RFIDD_NS}],
        "type": "EPCISDocument",
        "schemaVersion": "2.0",
        "creationDate": stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z",
    }
    if sender is not None:
        doc["sender"] = sender
    doc["epcisBody"] = {"eventList": events}
    return doc


event_to_json = to_epcis
"""Alias of `to_epcis` (the name rfidd/app.py uses)."""
