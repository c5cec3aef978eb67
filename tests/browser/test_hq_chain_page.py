"""The HQ page /chain in headless Chromium: signed in with a read token, it shows the chain's
count accuracy and shrinkage over time as charts (inline SVG drawn by the daemon, no CDN,
no script), per store and for the chain, with the figures computed from the reports the
stores published; in French and in English."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from chromium import chromium
from prometheus_client import CollectorRegistry

from rfidd.hq import tokens
from rfidd.hq.epcis_api import EpcisServer, build_app
from rfidd.hq.registry import register_site
from rfidd.hq.store import Batch, HqStore, SiteMessageRow

pytestmark = pytest.mark.integration
D1 = datetime(2026, 11, 2, 19, 0, tzinfo=UTC)
D2 = D1 + timedelta(days=1)


def count(session: str, at: datetime, found: int, expected: int) -> dict[str, Any]:
    return {"type": "count", "session_id": session, "finished_at": at.timestamp(),
            "totals": {"found": found, "expected": expected, "missing": expected - found}}


def shrinkage(end: datetime, lost: str, net: str) -> dict[str, Any]:
    return {"type": "shrinkage", "period_start": (end - timedelta(days=7)).timestamp(),
            "period_end": end.timestamp(), "currency": "EUR",
            "totals": {"value": lost, "net_sales_value": net}}


def seed(store: HqStore) -> None:
    register_site(store.engine, "st-paris", "Paris Opéra", D1)
    register_site(store.engine, "st-lyon", "Lyon", D1)
    store.write_batch(Batch(site_messages=[
        SiteMessageRow("st-paris", "report/count", count("p1", D1, 95, 100), D1),
        # The same count published again after a late pass: the latest figure counts, once.
        SiteMessageRow("st-paris", "report/count", count("p1", D1, 96, 100),
                       D1 + timedelta(minutes=5)),
        SiteMessageRow("st-lyon", "report/count", count("l1", D1, 45, 50), D1),
        SiteMessageRow("st-paris", "report/count", count("p2", D2, 98, 100), D2),
        SiteMessageRow("st-paris", "report/shrinkage", shrinkage(D1, "120.00", "10000.00"), D1),
        SiteMessageRow("st-lyon", "report/shrinkage", shrinkage(D1, "300.00", "6000.00"), D1),
    ]))


@pytest.fixture
def hq(postgres_url: str) -> Iterator[tuple[str, str]]:
    store = HqStore.open(postgres_url, known_sites_only=True)
    seed(store)
    server = EpcisServer(build_app(store, CollectorRegistry()))
    server.start()
    token = tokens.create(store.engine, "supply-chain", "read", D1)
    try:
        yield f"http://127.0.0.1:{server.port}", token
    finally:
        server.stop()
        store.dispose()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium("1000,1400") as driver:
        yield driver


def figures(driver: Any, chart: str) -> dict[str, list[str]]:
    """Each drawn series' printed values, by legend name, as the browser renders them."""
    return dict(driver.execute_script("""
        const fig = document.querySelector(arguments[0]);
        if (!fig) return {};
        const names = [...fig.querySelectorAll('.legends .legend text')].map(t => t.textContent);
        const out = {};
        names.forEach((n, i) => { out[n] = [...fig.querySelectorAll(
            `.text-overlay .serie-${i} text.value`)].map(t => t.textContent); });
        return out;""", f"#chart-{chart}"))


def test_the_chain_page_charts_accuracy_and_shrinkage_from_the_reports(
        hq: tuple[str, str], browser: Any) -> None:
    from selenium.webdriver.common.by import By

    base, token = hq
    browser.get(f"{base}/chain/login?lang=fr")
    browser.find_element(By.NAME, "token").send_keys(token)
    browser.find_element(By.TAG_NAME, "button").click()
    assert "/chain" in browser.current_url and "Dans le temps" in browser.page_source
    nbsp = "\u202f"
    acc = figures(browser, "accuracy")
    # Day 1: Paris 96/100 (its count published again), Lyon 45/50; the chain 141/150.
    assert acc["Chaîne"] == [f"94,0{nbsp}%", f"98,0{nbsp}%"], acc
    assert acc["Paris Opéra"] == [f"96,0{nbsp}%", f"98,0{nbsp}%"]
    assert acc["Lyon"] == [f"90,0{nbsp}%"]  # no count on day 2: no point, no invented zero
    shr = figures(browser, "shrinkage")
    assert shr["Chaîne"] == [f"2,6{nbsp}%"] and shr["Lyon"] == [f"5,0{nbsp}%"]
    assert shr["Paris Opéra"] == [f"1,2{nbsp}%"]
    # Drawn, not only present: the SVG has a size on the page, and no script ran or loaded.
    size = browser.execute_script(
        "const r = document.querySelector('#chart-accuracy svg').getBoundingClientRect();"
        "return [r.width, r.height];")
    assert size[0] > 300 and size[1] > 150
    assert browser.execute_script("return document.scripts.length") == 0
    browser.get(f"{base}/chain?lang=en")
    assert figures(browser, "accuracy")["Chain"] == [f"94.0{nbsp}%", f"98.0{nbsp}%"]
    assert "Count accuracy" in browser.page_source


def test_the_chart_figures_as_json_for_tools(hq: tuple[str, str]) -> None:
    import json
    import urllib.request

    base, token = hq
    req = urllib.request.Request(f"{base}/chain/trends?site=st-lyon",
                                 headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=5) as r:
        body = json.loads(r.read())
    assert body["accuracy"] == {"days": ["2026-11-02"], "stores": {"Lyon": [90.0]},
                                "chain": [90.0]}
    assert body["shrinkage"]["stores"] == {"Lyon": [5.0]}
