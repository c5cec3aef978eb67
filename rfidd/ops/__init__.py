"""Store operations in the daemon: catalog, ASN reception, cycle counts, shrinkage.

What app.py and cli.py wire (the only public surface):
  StoreOps(ctx)                         the service (change hooks, HQ commands `asn`, `catalog`)
  register_routes(api, ops)             HTTP routes under /api/v1/ops
  add_scheduled_jobs(scheduler, ops)    live-count refresh and timed stops (the tick)
  Schedules, ScheduleSettings           count schedules, retention, nightly shrinkage report
  ops_cli                               the `rfidd ops ...` click group (talks to the HTTP API)
  bench_command                         the `rfidd bench` click command
"""

from __future__ import annotations

from typing import Any

from rfidd.ops.api import register_routes
from rfidd.ops.bench import bench_command
from rfidd.ops.cli import ops_cli
from rfidd.ops.schedules import Schedules, ScheduleSettings
from rfidd.ops.service import OpsError, OpsSettings, StoreOps


def add_scheduled_jobs(scheduler: Any, ops: StoreOps) -> None:
    """Register the ops tick on the daemon's APScheduler (call before or after it starts)."""
    scheduler.add_job(ops.tick, "interval", seconds=ops.settings.tick_s, id="ops-tick",
                      replace_existing=True)


__all__ = [
    "OpsError",
    "OpsSettings",
    "ScheduleSettings",
    "Schedules",
    "StoreOps",
    "add_scheduled_jobs",
    "bench_command",
    "ops_cli",
    "register_routes",
]
