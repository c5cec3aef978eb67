"""`rfidd readers` rows: an offline reader reports no antennas (not its last value), a reader
with nothing in its field says which antennas are silent without a stray space, and a reader
that read then went quiet says for how long."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner
from fakeapi import always, serve_json

from rfidd.readers_cli import _antennas, readers_command

ROWS: dict[str, Any] = {
    "door": {"state": "online", "silent": False, "no_tag_s": 12, "antennas": [1, 2],
             "antennas_reporting": [1]},
    "dock": {"state": "offline", "silent": False, "no_tag_s": None, "antennas": [1, 2],
             "antennas_reporting": [1, 2]},
}


def test_antennas_text() -> None:
    assert _antennas({"state": "online", "antennas": [1, 2], "antennas_reporting": []}) == \
        "[red](silent: 1,2)[/]"
    assert _antennas({"state": "online", "antennas": [1, 2], "antennas_reporting": [2]}) == \
        "2 [red](silent: 1)[/]"
    assert _antennas({"state": "offline", "antennas": [1, 2], "antennas_reporting": [1, 2]}) \
        == ""


@pytest.fixture
def api() -> Iterator[str]:
    with serve_json(always({"site": "s1", "readers": ROWS})) as url:
        yield url


def test_table_says_no_tag_for_n_s(api: str) -> None:
    r = CliRunner().invoke(readers_command, ["--api", api],
                           env={"RFIDD_TOKEN": "t", "COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    door = next(ln for ln in r.output.splitlines() if "door" in ln)
    dock = next(ln for ln in r.output.splitlines() if "dock" in ln)
    assert "no tag for 12 s" in door and "(silent: 2)" in door, door
    assert "1,2" not in dock, dock
