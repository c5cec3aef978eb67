"""HTTP routes of the lifecycle service on the daemon's local API (staff tools, the CLI)."""

from __future__ import annotations

from typing import Any

from rfidd.api import Api, ApiError
from rfidd.lifecycle.alerts import AlertNotFound, AlertRejected
from rfidd.lifecycle.commands import normalize_epc
from rfidd.lifecycle.service import STEP_COMMANDS, LifecycleService
from rfidd.lifecycle.trace import trace

PREFIX = "/api/v1/lifecycle"


def register_routes(api: Api, service: LifecycleService) -> None:
    """POST {PREFIX}/{command} with the command's JSON (sale, return, ship, transfer_out,
    transfer_in, receive, loan_out, loan_back, repair_in, repair_out, restock, hold, release,
    collect, shipment): 200 when
    every item was applied or was a duplicate, 409 when any was rejected (body lists each
    item's result), 400 for a malformed command."""

    def command(p: dict[str, str], _q: Any, body: Any) -> tuple[int, Any]:
        name = p["command"]
        if name not in STEP_COMMANDS and name != "shipment":
            raise ApiError(404, f"unknown lifecycle command {name!r} (known: "
                           f"{', '.join(sorted([*STEP_COMMANDS, 'shipment']))})")
        try:
            result = service.handle(name, body, source="api")
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        return (409 if result.rejected else 200), result.to_json()

    def open_session(_p: dict[str, str], _q: Any, body: Any) -> tuple[int, Any]:
        try:
            return 201, service.commissioning.open_session(body)
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None

    def list_sessions(_p: dict[str, str], q: dict[str, list[str]], _b: Any) -> tuple[int, Any]:
        return 200, {"sessions": service.commissioning.sessions(include_closed="all" in q)}

    def get_session(p: dict[str, str], _q: Any, _b: Any) -> tuple[int, Any]:
        try:
            return 200, service.commissioning.session_json(p["sid"])
        except KeyError:
            raise ApiError(404, f"no commissioning session {p['sid']!r}") from None

    def close_session(p: dict[str, str], _q: Any, _b: Any) -> tuple[int, Any]:
        try:
            return 200, service.commissioning.close_session(p["sid"])
        except KeyError:
            raise ApiError(404, f"no commissioning session {p['sid']!r}") from None

    def bind(_p: dict[str, str], _q: Any, body: Any) -> tuple[int, Any]:
        try:
            return 201, service.commissioning.bind(body)
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None

    def item(p: dict[str, str], _q: Any, _b: Any) -> tuple[int, Any]:
        try:
            epc = normalize_epc(p["epc"])
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        state = service.item_state(epc)
        history = [h.to_json() for h in trace(service.ctx.db, epc)]
        if state is None and not history:
            raise ApiError(404, f"item {p['epc']} has no history on this site")
        return 200, {"state": state, "history": history}

    def overdue(_p: dict[str, str], _q: Any, _b: Any) -> tuple[int, Any]:
        return 200, {"new_alerts": service.check_overdue()}

    register_alert_routes(api, service)
    api.route("GET", f"{PREFIX}/commissioning/sessions", list_sessions)
    api.route("POST", f"{PREFIX}/commissioning/sessions", open_session)
    api.route("GET", f"{PREFIX}/commissioning/sessions/{{sid}}", get_session)
    api.route("POST", f"{PREFIX}/commissioning/sessions/{{sid}}/close", close_session)
    api.route("POST", f"{PREFIX}/commissioning/binds", bind)
    api.route("GET", f"{PREFIX}/items/{{epc}}", item)
    api.route("POST", f"{PREFIX}/loans/check-overdue", overdue)
    api.route("POST", f"{PREFIX}/{{command}}", command)


def register_alert_routes(api: Api, service: LifecycleService) -> None:
    """GET /api/v1/alerts[?state=&type=], GET /api/v1/alerts/{id}, POST .../{id}/acknowledge
    {who, note} and .../{id}/resolve {resolution, who, note}: 404 unknown alert, 409 a step
    that does not apply (the body names the alert's state), 400 a malformed body."""
    alerts = service.alerts

    def body_of(b: Any, *names: str) -> dict[str, Any]:
        if not isinstance(b, dict):
            raise ApiError(400, "request body must be a JSON object")
        extra = sorted(set(b) - set(names))
        if extra:
            raise ApiError(400, f"unknown field(s) {', '.join(extra)}")
        for k, v in b.items():
            if v is not None and not isinstance(v, str):
                raise ApiError(400, f"{k}: must be a string")
        return b

    def step(fn: Any, *args: Any) -> tuple[int, Any]:
        try:
            return 200, fn(*args)
        except AlertNotFound as exc:
            raise ApiError(404, f"no alert {exc.args[0]!r}") from None
        except AlertRejected as exc:
            raise ApiError(409, str(exc)) from None

    def list_(_p: dict[str, str], q: dict[str, list[str]], _b: Any) -> tuple[int, Any]:
        try:
            state, kind = q.get("state"), q.get("type")
            return 200, {"alerts": alerts.list(state[-1] if state else None,
                                               kind[-1] if kind else None)}
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None

    def ack(p: dict[str, str], _q: Any, b: Any) -> tuple[int, Any]:
        d = body_of(b, "who", "note")
        return step(alerts.acknowledge, p["aid"], d.get("who") or "", d.get("note"))

    def res(p: dict[str, str], _q: Any, b: Any) -> tuple[int, Any]:
        d = body_of(b, "resolution", "who", "note")
        return step(alerts.resolve, p["aid"], d.get("resolution") or "", d.get("who") or "",
                    d.get("note"))

    api.route("GET", "/api/v1/alerts", list_)
    api.route("GET", "/api/v1/alerts/{aid}", lambda p, q, b: step(alerts.get, p["aid"]))
    api.route("POST", "/api/v1/alerts/{aid}/acknowledge", ack)
    api.route("POST", "/api/v1/alerts/{aid}/resolve", res)
