"""Tables piped to another program keep every id whole (README: "full width when piped")."""

from __future__ import annotations

import io
import json
import re
from typing import Any

import pytest
from click.testing import CliRunner

from rfidd import readers_cli
from rfidd.console import PIPED_WIDTH, table_console
from rfidd.lifecycle import alerts_cli

LONG_ID = "urn:uuid:4dd7c962-8bf4-5bd0-931b-ab71e45420fd"
EPC = "3034E57E04001A00000003F3"


def test_piped_console_is_wide(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdout", io.StringIO())
    assert table_console().width == PIPED_WIDTH


def _fake_call(body: dict[str, Any]) -> Any:
    def call(*_args: Any, **_kwargs: Any) -> tuple[int, dict[str, Any]]:
        return 200, json.loads(json.dumps(body))
    return call


def test_alerts_list_piped_keeps_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    alert = {"alert_id": LONG_ID, "type": "exit_unsold", "epc": EPC, "zone": "exit",
             "home_zone": "stockroom", "raised_at": "2026-12-01T23:49:24Z", "state": "open",
             "resolution": None, "resolved_by": None, "acknowledged_by": None}
    monkeypatch.setattr(alerts_cli, "call", _fake_call({"alerts": [alert]}))
    out = CliRunner().invoke(alerts_cli.alerts_cli, ["list"])
    assert out.exit_code == 0, out.output
    assert LONG_ID in out.output and EPC in out.output


def test_readers_piped_keeps_names(monkeypatch: pytest.MonkeyPatch) -> None:
    reader = {"state": "online", "vendor": "generic", "model": 1,
              "firmware": "rfidd-sim 1.0 build 2026-11-30", "antennas": [1, 2],
              "antennas_reporting": [1, 2], "anomalies": {}}
    name = "backdoor-reception-and-exit-1"
    monkeypatch.setattr(readers_cli, "call", _fake_call({"site": "s", "readers": {name: reader}}))
    out = CliRunner().invoke(readers_cli.readers_command, [])
    assert out.exit_code == 0, out.output
    assert name in out.output and "rfidd-sim 1.0 build 2026-11-30" in out.output


def _plain(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_narrow_terminal_folds_ids_instead_of_cutting_them(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """On a terminal the table keeps its look, but what does not fit is folded, not cut."""
    from rich.table import Table

    out = _Tty()
    monkeypatch.setattr("sys.stdout", out)
    monkeypatch.setenv("COLUMNS", "60")
    t = Table(title="alerts")
    for col in ("id", "type", "EPC", "zone", "raised"):
        t.add_column(col)
    t.add_row(LONG_ID, "exit_unsold", EPC, "exit", "2026-12-01T23:49:24Z")
    console = table_console()
    assert console.is_terminal and console.width == 60
    console.print(t)
    text = _plain(out.getvalue())
    lines = text.splitlines()
    assert "…" not in text and max(len(ln) for ln in lines) <= 60
    body = [ln.split("│")[1:-1] for ln in lines if ln.startswith("│")]
    cells = ["".join(row[i].strip() for row in body) for i in range(5)]
    assert cells == [LONG_ID, "exit_unsold", EPC, "exit", "2026-12-01T23:49:24Z"]
    # what fits is drawn as before: one line, nothing folded
    short = Table()
    short.add_column("EPC")
    short.add_row(EPC)
    out.truncate(0)
    out.seek(0)
    console.print(short)
    assert [ln for ln in _plain(out.getvalue()).splitlines() if EPC in ln] == [f"│ {EPC} │"]
