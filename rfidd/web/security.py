"""The guard in front of every route (a plain ASGI middleware, so nothing reaches a handler
unchecked): Host allow-list (DNS rebinding), Origin on writes (cross-site forms), JSON-only write
bodies within a size and nesting bound, and `rfidd_http_requests_total{route,code}` for every
answer, refusals included."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rfidd.config_http import HttpConfig, is_loopback

log = logging.getLogger("rfidd.web")

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]", "::1")
NO_BODY_IN_AUDIT = frozenset({"/api/v1/session"})  # the sign-in body holds a PIN
AUDIT_BODY_MAX = 2000


@dataclass(frozen=True)
class AuditEntry:
    at: float
    actor_kind: str
    actor: str
    address: str
    method: str
    path: str
    status: int
    detail: str


def json_too_deep(body: bytes, limit: int) -> bool:
    """True when brackets nest deeper than `limit` (strings skipped): checked before parsing,
    which would otherwise recurse without bound."""
    depth = 0
    in_str = escaped = False
    for b in body:
        if in_str:
            if escaped:
                escaped = False
            elif b == 0x5C:  # backslash
                escaped = True
            elif b == 0x22:
                in_str = False
        elif b == 0x22:
            in_str = True
        elif b in (0x5B, 0x7B):
            depth += 1
            if depth > limit:
                return True
        elif b in (0x5D, 0x7D):
            depth -= 1
    return False


def _host_name(host: str) -> str:
    if host.startswith("["):
        return host[: host.find("]") + 1] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class RequestCounter:
    """Children fetched once per (route, code): route is the route's template (bounded)."""

    def __init__(self, counter: Counter, routes: Iterable[str] = ()) -> None:
        self._counter = counter
        self._children: dict[tuple[str, str], Any] = {}
        for r in routes:
            for code in ("200", "401"):
                self.child(r, code)

    def child(self, route: str, code: str) -> Any:
        key = (route, code)
        c = self._children.get(key)
        if c is None:
            c = self._children[key] = self._counter.labels(route, code)
        return c


class AddressCounter:
    """Counts by client address with a bounded label set: the first `limit` addresses seen
    get their own child, later ones share 'other' (a scan of the network cannot grow it)."""

    def __init__(self, counter: Counter, limit: int = 64) -> None:
        self._counter = counter
        self._limit = limit
        self._children: dict[str, Any] = {}
        self._other = counter.labels("other")
        self._lock = threading.Lock()

    def __call__(self, addr: str) -> None:
        with self._lock:
            c = self._children.get(addr)
            if c is None:
                c = self._other if len(self._children) >= self._limit else \
                    self._children.setdefault(addr, self._counter.labels(addr))
        c.inc()


class Guard:
    def __init__(self, app: ASGIApp, config: HttpConfig, counter: RequestCounter,
                 audit: Callable[[AuditEntry], None] | None = None) -> None:
        self.app = app
        self.audit = audit
        self.config = config
        self.counter = counter
        hosts = {*LOOPBACK_NAMES, *(h.lower() for h in config.allowed_hosts)}
        if not is_loopback(config.listen) and config.listen not in ("0.0.0.0", "::"):
            hosts.add(config.listen.lower())
        self.hosts = hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        def count(code: int) -> None:
            route = scope.get("route")
            self.counter.child(getattr(route, "path", None) or "other", str(code)).inc()

        async def counted_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                count(message["status"])  # before the client can see the answer
            await send(message)

        try:
            await self._guarded(scope, receive, counted_send)
        finally:
            if not started:
                count(500)

    async def _guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", [])}
        host = _host_name(headers.get("host", "").strip().lower())
        if host not in self.hosts:
            await _refuse(send, 400, "Host not allowed")
            return
        method = scope["method"]
        if method in WRITE_METHODS:
            origin = headers.get("origin")
            if headers.get("sec-fetch-site") == "cross-site" or (
                    origin is not None and not self._same_origin(origin, headers, scope)):
                await _refuse(send, 403, "cross-origin request refused")
                return
            body = await self._read_body(receive, headers, send)
            if body is None:
                return
            if body:
                ctype = headers.get("content-type", "application/json").split(";")[0].strip()
                if ctype != "application/json":
                    await _refuse(send, 415, "request body must be application/json")
                    return
                if json_too_deep(body, self.config.max_json_depth):
                    await _respond(send, 422, {"error": f"body: JSON nested deeper than "
                                               f"{self.config.max_json_depth} levels"})
                    return
            sent = False

            async def replay() -> Message:
                nonlocal sent
                if not sent:
                    sent = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()


            async def audited(message: Message) -> None:
                if message["type"] == "http.response.start":  # recorded before it is answered
                    await self._record(scope, body, message["status"])
                await send(message)

            await self.app(scope, replay, audited)
            return
        await self.app(scope, receive, send)

    async def _record(self, scope: Scope, body: bytes, status: int) -> None:
        """Audit an authenticated write: who, when, from where, what, and its answer."""
        principal = scope.get("state", {}).get("principal")
        if self.audit is None or principal is None:
            return
        path = scope["path"]
        detail = "" if path in NO_BODY_IN_AUDIT else body[:AUDIT_BODY_MAX].decode(
            "utf-8", errors="replace")
        client = scope.get("client") or ("?", 0)
        entry = AuditEntry(time.time(), principal.kind, principal.name, str(client[0]),
                           scope["method"], path, status, detail)
        try:
            await run_in_threadpool(self.audit, entry)
        except Exception:
            log.exception("audit record of %s %s failed", scope["method"], path)

    def _same_origin(self, origin: str, headers: dict[str, str], scope: Scope) -> bool:
        if origin == "null":
            return False
        host = headers.get("host", "")
        scheme = scope.get("scheme", "http")
        return origin.lower() in (f"{scheme}://{host}".lower(),)

    async def _read_body(self, receive: Receive, headers: dict[str, str],
                         send: Send) -> bytes | None:
        limit = self.config.max_body_bytes
        raw = headers.get("content-length")
        if raw is not None:
            if not raw.isdigit():
                await _refuse(send, 400, "bad Content-Length")
                return None
            if int(raw) > limit:
                await _refuse(send, 413, "request body too large")
                return None
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None  # the client went away: nothing to answer, nothing to log
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _refuse(send, 413, "request body too large")
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


async def _respond(send: Send, status: int, body: Any) -> None:
    payload = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})


async def _refuse(send: Send, status: int, message: str) -> None:
    await _respond(send, status, {"error": message})
