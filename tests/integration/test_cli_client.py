"""The CLI's one HTTP client and its exit codes, over real loopback sockets: 0 done, 1 the
daemon refused (its message printed), 2 cannot reach the daemon.

The daemon is played by a stdlib HTTP server answering what each test sets, in the daemon's
error shape ({"error": "..."}), so every status and body a daemon or a proxy could send is
tried, not only those today's routes produce.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from click.testing import CliRunner, Result
from conftest import free_port

from rfidd.cli import main
from rfidd.client import (
    EXIT_REFUSED,
    EXIT_UNREACHABLE,
    ApiClient,
    Refused,
    Unreachable,
)
from rfidd.lifecycle.cli import lifecycle_cli
from rfidd.ops import ops_cli

pytestmark = pytest.mark.integration


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class FakeDaemon:
    url: str
    answers: dict[tuple[str, str], tuple[int, str, bytes]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)

    def answer(self, method: str, path: str, status: int, body: Any = None, *,
               raw: bytes | None = None, ctype: str = "application/json") -> None:
        data = raw if raw is not None else json.dumps(body).encode()
        self.answers[(method, path)] = (status, ctype, data)


@pytest.fixture
def daemon() -> Iterator[FakeDaemon]:
    fake = FakeDaemon("")

    class Handler(BaseHTTPRequestHandler):
        def _do(self, method: str) -> None:
            n = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(n) if n else b""
            fake.seen.append(Seen(method, self.path, dict(self.headers.items()),
                                  json.loads(raw) if raw else None))
            status, ctype, data = fake.answers.get(
                (method, self.path.split("?", 1)[0]),
                (404, "application/json", b'{"error": "no such route"}'))
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._do("GET")

        def do_POST(self) -> None:
            self._do("POST")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()


def ops(url: str, *args: str) -> Result:
    return CliRunner().invoke(ops_cli, ["--api", url, *args])


def lifecycle(url: str, *args: str) -> Result:
    return CliRunner(env={"COLUMNS": "200"}).invoke(lifecycle_cli, ["--api", url, *args])


# ------------------------------------------------------------------------------ 2: unreachable


def test_daemon_absent_exits_2_with_the_address() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    for res in (ops(url, "count", "list"), lifecycle(url, "sell", "--txn", "R1", "3034")):
        assert res.exit_code == EXIT_UNREACHABLE, res.output
        assert f"error: cannot reach rfidd at {url}: Connection refused" in res.output
        assert "is the daemon running" in res.output


def test_something_that_is_not_http_exits_2() -> None:
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        port = srv.getsockname()[1]

        def close_at_once() -> None:
            conn, _ = srv.accept()
            conn.recv(1024)
            conn.close()

        t = threading.Thread(target=close_at_once, daemon=True)
        t.start()
        res = ops(f"http://127.0.0.1:{port}", "count", "list")
        t.join(5)
    assert res.exit_code == EXIT_UNREACHABLE, res.output
    assert "cannot reach rfidd" in res.output


def test_a_silent_daemon_times_out_as_unreachable() -> None:
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()  # accepts (backlog) but never answers
        client = ApiClient(f"http://127.0.0.1:{srv.getsockname()[1]}", timeout=0.2)
        with pytest.raises(Unreachable, match="timed out") as err:
            client.call("GET", "/api/v1/status")
    assert err.value.exit_code == EXIT_UNREACHABLE


def test_a_success_that_is_not_json_is_no_rfidd_api(daemon: FakeDaemon) -> None:
    daemon.answer("GET", "/api/v1/ops/counts", 200, raw=b"<html>router login</html>",
                  ctype="text/html")
    res = ops(daemon.url, "count", "list")
    assert res.exit_code == EXIT_UNREACHABLE, res.output
    assert "is not JSON" in res.output and "an rfidd API" in res.output


def test_not_an_http_url_exits_2() -> None:
    res = ops("127.0.0.1:9750", "count", "list")
    assert res.exit_code == EXIT_UNREACHABLE
    assert "127.0.0.1:9750 is not an http:// or https:// URL" in res.output


# ------------------------------------------------------------------------------ 1: refused


@pytest.mark.parametrize(("status", "message"), [
    (400, "zones: unknown zone(s) attic"),
    (404, "no count 'nope'"),
    (409, "a count is already running"),
    (500, "internal error: KeyError"),
    (503, "database unavailable, retrying"),
])
def test_an_http_error_exits_1_with_the_daemons_message(
        daemon: FakeDaemon, status: int, message: str) -> None:
    daemon.answer("POST", "/api/v1/ops/counts", status, {"error": message})
    res = ops(daemon.url, "count", "start", "attic")
    assert res.exit_code == EXIT_REFUSED, res.output
    assert f"error: {message} (HTTP {status})" in res.output
    daemon.answer("POST", "/api/v1/lifecycle/sale", status, {"error": message})
    res = lifecycle(daemon.url, "sell", "--txn", "R1", "3034")
    assert res.exit_code == EXIT_REFUSED, res.output
    assert f"error: {message} (HTTP {status})" in res.output


def test_an_error_page_that_is_not_json_is_shown_as_text(daemon: FakeDaemon) -> None:
    daemon.answer("GET", "/api/v1/ops/counts", 502, raw=b"Bad Gateway: upstream down\n",
                  ctype="text/plain")
    res = ops(daemon.url, "count", "list")
    assert res.exit_code == EXIT_REFUSED, res.output
    assert "error: Bad Gateway: upstream down (HTTP 502)" in res.output


def test_lifecycle_rejections_show_each_item_then_exit_1(daemon: FakeDaemon) -> None:
    daemon.answer("POST", "/api/v1/lifecycle/sale", 409, {
        "command": "sale", "txn": "R1", "accepted": 1, "duplicates": 0, "rejected": 1,
        "items": [{"epc": "3034A", "result": "applied"},
                  {"epc": "3034B", "result": "rejected",
                   "reason": "already sold in transaction R0"}]})
    res = lifecycle(daemon.url, "sell", "--txn", "R1", "3034A", "3034B")
    assert res.exit_code == EXIT_REFUSED, res.output
    assert "already sold in transaction R0" in res.output and "1 accepted" in res.output


def test_a_partial_import_lists_what_was_rejected_then_exits_1(daemon: FakeDaemon,
                                                              tmp_path: Any) -> None:
    f = tmp_path / "catalog.csv"
    f.write_text("gtin,sku\nbad,\n")
    daemon.answer("POST", "/api/v1/ops/catalog", 422, {
        "imported": 0, "catalog_size": 0, "errors": [{"line": 2}],
        "error_text": ["line 2: gtin: 'bad' is not a GTIN"]})
    res = ops(daemon.url, "catalog", "import", str(f))
    assert res.exit_code == EXIT_REFUSED, res.output
    assert "rejected: line 2: gtin: 'bad' is not a GTIN" in res.output
    # A 422 that is an error, not a result, is a plain refusal.
    daemon.answer("POST", "/api/v1/ops/catalog", 422, {"error": "format: 'xml' is not csv"})
    res = ops(daemon.url, "catalog", "import", str(f))
    assert res.exit_code == EXIT_REFUSED
    assert "error: format: 'xml' is not csv (HTTP 422)" in res.output


# ------------------------------------------------------------------------------ 0: done


def test_success_exits_0_and_sends_json(daemon: FakeDaemon) -> None:
    daemon.answer("POST", "/api/v1/ops/counts", 200, {
        "session_id": "c1", "zones": ["floor"], "progress": {"expected": 12}})
    res = ops(daemon.url, "count", "start", "floor", "--duration", "60")
    assert res.exit_code == 0, res.output
    assert "count c1 started over floor: 12 items expected" in res.output
    sent = daemon.seen[-1]
    assert sent.body == {"zones": ["floor"], "duration_s": 60.0}
    assert sent.headers["Content-Type"] == "application/json"
    daemon.answer("POST", "/api/v1/lifecycle/sale", 200, {
        "command": "sale", "txn": "R2", "accepted": 1, "duplicates": 0, "rejected": 0,
        "items": [{"epc": "3034C", "result": "applied"}]})
    res = lifecycle(daemon.url, "sell", "--txn", "R2", "3034C")
    assert res.exit_code == 0, res.output
    assert daemon.seen[-1].body == {"txn": "R2", "epcs": ["3034C"]}


def test_query_parameters_skip_unset_values(daemon: FakeDaemon) -> None:
    daemon.answer("GET", "/api/v1/ops/replenishment", 200, {"lines": []})
    assert ops(daemon.url, "replenishment", "--floor-min", "3").exit_code == 0
    assert daemon.seen[-1].path == "/api/v1/ops/replenishment?floor_min=3"


# ------------------------------------------------------------------------------ the client


def test_token_and_headers_hook_reach_the_daemon(daemon: FakeDaemon) -> None:
    daemon.answer("GET", "/api/v1/status", 200, {"ok": True})
    calls: list[int] = []

    def hook() -> dict[str, str]:
        calls.append(1)
        return {"X-Request-Id": f"req-{len(calls)}"}

    client = ApiClient(daemon.url, token="tok-123", headers=hook)
    assert client.call("GET", "/api/v1/status") == {"ok": True}
    assert client.call("GET", "/api/v1/status") == {"ok": True}
    first, second = daemon.seen[-2:]
    assert first.headers["Authorization"] == "Bearer tok-123"
    assert (first.headers["X-Request-Id"], second.headers["X-Request-Id"]) == ("req-1", "req-2")
    assert "tok-123" not in repr(client)
    ApiClient(daemon.url).call("GET", "/api/v1/status")
    assert "Authorization" not in daemon.seen[-1].headers


def test_refused_carries_status_and_body(daemon: FakeDaemon) -> None:
    daemon.answer("GET", "/api/v1/x", 403, {"error": "role staff needed"})
    with pytest.raises(Refused) as err:
        ApiClient(daemon.url).call("GET", "/api/v1/x")
    assert (err.value.status, err.value.body) == (403, {"error": "role staff needed"})
    assert err.value.exit_code == EXIT_REFUSED
    r = ApiClient(daemon.url).send("GET", "/api/v1/x")
    assert (r.status, r.ok, r.error) == (403, False, "role staff needed")


def test_the_convention_is_in_every_group_help() -> None:
    runner = CliRunner()
    for args in (["ops", "--help"], ["ops", "count", "--help"], ["ops", "count", "schedule",
                 "--help"], ["ops", "catalog", "--help"], ["ops", "asn", "--help"],
                 ["ops", "reception", "--help"], ["lifecycle", "--help"], ["--help"]):
        out = runner.invoke(main, args).output
        assert "1  the daemon refused the request" in out, args
        assert "2  cannot reach the daemon" in out, args
