"""`rfidd demo`: a simulated boutique, end to end, on the embedded defaults.

Simulated LLRP readers on loopback ports, the real sllurp client, the real daemon on a temporary
SQLite database, and optionally a real MQTT broker. What it prints comes from the daemon's
database and metrics, next to the simulator's ground truth so a newcomer can compare.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from sqlalchemy import func, select

from inventory.asn import Asn
from inventory.catalog import parse_catalog_records
from rfidd import logs
from rfidd.app import Daemon, Timings
from rfidd.config import Config
from rfidd.console import table_console
from rfidd.ops import OpsError
from rfidd.store.models import Event, OutboxMessage, ZonePresence

DEMO_SITE = {
    "id": "demo-boutique",
    "name": "Maison Aurore — demo boutique",
    "kind": "store",
    "sgln": "urn:epc:id:sgln:3760001.00001.0",
    "timezone": "Europe/Paris",
    "company_prefixes": ["3760001"],
}

DEMO_LOGIN = "demo"
DEMO_PIN = "2468"  # a demo account on a temporary users file, gone with the demo


@dataclass
class DemoResult:
    """What a demo run did: the exit code, and the ground truth tests compare HQ's feed with."""

    exit_code: int
    presented_epcs: set[str] = field(default_factory=set)  # every EPC hex any field held
    located: dict[str, int] = field(default_factory=dict)
    queued: int = 0
    sent: int = 0
    alerts: list[dict[str, Any]] = field(default_factory=list)
    reception: dict[str, Any] | None = None
    taken_over: int = 0  # items the installation-day take-over put on the books


def default_scenario() -> Path:
    import simulator

    return Path(simulator.__file__).parent / "scenarios" / "demo-store.toml"


def demo_config(scenario: Any, ports: dict[str, int], db_url: str, mqtt_url: str | None,
                mqtt_protocol: str = "5", site_id: str | None = None,
                serial_paths: dict[str, str] | None = None,
                http: dict[str, Any] | None = None) -> Config:
    """The daemon config for a simulated site: one reader per simulated LLRP reader, and one
    per simulated serial desk reader whose device path is given."""
    zones = {name: {"kind": z.kind} for name, z in scenario.zones.items()}
    readers = {
        name: {
            "kind": "llrp",
            "address": "127.0.0.1",
            "antennas": {str(a): zone for a, zone in spec.antenna_zones().items()},
            "llrp": {"port": ports[name], "report_every_n_tags": 50,
                     "report_timeout_ms": 200, "keepalive_s": 2.0},
        }
        for name, spec in scenario.readers.items()
    }
    for name, spec in getattr(scenario, "serial_readers", {}).items():
        if serial_paths and name in serial_paths:
            readers[name] = {
                "kind": "serial", "address": serial_paths[name],
                "antennas": {str(spec.antenna): spec.zone},
                "serial": {"protocol": spec.protocol, "poll_interval_ms": 50},
            }
    site = site_id or DEMO_SITE["id"]
    # Unique per run: two demos on one broker with one id would keep kicking each other off.
    client_id = f"rfidd-demo-{site}-{uuid.uuid4().hex[:8]}"
    return Config.model_validate({
        "site": {**DEMO_SITE, "id": site},
        "database": {"url": db_url, "batch_max_ms": 200},
        "mqtt": {"enabled": mqtt_url is not None, "url": mqtt_url or "mqtt://127.0.0.1:1883",
                 "protocol": mqtt_protocol, "client_id": client_id},
        "http": http or {"enabled": False},
        "presence": {"departure_s": 4.0, "move_margin_db": 3.0, "move_margin_decay_s": 2.0},
        "zones": zones,
        "readers": readers,
    })


