"""The former hand-rolled HTTP server, still used by rfidd/hq/http.py only: the site daemon
serves through rfidd/web (FastAPI on uvicorn); remove this module once HQ moves there too.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from rfidd.health import ServiceUnavailable

log = logging.getLogger("rfidd.api")

MAX_BODY = 1 << 20
REQUEST_TIMEOUT_S = 30.0


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


Handler = Callable[[dict[str, str], dict[str, list[str]], Any], tuple[int, Any]]


class Api:
    def __init__(self, registry: CollectorRegistry, listen: str = "127.0.0.1", port: int = 0):
        self.registry = registry
        self.listen = listen
        self.port = port
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def route(self, method: str, pattern: str, handler: Handler) -> None:
        """`pattern` like /api/v1/items/{epc}; path parameters reach the handler by name."""
        rx = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern)
        self._routes.append((method, re.compile(f"^{rx}$"), handler))

    def dispatch(self, method: str, path: str, body: bytes) -> tuple[int, str, bytes]:
        url = urlsplit(path)
        if method == "GET" and url.path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, generate_latest(self.registry)
        allowed = False
        for m, rx, handler in self._routes:
            match = rx.match(url.path)
            if not match:
                continue
            allowed = True
            if m != method:
                continue
            try:
                data = json.loads(body) if body else None
            except ValueError as exc:
                return _json(400, {"error": f"request body is not JSON: {exc}"})
            try:
                status, out = handler(match.groupdict(), parse_qs(url.query), data)
            except ApiError as exc:
                return _json(exc.status, {"error": str(exc)})
            except ServiceUnavailable as exc:  # database down or state busy: say so, now
                return _json(503, {"error": str(exc)})
            except Exception as exc:  # a handler bug must not take the API down
                log.exception("API %s %s failed", method, url.path)
                return _json(500, {"error": f"internal error: {type(exc).__name__}"})
            return _json(status, out)
        if allowed:
            return _json(405, {"error": f"{method} not allowed on {url.path}"})
        return _json(404, {"error": f"no route {url.path}"})

    def start(self) -> None:
        api = self

        class _H(BaseHTTPRequestHandler):
            server_version = "rfidd"
            timeout = REQUEST_TIMEOUT_S  # a client that stalls mid-request frees its thread

            def _do(self, method: str) -> None:
                raw = self.headers.get("Content-Length") or "0"
                try:
                    length = int(raw)
                except ValueError:
                    length = -1
                if length < 0:
                    status, ctype, payload = _json(400, {"error": f"bad Content-Length {raw!r}"})
                elif length > MAX_BODY:
                    status, ctype, payload = _json(413, {"error": "request body too large"})
                else:
                    body = self.rfile.read(length) if length else b""
                    if len(body) < length:
                        return  # the client went away or timed out mid-body
                    status, ctype, payload = api.dispatch(method, self.path, body)
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self) -> None:
                self._do("GET")

            def do_POST(self) -> None:
                self._do("POST")

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("%s " + format, self.address_string(), *args)

        self._server = ThreadingHTTPServer((self.listen, self.port), _H)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="http",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)


def _json(status: int, body: Any) -> tuple[int, str, bytes]:
    return status, "application/json", json.dumps(body, default=str).encode()
