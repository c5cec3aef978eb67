"""`rfidd readers`: each reader's state and what it says it is, from the running daemon."""

from __future__ import annotations

import json
import time
from typing import Any

import click
from rich.table import Table

from rfidd.client import Response, refusal
from rfidd.console import table_console
from rfidd.lifecycle.cli import DEFAULT_API, call

_STYLE = {"online": "green", "connected_not_reading": "red", "connecting": "yellow",
          "offline": "red"}


def _antennas(row: dict[str, Any]) -> str:
    """The antennas reporting now: none for a reader that is not online (the driver's last
    figure is from before it went down)."""
    mapped = row.get("antennas")
    seen = row.get("antennas_reporting")
    if not mapped or row.get("state") != "online":
        return ""
    silent = [a for a in mapped if seen is not None and a not in seen]
    parts = [",".join(str(a) for a in (seen or []))]
    if silent:
        parts.append(f"[red](silent: {','.join(map(str, silent))})[/]")
    return " ".join(p for p in parts if p)


@click.command("readers")
@click.option("--api", default=DEFAULT_API, show_default=True, envvar="RFIDD_API",
              help="Local HTTP API of the running daemon.")
@click.option("--json", "as_json", is_flag=True, help="Print the daemon's JSON answer.")
def readers_command(api: str, as_json: bool) -> None:
    """Each reader: state, reads/s, vendor, model, firmware, RF mode, antennas reporting,
    anomalies."""
    # a refusal (a wrong token...) is one line on stderr and exit 1, as for `rfidd ops`
    status, body = call(api, "GET", "/api/v1/readers")
    if status >= 400:
        raise refusal(Response(status, body))
    if as_json:
        click.echo(json.dumps(body, indent=2))
        return
    table = Table(title=f"readers of {body.get('site', '?')}")
    for col in ("reader", "state", "reads/s", "vendor", "model", "firmware", "mode",
                "antennas reporting", "anomalies"):
        table.add_column(col)
    for name, row in sorted(body.get("readers", {}).items()):
        state = row.get("state", "?")
        shown = f"[{_STYLE.get(state, 'white')}]{state}[/]"
        if row.get("silent"):
            shown += " [yellow](silent)[/]"
        elif row.get("no_tag_s") is not None:
            shown += f" [yellow](no tag for {row['no_tag_s']} s)[/]"
        anomalies = row.get("anomalies") or {}
        mode = row.get("mode")
        rate = row.get("reads_per_s")
        table.add_row(
            name, shown, "" if rate is None else f"{rate:g}",
            str(row.get("vendor") or row.get("kind") or ""),
            str(row.get("model") or ""), str(row.get("firmware") or ""),
            "" if mode is None else f"{mode} (by {row.get('mode_index', 'identifier')})",
            _antennas(row),
            ", ".join(f"{k} {v}" for k, v in sorted(anomalies.items())),
        )
    table_console().print(table)


@click.command("find")
@click.argument("epc")
@click.option("--reader", "reader_name", required=True, help="The handheld (a TSL reader).")
@click.option("--seconds", default=60.0, show_default=True, help="How long to look.")
@click.option("--api", default=DEFAULT_API, show_default=True, envvar="RFIDD_API",
              help="Local HTTP API of the running daemon.")
def find_command(epc: str, reader_name: str, seconds: float, api: str) -> None:
    """Find one item with a handheld: its RSSI as you walk, louder when closer."""
    path = f"/api/v1/readers/{reader_name}/find"
    status, body = call(api, "POST", path, {"epc": epc})
    if status >= 400:
        raise click.ClickException(str(body.get("error", body)))
    click.echo(f"looking for {body['epc']} with {reader_name} (Ctrl-C to stop)")
    deadline = time.monotonic() + seconds
    last = ""
    try:
        while time.monotonic() < deadline:
            time.sleep(0.3)
            _s, body = call(api, "GET", path)
            for sample in body.get("samples", []):
                if sample["at"] <= last:
                    continue
                last = sample["at"]
                rssi = sample["rssi_dbm"]
                bar = "#" * max(0, int((rssi or -90) + 90) // 2)
                click.echo(f"{sample['at']}  {rssi if rssi is not None else '?':>5} dBm  {bar}")
    except KeyboardInterrupt:
        pass
    finally:
        call(api, "POST", path, {"epc": None})
