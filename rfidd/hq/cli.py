"""`rfidd hq`: run the HQ consumer and ask it where an item is and where it has been."""

from __future__ import annotations

import json
import logging
import sys
import threading
from pathlib import Path
from typing import Any

import click

from rfidd.config import EX_CONFIG
from rfidd.hq.config import ConfigError, HqConfig, load_hq_config

log = logging.getLogger("rfidd.hq")

_CBV = ("urn:epcglobal:cbv:bizstep:", "urn:epcglobal:cbv:disp:",
        "https://ref.gs1.org/cbv/BizStep-", "https://ref.gs1.org/cbv/Disp-")


def _load(config_file: Path) -> HqConfig:
    try:
        return load_hq_config(config_file)
    except ConfigError as exc:
        click.echo(f"{config_file}: {len(exc.errors)} error(s)", err=True)
        for e in exc.errors:
            click.echo(f"  {e}", err=True)
        sys.exit(EX_CONFIG)


def _database_url(config_file: Path | None, database_url: str | None) -> str:
    if database_url:
        return database_url
    if config_file is None:
        raise click.UsageError("give -c FILE (the HQ config) or --database-url URL")
    return _load(config_file).database.url


def _short(v: str | None) -> str:
    if not v:
        return ""
    for p in _CBV:
        if v.startswith(p):
            return v[len(p):]
    return v


_db_options = [
    click.option("-c", "--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
                 help="HQ TOML configuration file (for the database URL)."),
    click.option("--database-url", help="SQLAlchemy URL of the HQ database (overrides -c)."),
    click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON output."),
]


def _with_db_options(f: Any) -> Any:
    for opt in reversed(_db_options):
        f = opt(f)
    return f


def _open_engine(url: str) -> Any:
    from rfidd.hq.store import HqDatabaseError, HqStore

    try:
        return HqStore.open(url, migrate=False).engine
    except HqDatabaseError as exc:
        raise click.ClickException(str(exc)) from None


def _epc_or_usage(epc: str) -> str:
    from rfidd.hq.query import EpcInputError, normalize_epc

    try:
        return normalize_epc(epc)
    except EpcInputError as exc:
        raise click.BadParameter(str(exc), param_hint="EPC") from None


@click.group("hq")
def hq_command() -> None:
    """HQ consumer: every site's EPCIS feed into one database; where is an item, its history."""


@hq_command.command("check-config")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--syntax-only", is_flag=True,
              help="Skip opening the files the config names (password, TLS) and the driver.")
def check_config(file: Path, syntax_only: bool) -> None:
    """Validate FILE; print every error with its key path and line (exit 78 when bad).

    Unless --syntax-only, also opens the password and TLS files and loads the database driver,
    as `rfidd hq run` would.
    """
    cfg = _load(file)
    if not syntax_only:
        from rfidd.cli import check_link_files

        problems = check_link_files(cfg.mqtt.site_mqtt_config())
        try:
            from sqlalchemy import make_url

            make_url(cfg.database.url).get_dialect().import_dbapi()
        except ModuleNotFoundError as exc:
            problems.append(f"database.url: driver not installed ({exc}); for PostgreSQL: "
                            "pip install 'rfidd[postgres]'")
        if problems:
            click.echo(f"{file}: {len(problems)} error(s)", err=True)
            for p in problems:
                click.echo(f"  {p}", err=True)
            sys.exit(EX_CONFIG)
    share = (f"shared group {cfg.mqtt.share_group}"
             if cfg.mqtt.protocol == "5" and cfg.mqtt.share_group
             else "plain subscriptions (each instance gets every message)")
    relay = "ASN relay on" if cfg.mqtt.relay_asns else "ASN relay off"
    click.echo(f"{file}: OK — {cfg.mqtt.url} {cfg.mqtt.topic_prefix}/+/..., {share}, {relay}")


@hq_command.command("run")
@click.option("-c", "--config", "config_file", required=True,
              type=click.Path(dir_okay=False, path_type=Path), help="HQ TOML configuration file.")
