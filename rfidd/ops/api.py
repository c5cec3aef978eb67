"""HTTP routes of store operations under /api/v1/ops (what the `rfidd ops` CLI calls).

Files travel as text in JSON ({"format": "csv", "text": "...", "source": "name.csv"}): the API
is loopback-only and takes bodies up to 1 MiB; CSV and other text downloads come back as
{"content_type": "text/csv", "text": "..."} because the router answers JSON.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from inventory.reports import replenishment_csv
from rfidd.api import Api, ApiError
from rfidd.ops.catalog import CatalogService
from rfidd.ops.common import OpsError
from rfidd.ops.counting import CountingService
from rfidd.ops.exits import ExitService
from rfidd.ops.reception import ReceptionService
from rfidd.ops.replenishment import ReplenishmentService
from rfidd.ops.schedules import Schedules

P = "/api/v1/ops"
Params = dict[str, str]
Query = dict[str, list[str]]
Route = Callable[[Params, Query, Any], tuple[int, Any]]


def parse_time(value: Any, field: str) -> float:
    """Epoch seconds or ISO 8601 with an offset; the error names the field."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
        try:
            dt = datetime.fromisoformat(value)
        except ValueError:
            raise ApiError(400, f"{field}: {value!r} is not epoch seconds or ISO 8601") from None
        if dt.tzinfo is None:
            raise ApiError(400, f"{field}: {value!r} needs a UTC offset (e.g. Z or +02:00)")
        return dt.timestamp()
    raise ApiError(400, f"{field}: {value!r} is not epoch seconds or ISO 8601")


def _seconds(value: Any) -> float | None:
    if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool)):
        raise ApiError(400, "duration_s: must be a number of seconds")
    return None if value is None else float(value)


def _q(query: Query, name: str) -> str | None:
    v = query.get(name)
    return v[-1] if v else None


def _body(body: Any) -> dict[str, Any]:
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise ApiError(400, "request body must be a JSON object")
    return body


def _text_file(body: dict[str, Any]) -> tuple[str, str, str]:
    text = body.get("text")
    if not isinstance(text, str):
        raise ApiError(400, "text: the file content (a string) is required")
    fmt = body.get("format", "csv")
    if fmt not in ("csv", "json"):
        raise ApiError(400, f"format: {fmt!r} is not csv or json")
    source = body.get("source", "<api>")
    return text, str(fmt), str(source)[:256]


def _wrap(fn: Route) -> Route:
    def handler(p: Params, q: Query, b: Any) -> tuple[int, Any]:
        try:
            return fn(p, q, b)
        except OpsError as exc:
            raise ApiError(exc.status, str(exc)) from None
    return handler


