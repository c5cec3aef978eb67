"""The site API's OpenAPI document is true: every route declares the model of its answer (with a
description on every field), and real answers of a running daemon — its real routes over a
loopback socket, a store day of receptions, counts, sales, alerts — validate against the schema
the daemon serves at /api/v1/openapi.json."""

from __future__ import annotations

import http.client
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

import jsonschema  # type: ignore[import-untyped]
import pytest
from fakes import FakeReader
from fastapi.routing import APIRoute
from pydantic import BaseModel
from waits import wait_until

from inventory.epc import sgtin96_hex
from rfidd.app import Daemon, Timings
from rfidd.config import Config
from rfidd.intake import IngestQueue
from rfidd.web.auth import add_user

pytestmark = pytest.mark.integration

GTIN = "00614141123452"
EPCS = [sgtin96_hex(GTIN, n, 7) for n in range(1, 7)]
PRODUCTS = [{"gtin": GTIN, "sku": "BAG-1", "name": "Sac Alma", "size": "U", "colour": "noir",
             "category": "bags", "price": "1200.00", "currency": "EUR"}]


class Site:
    def __init__(self, tmp_path: Path) -> None:
        users = tmp_path / "users.json"
        add_user(users, "Alice", ["manager"], "4821")  # type: ignore[list-item]
        cfg = Config.model_validate({
            "site": {"id": "schema-store", "name": "Schema", "kind": "store",
                     "sgln": "urn:epc:id:sgln:0614141.00002.0", "timezone": "Europe/Paris",
                     "company_prefixes": ["0614141"]},
            "database": {"url": f"sqlite:///{tmp_path / 'site.db'}", "batch_max_ms": 20},
            "mqtt": {"enabled": False},
            "http": {"port": 0, "auth": {"users_file": str(users), "failure_delay_s": 0,
                                         "cli_token_file": str(tmp_path / "cli-token")}},
            "zones": {"stock": {"kind": "stock"}, "floor": {"kind": "floor"},
                      "reception": {"kind": "reception"}, "exit": {"kind": "exit"},
                      "bench": {"kind": "bench"}},
            "readers": {"r1": {"kind": "llrp", "address": "127.0.0.1",
                               "antennas": {"1": "stock", "2": "floor", "3": "reception",
                                            "4": "exit", "5": "bench"}}},
        })
        self.readers: dict[str, FakeReader] = {}

        def factory(name: str, _rc: Any, q: IngestQueue) -> FakeReader:
            self.readers[name] = FakeReader(name, q)
            return self.readers[name]

        self.daemon = Daemon(cfg, timings=Timings(sweep_s=0.2), reader_factory=factory)
        self.daemon.start()
        assert self.daemon.api is not None and self.daemon.api.cli_token
        self.port = self.daemon.api.port
        self.token = self.daemon.api.cli_token
        self.answers: list[tuple[str, str, int, Any]] = []

    def call(self, method: str, path: str, body: Any = None,
             headers: dict[str, str] | None = None) -> tuple[int, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
        h = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json",
             **(headers or {})}
        conn.request(method, path, body=None if body is None else json.dumps(body), headers=h)
        resp = conn.getresponse()
        raw = resp.read()
        conn.close()
        data = json.loads(raw) if resp.getheader("content-type", "").startswith(
            "application/json") else raw
        self.answers.append((method, path, resp.status, data))
        return resp.status, data


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    s = Site(tmp_path)
    try:
        yield s
    finally:
        s.daemon.stop()


def _template(spec: dict[str, Any], method: str, path: str) -> str:
    """The spec's path template a concrete path matches (literal segments first)."""
    path = path.split("?")[0]
    best: tuple[int, str] | None = None
    for template, ops in spec["paths"].items():
        if method.lower() not in ops:
            continue
        rx = "^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)) + "$"
        if re.match(rx, path):
            literal = len(re.sub(r"\{[^/]+?\}", "", template))
            if best is None or literal > best[0]:
                best = (literal, template)
    assert best is not None, f"{method} {path} is not in the OpenAPI document"
    return best[1]


def _validate(spec: dict[str, Any], method: str, path: str, status: int, body: Any) -> None:
    op = spec["paths"][_template(spec, method, path)][method.lower()]
    documented = op["responses"].get(str(status))
    assert documented is not None, f"{method} {path}: status {status} is not documented"
    schema = documented["content"]["application/json"]["schema"]
    jsonschema.Draft202012Validator({**schema, "components": spec["components"]}).validate(body)


