"""`rfidd ops takeover`, `rfidd ops count pass` and `rfidd ops count recount`: go-live and
handheld counts, on the `rfidd ops` group (cli.py registers them)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from rfidd.ops.cli import ops_cli
from rfidd.ops.cli_common import _client, _console, _echo_json
from rfidd.ops.cli_counts import _progress_line, _running_count, count_group, print_count


def print_books(doc: dict[str, Any]) -> None:
    """What the count did to the books, and its sections (holds, pick-ups, returns...)."""
    books = doc.get("books") or {}
    if books:
        click.echo(f"Books: {len(books.get('taken_over', []))} taken over, "
                   f"{len(books.get('moved', []))} booked where found, "
                   f"{len(books.get('recovered', []))} recovered, "
                   f"{len(books.get('not_on_books', []))} not on the books "
                   "(rfidd ops takeover adopts them)")
    for name, sec in (doc.get("sections") or {}).items():
        click.echo(f"{name}: {len(sec['found'])} found, {len(sec['not_seen'])} not seen"
                   + (f" ({', '.join(e['epc'] for e in sec['not_seen'])})"
                      if sec["not_seen"] else ""))


@ops_cli.command("takeover")
@click.argument("zones", nargs=-1, required=True)
@click.option("--seconds", type=float, default=None,
              help="Count for this long, then stop and print the report (default: leave it "
              "running; stop it with `rfidd ops count stop`).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def takeover(ctx: click.Context, zones: tuple[str, ...], seconds: float | None,
             as_json: bool) -> None:
    """Go-live: count ZONES and put every item found that rfidd never received on the books
    at its zone (EPCIS cycle_counting, sellable)."""
    client = _client(ctx)
    res = client.call("POST", "/counts", {"zones": list(zones), "adopt": True})
    cid = res["session_id"]
    if seconds is None:
        if as_json:  # the count just started, as `count start --json` answers
            _echo_json(res)
            return
        click.echo(f"take-over count {cid} started over {', '.join(res['zones'])}; "
                   f"stop it with `rfidd ops count stop {cid}`")
        return
    deadline = time.monotonic() + seconds
    last = None
    while time.monotonic() < deadline:
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
        if not as_json:
            line = _progress_line(client.call("GET", f"/counts/{cid}"))
            if line != last:  # the same line every second is noise in a log or a pipe
                click.echo(line)
            last = line
    doc = client.call("POST", f"/counts/{cid}/stop")
    if as_json:
        _echo_json(doc)
        return
    print_count(doc, _console())
    print_books(doc)


@count_group.command("pass")
@click.argument("zone")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--count", "count_id", help="The count (default: the running one).")
@click.option("--device", help="Handheld id.")
@click.option("--operator", help="Who walked the zone.")
@click.pass_context
def count_pass(ctx: click.Context, zone: str, file: Path, count_id: str | None,
               device: str | None, operator: str | None) -> None:
    """Merge a handheld pass over ZONE into a count: FILE lists the EPCs read (one per line,
    hex or SGTIN URI, or a JSON list)."""
    client = _client(ctx)
    cid = count_id or _running_count(client)
    text = file.read_text(encoding="utf-8")
    epcs = json.loads(text) if text.lstrip().startswith("[") else [
        ln.strip() for ln in text.splitlines() if ln.strip()]
    res = client.call("POST", f"/counts/{cid}/passes", {
        "zone": zone, "epcs": epcs, "device": device, "operator": operator})
    click.echo(f"pass over {zone}: {res['pass']['read']} read, {res['pass']['new']} new; "
               + _progress_line(res))


@count_group.command("recount")
@click.argument("count_id")
@click.option("--duration", "duration_s", type=float, default=None,
              help="Stop by itself after this many seconds.")
@click.pass_context
def count_recount(ctx: click.Context, count_id: str, duration_s: float | None) -> None:
    """Recount only the exceptions (missing, misplaced, unexpected) of finished COUNT_ID."""
    res = _client(ctx).call("POST", f"/counts/{count_id}/recount", {"duration_s": duration_s})
    click.echo(f"recount {res['session_id']} of {count_id} started over "
               f"{', '.join(res['zones'])}: {res['progress']['expected']} exception(s) to check")
