"""HTTP routes of store operations under /api/v1/ops (what the `rfidd ops` CLI and the staff
page call): a FastAPI router with pydantic request bodies; every handler is one call of the
service.

Files travel as text in JSON ({"format": "csv", "text": "...", "source": "name.csv"}); CSV and
other text downloads come back as {"content_type": "text/csv", "text": "..."}.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from inventory.isotime import IsoTimeError, parse_iso_datetime
from inventory.reports import replenishment_csv
from rfidd.config_http import Role
from rfidd.ops import answers as A
from rfidd.ops.catalog import CatalogService
from rfidd.ops.common import OpsError, mark_takeovers
from rfidd.ops.counting import CountingService
from rfidd.ops.exits import ExitService
from rfidd.ops.reception import ReceptionService
from rfidd.ops.replenishment import ReplenishmentService
from rfidd.ops.schedules import Schedules
from rfidd.web.answers import ERRORS, AnswerRoute, ErrorAnswer
from rfidd.web.deps import require
from rfidd.web.errors import ApiError

P = "/api/v1/ops"


def parse_time(value: Any, field: str) -> float:
    """Epoch seconds or ISO 8601 with an offset (inventory.isotime); the error names the
    field."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    try:
        return parse_iso_datetime(value, field).timestamp()
    except IsoTimeError as exc:
        raise ApiError(400, f"{exc} (or epoch seconds)") from None


class TextFile(BaseModel):
    text: str = Field(description="The file's content.")
    format: Literal["csv", "json"] = Field("csv", description="csv or json.")
    source: str = Field("<api>", max_length=256, description="File name, for error messages.")


class CatalogImport(BaseModel):
    text: str | None = Field(None, description="A catalog file's content (with format).")
    format: Literal["csv", "json"] = Field("csv", description="csv or json.")
    source: str = Field("<api>", max_length=256, description="File name, for error messages.")
    products: list[dict[str, Any]] | None = Field(None, description="Product records as JSON.")


class AsnImport(TextFile):
    open_reception: bool | None = Field(
        None, description="Open (or join) a reception for the imported ASNs.")


class ReceptionOpen(BaseModel):
    asn_ids: list[str] = Field(description="ASN ids to receive against.")


class ReceptionClose(BaseModel):
    note: str = Field("", max_length=2000, description="Staff note kept in the audit log.")


class CountStart(BaseModel):
    zones: list[str] = Field(description="Zones to count.")
    duration_s: float | None = Field(None, gt=0, description="Stop by itself after this long.")
    adopt: bool = Field(False, description="Take over items found that rfidd never received.")


class CountPass(BaseModel):
    zone: str = Field(description="The zone the pass covered.")
    epcs: list[str] = Field(max_length=100_000, description="EPCs read (hex or SGTIN URI).")
    device: str | None = Field(None, max_length=128, description="The handheld's name.")
    operator: str | None = Field(None, max_length=128, description="Who walked the pass.")


class CountRecount(BaseModel):
    duration_s: float | None = Field(None, gt=0, description="Length of the recount.")


class ScheduleAdd(BaseModel):
    cron: str = Field(description="Crontab expression, e.g. '0 7 * * 1'.")
    zones: list[str] = Field(description="Zones to count.")
    duration_s: float | None = Field(None, gt=0, description="Length of each count.")
    misfire_grace_s: float | None = Field(
        None, ge=0, description="A run missed (daemon down) still starts this late, once.")


class ShrinkagePublish(BaseModel):
    since: float | str | None = Field(None, description="Start (epoch s or ISO 8601).")
    until: float | str | None = Field(None, description="End (epoch s or ISO 8601).")
    currency: str | None = Field(None, pattern=r"^[A-Z]{3}$", description="ISO 4217 code.")


def _period(since: Any, until: Any) -> tuple[float, float]:
    end = parse_time(until, "until") if until is not None else time.time()
    start = parse_time(since, "since") if since is not None else end - 30 * 86400.0
    return start, end


# What a service's OpsError may answer, besides the errors of every route.
_OPS_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorAnswer, "description": what} for code, what in (
        (400, "A bad value; the message names the field."),
        (404, "No such session, ASN or schedule."),
        (409, "Not now: e.g. a count already runs over these zones, a reception is open."),
    )}


def _csv(text: str) -> dict[str, str]:
    return {"content_type": "text/csv", "text": text}