def run_demo(*, seconds: float | None = None, mqtt_url: str | None = None, mqtt_protocol: str = "5",
             scenario_path: Path | None = None, keep_db: Path | None = None,
             console: Console | None = None, site_id: str | None = None,
             http_port: int | None = None) -> DemoResult:
    from simulator import Scenario, SimulatedSite

    console = console or table_console()  # piped: no line cut, no id wrapped
    scenario = Scenario.load(scenario_path or default_scenario())
    if seconds is None:  # long enough for the whole story the scenario tells
        seconds = max(12.0, max((a.t for a in scenario.timeline), default=0.0) + 3.0)
    tmp = tempfile.TemporaryDirectory(prefix="rfidd-demo-")
    db_path = keep_db or Path(tmp.name) / "rfidd.db"
    presented = {i.epc_hex for i in scenario.items()}
    console.print(f"[bold]rfidd demo[/] — scenario [cyan]{scenario.name}[/]: "
                  f"{len(scenario.readers)} simulated LLRP readers"
                  + (f" and {len(scenario.serial_readers)} serial desk reader(s)"
                     if getattr(scenario, "serial_readers", None) else "")
                  + f", {len(scenario.items())} "
                  f"tagged items, database {db_path}"
                  + ("" if keep_db else " (temporary: --keep-db PATH keeps it)")
                  + (f", publishing to {mqtt_url}" if mqtt_url else ""))
    http = None
    if http_port is not None:  # the staff page, with a demo account
        from rfidd.config_http import Role
        from rfidd.web.auth import add_user

        users = Path(tmp.name) / "users.json"
        add_user(users, DEMO_LOGIN, [Role.STAFF, Role.MANAGER], DEMO_PIN)
        # The CLI's token: the daemon's default (/run/rfidd, the service's RuntimeDirectory)
        # is not writable for a demo run by a user; the demo keeps it in its own directory.
        token_file = os.environ.get("RFIDD_TOKEN_FILE") or str(Path(tmp.name) / "cli-token")
        http = {"port": _free_or_any(http_port),
                "auth": {"users_file": str(users), "cli_token_file": token_file}}
    with SimulatedSite(scenario) as site:
        cfg = demo_config(scenario, site.ports, f"sqlite:///{db_path}", mqtt_url, mqtt_protocol,
                          site_id, site.serial_paths, http)
        daemon = Daemon(cfg, timings=Timings(supervisor_s=0.5, sweep_s=1.0, outbox_stats_s=1.0))
        try:
            daemon.start()
            assert daemon.db is not None
            if daemon.ops is not None:  # the catalog names the products in reports
                daemon.ops.catalog.import_catalog(
                    parse_catalog_records(scenario.catalog_rows(), "catalog"))
            taken = take_over(daemon)
            taken_over = 0
            if taken is not None:
                books = taken.get("books") or {}
                taken_over = len(books.get("taken_over", []))
                console.print(
                    f"Installation day: the stock already on the shelves was taken over as a "
                    f"manager does on going live ([bold]rfidd ops takeover "
                    f"{' '.join(taken['zones'])}[/]): {taken_over} items "
                    f"put on the books where they were found; counts now expect them.")
            if daemon.api is not None:
                port = daemon.api.port
                console.print(f"Staff page: [bold]http://127.0.0.1:{port}/[/] — sign "
                              f"in as [bold]{DEMO_LOGIN}[/], PIN [bold]{DEMO_PIN}[/]")
                console.print("CLI, in another terminal while the demo runs: [bold]export "
                              f"RFIDD_TOKEN_FILE={cfg.http.auth.cli_token_file} "
                              f"RFIDD_API=http://127.0.0.1:{port}[/]; then e.g. "
                              "[bold]rfidd ops count start floor[/] (or start a count on "
                              "the page)", soft_wrap=True)  # one line: copied as is
            _run_with_progress(console, daemon, site, seconds, scenario)
            site.hold(True)
            reception = _close_reception(daemon)
        finally:
            daemon.stop()
        for applied in site.applied:
            presented.update(i.epc_hex for i in applied.items)
        result = _summary(console, cfg, daemon, site, mqtt_url, db_path)
        if reception is not None:
            _print_reception(console, reception,
                             daemon.ops.catalog.catalog if daemon.ops is not None else {})
        result.reception = reception
        result.taken_over = taken_over
        result.presented_epcs = presented
        tmp.cleanup()
        return result


def take_over(daemon: Daemon, timeout_s: float = 30.0,
              settle_s: float = 1.5) -> dict[str, Any] | None:
    """Installation day, as a manager does it: once the readers have located the stock on the
    shelves (stock and floor zones), a take-over count puts every item found on the books at
    its zone (`rfidd ops takeover`), so later counts expect what is really there instead of
    "0 of 0". Returns the count's report (None without store operations)."""
    if daemon.ops is None or daemon.ingestor is None or daemon.lifecycle is None:
        return None
    from rfidd.config import ZoneKind

    zones = sorted(z for z, zc in daemon.config.zones.items()
                   if zc.kind in (ZoneKind.STOCK, ZoneKind.FLOOR))
    if not zones:
        return None
    ingestor = daemon.ingestor

    def settled(value: Any) -> int:
        """`value()` once it stopped rising for `settle_s` (or at the timeout)."""
        deadline = time.monotonic() + timeout_s
        last, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            n = int(value())
            if n != last:
                last, since = n, time.monotonic()
            elif n > 0 and time.monotonic() - since >= settle_s:
                break
            time.sleep(0.2)
        return last

    def online() -> int:  # stock read before every reader is up would be settled too early
        acts = daemon.queue.activity.values() if daemon.queue is not None else ()
        if sum(1 for a in acts if a.state.value == "online") < len(daemon.readers):
            return 0
        return sum(ingestor.zone_counts.get(z, 0) for z in zones)

    located = settled(online)
    counting = daemon.ops.counting
    cid = counting.start_count(zones, trigger="takeover", adopt=True)["session_id"]

    def seen() -> int:
        p = counting.count(cid)["progress"]
        return int(p["found"] + p["unexpected"])

    deadline = time.monotonic() + timeout_s
    while seen() < located and time.monotonic() < deadline:
        time.sleep(0.2)
    return counting.stop_count(cid)


