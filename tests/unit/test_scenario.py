"""Scenario files: loading, validation errors, deterministic population, timeline steps."""

from __future__ import annotations

from pathlib import Path

import pytest
from epcpy.epc_schemes.sgtin import SGTIN

from simulator.llrp.reader import tid_for
from simulator.scenario import Scenario, ScenarioError, World, action, load_catalog

SCENARIOS = Path(__file__).resolve().parents[2] / "simulator" / "scenarios"
DEMO = SCENARIOS / "demo-store.toml"


def test_demo_scenario_population_is_deterministic() -> None:
    a, b = Scenario.load(DEMO), Scenario.load(DEMO)
    assert a.items() == b.items()
    items = a.items()
    assert len(items) == 310 and len({i.epc_hex for i in items}) == 310
    assert sum(i.zone == "stockroom" for i in items) == 220
    assert set(a.readers) == {"stockroom-1", "floor-1", "backdoor-1"}
    assert a.readers["backdoor-1"].antenna_zones() == {1: "reception", 2: "exit"}


def test_items_are_sgtin96_of_catalog_gtins() -> None:
    scenario = Scenario.load(DEMO)
    gtins = {row["gtin"] for row in scenario.catalog_rows()}
    for item in scenario.items()[:40]:
        assert item.gtin in gtins
        sgtin = SGTIN.from_binary(bin(int(item.epc_hex, 16))[2:].zfill(96))
        assert sgtin.gtin() == item.gtin
        assert item.epc_hex.startswith("30")  # SGTIN-96 header
        assert sgtin.epc_uri.endswith(f".{item.serial}")


def test_catalog_is_the_maison_aurore_range() -> None:
    rows = Scenario.load(DEMO).catalog_rows()
    assert 28 <= len(rows) <= 40
    assert set(rows[0]) == {"gtin", "sku", "name", "size", "colour", "category", "price",
                            "currency"}
    assert {r["category"] for r in rows} == {"bags", "shoes", "scarves", "ready-to-wear",
                                             "small-leather-goods"}
    assert all(r["gtin"][1:8] == "3760001" and r["currency"] == "EUR" for r in rows)
    assert any(r["size"] == "38" and r["category"] == "shoes" for r in rows)


def write(tmp_path: Path, body: str, catalog: str | None = None) -> Path:
    cat = tmp_path / "cat.csv"
    cat.write_text(catalog or (SCENARIOS / "maison-catalog.csv").read_text(encoding="utf-8"),
                   encoding="utf-8")
    path = tmp_path / "s.toml"
    path.write_text('[scenario]\nname = "t"\ncatalog = "cat.csv"\n' + body, encoding="utf-8")
    return path


MINIMAL = """
[zones.a]
[zones.out]
kind = "exit"
[readers.r1]
antennas = { 1 = "a", 2 = "out" }
[[population]]
zone = "a"
count = 10
"""


def test_errors_name_every_problem(tmp_path: Path) -> None:
    body = MINIMAL.replace('2 = "out"', '2 = "nowhere"') + """
[[timeline]]
t = 1
action = "move"
from = "a"
to = "b"
[[timeline]]
t = 2
action = "fault"
reader = "r9"
fault = "reboot"
"""
    with pytest.raises(ScenarioError) as info:
        Scenario.load(write(tmp_path, body))
    text = str(info.value)
    assert "readers.r1.antennas.2: unknown zone 'nowhere'" in text
    assert "timeline[0] (move at t=1).to: unknown zone 'b'" in text
    assert "unknown reader 'r9'" in text


def test_misspelled_key_and_rate_limit(tmp_path: Path) -> None:
    body = MINIMAL.replace("[readers.r1]", "[readers.r1]\nreads_per_sec = 10\n")
    with pytest.raises(ScenarioError, match=r"readers\.r1\.reads_per_sec: unknown key"):
        Scenario.load(write(tmp_path, body))
    body = MINIMAL.replace("[readers.r1]", "[readers.r1]\nreads_per_s = 5000\n")
    with pytest.raises(ScenarioError, match="reads_per_s"):
        Scenario.load(write(tmp_path, body))


