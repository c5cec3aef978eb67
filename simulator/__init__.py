"""Reader simulators and store scenarios (LLRP here; a serial simulator lives beside it).

Kept import-light: `from simulator import SimulatedSite, Scenario` loads the LLRP parts lazily.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Scenario", "SimulatedReader", "SimulatedSite", "World"]


def __getattr__(name: str) -> Any:
    if name in ("Scenario", "World"):
        from simulator import scenario

        return getattr(scenario, name)
    if name == "SimulatedSite":
        from simulator.llrp.site import SimulatedSite

        return SimulatedSite
    if name == "SimulatedReader":
        from simulator.llrp.reader import SimulatedReader

        return SimulatedReader
    raise AttributeError(f"module 'simulator' has no attribute {name!r}")
