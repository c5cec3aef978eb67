"""Chain-wide views over HTTP: JSON under /chain/..., and the HQ page /chain (FR/EN).

The page is for HQ supply chain staff in a browser: they sign in once with their read token
(POST /chain/login sets an HttpOnly, SameSite=Strict cookie; no token in a URL or a log), then
see stock per store by product, the latest alerts and reports per store.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlencode

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from sqlalchemy import Engine

from inventory.catalog import parse_catalog_records
from rfidd.hq import chain, chain_charts, humane, tokens

COOKIE = "rfidd_hq_token"
Who = Callable[[Request, str], tokens.Integrator]
Publish = Callable[[str, bytes], bool]

TEXT = {
    "en": {"title": "rfidd HQ — the chain", "stock": "Stock per store", "sku": "SKU",
           "product": "Product", "size": "Size", "colour": "Colour", "store": "Store",
           "count": "In stock", "alerts": "Latest alerts", "reports": "Latest reports",
           "search": "Search", "none": "Nothing yet.", "when": "Received", "kind": "Kind",
           "detail": "Detail", "login": "Sign in with your HQ read token", "token": "Token",
           "go": "Sign in", "other": "Français", "total": "items in stock",
           "unknown": "(not in the HQ catalog)", "trends": "Over time",
           "accuracy": "Count accuracy (items found / expected)",
           "shrinkage": "Shrinkage (lost value / net sales)", "chain": "Chain"},
    "fr": {"title": "rfidd HQ — la chaîne", "stock": "Stock par magasin", "sku": "Référence",
           "product": "Produit", "size": "Taille", "colour": "Couleur", "store": "Magasin",
           "count": "En stock", "alerts": "Dernières alertes", "reports": "Derniers rapports",
           "search": "Chercher", "none": "Rien pour l'instant.", "when": "Reçu",
           "kind": "Type", "detail": "Détail", "login": "Connexion avec votre jeton HQ "
           "(lecture)", "token": "Jeton", "go": "Se connecter", "other": "English",
           "total": "articles en stock", "unknown": "(absent du catalogue HQ)",
           "trends": "Dans le temps",
           "accuracy": "Exactitude des inventaires (articles trouvés / attendus)",
           "shrinkage": "Démarque (valeur perdue / ventes nettes)", "chain": "Chaîne"},
}
_STYLE = ("body{font-family:system-ui,sans-serif;margin:2rem;color:#222}"
          "table{border-collapse:collapse;margin:1rem 0}td,th{border-bottom:1px solid #ddd;"
          "padding:.3rem .8rem;text-align:left}th{background:#f4f4f4}"
          "td.n{text-align:right}form{margin:1rem 0}.chart{max-width:760px}")


def _lang(request: Request) -> str:
    lang = request.query_params.get("lang")
    if lang in TEXT:
        return lang
    accept = request.headers.get("accept-language", "")
    return "fr" if accept.lower().startswith("fr") else "en"


def _page(lang: str, title: str, body: str) -> HTMLResponse:
    return HTMLResponse(
        f'<!doctype html><html lang="{lang}"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body>{body}</body></html>",
        headers={"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
                 "X-Frame-Options": "DENY", "Cache-Control": "no-store"})


def register(app: FastAPI, engine: Engine, who: Who, *, topic_prefix: str = "rfidd/v1",
             publish: Publish | None = None) -> None:
    """Add the chain routes to the EPCIS app."""

    def filters(request: Request) -> dict[str, str | None]:
        q = request.query_params
        return {k: (q.get(k) or None) for k in ("site", "sku", "size", "colour", "text")}

    @app.get("/chain/stock")
    def stock_json(request: Request) -> JSONResponse:
        who(request, "read")
        return JSONResponse({"stock": [r.to_json() for r in
                                       chain.stock(engine, **filters(request))]})

    @app.get("/chain/items/{epc:path}")
    def item_life(epc: str, request: Request) -> JSONResponse:
        who(request, "read")
        from rfidd.hq.query import EpcInputError, normalize_epc

        try:
            uri = normalize_epc(epc)
        except EpcInputError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        events = chain.life(engine, uri)
        if not events:
            return JSONResponse({"error": f"no event names {uri}"}, status_code=404)
        return JSONResponse({"epc": uri, "events": events})

    @app.get("/chain/alerts")
    def alerts_json(request: Request) -> JSONResponse:
        who(request, "read")
        return JSONResponse({"alerts": chain.site_messages(
            engine, "alert", site=request.query_params.get("site"))})

    @app.get("/chain/trends")
    def trends_json(request: Request) -> JSONResponse:
        """The figures the charts draw: percentages by day, per store and for the chain."""
        who(request, "read")
        site = request.query_params.get("site") or None
        return JSONResponse({"accuracy": chain_charts.accuracy_trend(engine, site).to_json(),
                             "shrinkage": chain_charts.shrinkage_trend(engine, site).to_json()})

    @app.get("/chain/reports")
    def reports_json(request: Request) -> JSONResponse:
        who(request, "read")
        return JSONResponse({"reports": chain.latest_reports(engine)})

    @app.post("/chain/catalog")
    async def push_catalog(request: Request) -> JSONResponse:
        """The catalog (a list of products, or {"products": [...], "sites": [...]}) to the
        stores on cmd/catalog; kept at HQ for the views."""
        who(request, "capture")
        if publish is None:
            return JSONResponse({"error": "no MQTT link in this process"}, status_code=503)
        try:
            body = json.loads(await request.body())
        except ValueError as exc:
            return JSONResponse({"error": f"not JSON: {exc}"}, status_code=400)
        records = body.get("products") if isinstance(body, dict) else body
        asked = body.get("sites") if isinstance(body, dict) else None
        if not isinstance(records, list) or (asked is not None and not (
                isinstance(asked, list) and all(isinstance(s, str) for s in asked))):
            return JSONResponse({"error": "expected a list of products, or {\"products\": "
                                 "[...], \"sites\": [...]}"}, status_code=400)
        result = parse_catalog_records(records, "body")
        errors = [e for e in result.errors if "ignored" not in e.message]
        if errors:
            return JSONResponse({"error": "catalog refused, nothing published", "issues": [
                {"record": e.record, "field": e.field, "message": e.message}
                for e in errors[:50]]}, status_code=400)
        from datetime import UTC, datetime

        from rfidd.hq.backfill import BackfillError, check_sites

        try:
            targets = check_sites(engine, asked or [])
        except BackfillError as exc:
            return JSONResponse({"error": str(exc).replace("a replay", "the catalog")},
                                status_code=400)
        msgs = chain.catalog_messages(topic_prefix, targets, result.products)
        failed = [t for t, p in msgs if not publish(t, p)]
        if failed:
            return JSONResponse({"error": "broker not connected; retry", "failed": failed},
                                status_code=503)
        chain.save_catalog(engine, result.products, datetime.now(UTC))
        return JSONResponse({"products": len(result.products), "sites": targets,
                             "messages": len(msgs)})

    # -------------------------------------------------------------- the page

    @app.get("/chain/login")
    def login_form(request: Request) -> HTMLResponse:
        lang = _lang(request)
        t = TEXT[lang]
        return _page(lang, t["title"], (
            f"<h1>{t['title']}</h1><form method=post action='/chain/login?lang={lang}'>"
            f"<label>{t['login']}<br><input type=password name=token size=60 "
            f"aria-label='{t['token']}'></label> <button>{t['go']}</button></form>"))

    @app.post("/chain/login")
    async def login(request: Request) -> Response:
        lang = _lang(request)
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        token = (form.get("token") or [""])[0].strip()
        found = tokens.check(engine, token) if token else None
        if found is None or found.scope != "read":
            return RedirectResponse(f"/chain/login?lang={lang}", status_code=303)
        resp = RedirectResponse(f"/chain?lang={lang}", status_code=303)
        resp.set_cookie(COOKIE, token, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https", max_age=8 * 3600)
        return resp

    @app.get("/chain")
    def page(request: Request) -> Response:
        lang = _lang(request)
        try:
            who(request, "read")
        except Exception:
            return RedirectResponse(f"/chain/login?lang={lang}", status_code=303)
        t = TEXT[lang]
        e = html.escape
        f = filters(request)
        rows = chain.stock(engine, **f)
        other = "en" if lang == "fr" else "fr"
        keep = {k: v for k, v in f.items() if v}
        parts = [f"<p><a href='/chain?{e(urlencode({**keep, 'lang': other}))}'>"
                 f"{t['other']}</a></p><h1>{t['title']}</h1><h2>{t['stock']}</h2>",
                 f"<form method=get action='/chain'><input type=hidden name=lang value={lang}>"]
        for key, label in (("text", "search"), ("sku", "sku"), ("size", "size"),
                           ("colour", "colour")):
            parts.append(f"<label>{t[label]} <input name={key} value='{e(f[key] or '')}' "
                         "size=12></label> ")
        parts.append(f"<button>{t['search']}</button></form>")
        parts.append(f"<p>{sum(r.count for r in rows)} {t['total']}</p>")
        if rows:
            parts.append(f"<table><tr><th>{t['sku']}</th><th>{t['product']}</th>"
                         f"<th>{t['size']}</th><th>{t['colour']}</th><th>{t['store']}</th>"
                         f"<th>{t['count']}</th></tr>")
            for r in rows:
                parts.append(
                    f"<tr><td>{e(r.sku or r.gtin)}</td><td>{e(r.name or t['unknown'])}</td>"
                    f"<td>{e(r.size or '')}</td><td>{e(r.colour or '')}</td>"
                    f"<td>{e(r.site_name or r.site)}</td><td class=n>{r.count}</td></tr>")
            parts.append("</table>")
        else:
            parts.append(f"<p>{t['none']}</p>")
        parts.append(_trends(engine, t, lang, f["site"]))
        for title, items in ((t["alerts"], chain.site_messages(engine, "alert", limit=20)),
                             (t["reports"], chain.latest_reports(engine)[:30])):
            parts.append(f"<h2>{title}</h2>")
            if not items:
                parts.append(f"<p>{t['none']}</p>")
                continue
            parts.append(f"<table><tr><th>{t['when']}</th><th>{t['store']}</th>"
                         f"<th>{t['kind']}</th><th>{t['detail']}</th></tr>")
            for m in items:
                p: Any = m["payload"]
                kind = (p.get("type") or p.get("kind")) if isinstance(p, dict) else None
                detail = "<br>".join(f"<b>{e(k)}</b> {e(v[:120])}" if k else e(v[:200])
                                     for k, v in humane.pairs(p)[:8])
                parts.append(
                    f"<tr><td>{e(humane.when_text(str(m['received_at'])))}</td>"
                    f"<td>{e(m['site_name'] or m['site'])}</td>"
                    f"<td>{e(str(kind or m['kind']))}</td>"
                    f"<td class=detail>{detail}</td></tr>")
            parts.append("</table>")
        return _page(lang, t["title"], "".join(parts))


def _trends(engine: Engine, t: dict[str, str], lang: str, site: str | None) -> str:
    """The two charts over time (inline SVG drawn here), or "nothing yet"."""
    out = [f"<h2>{t['trends']}</h2>"]
    for key, trend, top in (("accuracy", chain_charts.accuracy_trend(engine, site), 100),
                            ("shrinkage", chain_charts.shrinkage_trend(engine, site), None)):
        if not trend.days:
            out.append(f"<h3>{t[key]}</h3><p>{t['none']}</p>")
            continue
        svg = chain_charts.chart_svg(trend, t[key], t["chain"], percent_max=top,
                                     decimal_comma=lang == "fr")
        out.append(f"<figure class=chart id=chart-{key}>{svg}</figure>")
    return "".join(out)
