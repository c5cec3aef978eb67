"""`rfidd lifecycle ...` (mutations through the running daemon's local API, so the daemon's
lock, outbox and HQ link apply) and `rfidd trace EPC` (reads through that API too: the daemon
owns its database)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import datetime
from typing import Any

import click
from rich.table import Table

from rfidd.cli_api import accept_api_everywhere
from rfidd.client import EXIT_CODES_HELP, EXIT_REFUSED, ApiClient, Refused
from rfidd.console import table_console
from rfidd.credentials import auth_hint

DEFAULT_API = "http://127.0.0.1:9750"


def _group_api(ctx: click.Context, _param: click.Parameter, value: str | None) -> str:
    """`--api` after the subcommand wins; else the group's (`rfidd lifecycle --api URL sell`,
    as `rfidd ops --api URL ...`), else $RFIDD_API, else the default."""
    if value:
        return value
    return ctx.obj if isinstance(ctx.obj, str) else DEFAULT_API


def _api_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option("--json", "as_json", is_flag=True, help="Print the daemon's JSON answer.")(f)
    f = click.option("--api", default=None, callback=_group_api,
                     help=f"Local HTTP API of the running daemon [default: {DEFAULT_API}].")(f)
    return f


def call(api: str, method: str, path: str, body: Any = None, timeout: float = 30.0
         ) -> tuple[int, Any]:
    """One request to the daemon at `api`; (status, JSON body) whatever the status.

    Raises rfidd.client.Unreachable (exit 2) when there is no answer.
    """
    r = ApiClient(api, timeout=timeout).send(method, path, body)
    return r.status, r.body


def _show(status: int, body: Any, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(body, indent=2))
    elif status >= 400 and isinstance(body, dict) and "error" in body:
        click.echo(f"error: {body['error']} (HTTP {status})", err=True)
    elif isinstance(body, dict) and "items" in body:
        console = table_console()
        t = Table(title=f"{body['command']} {body.get('txn') or ''}: {body['accepted']} accepted, "
                  f"{body['duplicates']} already done, {body['rejected']} rejected")
        for col in ("EPC", "result", "reason"):
            t.add_column(col)
        for i in body["items"]:
            style = {"rejected": "red", "duplicate": "yellow"}.get(i["result"], "green")
            # the note, and why the tag's chip proves nothing (no binding, no TID read)
            t.add_row(i["epc"], f"[{style}]{i['result']}[/]", i.get("reason") or "; ".join(
                x for x in (i.get("note"), i.get("tag_note")) if x))
        console.print(t)
        if body.get("asn"):
            console.print(f"ASN {body['asn']['asn_id']} to {body['asn']['destination']}: "
                          f"{len(body['asn']['epcs'])} items, queued for HQ")
    else:
        click.echo(json.dumps(body, indent=2))
    if status >= 400:
        sys.exit(EXIT_REFUSED)


def _send(api: str, as_json: bool, command: str, body: dict[str, Any]) -> None:
    body = {k: v for k, v in body.items() if v is not None}
    status, out = call(api, "POST", f"/api/v1/lifecycle/{command}", body)
    _show(status, out, as_json)


_epcs = click.argument("epcs", nargs=-1, required=True)
_at = click.option("--at", help="Business time, ISO 8601 with offset (default: now).")


@click.group("lifecycle", epilog=EXIT_CODES_HELP)
@click.option("--api", "api_url", default=DEFAULT_API, show_default=True, envvar="RFIDD_API",
              help="Local HTTP API of the running daemon.")
@click.pass_context
def lifecycle_cli(ctx: click.Context, api_url: str) -> None:
    """Item lifecycle at this site: sell, return, transfer, loan, repair, commission, ship."""
    ctx.obj = api_url


@lifecycle_cli.command()
@click.option("--txn", required=True, help="POS receipt / transaction id.")
@click.option("--collect-later", is_flag=True,
              help="The client collects it later (alteration, gift wrap): it stays here, sold.")
@_at
@_epcs
@_api_options
def sell(txn: str, collect_later: bool, at: str | None, epcs: tuple[str, ...], api: str,
         as_json: bool) -> None:
    """Sell EPCS (hex or SGTIN URI) under receipt TXN; repeating it is harmless."""
    _send(api, as_json, "sale", {"txn": txn, "epcs": list(epcs), "at": at,
                                 "collect_later": collect_later or None})


@lifecycle_cli.command()
@click.option("--txn", required=True, help="The pick-up (or the receipt) id.")
@_at
@_epcs
@_api_options
def collect(txn: str, at: str | None, epcs: tuple[str, ...], api: str, as_json: bool) -> None:
    """The client collects sold EPCS awaiting collection: they may now leave."""
    _send(api, as_json, "collect", {"txn": txn, "epcs": list(epcs), "at": at})


@lifecycle_cli.command()
@click.option("--txn", required=True, help="Inspection (or RMA) id.")
@click.option("--to", "to", required=True,
              type=click.Choice(["stock", "floor", "repair", "destroy"]),
              help="Back to the stockroom or the floor, to repair, or to destruction.")
@_at
@_epcs
@_api_options
def restock(txn: str, to: str, at: str | None, epcs: tuple[str, ...], api: str,
            as_json: bool) -> None:
    """Returned EPCS, inspected: back to sellable stock, to repair or to destruction."""
    _send(api, as_json, "restock", {"txn": txn, "to": to, "epcs": list(epcs), "at": at})


@lifecycle_cli.command()
@click.option("--txn", required=True, help="Reservation id.")
@click.option("--client", help="Client reference (not a name) to hold EPCS for.")
@click.option("--staff", help="Staff member placing the hold.")
@click.option("--until", help="Expiry, ISO 8601 with offset.")
@click.option("--for-site", help="Held for a client of another store (sent by transfer).")
@click.option("--release", is_flag=True, help="End the hold: back to sellable stock.")
@_at
@_epcs
@_api_options
def hold(txn: str, client: str | None, staff: str | None, until: str | None,
         for_site: str | None, release: bool, at: str | None, epcs: tuple[str, ...], api: str,
         as_json: bool) -> None:
    """Reserve EPCS for a client (out of sellable stock) or --release them."""
    if release == bool(client):
        raise click.UsageError("give either --client (hold) or --release")
    if release:
        _send(api, as_json, "release", {"txn": txn, "epcs": list(epcs), "at": at})
    else:
        _send(api, as_json, "hold", {"txn": txn, "client": client, "staff": staff,
                                     "until": until, "for_site": for_site,
                                     "epcs": list(epcs), "at": at})


@lifecycle_cli.command("return")
@click.option("--rma", required=True, help="Return authorisation id.")
@click.option("--sale-txn", help="The original receipt, when known.")
@_at
@_epcs
@_api_options
def return_(rma: str, sale_txn: str | None, at: str | None, epcs: tuple[str, ...], api: str,
            as_json: bool) -> None:
    """A customer return of EPCS under RMA."""
    _send(api, as_json, "return", {"txn": rma, "sale_txn": sale_txn, "epcs": list(epcs),
                                   "at": at})


@lifecycle_cli.command()
@click.option("--asn", "asn_id", required=True, help="Shipment (ASN) id.")
@click.option("--to", "to_site", help="Destination site id (transfer out).")
@click.option("--in", "inbound", is_flag=True, help="Receive a transfer from another store.")
@click.option("--carton", help="SSCC URI of the carton the items are packed into.")
@_at
@_epcs
@_api_options
def transfer(asn_id: str, to_site: str | None, inbound: bool, carton: str | None,
             at: str | None, epcs: tuple[str, ...], api: str, as_json: bool) -> None:
    """Transfer EPCS to another store (--to SITE) or receive them (--in)."""
    if inbound == bool(to_site):
        raise click.UsageError("give either --to SITE (out) or --in")
    if inbound:
        _send(api, as_json, "transfer_in", {"txn": asn_id, "epcs": list(epcs), "at": at})
    else:
        _send(api, as_json, "transfer_out", {"txn": asn_id, "to_site": to_site,
                                             "carton": carton, "epcs": list(epcs), "at": at})


@lifecycle_cli.command()
@click.option("--id", "loan_id", required=True, help="Loan id.")
@click.option("--due", help="Due back, ISO 8601 with offset (loan out).")
@click.option("--back", is_flag=True, help="The items came back.")
@click.option("--borrower", help="Who has them (press, client).")
@_at
@_epcs
@_api_options
def loan(loan_id: str, due: str | None, back: bool, borrower: str | None, at: str | None,
         epcs: tuple[str, ...], api: str, as_json: bool) -> None:
    """Lend EPCS until --due, or take them back (--back)."""
    if back == bool(due):
        raise click.UsageError("give either --due (loan out) or --back")
    if back:
        _send(api, as_json, "loan_back", {"txn": loan_id, "epcs": list(epcs), "at": at})
    else:
        _send(api, as_json, "loan_out", {"txn": loan_id, "due": due, "borrower": borrower,
                                         "epcs": list(epcs), "at": at})


@lifecycle_cli.command()
@click.option("--order", required=True, help="Repair order id.")
@click.option("--in/--out", "inbound", required=True, help="Into repair or back from it.")
@_at
@_epcs
@_api_options
def repair(order: str, inbound: bool, at: str | None, epcs: tuple[str, ...], api: str,
           as_json: bool) -> None:
    """After-sales repair of EPCS: --in when it starts, --out when done."""
    _send(api, as_json, "repair_in" if inbound else "repair_out",
          {"txn": order, "epcs": list(epcs), "at": at})


@lifecycle_cli.command()
@click.option("--to", "to_site", required=True, help="Destination site id.")
@click.option("--asn", "asn_id", required=True, help="ASN id (published to HQ).")
@click.option("--carton", help="SSCC URI of the carton (AggregationEvent per item).")
@_at
@_epcs
@_api_options
def ship(to_site: str, asn_id: str, carton: str | None, at: str | None, epcs: tuple[str, ...],
         api: str, as_json: bool) -> None:
    """Pack and ship EPCS to another site with an ASN (all or nothing)."""
    _send(api, as_json, "ship", {"txn": asn_id, "to_site": to_site, "carton": carton,
                                 "epcs": list(epcs), "at": at})


@lifecycle_cli.command()
@click.option("--gtin", help="Open a session: tags of this GTIN read at a bench...")
@click.option("--count", type=int, help="...up to this many.")
@click.option("--zone", help="Only this bench zone.")
@click.option("--epc", help="Bind one encoded tag instead (commissioned when a bench reads it).")
@click.option("--tid", help="The tag's TID (hex), with --epc.")
@click.option("--close", "close_id", help="Close session ID.")
@_api_options
def commission(gtin: str | None, count: int | None, zone: str | None, epc: str | None,
               tid: str | None, close_id: str | None, api: str, as_json: bool) -> None:
    """Workshop commissioning: open a session (--gtin --count), bind a tag (--epc [--tid]),
    close one (--close ID); with no option, list open sessions."""
    base = "/api/v1/lifecycle/commissioning"
    if close_id:
        status, out = call(api, "POST", f"{base}/sessions/{close_id}/close")
    elif epc:
        status, out = call(api, "POST", f"{base}/binds",
                           {k: v for k, v in {"epc": epc, "tid": tid}.items() if v})
    elif gtin or count:
        if not (gtin and count):
            raise click.UsageError("--gtin and --count go together")
        status, out = call(api, "POST", f"{base}/sessions",
                           {k: v for k, v in {"gtin": gtin, "expected": count,
                                              "zone": zone}.items() if v})
    else:
        status, out = call(api, "GET", f"{base}/sessions")
    _show(status, out, as_json)


accept_api_everywhere(lifecycle_cli)  # every command: `--api` on the group or on it


def _site_time(h: dict[str, Any]) -> str:
    """The event's time at the site (its recorded UTC offset), else UTC."""
    from datetime import UTC

    when = datetime.fromtimestamp(float(h["event_time"]), UTC)
    offset = h.get("offset")
    if offset:
        try:
            zone = datetime.fromisoformat(f"2000-01-01T00:00:00{offset}").tzinfo
        except ValueError:
            zone = None
        when = when.astimezone(zone) if zone is not None else when
    return when.strftime("%Y-%m-%d %H:%M:%S") + f" {offset or '+00:00'}"  # as rfidd.cli_time


