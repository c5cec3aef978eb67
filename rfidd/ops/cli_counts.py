"""`rfidd ops count ...`: cycle counts (start, progress, stop, passes, reports) and their
schedules, over the daemon's HTTP API."""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from rfidd.client import EXIT_CODES_HELP, EXIT_REFUSED, ApiClient
from rfidd.ops.cli_common import (
    _client,
    _console,
    _echo_json,
    _fmt_time,
    _list_table,
    _pct,
    _write_text,
)
from rfidd.ops.common import booked_by_takeover, taken_over


@click.group("count", epilog=EXIT_CODES_HELP)
def count_group() -> None:
    """Cycle counts."""


@count_group.command("start")
@click.argument("zones", nargs=-1, required=True)
@click.option("--duration", "duration_s", type=float, default=None,
              help="Stop by itself after this many seconds.")
@click.option("--adopt", is_flag=True, help="Take over what it finds (as `rfidd ops takeover`).")
@click.option("--json", "as_json", is_flag=True, help="Print the daemon's JSON answer.")
@click.pass_context
def count_start(ctx: click.Context, zones: tuple[str, ...], duration_s: float | None,
                adopt: bool, as_json: bool) -> None:
    """Start a count over ZONES."""
    body: dict[str, Any] = {"zones": list(zones), "duration_s": duration_s}
    if adopt:
        body["adopt"] = True
    res = _client(ctx).call("POST", "/counts", body)
    if as_json:
        _echo_json(res)
        return
    click.echo(f"count {res['session_id']} started over {', '.join(res['zones'])}: "
               f"{res['progress']['expected']} items expected")


def _running_count(client: ApiClient) -> str:
    running = [r for r in client.call("GET", "/counts") if r["status"] == "running"]
    if len(running) != 1:
        click.echo("error: give the count id (running: "
                   f"{', '.join(r['session_id'] for r in running) or 'none'})", err=True)
        sys.exit(EXIT_REFUSED)
    return str(running[0]["session_id"])


def _items(n: int) -> str:
    return f"{n:,} item" + ("" if n == 1 else "s")


def _progress_line(res: dict[str, Any]) -> str:
    p = res["progress"]
    zones = " · ".join(f"{z} {v['found']:,}/{v['expected']:,}" for z, v in p["zones"].items())
    taken = taken_over(res)
    if taken is not None:  # a take-over expects nothing: say what it will put on the books
        return (f"take-over: {_items(taken)} found, put on the books when the count closes"
                + (f"; already on the books: {p['found']:,} of {p['expected']:,} found "
                   f"({zones})" if p["expected"] else ""))
    return (f"{p['found']:,} of {p['expected']:,} found ({zones}); misplaced {p['misplaced']}, "
            f"unexpected {p['unexpected']}")


@count_group.command("progress")
@click.argument("count_id", required=False)
@click.option("--watch", "watch_s", type=float, default=None,
              help="Refresh every N seconds until the count stops.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the daemon's JSON answer (with --watch: one compact object a line).")
@click.pass_context
def count_progress(ctx: click.Context, count_id: str | None, watch_s: float | None,
                   as_json: bool) -> None:
    """Live progress: found / expected, per zone."""
    client = _client(ctx)
    cid = count_id or _running_count(client)
    while True:
        res = client.call("GET", f"/counts/{cid}")
        if as_json:
            click.echo(json.dumps(res, ensure_ascii=False, indent=None if watch_s else 2))
            if res["status"] != "running" or watch_s is None:
                return
            time.sleep(watch_s)
            continue
        if res["status"] != "running":
            click.echo(f"count {cid} is {res['status']}")
            return
        click.echo(_progress_line(res))
        if watch_s is None:
            return
        time.sleep(watch_s)


