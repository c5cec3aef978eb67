"""EPCIS 2.0 query parameters (GS1 REST bindings) -> SQL over the HQ tables.

The subset HQ answers, each as the standard defines it: eventType, GE_/LT_eventTime,
GE_/LT_recordTime, EQ_action, EQ_bizStep, EQ_disposition, EQ_readPoint, EQ_bizLocation,
EQ_eventID, MATCH_epc, MATCH_anyEPC (with urn:epc:idpat:...:* patterns). Anything else is
refused with its name: a tool that asks for a filter HQ does not apply must not get an
unfiltered answer it takes for the truth. Several values of one parameter are OR-ed (pipe
delimited or repeated); different parameters are AND-ed.

Results are in record order (the HQ row id), so a page token is the last id seen: stable while
new events arrive.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, Select, and_, exists, or_, select

from rfidd.hq.documents import EVENT_TYPES, parse_time
from rfidd.hq.store import hq_event_epcs, hq_events

MAX_PER_PAGE = 1000
DEFAULT_PER_PAGE = 100

LIST_PARAMS = ("eventType", "EQ_action", "EQ_bizStep", "EQ_disposition", "EQ_readPoint",
               "EQ_bizLocation", "EQ_eventID", "MATCH_epc", "MATCH_anyEPC")
TIME_PARAMS = ("GE_eventTime", "LT_eventTime", "GE_recordTime", "LT_recordTime")
PAGING = ("perPage", "nextPageToken")
KNOWN = frozenset(LIST_PARAMS + TIME_PARAMS + PAGING)

_CBV_FORMS = {
    "EQ_bizStep": ("urn:epcglobal:cbv:bizstep:", "https://ref.gs1.org/cbv/BizStep-"),
    "EQ_disposition": ("urn:epcglobal:cbv:disp:", "https://ref.gs1.org/cbv/Disp-"),
}


class QueryParameterError(ValueError):
    """A query parameter HQ cannot apply; `param` names it."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass(slots=True)
class EventQuery:
    lists: dict[str, list[str]] = field(default_factory=dict)
    times: dict[str, datetime] = field(default_factory=dict)
    per_page: int = DEFAULT_PER_PAGE
    after_id: int = 0

    def to_definition(self) -> dict[str, Any]:
        """As a named query's stored definition (no paging)."""
        out: dict[str, Any] = dict(self.lists)
        out.update({k: v.isoformat() for k, v in self.times.items()})
        return out


def _values(raw: Iterable[str]) -> list[str]:
    out: list[str] = []
    for v in raw:
        out.extend(x for x in v.split("|") if x)
    return out


def parse_query(params: Mapping[str, Sequence[str]], *, paging: bool = True) -> EventQuery:
    """Query-string parameters (name -> values) -> EventQuery; QueryParameterError names the
    first unknown or malformed parameter."""
    q = EventQuery()
    for name in params:
        if name not in KNOWN or (not paging and name in PAGING):
            raise QueryParameterError(
                name, f"query parameter {name!r} is not supported here (supported: "
                f"{', '.join(sorted(KNOWN if paging else KNOWN - set(PAGING)))})")
    for name in LIST_PARAMS:
        if name in params:
            vals = _values(params[name])
            if not vals:
                raise QueryParameterError(name, f"{name}: empty value")
            if name == "eventType":
                bad = [v for v in vals if v not in EVENT_TYPES]
                if bad:
                    raise QueryParameterError(name, f"eventType {bad[0]!r} is not an EPCIS "
                                              "event type")
            if name == "EQ_action":
                bad = [v for v in vals if v not in ("ADD", "OBSERVE", "DELETE")]
                if bad:
                    raise QueryParameterError(name, f"EQ_action {bad[0]!r}: ADD, OBSERVE or "
                                              "DELETE")
            q.lists[name] = vals
    for name in TIME_PARAMS:
        if name in params:
            vals = list(params[name])
            if len(vals) != 1:
                raise QueryParameterError(name, f"{name} takes one date-time")
            try:
                q.times[name] = parse_time(vals[0].replace(" ", "+"))
            except ValueError as exc:
                raise QueryParameterError(name, f"{name}: {exc}".replace("eventTime ", "")) \
                    from None
    if "perPage" in params:
        raw = params["perPage"][-1]
        if not raw.isdigit() or not 1 <= int(raw) <= MAX_PER_PAGE:
            raise QueryParameterError("perPage", f"perPage must be 1-{MAX_PER_PAGE}, got "
                                      f"{raw!r}")
        q.per_page = int(raw)
    if "nextPageToken" in params:
        q.after_id = decode_token(params["nextPageToken"][-1])
    return q


