"""A stand-in daemon API for CLI tests (import as `from fakeapi import serve_json`): a real
loopback HTTP server answering GET with fixed JSON, so the CLI's own HTTP client is exercised."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Answer = Callable[[str], "tuple[int, Any] | None"]


def routes(table: dict[str, Any]) -> Answer:
    """Answer the paths of `table` (query string ignored) with 200 and their JSON; others 404."""
    def answer(path: str) -> tuple[int, Any] | None:
        found = table.get(path.split("?")[0])
        return None if found is None else (200, found)
    return answer


def always(body: Any, status: int = 200) -> Answer:
    """Answer every path with `body` and `status`."""
    return lambda _path: (status, body)


@contextmanager
def serve_json(answer: Answer) -> Iterator[str]:
    """Serve `answer` on a free loopback port; yields the base URL, stops the server after."""
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            got = answer(self.path)
            status, data = got if got is not None else (404, {"error": "no such route"})
            body = json.dumps(data).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()
