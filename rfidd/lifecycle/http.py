"""HTTP routes of the lifecycle service on the daemon's API (POS, staff page, the CLI).

The command bodies are validated by the service's own pydantic models (rfidd.lifecycle.commands),
which name the field in a 400; the routes only pick the role and call the service.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from rfidd.config_http import Role
from rfidd.lifecycle import answers as A
from rfidd.lifecycle.alerts import AlertNotFound, AlertRejected
from rfidd.lifecycle.commands import normalize_epc
from rfidd.lifecycle.service import STEP_COMMANDS, LifecycleService
from rfidd.lifecycle.trace import trace
from rfidd.web.answers import ERRORS, AnswerRoute, ErrorAnswer
from rfidd.web.deps import require
from rfidd.web.errors import ApiError

PREFIX = "/api/v1/lifecycle"
# The till's duties; everything else is stockroom work.
POS_COMMANDS = frozenset({"sale", "return"})
_POS = require(Role.POS, Role.MANAGER)
_STAFF = require(Role.STAFF)
_READ = require(Role.STAFF, Role.POS)


def _errs(*codes: int) -> dict[int | str, dict[str, Any]]:
    what = {400: "A malformed command or value; the message names the field.",
            404: "No such item, session, alert or command.",
            409: "Refused: the answer lists each item's result (commands), or says why the "
                 "step does not apply (alerts)."}
    return {c: {"model": ErrorAnswer, "description": what[c]} for c in codes}


def _source(request: Request) -> str:
    p = getattr(request.state, "principal", None)
    return f"api:{p.name}" if p is not None else "api"


def router(service: LifecycleService) -> APIRouter:
    """POST {PREFIX}/{command} with the command's JSON (sale, return, ship, transfer_out,
    transfer_in, receive, loan_out, loan_back, repair_in, repair_out, restock, hold, release,
    collect, shipment): 200 when
    every item was applied or was a duplicate, 409 when any was rejected (body lists each
    item's result), 400 for a malformed command."""
    r = APIRouter(prefix=PREFIX, tags=["lifecycle"], route_class=AnswerRoute, responses=ERRORS)

    @r.get("/commissioning/sessions", dependencies=[Depends(_STAFF)],
           response_model=A.CommissioningSessions)
    def list_sessions(request: Request) -> Any:
        every = "all" in request.query_params
        return {"sessions": service.commissioning.sessions(include_closed=every)}

    @r.post("/commissioning/sessions", status_code=201, dependencies=[Depends(_STAFF)],
            response_model=A.CommissioningSession, responses=_errs(400))
    def open_session(body: dict[str, Any] = Body(...)) -> Any:
        try:
            return service.commissioning.open_session(body)
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None

    @r.get("/commissioning/sessions/{sid}", dependencies=[Depends(_STAFF)],
           response_model=A.CommissioningSession, responses=_errs(404))
    def get_session(sid: str) -> Any:
        try:
            return service.commissioning.session_json(sid)
        except KeyError:
            raise ApiError(404, f"no commissioning session {sid!r}") from None

    @r.post("/commissioning/sessions/{sid}/close", dependencies=[Depends(_STAFF)],
            response_model=A.CommissioningSession, responses=_errs(404))
    def close_session(sid: str) -> Any:
        try:
            return service.commissioning.close_session(sid)
        except KeyError:
            raise ApiError(404, f"no commissioning session {sid!r}") from None

    @r.post("/commissioning/binds", status_code=201, dependencies=[Depends(_STAFF)],
            response_model=A.Bind, responses=_errs(400))
    def bind(body: dict[str, Any] = Body(...)) -> Any:
        try:
            return service.commissioning.bind(body)
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None

    @r.get("/items/{epc}", dependencies=[Depends(_READ)], response_model=A.ItemHistory,
           responses=_errs(400, 404))
    def item(epc: str) -> Any:
        try:
            norm = normalize_epc(epc)
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        state = service.item_state(norm)
        history = [h.to_json() for h in trace(service.ctx.db, norm)]
        if state is None and not history:
            raise ApiError(404, f"item {epc} has no history on this site")
        return {"state": state, "history": history}

    @r.post("/loans/check-overdue", dependencies=[Depends(_STAFF)],
            response_model=A.OverdueAnswer)
    def overdue() -> Any:
        return {"new_alerts": service.check_overdue()}

    async def role_for_command(request: Request) -> None:
        name = request.path_params.get("command", "")
        await (_POS if name in POS_COMMANDS else _STAFF)(request)

    @r.post("/{command}", dependencies=[Depends(role_for_command)],
            response_model=A.CommandResult,
            responses={**_errs(400, 404), 409: {"model": A.CommandResult, "description":
                       "Some item was rejected: each item's result, with its reason."}})
    def command(command: str, request: Request,
                body: Any = Body(None)) -> JSONResponse:
        if command not in STEP_COMMANDS and command != "shipment":
            raise ApiError(404, f"unknown lifecycle command {command!r} (known: "
                           f"{', '.join(sorted([*STEP_COMMANDS, 'shipment']))})")
        try:
            result = service.handle(command, body, source=_source(request))
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        return JSONResponse(result.to_json(), 409 if result.rejected else 200)

    return r


class AlertAck(BaseModel):
    model_config = ConfigDict(extra="forbid")
    who: str | None = Field(None, max_length=64, description="Default: the signed-in caller.")
    note: str | None = Field(None, max_length=2000, description="Free text.")


class AlertResolve(AlertAck):
    resolution: str = Field(description="How it was resolved (the alert's own vocabulary).")


def alert_router(service: LifecycleService) -> APIRouter:
    """GET /api/v1/alerts[?state=&type=], GET /api/v1/alerts/{id}, POST .../{id}/acknowledge
    {who, note} (staff) and .../{id}/resolve {resolution, who, note} (manager): 404 unknown
    alert, 409 a step that does not apply (the body names the alert's state), 422 a bad body."""
    alerts = service.alerts
    r = APIRouter(prefix="/api/v1/alerts", tags=["alerts"], route_class=AnswerRoute,
                  responses={**ERRORS, **_errs(404, 409)})

    def step(fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except AlertNotFound as exc:
            raise ApiError(404, f"no alert {exc.args[0]!r}") from None
        except AlertRejected as exc:
            raise ApiError(409, str(exc)) from None

    def who(request: Request, given: str | None) -> str:
        p = getattr(request.state, "principal", None)
        return given or (p.name if p is not None else "")

    @r.get("", dependencies=[Depends(_STAFF)], response_model=A.AlertList,
           responses=_errs(400))
    def list_(state: str | None = None, type: str | None = None) -> Any:
        try:
            return {"alerts": alerts.list(state, type)}
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None

    @r.get("/{aid}", dependencies=[Depends(_STAFF)], response_model=A.AlertAnswer)
    def get(aid: str) -> Any:
        return step(alerts.get, aid)

    @r.post("/{aid}/acknowledge", dependencies=[Depends(_STAFF)],
            response_model=A.AlertAnswer)
    def ack(aid: str, request: Request, body: AlertAck | None = None) -> Any:
        b = body or AlertAck()
        return step(alerts.acknowledge, aid, who(request, b.who), b.note)

    @r.post("/{aid}/resolve", dependencies=[Depends(require(Role.MANAGER))],
            response_model=A.AlertAnswer)
    def resolve(aid: str, body: AlertResolve, request: Request) -> Any:
        return step(alerts.resolve, aid, body.resolution, who(request, body.who), body.note)

    return r


def register_routes(api: Any, service: LifecycleService) -> None:
    """Add the lifecycle and alert routes to the daemon's web server (rfidd.web.WebServer)."""
    api.include_router(alert_router(service))
    api.include_router(router(service))
