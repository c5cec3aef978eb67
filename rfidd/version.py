"""The version of this rfidd: the installed distribution's (pyproject.toml), read once.

One source for `rfidd --version` (click reads the same metadata), `rfidd.__version__` and the
`rfidd_build_info{version}` metric, so a dashboard, a bug report and the package agree.
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import PackageNotFoundError, version

UNKNOWN = "0+unknown"


@cache
def package_version() -> str:
    """The installed `rfidd` distribution's version; UNKNOWN for a source tree run uninstalled
    (never a made-up number)."""
    try:
        return version("rfidd")
    except PackageNotFoundError:
        return UNKNOWN


__all__ = ["UNKNOWN", "package_version"]
