"""ReceptionService: ASN imports (files, HQ command) and reception sessions fed by the change
hook, closed by staff or by rule, resumed after a restart."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from opskit import BAG, SCARF, arrive, asn, epc, feed, hook, outbox
from sqlalchemy import select

from inventory.epc import decode
from inventory.presence import ZoneRead
from rfidd.context import ServiceContext
from rfidd.ops import CatalogService, OpsError, OpsSettings, ReceptionService
from rfidd.store import repo
from rfidd.store.models import Event


@pytest.fixture
def reception(ctx: ServiceContext, catalog: CatalogService,
              settings: OpsSettings) -> ReceptionService:
    r = ReceptionService(ctx, catalog, settings)
    feed(ctx, r)
    r.start()
    return r


def test_asn_command_idempotent_conflict_and_field_errors(ctx: ServiceContext,
                                                          reception: ReceptionService) -> None:
    doc = asn("A-1", [epc(BAG, 1), epc(BAG, 2)])
    assert "new ['A-1']" in ctx.command_handlers["asn"](doc)
    assert "identical ['A-1']" in ctx.command_handlers["asn"](doc)
    assert len(reception.receptions()) == 1  # the re-import opened nothing
    assert reception.asn("A-1")["asn_id"] == "A-1"
    with pytest.raises(OpsError, match="unknown ASN"):
        reception.asn("A-404")
    with pytest.raises(ValueError, match="A-1: already imported with other content"):
        ctx.command_handlers["asn"]({**doc, "epcs": doc["epcs"][:1]})
    bad = {**asn("A-2", ["XYZ"]), "shipped_at": "yesterday"}
    with pytest.raises(ValueError) as exc:
        ctx.command_handlers["asn"](bad)
    assert "'shipped_at'" in str(exc.value) and "'epcs[0]'" in str(exc.value)
    with pytest.raises(ValueError, match="must be a JSON object"):
        ctx.command_handlers["asn"](42)


def test_reception_fed_by_hook_and_present_items_reports_discrepancies(
    ctx: ServiceContext, reception: ReceptionService
) -> None:
    listed = [epc(BAG, i) for i in range(1, 6)]
    early, extra = listed[0], epc(SCARF, 99)
    with ctx.tracker_lock:  # already standing at reception before the ASN arrives
        ctx.tracker.observe([ZoneRead(early, "reception", -50.0, 999.0)])
    res = reception.import_asn_text(json.dumps(asn("A-9", listed)), "json", "a.json")
    sid = res["reception"]
    assert reception.reception(sid)["progress"]["read"] == 1
    hook(ctx, *(arrive(e, "reception") for e in listed[1:4]), arrive(extra, "reception"),
         arrive(listed[4], "floor"))
    doc = reception.close_reception()
    assert [m["epc"] for m in doc["missing"]] == [listed[4]]
    assert [u["epc"] for u in doc["unexpected"]] == [extra]
    assert {r["epc"] for r in doc["received"]} == set(listed[:4])
    assert {ln["gtin"]: (ln["expected"], ln["received"], ln["unexpected"], ln["name"],
                         ln["colour"]) for ln in doc["lines"]} == {
        BAG: (5, 4, 0, "Sac Céleste", "noir"), SCARF: (0, 0, 1, "Sac Céleste", "caramel")}
    assert outbox(ctx, "reports/reception") == [doc]
    assert reception.reception_csv(sid).splitlines()[0].startswith("gtin,sku,name,expected")
    with ctx.db.session() as s:
        evs = [json.loads(p) for p in s.scalars(select(Event.payload)
                                                 .where(Event.biz_step == "receiving"))]
    assert {e["epcList"][0] for e in evs} == {decode(x).uri for x in listed[:4]}
    assert len(evs) == 4
    assert all(e["bizTransactionList"][0]["type"] == "desadv" for e in evs)
    with pytest.raises(OpsError) as exc:
        reception.close_reception()
    assert exc.value.status == 409
    with pytest.raises(OpsError, match="already received"):
        reception.open_reception(["A-9"])
    # Reads after close feed nothing and break nothing.
    hook(ctx, arrive(epc(BAG, 50), "reception"))


def test_second_asn_joins_the_open_reception(ctx: ServiceContext,
                                             reception: ReceptionService) -> None:
    a, b = epc(BAG, 1), epc(BAG, 2)
    r1 = reception.import_asn_text(json.dumps(asn("J-1", [a])), "json", "j1")["reception"]
    hook(ctx, arrive(b, "reception"))
    r2 = reception.import_asn_text(json.dumps(asn("J-2", [b])), "json", "j2")["reception"]
    assert r1 == r2
    doc = reception.close_reception(r1)
    assert doc["asn_ids"] == ["J-1", "J-2"] and doc["missing"] == [
        {"epc": a, "gtin": BAG, "asn_id": "J-1"}]
    other = reception.import_asn_text(json.dumps(asn("J-3", [a], dest="elsewhere")), "json",
                                      "j3")
    assert "reception" not in other and "not this site" in other["warnings"][0]


def test_restart_resumes_the_open_reception(ctx: ServiceContext, catalog: CatalogService,
                                            reception: ReceptionService) -> None:
    e1 = epc(BAG, 1)
    sid = reception.import_asn_text(json.dumps(asn("R-1", [e1])), "json", "r")["reception"]
    reception.stop()
    ctx.command_handlers.clear()
    with ctx.tracker_lock:
        ctx.tracker.observe([ZoneRead(e1, "reception", -50.0, 5.0)])
    again = ReceptionService(ctx, catalog)
    again.start()
    assert again.reception(sid)["progress"]["received_listed"] == 1


def test_a_failing_reception_apply_is_counted(ctx: ServiceContext, reception: ReceptionService,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    reception.import_asn_text(json.dumps(asn("H-1", [epc(BAG, 1)])), "json", "h")

    def boom(*_a: Any) -> None:
        raise RuntimeError("no memory")

    monkeypatch.setattr(reception, "_feed_reception", boom)
    hook(ctx, arrive(epc(BAG, 1), "reception"))  # the ingest counts it and goes on
    assert ctx.metrics.registry.get_sample_value(
        "rfidd_ingest_component_errors_total", {"component": "reception"}) == 1


def test_reception_closes_by_rule_when_complete_and_quiet(
    ctx: ServiceContext, reception: ReceptionService
) -> None:
    listed = [epc(BAG, i) for i in range(200, 203)]
    sid = reception.import_asn_text(json.dumps(asn("A-RULE", listed)), "json",
                                    "a.json")["reception"]
    hook(ctx, *(arrive(e, "reception") for e in listed[:2]))
    now = time.time()
    reception.tick()  # incomplete and recent: stays open
    assert reception.reception(sid)["status"] == "open"
    hook(ctx, arrive(listed[2], "reception"))
    reception.close_by_rule(now + 30)  # complete, but not yet quiet for 60 s
    assert reception.reception(sid)["status"] == "open"
    reception.close_by_rule(now + 61)
    assert reception.reception(sid)["status"] == "closed"
    assert outbox(ctx, "reports/reception")[0]["totals"]["received"] == 3


def test_reception_closes_by_rule_when_idle(ctx: ServiceContext,
                                            reception: ReceptionService) -> None:
    listed = [epc(BAG, i) for i in range(300, 304)]
    sid = reception.import_asn_text(json.dumps(asn("A-IDLE", listed)), "json",
                                    "a.json")["reception"]
    hook(ctx, arrive(listed[0], "reception"))
    now = time.time()
    reception.close_by_rule(now + 1000)  # < 1800 s idle: open
    assert reception.reception(sid)["status"] == "open"
    reception.close_by_rule(now + 1801)
    report = outbox(ctx, "reports/reception")[0]
    assert (report["totals"]["received"], report["totals"]["missing"]) == (1, 3)


def test_asn_with_epc_uris_matches_the_tags_read(ctx: ServiceContext,
                                                 reception: ReceptionService) -> None:
    """ERPs send URIs; the tags say hex, with whatever filter value they were encoded with."""
    from inventory.epc import sgtin96_hex as encode

    read = encode(BAG, 600, 7, filter_value=3)  # a tag encoded with filter 3, already seen here
    with ctx.db.write() as s:  # as the ingest writes it: with its decoded URI
        repo.upsert_items(s, [repo.ItemUpsert(read, 500.0, "reception", gtin=BAG,
                                              epc_uri=decode(read).uri)], 500.0)
    never_seen = decode(epc(BAG, 601)).uri
    doc = asn("A-URI", [])
    doc["epcs"] = [decode(read).uri, never_seen]
    res = reception.import_asn_text(json.dumps(doc), "json", "a.json")
    assert res["errors"] == [] and res["new"] == ["A-URI"], res
    hook(ctx, arrive(read, "reception"))
    report = reception.close_reception()
    assert [r["epc"] for r in report["received"]] == [read]
    assert [m["epc"] for m in report["missing"]] == [epc(BAG, 601)]
    bad = asn("A-BAD", [])
    bad["epcs"] = ["urn:epc:id:sscc:0614141.1234567890"]
    out = reception.import_asn_text(json.dumps(bad), "json", "b.json")
    assert "only SGTIN URIs" in " ".join(out["errors"])


def test_reception_checks_the_chips_against_the_asn_bindings(
        ctx: ServiceContext, catalog: CatalogService, settings: OpsSettings) -> None:
    """The ASN carries the commissioning TIDs: a received clone is flagged in the report and
    alerted (not refused: the carton is here); unbound and unread items are counted apart."""
    from readers.base import TagRead
    from rfidd.intake import TidMemory
    from rfidd.lifecycle.authenticity import TagAuthenticity

    tids = TidMemory()
    auth = TagAuthenticity(ctx.metrics, tids)
    reception = ReceptionService(ctx, catalog, settings, authenticity=auth)
    feed(ctx, reception)
    reception.start()
    e1, e2, e3, e4 = (epc(BAG, i) for i in range(1, 5))
    t1, t2 = "E2801160200000000000A001", "E2801160200000000000A002"
    clone = "E2801160200000000000C002"
    doc = {**asn("A-T", [e1, e2, e3, e4]), "tids": {e1: t1, e2: t2, e3: t1[:-1] + "3"}}
    reception.import_asn_text(json.dumps(doc), "json", "a.json")
    tids.record([TagRead(e1, "r", 1, -50.0, 0.0, tid=t1), TagRead(e2, "r", 1, -50.0, 0.0,
                                                                  tid=clone),
                 TagRead(e4, "r", 1, -50.0, 0.0, tid=t2)])  # e3: read without a TID
    hook(ctx, *(arrive(e, "reception") for e in (e1, e2, e3, e4)))
    report = reception.close_reception()
    assert report["authenticity"]["counts"] == {"match": 1, "mismatch": 1, "unbound": 1,
                                                "unread": 1, "unserialized": 0}
    assert [(c["epc"], c["bound_tid"], c["read_tids"]) for c in
            report["authenticity"]["cloned"]] == [(e2, t2, [clone])]
    alerts = outbox(ctx, "alerts")
    assert [(a["type"], a["epc"], a["point"], a["refused"]) for a in alerts] == [
        ("cloned_tag", e2, "reception", False)]
    assert ctx.metrics.registry.get_sample_value("rfidd_alerts_total",
                                                 {"kind": "cloned_tag"}) == 1
    assert {r["epc"] for r in report["received"]} == {e1, e2, e3, e4}  # received all the same
    # In the site's alert workflow too (`rfidd alerts list`), under the HQ message's id.
    from rfidd.lifecycle.models import AlertRecord

    with ctx.db.session() as s:
        rows = s.scalars(select(AlertRecord)).all()
        ids = set(s.scalars(select(repo.OutboxMessage.event_id)
                            .where(repo.OutboxMessage.topic == "alerts")))
        assert [(r.kind, r.epc, r.state, r.alert_id in ids) for r in rows] == [
            ("cloned_tag", e2, "open", True)]
        assert json.loads(rows[0].detail or "{}")["read_tids"] == [clone]
