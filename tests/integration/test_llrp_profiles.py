"""Reader families: the driver sends each family what its profile says (readers/llrp_profiles).

The simulator parses what it is sent (ROSpec: session, tag population, report trigger, Impinj
search mode; SET_READER_CONFIG: keepalive) and the test compares that with the profile. The
family comes from the capabilities (vendor auto) or the configuration; a value set in the
configuration always wins over the profile's."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from waits import wait_until

from readers import supervise
from readers.base import ReaderState
from readers.llrp import LlrpReader
from readers.llrp_profiles import PROFILES
from simulator.llrp import IDENTITIES, SimulatedReader, StaticField
from simulator.llrp.testing import RecordingSink

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

EPCS = {1: [f"3034E57E0400194000{n:06X}" for n in range(10)]}


@pytest.fixture(autouse=True)
def fast_supervision(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervise, "BACKOFF_INITIAL_S", 0.05)
    monkeypatch.setattr(supervise, "POLL_S", 0.01)


@pytest.fixture
def connect() -> Iterator[Any]:
    made: list[tuple[SimulatedReader, LlrpReader]] = []

    def make(identity: str, **options: Any) -> tuple[SimulatedReader, LlrpReader]:
        sim = SimulatedReader("r", StaticField.of_hex(EPCS), antennas=[1, 2],
                              reads_per_s=300, identity=IDENTITIES[identity], seed=3)
        sim.start()
        driver = LlrpReader("r", "127.0.0.1", {"port": sim.port, **options}, [1, 2],
                            RecordingSink(), disconnect_timeout_s=0.5)
        made.append((sim, driver))
        driver.start()
        wait_until(lambda: driver.state is ReaderState.ONLINE and sim.stats.rospec is not None
                   and sim.stats.keepalive_ms is not None, f"{identity} reader online")
        return sim, driver

    yield make
    for sim, driver in made:
        driver.stop(timeout=5)
        sim.stop()


def sent(sim: SimulatedReader) -> dict[str, Any]:
    """What the driver asked of the simulated reader, in the profile's terms."""
    spec = sim.stats.rospec
    assert spec is not None and sim.stats.keepalive_ms is not None
    return {"session": spec.session, "tag_population": spec.tag_population,
            "search_mode": spec.search_mode, "report_every_n_tags": spec.n_tags,
            "report_timeout_ms": spec.report_timeout_ms,
            "keepalive_s": sim.stats.keepalive_ms / 1000,
            "impinj_extensions": sim.stats.impinj_extensions}


@pytest.mark.parametrize("family", ["generic", "impinj", "zebra"])
def test_each_family_gets_what_its_profile_says(connect: Any, family: str) -> None:
    sim, driver = connect(family)  # vendor auto: detected from the capabilities
    assert sent(sim) == dict(PROFILES[family].defaults)
    info = driver.info()
    assert info["profile"] == info["vendor"] == family
    assert info["profile_settings"] == dict(PROFILES[family].defaults)


def test_the_profiles_differ_where_the_families_do() -> None:
    """Not one profile three times: the choices the field notes justify."""
    impinj, zebra, generic = (PROFILES[f].defaults for f in ("impinj", "zebra", "generic"))
    assert impinj["search_mode"] == 2 and impinj["impinj_extensions"]
    assert zebra["session"] == 0 and zebra["search_mode"] is None
    assert zebra["keepalive_s"] < generic["keepalive_s"]
    assert not generic["impinj_extensions"] and generic["search_mode"] is None
    assert all(PROFILES[f].sources for f in PROFILES)


def test_a_configured_value_wins_over_the_profile(connect: Any) -> None:
    sim, _ = connect("zebra", session=2, keepalive_s=7.0)
    got = sent(sim)
    assert (got["session"], got["keepalive_s"]) == (2, 7.0)
    assert got["report_every_n_tags"] == PROFILES["zebra"].defaults["report_every_n_tags"]
    sim, _ = connect("impinj", impinj_extensions=False)
    got = sent(sim)
    assert got["search_mode"] is None and not got["impinj_extensions"]


def test_a_configured_family_applies_before_detection_and_a_mismatch_follows_the_reader(
        connect: Any) -> None:
    sim, driver = connect("generic", vendor="zebra")
    assert sent(sim) == dict(PROFILES["generic"].defaults)
    assert driver.info()["anomalies"].get("vendor_mismatch") == 1


@pytest.mark.parametrize("hosted", [True, False])
def test_the_daemon_applies_the_profile_with_readers_hosted_or_in_process(
        hosted: bool, tmp_path: Any) -> None:
    """Through the real daemon and its config: only what the file sets counts as set, in the
    reader host's child process as in a thread."""
    from rfidd.app import Daemon, Timings
    from rfidd.config import Config

    sim = SimulatedReader("z", StaticField.of_hex(EPCS), antennas=[1], reads_per_s=200,
                          identity=IDENTITIES["zebra"])
    sim.start()
    cfg = Config.model_validate({
        "site": {"id": "p", "name": "p", "sgln": "urn:epc:id:sgln:0614141.00001.0"},
        "database": {"url": f"sqlite:///{tmp_path / 'p.db'}"}, "llrp_process": hosted,
        "mqtt": {"enabled": False}, "http": {"enabled": False},
        "zones": {"z": {"kind": "stock"}},
        "readers": {"z": {"kind": "llrp", "address": "127.0.0.1", "antennas": {"1": "z"},
                          "llrp": {"port": sim.port, "report_every_n_tags": 20}}},
    })
    daemon = Daemon(cfg, timings=Timings(supervisor_s=0.1), ops_settings=None)
    daemon.start()
    try:
        wait_until(lambda: sim.stats.rospec is not None and sim.stats.keepalive_ms is not None,
                   "the ROSpec added", timeout=20)
        got = sent(sim)
        assert got["session"] == 0 and got["keepalive_s"] == 5.0  # the zebra profile
        assert got["report_every_n_tags"] == 20  # the file's
    finally:
        daemon.stop()
        sim.stop()
