"""HQ's EPCIS 2.0 REST interface over a real socket (uvicorn) on the real PostgreSQL."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import func, select

from rfidd.hq import tokens
from rfidd.hq.documents import parse_document
from rfidd.hq.epcis_api import EpcisServer, build_app
from rfidd.hq.store import Batch, HqStore, hq_events

pytestmark = pytest.mark.integration
DATA = Path(__file__).resolve().parents[1] / "data"
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
ST = "urn:epc:id:sgln:0614141.00777.0"


def sgtin(n: int) -> str:
    return f"urn:epc:id:sgtin:0614141.112345.{n}"


def event(epcs: list[str], t: datetime, step: str, disp: str, *, eid: str | None = None,
          action: str = "OBSERVE") -> dict[str, Any]:
    return {"type": "ObjectEvent", "eventID": eid or f"urn:uuid:{uuid.uuid4()}",
            "eventTime": t.isoformat().replace("+00:00", "Z"), "eventTimeZoneOffset": "+00:00",
            "epcList": epcs, "action": action, "bizStep": step, "disposition": disp,
            "readPoint": {"id": ST.removesuffix(".0") + ".dock"}, "bizLocation": {"id": ST}}


def document(*events: dict[str, Any]) -> dict[str, Any]:
    return {"@context": ["https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"],
            "type": "EPCISDocument", "schemaVersion": "2.0",
            "creationDate": "2026-11-02T09:00:00.000Z", "epcisBody": {"eventList": list(events)}}


class Client:
    def __init__(self, port: int, token: str | None) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.token = token

    def call(self, method: str, path: str, body: Any = None, *, token: str | None = "",
             ctype: str = "application/json") -> tuple[int, Any, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path if path.startswith("/") else path,
                                     data=data, method=method)
        tok = self.token if token == "" else token
        if tok:
            req.add_header("Authorization", f"Bearer {tok}")
        if data is not None:
            req.add_header("Content-Type", ctype)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                raw = r.read()
                return r.status, r.headers, json.loads(raw) if raw else None
        except urllib.error.HTTPError as e:
            raw = e.read()
            return e.code, e.headers, json.loads(raw) if raw else None


@pytest.fixture
def api(postgres_url: str) -> Iterator[tuple[HqStore, Client, Client]]:
    store = HqStore.open(postgres_url, known_sites_only=True)
    server = EpcisServer(build_app(store, CollectorRegistry(), capture_limit=5,
                                   capture_size_limit=64 * 1024))
    server.start()
    read = tokens.create(store.engine, "bi-tool", "read", T0)
    cap = tokens.create(store.engine, "workshop-erp", "capture", T0)
    try:
        yield store, Client(server.port, read), Client(server.port, cap)
    finally:
        server.stop()
        store.dispose()


def seed(store: HqStore) -> list[dict[str, Any]]:
    evs = [
        event([sgtin(1), sgtin(2)], T0, "shipping", "in_transit"),
        event([sgtin(1)], T0 + timedelta(hours=5), "receiving", "sellable_not_accessible"),
        event([sgtin(1)], T0 + timedelta(hours=6), "stocking", "sellable_accessible"),
        event([sgtin(3)], T0 + timedelta(hours=7), "receiving", "sellable_not_accessible"),
        event([sgtin(1)], T0 + timedelta(days=2), "retail_selling", "retail_sold"),
    ]
    doc = parse_document(json.dumps(document(*evs)), "st-01")
    assert not doc.errors
    store.write_batch(Batch(events=doc.events, trusted=True))
    return evs


def ids(body: dict[str, Any]) -> list[str]:
    """eventIDs of a result, sorted (HQ answers in record order, not document order)."""
    return sorted(e["eventID"]
                  for e in body["epcisBody"]["queryResults"]["resultsBody"]["eventList"])


def of(*evs: dict[str, Any]) -> list[str]:
    return sorted(e["eventID"] for e in evs)


def test_tokens_are_required_scoped_and_stored_hashed(api: Any) -> None:
    store, read, cap = api
    status, headers, body = read.call("GET", "/events", token=None)
    assert status == 401 and body["type"] == "epcisException:SecurityException"
    assert headers["content-type"] == "application/problem+json"
    assert headers["WWW-Authenticate"].startswith("Bearer")
    assert read.call("GET", "/events", token="rfq_wrong")[0] == 401
    status, _, body = read.call("POST", "/capture", document())
    assert status == 403 and "scope read" in body["detail"]
    assert cap.call("GET", "/events")[0] == 403
    from rfidd.hq.store import hq_tokens
    with store.engine.connect() as c:
        stored = c.execute(select(hq_tokens.c.digest)).scalars().all()
    assert read.token not in stored and tokens.digest(read.token) in stored


def test_standard_queries_by_epc_and_by_biz_step_in_a_time_window(api: Any) -> None:
    store, read, _ = api
    evs = seed(store)
    status, headers, body = read.call("GET", f"/events?MATCH_epc={sgtin(1)}")
    assert status == 200 and headers["GS1-EPCIS-Version"] == "2.0.0"
    assert headers["GS1-CBV-Version"] == "2.0.0"
    assert body["type"] == "EPCISQueryDocument" and body["@context"]
    assert ids(body) == of(evs[0], evs[1], evs[2], evs[4])
    win = (f"/events?EQ_bizStep=receiving&GE_eventTime={(T0 + timedelta(hours=1)).isoformat()}"
           f"&LT_eventTime={(T0 + timedelta(hours=7)).isoformat()}").replace("+", "%2B")
    assert ids(read.call("GET", win)[2]) == [evs[1]["eventID"]]
    q = "/events?EQ_bizStep=receiving|retail_selling&EQ_disposition=retail_sold"
    assert ids(read.call("GET", q)[2]) == [evs[4]["eventID"]]
    assert ids(read.call("GET", "/events?MATCH_anyEPC=urn:epc:idpat:sgtin:0614141.112345.*"
                         "&EQ_bizLocation=" + ST)[2]) == of(*evs)
    assert ids(read.call("GET", "/events?eventType=AggregationEvent")[2]) == []
    assert ids(read.call("GET", f"/events?EQ_readPoint={ST.removesuffix('.0')}.dock"
                         "&EQ_action=OBSERVE")[2]) == of(*evs)
    recent = (datetime.now(UTC) - timedelta(minutes=5)).isoformat().replace("+", "%2B")
    assert len(ids(read.call("GET", f"/events?GE_recordTime={recent}")[2])) == 5


def test_pages_follow_the_link_header(api: Any) -> None:
    store, read, _ = api
    evs = seed(store)
    seen: list[str] = []
    url = "/events?perPage=2&MATCH_anyEPC=" + sgtin(1) + "|" + sgtin(3)
    pages = 0
    while url:
        status, headers, body = read.call("GET", url)
        assert status == 200
        seen += ids(body)
        assert len(ids(body)) <= 2
        pages += 1
        link = headers.get("Link")
        url = link.split(">")[0].lstrip("<") if link else ""
        if link:
            assert link.endswith('rel="next"')
    assert pages == 3 and sorted(seen) == of(*evs) and len(seen) == len(set(seen))


def test_bad_query_parameters_are_400_naming_them(api: Any) -> None:
    _, read, _ = api
    status, _, body = read.call("GET", "/events?EQ_bizStep=shipping&EQ_colour=red")
    assert status == 400 and body["type"] == "epcisException:QueryParameterException"
    assert "'EQ_colour'" in body["detail"]
    status, _, body = read.call("GET", "/events?GE_eventTime=yesterday")
    assert status == 400 and "GE_eventTime" in body["detail"]
    assert "perPage" in read.call("GET", "/events?perPage=0")[2]["detail"]
    assert "nextPageToken" in read.call("GET", "/events?nextPageToken=zzz")[2]["detail"]


def test_one_event_by_id(api: Any) -> None:
    store, read, _ = api
    evs = seed(store)
    status, _, body = read.call("GET", f"/events/{evs[2]['eventID']}")
    assert status == 200 and ids(body) == [evs[2]["eventID"]]
    status, _, body = read.call("GET", "/events/urn:uuid:nope")
    assert status == 404 and body["type"] == "epcisException:NoSuchResourceException"


def test_capture_valid_is_queryable_invalid_names_the_path(api: Any) -> None:
    store, read, cap = api
    status, headers, _ = cap.call("OPTIONS", "/capture")
    assert status == 204 and headers["GS1-EPCIS-Capture-Limit"] == "5"
    assert headers["GS1-EPCIS-Capture-File-Size-Limit"] == str(64 * 1024)
    good = event([sgtin(9)], T0, "repairing", "needs_replacement")
    status, headers, _ = cap.call("POST", "/capture", document(good), ctype="application/ld+json")
    assert status == 202 and headers["Location"].startswith("/capture/")
    assert headers["GS1-EPCIS-Capture-Limit"] == "5"
    status, _, job = cap.call("GET", headers["Location"])
    assert status == 200 and job["success"] is True and job["rfidd:stored"] == 1
    assert ids(read.call("GET", f"/events?MATCH_epc={sgtin(9)}")[2]) == [good["eventID"]]

    bad = event([sgtin(10)], T0, "repairing", "needs_replacement", action="TELEPORT")
    fine = event([sgtin(11)], T0, "repairing", "needs_replacement")
    status, _, body = cap.call("POST", "/capture", document(fine, bad))
    assert status == 400 and body["type"] == "epcisException:ValidationException"
    assert "/epcisBody/eventList/1/action" in body["detail"]
    with store.engine.connect() as c:  # nothing of the refused document is stored
        n = c.execute(select(func.count()).select_from(hq_events)
                      .where(hq_events.c.event_id == fine["eventID"])).scalar()
    assert n == 0
    many = document(*[event([sgtin(20 + i)], T0, "repairing", "needs_replacement")
                      for i in range(6)])
    assert cap.call("POST", "/capture", many)[0] == 413
    assert cap.call("POST", "/capture", document(fine), ctype="text/plain")[0] == 415


def test_capture_takes_an_epcis_query_document_too(api: Any) -> None:
    """The OpenAPI's capture "should support both EPCISDocument and EPCISQueryDocument": a
    query's answer captured elsewhere is stored; its bad event is named by its own path."""
    _, read, cap = api
    one = event([sgtin(40)], T0, "repairing", "needs_replacement")
    bad = event([sgtin(41)], T0, "repairing", "needs_replacement", action="TELEPORT")
    two = event([sgtin(42)], T0, "repairing", "needs_replacement")
    assert cap.call("POST", "/capture", document(one))[0] == 202
    answer = read.call("GET", f"/events?MATCH_epc={sgtin(40)}")[2]
    assert answer["type"] == "EPCISQueryDocument"  # what another EPCIS would send us
    answer["epcisBody"]["queryResults"]["resultsBody"]["eventList"] += [bad, two]
    status, _, body = cap.call("POST", "/capture", answer)
    assert status == 400
    assert "/epcisBody/queryResults/resultsBody/eventList/1/action" in body["detail"]
    del answer["epcisBody"]["queryResults"]["resultsBody"]["eventList"][1]
    status, headers, _ = cap.call("POST", "/capture", answer)
    assert status == 202
    _, _, job = cap.call("GET", headers["Location"])
    assert job["success"] is True and (job["rfidd:events"], job["rfidd:stored"]) == (2, 1)
    assert ids(read.call("GET", f"/events?MATCH_epc={sgtin(42)}")[2]) == [two["eventID"]]
    status, _, body = cap.call("POST", "/capture", {"type": "Nonsense"})
    assert status == 400 and "EPCISQueryDocument" in body["detail"]


