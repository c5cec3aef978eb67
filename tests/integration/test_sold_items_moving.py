"""What an item's books mean for moves and exits, through the whole daemon and real ptys:
a purchase carried across the store is no stocking step; a lent item leaves silently; an exit
gate alerts even while the floor antennas still see the tag."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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


def _live(tags: list[SimTag]) -> Callable[[], list[SimTag]]:
    return lambda: list(tags)


@contextmanager
def site(tmp_path: Path, db_url: str, fields: dict[str, tuple[str, list[SimTag]]],
         presence: dict[str, float] | None = None) -> Iterator[Daemon]:
    """A daemon with one simulated serial reader per zone; `fields` maps zone -> (kind, the
    live list of tags in front of that reader: mutate it to move items)."""
    sims = {}
    for zone, (_kind, tags) in fields.items():
        sim = SerialReaderSim(protocol="binary", link_path=str(tmp_path / f"tty-{zone}"))
        sim.set_source(_live(tags))
        sims[zone] = sim
    paths = {zone: sim.start() for zone, sim in sims.items()}
    cfg = Config.model_validate({
        "site": {"id": "books", "name": "Books", "sgln": "urn:epc:id:sgln:3760001.00001.0",
                 "company_prefixes": ["3760001"]},
        "database": {"url": db_url, "batch_max_ms": 50},
        "mqtt": {"enabled": False}, "http": {"enabled": False},
        "presence": presence or {"move_margin_db": 0, "move_margin_decay_s": 0.2},
        "zones": {zone: {"kind": kind} for zone, (kind, _) in fields.items()},
        "readers": {zone: {"kind": "serial", "address": path, "antennas": {"1": zone},
                           "serial": {"poll_interval_ms": 50}} for zone, path in paths.items()},
    })
    daemon = Daemon(cfg, timings=Timings(supervisor_s=0.1))
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()
        for sim in sims.values():
            sim.stop()


def _receive(daemon: Daemon, epcs: list[str]) -> LifecycleService:
    """Into the books as received (what a closed reception writes); the lifecycle service."""
    assert daemon.ctx is not None
    daemon.ctx.emit(items=[repo.ItemUpsert(e, biz_step="receiving",
                                           disposition="sellable_not_accessible")
                           for e in epcs])
    assert daemon.lifecycle is not None
    return daemon.lifecycle


def _alerts(daemon: Daemon) -> list[dict[str, Any]]:
    assert daemon.db is not None
    with daemon.db.session() as s:
        return [json.loads(p) for (p,) in s.query(OutboxMessage.payload)
                .filter(OutboxMessage.topic == "alerts")]


def _zone_count(daemon: Daemon, zone: str) -> int | None:
    assert daemon.ctx is not None
    return daemon.ctx.tracker.zone_counts().get(zone)


def test_sold_item_moving_to_the_floor_is_no_stocking(tmp_path: Path, sqlite_url: str) -> None:
    sold, unsold = (sgtin96_hex("03760001001013", 8000 + i, 7) for i in range(2))
    stock, floor = [SimTag(sold), SimTag(unsold)], list[SimTag]()
    with site(tmp_path, sqlite_url, {"stockroom": ("stock", stock),
                                     "floor": ("floor", floor)}) as daemon:
        _wait(lambda: _zone_count(daemon, "stockroom") == 2)
        svc = _receive(daemon, [sold, unsold])
        result = svc.handle("sale", {"txn": "RCPT-1", "epcs": [sold]})
        assert result.rejected == 0, result.to_json()
        floor.extend(stock)
        stock.clear()
        _wait(lambda: _zone_count(daemon, "floor") == 2)
        time.sleep(0.3)
        steps: dict[str, set[str]] = {}
        assert daemon.db is not None
        with daemon.db.session() as s:
            for step, payload in s.query(Event.biz_step, Event.payload):
                steps.setdefault(step or "observe", set()).update(
                    json.loads(payload).get("epcList", []))
        assert decode(unsold).uri in steps.get("stocking", set())
        assert decode(sold).uri not in steps.get("stocking", set())
        assert decode(sold).uri in steps["retail_selling"]
        assert _alerts(daemon) == []  # walking with a purchase is not an exception


def test_lent_item_leaves_without_alert_unsold_one_raises_one(
    tmp_path: Path, sqlite_url: str
) -> None:
    lent, stolen = (sgtin96_hex("03760001001013", 8100 + i, 7) for i in range(2))
    stock, door = [SimTag(lent), SimTag(stolen)], list[SimTag]()
    with site(tmp_path, sqlite_url, {"stockroom": ("stock", stock),
                                     "exit": ("exit", door)}) as daemon:
        _wait(lambda: _zone_count(daemon, "stockroom") == 2)
        svc = _receive(daemon, [lent, stolen])
        loan = svc.handle("loan_out", {"txn": "PRESS-7", "epcs": [lent],
                                       "due": "2030-01-01T00:00:00+00:00"})
        assert loan.rejected == 0, loan.to_json()
        door.extend(stock)
        stock.clear()
        _wait(lambda: _zone_count(daemon, "exit") == 2)
        _wait(lambda: len(_alerts(daemon)) >= 1)
        time.sleep(0.5)
        assert [(a["type"], a["epc"]) for a in _alerts(daemon)] == [("exit_unsold", stolen)]
        assert svc.item_state(lent)["status"] == "on_loan"  # type: ignore[index]


def test_exit_alert_when_the_floor_still_sees_the_tag(tmp_path: Path, sqlite_url: str) -> None:
    """The gate reads the tag at -47 dBm while the floor antennas still see it at -52: with a
    6 dB move margin presence never settles at the exit, the alert must come all the same."""
    bag = sgtin96_hex("03760001001013", 8200, 7)
    floor, gate = [SimTag(bag, rssi_dbm=-52.0)], list[SimTag]()
    with site(tmp_path, sqlite_url, {"floor": ("floor", floor), "exit": ("exit", gate)},
              presence={"move_margin_db": 6.0, "move_margin_decay_s": 30.0}) as daemon:
        _wait(lambda: _zone_count(daemon, "floor") == 1)
        gate.append(SimTag(bag, rssi_dbm=-47.0))
        _wait(lambda: len(_alerts(daemon)) >= 1, timeout=10)
        time.sleep(1.0)  # the gate keeps reading it: still one alert
        assert [(a["type"], a["epc"]) for a in _alerts(daemon)] == [("exit_unsold", bag)]
        assert daemon.ctx is not None and daemon.ctx.tracker.zone_of(bag) == "floor"