def router(*, catalog: CatalogService, reception: ReceptionService, counting: CountingService,
           schedules: Schedules, exits: ExitService,
           replenishment: ReplenishmentService) -> APIRouter:
    """The routes, each a call of the service that owns it."""
    r = APIRouter(prefix=P, tags=["ops"], dependencies=[Depends(require(Role.STAFF))],
                  route_class=_OpsRoute, responses={**ERRORS, **_OPS_ERRORS})

    @r.post("/catalog", response_model=A.CatalogImported)
    def catalog_import(body: CatalogImport) -> JSONResponse:
        if body.products is not None:
            from inventory.catalog import parse_catalog_records

            res = catalog.import_catalog(parse_catalog_records(body.products, "<api>"))
        elif body.text is not None:
            res = catalog.import_catalog_text(body.text, body.format, body.source)
        else:
            raise ApiError(422, "text: the file content (or products) is required")
        return JSONResponse(res, 422 if res["errors"] and not res["imported"] else 200)

    @r.get("/catalog/classification", response_model=A.Classification)
    def classification() -> Any:
        return catalog.classification()

    @r.post("/asns", response_model=A.AsnImported)
    def asn_import(body: AsnImport) -> JSONResponse:
        res = reception.import_asn_text(body.text, body.format, body.source,
                                        open_reception=body.open_reception)
        return JSONResponse(res, 422 if res["errors"] or res["conflicts"] else 200)

    @r.get("/asns/{asn_id}", response_model=A.AsnSummary)
    def asn_get(asn_id: str) -> Any:
        return reception.asn(asn_id)

    @r.post("/receptions", status_code=201, response_model=A.ReceptionStatus)
    def reception_open(body: ReceptionOpen, request: Request) -> Any:
        return reception.open_reception(body.asn_ids, opened_by=_who(request))

    @r.get("/receptions", response_model=list[A.ReceptionStatus])
    def receptions() -> Any:
        return reception.receptions()

    @r.get("/receptions/{sid}", response_model=A.ReceptionAnswer)
    def reception_get(sid: str, format: str | None = None) -> Any:
        return _csv(reception.reception_csv(sid)) if format == "csv" else reception.reception(sid)

    @r.post("/receptions/{sid}/close", response_model=A.ReceptionReport)
    def reception_close(sid: str, body: ReceptionClose | None = None) -> Any:
        return reception.close_reception(sid)

    @r.post("/counts", status_code=201, response_model=A.CountStatus)
    def count_start(body: CountStart) -> Any:
        # a take-over is one whoever starts it (the demo, the CLI, the page): one trigger
        return counting.start_count(body.zones, "takeover" if body.adopt else "staff",
                                    duration_s=body.duration_s, adopt=body.adopt)

    @r.get("/counts", response_model=list[A.CountStatus])
    def counts() -> Any:
        return mark_takeovers(counting.counts(), counting.count)

    @r.get("/counts/{cid}", response_model=A.CountAnswer)
    def count(cid: str, format: str | None = None) -> Any:
        return _csv(counting.count_csv(cid)) if format == "csv" else counting.count(cid)

    @r.post("/counts/{cid}/stop", response_model=A.CountReport)
    def count_stop(cid: str) -> Any:
        return counting.stop_count(cid)

    @r.post("/counts/{cid}/passes", response_model=A.CountStatus)
    def count_pass(cid: str, body: CountPass) -> Any:
        return counting.add_pass(cid, body.zone, body.epcs, body.device, body.operator)

    @r.post("/counts/{cid}/recount", status_code=201, response_model=A.CountStatus)
    def count_recount(cid: str, body: CountRecount | None = None) -> Any:
        return counting.recount(cid, body.duration_s if body else None)

    @r.post("/count-schedules", status_code=201, response_model=A.Schedule)
    def schedule_add(body: ScheduleAdd) -> Any:
        return schedules.add_schedule(body.cron, body.zones, body.duration_s,
                                      body.misfire_grace_s)

    @r.get("/count-schedules", response_model=list[A.Schedule])
    def schedule_list() -> Any:
        return schedules.schedules()

    @r.post("/count-schedules/{sid}/delete", response_model=A.Deleted)
    def schedule_delete(sid: str) -> Any:
        if not sid.isdigit():
            raise ApiError(400, f"schedule id {sid!r} is not a number")
        schedules.delete_schedule(int(sid))
        return {"deleted": int(sid)}

    @r.get("/schedules", response_model=list[A.Job])
    def jobs() -> Any:
        """Every scheduled job with its next run, housekeeping included."""
        return schedules.jobs()

    @r.get("/shrinkage", response_model=A.ShrinkageAnswer)
    def shrinkage(since: str | None = None, until: str | None = None,
                  currency: str | None = None, format: str | None = None) -> Any:
        start, end = _period(since, until)
        if format == "csv":
            return _csv(exits.shrinkage_csv(start, end, currency))
        return exits.shrinkage(start, end, currency).to_dict()

    @r.post("/shrinkage", response_model=A.Shrinkage)
    def shrinkage_publish(body: ShrinkagePublish) -> Any:
        start, end = _period(body.since, body.until)
        return exits.shrinkage(start, end, body.currency, publish=True).to_dict()

    @r.get("/shrinkage/suspected", response_model=A.Suspected)
    def suspected() -> Any:
        return exits.suspected()

    @r.get("/replenishment", response_model=A.ReplenishmentAnswer)
    def replenishment_get(floor_min: str = "1", format: str | None = None) -> Any:
        if not floor_min.isdigit():
            raise ApiError(400, f"floor_min: {floor_min!r} is not a whole number")
        lines, unbooked = replenishment.replenishment_and_unbooked(int(floor_min))
        if format == "csv":
            return _csv(replenishment_csv(lines))
        return {"lines": [ln.to_dict() for ln in lines], "not_on_books": unbooked}

    return r


def _who(request: Request) -> str:
    p = getattr(request.state, "principal", None)
    return p.name if p is not None else "staff"


class _OpsRoute(AnswerRoute):
    """An OpsError is the answer it names (status and message)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def run(request: Request) -> Response:
            try:
                return await handler(request)
            except OpsError as exc:
                return JSONResponse({"error": str(exc)}, exc.status)

        return run


def register_routes(api: Any, **services: Any) -> None:
    """Add the store-operations routes to the daemon's web server (rfidd.web.WebServer);
    `services`: catalog, reception, counting, schedules, exits, replenishment."""
    api.include_router(router(**services))
