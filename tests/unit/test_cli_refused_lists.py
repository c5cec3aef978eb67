"""`rfidd readers` and `rfidd alerts list` refused by the daemon (a wrong token): one line on
stderr naming the problem, exit 1, nothing on stdout; as every `rfidd ops` command."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

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


def _refusal(api: str, env: dict[str, str | None]) -> str:
    """The one stderr line of `rfidd ops count list` and `rfidd readers` refused with 401."""
    from rfidd.ops import ops_cli

    lines = []
    for cmd, argv in ((ops_cli, ["--api", api, "count", "list"]),
                      (readers_command, ["--api", api])):
        r = CliRunner().invoke(cmd, argv, env=env)
        assert r.exit_code == 1, r.output
        lines.append(r.stderr.strip())
    assert lines[0] == lines[1], lines  # one wording everywhere
    return lines[0]


def test_the_401_hint_names_rfidd_token_when_that_was_sent(api: str, tmp_path: Path) -> None:
    line = _refusal(api, {"RFIDD_TOKEN": "wrong", "RFIDD_TOKEN_FILE": str(tmp_path / "t")})
    assert "refused the token in RFIDD_TOKEN" in line, line
    assert "/run/rfidd/cli-token" not in line


def test_the_401_hint_names_the_token_file_that_was_read(api: str, tmp_path: Path) -> None:
    token_file = tmp_path / "cli-token"
    token_file.write_text("stale\n", encoding="utf-8")
    line = _refusal(api, {"RFIDD_TOKEN": None, "RFIDD_TOKEN_FILE": str(token_file)})
    assert f"refused the token of {token_file} (RFIDD_TOKEN_FILE)" in line, line
    assert "RFIDD_TOKEN " not in line.split("?")[0]


def test_the_401_hint_says_no_token_was_sent_and_why(api: str, tmp_path: Path) -> None:
    absent = tmp_path / "no-such-token"
    line = _refusal(api, {"RFIDD_TOKEN": None, "RFIDD_TOKEN_FILE": str(absent)})
    assert f"no token sent (RFIDD_TOKEN is not set and the token file {absent}" in line, line
    assert "No such file or directory" in line
