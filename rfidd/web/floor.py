"""The staff page's floor routes (/api/v1/floor): client holds, open alerts with their next
step, the item on the desk reader, the handheld's "find this item" proximity, and the sales
floor's notification line. Bodies in and out are pydantic models; the live ones are
server-sent events (rfidd.web.page's stream) of the same models.

Roles: staff for everything here; resolving an alert stays a manager's route
(/api/v1/alerts/{id}/resolve), and the alert list says whether the caller may.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from inventory.isotime import parse_iso_datetime
from rfidd.config import Config
from rfidd.config_http import Role
from rfidd.lifecycle.commands import normalize_epc
from rfidd.web.answers import ERRORS, ErrorAnswer
from rfidd.web.deps import effective, require
from rfidd.web.errors import ApiError
from rfidd.web.floor_feed import FloorFeed, Notice
from rfidd.web.i18n import Formatter
from rfidd.web.page import STATIC, _find, _stream, fmt_for
from rfidd.web.page_answers import EventStream

PREFIX = "/api/v1/floor"
MAX_HOLDS = 1000  # the holds screen's list, oldest first
RESOLUTIONS = ("false_alarm", "recovered", "confirmed_loss")
RSSI_FAR_DBM, RSSI_NEAR_DBM = -80.0, -30.0  # the proximity bar's empty and full ends
NO_FINDER: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorAnswer, "description": "No such handheld, or it has no find mode."}}


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Product(_Out):
    epc: str = Field(description="The item's EPC (hex).")
    name: str = Field(description="Product name from the catalog (or its GTIN).")
    size: str = Field("", description="Size, when the catalog has one.")
    colour: str = Field("", description="Colour, when the catalog has one.")


class HoldRow(Product):
    client: str = Field(description="Who it is held for: the client's reference, never a name.")
    since_text: str = Field(description="When the hold was placed, in the reader's language.")
    until_text: str = Field("", description="When it expires ('' when it does not).")
    where_text: str = Field(description="Where the item is now, or where it was last seen.")
    present: bool = Field(description="True while a reader sees it in a zone.")


class HoldList(_Out):
    holds: list[HoldRow] = Field(description="Every item held for a client, oldest first.")


class HoldPlace(BaseModel):
    model_config = ConfigDict(extra="forbid")
    epc: str = Field(min_length=4, max_length=200, description="The item: hex EPC or SGTIN URI.")
    client: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._#/-]{0,63}$",
                        description="The client's reference (a loyalty or order number).")
    days: int = Field(7, ge=1, le=90, description="How long the hold lasts.")


class HoldResult(_Out):
    epc: str = Field(description="The item.")
    accepted: bool = Field(description="True when the step was applied (or already was).")
    reason: str = Field("", description="Why not, when refused.")


class AlertRow(Product):
    alert_id: str = Field(description="The alert's id.")
    type_text: str = Field(description="What happened, in words.")
    zone: str = Field("", description="Where it was raised.")
    state: str = Field(description="open or acknowledged.")
    state_text: str = Field(description="Its state and since when, in words.")


class Choice(_Out):
    value: str = Field(description="The value to send.")
    text: str = Field(description="Its words.")


class AlertList(_Out):
    alerts: list[AlertRow] = Field(description="Open and acknowledged alerts, newest first.")
    can_resolve: bool = Field(description="Whether the caller may resolve (manager).")
    resolve_note: str = Field("", description="Why the resolve step is absent, when it is.")
    resolutions: list[Choice] = Field(description="The resolutions a manager may choose.")


class FoundItem(Product):
    price: str = Field("", description="Price in the reader's locale.")
    zone: str = Field("", description="The last zone it was seen in.")
    state: str = Field("", description="Its lifecycle status (in_stock, held, sold...).")
    state_text: str = Field("", description="That status in the reader's language.")
    disposition: str = Field("", description="Its CBV disposition.")
    last_seen: str = Field("", description="When a reader last saw it, in words.")
    present: bool = Field(description="True while a reader sees it in a zone.")
    where_text: str = Field(description="Where it is now; for a missing one, where and when "
                            "it was last seen.")
    history: list[dict[str, Any]] = Field(description="Its last EPCIS events (trace).")


class FindResults(_Out):
    results: list[FoundItem] = Field(description="The items found.")


class DeskScan(_Out):
    seq: int = Field(description="Increases with every new item put on a desk reader.")
    zone: str = Field("", description="The desk reader's zone.")
    at_text: str = Field("", description="When it was put there.")
    item: FoundItem | None = Field(None, description="The item, as find shows it.")
    waiting_text: str = Field("", description="What to do when nothing was scanned yet.")


class FloorLine(_Out):
    seq: int = Field(description="Increases with every notice.")
    text: str = Field(description="The one line the sales floor shows.")


class Handheld(_Out):
    reader: str = Field(description="A reader that can find an item (a handheld).")
    label: str = Field(description="The button's words.")


class Handhelds(_Out):
    handhelds: list[Handheld] = Field(description="Readers with a find mode.")


class FindStart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    epc: str | None = Field(None, max_length=124, description="The EPC to find; None stops.")


class Proximity(_Out):
    reader: str = Field(description="The handheld.")
    epc: str | None = Field(None, description="The item looked for (None: not searching).")
    ratio: float = Field(description="0 (far or not heard) to 1 (touching).")
    rssi_dbm: float | None = Field(None, description="The last RSSI heard.")
    text: str = Field(description="The signal in words.")


def proximity(rssi: float | None) -> float:
    """RSSI (dBm) -> 0..1 on the bar: louder is closer."""
    if rssi is None:
        return 0.0
    return max(0.0, min(1.0, (rssi - RSSI_FAR_DBM) / (RSSI_NEAR_DBM - RSSI_FAR_DBM)))


def floor_router(config: Config, ops: Any, lifecycle: Any, feed: FloorFeed,
                 monitor: Any | None) -> APIRouter:
    """`ops`: the daemon's OpsServices; `lifecycle`: the LifecycleService (holds, alerts)."""
    tz = config.site.timezone
    r = APIRouter(prefix=PREFIX, tags=["floor"], dependencies=[Depends(require(Role.STAFF))],
                  responses=ERRORS)

    def product(epc: str) -> dict[str, str]:
        g = ops.catalog.gtin_of(epc)
        p = ops.catalog.catalog.get(g) if g else None
        return {"epc": epc, "name": (p.name or p.sku) if p else (g or epc),
                "size": (p.size or "") if p else "", "colour": (p.colour or "") if p else ""}

    @r.get("/holds")
    def holds(request: Request) -> HoldList:
        f = fmt_for(request, tz)
        rows = lifecycle.held_items(MAX_HOLDS)
        where = ops.catalog.whereabouts([h.epc for h in rows])
        out = []
        for h in rows:
            here, last_zone, last_seen = where.get(h.epc, (None, None, None))
            out.append(HoldRow(
                **product(h.epc), client=h.client or "",
                since_text=f.t("held_since", when=f.when(h.since)),
                until_text=f.t("held_until", when=f.when(h.until)) if h.until else "",
                where_text=_where(f, here, last_zone, last_seen, config),
                present=here is not None))
        return HoldList(holds=out)

    def step(command: str, epc: str, request: Request, **extra: Any) -> HoldResult:
        try:
            norm = normalize_epc(epc)
        except ValueError as exc:
            raise ApiError(422, f"epc: {exc}") from None
        who = request.state.principal.name
        txn = f"page-{command}-{norm[-8:]}-{int(time.time() * 1000)}"
        try:
            res = lifecycle.handle(command, {"txn": txn, "epcs": [norm], **extra},
                                   source=f"api:{who}")
        except ValueError as exc:  # the command's own validation names the field
            raise ApiError(422, str(exc)) from None
        item = res.items[0]
        if item.result == "rejected":
            f = fmt_for(request, tz)
            return HoldResult(epc=norm, accepted=False,
                              reason=f.t("refused", reason=item.reason or item.reason_code))
        return HoldResult(epc=norm, accepted=True)

    @r.post("/holds")
    def place_hold(body: HoldPlace, request: Request) -> HoldResult:
        until = (datetime.now(UTC) + timedelta(days=body.days)).isoformat()
        return step("hold", body.epc, request, client=body.client,
                    staff=request.state.principal.name, until=until)

    @r.post("/holds/{epc}/release")
    def release_hold(epc: str, request: Request) -> HoldResult:
        return step("release", epc, request)

    @r.get("/alerts")
    def alerts(request: Request) -> AlertList:
        f = fmt_for(request, tz)
        rows = lifecycle.alerts.list("open") + lifecycle.alerts.list("acknowledged")
        rows.sort(key=lambda a: a["raised_at"] or "", reverse=True)
        names = request.app.state.auth.user_names()  # staff ids -> names, on this page only
        out = []
        for a in rows:
            if a["state"] == "acknowledged":
                by = a.get("acknowledged_by") or "?"
                text = f.t("alert_acknowledged", who=names.get(by, by),
                           when=f.when(_epoch(a.get("acknowledged_at"))))
            else:
                text = f.t("alert_open", when=f.when(_epoch(a.get("raised_at"))))
            key = f"type_{a['type']}"
            out.append(AlertRow(**product(a["epc"]), alert_id=a["alert_id"],
                                type_text=f.t(key) if _has(key) else a["type"].replace("_", " "),
                                zone=a.get("zone") or "", state=a["state"], state_text=text))
        manager = Role.MANAGER in effective(request.state.principal.roles)
        return AlertList(alerts=out, can_resolve=manager,
                         resolve_note="" if manager else f.t("resolve_needs_manager"),
                         resolutions=[Choice(value=v, text=f.t(f"res_{v}")) for v in RESOLUTIONS])

    def find_items(q: str, f: Formatter) -> list[FoundItem]:
        """The page's find, with where each item is now (or, missing, last seen where/when)."""
        rows = _find(q, ops, lifecycle, f)
        where = ops.catalog.whereabouts([row["epc"] for row in rows])
        out = []
        for row in rows:
            here, zone, seen = where.get(row["epc"], (None, None, None))
            out.append(FoundItem.model_validate({
                **{k: v or "" for k, v in row.items() if k != "history"},
                "name": row["name"] or row["epc"], "history": row["history"],
                "present": here is not None, "where_text": _where(f, here, zone, seen, config)}))
        return out

    @r.get("/find")
    def find(q: str, request: Request) -> FindResults:
        q = q.strip()
        if not q:
            raise ApiError(422, "q: give an EPC, a SKU or a name")
        return FindResults(results=find_items(q, fmt_for(request, tz)))

    def desk_view(f: Formatter) -> DeskScan:
        """The last item put on a desk reader, as it is now (it settles into the desk's zone
        a moment after its first read there)."""
        scans = feed.since(0, "desk_scan")
        if not scans:
            return DeskScan(seq=0, waiting_text=f.t("desk_wait"))
        n = scans[-1]
        found = find_items(n.epc, f)
        return DeskScan(seq=n.seq, zone=n.zone, at_text=f.when(n.at),
                        item=found[0] if found else None)

    @r.get("/desk")
    def desk(request: Request) -> DeskScan:
        return desk_view(fmt_for(request, tz))

    @r.get("/desk/live", response_class=EventStream)
    async def desk_live(request: Request) -> StreamingResponse:
        f = fmt_for(request, tz)
        return _stream(request, lambda: desk_view(f).model_dump(), lambda _d: False)

    def line_view(f: Formatter) -> FloorLine:
        got = feed.since(0, "held_arrived")
        if not got:
            return FloorLine(seq=0, text=f.t("no_notice"))
        n = got[-1]
        return FloorLine(seq=n.seq, text=notice_text(f, n, product(n.epc)["name"]))

    @r.get("/line")
    def line(request: Request) -> FloorLine:
        return line_view(fmt_for(request, tz))

    @r.get("/line/live", response_class=EventStream)
    async def line_live(request: Request) -> StreamingResponse:
        f = fmt_for(request, tz)
        return _stream(request, lambda: line_view(f).model_dump(), lambda _d: False)

    def finders() -> list[str]:
        return [] if monitor is None else list(monitor.finders())

    @r.get("/handhelds")
    def handhelds(request: Request) -> Handhelds:
        f = fmt_for(request, tz)
        return Handhelds(handhelds=[Handheld(reader=n, label=f.t("find_handheld", reader=n))
                                    for n in finders()])

    def proximity_view(reader: str, f: Formatter) -> Proximity:
        try:
            st = monitor.find_status(reader) if monitor is not None else None
        except LookupError:
            st = None
        if st is None:
            raise ApiError(404, f"reader {reader!r} has no find mode")
        rssi = st["last_rssi_dbm"]
        best = st["best_rssi_dbm"]
        text = f.t("not_heard") if rssi is None else f.t(
            "signal", rssi=f.number(round(rssi)), best=f.number(round(best or rssi)))
        return Proximity(reader=reader, epc=st["epc"], ratio=proximity(rssi), rssi_dbm=rssi,
                         text=text)

    @r.post("/find/{reader}", responses=NO_FINDER)
    def find_start(reader: str, body: FindStart, request: Request) -> Proximity:
        if monitor is None or reader not in finders():
            raise ApiError(404, f"reader {reader!r} has no find mode (handhelds: "
                           f"{', '.join(finders()) or 'none'})")
        try:
            monitor.find(reader, None if body.epc is None else normalize_epc(body.epc))
        except ValueError as exc:
            raise ApiError(422, f"epc: {exc}") from None
        return proximity_view(reader, fmt_for(request, tz))

    @r.get("/find/{reader}/live", response_class=EventStream, responses=NO_FINDER)
    async def find_live(reader: str, request: Request) -> StreamingResponse:
        f = fmt_for(request, tz)
        proximity_view(reader, f)  # a 404 now, not an error event later
        return _stream(request, lambda: proximity_view(reader, f).model_dump(),
                       lambda d: d["epc"] is None)

    return r