def test_real_answers_validate_against_the_served_schema(site: Site) -> None:
    c = site.call
    status, spec = c("GET", "/api/v1/openapi.json")
    assert status == 200
    site.answers.clear()

    # Sign-in, the audit, status.
    assert c("POST", "/api/v1/session", {"login": "Alice", "secret": "4821"})[0] == 200
    assert c("POST", "/api/v1/session", {"login": "Alice", "secret": "0000"})[0] == 401
    assert c("GET", "/api/v1/session")[0] == 200
    assert c("GET", "/api/v1/session/state")[1]["signed_in"] is True
    assert c("GET", "/api/v1/status")[0] == 200
    assert c("GET", "/api/v1/readers")[0] == 200
    assert c("GET", "/api/v1/readers/r1/find")[0] == 404

    # The catalog, a reception against an ASN, the items on the shelves.
    assert c("POST", "/api/v1/ops/catalog", {"products": PRODUCTS})[0] == 200
    asn = {"asn_id": "DESADV-1", "origin": "WH", "destination": "schema-store",
           "shipped_at": "2026-12-01T08:00:00Z", "epcs": EPCS[:4], "lines": []}
    status, imported = c("POST", "/api/v1/ops/asns", {"format": "json", "text": json.dumps(asn),
                                                      "open_reception": True})
    assert status == 200, imported
    assert c("GET", "/api/v1/ops/asns/DESADV-1")[0] == 200
    sid = imported["reception"]
    site.readers["r1"].read([*EPCS[:3], EPCS[5]], antenna=3)
    wait_until(lambda: c("GET", f"/api/v1/ops/receptions/{sid}")[1]["progress"]["read"] >= 3,
               timeout=10, what="reception reads")
    for path in ("/api/v1/ops/receptions", f"/api/v1/ops/receptions/{sid}?format=csv",
                 "/api/v1/page/receptions", f"/api/v1/page/receptions/{sid}",
                 "/api/v1/page/context"):
        assert c("GET", path)[0] == 200, path
    assert c("POST", f"/api/v1/ops/receptions/{sid}/close", {"note": "short one"})[0] == 200
    assert c("GET", f"/api/v1/ops/receptions/{sid}")[0] == 200
    asn2 = {**asn, "asn_id": "DESADV-2", "epcs": [sgtin96_hex(GTIN, 50, 7)]}
    assert c("POST", "/api/v1/ops/asns", {"format": "json", "text": json.dumps(asn2),
                                          "open_reception": False})[0] == 200
    status, opened = c("POST", "/api/v1/ops/receptions", {"asn_ids": ["DESADV-2"]})
    assert status == 201, opened
    assert c("POST", f"/api/v1/ops/receptions/{opened['session_id']}/close")[0] == 200
    site.readers["r1"].read(EPCS[:3], antenna=1)
    site.readers["r1"].read(EPCS[3:4], antenna=2)

    # A count with a handheld pass, stopped, recounted; its CSV; the page's view.
    status, count = c("POST", "/api/v1/ops/counts", {"zones": ["stock", "floor"]})
    assert status == 201, count
    cid = count["session_id"]
    assert c("POST", f"/api/v1/ops/counts/{cid}/passes",
             {"zone": "floor", "epcs": [EPCS[3]], "device": "tsl-1"})[0] == 200
    assert c("GET", f"/api/v1/page/counts/{cid}")[0] == 200
    assert c("GET", "/api/v1/ops/counts")[0] == 200
    assert c("POST", f"/api/v1/ops/counts/{cid}/stop")[0] == 200
    for path in (f"/api/v1/ops/counts/{cid}", f"/api/v1/ops/counts/{cid}?format=csv",
                 f"/api/v1/page/counts/{cid}", "/api/v1/ops/catalog/classification"):
        assert c("GET", path)[0] == 200, path
    c("POST", f"/api/v1/ops/counts/{cid}/recount", {})
    assert c("GET", "/api/v1/ops/counts/nope")[0] == 404

    # Schedules and jobs.
    status, sched = c("POST", "/api/v1/ops/count-schedules",
                      {"cron": "30 6 * * 1-5", "zones": ["stock"], "duration_s": 600})
    assert status == 201, sched
    assert c("GET", "/api/v1/ops/count-schedules")[0] == 200
    assert c("GET", "/api/v1/ops/schedules")[0] == 200
    assert c("POST", f"/api/v1/ops/count-schedules/{sched['id']}/delete")[0] == 200

    # Lifecycle: a sale, a refused one, the item's history; an exit alert, acknowledged and
    # resolved; commissioning at the bench.
    status, sold = c("POST", "/api/v1/lifecycle/sale", {"txn": "R-1", "epcs": [EPCS[0]]})
    assert status == 200, sold
    assert c("POST", "/api/v1/lifecycle/sale", {"txn": "R-2", "epcs": [EPCS[0]]})[0] == 409
    assert c("POST", "/api/v1/lifecycle/sale", {"txn": 5})[0] == 400
    assert c("GET", f"/api/v1/lifecycle/items/{EPCS[0]}")[0] == 200
    assert c("GET", f"/api/v1/items/{EPCS[1]}")[0] == 200
    assert c("POST", "/api/v1/lifecycle/loans/check-overdue")[0] == 200
    site.readers["r1"].read([EPCS[2]], antenna=4)
    wait_until(lambda: c("GET", "/api/v1/alerts")[1]["alerts"], timeout=10,
               what="an exit alert")
    aid = c("GET", "/api/v1/alerts")[1]["alerts"][0]["alert_id"]
    assert c("GET", f"/api/v1/alerts/{aid}")[0] == 200
    assert c("POST", f"/api/v1/alerts/{aid}/acknowledge", {"note": "checking"})[0] == 200
    assert c("POST", f"/api/v1/alerts/{aid}/resolve", {"resolution": "false_alarm"})[0] == 200
    assert c("POST", f"/api/v1/alerts/{aid}/resolve", {"resolution": "recovered"})[0] in (
        200, 409)
    status, sess = c("POST", "/api/v1/lifecycle/commissioning/sessions",
                     {"gtin": GTIN, "expected": 2})
    assert status == 201, sess
    assert c("GET", "/api/v1/lifecycle/commissioning/sessions")[0] == 200
    assert c("GET", f"/api/v1/lifecycle/commissioning/sessions/{sess['id']}")[0] == 200
    assert c("POST", "/api/v1/lifecycle/commissioning/binds",
             {"epc": sgtin96_hex(GTIN, 900, 7), "session": sess["id"]})[0] == 201
    assert c("POST", f"/api/v1/lifecycle/commissioning/sessions/{sess['id']}/close")[0] == 200

    # Reports, the pick list, the page's views, the audit of all the writes above.
    for path in ("/api/v1/ops/shrinkage", "/api/v1/ops/shrinkage?format=csv",
                 "/api/v1/ops/shrinkage/suspected", "/api/v1/ops/replenishment",
                 "/api/v1/ops/replenishment?format=csv", "/api/v1/page/replenishment",
                 "/api/v1/page/alerts", "/api/v1/page/find?q=alma",
                 f"/api/v1/page/find?q={EPCS[1]}", "/api/v1/ops/audit"):
        assert c("GET", path)[0] == 200, path
    assert c("POST", "/api/v1/ops/shrinkage", {"currency": "EUR"})[0] == 200

    # The floor screens: a hold placed, listed, refused twice, released; alerts; find; the
    # desk and the floor line (nothing yet); the handhelds (none here).
    held = c("POST", "/api/v1/floor/holds", {"epc": EPCS[1], "client": "C-1042"})[1]
    assert held["accepted"] is True, held
    assert c("POST", "/api/v1/floor/holds", {"epc": EPCS[1], "client": "C-1042"})[1][
        "accepted"] is False
    refused = c("POST", "/api/v1/floor/holds", {"epc": EPCS[3], "client": "C-7"})[1]
    assert not refused["accepted"] and "not on record" in refused["reason"]  # never received
    assert c("POST", "/api/v1/floor/holds", {"epc": EPCS[1], "client": "<x>"})[0] == 422
    assert [h["epc"] for h in c("GET", "/api/v1/floor/holds")[1]["holds"]] == [EPCS[1]]
    assert c("POST", f"/api/v1/floor/holds/{EPCS[1]}/release")[1]["accepted"] is True
    assert c("GET", "/api/v1/floor/alerts")[0] == 200
    assert c("GET", "/api/v1/floor/find?q=alma")[1]["results"]
    assert c("GET", "/api/v1/floor/find?q=%20")[0] == 422
    assert c("GET", "/api/v1/floor/desk")[1]["seq"] == 0
    assert c("GET", "/api/v1/floor/line")[1]["seq"] == 0
    assert c("GET", "/api/v1/floor/handhelds")[1] == {"handhelds": []}
    assert c("POST", "/api/v1/floor/find/r1", {"epc": EPCS[1]})[0] == 404
    assert c("POST", "/api/v1/session/close")[0] == 200

    answered = {(m, _template(spec, m, p)) for m, p, _s, _b in site.answers}
    for method, path, status, body in site.answers:
        _validate(spec, method, path, status, body)
    # Every JSON operation of the document was exercised by at least one real answer.
    json_ops = {(m.upper(), p) for p, ops in spec["paths"].items() for m, op in ops.items()
                if "application/json" in op["responses"].get(
                    "200", op["responses"].get("201", {})).get("content", {})}
    # (the find modes need a handheld: tests/browser/test_floor_page.py drives them)
    assert json_ops - answered - {("POST", "/api/v1/readers/{reader}/find"),
                                  ("POST", "/api/v1/floor/find/{reader}")} == set()


