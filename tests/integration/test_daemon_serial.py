"""A desk reader on serial (pty) feeds the same pipeline as LLRP readers, with its own zone."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from inventory.epc import decode, sgtin96_hex
from rfidd.app import Daemon, Timings
from rfidd.config import Config
from rfidd.store.models import Event, ZonePresence
from simulator.serial_sim import SerialReaderSim

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("protocol", ["binary", "ascii"])
def test_pos_desk_reader_locates_items_at_the_pos(
    tmp_path: Path, sqlite_url: str, protocol: str
) -> None:
    epcs = [sgtin96_hex("03760001000014", 5000 + i, 7) for i in range(5)]
    garbage_tag = "E2801160600002084F6B1F2C"  # a non-GS1 tag on the desk: counted, not located
    sim = SerialReaderSim([*epcs, garbage_tag], protocol=protocol,
                          link_path=str(tmp_path / "ttyPOS"))
    path = sim.start()
    cfg = Config.model_validate({
        "site": {"id": "pos-test", "name": "POS test", "sgln": "urn:epc:id:sgln:3760001.00001.0",
                 "company_prefixes": ["3760001"]},
        "database": {"url": sqlite_url, "batch_max_ms": 50},
        "mqtt": {"enabled": False},
        "http": {"enabled": False},
        "zones": {"pos": {"kind": "pos"}},
        "readers": {"pos-desk": {"kind": "serial", "address": path, "antennas": {"1": "pos"},
                                 "serial": {"protocol": protocol, "poll_interval_ms": 50}}},
    })
    daemon = Daemon(cfg, timings=Timings(supervisor_s=0.1))
    daemon.start()
    try:
        assert daemon.db is not None
        deadline = time.monotonic() + 20
        located: dict[str, str] = {}
        while time.monotonic() < deadline and len(located) < len(epcs):
            with daemon.db.session() as s:
                located = {r.epc: r.zone for r in s.query(ZonePresence)}
            time.sleep(0.1)
        assert located == dict.fromkeys(epcs, "pos")
        with daemon.db.session() as s:
            events = [json.loads(e.payload) for e in s.query(Event)]
        assert {ev["epcList"][0] for ev in events} == {decode(e).epcis_uri for e in epcs}
        assert {ev["readPoint"]["id"] for ev in events} == {"urn:epc:id:sgln:3760001.00001.pos"}
        assert daemon.ingestor is not None
        assert daemon.ingestor.stats.rejected.get("not_gs1", 0) >= 1
    finally:
        daemon.stop()
        sim.stop()


def test_unknown_products_are_located_and_counted_once(tmp_path: Path, sqlite_url: str) -> None:
    known = [sgtin96_hex("03760001001013", 7000 + i, 7) for i in range(3)]
    unknown = [sgtin96_hex("03760001001020", 7100 + i, 7) for i in range(2)]
    sim = SerialReaderSim([*known, *unknown], protocol="binary",
                          link_path=str(tmp_path / "ttyDesk"))
    path = sim.start()
    cfg = Config.model_validate({
        "site": {"id": "cat-test", "name": "Catalog test",
                 "sgln": "urn:epc:id:sgln:3760001.00001.0", "company_prefixes": ["3760001"]},
        "database": {"url": sqlite_url, "batch_max_ms": 50},
        "mqtt": {"enabled": False}, "http": {"enabled": False},
        "zones": {"floor": {"kind": "floor"}},
        "readers": {"desk": {"kind": "serial", "address": path, "antennas": {"1": "floor"},
                             "serial": {"poll_interval_ms": 50}}},
    })
    daemon = Daemon(cfg, timings=Timings(supervisor_s=0.1))
    daemon.start()
    try:
        from inventory.catalog import parse_catalog_records

        assert daemon.ops is not None
        res = daemon.ops.catalog.import_catalog(parse_catalog_records([{
            "gtin": "03760001001013", "sku": "BAG-1", "name": "Sac", "size": "", "colour": "",
            "category": "bags", "price": "1200", "currency": "EUR"}], "test"))
        assert res["imported"] == 1, res
        assert daemon.db is not None and daemon.ingestor is not None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (
                daemon.ingestor.stats.unknown_products < 2
                or daemon.ctx is None or daemon.ctx.tracker.zone_counts().get("floor") != 5):
            time.sleep(0.1)
        time.sleep(0.5)  # more rounds of the same tags: still counted once per EPC
        assert daemon.ingestor.stats.unknown_products == 2
        assert daemon.metrics.registry.get_sample_value(
            "rfidd_unknown_product_epcs_total") == 2.0
        assert daemon.ctx is not None and daemon.ctx.tracker.zone_counts()["floor"] == 5
    finally:
        daemon.stop()
        sim.stop()


def test_tsl_handheld_counts_a_zone_and_finds_an_item_through_the_api(
    tmp_path: Path, sqlite_url: str
) -> None:
    """A stockroom without fixed readers: a TSL handheld counts it; `rfidd find` follows one
    item's RSSI (the API the CLI and the staff page use)."""
    import urllib.error
    import urllib.request

    from rfidd.credentials import auth_headers

    epcs = [sgtin96_hex("03760001000014", 6000 + i, 7) for i in range(6)]
    sim = SerialReaderSim(epcs, protocol="tsl", link_path=str(tmp_path / "ttyTSL"))
    path = sim.start()
    cfg = Config.model_validate({
        "site": {"id": "tsl-test", "name": "TSL", "sgln": "urn:epc:id:sgln:3760001.00001.0",
                 "company_prefixes": ["3760001"]},
        "database": {"url": sqlite_url, "batch_max_ms": 50},
        "mqtt": {"enabled": False}, "http": {"enabled": True, "port": 0},
        "zones": {"stockroom": {"kind": "stock"}},
        "readers": {"handheld": {"kind": "serial", "address": path,
                                 "antennas": {"1": "stockroom"},
                                 "serial": {"protocol": "tsl", "poll_interval_ms": 50}}},
    })
    daemon = Daemon(cfg, timings=Timings(supervisor_s=0.1))
    daemon.start()

    def api(method: str, route: str, body: object = None) -> tuple[int, dict[str, object]]:
        assert daemon.api is not None
        req = urllib.request.Request(
            f"http://127.0.0.1:{daemon.api.port}{route}", method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json", **auth_headers()})  # every route
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    try:
        assert daemon.db is not None
        deadline = time.monotonic() + 20
        located: dict[str, str] = {}
        while time.monotonic() < deadline and len(located) < len(epcs):
            with daemon.db.session() as s:
                located = {r.epc: r.zone for r in s.query(ZonePresence)}
            time.sleep(0.1)
        assert located == dict.fromkeys(epcs, "stockroom")
        status, body = api("POST", "/api/v1/readers/handheld/find", {"epc": epcs[2]})
        assert status == 200 and body["epc"] == epcs[2]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and body.get("last_rssi_dbm") is None:
            time.sleep(0.1)
            _, body = api("GET", "/api/v1/readers/handheld/find")
        assert body["last_rssi_dbm"] == -55.0 and body["samples"]
        assert api("POST", "/api/v1/readers/handheld/find", {"epc": "12Z"})[0] == 400
        assert api("GET", "/api/v1/readers/nope/find")[0] == 404
        _, listing = api("GET", "/api/v1/readers")
        assert listing["readers"]["handheld"]["finding"] == epcs[2]  # type: ignore[index]
    finally:
        daemon.stop()
        sim.stop()
