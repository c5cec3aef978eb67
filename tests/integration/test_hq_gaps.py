"""Zero loss when the broker loses what it acknowledged, and backfill of a fresh HQ.

Real site daemons (in-process, real outbox, real EPCIS serializer, real cmd/replay), a private
Mosquitto with persistence that the test SIGKILLs before its autosave, the real HQ consumer on
PostgreSQL, the real gap repairer and `rfidd hq backfill`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
from click.testing import CliRunner
from prometheus_client import CollectorRegistry
from sqlalchemy import func, select
from waits import wait_until

from inventory.epc import sgtin96_hex
from inventory.events import Action, ItemEvent, stable_event_id
from readers.base import ReaderState
from rfidd.app import Daemon, Timings
from rfidd.config import Config
from rfidd.hq import hq_command
from rfidd.hq.config import parse_hq_config
from rfidd.hq.consumer import HqConsumer
from rfidd.hq.gaps import GapRepairer, site_sequences
from rfidd.hq.registry import register_site
from rfidd.hq.store import HqStore, hq_events
from rfidd.intake import IngestQueue
from rfidd.store import repo

pytestmark = pytest.mark.integration

DATA = Path(__file__).resolve().parents[1] / "data"
GTIN = "00614141123452"


class IdleReader:
    """A reader that reads nothing: these tests journal events through the services' path."""

    def __init__(self, name: str, _q: IngestQueue) -> None:
        self.name = name

    def start(self) -> None:
        pass

    def stop(self, timeout: float = 5.0) -> None:
        pass

    @property
    def state(self) -> ReaderState:
        return ReaderState.ONLINE


def site_daemon(site: str, n_store: int, prefix: str, broker: Any, tmp: Path,
                seq_head_s: float = 30.0) -> Daemon:
    cfg = Config.model_validate({
        "site": {"id": site, "name": site, "kind": "store",
                 "sgln": f"urn:epc:id:sgln:0614141.{n_store:05d}.0", "timezone": "Europe/Paris"},
        "database": {"url": f"sqlite:///{tmp / f'{site}.db'}", "batch_max_ms": 20},
        "mqtt": {"url": f"mqtt://{broker.host}:{broker.port}", "topic_prefix": prefix,
                 "reconnect_max_s": 1, "client_id": f"{site}-{uuid.uuid4().hex[:6]}"},
        "http": {"enabled": False},
        "zones": {"stock": {"kind": "stock"}},
        "readers": {"r1": {"kind": "llrp", "address": "127.0.0.1", "antennas": {"1": "stock"}}},
    })
    d = Daemon(cfg, timings=Timings(sweep_s=0.5, seq_head_s=seq_head_s),
               reader_factory=lambda name, _rc, q: IdleReader(name, q),  # type: ignore[arg-type,return-value]
               ops_settings=None, with_lifecycle=False)
    d.start()
    return d


def journal(d: Daemon, site: str, n: int, start: int = 0, per_batch: int = 250) -> None:
    """n stocking events through the services' path (journal + outbox, one transaction)."""
    assert d.ctx is not None
    sgln = d.config.site.sgln
    for lo in range(start, start + n, per_batch):
        evs = [ItemEvent(
            event_id=stable_event_id("gap-test", site, i), event_time=1_790_000_000.0 + i,
            action=Action.OBSERVE, epcs=(sgtin96_hex(GTIN, 10_000 + i, 7),),
            biz_step="storing", disposition="sellable_not_accessible",
            read_point=sgln.removesuffix(".0") + ".stock", biz_location=sgln, zone="stock",
        ) for i in range(lo, min(start + n, lo + per_batch))]
        d.ctx.emit(events=evs)


def outbox_empty(d: Daemon) -> bool:
    assert d.db is not None
    with d.db.session() as s:
        return repo.outbox_stats(s)[0] == 0


