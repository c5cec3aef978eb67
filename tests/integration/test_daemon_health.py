"""Ops signals of the daemon: reader state metrics, reconnect counts, reader-down alerts."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from rfidd.app import Daemon, Timings
from rfidd.demo import demo_config
from rfidd.store.models import OutboxMessage
from simulator import Scenario, SimulatedSite

pytestmark = pytest.mark.integration
SCENARIO = Path(__file__).resolve().parents[2] / "simulator" / "scenarios" / "demo-store.toml"


def _wait(pred: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            pytest.fail("condition not reached in time")
        time.sleep(0.1)


def _metric(daemon: Daemon, name: str, **labels: str) -> float | None:
    value = daemon.metrics.registry.get_sample_value(name, labels)
    return value


def test_unreachable_reader_raises_one_alert_and_good_readers_keep_working(
    sqlite_url: str,
) -> None:
    scenario = Scenario.load(SCENARIO)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    with SimulatedSite(scenario, run_timeline=False, only=["floor-1"]) as site:
        ports = {"floor-1": site.ports["floor-1"], "stockroom-1": dead_port,
                 "backdoor-1": dead_port}
        cfg = demo_config(scenario, ports, sqlite_url, None)
        daemon = Daemon(cfg, timings=Timings(supervisor_s=0.1, reader_down_alert_s=0.5))
        daemon.start()
        loop = threading.Thread(target=daemon.run_until_stopped)  # the supervisor loop
        loop.start()
        try:
            _wait(lambda: _metric(daemon, "rfidd_reader_up", reader="floor-1") == 1.0)
            assert daemon.db is not None

            def alerts() -> list[dict[str, object]]:
                assert daemon.db is not None
                with daemon.db.session() as s:
                    rows = s.query(OutboxMessage).filter(OutboxMessage.topic == "alerts").all()
                    return [json.loads(r.payload) for r in rows]

            _wait(lambda: {a["reader"] for a in alerts()} == {"stockroom-1", "backdoor-1"})
            time.sleep(1.0)  # more supervisor ticks: still one alert per reader
            assert sorted(str(a["reader"]) for a in alerts()) == ["backdoor-1", "stockroom-1"]
            assert all(a["type"] == "reader_down" for a in alerts())
            assert _metric(daemon, "rfidd_reader_up", reader="stockroom-1") == 0.0
            assert _metric(daemon, "rfidd_alerts_total", kind="reader_down") == 2.0
            floor_items = sum(1 for i in scenario.items() if i.zone == "floor")
            _wait(lambda: daemon.ctx is not None
                  and daemon.ctx.tracker.zone_counts().get("floor") == floor_items)
        finally:
            daemon.stop()
            loop.join(5)


def test_reader_drop_is_counted_as_a_reconnect_and_reads_resume(sqlite_url: str) -> None:
    scenario = Scenario.load(SCENARIO)
    with SimulatedSite(scenario, run_timeline=False, only=["floor-1"]) as site:
        cfg = demo_config(scenario, {"floor-1": site.ports["floor-1"], "stockroom-1": 1,
                                     "backdoor-1": 1}, sqlite_url, None)
        cfg = cfg.model_copy(update={"readers": {"floor-1": cfg.readers["floor-1"]}})
        daemon = Daemon(cfg, timings=Timings(supervisor_s=0.1))
        daemon.start()
        try:
            _wait(lambda: _metric(daemon, "rfidd_reader_up", reader="floor-1") == 1.0)
            before = _metric(daemon, "rfidd_reads_total", reader="floor-1", antenna="1") or 0
            site.readers["floor-1"].drop_connection()
            _wait(lambda: (_metric(daemon, "rfidd_reader_reconnects_total",
                                   reader="floor-1") or 0) >= 1)
            _wait(lambda: (_metric(daemon, "rfidd_reads_total", reader="floor-1",
                                   antenna="1") or 0) > before + 50)
            text = generate_latest(daemon.metrics.registry).decode()
            assert 'rfidd_reader_last_report_age_seconds{reader="floor-1"}' in text
        finally:
            daemon.stop()


def test_outbox_backlog_raises_one_alert(sqlite_url: str) -> None:
    """HQ unreachable for long: the outbox grows past mqtt.outbox_alert_rows -> one alert."""
    scenario = Scenario.load(SCENARIO)
    with SimulatedSite(scenario, run_timeline=False, only=["floor-1"]) as site:
        cfg = demo_config(scenario, {"floor-1": site.ports["floor-1"], "stockroom-1": 1,
                                     "backdoor-1": 1}, sqlite_url, None)
        cfg = cfg.model_copy(update={
            "readers": {"floor-1": cfg.readers["floor-1"]},
            "mqtt": cfg.mqtt.model_copy(update={"outbox_alert_rows": 50}),
        })
        daemon = Daemon(cfg, timings=Timings(supervisor_s=0.1, outbox_stats_s=0.2))
        daemon.start()
        loop = threading.Thread(target=daemon.run_until_stopped)
        loop.start()
        try:
            assert daemon.db is not None

            def backlog_alerts() -> list[dict[str, object]]:
                assert daemon.db is not None
                with daemon.db.session() as s:
                    rows = s.query(OutboxMessage).filter(OutboxMessage.topic == "alerts").all()
                    return [a for a in (json.loads(r.payload) for r in rows)
                            if a["type"] == "outbox_backlog"]

            _wait(lambda: len(backlog_alerts()) == 1)
            time.sleep(0.5)
            alerts = backlog_alerts()
            assert len(alerts) == 1 and int(str(alerts[0]["rows"])) >= 50
            assert _metric(daemon, "rfidd_outbox_depth") is not None
        finally:
            daemon.stop()
            loop.join(5)
