"""`rfidd demo`'s progress line on a terminal: it fits the width, bar and time left included,
saying as much as fits (rendered by rich as the demo renders it)."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

from rfidd.demo import PROGRESS_RESERVED, demo_progress, progress_text

ZONES = {"door": 12, "exit": 3, "floor": 1_204, "reception": 48, "stockroom": 2_513}
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _render(width: int) -> list[str]:
    buf = io.StringIO()
    console = Console(file=buf, width=width, force_terminal=True, color_system=None)
    with demo_progress(console) as progress:
        task = progress.add_task("starting readers", total=60)
        progress.update(task, completed=20, description=progress_text(
            3, 3, 123_456, ZONES, console.width - PROGRESS_RESERVED))
        progress.refresh()
    frames = re.split(r"[\r\n]", ANSI.sub("", buf.getvalue()))
    return [f for f in frames if "reads" in f]


@pytest.mark.parametrize(("width", "whole"), [(80, True), (120, True), (60, False)])
def test_the_line_fits_the_terminal_with_its_bar_and_time_left(width: int, whole: bool) -> None:
    lines = _render(width)
    assert lines, "no progress line rendered"
    last = lines[-1]
    assert len(last.rstrip()) <= width, last
    assert "━" in last and re.search(r"\d:\d\d:\d\d|-:--:--", last), last
    assert "123,456 reads" in last
    assert ("…" not in last) is whole, last  # only a terminal narrower than 80 loses the end


def test_it_says_the_most_that_fits() -> None:
    full = progress_text(3, 3, 123_456, ZONES, 200)
    assert full == ("3/3 readers online · 123,456 reads · door 12 exit 3 floor 1204 "
                    "reception 48 stockroom 2513")
    assert progress_text(3, 3, 123_456, ZONES, 51) == "3/3 online · 123,456 reads · 3,780 located"
    tight = progress_text(3, 3, 123_456, ZONES, 20)
    assert len(tight) == 20 and tight.endswith("…")