def hq_config(prefix: str, broker: Any, db_url: str, tag: str) -> str:
    return (f'[database]\nurl = "{db_url}"\nbatch_max_ms = 20\n'
            f'[mqtt]\nurl = "mqtt://{broker.host}:{broker.port}"\ntopic_prefix = "{prefix}"\n'
            f'client_id = "hq-{tag}"\nsession_expiry_s = 300\nrelay_asns = false\n'
            'share_group = ""\n[epcis]\nport = 0\n')


def held(store: HqStore, site: str) -> tuple[int, int, int]:
    """(rows, distinct eventIDs, distinct seqs) HQ holds of `site`."""
    e = hq_events
    with store.engine.connect() as c:
        row = c.execute(select(func.count(), func.count(func.distinct(e.c.event_id)),
                               func.count(func.distinct(e.c.seq))).where(e.c.site == site)).one()
    return int(row[0]), int(row[1]), int(row[2])


@pytest.fixture
def hq_store(postgres_url: str) -> Iterator[HqStore]:
    s = HqStore.open(postgres_url, known_sites_only=True)
    yield s
    s.dispose()


def test_broker_killed_with_acknowledged_messages_loses_nothing_after_gap_repair(
        private_mosquitto: Any, hq_store: HqStore, postgres_url: str, tmp_path: Path) -> None:
    broker = private_mosquitto.broker
    tag = uuid.uuid4().hex[:8]
    prefix = f"gap-{tag}/rfidd/v1"
    cfg = parse_hq_config(hq_config(prefix, broker, postgres_url, tag))
    from datetime import UTC, datetime
    register_site(hq_store.engine, "st", "Store", datetime.now(UTC))

    # HQ has subscribed once (its session queues for it), then goes offline.
    first = HqConsumer(cfg.mqtt, hq_store, batch_max_s=0.02, reconnect_max_s=1)
    first.start()
    assert first.wait_subscribed(10)
    first.stop()

    site = site_daemon("st", 2, prefix, broker, tmp_path)
    try:
        assert site.hq is not None and site.hq.wait_connected(10)
        journal(site, "st", 3000)
        wait_until(lambda: outbox_empty(site), "the site's 3,000 events PUBACKed", 60)
        private_mosquitto.kill()  # before its autosave: the queued 3,000 are gone
        private_mosquitto.start()
        wait_until(lambda: site.hq is not None and site.hq.connected, "the site reconnected", 20)

        registry = CollectorRegistry()
        hq = HqConsumer(cfg.mqtt, hq_store, batch_max_s=0.02, reconnect_max_s=1)
        hq.start()
        try:
            assert hq.wait_subscribed(10)
            # The site's retained head arrives on subscribing: HQ knows what it lacks.
            wait_until(lambda: site_sequences(hq_store.engine, ["st"])[0].published_through
                       == 3000, "the site's sequence head at HQ", 20)
            seq = site_sequences(hq_store.engine, ["st"])[0]
            assert held(hq_store, "st") == (0, 0, 0), "the broker kept what it acknowledged?"
            assert seq.gaps == ((1, 3000),) and seq.missing == 3000

            repairer = GapRepairer(hq_store.engine, hq.publish, prefix, registry,
                                   registered_only=True, check_interval_s=0.1, grace_s=0.2,
                                   retry_s=2.0, alert_s=3600)
            repairer.start()
            try:
                wait_until(lambda: held(hq_store, "st")[0] >= 3000,
                           "every event back at HQ", 90)
                wait_until(lambda: site_sequences(hq_store.engine, ["st"])[0].gap_since is None,
                           "the repairer seeing no gap left", 20)
            finally:
                repairer.stop()
        finally:
            hq.stop()
        assert held(hq_store, "st") == (3000, 3000, 3000)  # every event exactly once
        seq = site_sequences(hq_store.engine, ["st"])[0]
        assert seq.contiguous == 3000 and seq.gap_since is None
        assert (registry.get_sample_value("rfidd_hq_replay_requests_total") or 0) >= 1
        with hq_store.engine.connect() as c:
            seqs = sorted(c.execute(select(hq_events.c.seq)
                                    .where(hq_events.c.site == "st")).scalars())
        assert seqs == list(range(1, 3001))
    finally:
        site.stop()


