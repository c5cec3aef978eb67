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
