"""A customer walking through the store with a purchase: a move, not a stocking step."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from inventory.epc import decode, sgtin96_hex
from rfidd.app import Daemon, Timings
from rfidd.config import Config
from rfidd.lifecycle.service import LifecycleService
from rfidd.store import repo
from rfidd.store.models import Event, OutboxMessage
from simulator.serial_sim import SerialReaderSim, SimTag

pytestmark = pytest.mark.integration


def _wait(pred: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)


def test_sold_item_moving_to_the_floor_is_no_stocking(tmp_path: Path, sqlite_url: str) -> None:
    sold, unsold = (sgtin96_hex("03760001001013", 8000 + i, 7) for i in range(2))
    in_stock = {sold, unsold}
    on_floor: set[str] = set()
    stock = SerialReaderSim(protocol="binary", link_path=str(tmp_path / "ttyStock"))
    floor = SerialReaderSim(protocol="binary", link_path=str(tmp_path / "ttyFloor"))
    stock.set_source(lambda: [SimTag(e) for e in sorted(in_stock)])
    floor.set_source(lambda: [SimTag(e) for e in sorted(on_floor)])
    paths = {"stock": stock.start(), "floor": floor.start()}
    cfg = Config.model_validate({
        "site": {"id": "walk", "name": "Walk", "sgln": "urn:epc:id:sgln:3760001.00001.0",
                 "company_prefixes": ["3760001"]},
        "database": {"url": sqlite_url, "batch_max_ms": 50},
        "mqtt": {"enabled": False}, "http": {"enabled": False},
        "presence": {"move_margin_db": 0, "move_margin_decay_s": 0.2},
        "zones": {"stockroom": {"kind": "stock"}, "floor": {"kind": "floor"}},
        "readers": {
            z: {"kind": "serial", "address": paths[z],
                "antennas": {"1": "stockroom" if z == "stock" else "floor"},
                "serial": {"poll_interval_ms": 50}}
            for z in paths
        },
    })
    daemon = Daemon(cfg, timings=Timings(supervisor_s=0.1))
    daemon.start()
    try:
        assert daemon.ctx is not None and daemon.db is not None
        ctx, db = daemon.ctx, daemon.db
        _wait(lambda: ctx.tracker.zone_counts().get("stockroom") == 2)
        # Both items were received into stock (what a closed reception writes).
        ctx.emit(items=[repo.ItemUpsert(e, biz_step="receiving",
                                        disposition="sellable_not_accessible")
                        for e in (sold, unsold)])
        svc = next(s for s in daemon.services if isinstance(s, LifecycleService))
        result = svc.handle("sale", {"txn": "RCPT-1", "epcs": [sold]})
        assert result.rejected == 0, result.to_json()
        in_stock.clear()
        on_floor.update({sold, unsold})
        _wait(lambda: ctx.tracker.zone_counts().get("floor") == 2)
        time.sleep(0.3)  # the hook's own commit follows the ingest batch

        def steps() -> dict[str, set[str]]:
            out: dict[str, set[str]] = {}
            with db.session() as s:
                for step, payload in s.query(Event.biz_step, Event.payload):
                    for uri in json.loads(payload).get("epcList", []):
                        out.setdefault(step or "observe", set()).add(uri)
            return out

        got = steps()
        assert decode(unsold).uri in got.get("stocking", set())
        assert decode(sold).uri not in got.get("stocking", set())
        assert decode(sold).uri in got["retail_selling"]
        with db.session() as s:
            alerts = [json.loads(p) for (p,) in s.query(OutboxMessage.payload)
                      .filter(OutboxMessage.topic == "alerts")]
        assert alerts == []  # walking with a purchase is not an exception
    finally:
        daemon.stop()
        stock.stop()
        floor.stop()


def test_lent_item_leaves_without_alert_unsold_one_raises_one(
    tmp_path: Path, sqlite_url: str
) -> None:
    lent, stolen = (sgtin96_hex("03760001001013", 8100 + i, 7) for i in range(2))
    in_stock, at_exit = {lent, stolen}, set[str]()
    stock = SerialReaderSim(protocol="binary", link_path=str(tmp_path / "ttyStock"))
    door = SerialReaderSim(protocol="binary", link_path=str(tmp_path / "ttyDoor"))
    stock.set_source(lambda: [SimTag(e) for e in sorted(in_stock)])
    door.set_source(lambda: [SimTag(e) for e in sorted(at_exit)])
    paths = {"stockroom": stock.start(), "exit": door.start()}
    cfg = Config.model_validate({
        "site": {"id": "loan", "name": "Loan", "sgln": "urn:epc:id:sgln:3760001.00001.0",
                 "company_prefixes": ["3760001"]},
        "database": {"url": sqlite_url, "batch_max_ms": 50},
        "mqtt": {"enabled": False}, "http": {"enabled": False},
        "presence": {"move_margin_db": 0, "move_margin_decay_s": 0.2},
        "zones": {"stockroom": {"kind": "stock"}, "exit": {"kind": "exit"}},
        "readers": {z: {"kind": "serial", "address": p, "antennas": {"1": z},
                        "serial": {"poll_interval_ms": 50}} for z, p in paths.items()},
    })
    daemon = Daemon(cfg, timings=Timings(supervisor_s=0.1))
    daemon.start()
    try:
        assert daemon.ctx is not None and daemon.db is not None
        ctx, db = daemon.ctx, daemon.db
        _wait(lambda: ctx.tracker.zone_counts().get("stockroom") == 2)
        ctx.emit(items=[repo.ItemUpsert(e, biz_step="receiving",
                                        disposition="sellable_not_accessible")
                        for e in (lent, stolen)])
        svc = next(s for s in daemon.services if isinstance(s, LifecycleService))
        loan = svc.handle("loan_out", {"txn": "PRESS-7", "epcs": [lent],
                                       "due": "2030-01-01T00:00:00+00:00"})
        assert loan.rejected == 0, loan.to_json()
        in_stock.clear()
        at_exit.update({lent, stolen})
        _wait(lambda: ctx.tracker.zone_counts().get("exit") == 2)

        def alerts() -> list[dict[str, object]]:
            with db.session() as s:
                return [json.loads(p) for (p,) in s.query(OutboxMessage.payload)
                        .filter(OutboxMessage.topic == "alerts")]

        _wait(lambda: len(alerts()) >= 1)
        time.sleep(0.5)
        assert [(a["type"], a["epc"]) for a in alerts()] == [("exit_unsold", stolen)]
        assert svc.item_state(lent)["status"] == "on_loan"  # type: ignore[index]
    finally:
        daemon.stop()
        stock.stop()
        door.stop()


def test_exit_alert_when_the_floor_still_sees_the_tag(tmp_path: Path, sqlite_url: str) -> None:
    """The gate reads the tag at -47 dBm while the floor antennas still see it at -52: with a
    6 dB move margin presence never settles at the exit, the alert must come all the same."""
    bag = sgtin96_hex("03760001001013", 8200, 7)
    at_gate: list[SimTag] = []
    floor = SerialReaderSim([SimTag(bag, rssi_dbm=-52.0)], protocol="binary",
                            link_path=str(tmp_path / "ttyFloor"))
    gate = SerialReaderSim(protocol="binary", link_path=str(tmp_path / "ttyGate"))
    gate.set_source(lambda: list(at_gate))
    paths = {"floor": floor.start(), "exit": gate.start()}
    cfg = Config.model_validate({
        "site": {"id": "gate", "name": "Gate", "sgln": "urn:epc:id:sgln:3760001.00001.0",
                 "company_prefixes": ["3760001"]},
        "database": {"url": sqlite_url, "batch_max_ms": 50},
        "mqtt": {"enabled": False}, "http": {"enabled": False},
        "presence": {"move_margin_db": 6.0, "move_margin_decay_s": 30.0},
        "zones": {"floor": {"kind": "floor"}, "exit": {"kind": "exit"}},
        "readers": {z: {"kind": "serial", "address": p, "antennas": {"1": z},
                        "serial": {"poll_interval_ms": 50}} for z, p in paths.items()},
    })
    daemon = Daemon(cfg, timings=Timings(supervisor_s=0.1))
    daemon.start()
    try:
        assert daemon.ctx is not None and daemon.db is not None
        ctx, db = daemon.ctx, daemon.db
        _wait(lambda: ctx.tracker.zone_counts().get("floor") == 1)
        at_gate.append(SimTag(bag, rssi_dbm=-47.0))

        def alerts() -> list[dict[str, object]]:
            with db.session() as s:
                return [json.loads(p) for (p,) in s.query(OutboxMessage.payload)
                        .filter(OutboxMessage.topic == "alerts")]

        _wait(lambda: len(alerts()) >= 1, timeout=10)
        time.sleep(1.0)  # the gate keeps reading it: still one alert
        assert [(a["type"], a["epc"]) for a in alerts()] == [("exit_unsold", bag)]
        assert ctx.tracker.zone_of(bag) == "floor"  # presence did not move: the gate did it
    finally:
        daemon.stop()
        floor.stop()
        gate.stop()
