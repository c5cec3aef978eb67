"""`rfidd alerts`: list alerts and take them through their workflow (acknowledge, resolve)
through the running daemon's local API."""

from __future__ import annotations

import json
import sys
from typing import Any

import click
from rich.table import Table

from rfidd.cli_api import accept_api_everywhere
from rfidd.cli_time import fmt_iso, site_zone
from rfidd.client import Response, refusal
from rfidd.console import table_console
from rfidd.lifecycle.cli import DEFAULT_API, call

P = "/api/v1/alerts"


def _out(status: int, body: Any, as_json: bool) -> None:
    if as_json or status >= 400:
        if status >= 400 and isinstance(body, dict) and "error" in body and not as_json:
            click.echo(f"error: {body['error']}", err=True)
        else:
            click.echo(json.dumps(body, indent=2))
    else:
        a = body
        click.echo(f"alert {a['alert_id']} ({a.get('type', '')}): {a['state']}"
                   + (f", {a['resolution']} by {a['resolved_by']}" if a.get("resolution")
                      else "") + (" (already done)" if a.get("duplicate") else ""))
    if status >= 400:
        sys.exit(1)


@click.group("alerts")
@click.option("--api", "api_url", default=DEFAULT_API, show_default=True, envvar="RFIDD_API",
              help="Local HTTP API of the running daemon.")
@click.pass_context
def alerts_cli(ctx: click.Context, api_url: str) -> None:
    """Alerts (exit of an unsold item, refused return): list, acknowledge, resolve."""
    ctx.obj = api_url


@alerts_cli.command("list")
@click.option("--state", type=click.Choice(["open", "acknowledged", "resolved"]))
@click.option("--type", "kind", help="exit_unsold, return_refused, ...")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def list_(api: str, state: str | None, kind: str | None, as_json: bool) -> None:
    """Alerts, newest first."""
    q = "&".join(f"{k}={v}" for k, v in (("state", state), ("type", kind)) if v)
    # a refusal (a wrong token...) is one line on stderr and exit 1, as for `rfidd ops`
    status, body = call(api, "GET", P + (f"?{q}" if q else ""))
    if status >= 400:
        raise refusal(Response(status, body))
    if as_json:
        click.echo(json.dumps(body, indent=2))
        return
    t = Table(title=f"{len(body['alerts'])} alert(s)")
    for c in ("id", "type", "EPC", "zone", "home zone", "raised", "state", "resolution", "by"):
        t.add_column(c)
    zone = site_zone(api)
    for a in body["alerts"]:
        t.add_row(a["alert_id"], a["type"], a["epc"], a["zone"] or "",
                  a["home_zone"] or "", fmt_iso(a["raised_at"], zone), a["state"],
                  a["resolution"] or "",
                  a["resolved_by"] or a["acknowledged_by"] or "")
    table_console().print(t)


@alerts_cli.command()
@click.argument("alert_id")
@click.option("--by", "who", required=True, help="Who acknowledges (name or staff id).")
@click.option("--note")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def ack(api: str, alert_id: str, who: str, note: str | None, as_json: bool) -> None:
    """Acknowledge ALERT_ID: someone is on it."""
    _out(*call(api, "POST", f"{P}/{alert_id}/acknowledge", {"who": who, "note": note}),
         as_json)


@alerts_cli.command("resolve")
@click.argument("alert_id")
@click.argument("resolution", type=click.Choice(["false_alarm", "recovered",
                                                  "confirmed_loss"]))
@click.option("--by", "who", required=True, help="Who resolves (name or staff id).")
@click.option("--note")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def resolve_(api: str, alert_id: str, resolution: str, who: str, note: str | None,
             as_json: bool) -> None:
    """Resolve ALERT_ID; shrinkage and the books follow the resolution."""
    _out(*call(api, "POST", f"{P}/{alert_id}/resolve",
               {"resolution": resolution, "who": who, "note": note}), as_json)


accept_api_everywhere(alerts_cli)  # `--api` after the command too, as everywhere
