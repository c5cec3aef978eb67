"""`rfidd <command>` imports only that command's modules: a one-line query must not pay for
the whole daemon (five `rfidd hq history` at once timed out at 60 s on a loaded machine)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click
import pytest

from rfidd.cli import LAZY_COMMANDS, main

ROOT = Path(__file__).resolve().parents[2]


def test_hq_history_does_not_import_the_daemon() -> None:
    code = ("import sys; from rfidd.cli import main; import click; "
            "main.get_command(click.Context(main), 'hq'); "
            "print(sorted(m for m in ('rfidd.app', 'rfidd.benchmark', 'fastapi', 'sllurp') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("name", sorted(LAZY_COMMANDS))
def test_every_lazy_command_loads_under_its_own_name(name: str) -> None:
    cmd = main.get_command(click.Context(main), name)
    assert cmd is not None and cmd.name == name
    assert name in main.list_commands(click.Context(main))


def test_ops_bench_is_registered_when_ops_loads() -> None:
    ops = main.get_command(click.Context(main), "ops")
    assert isinstance(ops, click.Group) and "bench" in ops.commands
