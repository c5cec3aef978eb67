"""CLI times: one convention, the site's time zone (from the daemon's /api/v1/status) with its
offset; the CLI machine's own zone, with its offset, when the daemon does not say. A store PC
left in UTC must not show site times as if they were its own."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner
from fakeapi import routes, serve_json

from rfidd.cli_time import fmt_iso, fmt_time, site_zone
from rfidd.lifecycle.alerts_cli import alerts_cli
from rfidd.ops import ops_cli

T0 = datetime(2026, 12, 2, 13, 18, 15, tzinfo=UTC).timestamp()
RECEPTIONS = [{"session_id": "rcv-1", "status": "closed", "asn_ids": ["A1"],
                              "opened_at": T0, "closed_at": T0 + 60,
                              "progress": {"expected": 1, "read": 1}}]
ALERTS = {"alerts": [{"alert_id": "a1", "type": "exit_unsold", "epc": "E1", "zone": "exit",
                      "home_zone": "floor", "raised_at": "2026-12-02T13:18:15Z", "state": "open",
                      "resolution": None, "resolved_by": None, "acknowledged_by": None}]}


def serve(table: dict[str, Any]) -> Iterator[str]:
    with serve_json(routes(table)) as url:
        yield url


@pytest.fixture
def kolkata() -> Iterator[str]:
    yield from serve({"/api/v1/status": {"site": "s1", "timezone": "Asia/Kolkata"},
                      "/api/v1/ops/receptions": RECEPTIONS, "/api/v1/alerts": ALERTS})


@pytest.fixture
def silent() -> Iterator[str]:  # an older daemon: no timezone in its status
    yield from serve({"/api/v1/status": {"site": "s1"}, "/api/v1/ops/receptions": RECEPTIONS})


@pytest.fixture
def new_york(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_format_always_carries_the_offset() -> None:
    assert fmt_time(T0, ZoneInfo("Asia/Kolkata")) == "2026-12-02 18:48:15 +05:30"
    assert fmt_time(T0, UTC) == "2026-12-02 13:18:15 +00:00"
    assert fmt_time(None, UTC) == ""
    assert fmt_iso("2026-12-02T13:18:15Z", ZoneInfo("Europe/Paris")) == \
        "2026-12-02 14:18:15 +01:00"
    assert fmt_iso("not a time", UTC) == "not a time"  # shown as the daemon sent it


def test_site_zone_from_the_daemon_else_local(kolkata: str, silent: str,
                                              new_york: None) -> None:
    assert site_zone(kolkata) == ZoneInfo("Asia/Kolkata")
    assert fmt_time(T0, site_zone(silent)) == "2026-12-02 08:18:15 -05:00"
    assert fmt_time(T0, site_zone("http://127.0.0.1:9")) == "2026-12-02 08:18:15 -05:00"


def test_reception_list_and_alerts_show_site_time(kolkata: str, new_york: None) -> None:
    env = {"RFIDD_TOKEN": "t", "COLUMNS": "250"}
    r = CliRunner().invoke(ops_cli, ["--api", kolkata, "reception", "list"], env=env)
    assert r.exit_code == 0, r.output
    assert "2026-12-02 18:48:15 +05:30" in r.output and "18:49:15 +05:30" in r.output, r.output
    r = CliRunner().invoke(alerts_cli, ["--api", kolkata, "list"], env=env)
    assert r.exit_code == 0, r.output
    assert "2026-12-02 18:48:15 +05:30" in r.output, r.output
