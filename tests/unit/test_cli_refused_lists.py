"""`rfidd readers` and `rfidd alerts list` refused by the daemon (a wrong token): one line on
stderr naming the problem, exit 1, nothing on stdout; as every `rfidd ops` command."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from click.testing import CliRunner

from rfidd.lifecycle.alerts_cli import alerts_cli
from rfidd.readers_cli import readers_command


class _Refuses(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"error": "authentication required"}).encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def api() -> Iterator[str]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Refuses)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.mark.parametrize("args", [["--json"], []])
def test_refused_lists_say_so_in_one_line(api: str, args: list[str]) -> None:
    for cmd, argv in ((readers_command, ["--api", api, *args]),
                      (alerts_cli, ["--api", api, "list", *args])):
        r = CliRunner().invoke(cmd, argv, env={"RFIDD_TOKEN": "wrong"})
        assert r.exit_code == 1, (cmd.name, r.output)
        assert r.stdout == "", (cmd.name, r.stdout)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: not authenticated"), lines
        assert "(HTTP 401)" in lines[0]
