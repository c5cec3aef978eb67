"""The FastAPI application: error format, the guard, core routes (health, metrics, status,
sign-in, audit, OpenAPI) and the staff page. Service routers are added by the composition root.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from rfidd.config_http import HttpConfig, Role
from rfidd.health import ServiceUnavailable
from rfidd.metrics import Metrics
from rfidd.web.answers import (
    ERRORS,
    AnswerRoute,
    AuditAnswer,
    ErrorAnswer,
    SessionAnswer,
    SessionState,
    SignedOut,
    StatusOk,
)
from rfidd.web.audit import AuditLog
from rfidd.web.auth import SESSION_COOKIE, Authenticator, Principal, describe
from rfidd.web.deps import authenticate, identify, require
from rfidd.web.errors import ApiError
from rfidd.web.page import mount_static
from rfidd.web.security import AddressCounter, Guard, RequestCounter

log = logging.getLogger("rfidd.web")
ANY_ROLE = tuple(Role)


class SignIn(BaseModel):
    login: str = Field(min_length=1, max_length=64, description="Staff id or name.")
    secret: str = Field(min_length=1, max_length=256, description="PIN or password.")


def _field_errors(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        parts.append(f"{'.'.join(loc) or 'body'}: {err.get('msg', 'invalid')}")
    return "; ".join(parts)


def create_app(config: HttpConfig, metrics: Metrics, auth: Authenticator, *,
               audit: AuditLog | None = None, state: dict[str, Any] | None = None) -> FastAPI:
    app = FastAPI(title="rfidd site API", version="1", openapi_url=None, docs_url=None,
                  redoc_url=None)
    app.router.route_class = AnswerRoute  # answers are the services' dicts, as they are
    app.state.auth = auth
    auth.throttle.on_failure = AddressCounter(metrics.http_auth_failures)
    app.state.stopping = threading.Event()  # live streams end when the server stops
    app.state.audit = audit
    for k, v in (state or {}).items():
        setattr(app.state, k, v)

    @app.exception_handler(StarletteHTTPException)  # FastAPI's own, and Starlette's (a body
    async def http_error(_r: Request, exc: StarletteHTTPException) -> Response:  # not JSON)
        return JSONResponse({"error": exc.detail}, exc.status_code, headers=exc.headers)

    @app.exception_handler(ApiError)
    async def api_error(_r: Request, exc: ApiError) -> Response:
        return JSONResponse({"error": str(exc)}, exc.status)

    @app.exception_handler(ServiceUnavailable)
    async def unavailable(_r: Request, exc: ServiceUnavailable) -> Response:
        return JSONResponse({"error": str(exc)}, 503)  # database down or state busy: now

    @app.exception_handler(RequestValidationError)
    async def bad_body(_r: Request, exc: RequestValidationError) -> Response:
        return JSONResponse({"error": _field_errors(exc)}, 422)

    @app.get("/healthz", include_in_schema=False, response_model=StatusOk)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics", dependencies=[Depends(require(*ANY_ROLE))], include_in_schema=False)
    def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/api/v1/openapi.json", dependencies=[Depends(require(*ANY_ROLE))],
             include_in_schema=False)
    def openapi() -> dict[str, Any]:
        return app.openapi()

    @app.post("/api/v1/session", response_model=SessionAnswer, tags=["session"],
              responses={401: {"model": ErrorAnswer}, 422: ERRORS[422]})
    def sign_in(body: SignIn, request: Request, response: Response) -> dict[str, Any]:
        """Staff sign-in: sets the session cookie; writes then echo `csrf` in X-CSRF-Token."""
        addr = request.client.host if request.client else "?"
        delay = auth.throttle.delay(addr, time.time())
        if delay:
            time.sleep(delay)  # in the thread pool, not the event loop
        got = auth.sign_in(body.login, body.secret, time.time())
        if got is None:
            auth.throttle.failed(addr, time.time())
            raise HTTPException(401, "authentication required")
        auth.throttle.succeeded(addr)
        cookie, principal = got
        request.state.principal = principal
        response.set_cookie(SESSION_COOKIE, cookie, max_age=int(auth.config.session_ttl_s),
                            httponly=True, samesite="strict", path="/",
                            secure=config.tls.configured)
        return {"user": describe(principal), "csrf": principal.csrf}

    @app.get("/api/v1/session", response_model=SessionAnswer, tags=["session"],
             responses=ERRORS)
    def whoami(p: Principal = Depends(authenticate)) -> dict[str, Any]:
        """Who the credential is (and the CSRF token of a cookie session)."""
        return {"user": describe(p), "csrf": p.csrf}

    @app.get("/api/v1/session/state", response_model=SessionState, tags=["session"])
    def session_state(p: Principal | None = Depends(identify)) -> dict[str, Any]:
        """Whether the caller is signed in, answered 200 either way: the staff page's first
        visit asks it, and a 401 would show as an error in the browser's console."""
        return {"signed_in": p is not None, "user": describe(p) if p else None,
                "csrf": p.csrf if p else None}

    @app.post("/api/v1/session/close", response_model=SignedOut, tags=["session"],
              responses=ERRORS)
    def sign_out(request: Request, response: Response,
                 _p: Principal = Depends(authenticate)) -> dict[str, bool]:
        """Sign out: the session cookie is forgotten."""
        cookie = request.cookies.get(SESSION_COOKIE)
        if cookie:
            auth.sign_out(cookie)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return {"signed_out": True}

    @app.get("/api/v1/ops/audit", dependencies=[Depends(require(Role.MANAGER, Role.OPS))],
             response_model=AuditAnswer, tags=["ops"],
             responses={**ERRORS, 404: {"model": ErrorAnswer}})
    def audit_list(since: float = 0.0, limit: int = 1000) -> dict[str, Any]:
        """Every write through the API since `since` (epoch seconds): who, when, from where."""
        if audit is None:
            raise HTTPException(404, "no audit log on this server")
        return {"entries": audit.since(since, max(1, min(limit, 10_000)))}

    mount_static(app)
    wrapped = Guard(app, config, RequestCounter(metrics.http_requests, (
        "/healthz", "/metrics", "/api/v1/session", "/api/v1/session/state", "other")),
        audit=audit.record if audit is not None else None)
    app.state.guard = wrapped
    return app

