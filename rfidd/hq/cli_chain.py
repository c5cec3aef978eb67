"""`rfidd hq stock|alerts|reports|catalog`: the chain-wide views and the catalog push."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from rfidd.hq.cli import _database_url, _load, _open_engine, _with_db_options, hq_command


@hq_command.command("stock")
@click.option("--site", help="Only this store.")
@click.option("--sku", help="Only this SKU (exact).")
@click.option("--size", help="Only this size (e.g. 38).")
@click.option("--colour", help="Only this colour.")
@click.option("--search", "text", help="Words in the product name or SKU.")
@_with_db_options
def stock_cmd(site: str | None, sku: str | None, size: str | None, colour: str | None,
              text: str | None, config_file: Path | None, database_url: str | None,
              as_json: bool) -> None:
    """Stock per store by SKU, size and colour, with product names ("where can this client
    find this bag in size 38?")."""
    from rfidd.hq import chain

    rows = chain.stock(_open_engine(_database_url(config_file, database_url)), site=site,
                       sku=sku, size=size, colour=colour, text=text)
    if as_json:
        click.echo(json.dumps({"stock": [r.to_json() for r in rows]}, ensure_ascii=False))
        return
    from rich.table import Table

    from rfidd.console import table_console

    t = Table(title=f"{sum(r.count for r in rows)} items in stock")
    for col in ("SKU", "product", "size", "colour", "store", "in stock"):
        t.add_column(col)
    for r in rows:
        t.add_row(r.sku or r.gtin, r.name or "(not in the HQ catalog)", r.size or "",
                  r.colour or "", r.site_name or r.site, str(r.count))
    table_console().print(t)


@hq_command.command("alerts")
@click.option("--site", help="Only this store.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@_with_db_options
def alerts_cmd(site: str | None, limit: int, config_file: Path | None,
               database_url: str | None, as_json: bool) -> None:
    """The latest alerts per store (exit of unsold items, readers down, sequence gaps...)."""
    from rfidd.hq import chain

    rows = chain.site_messages(_open_engine(_database_url(config_file, database_url)),
                               "alert", site=site, limit=limit)
    if as_json:
        click.echo(json.dumps({"alerts": rows}, ensure_ascii=False))
        return
    for r in rows:
        p = r["payload"]
        kind = p.get("type") or p.get("kind") if isinstance(p, dict) else None
        click.echo(_message_line(r, kind or ""))


@hq_command.command("reports")
@_with_db_options
def reports_cmd(config_file: Path | None, database_url: str | None, as_json: bool) -> None:
    """The latest reception, count and shrinkage report of each store."""
    from rfidd.hq import chain

    rows = chain.latest_reports(_open_engine(_database_url(config_file, database_url)))
    if as_json:
        click.echo(json.dumps({"reports": rows}, ensure_ascii=False))
        return
    for r in rows:
        click.echo(_message_line(r, r["kind"]))


def _message_line(r: dict[str, Any], kind: str) -> str:
    """One alert or report for people: when HQ got it (UTC), the store, its kind and its
    fields as "name value" pairs, the site's epoch instants as times (--json: as sent)."""
    from rfidd.hq.humane import pairs, when_text

    fields = "; ".join(f"{k} {v}" if k else v for k, v in pairs(r["payload"]))
    return (f"{when_text(r['received_at'] or '')}  {r['site_name'] or r['site']}  {kind}  "
            f"{fields}")


@hq_command.group("catalog")
def catalog_group() -> None:
    """The chain's catalog (master data): kept at HQ, published to the stores."""


@catalog_group.command("publish")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-c", "--config", "config_file", required=True,
              type=click.Path(dir_okay=False, path_type=Path), help="HQ TOML configuration file.")
@click.option("--site", "sites", multiple=True,
              help="Only this registered store (repeatable); default: every registered site.")
def catalog_publish(file: Path, config_file: Path, sites: tuple[str, ...]) -> None:
    """Publish FILE (the catalog CSV or JSON: gtin,sku,name,size,colour,category,price,
    currency) to the stores on cmd/catalog, and keep it at HQ for the chain views."""
    from inventory.catalog import parse_catalog_csv, parse_catalog_json
    from rfidd.hq import chain
    from rfidd.hq.backfill import BackfillError, check_sites, publish_commands
    from rfidd.hq.store import HqDatabaseError, HqStore

    cfg = _load(config_file)
    text = file.read_bytes()
    result = (parse_catalog_json(text, str(file)) if file.suffix.lower() == ".json"
              else parse_catalog_csv(text.decode("utf-8-sig"), str(file)))
    errors = [e for e in result.errors if "ignored" not in e.message]
    if errors:
        for e in errors[:20]:
            click.echo(f"  {e.source}:{e.line or ''} {e.field or ''}: {e.message}", err=True)
        raise click.ClickException(f"{file}: {len(errors)} error(s); nothing published")
    try:
        store = HqStore.open(cfg.database.url)
    except HqDatabaseError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        try:
            targets = check_sites(store.engine, sites)
            msgs = chain.catalog_messages(cfg.mqtt.topic_prefix, targets, result.products)
            publish_commands(cfg.mqtt, msgs)
        except BackfillError as exc:
            raise click.ClickException(str(exc).replace("a replay", "the catalog")) from None
        chain.save_catalog(store.engine, result.products, datetime.now(UTC))
    finally:
        store.dispose()
    click.echo(f"published {len(result.products)} products to {', '.join(targets)} "
               f"({len(msgs)} message(s))")


@hq_command.command("bench")
@click.option("--database-url", required=True,
              help="SQLAlchemy URL of a SCRATCH HQ database (bench sites and events are added).")
@click.option("--events", type=click.IntRange(1000), default=200_000, show_default=True)
@click.option("--sites", type=click.IntRange(1, 1000), default=10, show_default=True)
@click.option("--queries", type=click.IntRange(10), default=200, show_default=True,
              help="Runs of each standard query (for p50/p99).")
@click.option("--replay-events", type=click.IntRange(1000), default=20_000, show_default=True)
@click.option("--real-events", type=click.IntRange(1), default=None,
              help="Of --events, how many go through HQ's batch writer (timed); the rest are "
              "COPYed first by the bench's loader. Default: all on SQLite, 200,000 on "
              "PostgreSQL.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of lines.")
def bench_cmd(database_url: str, events: int, sites: int, queries: int,
              replay_events: int, real_events: int | None, as_json: bool) -> None:
    """Events/s stored, p50/p99 of the standard EPCIS queries, backfill rate."""
    from rfidd.hq import bench
    from rfidd.hq.store import HqDatabaseError, HqStore

    try:
        store = HqStore.open(database_url)
    except HqDatabaseError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        result = bench.run(store, events, sites, queries=queries, replay_events=replay_events,
                           real=real_events, progress=lambda s: click.echo(s, err=True))
    finally:
        store.dispose()
    if as_json:
        import json

        click.echo(json.dumps(result.to_json()))
        return
    for line in result.lines():
        click.echo(line)
