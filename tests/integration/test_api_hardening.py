"""The web server under attack and abuse, over real sockets: no credential, a cross-site form,
DNS rebinding, huge or deep bodies, stalled and idle clients, a burst of 1,000 requests."""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fastapi import APIRouter, Body, Depends
from waits import wait_until

from rfidd.cli import main
from rfidd.config_http import HttpConfig, Role
from rfidd.credentials import auth_headers
from rfidd.health import ServiceUnavailable
from rfidd.metrics import Metrics
from rfidd.web.auth import add_user
from rfidd.web.deps import require
from rfidd.web.security import AuditEntry
from rfidd.web.server import WebServer

pytestmark = pytest.mark.integration


class Server:
    def __init__(self, web: WebServer, metrics: Metrics, audited: list[AuditEntry]) -> None:
        self.web, self.metrics, self.audited = web, metrics, audited

    @property
    def port(self) -> int:
        return self.web.port

    def request(self, method: str, path: str, body: Any = None,
                headers: dict[str, str] | None = None) -> tuple[int, Any, http.client.HTTPResponse]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        data = json.dumps(body).encode() if body is not None and not isinstance(body, bytes) \
            else body
        h = {"Content-Type": "application/json", **(headers or {})}
        conn.request(method, path, body=data, headers=h)
        resp = conn.getresponse()
        raw = resp.read()
        conn.close()
        try:
            return resp.status, json.loads(raw), resp
        except ValueError:
            return resp.status, raw, resp

    def counted(self, route: str, code: int) -> float:
        v = self.metrics.registry.get_sample_value(
            "rfidd_http_requests_total", {"route": route, "code": str(code)})
        return v or 0.0


class _Audit:
    def __init__(self, out: list[AuditEntry]) -> None:
        self.out = out

    def record(self, e: AuditEntry) -> None:
        self.out.append(e)

    def since(self, since: float, limit: int = 1000) -> list[dict[str, Any]]:
        return []


def _server(tmp_path: Path, **http: Any) -> Server:
    users = tmp_path / "users.json"
    add_user(users, "Alice", [Role.STAFF], "4821")
    cfg = HttpConfig.model_validate({"port": 0, **http,
                                     "auth": {"users_file": str(users), "failure_delay_s": 0,
                                              **http.get("auth", {})}})
    metrics = Metrics()
    audited: list[AuditEntry] = []
    web = WebServer(cfg, metrics, audit=_Audit(audited))  # type: ignore[arg-type]
    r = APIRouter()

    @r.post("/api/v1/test/echo", dependencies=[Depends(require(Role.STAFF))])
    def echo(body: Any = Body(None)) -> Any:
        return {"echo": body}

    @r.post("/api/v1/test/busy", dependencies=[Depends(require(Role.STAFF))])
    def busy() -> Any:
        raise ServiceUnavailable("database unavailable, retrying")

    @r.post("/api/v1/test/sell", dependencies=[Depends(require(Role.POS))])
    def sell() -> Any:
        return {"sold": True}

    web.include_router(r)
    web.start()
    return Server(web, metrics, audited)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    s = _server(tmp_path, idle_timeout_s=1.0, max_connections=1100)
    try:
        yield s
    finally:
        s.web.stop()


