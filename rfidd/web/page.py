"""The staff page: its files, and view routes that answer display-ready data (words, numbers,
money and dates in the reader's language and the site's time zone), live progress as
server-sent events, and charts drawn as SVG by pygal (served by the daemon: no CDN)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from datetime import date, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import FileResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from inventory.periods import last_weeks
from rfidd.config import Config
from rfidd.config_http import Role
from rfidd.ops.common import booked_by_takeover, taken_over
from rfidd.web import page_answers as V
from rfidd.web.answers import ERRORS, AnswerRoute
from rfidd.web.deps import require
from rfidd.web.errors import ApiError
from rfidd.web.i18n import LANGS, Formatter, pick_lang

STATIC = Path(__file__).parent / "static"
LIVE_INTERVAL_S = 1.0  # tests set it small
LANG_COOKIE = "rfidd_lang"
_STAFF = require(Role.STAFF)


def fmt_for(request: Request, timezone: str) -> Formatter:
    return Formatter(pick_lang(request.query_params.get("lang"),
                               request.cookies.get(LANG_COOKIE),
                               request.headers.get("accept-language")), timezone)


def page_router(config: Config, ops: Any, lifecycle: Any | None) -> APIRouter:
    """Routes of the page; `ops` is the daemon's OpsServices (catalog, counting, reception,
    exits, replenishment), `lifecycle` the LifecycleService (or None)."""
    tz = config.site.timezone
    r = APIRouter(tags=["page"])

    @r.get("/", include_in_schema=False, response_class=FileResponse)
    def index() -> FileResponse:
        # The page itself holds no data (everything comes from authenticated routes).
        return FileResponse(STATIC / "index.html", headers={
            "Cache-Control": "no-store", "X-Frame-Options": "DENY",
            "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                                       "frame-ancestors 'none'"})

    @r.get("/words.json", include_in_schema=False)
    def words() -> dict[str, dict[str, str]]:
        """The sign-in screen's words in both languages (no data: no credential needed)."""
        return {lang: Formatter(lang, tz).words() for lang in LANGS}

    v = APIRouter(prefix="/api/v1/page", dependencies=[Depends(_STAFF)], tags=["page"],
                  route_class=AnswerRoute, responses=ERRORS)

    @v.get("/context", response_model=V.PageContext)
    def context(request: Request, response: Response) -> dict[str, Any]:
        f = fmt_for(request, tz)
        response.set_cookie(LANG_COOKIE, f.lang, samesite="strict", max_age=365 * 86400)
        p = request.state.principal
        return {"lang": f.lang, "words": f.words(), "site": config.site.name,
                "user": p.display or p.name, "zones": sorted(config.zones),
                "zone_labels": {z: zc.label for z, zc in config.zones.items() if zc.label},
                "counts": _count_rows(ops.counting.counts(), f)}

    def count_view(cid: str, f: Formatter) -> dict[str, Any]:
        data = ops.counting.count(cid)
        if data["status"] == "running":
            prog = data["progress"]
            missing = ops.counting.count_missing(cid)
            return {"status": "running", "found": prog["found"], "expected": prog["expected"],
                    "ratio": prog["found"] / prog["expected"] if prog["expected"] else 0.0,
                    "headline": f.count_headline(prog["found"], prog["expected"],
                                                 taken_over(data), running=True),
                    "missing": [_product_line(m) for m in missing],
                    "missing_total": f.number(prog["expected"] - prog["found"])}
        doc = data.get("report") or {}
        totals = doc.get("totals", {})
        booked = booked_by_takeover(doc)
        return {"status": data["status"], "found": totals.get("found", 0),
                "expected": totals.get("expected", 0), "ratio": _ratio(totals),
                "headline": f.count_headline(totals.get("found", 0), totals.get("expected", 0),
                                             taken_over(doc), running=False),
                "accuracy": f.percent(None if doc.get("adopt") else _ratio(totals)),
                "missing": [report_line(m, ops.catalog.catalog) for m in doc.get("missing", [])],
                # a take-over's "unexpected" items it put on the books are the headline's
                # figure, not exceptions to check
                "unexpected": [report_line(m, ops.catalog.catalog)
                               for m in doc.get("unexpected", []) if m.get("epc") not in booked],
                "missing_total": f.number(totals.get("missing", 0))}

    @v.get("/counts/{cid}", response_model=V.CountView)
    def count(cid: str, request: Request) -> dict[str, Any]:
        return count_view(cid, fmt_for(request, tz))

    @v.get("/counts/{cid}/live", response_class=V.EventStream)
    async def count_live(cid: str, request: Request) -> StreamingResponse:
        f = fmt_for(request, tz)
        return _stream(request, lambda: count_view(cid, f), lambda d: d["status"] != "running")

    def reception_view(sid: str, f: Formatter) -> dict[str, Any]:
        data = ops.reception.reception(sid)
        doc = data.get("report") or {}
        products = ops.catalog.catalog
        # size and colour: two colours of one bag are two lines of the same name
        lines = [{**ln, "expected_text": f.number(ln.get("expected") or 0),
                  "received_text": f.number(ln.get("received") or 0),
                  "size": getattr(products.get(ln.get("gtin")), "size", "") or "",
                  "colour": getattr(products.get(ln.get("gtin")), "colour", "") or ""}
                 for ln in doc.get("lines", [])]
        totals = doc.get("totals", {})
        return {"status": data.get("status", "open"), "session_id": sid,
                "asn_ids": doc.get("asn_ids", []), "lines": lines,
                "missing": len(doc.get("missing", [])),
                "unexpected": len(doc.get("unexpected", [])),
                "headline": f.t("found_of", found=f.number(totals.get("received", 0)),
                                expected=f.number(totals.get("expected", 0)))}

    @v.get("/receptions", response_model=V.ReceptionList)
    def receptions(request: Request) -> dict[str, Any]:
        f = fmt_for(request, tz)
        rows = ops.reception.receptions()
        return {"receptions": [{**r, "opened_text": f.when(r.get("opened_at"))} for r in rows]}

    @v.get("/receptions/{sid}", response_model=V.ReceptionView)
    def reception(sid: str, request: Request) -> dict[str, Any]:
        return reception_view(sid, fmt_for(request, tz))

    @v.get("/receptions/{sid}/live", response_class=V.EventStream)
    async def reception_live(sid: str, request: Request) -> StreamingResponse:
        f = fmt_for(request, tz)
        return _stream(request, lambda: reception_view(sid, f),
                       lambda d: d["status"] == "closed")

    @v.get("/find", response_model=V.FindResults)
    def find(q: str, request: Request) -> dict[str, Any]:
        f = fmt_for(request, tz)
        q = q.strip()
        if not q:
            raise ApiError(400, "q: give an EPC, a SKU or a name")
        return {"results": _find(q, ops, lifecycle, f)}

    @v.get("/replenishment", response_model=V.PageReplenishment)
    def replenishment(request: Request) -> dict[str, Any]:
        f = fmt_for(request, tz)
        lines, unbooked = ops.replenishment.replenishment_and_unbooked(1)
        return {"lines": [{**ln.to_dict(), "text": f.t(
            "to_bring_n", n=f.number(ln.suggested), stock=f.number(ln.stock_qty),
            floor=f.number(ln.floor_qty))} for ln in lines],
            "not_on_books": f.t("shelf_not_on_books", n=f.number(len(unbooked)))
            if unbooked else ""}

    @v.get("/alerts", response_model=V.PageAlerts)
    def alerts(request: Request) -> dict[str, Any]:
        f = fmt_for(request, tz)
        sus = ops.exits.suspected()["suspected"]
        return {"suspected": [{**s, **_product_line({"epc": s["epc"],
                                                      **ops.catalog.product(s["epc"])}),
                               "confidence_text": f.percent(s["confidence"]),
                               "since_text": f.when(s["suspected_at"])} for s in sus]}

    @v.get("/charts/accuracy.svg", response_class=V.Svg)
    def accuracy_chart(request: Request) -> Response:
        f = fmt_for(request, tz)
        points = accuracy_points(ops.counting.counts())
        chart = _chart("Line", f.t("count_accuracy"), f.t("axis_percent_found"),
                       range_=(0, 100))
        chart.x_labels = [f.day(at) for at, _ in points]
        chart.add(f.t("accuracy"), [pct for _, pct in points])
        return _svg(chart)

    @v.get("/charts/shrinkage.svg", response_class=V.Svg)
    def shrinkage_chart(request: Request, by: str = "zone") -> Response:
        f = fmt_for(request, tz)
        key = "by_category" if by == "category" else "by_zone"
        weeks, series = weekly_shrinkage(ops.exits.shrinkage, time.time(), ZoneInfo(tz), key)
        return _svg(items_chart(f.t("shrinkage_category" if key == "by_category"
                                    else "shrinkage_zone"),
                                [f.day(a) for a, _, _ in weeks], series,
                                unit=f.t("axis_items_lost")))

    r.include_router(v)
    return r


