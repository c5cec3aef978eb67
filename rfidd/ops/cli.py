"""`rfidd ops`: staff commands against the running daemon's local HTTP API.

The CLI holds no state and opens no database: the daemon owns sessions, so a count started from
one terminal can be watched and stopped from another, and a reception opened by an ASN from HQ
can be closed by the stockroom.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from rfidd.client import EXIT_CODES_HELP, EXIT_REFUSED, ApiClient

# 422 with a result (no `error`): a partial import; the command shows what was rejected.
from rfidd.ops.cli_common import (
    DEFAULT_API,
    PARTIAL,
    PREFIX,
    TIMEOUT_S,
    _client,
    _console,
    _echo_json,
    _fmt_time,
    _list_table,
    _pct,
    _read_file,
    _write_text,
)
from rfidd.ops.cli_counts import count_group


@click.group("ops", epilog=EXIT_CODES_HELP)
@click.option("--api", "api_url", default=DEFAULT_API, show_default=True, envvar="RFIDD_API",
              help="Base URL of the daemon's local HTTP API.")
@click.pass_context
def ops_cli(ctx: click.Context, api_url: str) -> None:
    """Store operations: catalog, ASNs and receptions, cycle counts, shrinkage."""
    ctx.obj = ApiClient(api_url, prefix=PREFIX, timeout=TIMEOUT_S)


# -- catalog ------------------------------------------------------------------------------------
@ops_cli.group("catalog", epilog=EXIT_CODES_HELP)
def catalog_group() -> None:
    """Product catalog."""


@catalog_group.command("import")
@click.argument("file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default=None,
              help="Default: from the file extension.")
@click.pass_context
def catalog_import(ctx: click.Context, file: Path, fmt: str | None) -> None:
    """Import a catalog FILE (CSV with header gtin,sku,name,size,colour,category,price,currency,
    or a JSON array of the same objects)."""
    text, fmt = _read_file(file, fmt)
    res = _client(ctx).call("POST", "/catalog", {"format": fmt, "text": text,
                                                 "source": file.name}, accept=PARTIAL)
    click.echo(f"{res['imported']} product(s) imported; catalog now {res['catalog_size']}")
    for e in res.get("error_text", []):
        click.echo(f"  rejected: {e}", err=True)
    if res.get("errors") and not res["imported"]:
        sys.exit(EXIT_REFUSED)


@catalog_group.command("classification")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def catalog_classification(ctx: click.Context, as_json: bool) -> None:
    """Items by EPC class (ours, unknown product...) and rejected reads."""
    res = _client(ctx).call("GET", "/catalog/classification")
    if as_json:
        _echo_json(res)
        return
    t = Table(title=f"EPC classification (catalog: {res['catalog_size']} products)")
    t.add_column("class")
    t.add_column("items", justify="right")
    t.add_column("rejected reads", justify="right")
    for k in sorted(set(res["items"]) | set(res["rejected_reads"])):
        t.add_row(k, str(res["items"].get(k, "")), str(int(res["rejected_reads"].get(k, 0))))
    _console().print(t)


# -- ASN and reception --------------------------------------------------------------------------
@ops_cli.group("asn", epilog=EXIT_CODES_HELP)
def asn_group() -> None:
    """Advance shipping notices."""


@asn_group.command("import")
@click.argument("file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default=None)
@click.option("--open/--no-open", "open_reception", default=None,
              help="Open a reception for it (default: the daemon's rule).")
@click.pass_context
def asn_import(ctx: click.Context, file: Path, fmt: str | None,
               open_reception: bool | None) -> None:
    """Import ASN(s) from FILE; importing the same ASN again changes nothing."""
    text, fmt = _read_file(file, fmt)
    res = _client(ctx).call("POST", "/asns", {"format": fmt, "text": text, "source": file.name,
                                              "open_reception": open_reception}, accept=PARTIAL)
    rejected = len(res.get("conflicts", []) + res.get("errors", []))
    if rejected and not res["new"] and not res["identical"]:  # not "new: -", which reads as fine
        click.echo(f"nothing imported from {file.name}: {rejected} rejected", err=True)
    else:
        click.echo(f"new: {', '.join(res['new']) or '-'}; already imported (identical): "
                   f"{', '.join(res['identical']) or '-'}"
                   + (f"; {rejected} rejected" if rejected else ""))
    if res.get("reception"):
        click.echo(f"reception session {res['reception']} is open")
    for w in res.get("warnings", []):
        click.echo(f"  warning: {w}", err=True)
    for e in res.get("conflicts", []) + res.get("errors", []):
        click.echo(f"  rejected: {e}", err=True)
    if res.get("conflicts") or res.get("errors"):
        sys.exit(EXIT_REFUSED)


@ops_cli.group("reception", epilog=EXIT_CODES_HELP)
def reception_group() -> None:
    """Reception sessions against ASNs."""


@reception_group.command("open")
@click.argument("asn_ids", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print the daemon's JSON answer.")
@click.pass_context
def reception_open(ctx: click.Context, asn_ids: tuple[str, ...], as_json: bool) -> None:
    """Open a reception session against ASN_IDS."""
    res = _client(ctx).call("POST", "/receptions", {"asn_ids": list(asn_ids)})
    if as_json:
        _echo_json(res)
        return
    p = res["progress"]
    click.echo(f"reception {res['session_id']} open: {p['received_listed']} of "
               f"{p['expected']} expected items already read")


@reception_group.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def reception_list(ctx: click.Context, as_json: bool) -> None:
    """Reception sessions, newest first, with what each received."""
    def row(r: dict[str, Any]) -> list[str]:
        tot = r.get("totals") or {}
        prog = r.get("progress") or {}
        return [r["session_id"], r["status"], ", ".join(r["asn_ids"]),
                _fmt_time(r["opened_at"]), _fmt_time(r["closed_at"]),
                str(tot.get("received", prog.get("received_listed", ""))),
                str(tot.get("missing", "")), str(tot.get("unexpected", ""))]

    _list_table(ctx, "/receptions", as_json, "Reception sessions",
                ("session", "status", "ASNs", "opened", "closed", "received", "missing",
                 "unexpected"), row)


def _open_reception_id(client: ApiClient) -> str:
    open_ = [r for r in client.call("GET", "/receptions") if r["status"] == "open"]
    if not open_:
        click.echo("error: no reception session is open", err=True)
        sys.exit(EXIT_REFUSED)
    return str(open_[0]["session_id"])


def print_reception(doc: dict[str, Any], console: Console) -> None:
    tot = doc["totals"]
    state = "[green]complete[/]" if doc["complete"] else "[red]discrepancies[/]"
    console.print(f"Reception [bold]{doc['session_id']}[/] — ASN {', '.join(doc['asn_ids'])}: "
                  f"{state}; expected {tot['expected']}, received {tot['received']}, missing "
                  f"{tot['missing']}, unexpected {tot['unexpected']}")
    t = Table(title="Per product")
    nums = ("expected", "received", "over", "short", "unexpected")
    for c in ("GTIN", "SKU", "product", *nums):
        t.add_column(c, justify="right" if c in nums else "left")
    for ln in doc["lines"]:
        style = "" if not any(ln.get(c, 0) for c in nums[2:]) else "yellow"
        # name · size · colour: two colours of one bag are otherwise two lines of one name
        name = " · ".join(x for x in (ln["name"], ln.get("size"), ln.get("colour")) if x)
        t.add_row(ln["gtin"], ln["sku"] or "", name, *(str(ln.get(c, 0)) for c in nums),
                  style=style)
    console.print(t)
    if doc["missing"] or doc["unexpected"]:
        d = Table(title="Items to check")
        for c in ("status", "EPC", "GTIN", "ASN"):
            d.add_column(c)
        for status in ("missing", "unexpected"):
            for it in doc[status]:
                d.add_row(status, it["epc"], it["gtin"] or "", it["asn_id"] or "")
        console.print(d)
    for w in doc.get("warnings", []):
        console.print(f"[yellow]warning:[/] {w}")


@reception_group.command("show")
@click.argument("session_id", required=False)
@click.option("--csv", "csv_out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the per-GTIN table as CSV to this file ('-' for stdout).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def reception_show(ctx: click.Context, session_id: str | None, csv_out: Path | None,
                   as_json: bool) -> None:
    """Interim (open) or final (closed) report of a reception; default: the open one."""
    client = _client(ctx)
    sid = session_id or _open_reception_id(client)
    if csv_out is not None:
        _write_text(client.call("GET", f"/receptions/{sid}", query={"format": "csv"})["text"],
                    csv_out)
        return
    res = client.call("GET", f"/receptions/{sid}")
    if as_json:
        _echo_json(res)
        return
    print_reception(res["report"], _console())


@reception_group.command("close")
@click.argument("session_id", required=False)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def reception_close(ctx: click.Context, session_id: str | None, as_json: bool) -> None:
    """Close a reception (default: the open one): report to HQ, items booked as received."""
    client = _client(ctx)
    sid = session_id or _open_reception_id(client)
    doc = client.call("POST", f"/receptions/{sid}/close")
    if as_json:
        _echo_json(doc)
        return
    print_reception(doc, _console())


# -- counts -------------------------------------------------------------------------------------
@ops_cli.command("shrinkage")
@click.option("--since", default=None, help="Start (ISO 8601 or epoch s); default 30 days ago.")
@click.option("--until", default=None, help="End (ISO 8601 or epoch s); default now.")
@click.option("--currency", default=None)
@click.option("--publish", is_flag=True, help="Also send the report to HQ.")
@click.option("--csv", "csv_out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def shrinkage(ctx: click.Context, since: str | None, until: str | None, currency: str | None,
              publish: bool, csv_out: Path | None, as_json: bool) -> None:
    """Shrinkage for a period: confirmed (exit alerts resolved as a loss) and suspected (open
    alerts, items missed by counts), at retail and cost, rate on net sales."""
    client = _client(ctx)
    q = {"since": since, "until": until, "currency": currency}
    if csv_out is not None:
        _write_text(client.call("GET", "/shrinkage", query={**q, "format": "csv"})["text"],
                    csv_out)
        return
    if publish:
        doc = client.call("POST", "/shrinkage", {k: v for k, v in q.items() if v is not None})
    else:
        doc = client.call("GET", "/shrinkage", query=q)
    if as_json:
        _echo_json(doc)
        return
    tot = doc["totals"]
    console = _console()
    rate = tot["shrinkage_rate"]
    console.print(f"Shrinkage {_fmt_time(doc['period_start'])} → {_fmt_time(doc['period_end'])}"
                  f": {tot['items']} item(s), {tot['value']} {doc['currency']} (confirmed "
                  f"{tot['confirmed']} = {tot.get('confirmed_value', '?')}, suspected "
                  f"{tot['suspected']} = {tot.get('suspected_value', '?')}; "
                  f"{_at_cost(tot)}); rate {_pct(rate)} of net sales "
                  f"{tot.get('net_sales_value', tot['sales_value'])}"
                  + (f"; {tot['cleared_alerts']} alert(s) cleared" if tot.get("cleared_alerts")
                     else ""))
    for by in ("by_category", "by_zone"):
        t = Table(title=by.replace("_", " "))
        for c in (by[3:], "items", "confirmed", "suspected", "value"):
            t.add_column(c)
        for k, b in doc[by].items():
            t.add_row(k, str(b["items"]), str(b["confirmed"]), str(b["suspected"]), b["value"])
        console.print(t)
    if publish:
        console.print("published to HQ (reports/shrinkage)")


def _at_cost(tot: dict[str, Any]) -> str:
    """The loss at cost; items whose product has no cost in the catalog are named, not
    valued at 0 (a manager would read a loss at cost 0 as free)."""
    uncosted = int(tot.get("uncosted") or 0)
    if not uncosted:
        return f"at cost {tot.get('cost_value', '?')}"
    missing = f"{uncosted} item(s) without a cost in the catalog"
    if uncosted >= int(tot.get("items") or 0):
        return f"at cost n/a, {missing}"
    return f"at cost {tot.get('cost_value', '?')} + {missing}"


@ops_cli.command("replenishment")
@click.option("--floor-min", default=1, show_default=True, type=int)
@click.option("--csv", "csv_out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def replenishment(ctx: click.Context, floor_min: int, csv_out: Path | None,
                  as_json: bool) -> None:
    """What to bring from the stockroom to the sales floor."""
    client = _client(ctx)
    q = {"floor_min": floor_min}
    if csv_out is not None:
        _write_text(client.call("GET", "/replenishment", query={**q, "format": "csv"})["text"],
                    csv_out)
        return
    res = client.call("GET", "/replenishment", query=q)
    if as_json:
        _echo_json(res)
        return
    t = Table(title="Replenishment")
    for c in ("category", "SKU", "name", "size", "colour", "stockroom", "floor", "bring"):
        t.add_column(c)
    for ln in res["lines"]:
        t.add_row(ln["category"] or "", ln["sku"], ln["name"] or "", ln["size"], ln["colour"],
                  str(ln["stock_qty"]), str(ln["floor_qty"]), str(ln["suggested"]))
    _console().print(t)
    unbooked = res.get("not_on_books") or []
    if unbooked:  # as the count says them; not in the list above
        click.echo(f"{len(unbooked)} piece(s) on the shelves not on the books, check them: "
                   + ", ".join(unbooked[:10]) + (" …" if len(unbooked) > 10 else ""))


@ops_cli.command("audit")
@click.option("--since", default="24h", show_default=True,
              help="Epoch seconds, ISO 8601 with an offset, or an age such as 90m, 24h, 7d.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def audit(ctx: click.Context, since: str, as_json: bool) -> None:
    """Writes made through the API: who, when, from where, what, and the answer."""
    start = _since(since)
    res = _client(ctx).call("GET", "/audit", query={"since": start})
    if as_json:
        _echo_json(res["entries"])
        return
    t = Table(title=f"Audit since {_fmt_time(start)}")
    for c in ("when", "who", "from", "request", "status", "detail"):
        t.add_column(c)
    for e in res["entries"]:
        t.add_row(_fmt_time(e["at"]), f"{e['actor']} ({e['actor_kind']})", e["address"],
                  f"{e['method']} {e['path']}", str(e["status"]), e["detail"][:200])
    _console().print(t)


def _since(value: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    v = value.strip()
    if v[-1:] in units and v[:-1].replace(".", "", 1).isdigit():
        return time.time() - float(v[:-1]) * units[v[-1]]
    from rfidd.ops.api import parse_time
    from rfidd.web.errors import ApiError

    try:
        return parse_time(v, "--since")
    except ApiError as exc:
        raise click.BadParameter(str(exc)) from None


ops_cli.add_command(count_group)
