"""Serial readers in scenario files: validation, the live tag source, fault routing (no pty)."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulator.llrp.site import SimulatedSite, zone_tag_source
from simulator.scenario import Scenario, ScenarioError, World, action
from simulator.serial_sim import SerialReaderSim, SimTag

SCENARIOS = Path(__file__).resolve().parents[2] / "simulator" / "scenarios"

BASE = """
[scenario]
name = "t"
seed = 3
catalog = "maison-catalog.csv"
[zones.floor]
read_probability = 0.8
rssi_mean_dbm = -61.0
[zones.pos]
kind = "pos"
read_probability = 0.5
rssi_mean_dbm = -37.0
[readers.floor-1]
antennas = { 1 = "floor" }
[serial_readers.desk]
zone = "pos"
protocol = "ascii"
antenna = 3
[[population]]
zone = "floor"
count = 8
"""


def parse(text: str) -> Scenario:
    return Scenario.parse(text, "<t>", SCENARIOS)


def errors_of(text: str) -> str:
    with pytest.raises(ScenarioError) as info:
        parse(text)
    return str(info.value)


def test_serial_readers_kept_apart_from_llrp_readers() -> None:
    s = parse(BASE)
    assert set(s.readers) == {"floor-1"}
    desk = s.serial_readers["desk"]
    assert (desk.zone, desk.protocol, desk.antenna, desk.link) == ("pos", "ascii", 3, None)


def test_store_with_desk_keeps_the_demo_store_readers_and_items() -> None:
    desk, demo = Scenario.load(SCENARIOS / "store-with-desk.toml"), \
        Scenario.load(SCENARIOS / "demo-store.toml")
    assert desk.readers == demo.readers  # what rfidd/demo.py maps to LLRP config
    assert desk.items() == demo.items()
    assert set(desk.serial_readers) == {"pos-desk"} and demo.serial_readers == {}
    assert desk.zones["pos"].kind == "pos"


@pytest.mark.parametrize("change, message", [
    (('zone = "pos"', 'zone = "till"'), "serial_readers.desk.zone: unknown zone 'till'"),
    (('antenna = 3', 'antena = 3'), "serial_readers.desk.antena: unknown key"),
    (('antenna = 3', 'antenna = 9'), "serial_readers.desk.antenna"),
    (('protocol = "ascii"', 'protocol = "modbus"'), "serial_readers.desk.protocol"),
    (('antenna = 3', 'link = "tty0"'), "link 'tty0' must be an absolute path"),
    (('antenna = 3', 'bad_checksum_every = 3'), "binary protocol only"),
    (("[serial_readers.desk]", "[serial_readers.floor-1]"),
     "serial_readers.floor-1: name already used by an LLRP reader"),
])
def test_serial_reader_errors_name_the_key(change: tuple[str, str], message: str) -> None:
    assert message in errors_of(BASE.replace(*change))


def fault(reader: str, kind: str, extra: str = "") -> str:
    return BASE + f'[[timeline]]\nt = 1\naction = "fault"\nreader = "{reader}"\n' \
                  f'fault = "{kind}"\n{extra}'


def test_fault_kinds_match_the_reader_kind() -> None:
    assert "'unplug' does not apply to LLRP reader 'floor-1'" in errors_of(fault("floor-1",
                                                                                "unplug"))
    text = errors_of(fault("desk", "drop"))
    assert "'drop' does not apply to serial reader 'desk'" in text and "unplug" in text
    assert "bad_checksum needs a binary-protocol reader" in errors_of(fault("desk",
                                                                            "bad_checksum"))
    assert "unknown reader 'till' (readers: desk, floor-1)" in errors_of(fault("till", "unplug"))
    s = parse(fault("desk", "unplug", "duration_s = 2\n"))
    assert s.timeline[0].fault == "unplug"


def test_no_reader_at_all_is_an_error_but_serial_only_is_fine() -> None:
    serial_only = BASE.replace('[readers.floor-1]\nantennas = { 1 = "floor" }\n', "")
    assert parse(serial_only).readers == {}
    none = serial_only.replace('[serial_readers.desk]\nzone = "pos"\nprotocol = "ascii"\n'
                               'antenna = 3\n', "")
    assert "declare at least one reader" in errors_of(none)


def test_duplicate_links_rejected() -> None:
    text = BASE.replace('antenna = 3', 'link = "/tmp/ttyX"') + \
        '[serial_readers.desk2]\nzone = "pos"\nlink = "/tmp/ttyX"\n'
    assert "link '/tmp/ttyX' used by more than one reader" in errors_of(text)


def test_zone_tag_source_follows_the_world() -> None:
    s = parse(BASE)
    world = World(s)
    source = zone_tag_source(world, "pos", antenna=3)
    assert source() == ()
    first = source()
    assert source() is first  # unchanged zone: no conversion per round
    moved = world.apply(action(t=0, action="move", from_zone="floor", to="pos", count=3))
    tags = source()
    assert {t.epc for t in tags} == {i.epc_hex for i in moved}
    assert all((t.antenna, t.read_probability, t.rssi_dbm) == (3, 0.5, -37.0) for t in tags)
    world.apply(action(t=1, action="remove", epcs=[moved[0].epc_hex]))
    assert {t.epc for t in source()} == {i.epc_hex for i in moved[1:]}
    with pytest.raises(ValueError, match="no destination zone"):  # no exit zone here
        world.apply(action(t=2, action="exit", from_zone="pos", count=1))
    assert world.count("pos") == 2


def test_sim_rounds_come_from_a_live_source_and_survive_a_broken_one() -> None:
    field: list[SimTag] = [SimTag("3034257BF400000000000001", 1, -40.0)]
    calls = {"n": 0}

    def source() -> list[SimTag]:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("boom")
        return list(field)

    sim = SerialReaderSim(source, "ascii", ascii_auto=False)
    assert sim.emit_round() == 1
    assert sim.emit_round() == 0 and sim.stats.source_errors == 1  # no exception escapes
    field.append(SimTag("3034257BF400000000000002", 1, -41.0))
    assert sim.emit_round() == 2
    sim.hold(True)
    assert sim.emit_round() == 0
    sim.hold(False)
    sim.set_tags(["3034257BF400000000000003"])  # back to a fixed field
    assert [t.epc for t in sim.tags] == ["3034257BF400000000000003"]
    assert sim.emit_round() == 1


def test_site_rejects_a_fault_of_the_wrong_kind_without_touching_the_world() -> None:
    site = SimulatedSite(parse(BASE))  # not started: nothing bound, no pty
    with pytest.raises(ValueError, match="'drop' does not apply to serial reader 'desk'"):
        site.apply(action(t=0, action="fault", reader="desk", fault="drop"))
    with pytest.raises(ValueError, match="unknown reader 'nope'"):
        site.apply(action(t=0, action="fault", reader="nope", fault="unplug"))
    assert site.applied == []
    assert set(site.serial_readers) == {"desk"} and set(site.readers) == {"floor-1"}
    assert site.serial_paths == {}  # a temporary path is chosen at start


def test_sim_refuses_to_replace_a_real_file(tmp_path: Path) -> None:
    real = tmp_path / "ttyUSB0"
    real.write_text("not ours", encoding="utf-8")
    with pytest.raises(FileExistsError, match="is not a symlink"):
        SerialReaderSim([], link_path=str(real)).start()
    assert real.read_text(encoding="utf-8") == "not ours"