def mount_static(app: Any) -> None:
    app.mount("/static", StaticFiles(directory=STATIC), name="static")


def weekly_shrinkage(shrinkage: Callable[[float, float], Any], now: float, tz: tzinfo,
                     key: str, n: int = 6) -> tuple[list[tuple[float, float, date]],
                                                    dict[str, list[int]]]:
    """Items lost per ISO week (inventory.periods: Monday to Monday, site time, labelled by
    the Monday) of the last `n` weeks, per zone or category (`key`: by_zone, by_category)."""
    weeks = last_weeks(now, n, tz)
    docs = [shrinkage(a, b).to_dict() for a, b, _ in weeks]
    names = sorted({k for d in docs for k in d[key]})
    return weeks, {k: [(d[key].get(k) or {}).get("items", 0) for d in docs] for k in names}


def accuracy_points(counts: list[dict[str, Any]], last: int = 12) -> list[tuple[float, float]]:
    """(start, item accuracy %) of the last finished counts, oldest first. A count that
    expected nothing (the go-live take-over, a count of the exit) has no accuracy: plotted
    as 0 % it would read as a count that found nothing."""
    rows = [r for r in counts if r.get("totals") and _ratio(r["totals"]) is not None]
    return [(r["started_at"], round(100 * (_ratio(r["totals"]) or 0.0), 1))
            for r in rows[:last]][::-1]