def register_routes(api: Api, *, catalog: CatalogService, reception: ReceptionService,
                    counting: CountingService, schedules: Schedules, exits: ExitService,
                    replenishment: ReplenishmentService) -> None:
    """Add the store-operations routes to the daemon's HTTP API, each to its service."""

    def route(method: str, path: str, fn: Route) -> None:
        api.route(method, P + path, _wrap(fn))

    # catalog
    def catalog_import(_p: Params, _q: Query, b: Any) -> tuple[int, Any]:
        body = _body(b)
        if isinstance(body.get("products"), list):
            from inventory.catalog import parse_catalog_records

            res = catalog.import_catalog(parse_catalog_records(body["products"], "<api>"))
        else:
            res = catalog.import_catalog_text(*_text_file(body))
        return (200 if not res["errors"] else 422 if not res["imported"] else 200), res

    route("POST", "/catalog", catalog_import)
    route("GET", "/catalog/classification", lambda p, q, b: (200, catalog.classification()))

    # ASNs and receptions
    def asn_import(_p: Params, _q: Query, b: Any) -> tuple[int, Any]:
        body = _body(b)
        open_reception = body.get("open_reception")
        if open_reception is not None and not isinstance(open_reception, bool):
            raise ApiError(400, "open_reception: must be true or false")
        res = reception.import_asn_text(*_text_file(body), open_reception=open_reception)
        bad = res["errors"] or res["conflicts"]
        return (422 if bad else 200), res

    def asn_get(p: Params, _q: Query, _b: Any) -> tuple[int, Any]:
        return 200, reception.asn(p["asn_id"])

    def reception_open(_p: Params, _q: Query, b: Any) -> tuple[int, Any]:
        ids = _body(b).get("asn_ids")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise ApiError(400, "asn_ids: a list of ASN ids is required")
        return 201, reception.open_reception(ids, opened_by="staff")

    def reception_report(p: Params, q: Query, _b: Any) -> tuple[int, Any]:
        if _q(q, "format") == "csv":
            return 200, {"content_type": "text/csv", "text": reception.reception_csv(p["sid"])}
        return 200, reception.reception(p["sid"])

    route("POST", "/asns", asn_import)
    route("GET", "/asns/{asn_id}", asn_get)
    route("POST", "/receptions", reception_open)
    route("GET", "/receptions", lambda p, q, b: (200, reception.receptions()))
    route("GET", "/receptions/{sid}", reception_report)
    route("POST", "/receptions/{sid}/close",
          lambda p, q, b: (200, reception.close_reception(p["sid"])))

    # counts
    def count_start(_p: Params, _q: Query, b: Any) -> tuple[int, Any]:
        body = _body(b)
        zones = body.get("zones")
        if not isinstance(zones, list) or not all(isinstance(z, str) for z in zones):
            raise ApiError(400, "zones: a list of zone names is required")
        duration = _seconds(body.get("duration_s"))
        adopt = body.get("adopt")
        if adopt is not None and not isinstance(adopt, bool):
            raise ApiError(400, "adopt: must be true or false")
        return 201, counting.start_count(zones, duration_s=duration, adopt=bool(adopt))

    def count_pass(p: Params, _q: Query, b: Any) -> tuple[int, Any]:
        body = _body(b)
        zone, epcs = body.get("zone"), body.get("epcs")
        if not isinstance(zone, str):
            raise ApiError(400, "zone: the zone the pass covered is required")
        if not isinstance(epcs, list) or len(epcs) > 100_000:
            raise ApiError(400, "epcs: a list of up to 100000 EPCs (hex or SGTIN URI)")
        device, operator = body.get("device"), body.get("operator")
        if not all(v is None or isinstance(v, str) for v in (device, operator)):
            raise ApiError(400, "device, operator: must be strings")
        return 200, counting.add_pass(p["cid"], zone, epcs, device, operator)

    def count_recount(p: Params, _q: Query, b: Any) -> tuple[int, Any]:
        return 201, counting.recount(p["cid"], _seconds(_body(b).get("duration_s")))

    def count_get(p: Params, q: Query, _b: Any) -> tuple[int, Any]:
        if _q(q, "format") == "csv":
            return 200, {"content_type": "text/csv", "text": counting.count_csv(p["cid"])}
        return 200, counting.count(p["cid"])

    route("POST", "/counts", count_start)
    route("GET", "/counts", lambda p, q, b: (200, counting.counts()))
    route("GET", "/counts/{cid}", count_get)
    route("POST", "/counts/{cid}/stop", lambda p, q, b: (200, counting.stop_count(p["cid"])))
    route("POST", "/counts/{cid}/passes", count_pass)
    route("POST", "/counts/{cid}/recount", count_recount)

    def schedule_add(_p: Params, _q: Query, b: Any) -> tuple[int, Any]:
        body = _body(b)
        cron, zones, duration = body.get("cron"), body.get("zones"), body.get("duration_s")
        if not isinstance(cron, str):
            raise ApiError(400, "cron: a crontab expression is required, e.g. '0 7 * * 1'")
        if not isinstance(zones, list) or not all(isinstance(z, str) for z in zones):
            raise ApiError(400, "zones: a list of zone names is required")
        if duration is not None and not isinstance(duration, (int, float)):
            raise ApiError(400, "duration_s: must be a number of seconds")
        return 201, schedules.add_schedule(cron, zones, duration)

    def schedule_delete(p: Params, _q: Query, _b: Any) -> tuple[int, Any]:
        if not p["sid"].isdigit():
            raise ApiError(400, f"schedule id {p['sid']!r} is not a number")
        schedules.delete_schedule(int(p["sid"]))
        return 200, {"deleted": int(p["sid"])}

    route("POST", "/count-schedules", schedule_add)
    route("GET", "/count-schedules", lambda p, q, b: (200, schedules.schedules()))
    route("POST", "/count-schedules/{sid}/delete", schedule_delete)

    # shrinkage and replenishment
    def period(values: dict[str, Any]) -> tuple[float, float]:
        import time

        until = parse_time(values["until"], "until") if values.get("until") is not None \
            else time.time()
        since = parse_time(values["since"], "since") if values.get("since") is not None \
            else until - 30 * 86400.0
        return since, until

    def shrinkage_get(_p: Params, q: Query, _b: Any) -> tuple[int, Any]:
        since, until = period({"since": _q(q, "since"), "until": _q(q, "until")})
        if _q(q, "format") == "csv":
            return 200, {"content_type": "text/csv",
                         "text": exits.shrinkage_csv(since, until, _q(q, "currency"))}
        return 200, exits.shrinkage(since, until, _q(q, "currency")).to_dict()

    def shrinkage_publish(_p: Params, _q: Query, b: Any) -> tuple[int, Any]:
        body = _body(b)
        since, until = period(body)
        currency = body.get("currency")
        if currency is not None and not isinstance(currency, str):
            raise ApiError(400, "currency: must be an ISO 4217 code")
        return 200, exits.shrinkage(since, until, currency, publish=True).to_dict()

    def replenishment_get(_p: Params, q: Query, _b: Any) -> tuple[int, Any]:
        raw = _q(q, "floor_min") or "1"
        if not raw.isdigit():
            raise ApiError(400, f"floor_min: {raw!r} is not a whole number")
        lines = replenishment.replenishment(int(raw))
        if _q(q, "format") == "csv":
            return 200, {"content_type": "text/csv", "text": replenishment_csv(lines)}
        return 200, {"lines": [ln.to_dict() for ln in lines]}

    route("GET", "/shrinkage", shrinkage_get)
    route("POST", "/shrinkage", shrinkage_publish)
    route("GET", "/shrinkage/suspected", lambda p, q, b: (200, exits.suspected()))
    route("GET", "/replenishment", replenishment_get)
