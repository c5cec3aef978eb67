"""What the `rfidd ops` subcommands share: the API client of the command line, output helpers."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from rfidd.cli_time import fmt_time, local_zone, site_zone
from rfidd.client import ApiClient
from rfidd.console import table_console

DEFAULT_API = "http://127.0.0.1:9750"
PREFIX = "/api/v1/ops"
TIMEOUT_S = 120.0  # a count stop or a big import takes a while on a store PC
PARTIAL = (422,)


def _client(ctx: click.Context) -> ApiClient:
    client = ctx.find_object(ApiClient)
    assert client is not None, "ops_cli sets the client"
    return client


def _console() -> Console:
    return table_console()


def _fmt_time(t: float | None) -> str:
    """In the site's zone with its offset (rfidd.cli_time), asked of the command's daemon."""
    ctx = click.get_current_context(silent=True)
    client = ctx.find_object(ApiClient) if ctx is not None else None
    return fmt_time(t, site_zone(client.base) if client is not None else local_zone())


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{v * 100:.1f}%"


def _read_file(path: Path, fmt: str | None) -> tuple[str, str]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise click.BadParameter(f"{path}: cannot read: {exc}") from exc
    fmt = fmt or ("json" if path.suffix.lower() == ".json" else "csv")
    return text, fmt


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


def _write_text(text: str, out: Path) -> None:
    if str(out) == "-":
        click.echo(text, nl=False)
    else:
        out.write_text(text, encoding="utf-8")
        click.echo(f"wrote {out}")


def _list_table(ctx: click.Context, path: str, as_json: bool, title: str,
                columns: Sequence[str], row: Callable[[dict[str, Any]], Sequence[str]]) -> None:
    """A `... list` command: GET `path`; the objects as JSON, or a table of one row each."""
    rows = _client(ctx).call("GET", path)
    if as_json:
        _echo_json(rows)
        return
    t = Table(title=title)
    for col in columns:
        t.add_column(col)
    for r in rows:
        t.add_row(*row(r))
    _console().print(t)
