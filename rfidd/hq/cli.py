"""`rfidd hq`: run the HQ consumer and ask it where an item is and where it has been."""

from __future__ import annotations

import json
import logging
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from rfidd.config import EX_CONFIG
from rfidd.hq.config import ConfigError, HqConfig, load_hq_config
from rfidd.hq.humane import when as _when

log = logging.getLogger("rfidd.hq")

_CBV = ("urn:epcglobal:cbv:bizstep:", "urn:epcglobal:cbv:disp:",
        "https://ref.gs1.org/cbv/BizStep-", "https://ref.gs1.org/cbv/Disp-")


def _load(config_file: Path) -> HqConfig:
    try:
        return load_hq_config(config_file)
    except ConfigError as exc:
        from rfidd.hq.config import config_kind

        if config_kind(config_file) == "site":
            click.echo(f"{config_file}: this is a site daemon's configuration ([site], "
                       f"[zones]...); check it with: rfidd check-config {config_file}",
                       err=True)
            sys.exit(EX_CONFIG)
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
    from rfidd.hq.schema_check import HqSchemaError, open_checked

    try:
        return open_checked(url)
    except HqSchemaError as exc:  # one line and sysexits' code, not a query's traceback
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)


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
        if cfg.mqtt.relay_asns and cfg.mqtt.relay_signing_key_file is not None:
            from rfidd.hq.signing import SigningKeyError, load_signing_key

            try:
                load_signing_key(cfg.mqtt.relay_signing_key_file)
            except SigningKeyError as exc:
                problems.append(str(exc))
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
    relay = "ASN relay off"
    if cfg.mqtt.relay_asns:
        signed = cfg.mqtt.relay_signing_key_file is not None
        relay = f"ASN relay on ({'signed' if signed else 'unsigned'})"
        if not signed:
            click.echo(f"{file}: warning: mqtt.relay_signing_key_file is not set: sites with "
                       "mqtt.require_signed_commands will refuse relayed shipments (make a key "
                       "with `rfidd hq keygen`)", err=True)
    e = cfg.epcis
    web = (f"web (EPCIS, /api/v1, /chain, /metrics) on http{'s' if e.tls_cert_file else ''}://"
           f"{e.listen}:{e.port}" if e.enabled else "web interface off")
    click.echo(f"{file}: OK — {cfg.mqtt.url} {cfg.mqtt.topic_prefix}/+/..., {share}, {relay}, "
               f"{web}")


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
    from rfidd.hq.app import HqDaemon, HqStartError
    from rfidd.sdnotify import Notifier

    hq = HqDaemon(cfg)
    stop = threading.Event()
    install_signal_handlers(stop)
    try:
        hq.start()
        Notifier().ready("consuming" + (", relaying ASNs" if hq.relay is not None else ""))
        stop.wait()
    except HqStartError as exc:
        log.error("%s", exc)
        sys.exit(1)
    finally:
        hq.stop()


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
        from rich.table import Table

        from rfidd.console import table_console

        t = Table(title=uri, show_header=False)
        for k, v in (("site", last.site), ("since", _when(last.event_time)),
                     ("bizLocation", last.biz_location or ""),
                     ("disposition", _short(last.disposition)),
                     ("bizStep", _short(last.biz_step)),
                     ("readPoint", last.read_point or ""),
                     ("event", f"{last.type} {last.action or ''}".strip()),
                     ("eventID", last.event_id)):
            t.add_row(k, v)
        table_console().print(t)
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
        from rich.table import Table

        from rfidd.console import table_console

        t = Table(title=f"{uri} — {len(events)} events")
        for col in ("eventTime", "site", "event", "bizStep", "disposition",
                    "bizLocation", "readPoint", "bizTransactions"):
            t.add_column(col)
        for e in events:
            tx = ", ".join(
                f"{_short(str(b.get('type', '')))}:{b.get('bizTransaction', '')}"
                for b in e.biz_transactions or []
            )
            t.add_row(_when(e.event_time), e.site,
                      f"{e.type.removesuffix('Event')} {e.action or ''}".strip(),
                      _short(e.biz_step), _short(e.disposition), e.biz_location or "",
                      e.read_point or "", tx)
        table_console().print(t)
    if not events:
        sys.exit(1)


@hq_command.command("sites")
@_with_db_options
@click.option("--registered", "registered_only", is_flag=True,
              help="Only the registered sites (not those merely heard of, e.g. stale test "
              "sites retained on a shared broker).")
