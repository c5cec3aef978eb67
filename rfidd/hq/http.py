"""HQ query API over HTTP: where is an item, its history across sites, the sites' status.

Served by the project's small standard-library router (rfidd.api.Api), which also exposes the
consumer's Prometheus metrics on /metrics.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from prometheus_client import CollectorRegistry
from sqlalchemy import Engine

from rfidd.api import Api, ApiError
from rfidd.hq import query
from rfidd.hq.consumer import HqConsumer

MAX_HISTORY = 10_000


def _epc(params: dict[str, str]) -> str:
    try:
        return query.normalize_epc(unquote(params["epc"]))
    except query.EpcInputError as exc:
        raise ApiError(400, str(exc)) from None


def build_api(
    engine: Engine,
    registry: CollectorRegistry,
    *,
    listen: str = "127.0.0.1",
    port: int = 0,
    consumer: HqConsumer | None = None,
) -> Api:
    """An Api (not started) with the HQ routes; call start()/stop() on it."""
    api = Api(registry, listen, port)

    def item(params: dict[str, str], _q: dict[str, list[str]], _b: Any) -> tuple[int, Any]:
        epc = _epc(params)
        last = query.where(engine, epc)
        if last is None:
            raise ApiError(404, f"no event names {epc}")
        return 200, {"epc": epc, **last.to_json()}

    def history(params: dict[str, str], q: dict[str, list[str]], _b: Any) -> tuple[int, Any]:
        epc = _epc(params)
        raw = q.get("limit", [str(MAX_HISTORY)])[-1]
        if not raw.isdigit() or not 1 <= int(raw) <= MAX_HISTORY:
            raise ApiError(400, f"limit must be 1-{MAX_HISTORY}, got {raw!r}")
        events = query.history(engine, epc, limit=int(raw))
        if not events:
            raise ApiError(404, f"no event names {epc}")
        return 200, {"epc": epc, "events": [e.to_json() for e in events]}

    def sites(_p: dict[str, str], _q: dict[str, list[str]], _b: Any) -> tuple[int, Any]:
        return 200, {"sites": [s.to_json() for s in query.sites(engine)]}

    def status(_p: dict[str, str], _q: dict[str, list[str]], _b: Any) -> tuple[int, Any]:
        if consumer is None:
            raise ApiError(404, "no consumer runs in this process")
        s = consumer.snapshot()
        return 200, {
            "mqtt_connected": consumer.connected,
            "messages": s.messages,
            "messages_malformed": s.messages_malformed,
            "events_stored": s.events_stored,
            "events_duplicate": s.events_duplicate,
            "events_malformed": s.events_malformed,
            "db_errors": s.db_errors,
        }

    api.route("GET", "/api/v1/items/{epc}", item)
    api.route("GET", "/api/v1/items/{epc}/history", history)
    api.route("GET", "/api/v1/sites", sites)
    api.route("GET", "/api/v1/status", status)
    return api