def _free_or_any(port: int) -> int:
    """`port` if nothing listens there (another rfidd may), else 0: any free port."""
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return 0
    return port


def _zone_counts(daemon: Daemon) -> dict[str, int]:
    assert daemon.db is not None
    with daemon.db.session() as s:
        rows = s.execute(select(ZonePresence.zone, func.count()).group_by(ZonePresence.zone))
        return {z: n for z, n in rows}


def _send_asn(daemon: Daemon, shipment: Any, scenario: Any) -> None:
    """HQ's shipping notice for the shipment, with two planted discrepancies each way:
    two shipped items left off the notice (unexpected) and two listed that never came
    (missing) — what the reception report must find."""
    if daemon.ops is None:
        return
    shipped = sorted(i.epc_hex for i in shipment.items)
    never_came = [i.epc_hex for i in scenario.new_items("reception", 2)]
    asn = Asn(asn_id=f"DESADV-{int(time.time())}", origin="maison-aurore-warehouse",
              destination=daemon.config.site.id, shipped_at=datetime.now(UTC),
              epcs=tuple(sorted(shipped[2:] + never_came)), quantities=())
    daemon.ops.reception.import_asns([asn], "demo")


def _close_reception(daemon: Daemon) -> dict[str, Any] | None:
    if daemon.ops is None:
        return None
    try:
        return daemon.ops.reception.close_reception()
    except OpsError:  # no reception was opened (no shipment in the scenario's timeline)
        return None


def _print_reception(console: Console, doc: dict[str, Any], products: Any) -> None:
    """The report, each product named as the page names it (name · size · colour: two
    colours of one bag are two lines of the same name otherwise)."""
    t = doc["totals"]
    table = Table(title=f"Reception against {', '.join(doc['asn_ids'])}: {t['received']} "
                        f"received, {t['missing']} missing, {t['unexpected']} unexpected")
    nums = ("expected", "received", "over", "short", "unexpected")
    for col in ("GTIN", "product", *nums):
        table.add_column(col, justify="right" if col in nums else "left")
    for line in doc["lines"]:
        p = products.get(line["gtin"])
        name = " · ".join(x for x in (line.get("name") or "?", getattr(p, "size", ""),
                                      getattr(p, "colour", "")) if x)
        table.add_row(line["gtin"], name, *(str(line[c]) for c in nums))
    console.print(table)
    for kind in ("missing", "unexpected"):
        for it in doc[kind]:
            console.print(f"  {kind}: {it['epc']} (GTIN {it.get('gtin') or '?'})")


def _run_with_progress(console: Console, daemon: Daemon, site: Any, seconds: float,
                       scenario: Any) -> None:
    with demo_progress(console) as progress, logs.redirected(
            lambda s: progress.console.print(s, end="", markup=False, highlight=False)):
        task = progress.add_task("starting readers", total=seconds)
        handled: list[Any] = []
        t0 = time.monotonic()
        while (elapsed := time.monotonic() - t0) < seconds:
            time.sleep(0.25)
            daemon.tick()
            for applied in site.applied[len(handled):]:
                handled.append(applied)
                if applied.action.action == "shipment":
                    _send_asn(daemon, applied, scenario)
            st = daemon.ingestor.stats if daemon.ingestor else None
            counts = _zone_counts(daemon)
            online = sum(1 for a in (daemon.queue.activity.values() if daemon.queue else ())
                         if a.state.value == "online")
            desc = progress_text(online, len(daemon.readers), st.reads if st else 0, counts,
                                 console.width - PROGRESS_RESERVED)
            progress.update(task, completed=min(elapsed, seconds), description=desc)


BAR_WIDTH = 20
PROGRESS_RESERVED = BAR_WIDTH + len("-:--:--") + 2  # the bar, the time left, column gaps


