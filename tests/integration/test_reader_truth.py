"""The daemon tells the truth about its readers: online means inventorying.

A simulated store reader that leaves its ROSpec Enabled until START_ROSPEC (issue 11), one
whose radio never starts, and one whose field goes quiet, each through the whole daemon.
"""

from __future__ import annotations

import json
import tempfile
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from waits import wait_until

from rfidd.app import Daemon, Timings
from rfidd.config import Config
from rfidd.demo import demo_config
from rfidd.store.models import OutboxMessage
from simulator import Scenario, SimulatedSite

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]
SCENARIO = Path(__file__).resolve().parents[2] / "simulator" / "scenarios" / "demo-store.toml"


class Store:
    def __init__(self, db_url: str, quirks: list[str], silent_after_s: float = 1800.0,
                 refuse_start: bool = False) -> None:
        self.scenario = Scenario.load(SCENARIO)
        self.site = SimulatedSite(self.scenario, run_timeline=False, only=["floor-1"],
                                  quirks=quirks)
        self.sim = self.site.readers["floor-1"]
        self.sim.refuse_start = refuse_start
        self.site.start()
        cfg = demo_config(self.scenario, {"floor-1": self.site.ports["floor-1"]} | {
            n: 1 for n in self.scenario.readers if n != "floor-1"}, db_url, None)
        data = cfg.model_dump(mode="python")
        self.token_file = Path(tempfile.mkdtemp(prefix="rfidd-truth-")) / "cli-token"
        data["http"] = {"enabled": True, "port": 0,
                        "auth": {"cli_token_file": str(self.token_file)}}
        for name, reader in data["readers"].items():
            reader["enabled"] = name == "floor-1"
        data["readers"]["floor-1"]["silent_after_s"] = silent_after_s
        data["readers"]["floor-1"]["llrp"].update(keepalive_s=0.3, verify_s=0.5)
        self.daemon = Daemon(Config.model_validate(data),
                             timings=Timings(supervisor_s=0.1, reader_down_alert_s=0.6))
        self.daemon.start()
        self.loop = threading.Thread(target=self.daemon.run_until_stopped)
        self.loop.start()

    def metric(self, name: str, **labels: str) -> float | None:
        value: float | None = self.daemon.metrics.registry.get_sample_value(name, labels)
        return value

    def alerts(self, kind: str) -> list[dict[str, Any]]:
        assert self.daemon.db is not None
        with self.daemon.db.session() as s:
            rows = s.query(OutboxMessage).filter(OutboxMessage.topic == "alerts").all()
            return [a for a in (json.loads(r.payload) for r in rows) if a["type"] == kind]

    def api(self, path: str) -> Any:
        assert self.daemon.api is not None
        token = self.token_file.read_text(encoding="utf-8").strip()  # every route needs one
        req = urllib.request.Request(f"http://127.0.0.1:{self.daemon.api.port}{path}",
                                     headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read())

    def close(self) -> None:
        self.daemon.stop()
        self.loop.join(5)
        self.site.stop()


@pytest.fixture
def store(sqlite_url: str) -> Iterator[Any]:
    made: list[Store] = []

    def make(**kw: Any) -> Store:
        s = Store(sqlite_url, **kw)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


def test_rfidd_reads_every_tag_within_seconds_of_connecting(store: Any) -> None:
    s = store(quirks=["needs-start-rospec"])
    floor = sum(1 for i in s.scenario.items() if i.zone == "floor")
    assert s.daemon.ctx is not None
    wait_until(lambda: s.daemon.ctx.tracker.zone_counts().get("floor") == floor,
               "every floor item present", timeout=8)
    assert s.metric("rfidd_reader_up", reader="floor-1") == 1.0
    assert s.metric("rfidd_reader_state", reader="floor-1", state="online") == 1.0
    assert s.metric("rfidd_reader_anomalies_total", reader="floor-1",
                    kind="rospec_not_started") == 1.0
    row = s.api("/api/v1/readers")["readers"]["floor-1"]
    assert row["state"] == "online" and row["vendor"] == "generic"
    assert row["antennas_reporting"] == row["antennas"] == [1, 2, 3, 4]
    assert row["anomalies"]["rospec_not_started"] == 1
    assert not s.alerts("reader_down")
    wait_until(lambda: (s.api("/api/v1/readers")["readers"]["floor-1"]["reads_per_s"]
                        or 0) > 0, "a reads/s figure for the reader")
    from click.testing import CliRunner

    from rfidd.readers_cli import readers_command

    assert s.daemon.api is not None
    api = f"http://127.0.0.1:{s.daemon.api.port}"
    out = CliRunner(env={"RFIDD_TOKEN_FILE": str(s.token_file)}).invoke(readers_command,
                                                                   ["--api", api])
    assert out.exit_code == 0, out.output
    assert "floor-1" in out.output and "online" in out.output
    assert "rospec_not_started 1" in out.output and "generic" in out.output
    assert "reads/s" in out.output
    out = CliRunner(env={"RFIDD_TOKEN_FILE": str(s.token_file)}).invoke(
        readers_command, ["--api", api, "--json"])
    assert out.exit_code == 0
    assert json.loads(out.output)["readers"]["floor-1"]["state"] == "online"


def test_connected_but_not_reading_is_down_and_alerted(store: Any) -> None:
    s = store(quirks=["needs-start-rospec"], refuse_start=True)
    wait_until(lambda: s.metric("rfidd_reader_state", reader="floor-1",
                                state="connected_not_reading") == 1.0, "connected_not_reading")
    assert s.metric("rfidd_reader_up", reader="floor-1") == 0.0
    wait_until(lambda: s.alerts("reader_down"), "the reader-down alert")
    (alert,) = s.alerts("reader_down")
    assert alert["state"] == "connected_not_reading" and alert["reason"]
    assert s.api("/api/v1/readers")["readers"]["floor-1"]["state"] == "connected_not_reading"


def test_silent_reader_is_an_anomaly_and_an_alert_not_a_reconnect(store: Any) -> None:
    s = store(quirks=[], silent_after_s=0.8)
    wait_until(lambda: s.metric("rfidd_reader_up", reader="floor-1") == 1.0, "online")
    s.sim.hold(True)  # the field goes quiet; the reader is still inventorying
    wait_until(lambda: s.alerts("reader_silent"), "the silent alert")
    assert s.metric("rfidd_reader_anomalies_total", reader="floor-1", kind="silent") == 1.0
    assert s.metric("rfidd_reader_up", reader="floor-1") == 1.0
    assert s.api("/api/v1/readers")["readers"]["floor-1"]["silent"] is True
    assert s.sim.stats.connections == 1
    assert len(s.alerts("reader_silent")) == 1  # once per silence