@click.command("trace", epilog=EXIT_CODES_HELP)
@click.argument("epc")
@click.option("--api", default=DEFAULT_API, show_default=True, envvar="RFIDD_API",
              help="Local HTTP API of the running daemon.")
@click.option("--json", "as_json", is_flag=True, help="JSON instead of a table.")
def trace_command(epc: str, api: str, as_json: bool) -> None:
    """Show the history of EPC (hex or SGTIN URI) on this site, from the daemon's events
    journal (through its API, with the CLI's credentials: the daemon owns the database)."""
    from urllib.parse import quote

    from rfidd.lifecycle.commands import normalize_epc
    from rfidd.lifecycle.trace import epc_uri_of

    try:
        epc_hex = normalize_epc(epc)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="EPC") from None
    client = ApiClient(api)
    r = client.send("GET", f"/api/v1/lifecycle/items/{quote(epc_hex)}")
    state: dict[str, Any] | None
    history: list[dict[str, Any]]
    if r.status == 404 and r.error and "no history" in r.error:
        state, history = None, []
    elif not r.ok:
        raise Refused(r.status, auth_hint() if r.status == 401 else r.error or str(r.body), r.body)
    else:
        state, history = r.body.get("state"), r.body.get("history") or []
    where = client.send("GET", f"/api/v1/items/{quote(epc_hex)}")
    if where.ok and isinstance(where.body, dict):
        state = {**(state or {}), "zone": where.body.get("zone"),
                 "last_seen": where.body.get("last_seen")}
    uri = epc_uri_of(epc_hex)
    if as_json:
        click.echo(json.dumps({"epc": epc_hex, "epc_uri": uri, "state": state,
                               "history": history}, indent=2))
        return
    console = table_console()
    if state is None and not history:
        console.print(f"{uri} ({epc_hex}): no history on this site")
        sys.exit(EXIT_REFUSED)
    head = f"{uri}  ({epc_hex})"
    if state:
        shown = ("status", "disposition", "zone", "sale_txn", "destination", "shipment",
                 "loan_due", "tid")
        head += "\n" + ", ".join(f"{k.replace('_', ' ')}: {state[k]}" for k in shown
                                 if state.get(k) is not None)
        hold = state.get("hold")
        if hold:
            head += f"\nheld for {hold.get('client')} until {hold.get('until') or '-'}"
    t = Table(title=head, title_justify="left")
    for col in ("time (site)", "event", "bizStep", "disposition", "where", "transactions"):
        t.add_column(col)
    for h in history:
        t.add_row(_site_time(h), f"{h['type'].removesuffix('Event')} {h.get('action') or ''}",
                  h.get("biz_step") or "", h.get("disposition") or "",
                  h.get("zone") or h.get("read_point") or "",
                  "\n".join(h.get("biz_transactions") or [])
                  + (f"\nin {h['parent']}" if h.get("parent") else ""))
    console.print(t)
