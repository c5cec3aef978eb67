"""The one rich console of every command that prints tables (README: "full width when piped,
so no id is cut")."""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.table import Table

PIPED_WIDTH = 10_000


class _FoldingConsole(Console):
    """A terminal's console whose tables fold what does not fit instead of cutting it with
    "…": on a narrow terminal an EPC or a count id then spans two lines, still whole (a cut
    one is an id lost: it cannot be copied into the next command)."""

    def print(self, *objects: Any, **kwargs: Any) -> None:
        for obj in objects:
            if isinstance(obj, Table):
                for col in obj.columns:
                    if col.overflow == "ellipsis":  # rich's default; a choice made is kept
                        col.overflow = "fold"
        super().print(*objects, **kwargs)


def table_console() -> Console:
    """Terminal width on a terminal (tables folded, never cut); piped, wide enough that no
    line is wrapped and no id is ever cut."""
    return _FoldingConsole() if sys.stdout.isatty() else Console(width=PIPED_WIDTH)
