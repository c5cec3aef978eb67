"""Chain-wide views at HQ (CLI, JSON, the FR/EN page) and the catalog pushed to the stores."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from prometheus_client import CollectorRegistry
from waits import wait_until

from inventory.catalog import parse_catalog_csv, parse_catalog_records
from rfidd.hq import chain, hq_command, tokens
from rfidd.hq.documents import parse_document
from rfidd.hq.epcis_api import EpcisServer, build_app
from rfidd.hq.registry import register_site
from rfidd.hq.store import Batch, HqStore, SiteMessageRow

pytestmark = pytest.mark.integration
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
CATALOG = """gtin,sku,name,size,colour,category,price,currency
00614141123452,AUR-BAG-001,Sac Céleste,38,noir,bags,3400.00,EUR
00614141123469,AUR-BAG-001,Sac Céleste,40,noir,bags,3400.00,EUR
"""
G38 = "urn:epc:id:sgtin:0614141.012345"  # GTIN 00614141123452
G40 = "urn:epc:id:sgtin:0614141.012346"  # GTIN 00614141123469


def ev(epc: str, t: datetime, step: str, disp: str) -> dict[str, Any]:
    return {"type": "ObjectEvent", "eventID": f"urn:uuid:{uuid.uuid4()}",
            "eventTime": t.isoformat().replace("+00:00", "Z"), "eventTimeZoneOffset": "+00:00",
            "epcList": [epc], "action": "OBSERVE", "bizStep": step, "disposition": disp}


def store_events(store: HqStore, site: str, *events: dict[str, Any]) -> None:
    doc = json.dumps({"type": "EPCISDocument", "epcisBody": {"eventList": list(events)}})
    store.write_batch(Batch(events=parse_document(doc, site).events))


@pytest.fixture
def hq(postgres_url: str) -> Iterator[HqStore]:
    store = HqStore.open(postgres_url, known_sites_only=True)
    register_site(store.engine, "st-paris", "Paris Opéra", T0)
    register_site(store.engine, "st-lyon", "Lyon", T0)
    chain.save_catalog(store.engine, parse_catalog_csv(CATALOG).products, T0)
    # Paris: two size-38 bags in stock, one sold; Lyon: one 38 received then moved to Paris
    # (its latest event is at Paris), one size 40.
    store_events(store, "st-paris",
                 ev(f"{G38}.1", T0, "receiving", "sellable_not_accessible"),
                 ev(f"{G38}.2", T0, "stocking", "sellable_accessible"),
                 ev(f"{G38}.3", T0, "receiving", "sellable_not_accessible"),
                 ev(f"{G38}.3", T0 + timedelta(hours=2), "retail_selling", "retail_sold"),
                 ev(f"{G38}.4", T0 + timedelta(days=1), "receiving", "sellable_not_accessible"))
    store_events(store, "st-lyon",
                 ev(f"{G38}.4", T0, "receiving", "sellable_not_accessible"),
                 ev(f"{G38}.4", T0 + timedelta(hours=3), "shipping", "in_transit"),
                 ev(f"{G40}.5", T0, "stocking", "sellable_accessible"))
    store.write_batch(Batch(site_messages=[
        SiteMessageRow("st-lyon", "alert", {"type": "exit_unsold", "epc": f"{G40}.9"}, T0),
        SiteMessageRow("st-paris", "report/count", {"count": 1, "accuracy": 0.98}, T0),
        SiteMessageRow("st-paris", "report/count", {"count": 2, "accuracy": 0.99},
                       T0 + timedelta(days=1)),
    ]))
    yield store
    store.dispose()


def test_stock_per_store_by_size_with_names(hq: HqStore, postgres_url: str) -> None:
    rows = chain.stock(hq.engine, sku="AUR-BAG-001", size="38")
    assert [(r.site_name, r.name, r.size, r.count) for r in rows] == [
        ("Paris Opéra", "Sac Céleste", "38", 3)]
    assert {(r.site, r.size, r.count) for r in chain.stock(hq.engine)} == {
        ("st-paris", "38", 3), ("st-lyon", "40", 1)}
    r = CliRunner().invoke(hq_command, ["stock", "--size", "40", "--database-url",
                                        postgres_url, "--json"])
    assert r.exit_code == 0, r.output
    (only,) = json.loads(r.output)["stock"]
    assert (only["site_name"], only["colour"], only["count"]) == ("Lyon", "noir", 1)
    life = chain.life(hq.engine, f"{G38}.4")
    assert [(e["site_name"], e["biz_step"]) for e in life] == [
        ("Lyon", "receiving"), ("Lyon", "shipping"), ("Paris Opéra", "receiving")]
    reports = chain.latest_reports(hq.engine)
    assert [(x["site"], x["payload"]["count"]) for x in reports] == [("st-paris", 2)]


def test_the_hq_page_signs_in_and_shows_stock_in_french_and_english(hq: HqStore) -> None:
    server = EpcisServer(build_app(hq, CollectorRegistry()))
    server.start()
    token = tokens.create(hq.engine, "supply-chain", "read", T0)
    base = f"http://127.0.0.1:{server.port}"

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a: Any, **k: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with pytest.raises(urllib.error.HTTPError) as exc:
            opener.open(f"{base}/chain?lang=fr", timeout=5)
        assert exc.value.code == 303 and "/chain/login" in exc.value.headers["Location"]
        with pytest.raises(urllib.error.HTTPError) as exc:
            opener.open(urllib.request.Request(
                f"{base}/chain/login?lang=fr", data=urllib.parse.urlencode(
                    {"token": token}).encode(), method="POST"), timeout=5)
        assert exc.value.code == 303
        cookie = exc.value.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
        jar = cookie.split(";")[0]
        for lang, words in (("fr", ["Stock par magasin", "Taille", "Paris Opéra",
                                    "Sac Céleste", "exit_unsold"]),
                            ("en", ["Stock per store", "Size", "Lyon"])):
            req = urllib.request.Request(f"{base}/chain?lang={lang}&size=38" if lang == "fr"
                                         else f"{base}/chain?lang={lang}",
                                         headers={"Cookie": jar})
            with urllib.request.urlopen(req, timeout=5) as r:
                page = r.read().decode()
            for w in words:
                assert w in page, (lang, w)
        assert "4 items in stock" in page  # the English page, unfiltered: 3 + 1
        # the Detail column: named fields and times in stated UTC, not raw JSON
        assert "<b>accuracy</b> 0.99" in page and "<b>epc</b> " in page
        assert T0.strftime("%Y-%m-%d %H:%M:%S UTC") in page
        assert "{&quot;" not in page and '{"' not in page
        req = urllib.request.Request(f"{base}/chain/stock?size=38",
                                     headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, timeout=5) as r:
            assert [x["count"] for x in json.loads(r.read())["stock"]] == [3]
    finally:
        server.stop()


def test_catalog_published_to_the_stores(hq: HqStore, postgres_url: str, mqtt5_broker: Any,
                                         mqtt_collector: Any, tmp_path: Path) -> None:
    prefix = f"cat-{uuid.uuid4().hex[:8]}/rfidd/v1"
    col = mqtt_collector(mqtt5_broker, f"{prefix}/+/cmd/catalog")
    conf = tmp_path / "hq.toml"
    conf.write_text(f'[database]\nurl = "{postgres_url}"\n[mqtt]\n'
                    f'url = "mqtt://{mqtt5_broker.host}:{mqtt5_broker.port}"\n'
                    f'topic_prefix = "{prefix}"\nclient_id = "hq-cat-{uuid.uuid4().hex[:6]}"\n')
    cat = tmp_path / "catalog.csv"
    cat.write_text(CATALOG.replace("Sac Céleste,40", "Sac Céleste GM,40"))
    r = CliRunner().invoke(hq_command, ["catalog", "publish", str(cat), "-c", str(conf)])
    assert r.exit_code == 0, r.output
    assert "published 2 products to st-lyon, st-paris" in r.output
    wait_until(lambda: len(col.messages) == 2, "one cmd/catalog per store")
    assert {m.topic.split("/")[-3] for m in col.messages} == {"st-lyon", "st-paris"}
    for m in col.messages:  # what the store's catalog command accepts
        res = parse_catalog_records(json.loads(m.payload)["products"], "test")
        assert res.ok and len(res.products) == 2
    assert {r.name for r in chain.stock(hq.engine, size="40")} == {"Sac Céleste GM"}
    bad = tmp_path / "bad.csv"
    bad.write_text("gtin,sku,name,size,colour,category,price,currency\n123,x,y,,,,1,EUR\n")
    r = CliRunner().invoke(hq_command, ["catalog", "publish", str(bad), "-c", str(conf)])
    assert r.exit_code != 0 and "nothing published" in r.output
    r = CliRunner().invoke(hq_command, ["catalog", "publish", str(cat), "-c", str(conf),
                                        "--site", "st-nowhere"])
    assert r.exit_code != 0 and "'st-nowhere' is not registered" in r.output


def test_cli_alerts_and_reports_say_when_in_utc_and_name_their_fields(
        hq: HqStore, postgres_url: str) -> None:
    """`rfidd hq alerts/reports` printed the payload as raw JSON cut at 160 characters, the
    site's epoch instants as floats ("at": 1796222920.66): HQ staff could not tell when."""
    at = (T0 + timedelta(minutes=5)).timestamp()
    hq.write_batch(Batch(site_messages=[SiteMessageRow(
        "st-paris", "alert", {"type": "exit_unsold", "at": at, "zone": "exit"},
        T0 + timedelta(minutes=6))]))
    r = CliRunner().invoke(hq_command, ["alerts", "--site", "st-paris",
                                        "--database-url", postgres_url])
    assert r.exit_code == 0, r.output
    line = r.output.splitlines()[0]
    assert line.startswith("2026-11-02 09:06:00 UTC  Paris Opéra  exit_unsold  "), line
    assert "at 2026-11-02 09:05:00 UTC" in line and "zone exit" in line and "{" not in line
    r = CliRunner().invoke(hq_command, ["reports", "--database-url", postgres_url])
    assert r.exit_code == 0, r.output
    assert "2026-11-03 09:00:00 UTC  Paris Opéra  report/count  count 2; accuracy 0.99" \
        in r.output