def favicon_router() -> APIRouter:
    """The browser's icon: a static file, the one route besides /healthz without a credential
    (it holds no data)."""
    r = APIRouter()

    @r.get("/favicon.ico", include_in_schema=False)
    def favicon() -> FileResponse:
        return FileResponse(STATIC / "favicon.ico", media_type="image/x-icon",
                            headers={"Cache-Control": "max-age=86400"})

    return r


def notice_text(f: Formatter, n: Notice, name: str) -> str:
    key = "notice_reception" if n.zone_kind == "reception" else "notice_floor"
    return f.t(key, client=n.client or "?", name=name)


def _where(f: Formatter, here: str | None, last_zone: str | None,
           last_seen: float | None, config: Config) -> str:
    def place(zone: str | None) -> str:
        zc = config.zones.get(zone) if zone else None
        return f.place(zone, zc.label if zc is not None else None)

    if here:
        return f.t("now_in", place=place(here))
    if last_seen:
        return f.t("missing_since", place=place(last_zone), when=f.when(last_seen))
    return f.t("never_seen")


def _epoch(iso: str | None) -> float | None:
    return None if not iso else parse_iso_datetime(iso, "time").timestamp()


def _has(key: str) -> bool:
    from rfidd.web.i18n import WORDS

    return key in WORDS