def test_published_events_carry_their_sequence_and_validate(
        private_mosquitto: Any, mqtt_collector: Any, tmp_path: Path) -> None:
    broker = private_mosquitto.broker
    prefix = f"seq-{uuid.uuid4().hex[:8]}/rfidd/v1"
    col = mqtt_collector(broker, f"{prefix}/st/#")
    site = site_daemon("st", 2, prefix, broker, tmp_path, seq_head_s=0.05)
    try:
        assert site.hq is not None and site.hq.wait_connected(10)
        journal(site, "st", 5)
        wait_until(lambda: outbox_empty(site), "published")
        wait_until(lambda: any(json.loads(m.payload).get("published_through") == 5
                               for m in col.on(f"{prefix}/st/seq")),
                   "the head announcing 5")
    finally:
        site.stop()
    schema = json.loads((DATA / "EPCIS-JSON-Schema.json").read_text())
    events = []
    for m in col.on(f"{prefix}/st/epcis"):
        doc = json.loads(m.payload)
        jsonschema.validate(doc, schema)
        events += doc["epcisBody"]["eventList"]
    assert [e["rfidd:seq"] for e in events] == [1, 2, 3, 4, 5]


def test_fresh_hq_catches_up_two_sites_by_backfill_exactly_once(
        private_mosquitto: Any, postgres_url: str, tmp_path: Path) -> None:
    broker = private_mosquitto.broker
    tag = uuid.uuid4().hex[:8]
    prefix = f"bf-{tag}/rfidd/v1"
    # Two sites run before any HQ exists: nobody subscribed, the broker keeps nothing.
    a = site_daemon("st-a", 3, prefix, broker, tmp_path)
    b = site_daemon("st-b", 4, prefix, broker, tmp_path)
    try:
        for d, name, n in ((a, "st-a", 700), (b, "st-b", 450)):
            assert d.hq is not None and d.hq.wait_connected(10)
            journal(d, name, n)
        wait_until(lambda: outbox_empty(a) and outbox_empty(b), "both sites published", 60)

        conf = tmp_path / "hq.toml"
        conf.write_text(hq_config(prefix, broker, postgres_url, tag))
        runner = CliRunner()
        for site, name in (("st-a", "Paris"), ("st-b", "Lyon")):
            r = runner.invoke(hq_command, ["site", "add", site, "--name", name, "-c", str(conf)])
            assert r.exit_code == 0, r.output

        refused = runner.invoke(hq_command, ["backfill", "-c", str(conf), "--from-seq", "1",
                                             "--site", "st-x", "--no-wait"])
        assert refused.exit_code != 0
        assert "'st-x' is not registered at HQ" in refused.output
        assert "rfidd hq site add" in refused.output

        store = HqStore.open(postgres_url, known_sites_only=True)
        hq = HqConsumer(parse_hq_config(conf.read_text()).mqtt, store, batch_max_s=0.02)
        hq.start()
        try:
            assert hq.wait_subscribed(10)
            assert held(store, "st-a")[0] == 0 and held(store, "st-b")[0] == 0
            r = runner.invoke(hq_command, ["backfill", "-c", str(conf), "--from-seq", "1",
                                           "--timeout", "90"])
            assert r.exit_code == 0, r.output
            assert "st-a: 700 of 700 events" in r.output
            assert "st-b: 450 of 450 events" in r.output
            assert "done: HQ holds all 1,150 replayed events" in r.output
            wait_until(lambda: held(store, "st-a")[0] == 700 and held(store, "st-b")[0] == 450,
                       "every row stored")
            # Asked again (an operator's second try, by time this time): still exactly once.
            r = runner.invoke(hq_command, ["backfill", "-c", str(conf), "--since",
                                           "2000-01-01", "--site", "st-b", "--timeout", "90"])
            assert r.exit_code == 0, r.output
            assert "st-b: 450 of 450 events" in r.output
        finally:
            hq.stop()
        assert held(store, "st-a") == (700, 700, 700)
        assert held(store, "st-b") == (450, 450, 450)
        r = runner.invoke(hq_command, ["sites", "--database-url", postgres_url, "--json"])
        sites = {s["site"]: s for s in json.loads(r.output)["sites"]}
        assert sites["st-a"]["name"] == "Paris" and sites["st-a"]["contiguous_seq"] == 700
        assert sites["st-b"]["gaps"] == [] and sites["st-b"]["missing"] == 0
        store.dispose()
    finally:
        a.stop()
        b.stop()