def encode_token(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"after:{last_id}".encode()).decode().rstrip("=")


def decode_token(token: str) -> int:
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        kind, _, n = text.partition(":")
        if kind != "after" or not n.isdigit():
            raise ValueError
        return int(n)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise QueryParameterError("nextPageToken", "nextPageToken is not one this server "
                                  "gave") from None


def _cbv(name: str, values: list[str]) -> list[str]:
    """A bare CBV word also matches its URN and Web URI forms (sites may use either)."""
    out = list(values)
    for v in values:
        if ":" not in v:
            out.extend(p + v for p in _CBV_FORMS.get(name, ()))
    return out


def _epc_filter(values: list[str]) -> Any:
    conds: list[Any] = []
    for v in values:
        if v.startswith("urn:epc:idpat:") and v.endswith("*"):
            stem = "urn:epc:id:" + v[len("urn:epc:idpat:"):-1]
            stem = stem.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            conds.append(hq_event_epcs.c.epc.like(stem + "%", escape="\\"))
        else:
            conds.append(hq_event_epcs.c.epc == v)
    return exists().where(hq_event_epcs.c.event_id == hq_events.c.event_id, or_(*conds))


def statement(q: EventQuery) -> Select[Any]:
    e = hq_events
    conds: list[Any] = [e.c.id > q.after_id]
    columns = {"eventType": e.c.type, "EQ_action": e.c.action, "EQ_bizStep": e.c.biz_step,
               "EQ_disposition": e.c.disposition, "EQ_readPoint": e.c.read_point,
               "EQ_bizLocation": e.c.biz_location, "EQ_eventID": e.c.event_id}
    for name, col in columns.items():
        if name in q.lists:
            conds.append(col.in_(_cbv(name, q.lists[name])))
    for name in ("MATCH_epc", "MATCH_anyEPC"):
        if name in q.lists:
            conds.append(_epc_filter(q.lists[name]))
    t = q.times
    if "GE_eventTime" in t:
        conds.append(e.c.event_time >= t["GE_eventTime"])
    if "LT_eventTime" in t:
        conds.append(e.c.event_time < t["LT_eventTime"])
    if "GE_recordTime" in t:
        conds.append(e.c.received_at >= t["GE_recordTime"])
    if "LT_recordTime" in t:
        conds.append(e.c.received_at < t["LT_recordTime"])
    return select(e.c.id, e.c.raw).where(and_(*conds)).order_by(e.c.id).limit(q.per_page + 1)


def matches_epc(raw: dict[str, Any], values: list[str]) -> bool:
    """MATCH_epc looks at epcList and childEPCs only (not parentID, inputs or outputs)."""
    epcs = [*(raw.get("epcList") or []), *(raw.get("childEPCs") or [])]
    for v in values:
        if v.startswith("urn:epc:idpat:") and v.endswith("*"):
            stem = "urn:epc:id:" + v[len("urn:epc:idpat:"):-1]
            if any(isinstance(x, str) and x.startswith(stem) for x in epcs):
                return True
        elif v in epcs:
            return True
    return False


def run(engine: Engine, q: EventQuery) -> tuple[list[dict[str, Any]], str | None]:
    """(events of this page as stored, the next page's token or None)."""
    with engine.connect() as conn:
        rows = conn.execute(statement(q)).all()
    more = len(rows) > q.per_page
    rows = rows[: q.per_page]
    events = [dict(r.raw) for r in rows]
    if "MATCH_epc" in q.lists:
        events = [ev for ev in events if matches_epc(ev, q.lists["MATCH_epc"])]
    return events, (encode_token(rows[-1].id) if more and rows else None)