def test_named_queries(api: Any) -> None:
    store, read, _ = api
    evs = seed(store)
    definition = {"name": "receptions", "query": {"EQ_bizStep": ["receiving"]}}
    status, headers, _ = read.call("POST", "/queries", definition)
    assert status == 201 and headers["Location"] == "/queries/receptions"
    assert read.call("POST", "/queries", definition)[0] == 409
    assert read.call("GET", "/queries")[2] == [definition]
    body = read.call("GET", "/queries/receptions/events")[2]
    assert body["epcisBody"]["queryResults"]["queryName"] == "receptions"
    assert ids(body) == of(evs[1], evs[3])
    status, _, body = read.call("POST", "/queries", {"name": "x", "query": {"EQ_nope": "1"}})
    assert status == 400 and "'EQ_nope'" in body["detail"]
    assert read.call("DELETE", "/queries/receptions")[0] == 204
    assert read.call("GET", "/queries/receptions/events")[0] == 404


def test_capture_error_behaviour_proceed_stores_the_good_events_and_lists_the_bad(
        api: Any) -> None:
    _, read, cap = api
    fine = event([sgtin(30)], T0, "repairing", "needs_replacement")
    bad = event([sgtin(31)], T0, "repairing", "needs_replacement", action="TELEPORT")
    also = event([sgtin(32)], T0, "repairing", "needs_replacement")

    def post(behaviour: str) -> tuple[int, Any, Any]:
        req = urllib.request.Request(cap.base + "/capture", method="POST",
                                     data=json.dumps(document(fine, bad, also)).encode())
        req.add_header("Authorization", f"Bearer {cap.token}")
        req.add_header("Content-Type", "application/json")
        req.add_header("GS1-Capture-Error-Behaviour", behaviour)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, r.headers, None
        except urllib.error.HTTPError as e:
            return e.code, e.headers, json.loads(e.read())

    status, _, body = post("all")
    assert status == 400 and "GS1-Capture-Error-Behaviour" in body["detail"]
    status, _, body = post("rollback")
    assert status == 400 and "/epcisBody/eventList/1/action" in body["detail"]
    status, headers, _ = post("proceed")
    assert status == 202
    _, _, job = cap.call("GET", headers["Location"])
    assert job["success"] is False and job["captureErrorBehaviour"] == "proceed"
    assert job["rfidd:events"] == 3 and job["rfidd:stored"] == 2
    assert job["errors"] and all(e.startswith(("/epcisBody/eventList/1/",
                                             "/epcisBody/eventList/1:")) for e in job["errors"])
    assert ids(read.call("GET", "/events?MATCH_anyEPC=" + "|".join(
        sgtin(i) for i in (30, 31, 32)))[2]) == of(fine, also)
    status, _, jobs = cap.call("GET", "/capture")
    assert status == 200 and [j["captureID"] for j in jobs] == [
        headers["Location"].rsplit("/", 1)[1]]
    assert read.call("GET", "/capture")[0] == 403