def _ratio(totals: dict[str, Any]) -> float | None:
    exp = totals.get("expected") or 0
    return (totals.get("found", 0) / exp) if exp else None


def items_chart(title: str, labels: list[str], series: dict[str, list[int]], *,
                unit: str) -> Any:
    """A stacked bar chart of items per label, on a whole-item axis named `unit`."""
    chart = _chart("StackedBar", title, unit)
    chart.x_labels = labels
    for n, values in series.items():
        chart.add(n, values)
    if series:  # no loss yet: pygal cannot place labels on an axis of no series (it raised)
        tops = [sum(v[i] for v in series.values()) for i in range(len(labels))]
        chart.y_labels = item_axis(max(tops, default=0))
    return chart


def item_axis(top: int, ticks: int = 10) -> list[int]:
    """Whole-item labels for a stacked chart of items whose tallest bar is `top`: pygal's
    own axis would read 0.1, 0.2 ... for a single lost item."""
    step = max(1, -(-top // ticks))
    return list(range(0, max(top, 1) + step, step))


def report_line(m: dict[str, Any], products: dict[str, Any]) -> dict[str, Any]:
    """A line of a finished count's report: the report names the product but not its size
    and colour, which the live list shows; the catalog gives them, so both read the same."""
    p = products.get(m.get("gtin") or "")
    return _product_line({**m, "size": m.get("size") or getattr(p, "size", "") or "",
                          "colour": m.get("colour") or getattr(p, "colour", "") or ""})


def _product_line(m: dict[str, Any]) -> dict[str, Any]:
    return {"epc": m.get("epc"), "name": m.get("name") or m.get("sku") or m.get("gtin") or "?",
            "size": m.get("size") or "", "colour": m.get("colour") or "",
            "zone": m.get("zone") or m.get("booked_zone") or ""}


def _count_rows(rows: list[dict[str, Any]], f: Formatter) -> list[dict[str, Any]]:
    return [{"session_id": r["session_id"], "status": r["status"], "zones": r["zones"],
             "started": f.when(r["started_at"])} for r in rows[:10]]


def _find(q: str, ops: Any, lifecycle: Any | None, f: Formatter) -> list[dict[str, Any]]:
    """By EPC (hex), else by SKU or name in the catalog, then the items of those products."""
    from sqlalchemy import select

    from rfidd.store.models import Item

    products = ops.catalog.catalog
    hexq = q.upper()
    with ops.catalog.ctx.db.session() as s:
        if len(hexq) >= 16 and all(c in "0123456789ABCDEF" for c in hexq):
            items = list(s.scalars(select(Item).where(Item.epc == hexq)))
        else:
            ql = q.casefold()
            gtins = [g for g in products
                     if ql in products[g].name.casefold() or ql == products[g].sku.casefold()]
            items = list(s.scalars(select(Item).where(Item.gtin.in_(gtins[:50])).limit(50))) \
                if gtins else []
        rows = [(it.epc, it.gtin, it.zone, it.disposition, it.last_seen) for it in items]
    out = []
    for epc, gtin, zone, disposition, last_seen in rows:
        p = products.get(gtin) if gtin else None
        history: list[dict[str, Any]] = []
        state = None
        if lifecycle is not None:
            from rfidd.lifecycle.trace import trace

            state = lifecycle.item_state(epc)
            history = [{"when": f.when(h.event_time) if hasattr(h, "event_time") else "",
                        **h.to_json()} for h in trace(ops.catalog.ctx.db, epc)][-10:]
            zones = ops.catalog.ctx.config.zones
            for h in history:  # an OBSERVE without a business step: a reader saw it
                h["step_text"] = f.term(h.get("biz_step") or h.get("step")) or f.t("seen")
                z = h.get("zone")
                h["where_text"] = f.place(z, zones[z].label if z in zones else None) if z \
                    else ""
        status = (state or {}).get("status") if isinstance(state, dict) else disposition
        out.append({"epc": epc, "name": p.name if p else gtin, "size": p.size if p else "",
                    "state_text": f.term(status),
                    "colour": p.colour if p else "",
                    "price": f.money(p.price, p.currency) if p else "",
                    "zone": zone or "", "state": (state or {}).get("status") if isinstance(
                        state, dict) else disposition or "",
                    "disposition": disposition or "", "last_seen": f.when(last_seen),
                    "history": history})
    return out


def _chart(kind: str, title: str, unit: str, range_: tuple[int, int] | None = None) -> Any:
    """A pygal chart of class `kind`. pygal is imported when a chart is first drawn: a daemon
    nobody looks at does not keep it (~6 MiB)."""
    import pygal
    from pygal.style import Style

    style = Style(background="transparent", plot_background="transparent",
                  font_family="system-ui, sans-serif",
                  colors=("#1f6f5c", "#c0392b", "#d68910", "#2e86c1"),
                  no_data_font_size=16)  # pygal's 64 px ran across the grid lines
    # js=[]: pygal's default loads its tooltip script from a CDN; the page must work offline.
    chart = getattr(pygal, kind)(title=title, y_title=unit, style=style, js=[], width=640,
                                 height=300,
                 show_legend=True, legend_at_bottom=True, disable_xml_declaration=True,
                 range=range_, print_values=False)
    return chart


def _svg(chart: Any) -> Response:
    return Response(chart.render(is_unicode=True), media_type="image/svg+xml",
                    headers={"Cache-Control": "no-store"})


def _stream(request: Request, snapshot: Callable[[], dict[str, Any]],
            done: Callable[[dict[str, Any]], bool]) -> StreamingResponse:
    """Server-sent events: a snapshot when it changes (and a comment every 15 s to keep the
    connection), until `done` or the client goes away."""

    async def events() -> AsyncIterator[bytes]:
        last = None
        quiet = 0.0
        stopping = request.app.state.stopping
        while not stopping.is_set() and not await request.is_disconnected():
            try:
                data = await run_in_threadpool(snapshot)
            except Exception as exc:  # the session ended or vanished: say so, then stop
                yield f"event: error\ndata: {json.dumps({'error': str(exc)})}\n\n".encode()
                return
            text = json.dumps(data, default=str)
            if text != last:
                last, quiet = text, 0.0
                yield f"data: {text}\n\n".encode()
            elif quiet >= 15:
                quiet = 0.0
                yield b": keep-alive\n\n"
            if done(data):
                return
            await asyncio.sleep(LIVE_INTERVAL_S)
            quiet += LIVE_INTERVAL_S

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
