"""The daemon's HTTP server: a FastAPI app on uvicorn, run in its own thread with its own event
loop (handlers are plain functions that uvicorn runs in its thread pool), stopped cleanly.

uvicorn bounds neither open connections nor the time a client may take to send its request
(one byte a second keeps a connection for ever): `_BoundedH11` closes connections past
`max_connections` at once and any connection that has not sent a whole request within
`idle_timeout_s`, so the readers, the database and MQTT always keep file descriptors.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from typing import Any

import h11
import uvicorn
from fastapi import APIRouter, FastAPI
from uvicorn.protocols.http.h11_impl import H11Protocol

from rfidd.config_http import HttpConfig
from rfidd.metrics import Metrics
from rfidd.web.app import create_app
from rfidd.web.audit import AuditLog
from rfidd.web.auth import Authenticator, ensure_cli_token

log = logging.getLogger("rfidd.web")


class _BoundedH11(H11Protocol):
    max_connections = 1100
    request_timeout_s = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            transport.abort()
            return
        self._arm()

    def _arm(self) -> None:
        self._deadline = self.loop.call_later(self.request_timeout_s, self._on_deadline)

    def _on_deadline(self) -> None:
        # IDLE: no request yet (or half its headers); SEND_BODY: a body still arriving.
        if self.conn.their_state in (h11.IDLE, h11.SEND_BODY) and not self.transport.is_closing():
            self.transport.close()

    def on_response_complete(self) -> None:
        self._deadline.cancel()
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        deadline = getattr(self, "_deadline", None)
        if deadline is not None:
            deadline.cancel()
        super().connection_lost(exc)


class WebServer:
    """Owns the app, the listening socket and the server thread."""

    def __init__(self, config: HttpConfig, metrics: Metrics, *, audit: AuditLog | None = None,
                 state: dict[str, Any] | None = None) -> None:
        self.config = config
        self.listen = config.listen
        self.port = config.port
        self.cli_token = ensure_cli_token(config.auth.cli_token_file)
        self.auth = Authenticator(config.auth, self.cli_token)
        self.app: FastAPI = create_app(config, metrics, self.auth, audit=audit, state=state)
        self._server: _QuietServer | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None

    def include_router(self, router: APIRouter) -> None:
        """Add routes (also after start: the router is looked up on each request)."""
        self.app.include_router(router)

    def start(self) -> None:
        family = socket.AF_INET6 if ":" in self.listen else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.listen, self.port))
        sock.listen(1024)
        sock.set_inheritable(True)
        self._sock = sock
        self.port = sock.getsockname()[1]
        protocol = type("BoundedH11", (_BoundedH11,), {
            "max_connections": self.config.max_connections,
            "request_timeout_s": self.config.idle_timeout_s,
        })
        tls = self.config.tls
        cfg = uvicorn.Config(
            self.app.state.guard, http=protocol, lifespan="off", log_config=None, access_log=False,
            ws="none",  # no WebSocket route here: uvicorn would import `websockets` for nothing
            timeout_keep_alive=max(1, int(self.config.idle_timeout_s)),
            timeout_graceful_shutdown=3, server_header=False, date_header=True,
            ssl_certfile=str(tls.cert_file) if tls.cert_file else None,
            ssl_keyfile=str(tls.key_file) if tls.key_file else None,
            h11_max_incomplete_event_size=16 * 1024,
        )
        self._server = _QuietServer(cfg)
        started = threading.Event()

        def serve() -> None:
            assert self._server is not None
            try:
                asyncio.run(self._serve(started))
            except Exception:
                log.exception("HTTP server failed")
                started.set()

        self._thread = threading.Thread(target=serve, name="http", daemon=True)
        self._thread.start()
        started.wait(10)

    async def _serve(self, started: threading.Event) -> None:
        assert self._server is not None and self._sock is not None
        loop = asyncio.get_running_loop()
        # Handlers are sync and may wait on the database: a pool wide enough for a burst.
        from anyio import to_thread
        to_thread.current_default_thread_limiter().total_tokens = 64
        loop.call_soon(started.set)
        await self._server.serve(sockets=[self._sock])

    def stop(self) -> None:
        self.app.state.stopping.set()
        if self._server is not None:
            self._server.should_exit = True
            self._server.wake()
        if self._thread is not None:
            self._thread.join(10)
            if self._thread.is_alive():
                log.error("HTTP server thread still running after 10 s")
        if self._sock is not None:
            self._sock.close()


class _QuietServer(uvicorn.Server):
    """uvicorn's main loop wakes ten times a second to notice `should_exit` and once a second
    refreshes the Date header: an idle daemon pays for the nine others (a tenth of its idle
    CPU). This loop ticks once a second, and `wake` ends the wait at stop."""

    _tick: asyncio.Event | None = None
    _loop: asyncio.AbstractEventLoop | None = None

    async def main_loop(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._tick = asyncio.Event()
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            counter = (counter + 10) % 864_000  # a multiple of 10: on_tick's once-a-second work
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._tick.wait(), 1.0)
            should_exit = await self.on_tick(counter)

    def wake(self) -> None:
        loop, tick = self._loop, self._tick
        if loop is not None and tick is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(tick.set)
