"""The one rich console of every command that prints tables (README: "full width when piped,
so no id is cut")."""

from __future__ import annotations

import sys

from rich.console import Console

PIPED_WIDTH = 10_000


def table_console() -> Console:
    """Terminal width on a terminal; piped, wide enough that no id is ever cut."""
    return Console() if sys.stdout.isatty() else Console(width=PIPED_WIDTH)