def sites_cmd(config_file: Path | None, database_url: str | None, as_json: bool,
              registered_only: bool) -> None:
    """Every site registered or heard of (registered first): status, last sequence number,
    gaps, dropped messages. `rfidd hq site forget SITE` drops one from the list.

    "last seq" is what the site says it has sent; "held" is how far HQ has every event; the
    gaps are the missing ranges HQ asks the site to replay (rfidd hq run does it by itself).
    """
    from rfidd.hq import query

    rows = query.sites(_open_engine(_database_url(config_file, database_url)),
                       registered_only=registered_only)
    if as_json:
        click.echo(json.dumps({"sites": [s.to_json() for s in rows]}))
        return
    from rich.table import Table

    from rfidd.console import table_console

    heard = sum(1 for s in rows if s.registered_at is None)
    t = Table(title=f"{len(rows)} sites" + (f" ({heard} heard of, not registered)"
                                            if heard else ""))
    for col in ("site", "name", "registered", "status", "last seen", "last seq", "held",
                "gaps", "dropped"):
        t.add_column(col)
    for s in rows:
        q = s.sequence
        gaps = ""
        if q is not None and q.gaps:
            shown = ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in q.gaps[:3])
            more = f" +{len(q.gaps) - 3} more" if len(q.gaps) > 3 else ""
            since = f" since {_when(q.gap_since)}" if q.gap_since else ""
            gaps = f"{q.missing} missing: {shown}{more}{since}"
        t.add_row(s.site, s.name or "", "yes" if s.registered_at else "NO",
                  s.status or "?",
                  _when(s.last_seen),
                  "" if q is None or q.published_through is None else str(q.published_through),
                  "" if q is None else str(q.contiguous), gaps or "none",
                  str(s.rejected) if s.rejected else "")
    table_console().print(t)


@hq_command.group("site")
def site_group() -> None:
    """The site registry: HQ stores only what registered sites publish."""


@site_group.command("add")
@click.argument("site")
@click.option("--name", help="The site's name, shown in the chain-wide views.")
@click.option("-c", "--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
              help="HQ TOML configuration file (for the database URL).")
@click.option("--database-url", help="SQLAlchemy URL of the HQ database (overrides -c).")
def site_add(site: str, name: str | None, config_file: Path | None,
             database_url: str | None) -> None:
    """Register SITE (its id in the topics, e.g. st-01), or rename it."""
    import re

    from rfidd.hq.registry import register_site
    from rfidd.hq.store import HqDatabaseError, HqStore

    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$", site):
        raise click.BadParameter("a site id is 1-64 of A-Z a-z 0-9 _ - (as in its topics)",
                                 param_hint="SITE")
    try:
        store = HqStore.open(_database_url(config_file, database_url))
    except HqDatabaseError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        new = register_site(store.engine, site, name, datetime.now(UTC))
    finally:
        store.dispose()
    click.echo(f"{site}: {'registered' if new else 'already registered'}"
               + (f" as {name!r}" if name else ""))


@site_group.command("forget")
@click.argument("site")
@click.option("--registered-too", is_flag=True,
              help="Also forget a registered site (unregisters it).")
@click.option("-c", "--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
              help="HQ TOML configuration file (for the database URL).")
@click.option("--database-url", help="SQLAlchemy URL of the HQ database (overrides -c).")
def site_forget(site: str, registered_too: bool, config_file: Path | None,
                database_url: str | None) -> None:
    """Forget SITE: drop it from the sites list (its stored events stay). It comes back if it
    publishes again, or if the broker still retains its status: clear that with
    `mosquitto_pub -r -n -t rfidd/v1/SITE/status` (and .../seq)."""
    from rfidd.hq.registry import ForgetError, forget_site

    try:
        was = forget_site(_open_engine(_database_url(config_file, database_url)), site,
                          registered_too=registered_too)
    except ForgetError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{site}: forgotten" + (" (was registered)" if was else ""))


def _since_option(value: str | None) -> Any:
    if value is None:
        return None
    from inventory.isotime import IsoTimeError, parse_iso_datetime

    try:
        return parse_iso_datetime(value, "--since", naive_as=UTC)
    except IsoTimeError as exc:
        raise click.BadParameter(exc.problem, param_hint="--since") from None


@hq_command.command("backfill")
@click.option("-c", "--config", "config_file", required=True,
              type=click.Path(dir_okay=False, path_type=Path), help="HQ TOML configuration file.")
