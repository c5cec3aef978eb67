"""One version everywhere: the package metadata (pyproject.toml, as installed)."""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from click.testing import CliRunner

import rfidd
from rfidd import version as V
from rfidd.cli import main
from rfidd.metrics import Metrics


def test_cli_module_and_metric_say_the_packages_version() -> None:
    installed = metadata.version("rfidd")
    project = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    assert installed == project["project"]["version"], \
        "the installed metadata is stale: pip install -e . again"
    res = CliRunner().invoke(main, ["--version"], prog_name="rfidd")
    assert res.exit_code == 0 and res.output.strip() == f"rfidd, version {installed}"
    assert rfidd.__version__ == installed
    reg = Metrics().registry
    assert reg.get_sample_value("rfidd_build_info", {"version": installed}) == 1.0
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = rfidd.nope


def test_an_uninstalled_tree_says_unknown_not_a_made_up_number(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(_name: str) -> str:
        raise metadata.PackageNotFoundError("rfidd")

    monkeypatch.setattr(V, "version", missing)
    V.package_version.cache_clear()
    try:
        assert V.package_version() == V.UNKNOWN
    finally:
        V.package_version.cache_clear()