def test_reader_quirks_and_identity_by_name(tmp_path: Path) -> None:
    from simulator.llrp.site import SimulatedSite

    body = MINIMAL.replace("[readers.r1]", "[readers.r1]\nquirks = ['needs-start-rospec', "
                           "'loses-rospec=4', 'reject_spec_id_zero']\nidentity = 'zebra'\n")
    site = SimulatedSite(Scenario.load(write(tmp_path, body)), run_timeline=False)
    q = site.readers["r1"].quirks
    assert q.needs_start_rospec and q.reject_spec_id_zero and q.loses_rospec_after_s == 4.0
    assert site.readers["r1"].identity.manufacturer == 161
    site = SimulatedSite(Scenario.load(write(tmp_path, body)), run_timeline=False,
                         quirks=["no-get-rospecs"], identity="impinj")  # rfidd-sim --quirks
    q = site.readers["r1"].quirks
    assert q.no_get_rospecs and not q.needs_start_rospec
    assert site.readers["r1"].identity.manufacturer == 25882
    body = MINIMAL.replace("[readers.r1]", "[readers.r1]\nquirks = ['needs-start']\n")
    with pytest.raises(ScenarioError, match="unknown quirk 'needs-start'; known: antenna1"):
        Scenario.load(write(tmp_path, body))


def test_zone_clones_put_a_second_chip_with_the_same_epc(tmp_path: Path) -> None:
    scenario = Scenario.load(write(tmp_path, MINIMAL.replace("[zones.a]", "[zones.a]\nclones = 2")))
    world = World(scenario)
    tags = world.tags_in("a")
    epcs = [t.epc for t in tags]
    doubled = {e for e in epcs if epcs.count(e) == 2}
    assert len(doubled) == 2 and len(tags) == world.count("a") + 2 == 12
    for e in doubled:
        a, b = (t for t in tags if t.epc == e)
        assert a.tid is None and b.tid is not None and b.tid != tid_for(e)


def test_bad_catalog_rows_are_reported_by_line(tmp_path: Path) -> None:
    cat = tmp_path / "c.csv"
    cat.write_text("gtin,sku,name,size,colour,category,price,currency\n"
                   "03760001001013,A,n,,c,bags,10,EUR\n"
                   "03760001001014,B,n,,c,bags,10,EUR\n"
                   "03760001001020,C,n,,c,bags,ten,EUR\n", encoding="utf-8")
    with pytest.raises(ScenarioError) as info:
        load_catalog(cat)
    assert info.value.errors == [
        "line 3: gtin '03760001001014' is not a GTIN-14 with a valid check digit",
        "line 4: price 'ten' is not a number"]


def test_world_timeline_steps(tmp_path: Path) -> None:
    scenario = Scenario.load(write(tmp_path, MINIMAL))
    world = World(scenario)
    assert world.count("a") == 10 and len(world.tags_in("a")) == 10
    new = world.apply(action(t=0, action="shipment", zone="a", count=3, categories=["shoes"]))
    assert len(new) == 3 and world.count("a") == 13
    assert {i.epc_hex for i in new}.isdisjoint({i.epc_hex for i in scenario.items()})
    out = world.apply(action(t=1, action="exit", from_zone="a", count=2))
    assert [i.zone for i in out] == ["out", "out"] and world.count("out") == 2
    assert world.zone_of(out[0].epc_hex) == "out"
    assert bytes.fromhex(out[0].epc_hex) in {t.epc for t in world.tags_in("out")}
    gone = world.apply(action(t=3, action="remove", epcs=[i.epc_hex for i in out]))
    assert len(gone) == 2 and world.count("out") == 0 and world.zone_of(out[0].epc_hex) is None
