"""HQ's web interface: GS1's EPCIS 2.0 REST interface (query, named queries, subscriptions,
capture), with HQ's own /api/v1, /metrics and the /chain page on the same FastAPI app and port.

Why the standard: any EPCIS tool (a partner's, a workshop system that is not rfidd) can query
HQ or feed it without an adapter. What follows GS1's EPCIS-2.0-openapi.json:
  GET  /events                 EPCISQueryDocument; perPage + nextPageToken, Link rel="next"
  GET  /events/{eventID}       one event
  GET/POST /queries, GET/DELETE /queries/{name}, GET /queries/{name}/events   named queries
  POST /capture                an EPCISDocument, validated against GS1's JSON Schema;
                               202 + Location /capture/{captureID}; GET /capture/{captureID}
  OPTIONS /capture             the capture limits (GS1-EPCIS-Capture-Limit, ...-File-Size-Limit)
Errors are RFC 7807 problems with GS1's epcisException types; every response carries
GS1-EPCIS-Version and GS1-CBV-Version. Every route needs `Authorization: Bearer TOKEN` of an
integrator (rfidd hq token add): scope read for queries, capture for capture.
Handlers are plain functions: FastAPI runs them in its thread pool (the database is synchronous).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import jsonschema  # type: ignore[import-untyped]
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CollectorRegistry, Counter
from sqlalchemy import Engine, delete, select
from starlette.exceptions import HTTPException as StarletteHTTPException

from rfidd.hq import api_v1, capture_api, subscriptions_web, tokens
from rfidd.hq import epcis_query as eq
from rfidd.hq.consumer import HqConsumer
from rfidd.hq.store import HqStore, hq_events, hq_queries
from rfidd.hq.subscriptions import SubscriptionHub, hq_subscriptions

log = logging.getLogger(__name__)

EPCIS_VERSION = "2.0.0"
CBV_VERSION = "2.0.0"
CONTEXT = "https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"
SCHEMA = Path(__file__).resolve().parent / "schemas" / "EPCIS-JSON-Schema.json"


@lru_cache(maxsize=1)
def validator() -> Any:
    schema = json.loads(SCHEMA.read_text())
    return jsonschema.Draft7Validator(schema, format_checker=jsonschema.FormatChecker())


class Problem(Exception):
    """An RFC 7807 answer with a GS1 exception type."""

    def __init__(self, status: int, kind: str, detail: str, headers: dict[str, str] | None = None
                 ) -> None:
        super().__init__(detail)
        self.status, self.kind, self.detail, self.headers = status, kind, detail, headers or {}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def query_document(events: list[dict[str, Any]], query_name: str = "SimpleEventQuery"
                   ) -> dict[str, Any]:
    return {
        "@context": [CONTEXT],
        "type": "EPCISQueryDocument",
        "schemaVersion": "2.0",
        "creationDate": _now(),
        "epcisBody": {"queryResults": {"queryName": query_name,
                                       "resultsBody": {"eventList": events}}},
    }


def schema_errors(doc: Any, limit: int = 10) -> list[str]:
    """'<JSON pointer>: <message>' for each schema violation (deepest first), at most `limit`."""
    errs = sorted(validator().iter_errors(doc), key=lambda e: (-len(e.absolute_path),
                                                                 list(map(str, e.absolute_path))))
    out = []
    for e in errs[:limit]:
        pointer = "/" + "/".join(str(p) for p in e.absolute_path)
        msg = e.message if len(e.message) <= 300 else e.message[:297] + "..."
        out.append(f"{pointer}: {msg}")
    return out


class EpcisMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.captures = Counter(
            "hq_capture_documents", "POST /capture documents, by result (accepted; partial: "
            "stored without its bad events, GS1-Capture-Error-Behaviour proceed; invalid: "
            "refused by the schema or too large).", ["result"], namespace="rfidd",
            registry=registry)
        self.queries = Counter(
            "hq_epcis_queries", "EPCIS queries answered, by result (ok, bad_request).",
            ["result"], namespace="rfidd", registry=registry)
        for r in ("accepted", "partial", "invalid"):
            self.captures.labels(r)
        for r in ("ok", "bad_request"):
            self.queries.labels(r)


def build_app(
    store: HqStore,
    registry: CollectorRegistry,
    *,
    capture_limit: int = 10_000,
    capture_size_limit: int = 8 * 1024 * 1024,
    topic_prefix: str = "rfidd/v1",
    publish: Callable[[str, bytes], bool] | None = None,
    hub: SubscriptionHub | None = None,
    allow_http_webhooks: bool = False,
    consumer: HqConsumer | None = None,
) -> FastAPI:
    """The FastAPI application of the EPCIS interface (served by EpcisServer). Without a
    `hub` (tests of the queries alone) one is made here and started with the app's server."""
    engine: Engine = store.engine
    metrics = EpcisMetrics(registry)
    if hub is None:
        hub = SubscriptionHub(engine, registry)
        own_hub = hub
    else:
        own_hub = None
    app = FastAPI(title="rfidd HQ EPCIS 2.0", version=EPCIS_VERSION, docs_url=None,
                  redoc_url=None, openapi_url=None)

    def problem(p: Problem, instance: str) -> JSONResponse:
        body = {"type": f"epcisException:{p.kind}", "title": p.kind, "status": p.status,
                "detail": p.detail, "instance": instance}
        return JSONResponse(body, status_code=p.status, headers=p.headers,
                            media_type="application/problem+json")

    @app.exception_handler(Problem)
    def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem(exc, request.url.path)

    @app.exception_handler(StarletteHTTPException)
    def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = {404: "NoSuchResourceException", 405: "ImplementationException"}.get(
            exc.status_code, "ImplementationException")
        return problem(Problem(exc.status_code, kind, str(exc.detail)), request.url.path)

    @app.middleware("http")
    async def _versions(request: Request, call_next: Callable[[Request], Any]) -> Response:
        response: Response = await call_next(request)
        response.headers["GS1-EPCIS-Version"] = EPCIS_VERSION
        response.headers["GS1-CBV-Version"] = CBV_VERSION
        response.headers["GS1-Vendor-Version"] = "rfidd"
        return response

    def who(request: Request, scope: str) -> tokens.Integrator:
        auth = request.headers.get("authorization", "")
        kind, _, token = auth.partition(" ")
        # The HQ page's sign-in cookie (read only; a WebSocket has no method: never).
        if not auth and getattr(request, "method", "") == "GET":
            from rfidd.hq.chain_web import COOKIE

            kind, token = "bearer", request.cookies.get(COOKIE, "")
        if kind.lower() != "bearer" or not token.strip():
            raise Problem(401, "SecurityException", "an integrator token is required: "
                          "Authorization: Bearer TOKEN (rfidd hq token add)",
                          {"WWW-Authenticate": 'Bearer realm="rfidd-hq"'})
        found = tokens.check(engine, token.strip())
        if found is None:
            raise Problem(401, "SecurityException", "unknown or revoked token",
                          {"WWW-Authenticate": 'Bearer realm="rfidd-hq", error="invalid_token"'})
        if found.scope != scope:
            raise Problem(403, "SecurityException",
                          f"token {found.name!r} has scope {found.scope}, this needs {scope}")
        return found

    def params(request: Request) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for k, v in request.query_params.multi_items():
            out.setdefault(k, []).append(v)
        return out

    def page(request: Request, q: eq.EventQuery, name: str) -> JSONResponse:
        try:
            events, token = eq.run(engine, q)
        except eq.QueryParameterError as exc:
            metrics.queries.labels("bad_request").inc()
            raise Problem(400, "QueryParameterException", str(exc)) from None
        headers = {}
        if token is not None:
            keep = [(k, v) for k, v in request.query_params.multi_items()
                    if k != "nextPageToken"]
            url = f"{request.url.replace(query='')}?{urlencode([*keep, ('nextPageToken', token)])}"
            headers["Link"] = f'<{url}>; rel="next"'
        metrics.queries.labels("ok").inc()
        return JSONResponse(query_document(events, name), headers=headers)

    def parse(raw: dict[str, list[str]], paging: bool = True) -> eq.EventQuery:
        try:
            return eq.parse_query(raw, paging=paging)
        except eq.QueryParameterError as exc:
            metrics.queries.labels("bad_request").inc()
            raise Problem(400, "QueryParameterException", str(exc)) from None

    @app.get("/events")
    def get_events(request: Request) -> JSONResponse:
        who(request, "read")
        return page(request, parse(params(request)), "SimpleEventQuery")

    @app.get("/events/{event_id:path}")
    def get_event(event_id: str, request: Request) -> JSONResponse:
        who(request, "read")
        with engine.connect() as conn:
            raw = conn.execute(select(hq_events.c.raw)
                               .where(hq_events.c.event_id == event_id)).scalar()
        if raw is None:
            raise Problem(404, "NoSuchResourceException", f"no event {event_id!r}")
        return JSONResponse(query_document([dict(raw)]))

    # -------------------------------------------------------------- named queries

    @app.get("/queries")
    def list_queries(request: Request) -> JSONResponse:
        who(request, "read")
        with engine.connect() as conn:
            rows = conn.execute(select(hq_queries.c.name, hq_queries.c.query)
                                .order_by(hq_queries.c.name)).all()
        return JSONResponse([{"name": r.name, "query": r.query} for r in rows])

    @app.post("/queries")
    async def create_query(request: Request) -> Response:
        owner = who(request, "read")
        try:
            body = json.loads(await request.body())
        except ValueError as exc:
            raise Problem(400, "ValidationException", f"/: not JSON: {exc}") from None
        if not isinstance(body, dict) or set(body) - {"name", "query"}:
            raise Problem(400, "ValidationException", "/: expected {\"name\": ..., "
                          "\"query\": {...}}")
        name = body.get("name")
        if not isinstance(name, str) or not 1 <= len(name) <= 128 or "/" in name:
            raise Problem(400, "ValidationException", "/name: 1-128 characters, no /")
        definition = body.get("query")
        if not isinstance(definition, dict):
            raise Problem(400, "ValidationException", "/query: expected an object of query "
                          "parameters")
        raw = {k: v if isinstance(v, list) else [v] for k, v in definition.items()}
        if not all(isinstance(x, str) for v in raw.values() for x in v):
            raise Problem(400, "ValidationException", "/query: values are strings or lists "
                          "of strings")
        q = parse(raw, paging=False)
        with engine.begin() as conn:
            if conn.execute(select(hq_queries.c.name).where(hq_queries.c.name == name)).first():
                raise Problem(409, "ResourceAlreadyExistsException",
                              f"a query named {name!r} exists")
            conn.execute(hq_queries.insert().values(
                name=name, query=q.to_definition(), owner=owner.name,
                created_at=datetime.now(UTC)))
        return Response(status_code=201, headers={"Location": f"/queries/{quote(name)}"})

    def stored_query(name: str) -> dict[str, Any]:
        with engine.connect() as conn:
            d = conn.execute(select(hq_queries.c.query)
                             .where(hq_queries.c.name == name)).scalar()
        if d is None:
            raise Problem(404, "NoSuchNameException", f"no query named {name!r}")
        return dict(d)

    @app.get("/queries/{name}")
    def get_query(name: str, request: Request) -> JSONResponse:
        who(request, "read")
        return JSONResponse({"name": name, "query": stored_query(name)})

    @app.delete("/queries/{name}")
    def delete_query(name: str, request: Request) -> Response:
        who(request, "read")
        stored_query(name)
        with engine.begin() as conn:
            conn.execute(delete(hq_subscriptions).where(hq_subscriptions.c.query_name == name))
            conn.execute(delete(hq_queries).where(hq_queries.c.name == name))
        hub.changed()
        return Response(status_code=204)

    @app.get("/queries/{name}/events")
    def run_query(name: str, request: Request) -> JSONResponse:
        who(request, "read")
        extra = params(request)
        other = set(extra) - set(eq.PAGING)
        if other:
            first = sorted(other)[0]
            raise Problem(400, "QueryParameterException", f"query parameter {first!r}: a "
                          "named query takes only perPage and nextPageToken")
        definition = stored_query(name)
        raw = {k: v if isinstance(v, list) else [v] for k, v in definition.items()}
        raw.update(extra)
        return page(request, parse(raw), name)

    capture_api.register(app, store, who, hub, metrics, problem=Problem,
                         errors_of=schema_errors, capture_limit=capture_limit,
                         capture_size_limit=capture_size_limit)

    from rfidd.hq import chain_web

    chain_web.register(app, engine, who, topic_prefix=topic_prefix, publish=publish)
    subscriptions_web.register(app, engine, who, hub, problem=Problem,
                               stored_query=stored_query, allow_http=allow_http_webhooks)
    api_v1.register(app, engine, who, registry, consumer)
    app.state.hub = hub
    app.state.own_hub = own_hub
    return app


