"""HQ's own JSON API (/api/v1) and /metrics, on the EPCIS interface's FastAPI app and port.

Why here: HQ has one web stack and one port (the former standard-library router on port 9760
is gone); the same integrator tokens guard it (read scope), and each answer has a pydantic
model, so the OpenAPI of the app describes it. Errors keep this API's {"error": "..."} shape
(a missing token is the EPCIS interface's 401 problem).
  GET /api/v1/items/{epc}           where an item was last seen (EPC URI or hex)
  GET /api/v1/items/{epc}/history   its events across sites (?limit=1-10000)
  GET /api/v1/sites                 each site: status, registration, sequence and gaps
                                    (registered first; ?registered=true: only those)
  DELETE /api/v1/sites/{site}       forget a site (an admin token; ?registered_too=true for
                                    a registered one); its stored events stay
  GET /api/v1/status                the consumer's counters
  GET /metrics                      Prometheus text (a read token: Authorization: Bearer)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from pydantic import BaseModel, Field
from sqlalchemy import Engine

from rfidd.hq import query, tokens
from rfidd.hq.consumer import HqConsumer

MAX_HISTORY = 10_000
Who = Callable[[Request, str], tokens.Integrator]


class ItemEventOut(BaseModel):
    event_id: str = Field(description="The EPCIS eventID.")
    event_time: str = Field(description="When it happened (ISO 8601, with offset).")
    site: str = Field(description="The site that published it.")
    type: str = Field(description="EPCIS event type (ObjectEvent, ...).")
    action: str | None = Field(None, description="ADD, OBSERVE or DELETE.")
    biz_step: str | None = Field(None, description="CBV business step.")
    disposition: str | None = Field(None, description="CBV disposition.")
    read_point: str | None = Field(None, description="Where it was read (SGLN URI).")
    biz_location: str | None = Field(None, description="Where it is (SGLN URI).")
    biz_transactions: list[dict[str, Any]] | None = Field(
        None, description="Business transactions (type, bizTransaction).")


class ItemOut(ItemEventOut):
    epc: str = Field(description="The item's EPC URI.")


class HistoryOut(BaseModel):
    epc: str = Field(description="The item's EPC URI.")
    events: list[ItemEventOut] = Field(description="Its events, oldest first.")


class SiteOut(BaseModel):
    site: str = Field(description="Site id.")
    name: str | None = Field(None, description="Its name (rfidd hq site add --name).")
    registered: bool = Field(description="Registered with rfidd hq site add.")
    registered_at: str | None = Field(None, description="When it was registered.")
    status: str | None = Field(None, description="Its last retained status (online...).")
    status_at: str | None = Field(None, description="When that status was published.")
    last_seen: str | None = Field(None, description="Its last live message.")
    rejected: int = Field(0, description="Messages dropped while it was not registered.")
    published_through: int | None = Field(None, description="Its announced last sequence.")
    contiguous_seq: int | None = Field(None, description="Every event 1..N is held.")
    missing: int | None = Field(None, description="Events missing up to its head.")
    gaps: list[list[int]] | None = Field(None, description="Missing ranges [first, last].")
    gap_since: str | None = Field(None, description="Since when a gap is open.")


class SitesOut(BaseModel):
    sites: list[SiteOut] = Field(description="Every site HQ has heard of, registered first.")


class ForgottenOut(BaseModel):
    site: str = Field(description="The site forgotten.")
    was_registered: bool = Field(description="It was registered (and is no longer).")


class StatusOut(BaseModel):
    mqtt_connected: bool = Field(description="The consumer's broker connection is up.")
    messages: int = Field(description="MQTT messages processed.")
    messages_malformed: int = Field(description="Messages that were not valid (skipped).")
    events_stored: int = Field(description="EPCIS events stored (first copies).")
    events_duplicate: int = Field(description="Events received again (same eventID).")
    events_malformed: int = Field(description="Events skipped as malformed.")
    db_errors: int = Field(description="Failed commits (retried).")


class _ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _epc(raw: str) -> str:
    try:
        return query.normalize_epc(unquote(raw))
    except query.EpcInputError as exc:
        raise _ApiError(400, str(exc)) from None


def _flag(name: str, value: str) -> bool:
    if value not in ("true", "false"):
        raise _ApiError(400, f"{name} must be true or false, got {value[:20]!r}")
    return value == "true"


def register(app: FastAPI, engine: Engine, who: Who, registry: CollectorRegistry,
             consumer: HqConsumer | None) -> None:
    """Add /api/v1 and /metrics to the HQ app."""

    @app.exception_handler(_ApiError)
    def _error(_request: Request, exc: _ApiError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=exc.status)

    @app.get("/api/v1/items/{epc}", response_model=ItemOut)
    def item(epc: str, request: Request) -> ItemOut:
        who(request, "read")
        uri = _epc(epc)
        last = query.where(engine, uri)
        if last is None:
            raise _ApiError(404, f"no event names {uri}")
        return ItemOut(epc=uri, **last.to_json())

    @app.get("/api/v1/items/{epc}/history", response_model=HistoryOut)
    def history(epc: str, request: Request, limit: str = str(MAX_HISTORY)) -> HistoryOut:
        who(request, "read")
        uri = _epc(epc)
        if not limit.isdigit() or not 1 <= int(limit) <= MAX_HISTORY:
            raise _ApiError(400, f"limit must be 1-{MAX_HISTORY}, got {limit!r}")
        events = query.history(engine, uri, limit=int(limit))
        if not events:
            raise _ApiError(404, f"no event names {uri}")
        return HistoryOut(epc=uri, events=[ItemEventOut(**e.to_json()) for e in events])

    @app.get("/api/v1/sites", response_model=SitesOut)
    def sites(request: Request, registered: str = "false") -> SitesOut:
        who(request, "read")
        only = _flag("registered", registered)
        return SitesOut(sites=[SiteOut(**s.to_json())
                               for s in query.sites(engine, registered_only=only)])

    @app.delete("/api/v1/sites/{site}", response_model=ForgottenOut)
    def forget(site: str, request: Request, registered_too: str = "false") -> ForgottenOut:
        who(request, "admin")
        from rfidd.hq.registry import ForgetError, forget_site

        too = _flag("registered_too", registered_too)
        try:
            was = forget_site(engine, site, registered_too=too)
        except ForgetError as exc:
            raise _ApiError(404 if exc.unknown else 409, str(exc)) from None
        return ForgottenOut(site=site, was_registered=was)

    @app.get("/api/v1/status", response_model=StatusOut)
    def status(request: Request) -> StatusOut:
        who(request, "read")
        if consumer is None:
            raise _ApiError(404, "no consumer runs in this process")
        s = consumer.snapshot()
        return StatusOut(mqtt_connected=consumer.connected, messages=s.messages,
                         messages_malformed=s.messages_malformed,
                         events_stored=s.events_stored, events_duplicate=s.events_duplicate,
                         events_malformed=s.events_malformed, db_errors=s.db_errors)

    @app.get("/metrics", include_in_schema=False)
    def metrics(request: Request) -> Response:
        who(request, "read")
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