def _raw(port: int, request: bytes, timeout: float = 5.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(request)
        chunks = []
        while True:
            try:
                data = s.recv(65536)
            except TimeoutError:
                break
            if not data:
                break
            chunks.append(data)
        return b"".join(chunks)


def test_every_route_but_healthz_needs_a_credential(server: Server) -> None:
    assert server.request("GET", "/healthz")[0] == 200
    for method, path in (("GET", "/metrics"), ("GET", "/api/v1/status"),
                         ("POST", "/api/v1/test/echo"), ("GET", "/api/v1/openapi.json")):
        status, body, _ = server.request(method, path, {} if method == "POST" else None)
        assert status in (401, 404) and status != 200, (method, path)
        if status == 401:
            assert body == {"error": "authentication required"}  # no detail of what was wrong
    wrong = server.request("POST", "/api/v1/test/echo", {"a": 1},
                           {"Authorization": "Bearer " + "x" * 40})
    assert wrong[0] == 401 and wrong[1] == {"error": "authentication required"}
    assert server.counted("/api/v1/test/echo", 401) == 2
    ok = server.request("POST", "/api/v1/test/echo", {"a": 1}, auth_headers())
    assert ok[:2] == (200, {"echo": {"a": 1}})
    assert server.request("GET", "/api/v1/openapi.json", None, auth_headers())[0] == 200
    # Audited: who, from where, what.
    e = server.audited[-1]
    assert (e.actor_kind, e.actor, e.address, e.method, e.path, e.status) == (
        "cli", "cli", "127.0.0.1", "POST", "/api/v1/test/echo", 200)
    assert json.loads(e.detail) == {"a": 1}
    assert server.request("POST", "/api/v1/test/busy", {}, auth_headers())[:2] == (
        503, {"error": "database unavailable, retrying"})  # said at once, not a hang


def test_cross_site_and_rebinding_requests_are_refused(server: Server) -> None:
    h = auth_headers()
    # A page elsewhere posting a "simple" form (no preflight): refused before any handler.
    status, body, _ = server.request("POST", "/api/v1/test/sell", b"{}",
                                     {"Origin": "http://evil.example", "Content-Type":
                                      "text/plain", **h})
    assert status == 403 and "cross-origin" in body["error"]
    status, _, _ = server.request("POST", "/api/v1/test/echo", b"{}",
                                  {**h, "Sec-Fetch-Site": "cross-site"})
    assert status == 403
    # text/plain from the same origin still is not JSON.
    status, _, _ = server.request("POST", "/api/v1/test/echo", b"{}",
                                  {**h, "Content-Type": "text/plain"})
    assert status == 415
    # DNS rebinding: the attacker's name resolves to 127.0.0.1, the Host header gives it away.
    status, _, _ = server.request("GET", "/api/v1/status", None, {**h, "Host": "evil.example"})
    assert status == 400
    assert server.counted("other", 400) >= 1
    # No CORS: nothing grants another origin the right to read answers.
    _, _, resp = server.request("GET", "/healthz", None, {"Origin": "http://evil.example"})
    assert resp.getheader("Access-Control-Allow-Origin") is None
    same = server.request("POST", "/api/v1/test/echo", {"x": 1},
                          {**h, "Origin": f"http://127.0.0.1:{server.port}"})
    assert same[0] == 200
    assert not [e for e in server.audited if e.path == "/api/v1/test/sell"]


def test_roles_are_enforced(tmp_path: Path) -> None:
    token = tmp_path / "pos.token"
    token.write_text("pos-token-0123456789abcdef\n")
    s = _server(tmp_path, auth={"tokens": [
        {"name": "till-1", "roles": ["pos"], "file": str(token)}]})
    try:
        pos = {"Authorization": "Bearer pos-token-0123456789abcdef"}
        assert s.request("POST", "/api/v1/test/sell", {}, pos)[0] == 200
        status, body, _ = s.request("POST", "/api/v1/test/echo", {}, pos)
        assert status == 403 and body == {"error": "needs role staff"}
        assert s.audited[0].actor == "till-1"
    finally:
        s.web.stop()


def test_staff_session_cookie_and_csrf(server: Server) -> None:
    bad = server.request("POST", "/api/v1/session", {"login": "Alice", "secret": "0000"})
    assert bad[:2] == (401, {"error": "authentication required"})
    status, body, resp = server.request("POST", "/api/v1/session",
                                        {"login": "alice", "secret": "4821"})
    assert status == 200 and body["user"]["display"] == "Alice"
    cookie = resp.getheader("set-cookie") or ""
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    jar = {"Cookie": cookie.split(";")[0]}
    assert body["user"]["name"].startswith("s-")  # opaque id, not the name
    assert server.request("POST", "/api/v1/test/echo", {"a": 1}, jar)[0] == 403  # no CSRF
    ok = server.request("POST", "/api/v1/test/echo", {"a": 1},
                        {**jar, "X-CSRF-Token": body["csrf"]})
    assert ok[0] == 200 and server.audited[-1].actor == body["user"]["name"]
    assert not [e for e in server.audited if "4821" in e.detail]  # the PIN is never kept
    assert server.request("POST", "/api/v1/session/close", None,
                          {**jar, "X-CSRF-Token": body["csrf"]})[0] == 200
    assert server.request("GET", "/api/v1/session", None, jar)[0] == 401


def test_bad_bodies_get_clear_answers(server: Server) -> None:
    h = {"Authorization": auth_headers()["Authorization"]}
    port = server.port
    head = (b"POST /api/v1/test/echo HTTP/1.1\r\nHost: localhost\r\nContent-Type: "
            b"application/json\r\nAuthorization: " + h["Authorization"].encode() + b"\r\n")
    big = _raw(port, head + b"Content-Length: 99999999\r\n\r\n")
    assert big.startswith(b"HTTP/1.1 413")
    deep = b"[" * 100_000 + b"]" * 100_000
    status, body, _ = server.request("POST", "/api/v1/test/echo", deep, h)
    assert status == 422 and "nested deeper than 32" in body["error"]
    # Promises 10 bytes, sends 3, then stalls: closed after the idle timeout, no answer.
    assert _raw(port, head + b"Content-Length: 10\r\n\r\nabc", timeout=5.0) == b""
    ok = _raw(port, head + b"Content-Length: 7\r\nConnection: close\r\n\r\n{\"a\":1}")
    assert ok.startswith(b"HTTP/1.1 200") and ok.endswith(b'{"echo":{"a":1}}')


def test_idle_and_excess_connections_are_closed(tmp_path: Path) -> None:
    s = _server(tmp_path, idle_timeout_s=1.0, max_connections=20)
    socks: list[socket.socket] = []
    try:
        for _ in range(30):
            c = socket.create_connection(("127.0.0.1", s.port), timeout=5)
            c.sendall(b"G")  # a slow client: one byte, then nothing
            socks.append(c)

        def closed(c: socket.socket) -> bool:
            c.settimeout(0.05)
            try:
                return c.recv(1) == b""
            except TimeoutError:
                return False
            except OSError:
                return True

        # The 10 past the bound at once, the others after the idle timeout: none held.
        wait_until(lambda: all(closed(c) for c in socks), timeout=10)
        assert s.request("GET", "/healthz")[0] == 200
    finally:
        for c in socks:
            c.close()
        s.web.stop()


def test_a_thousand_concurrent_requests_are_all_answered(tmp_path: Path) -> None:
    server = _server(tmp_path)  # the default idle timeout: a burst is not a stall
    header = auth_headers()["Authorization"].encode()

    async def one() -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /api/v1/session HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: "
                     + header + b"\r\nConnection: close\r\n\r\n")
        await writer.drain()
        data = await reader.read()
        writer.close()
        return data[:12]

    async def burst() -> list[bytes]:
        return await asyncio.wait_for(asyncio.gather(*(one() for _ in range(1000))), 120)

    try:
        answers = asyncio.run(burst())
    finally:
        server.web.stop()
    assert answers.count(b"HTTP/1.1 200") == 1000