def print_count(doc: dict[str, Any], console: Console) -> None:
    tot, acc = doc["totals"], doc["accuracy"]
    taken, booked = taken_over(doc), booked_by_takeover(doc)
    if taken is not None:  # what it did, not "0 of 0 found"
        console.print(f"Take-over count [bold]{doc['session_id']}[/] over "
                      f"{', '.join(doc['zones'])}: {_items(taken)} put on the books"
                      + (f"; of the {tot['expected']} already there, {tot['found']} found, "
                         f"missing {tot['missing']}, misplaced {tot['misplaced']}"
                         if tot["expected"] else ""))
        console.print("Accuracy: none (a take-over makes the books; the next count checks "
                      "them)")
    else:
        console.print(f"Count [bold]{doc['session_id']}[/] over {', '.join(doc['zones'])}: "
                      f"{tot['found']} of {tot['expected']} found; missing {tot['missing']}, "
                      f"misplaced {tot['misplaced']}, unexpected {tot['unexpected']}")
        console.print(f"Accuracy: items {_pct(acc['item'])}, records (SKU x zone) "
                      f"{_pct(acc['record'])}, aggregate {_pct(acc['aggregate'])} (the "
                      "aggregate hides errors that cancel out)")
    # A take-over's pieces are "unexpected" in the count (the books did not hold them): per
    # zone, those it put on the books are their own column, the rest still unexpected.
    taken_in = Counter(u["zone"] for u in doc["unexpected"] if u["epc"] in booked)
    z = Table(title="Per zone")
    cols = ("expected", "found", "missing", "misplaced_out", "misplaced_in", "unexpected")
    for c in ("zone", *(c.replace("_", " ") for c in cols),
              *(("taken over",) if taken is not None else ())):
        z.add_column(c, justify="left" if c == "zone" else "right")
    for name, t in doc["per_zone"].items():
        figures = {**t, "unexpected": t["unexpected"] - taken_in[name]}
        z.add_row(name, *(str(figures[k]) for k in cols),
                  *((str(taken_in[name]),) if taken is not None else ()))
    console.print(z)
    rows = ([("missing", m, m["booked_zone"], "") for m in doc["missing"]]
            + [("misplaced", m, m["booked_zone"], m["found_zone"]) for m in doc["misplaced"]]
            + [("unexpected", u, u.get("booked_zone") or "", u["zone"])
               for u in doc["unexpected"] if u["epc"] not in booked])  # taken over: booked
    if rows:
        x = Table(title="Items to check")
        for c in ("status", "EPC", "SKU", "name", "booked", "seen in"):
            x.add_column(c)
        for status, it, booked, seen in rows:
            x.add_row(status, it["epc"], it.get("sku") or "", it.get("name") or "", booked, seen)
        console.print(x)
    sh = doc.get("shrinkage") or {}
    if sh.get("newly_suspected"):
        console.print(f"[red]{len(sh['newly_suspected'])} item(s) now suspected lost[/]")


@count_group.command("stop")
@click.argument("count_id", required=False)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def count_stop(ctx: click.Context, count_id: str | None, as_json: bool) -> None:
    """Stop a count (default: the running one) and print its report."""
    client = _client(ctx)
    cid = count_id or _running_count(client)
    doc = client.call("POST", f"/counts/{cid}/stop")
    if as_json:
        _echo_json(doc)
        return
    print_count(doc, _console())
    from rfidd.ops.count_cli import print_books

    print_books(doc)


@count_group.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def count_list(ctx: click.Context, as_json: bool) -> None:
    """Counts, newest first: running ones with their progress, finished ones with totals."""
    def row(r: dict[str, Any]) -> list[str]:
        if r.get("adopt"):  # expected nothing, made the books: its figure is what it booked
            n = r.get("taken_over") or 0
            what = (f"take-over: {n} put on the books" if r["status"] == "finished" else
                    f"take-over: {n} found, to put on the books")
            return [r["session_id"], r["status"], ", ".join(r["zones"]),
                    _fmt_time(r["started_at"]), _fmt_time(r["finished_at"]), "—", what, "—"]
        tot = r.get("totals") or {}
        found = tot.get("found", (r.get("progress") or {}).get("found", ""))
        return [r["session_id"], r["status"], ", ".join(r["zones"]),
                _fmt_time(r["started_at"]), _fmt_time(r["finished_at"]), str(r["expected"]),
                str(found), _pct(r["record_accuracy"]) if r["status"] == "finished" else ""]

    _list_table(ctx, "/counts", as_json, "Counts",
                ("count", "status", "zones", "started", "finished", "expected", "found",
                 "record accuracy"), row)