@click.option("--log-level", default="info", show_default=True)
def run(config_file: Path, log_level: str) -> None:
    """Consume every site's feed until SIGTERM or SIGINT."""
    from rfidd.logs import configure

    configure(log_level)  # structured lines (RFIDD_LOG_FORMAT=kv|json|text)
    cfg = _load(config_file)
    from rfidd.cli import install_signal_handlers
    from rfidd.hq.consumer import HqConsumer, HqConsumerError
    from rfidd.hq.http import build_api
    from rfidd.hq.relay import AsnRelay, RelayError, RelayMetrics
    from rfidd.hq.store import HqDatabaseError, HqStore
    from rfidd.sdnotify import Notifier

    try:
        store = HqStore.open(cfg.database.url)
    except HqDatabaseError as exc:
        log.error("database: %s", exc)
        sys.exit(1)
    consumer = HqConsumer(
        cfg.mqtt, store, batch_max_messages=cfg.database.batch_max_messages,
        batch_max_s=cfg.database.batch_max_ms / 1000,
        reconnect_max_s=cfg.mqtt.reconnect_max_s,
    )
    relay = None
    if cfg.mqtt.relay_asns:
        try:
            # Its metrics go to the consumer's registry: one /metrics for the HQ process.
            relay = AsnRelay.from_config(cfg.mqtt,
                                         metrics=RelayMetrics(consumer.metrics.registry),
                                         reconnect_max_s=cfg.mqtt.reconnect_max_s)
        except RelayError as exc:
            store.dispose()
            log.error("%s", exc)
            sys.exit(1)
    api = None
    if cfg.http.enabled:
        api = build_api(store.engine, consumer.metrics.registry, listen=cfg.http.listen,
                        port=cfg.http.port, consumer=consumer)
    stop = threading.Event()
    install_signal_handlers(stop)
    try:
        consumer.start()
        if relay is not None:
            relay.start()
            log.info("ASN relay: %s -> {destination}/cmd/{asn,shipment}", relay.topic_filter)
        if api is not None:
            api.start()
            log.info("HQ API on http://%s:%d/api/v1/", api.listen, api.port)
        Notifier().ready("consuming" + (", relaying ASNs" if relay is not None else ""))
        stop.wait()
    except HqConsumerError as exc:
        log.error("%s", exc)
        sys.exit(1)
    except OSError as exc:
        log.error("HTTP %s:%d: %s", cfg.http.listen, cfg.http.port, exc)
        sys.exit(1)
    finally:
        if api is not None:
            api.stop()
        if relay is not None:
            relay.stop()
        consumer.stop()
        store.dispose()


@hq_command.command("where")
@click.argument("epc")
@_with_db_options
def where_cmd(epc: str, config_file: Path | None, database_url: str | None,
              as_json: bool) -> None:
    """Where is EPC now: its latest event (by eventTime) across all sites.

    EPC: a pure-identity URI (urn:epc:id:sgtin:...) or a hex EPC (e.g. EPC-96).
    """
    from rfidd.hq import query

    uri = _epc_or_usage(epc)
    last = query.where(_open_engine(_database_url(config_file, database_url)), uri)
    if as_json:
        click.echo(json.dumps({"epc": uri, **last.to_json()} if last else None))
    elif last is None:
        click.echo(f"{uri}: no event at HQ", err=True)
    else:
        from rich.console import Console
        from rich.table import Table

        t = Table(title=uri, show_header=False)
        for k, v in (("site", last.site), ("since", last.event_time.isoformat()),
                     ("bizLocation", last.biz_location or ""),
                     ("disposition", _short(last.disposition)),
                     ("bizStep", _short(last.biz_step)),
                     ("readPoint", last.read_point or ""),
                     ("event", f"{last.type} {last.action or ''}".strip()),
                     ("eventID", last.event_id)):
            t.add_row(k, v)
        Console().print(t)
    if last is None:
        sys.exit(1)


@hq_command.command("history")
@click.argument("epc")
@_with_db_options
def history_cmd(epc: str, config_file: Path | None, database_url: str | None,
                as_json: bool) -> None:
    """EPC's whole history across sites, oldest first (by eventTime)."""
    from rfidd.hq import query

    uri = _epc_or_usage(epc)
    events = query.history(_open_engine(_database_url(config_file, database_url)), uri)
    if as_json:
        click.echo(json.dumps({"epc": uri, "events": [e.to_json() for e in events]}))
    elif not events:
        click.echo(f"{uri}: no event at HQ", err=True)
    else:
        from rich.console import Console
        from rich.table import Table

        t = Table(title=f"{uri} — {len(events)} events")
        for col in ("eventTime (UTC)", "site", "event", "bizStep", "disposition",
                    "bizLocation", "readPoint", "bizTransactions"):
            t.add_column(col)
        for e in events:
            tx = ", ".join(
                f"{_short(str(b.get('type', '')))}:{b.get('bizTransaction', '')}"
                for b in e.biz_transactions or []
            )
            t.add_row(e.event_time.isoformat(timespec="seconds"), e.site,
                      f"{e.type.removesuffix('Event')} {e.action or ''}".strip(),
                      _short(e.biz_step), _short(e.disposition), e.biz_location or "",
                      e.read_point or "", tx)
        Console().print(t)
    if not events:
        sys.exit(1)


@hq_command.command("sites")
@_with_db_options
def sites_cmd(config_file: Path | None, database_url: str | None, as_json: bool) -> None:
    """Every site heard of: its last status (online/offline) and when it was last heard."""
    from rfidd.hq import query

    rows = query.sites(_open_engine(_database_url(config_file, database_url)))
    if as_json:
        click.echo(json.dumps({"sites": [s.to_json() for s in rows]}))
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"{len(rows)} sites")
    for col in ("site", "status", "status since", "last seen"):
        t.add_column(col)
    for s in rows:
        t.add_row(s.site, s.status or "?",
                  s.status_at.isoformat(timespec="seconds") if s.status_at else "",
                  s.last_seen.isoformat(timespec="seconds") if s.last_seen else "")
    Console().print(t)
