"""FastAPI dependencies: the caller's credential and role, checked before any handler runs."""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Awaitable, Callable

from fastapi import HTTPException, Request

from rfidd.actor import current_actor
from rfidd.config_http import Role
from rfidd.web.auth import CSRF_HEADER, SESSION_COOKIE, Authenticator, Principal
from rfidd.web.security import WRITE_METHODS

# A manager may do what staff do; the other roles are separate duties.
IMPLIED = {Role.MANAGER: {Role.STAFF}}


def effective(roles: frozenset[Role]) -> set[Role]:
    out = set(roles)
    for r in roles:
        out |= IMPLIED.get(r, set())
    return out


class Unauthenticated(HTTPException):
    def __init__(self) -> None:
        super().__init__(401, "authentication required", headers={"WWW-Authenticate": "Bearer"})


async def authenticate(request: Request) -> Principal:
    """The caller, from `Authorization: Bearer` or the session cookie (CSRF checked on
    writes). Wrong credentials from one address make its next attempts slower."""
    auth: Authenticator = request.app.state.auth
    addr = request.client.host if request.client else "?"
    delay = auth.throttle.delay(addr, time.time())
    if delay:
        await asyncio.sleep(delay)
    header = request.headers.get("authorization", "")
    cookie = request.cookies.get(SESSION_COOKIE)
    principal: Principal | None = None
    presented = False
    if header:
        presented = True
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            principal = auth.bearer(value.strip())
    elif cookie:
        presented = True
        principal = auth.session(cookie, time.time())
        if principal is not None and request.method in WRITE_METHODS:
            sent = request.headers.get(CSRF_HEADER, "")
            if not principal.csrf or not hmac.compare_digest(sent, principal.csrf):
                raise HTTPException(403, "CSRF token missing or wrong")
    if principal is None:
        if presented:
            auth.throttle.failed(addr, time.time())
        raise Unauthenticated()
    auth.throttle.succeeded(addr)
    request.state.principal = principal
    current_actor.set(principal.name)  # copied into the thread that runs the handler
    return principal


async def identify(request: Request) -> Principal | None:
    """The caller as `authenticate` finds it, or None instead of a 401: the page's first-visit
    probe, which a 401 would log as an error in every visitor's browser console."""
    try:
        return await authenticate(request)
    except Unauthenticated:
        return None


def require(*roles: Role) -> Callable[[Request], Awaitable[Principal]]:
    """A dependency admitting callers that hold one of `roles`."""
    wanted = set(roles)

    async def dependency(request: Request) -> Principal:
        principal = await authenticate(request)
        if not effective(principal.roles) & wanted:
            raise HTTPException(403, f"needs role {' or '.join(sorted(wanted))}")
        return principal

    return dependency