def test_a_wrong_answer_fails_the_validation(site: Site) -> None:
    """The check above can fail: an answer missing a documented field does not validate."""
    _, spec = site.call("GET", "/api/v1/openapi.json")
    status, body = site.call("GET", "/api/v1/status")
    assert status == 200
    del body["uptime_s"]
    with pytest.raises(jsonschema.ValidationError):
        _validate(spec, "GET", "/api/v1/status", 200, body)


def _models(tp: Any) -> list[type[BaseModel]]:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [tp]
    return [m for a in get_args(tp) for m in _models(a)]


def _undescribed(model: type[BaseModel], seen: set[type[BaseModel]]) -> list[str]:
    if model in seen:
        return []
    seen.add(model)
    out = []
    for name, f in model.model_fields.items():
        if not f.description:
            out.append(f"{model.__name__}.{name}")
        for sub in _models(f.annotation):
            out += _undescribed(sub, seen)
    return out


def _api_routes(routes: list[Any]) -> Iterator[APIRoute]:
    """Every APIRoute, also in included routers (FastAPI >= 0.16x includes them lazily)."""
    for r in routes:
        if isinstance(r, APIRoute):
            yield r
        inner = getattr(r, "original_router", None)
        if inner is not None:
            yield from _api_routes(inner.routes)