class EpcisServer:
    """uvicorn serving the EPCIS app on its own thread (one event loop, handlers in its pool)."""

    def __init__(self, app: FastAPI, listen: str = "127.0.0.1", port: int = 0, *,
                 ssl_certfile: str | None = None, ssl_keyfile: str | None = None) -> None:
        self.listen = listen
        # The app's own subscription hub (when none was given to build_app) runs with it.
        self._own_hub: SubscriptionHub | None = getattr(app.state, "own_hub", None)
        # log_config=None: uvicorn's own dictConfig would give its loggers a coloured stderr
        # handler that bypasses rfidd's structured log (and stop them propagating to it).
        self.config = uvicorn.Config(app, host=listen, port=port, log_level="warning",
                                     log_config=None, lifespan="off", access_log=False,
                                     ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile)
        # Run off the main thread, uvicorn leaves the signals to the caller (rfidd's handlers).
        self.server = uvicorn.Server(self.config)
        self._thread: threading.Thread | None = None
        self.port = port

    def start(self, timeout: float = 10.0) -> None:
        if self._own_hub is not None:
            self._own_hub.start()
        self._thread = threading.Thread(target=self.server.run, name="hq-epcis", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while (not self.server.started and self._thread.is_alive()
               and time.monotonic() < deadline):
            time.sleep(0.01)
        if not self.server.started:
            raise OSError(f"EPCIS interface could not listen on {self.listen}:{self.port}")
        sockets = [s for srv in self.server.servers for s in srv.sockets]
        if sockets:
            self.port = int(sockets[0].getsockname()[1])

    def stop(self) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
        if self._own_hub is not None:
            self._own_hub.stop()
