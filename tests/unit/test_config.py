"""Configuration: every error at once, with key path and line; exit 78 from check-config."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from rfidd.cli import main
from rfidd.config import EX_CONFIG, ConfigError, load_config, parse_config

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "rfidd.example.toml"


def test_example_config_is_valid() -> None:
    cfg = load_config(EXAMPLE)
    assert cfg.site.id == "paris-01"
    assert cfg.readers["floor-1"].antenna_zones() == {1: "floor", 2: "floor", 3: "floor",
                                                      4: "floor"}
    assert cfg.topic("epcis") == "rfidd/v1/paris-01/epcis"
    assert cfg.zone_read_point("floor") == "urn:epc:id:sgln:3760001.00001.floor"


def _errors(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "t.toml")
    return info.value.errors


def test_two_mistakes_are_both_reported_with_path_and_line() -> None:
    text = EXAMPLE.read_text()
    text = text.replace("tx_power_dbm = 30.0", "tx_powr_dbm = 30.0")
    text = text.replace('4 = "floor"', '4 = "flor"')
    errors = _errors(text)
    assert len(errors) == 2, errors
    line_typo = text.splitlines().index("tx_powr_dbm = 30.0") + 1
    assert f"t.toml:{line_typo}: readers.stock-1.llrp.tx_powr_dbm: unknown key" in errors[0]
    assert "readers.floor-1.antennas" in errors[1] and "'flor'" in errors[1]


def test_bad_values_are_named() -> None:
    base = EXAMPLE.read_text()
    errors = _errors(
        base.replace('sgln = "urn:epc:id:sgln:3760001.00001.0"', 'sgln = "not-a-sgln"')
        .replace('topic_prefix = "rfidd/v1"', 'topic_prefix = "rfidd/#"')
        .replace('timezone = "Europe/Paris"', 'timezone = "Mars/Olympus"')
        .replace("session = 2", "session = 7")
    )
    paths = [e.split(": ")[1] for e in errors]
    assert paths == ["site.sgln", "site.timezone", "mqtt.topic_prefix",
                     "readers.floor-1.llrp.session"], errors


def test_toml_syntax_error() -> None:
    errors = _errors("[site\nid = 1")
    assert errors[0].startswith("t.toml: TOML syntax")


def test_wildcard_site_id_rejected() -> None:
    text = EXAMPLE.read_text().replace('id = "paris-01"', 'id = "paris/#"')
    assert any(e.split(": ")[1] == "site.id" for e in _errors(text))


def test_check_config_cli(tmp_path: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(main, ["check-config", "--syntax-only", str(EXAMPLE)])
    assert ok.exit_code == 0, ok.output
    assert "OK" in ok.output
    # Without --syntax-only the files it names must exist here: the example's do not.
    here = runner.invoke(main, ["check-config", str(EXAMPLE)])
    assert here.exit_code == EX_CONFIG
    assert "mqtt.password_file /run/credentials/rfidd.service/mqtt-password" in here.output \
        or "mqtt.password_file credential:mqtt-password" in here.output, here.output
    assert "hq-ca.pem" in here.output
    assert "--syntax-only skips these checks" in " ".join(here.output.split())  # what next
    bad = tmp_path / "bad.toml"
    bad.write_text(EXAMPLE.read_text().replace("session = 1", "sesion = 1")
                   .replace("departure_s = 300", "departure_s = -1"))
    res = runner.invoke(main, ["check-config", str(bad)])
    assert res.exit_code == EX_CONFIG
    assert "2 error(s)" in res.output
    assert "readers.stock-1.llrp.sesion: unknown key" in res.output
    assert "presence.departure_s" in res.output
    assert "--syntax-only" not in res.output  # the file itself is wrong: no such way out
    missing = runner.invoke(main, ["check-config", str(tmp_path / "nope.toml")])
    assert missing.exit_code == EX_CONFIG
    assert "cannot read" in missing.output


def test_impinj_search_mode_needs_the_extensions() -> None:
    text = EXAMPLE.read_text().replace("tag_population = 256",
                                       "tag_population = 256\nsearch_mode = 2")
    errors = _errors(text)
    assert len(errors) == 1 and "readers.floor-1.llrp" in errors[0]
    assert "impinj_extensions" in errors[0]
    ok = text.replace("search_mode = 2", "search_mode = 2\nimpinj_extensions = true")
    assert parse_config(ok).readers["floor-1"].llrp.search_mode == 2
    impinj = text.replace("search_mode = 2", "search_mode = 2\nvendor = 'impinj'")
    assert parse_config(impinj).readers["floor-1"].llrp.vendor == "impinj"  # the profile allows


def test_an_exposed_listen_is_reported_beside_the_other_mistakes() -> None:
    """The listen-without-TLS check is a table check: it used to be silent while any other
    field of the file was wrong, so fixing the typos revealed one more error."""
    text = EXAMPLE.read_text().replace("tx_power_dbm = 30.0", "tx_powr_dbm = 30.0")
    text = text.replace('listen = "127.0.0.1"  ', 'listen = "0.0.0.0"    ', 1)
    errors = _errors(text)
    assert len(errors) == 2, errors
    line = next(i for i, ln in enumerate(text.splitlines(), 1)
                if ln.startswith('listen = "0.0.0.0"'))
    assert any("tx_powr_dbm: unknown key" in e for e in errors)
    assert f"t.toml:{line}: http: http.listen '0.0.0.0' is not a loopback address" in errors[1]


def test_an_exposed_listen_alone_is_reported_once() -> None:
    text = EXAMPLE.read_text().replace('listen = "127.0.0.1"  ', 'listen = "0.0.0.0"    ', 1)
    errors = _errors(text)
    assert len(errors) == 1 and "is not a loopback address" in errors[0], errors
