"""Store operations in the daemon, one module per job:

  catalog.py        CatalogService        products (files, API, HQ `catalog`), lookups
  reception.py      ReceptionService      ASNs (files, API, HQ `asn`) and reception sessions
  counting.py       CountingService       cycle counts, live progress, count reports
  exits.py          ExitService           exit alerts, the loss tracker, the shrinkage report
  replenishment.py  ReplenishmentService  stockroom -> floor list
  schedules.py      Schedules             count schedules, retention, nightly shrinkage report,
                                          the periodic ops tick (persistent, misfire policy)
  common.py         OpsError, OpsSettings and what the services share
  api.py            register_routes       HTTP routes under /api/v1/ops
  cli.py            ops_cli               the `rfidd ops ...` click group (talks to the HTTP API)
  count_cli.py                            `rfidd ops takeover`, `count pass`, `count recount`
  books.py                                what the services ask the lifecycle books
  bench.py          bench_command         the `rfidd bench` click command

rfidd/builders.py (`build_ops`) builds and wires them, called by rfidd/app.py.
"""

from __future__ import annotations

from typing import Any

from rfidd.ops.catalog import CatalogService
from rfidd.ops.common import OpsError, OpsSettings
from rfidd.ops.counting import CountingService
from rfidd.ops.exits import ExitService
from rfidd.ops.reception import ReceptionService
from rfidd.ops.replenishment import ReplenishmentService
from rfidd.ops.schedules import Schedules, ScheduleSettings


def __getattr__(name: str) -> Any:
    """The click commands, imported on first use: the daemon needs neither click's CLI nor
    rich (~5 MiB of an idle daemon's memory)."""
    if name == "ops_cli":
        import rfidd.ops.count_cli  # noqa: F401  (registers takeover, count pass, count recount)
        from rfidd.cli_api import accept_api_everywhere
        from rfidd.ops.cli import ops_cli

        # `rfidd ops count list --api URL` as `rfidd ops --api URL ...`; once, then cached
        accept_api_everywhere(ops_cli)
        globals()["ops_cli"] = ops_cli
        return ops_cli
    if name == "bench_command":
        from rfidd.ops.bench import bench_command

        return bench_command
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def register_routes(api: Any, **services: Any) -> None:
    """The HTTP routes (rfidd.ops.api), imported on use: the CLI needs no web framework."""
    from rfidd.ops.api import register_routes as register

    register(api, **services)


__all__ = [
    "CatalogService",
    "CountingService",
    "ExitService",
    "OpsError",
    "OpsSettings",
    "ReceptionService",
    "ReplenishmentService",
    "ScheduleSettings",
    "Schedules",
    "bench_command",
    "ops_cli",
    "register_routes",
]