def test_check_config_refuses_a_network_bind_without_tls(tmp_path: Path) -> None:
    cfg = tmp_path / "site.toml"
    cfg.write_text('[site]\nid = "s1"\nname = "S"\nsgln = "urn:epc:id:sgln:3760001.00001.0"\n'
                   '[mqtt]\nenabled = false\n[http]\nlisten = "0.0.0.0"\n[zones.floor]\n'
                   'kind = "floor"\n')
    res = CliRunner().invoke(main, ["check-config", str(cfg)])
    assert res.exit_code == 78 and "http.listen '0.0.0.0' is not a loopback" in res.output
    cfg.write_text(cfg.read_text().replace('listen = "0.0.0.0"',
                                           'listen = "0.0.0.0"\nallowed_hosts = ["till.shop"]\n'
                                           '[http.tls]\ncert_file = "c.pem"\nkey_file = "k.pem"'))
    assert CliRunner().invoke(main, ["check-config", "--syntax-only", str(cfg)]).exit_code == 0


def test_failed_credentials_slow_the_address_down() -> None:
    from rfidd.web.auth import Throttle

    t = Throttle(base_delay_s=1.0)
    now = time.time()
    for _ in range(2):
        t.failed("10.0.0.9", now)
    assert t.delay("10.0.0.9", now) == 0  # two typos are free
    t.failed("10.0.0.9", now)
    t.failed("10.0.0.9", now)
    assert t.delay("10.0.0.9", now) == 2.0 and t.delay("127.0.0.1", now) == 0
    for _ in range(20):
        t.failed("10.0.0.9", now)
    assert t.delay("10.0.0.9", now) == 30.0
    assert t.delay("10.0.0.9", now + 3600) == 0  # forgotten
    t.succeeded("10.0.0.9")
    assert t.delay("10.0.0.9", now) == 0


