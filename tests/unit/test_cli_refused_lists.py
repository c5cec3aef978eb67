"""`rfidd readers` and `rfidd alerts list` refused by the daemon (a wrong token): one line on
stderr naming the problem, exit 1, nothing on stdout; as every `rfidd ops` command."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from fakeapi import always, serve_json

from rfidd.lifecycle.alerts_cli import alerts_cli
from rfidd.readers_cli import readers_command


@pytest.fixture
def api() -> Iterator[str]:
    with serve_json(always({"error": "authentication required"}, 401)) as url:
        yield url


@pytest.mark.parametrize("args", [["--json"], []])
def test_refused_lists_say_so_in_one_line(api: str, args: list[str]) -> None:
    for cmd, argv in ((readers_command, ["--api", api, *args]),
                      (alerts_cli, ["--api", api, "list", *args])):
        r = CliRunner().invoke(cmd, argv, env={"RFIDD_TOKEN": "wrong"})
        assert r.exit_code == 1, (cmd.name, r.output)
        assert r.stdout == "", (cmd.name, r.stdout)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: not authenticated"), lines
        assert "(HTTP 401)" in lines[0]


def _refusal(api: str, env: dict[str, str | None]) -> str:
    """The one stderr line of `rfidd ops count list` and `rfidd readers` refused with 401."""
    from rfidd.ops import ops_cli

    lines = []
    for cmd, argv in ((ops_cli, ["--api", api, "count", "list"]),
                      (readers_command, ["--api", api])):
        r = CliRunner().invoke(cmd, argv, env=env)
        assert r.exit_code == 1, r.output
        lines.append(r.stderr.strip())
    assert lines[0] == lines[1], lines  # one wording everywhere
    return lines[0]


def test_the_401_hint_names_rfidd_token_when_that_was_sent(api: str, tmp_path: Path) -> None:
    line = _refusal(api, {"RFIDD_TOKEN": "wrong", "RFIDD_TOKEN_FILE": str(tmp_path / "t")})
    assert "refused the token in RFIDD_TOKEN" in line, line
    assert "/run/rfidd/cli-token" not in line


def test_the_401_hint_names_the_token_file_that_was_read(api: str, tmp_path: Path) -> None:
    token_file = tmp_path / "cli-token"
    token_file.write_text("stale\n", encoding="utf-8")
    line = _refusal(api, {"RFIDD_TOKEN": None, "RFIDD_TOKEN_FILE": str(token_file)})
    assert f"refused the token of {token_file} (RFIDD_TOKEN_FILE)" in line, line
    assert "RFIDD_TOKEN " not in line.split("?")[0]


def test_the_401_hint_says_no_token_was_sent_and_why(api: str, tmp_path: Path) -> None:
    absent = tmp_path / "no-such-token"
    line = _refusal(api, {"RFIDD_TOKEN": None, "RFIDD_TOKEN_FILE": str(absent)})
    assert f"no token sent (RFIDD_TOKEN is not set and the token file {absent}" in line, line
    assert "No such file or directory" in line