@count_group.command("report")
@click.argument("count_id")
@click.option("--csv", "csv_out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the exceptions as CSV to this file ('-' for stdout).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def count_report(ctx: click.Context, count_id: str, csv_out: Path | None, as_json: bool) -> None:
    """The report of a finished count."""
    client = _client(ctx)
    if csv_out is not None:
        _write_text(client.call("GET", f"/counts/{count_id}", query={"format": "csv"})["text"],
                    csv_out)
        return
    res = client.call("GET", f"/counts/{count_id}")
    if res.get("report") is None:
        # on stderr, exit 1: a script reading the report (--json) gets none, not some text
        click.echo(f"error: count {count_id} is {res['status']}: no report yet (see `rfidd "
                   f"ops count progress {count_id}`)", err=True)
        sys.exit(EXIT_REFUSED)
    if as_json:
        _echo_json(res["report"])
        return
    print_count(res["report"], _console())


@count_group.group("schedule", epilog=EXIT_CODES_HELP)
def schedule_group() -> None:
    """Scheduled counts (crontab expressions in the site's time zone)."""


@schedule_group.command("add")
@click.argument("cron")
@click.argument("zones", nargs=-1, required=True)
@click.option("--duration", "duration_s", type=float, default=None)
@click.option("--grace", "misfire_grace_s", type=float, default=None,
              help="Seconds after its time a missed count still runs (daemon down); default "
              "[schedules] misfire_grace_s, one hour.")
@click.pass_context
def schedule_add(ctx: click.Context, cron: str, zones: tuple[str, ...],
                 duration_s: float | None, misfire_grace_s: float | None) -> None:
    """Count ZONES on CRON (crontab, site time zone), e.g. every Monday at 7:00:
    rfidd ops count schedule add '0 7 * * 1' stockroom floor --duration 900"""
    res = _client(ctx).call("POST", "/count-schedules",
                            {"cron": cron, "zones": list(zones), "duration_s": duration_s,
                             "misfire_grace_s": misfire_grace_s})
    click.echo(f"schedule {res['id']}: {res['cron']} over {', '.join(res['zones'])} for "
               f"{res['duration_s']:g} s, next run {res.get('next_run') or '-'}")


@schedule_group.command("list")
@click.option("--all", "show_all", is_flag=True,
              help="Also the housekeeping jobs (retention, nightly shrinkage report).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def schedule_list(ctx: click.Context, show_all: bool, as_json: bool) -> None:
    """Count schedules with their next and last run (site time zone).

    --json: an array of objects, with --all too (the housekeeping jobs after the counts), each
    saying its `kind` (count, housekeeping) and `state` (scheduled: it has a next run;
    unscheduled: none, e.g. the daemon's scheduler is not running)."""
    client = _client(ctx)
    rows = [_scheduled("count", r) for r in client.call("GET", "/count-schedules")]
    if show_all:
        rows += [_scheduled("housekeeping", j) for j in client.call("GET", "/schedules")
                 if not str(j["job"]).startswith("count-")]
    if as_json:
        _echo_json(rows)
        return
    for r in rows:
        when = f"next run {r.get('next_run') or '-'}, last run {r.get('last_run') or '-'}"
        if r["kind"] == "count":
            click.echo(f"{r['id']}: {r['cron']} over {', '.join(r['zones'])} for "
                       f"{r['duration_s']:g} s, {when}")
        else:
            click.echo(f"{r['job']}: {r['cron']} ({r['what']}), {when}")


def _scheduled(kind: str, r: dict[str, Any]) -> dict[str, Any]:
    return {**r, "kind": kind, "state": "scheduled" if r.get("next_run") else "unscheduled"}


@schedule_group.command("delete")
@click.argument("schedule_id", type=int)
@click.pass_context
def schedule_delete(ctx: click.Context, schedule_id: int) -> None:
    """Delete schedule SCHEDULE_ID (see `schedule list`); counts it started are kept."""
    _client(ctx).call("POST", f"/count-schedules/{schedule_id}/delete")
    click.echo(f"schedule {schedule_id} deleted")


# -- shrinkage and replenishment ----------------------------------------------------------------
