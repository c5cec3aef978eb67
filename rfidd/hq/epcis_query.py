"""EPCIS 2.0 query parameters (GS1 REST bindings) -> SQL over the HQ tables.

The subset HQ answers, each as the standard defines it: eventType, GE_/LT_eventTime,
GE_/LT_recordTime, EQ_action, EQ_bizStep, EQ_disposition, EQ_readPoint, EQ_bizLocation,
EQ_eventID, MATCH_epc, MATCH_anyEPC (with urn:epc:idpat:...:* patterns). Anything else is
refused with its name: a tool that asks for a filter HQ does not apply must not get an
unfiltered answer it takes for the truth. Several values of one parameter are OR-ed (pipe
delimited or repeated); different parameters are AND-ed.

Results are in record order, so a page token is the last position seen: stable while new events
arrive. Record order is the HQ row id; for a query on recordTime (GE_/LT_recordTime) it is
(recordTime, id), so each page is one index range scan from the token on, however many events
are older than the window.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Engine, Select, and_, exists, literal, or_, select, tuple_

from rfidd.hq.documents import EVENT_TYPES, parse_time
from rfidd.hq.store import Time, hq_event_epcs, hq_events, utc

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
    after_recorded: datetime | None = None  # recordTime of the token's row (recordTime order)

    @property
    def by_record_time(self) -> bool:
        return "GE_recordTime" in self.times or "LT_recordTime" in self.times

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
        q.after_id, q.after_recorded = decode_token(params["nextPageToken"][-1])
        if (q.after_recorded is not None) != q.by_record_time:
            raise QueryParameterError("nextPageToken", "nextPageToken belongs to another query")
    return q


def encode_token(last_id: int, recorded: datetime | None = None) -> str:
    text = f"after:{last_id}" if recorded is None else f"rt:{last_id}:{recorded.isoformat()}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_token(token: str) -> tuple[int, datetime | None]:
    """(the last id, its recordTime or None for id order)."""
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        kind, _, rest = text.partition(":")
        n, _, at = rest.partition(":")
        if kind not in ("after", "rt") or not n.isdigit() or (kind == "after") != (not at):
            raise ValueError
        return int(n), (parse_time(at) if at else None)
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


def _epc_filter(values: list[str], *, listed_only: bool) -> Any:
    """MATCH_epc (listed_only) looks at epcList and childEPCs only; MATCH_anyEPC also at
    parentID, inputEPCList and outputEPCList. Filtered in SQL, so a page is always full."""
    conds: list[Any] = []
    for v in values:
        if v.startswith("urn:epc:idpat:") and v.endswith("*"):
            stem = "urn:epc:id:" + v[len("urn:epc:idpat:"):-1]
            stem = stem.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            conds.append(hq_event_epcs.c.epc.like(stem + "%", escape="\\"))
        else:
            conds.append(hq_event_epcs.c.epc == v)
    x = hq_event_epcs
    match = or_(*conds)
    if listed_only:
        match = and_(match, x.c.listed)
    # event_time too: on PostgreSQL the join then prunes to the event's monthly partition
    return exists().where(x.c.event_id == hq_events.c.event_id,
                          x.c.event_time == hq_events.c.event_time, match)


def statement(q: EventQuery) -> Select[Any]:
    e = hq_events
    conds: list[Any] = []
    if not q.by_record_time:
        conds.append(e.c.id > q.after_id)
    elif q.after_recorded is not None:
        conds.append(tuple_(e.c.received_at, e.c.id)
                     > tuple_(literal(q.after_recorded, Time), literal(q.after_id, BigInteger)))
    columns = {"eventType": e.c.type, "EQ_action": e.c.action, "EQ_bizStep": e.c.biz_step,
               "EQ_disposition": e.c.disposition, "EQ_readPoint": e.c.read_point,
               "EQ_bizLocation": e.c.biz_location, "EQ_eventID": e.c.event_id}
    for name, col in columns.items():
        if name in q.lists:
            conds.append(col.in_(_cbv(name, q.lists[name])))
    for name in ("MATCH_epc", "MATCH_anyEPC"):
        if name in q.lists:
            conds.append(_epc_filter(q.lists[name], listed_only=name == "MATCH_epc"))
    t = q.times
    if "GE_eventTime" in t:
        conds.append(e.c.event_time >= t["GE_eventTime"])
    if "LT_eventTime" in t:
        conds.append(e.c.event_time < t["LT_eventTime"])
    if "GE_recordTime" in t:
        conds.append(e.c.received_at >= t["GE_recordTime"])
    if "LT_recordTime" in t:
        conds.append(e.c.received_at < t["LT_recordTime"])
    order = (e.c.received_at, e.c.id) if q.by_record_time else (e.c.id,)
    return (select(e.c.id, e.c.received_at, e.c.raw).where(and_(*conds)).order_by(*order)
            .limit(q.per_page + 1))


def run(engine: Engine, q: EventQuery) -> tuple[list[dict[str, Any]], str | None]:
    """(events of this page as stored, the next page's token or None)."""
    with engine.connect() as conn:
        rows = conn.execute(statement(q)).all()
    more = len(rows) > q.per_page
    rows = rows[: q.per_page]
    events = [dict(r.raw) for r in rows]
    if not (more and rows):
        return events, None
    last = rows[-1]
    return events, encode_token(last.id, utc(last.received_at) if q.by_record_time else None)