def test_a_client_that_goes_away_early_is_no_traceback(server: Server,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    auth = auth_headers()["Authorization"].encode()
    head = (b"POST /api/v1/test/echo HTTP/1.1\r\nHost: localhost\r\nContent-Type: "
            b"application/json\r\nAuthorization: " + auth + b"\r\n")
    for _ in range(5):
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as c:
            c.sendall(head + b"Content-Length: 100\r\n\r\n{\"a\":")  # then hangs up
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as c:
            c.sendall(b"GET /api/v1/session HTTP/1.1\r\nHost: localhost\r\nAuthorization: "
                      + auth + b"\r\n\r\n")  # and leaves before reading the answer
    # The server is past those connections once it answers the next request on a new one.
    assert server.request("GET", "/healthz")[0] == 200
    wait_until(lambda: server.counted("/api/v1/session", 200) >= 5, "the abandoned answers")
    assert not [r for r in caplog.records if r.levelno >= 40 or r.exc_info], [
        r.getMessage() for r in caplog.records]


def test_wrong_credentials_are_counted_per_client_address(server: Server) -> None:
    def failures(client: str) -> float:
        return server.metrics.registry.get_sample_value(
            "rfidd_http_auth_failures_total", {"client": client}) or 0.0

    assert failures("other") == 0.0  # initialised at start
    for _ in range(3):
        status, _body, _ = server.request("POST", "/api/v1/test/echo", {},
                                          {"Authorization": "Bearer not-the-token"})
        assert status == 401
    assert server.request("POST", "/api/v1/session", {"login": "Alice", "secret": "0000"})[0] \
        == 401
    assert server.request("POST", "/api/v1/test/echo", {})[0] == 401  # none given: no guess
    assert failures("127.0.0.1") == 4


def test_the_session_state_answers_200_signed_in_or_not(server: Server) -> None:
    """The page's first-visit probe: no 401 (a console error in every browser), and nothing
    but "nobody" for a caller without a credential or with a wrong one."""
    nobody = {"signed_in": False, "user": None, "csrf": None}
    assert server.request("GET", "/api/v1/session/state")[:2] == (200, nobody)
    wrong = server.request("GET", "/api/v1/session/state", None,
                           {"Authorization": "Bearer " + "x" * 40})
    assert wrong[:2] == (200, nobody)
    assert server.request("GET", "/api/v1/session/state", None,
                          {"Cookie": "rfidd_session=stale"})[:2] == (200, nobody)
    status, body, _ = server.request("GET", "/api/v1/session/state", None, auth_headers())
    assert status == 200 and body["signed_in"] is True and body["user"]["name"] == "cli"
    assert server.counted("/api/v1/session/state", 200) == 4
