"""`rfidd hq check-config` opens what `rfidd hq run` would, unless --syntax-only."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from rfidd.cli import main
from rfidd.config import EX_CONFIG

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "hq.example.toml"


def test_example_is_valid_but_names_its_missing_files() -> None:
    runner = CliRunner()
    ok = runner.invoke(main, ["hq", "check-config", "--syntax-only", str(EXAMPLE)])
    assert ok.exit_code == 0, ok.output
    here = runner.invoke(main, ["hq", "check-config", str(EXAMPLE)])
    assert here.exit_code == EX_CONFIG
    assert "mqtt.password_file" in here.output and "hq-ca.pem" in here.output


def test_files_that_exist_pass(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    cfg = tmp_path / "hq.toml"
    cfg.write_text(f'[database]\nurl = "sqlite:///{tmp_path}/hq.db"\n'
                   f'[mqtt]\nurl = "mqtt://127.0.0.1:1883"\nusername = "hq"\n'
                   f'password_file = "{secret}"\n')
    res = CliRunner().invoke(main, ["hq", "check-config", str(cfg)])
    assert res.exit_code == 0, res.output
    assert "s3cret" not in res.output


def test_each_check_config_names_the_other_for_a_file_of_the_other_kind() -> None:
    """An HQ file given to the site's check-config (or the reverse) is not a list of unknown
    keys: it says which command checks it."""
    runner = CliRunner()
    res = runner.invoke(main, ["check-config", "--syntax-only", str(EXAMPLE)])
    assert res.exit_code == EX_CONFIG
    assert f"check it with: rfidd hq check-config {EXAMPLE}" in res.output
    assert "extra" not in res.output.lower() and "error(s)" not in res.output
    site = EXAMPLE.with_name("rfidd.example.toml")
    res = runner.invoke(main, ["hq", "check-config", "--syntax-only", str(site)])
    assert res.exit_code == EX_CONFIG
    assert f"check it with: rfidd check-config {site}" in res.output


def test_an_hq_file_without_epcis_is_known_by_its_mqtt_keys(tmp_path: Path) -> None:
    cfg = tmp_path / "hq.toml"
    cfg.write_text('[database]\nurl = "sqlite:///hq.db"\n[mqtt]\nshare_group = "hq"\n')
    res = CliRunner().invoke(main, ["check-config", "--syntax-only", str(cfg)])
    assert res.exit_code == EX_CONFIG and "rfidd hq check-config" in res.output


def test_a_file_of_neither_kind_gets_the_errors_themselves(tmp_path: Path) -> None:
    cfg = tmp_path / "odd.toml"
    cfg.write_text("[database]\nurl = 1\n")
    res = CliRunner().invoke(main, ["check-config", "--syntax-only", str(cfg)])
    assert res.exit_code == EX_CONFIG and "error(s)" in res.output
    assert "rfidd hq check-config" not in res.output