def demo_progress(console: Console) -> Progress:
    """The run's one progress line: the text, a fixed-width bar, the time left."""
    return Progress(TextColumn("{task.description}", markup=False),
                    BarColumn(bar_width=BAR_WIDTH), TimeRemainingColumn(),
                    console=console, transient=False)


def progress_text(online: int, readers: int, reads: int, zones: dict[str, int],
                  width: int) -> str:
    """What the demo is seeing, in `width` characters: an 80-column terminal cut the full
    sentence mid-figure and squeezed out the bar and the time left, so shorter wordings are
    tried in turn (the last without the per-zone figures, which the summary gives); only a
    terminal too narrow even for that loses the end."""
    per_zone = sorted(zones.items())
    variants = [
        f"{online}/{readers} readers online · {reads:,} reads · "
        + " ".join(f"{z} {n}" for z, n in per_zone),
        f"{online}/{readers} online · {reads:,} reads · "
        + " ".join(f"{z} {n}" for z, n in per_zone),
        f"{online}/{readers} online · {reads:,} reads · {sum(zones.values()):,} located",
    ]
    for text in variants:
        if len(text) <= width:
            return text
    return variants[-1][:max(width - 1, 0)] + "…" if width > 0 else ""


def _summary(console: Console, cfg: Config, daemon: Daemon, site: Any, mqtt_url: str | None,
             db_path: Path) -> DemoResult:
    from rfidd.store.db import open_database

    db = open_database(f"sqlite:///{db_path}")
    try:
        with db.session() as s:
            seen = dict(s.execute(
                select(ZonePresence.zone, func.count()).group_by(ZonePresence.zone)).all())
            steps = Counter({(k or "observe"): n for k, n in s.execute(
                select(Event.biz_step, func.count()).group_by(Event.biz_step)).all()})
            alerts = [json.loads(p) for p in s.scalars(
                select(OutboxMessage.payload).where(OutboxMessage.topic == "alerts"))]
            queued = s.scalar(select(func.count()).select_from(OutboxMessage)) or 0
            sent = s.scalar(select(func.count()).select_from(OutboxMessage)
                            .where(OutboxMessage.sent_at.is_not(None))) or 0
    finally:
        db.dispose()
    truth = Counter(z for z in (site.world.zone_of(i.epc_hex) for i in site.world.items()) if z)

    table = Table(title=f"What rfidd saw — {cfg.site.name}")
    table.add_column("zone")
    table.add_column("kind")
    table.add_column("items in the field (simulator)", justify="right")
    table.add_column("items located by rfidd", justify="right")
    for zone, zc in cfg.zones.items():
        table.add_row(zone, str(zc.kind), str(truth.get(zone, 0)), str(seen.get(zone, 0)))
    console.print(table)

    ev = Table(title="EPCIS events")
    ev.add_column("business step")
    ev.add_column("events", justify="right")
    for step, n in sorted(steps.items()):
        ev.add_row(step, str(n))
    ev.add_row("[bold]queued in the outbox[/]", f"[bold]{queued}[/]")
    if mqtt_url:
        ev.add_row(f"[bold]acknowledged by {mqtt_url}[/]", f"[bold]{sent}[/]")
    console.print(ev)
    st = daemon.ingestor.stats if daemon.ingestor else None
    if st is not None:
        rejected = ", ".join(f"{k} {v}" for k, v in st.rejected.items()) or "none"
        console.print(f"{st.reads:,} tag reads ingested in {st.commits} transactions; "
                      f"rejected EPCs: {rejected}")
    for applied in site.applied:
        act = applied.action
        console.print(f"  t={applied.at_s:4.1f}s simulator: {act.action} of "
                      f"{len(applied.items)} item(s)"
                      + (f" {act.from_zone}→{act.to}" if act.action == "move" else "")
                      + (f" at {act.zone}" if act.zone else ""))
    for a in alerts:
        detail = a.get("epc") or a.get("reader") or ""
        console.print(f"[bold red]alert[/] {a.get('type')}: {detail} "
                      f"{('at ' + a['zone']) if a.get('zone') else ''}")
    code = 0
    if queued == 0:
        console.print("[red]no events were produced: check the readers' log lines above[/]")
        code = 1
    elif mqtt_url and sent < queued:
        console.print(f"[yellow]{queued - sent} event(s) not acknowledged by {mqtt_url}: "
                      "they stay in the outbox and would be sent on the next start[/]")
        code = 2
    return DemoResult(code, located=seen, queued=queued, sent=sent, alerts=alerts)