def test_two_hq_run_in_one_shared_group_one_killed_every_event_once(
        private_mosquitto: Any, postgres_url: str, tmp_path: Path) -> None:
    """Two `rfidd hq run` share the feed (MQTT 5 shared group); one is SIGKILLed mid-stream
    and never comes back: what the broker had queued for it (until its session expires) is
    asked again by the survivor's gap repair, so HQ still ends with every event, once."""
    import os
    import signal
    import subprocess
    import sys

    broker = private_mosquitto.broker
    tag = uuid.uuid4().hex[:8]
    prefix = f"grp-{tag}/rfidd/v1"
    root = Path(__file__).resolve().parents[2]
    procs = []
    logs = []
    for name in ("a", "b"):
        conf = tmp_path / f"hq-{name}.toml"
        conf.write_text(
            hq_config(prefix, broker, postgres_url, f"{tag}-{name}")
            .replace('share_group = ""', f'share_group = "g{tag}"')
            # The member that dies: its session (and its queued share) expires soon after.
            .replace("session_expiry_s = 300", "session_expiry_s = 300" if name == "b"
                     else "session_expiry_s = 2")
            + "[sites]\ngap_check_interval_s = 0.2\ngap_grace_s = 1\nreplay_retry_s = 1\n")
        if name == "a":
            r = CliRunner().invoke(hq_command, ["site", "add", "st", "-c", str(conf)])
            assert r.exit_code == 0, r.output
        log = tmp_path / f"hq-{name}.log"
        logs.append(log)
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "rfidd.cli", "hq", "run", "-c", str(conf)], cwd=root,
            env={**os.environ, "PYTHONPATH": str(root)}, stderr=log.open("wb")))
    store = HqStore.open(postgres_url)
    site = site_daemon("st", 2, prefix, broker, tmp_path, seq_head_s=0.2)
    try:
        try:
            wait_until(lambda: all(b"connected to" in log.read_bytes() for log in logs),
                       "both HQ connected", 60)
        except AssertionError as exc:
            raise AssertionError(f"{exc}: exit codes {[p.poll() for p in procs]}; logs: "
                                 + " | ".join(log.read_text()[-800:] for log in logs)) from None
        assert site.hq is not None and site.hq.wait_connected(10)
        journal(site, "st", 1000, per_batch=20)
        wait_until(lambda: held(store, "st")[0] >= 200, "the feed flowing", 30)
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait(10)
        journal(site, "st", 1000, start=1000, per_batch=20)
        try:
            wait_until(lambda: held(store, "st")[0] >= 2000, "every event at HQ", 120)
        except AssertionError as exc:
            seq = site_sequences(store.engine, ["st"])[0]
            raise AssertionError(f"{exc}: held {held(store, 'st')}, {seq}; survivor's log: "
                                 f"{logs[1].read_text()[-1500:]}") from None
        wait_until(lambda: not site_sequences(store.engine, ["st"])[0].gaps, "no gap", 30)
        assert held(store, "st") == (2000, 2000, 2000)
    finally:
        site.stop()
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
        store.dispose()
    assert procs[1].returncode == 0, logs[1].read_text()[-3000:]
    # Mosquitto keeps queueing the dead member's share in its session: the survivor's gap
    # repair is what brought those events back.
    assert "asked st to replay" in logs[1].read_text()