@click.option("--since", help="Replay what sites journaled since this ISO 8601 date(-time) "
              "(UTC unless it says otherwise).")
@click.option("--from-seq", type=click.IntRange(min=1),
              help="Replay from this sequence number (1: everything).")
@click.option("--site", "sites", multiple=True, help="Only this registered site (repeatable); "
              "default: every registered site.")
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="Follow the progress until HQ holds every replayed event.")
@click.option("--timeout", type=float, default=3600.0, show_default=True,
              help="Give up following after this many seconds (exit 75).")
@click.option("--json", "as_json", is_flag=True, help="Progress as JSON lines.")
def backfill_cmd(config_file: Path, since: str | None, from_seq: int | None,
                 sites: tuple[str, ...], wait: bool, timeout: float, as_json: bool) -> None:
    """Ask sites to replay their journal so this HQ catches up (needs `rfidd hq run`)."""
    import time

    from rfidd.hq import backfill as bf
    from rfidd.hq.store import HqDatabaseError, HqStore

    if (since is None) == (from_seq is None):
        raise click.UsageError("give exactly one of --since TIME or --from-seq N")
    cfg = _load(config_file)
    try:
        store = HqStore.open(cfg.database.url)
    except HqDatabaseError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        try:
            targets = bf.check_sites(store.engine, sites)
            rid = bf.new_request_id()
            bf.publish_requests(cfg.mqtt, targets,
                                bf.request_body(_since_option(since), from_seq, rid))
        except bf.BackfillError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"asked {len(targets)} site(s) to replay ({rid}): {', '.join(targets)}",
                   err=True)
        if not wait:
            return
        deadline = time.monotonic() + timeout
        last: list[str] = []
        while True:
            prog = bf.progress(store.engine, targets, rid)
            lines = [f"{p.site}: {p.held:,} of {p.total:,} events" if p.announced
                     else f"{p.site}: waiting for the site to answer" for p in prog]
            if lines != last:
                if as_json:
                    click.echo(json.dumps({"request_id": rid,
                                           "sites": [p.to_json() for p in prog]}))
                else:
                    click.echo("; ".join(lines))
                last = lines
            if all(p.done for p in prog):
                total = sum(p.total for p in prog)
                click.echo(f"done: HQ holds all {total:,} replayed events", err=True)
                return
            if time.monotonic() >= deadline:
                left = [p.site for p in prog if not p.done]
                click.echo(f"timed out; not complete: {', '.join(left)} (rerun to continue)",
                           err=True)
                sys.exit(75)
            time.sleep(1.0)
    finally:
        store.dispose()


@hq_command.group("token")
def token_group() -> None:
    """Integrator tokens of the EPCIS interface (scope read, capture or admin; stored hashed)."""


@token_group.command("add")
@click.argument("name")
@click.option("--scope", type=click.Choice(["read", "capture", "admin"]), required=True,
              help="read: queries; capture: POST /capture; admin: HQ's administration "
              "(DELETE /api/v1/sites/SITE).")
@click.option("-c", "--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
              help="HQ TOML configuration file (for the database URL).")
@click.option("--database-url", help="SQLAlchemy URL of the HQ database (overrides -c).")
def token_add(name: str, scope: str, config_file: Path | None,
              database_url: str | None) -> None:
    """Create NAME's token and print it once (only its hash is kept)."""
    from rfidd.hq import tokens
    from rfidd.hq.store import HqDatabaseError, HqStore

    try:
        store = HqStore.open(_database_url(config_file, database_url))
    except HqDatabaseError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        token = tokens.create(store.engine, name, scope, datetime.now(UTC))
    except tokens.TokenError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        store.dispose()
    click.echo(f"token of {name} (scope {scope}); shown once, keep it in a secret store:",
               err=True)
    click.echo(token)


@token_group.command("revoke")
@click.argument("name")
@click.option("-c", "--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
              help="HQ TOML configuration file (for the database URL).")
@click.option("--database-url", help="SQLAlchemy URL of the HQ database (overrides -c).")
def token_revoke(name: str, config_file: Path | None, database_url: str | None) -> None:
    """Revoke NAME's token."""
    from rfidd.hq import tokens
    from rfidd.hq.store import HqDatabaseError, HqStore

    try:
        store = HqStore.open(_database_url(config_file, database_url))
    except HqDatabaseError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        if not tokens.revoke(store.engine, name):
            raise click.ClickException(f"no token named {name!r}")
    finally:
        store.dispose()
    click.echo(f"{name}: revoked")
