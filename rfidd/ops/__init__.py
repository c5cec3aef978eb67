"""Store operations in the daemon: catalog, ASN reception, cycle counts, shrinkage.

What app.py and cli.py wire (the only public surface):
  StoreOps(ctx)                         the service (change hooks, HQ commands `asn`, `catalog`)
  register_routes(api, ops)             HTTP routes under /api/v1/ops
  add_scheduled_jobs(scheduler, ops)    live-count refresh, timed stops, stored count schedules
  ops_cli                               the `rfidd ops ...` click group (talks to the HTTP API)
  bench_command                         the `rfidd bench` click command
"""

from __future__ import annotations

from typing import Any

from rfidd.ops.bench import bench_command
from rfidd.ops.cli import ops_cli
from rfidd.ops.service import OpsError, OpsSettings, StoreOps


def register_routes(api: Any, ops: StoreOps) -> None:
    """The HTTP routes (imported here, not at import of the package: the CLI needs no web
    framework)."""
    from rfidd.ops.api import register_routes as register

    register(api, ops)


def add_scheduled_jobs(scheduler: Any, ops: StoreOps) -> None:
    """Register the ops jobs on the daemon's APScheduler (call before or after it starts)."""
    ops.attach_scheduler(scheduler)


__all__ = [
    "OpsError",
    "OpsSettings",
    "StoreOps",
    "add_scheduled_jobs",
    "bench_command",
    "ops_cli",
    "register_routes",
]
