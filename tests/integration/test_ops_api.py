"""The `rfidd ops` CLI against the real HTTP API (loopback socket) of the store-operations
services, without readers: routes, validation errors naming the field, exit codes."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from inventory.presence import PresenceTracker
from rfidd.app import build_ops
from rfidd.config import Config
from rfidd.config_http import HttpConfig
from rfidd.context import ServiceContext
from rfidd.credentials import auth_headers
from rfidd.health import DomainLock
from rfidd.metrics import Metrics
from rfidd.ops import ops_cli
from rfidd.store.db import open_database
from rfidd.web.audit import AuditLog
from rfidd.web.server import WebServer

pytestmark = pytest.mark.integration


@pytest.fixture
def api_url(sqlite_url: str) -> Iterator[str]:
    cfg = Config.model_validate({
        "site": {"id": "api-store", "name": "API", "sgln": "urn:epc:id:sgln:3760001.00001.0"},
        "database": {"url": sqlite_url}, "mqtt": {"enabled": False},
        "zones": {"stockroom": {"kind": "stock"}, "floor": {"kind": "floor"}},
    })
    db = open_database(sqlite_url)
    metrics = Metrics()
    ctx = ServiceContext(cfg, db, metrics, PresenceTracker(300, 0, 1), DomainLock())
    ops = build_ops(ctx)
    ops.start()
    api = WebServer(HttpConfig(port=0), metrics, audit=AuditLog(db))
    ops.register_routes(api)  # type: ignore[arg-type]
    api.start()
    try:
        yield f"http://127.0.0.1:{api.port}"
    finally:
        api.stop()
        ops.stop()
        db.dispose()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli(url: str, *args: str) -> Any:
    return CliRunner().invoke(ops_cli, ["--api", url, *args])


def http(url: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    req = urllib.request.Request(url + path, method=method,
                                 headers={"Content-Type": "application/json", **auth_headers()},
                                 data=None if body is None else json.dumps(body).encode())
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_schedules_lists_and_classification_through_the_cli(api_url: str) -> None:
    res = cli(api_url, "count", "schedule", "add", "30 6 * * 1-5", "stockroom", "floor",
              "--duration", "900")
    assert res.exit_code == 0, res.output
    assert "schedule 1: 30 6 * * 1-5 over stockroom, floor for 900 s" in res.output
    assert cli(api_url, "count", "schedule", "list").output.startswith("1: 30 6 * * 1-5")
    assert cli(api_url, "count", "schedule", "delete", "1").exit_code == 0
    assert cli(api_url, "count", "schedule", "list").output == ""
    res = cli(api_url, "count", "start", "floor")
    assert res.exit_code == 0 and "0 items expected" in res.output
    assert "running" in cli(api_url, "count", "list").output
    res = cli(api_url, "count", "stop")
    assert res.exit_code == 0 and "0 of 0 found" in res.output
    assert cli(api_url, "reception", "list").exit_code == 0
    res = cli(api_url, "catalog", "classification", "--json")
    assert json.loads(res.output)["catalog_size"] == 0


def test_errors_name_the_field_and_set_the_exit_code(api_url: str) -> None:
    res = cli(api_url, "count", "start", "attic")
    assert res.exit_code == 1 and "zones: unknown zone(s) attic" in res.output
    res = cli(api_url, "count", "schedule", "add", "every day", "floor")
    assert res.exit_code == 1 and "cron:" in res.output
    res = cli(api_url, "reception", "close")
    assert res.exit_code == 1 and "no reception session is open" in res.output
    res = cli(api_url, "reception", "open", "NOPE")
    assert res.exit_code == 1 and "unknown ASN(s) NOPE" in res.output
    assert http(api_url, "POST", "/api/v1/ops/asns", {"format": "xml", "text": ""}) == (
        422, {"error": "format: Input should be 'csv' or 'json'"})
    status, body = http(api_url, "POST", "/api/v1/ops/asns",
                        {"format": "csv", "text": "asn_id,epc\nA,3034\n"})
    assert status == 422 and any("shipped_at" in e for e in body["errors"])
    assert http(api_url, "GET", "/api/v1/ops/shrinkage?since=yesterday")[0] == 400
    assert http(api_url, "GET", "/api/v1/ops/counts/nope")[0] == 404
    unreachable = cli(f"http://127.0.0.1:{free_port()}", "count", "list")
    assert unreachable.exit_code == 2 and "cannot reach rfidd" in unreachable.output


def test_json_lists_wide_tables_and_the_audit(api_url: str) -> None:
    assert cli(api_url, "count", "start", "floor", "stockroom").exit_code == 0
    rows = json.loads(cli(api_url, "count", "list", "--json").output)
    cid = rows[0]["session_id"]
    # Piped (CliRunner is not a terminal): the table keeps every id whole, on one line.
    assert any(cid in line for line in cli(api_url, "count", "list").output.splitlines())
    assert json.loads(cli(api_url, "reception", "list", "--json").output) == []
    assert json.loads(cli(api_url, "count", "schedule", "list", "--json").output) == []
    assert cli(api_url, "count", "stop").exit_code == 0
    entries = json.loads(cli(api_url, "audit", "--since", "1h", "--json").output)
    writes = [(e["method"], e["path"], e["status"], e["actor"]) for e in entries]
    assert writes == [("POST", "/api/v1/ops/counts", 201, "cli"),
                      ("POST", f"/api/v1/ops/counts/{cid}/stop", 200, "cli")]
    assert json.loads(entries[0]["detail"])["zones"] == ["floor", "stockroom"]
    table = cli(api_url, "audit", "--since", "1h").output
    assert f"/api/v1/ops/counts/{cid}/stop" in table and "cli (cli)" in table
    assert json.loads(cli(api_url, "audit", "--since", "2999-01-01T00:00:00Z", "--json")
                      .output) == []
    bad = cli(api_url, "audit", "--since", "yesterday")
    assert bad.exit_code == 2 and "--since" in bad.output


def test_the_cli_without_a_token_is_told_how_to_get_one(api_url: str,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          tmp_path: Path) -> None:
    monkeypatch.setenv("RFIDD_TOKEN_FILE", str(tmp_path / "absent"))
    res = cli(api_url, "count", "list")
    assert res.exit_code == 1 and "not authenticated" in res.output
    assert http(api_url, "GET", "/api/v1/ops/counts")[0] == 401


def test_users_add_writes_an_argon2_hash(tmp_path: Path) -> None:
    from rfidd.cli import main
    from rfidd.web.auth import load_users

    users = tmp_path / "users.json"
    res = CliRunner().invoke(main, ["users", "add", "Léa", "--file", str(users), "--role",
                                    "staff", "--role", "manager", "--pin", "9753"])
    assert res.exit_code == 0, res.output
    (user,) = load_users(users).values()
    assert user.name == "Léa" and user.hash.startswith("$argon2id$") and "9753" not in \
        users.read_text()
    assert (users.stat().st_mode & 0o077) == 0o040  # readable by the daemon's group only


def test_takeover_from_the_cli_is_a_takeover_and_prints_each_progress_once(
        api_url: str) -> None:
    """`rfidd ops takeover --seconds N` piped: its count is `trigger: takeover` (as the
    demo's), and a progress line that did not change is not printed again every second."""
    res = cli(api_url, "takeover", "floor", "--seconds", "2.5")
    assert res.exit_code == 0, res.output
    progress = [ln for ln in res.output.splitlines() if ln.startswith("take-over:")]
    assert len(progress) == len(set(progress)) >= 1, res.output
    rows = json.loads(cli(api_url, "count", "list", "--json").output)
    assert [r["trigger"] for r in rows] == ["takeover"]


def test_a_rejected_asn_file_does_not_open_on_a_line_that_reads_as_fine(
        api_url: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"asn_id": "A1", "shipped_at": "yesterday", "epcs": ["ZZZ"]}')
    res = cli(api_url, "asn", "import", str(bad))
    assert res.exit_code != 0
    assert "new: -" not in res.output, res.output
    assert "nothing imported" in res.stderr and "rejected:" in res.stderr, res.output