def test_every_route_declares_a_described_answer(site: Site) -> None:
    app = site.daemon.api.app  # type: ignore[union-attr]
    missing: list[str] = []
    undescribed: list[str] = []
    routes = [r for r in _api_routes(app.routes)
              if r.include_in_schema or r.path == "/healthz"]
    assert len(routes) > 50
    for r in routes:
        media = getattr(r.response_class, "media_type", None)
        models = _models(r.response_model)
        if not models and media in (None, "application/json"):
            missing.append(f"{sorted(r.methods)} {r.path}")
        for m in models:
            undescribed += _undescribed(m, set())
    assert missing == []
    assert sorted(set(undescribed)) == []
    # And the served document names a schema for each JSON answer.
    _, spec = site.call("GET", "/api/v1/openapi.json")
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            ok = op["responses"].get("200") or op["responses"].get("201")
            assert ok is not None, f"{method} {path}"
            content = ok["content"]
            if "application/json" in content:
                assert content["application/json"]["schema"] not in ({}, {"type": "object"}), \
                    f"{method} {path} documents no answer"


def test_answers_keep_the_services_shape(site: Site) -> None:
    """The JSON is the service's dict: no key it left out appears as null, and keys the
    models do not name survive."""
    ops = site.daemon.ops
    assert ops is not None
    status, body = site.call("POST", "/api/v1/ops/counts", {"zones": ["stock"]})
    assert status == 201
    cid = body["session_id"]
    assert "pass" not in body and "report" not in body and "finished_at" not in body
    assert site.call("GET", f"/api/v1/ops/counts/{cid}")[1] == json.loads(
        json.dumps(ops.counting.count(cid)))
    assert site.call("GET", "/api/v1/ops/receptions")[1] == json.loads(
        json.dumps(ops.reception.receptions()))
    assert site.call("GET", "/api/v1/ops/catalog/classification")[1] == json.loads(
        json.dumps(ops.catalog.classification()))
