"""The staff page in headless Chromium against a real daemon fed by the simulated boutique:
sign in, count with live progress and the missing list, close it; close a reception; find an
item; switch FR/EN. Screenshots of both languages go to a temporary folder, or to the folder
RFIDD_SCREENSHOTS names (`RFIDD_SCREENSHOTS=docs/screenshots` refreshes the README's).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from chromium import chromium
from sqlalchemy import select
from waits import wait_until

from inventory.catalog import parse_catalog_records
from rfidd.app import Daemon, Timings
from rfidd.config_http import Role
from rfidd.demo import _send_asn, default_scenario, demo_config, take_over
from rfidd.store.models import Event
from rfidd.web import page
from rfidd.web.auth import add_user
from simulator import Scenario, SimulatedSite

pytestmark = pytest.mark.integration

SHOTS = Path(os.environ.get("RFIDD_SCREENSHOTS") or tempfile.mkdtemp(prefix="rfidd-shots-"))


class Store:
    def __init__(self, daemon: Daemon, site: Any, scenario: Scenario) -> None:
        self.daemon, self.site, self.scenario = daemon, site, scenario
        assert daemon.api is not None
        self.url = f"http://127.0.0.1:{daemon.api.port}/"

    @property
    def ops(self) -> Any:
        return self.daemon.ops


@pytest.fixture(scope="module")
def store() -> Iterator[Store]:
    page.LIVE_INTERVAL_S = 0.2
    scenario = Scenario.load(default_scenario())
    with tempfile.TemporaryDirectory(prefix="rfidd-browser-") as tmp:
        users = Path(tmp) / "users.json"
        add_user(users, "Camille", [Role.STAFF], "1357")
        with SimulatedSite(scenario) as site:
            cfg = demo_config(scenario, site.ports, f"sqlite:///{tmp}/rfidd.db", None,
                              http={"port": 0, "auth": {"users_file": str(users),
                                                        "cli_token_file": f"{tmp}/cli"}})
            daemon = Daemon(cfg, timings=Timings(supervisor_s=0.2, sweep_s=0.5))
            daemon.start()
            try:
                assert daemon.ops is not None and daemon.ctx is not None
                daemon.ops.catalog.import_catalog(
                    parse_catalog_records(scenario.catalog_rows(), "catalog"))
                taken = take_over(daemon)  # go-live, as `rfidd demo` does it
                assert taken is not None and len(taken["books"]["taken_over"]) >= 300
                yield Store(daemon, site, scenario)
            finally:
                daemon.stop()
    page.LIVE_INTERVAL_S = 1.0


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as driver:
        yield driver


def _by(driver: Any, css: str) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, css)


def _all(driver: Any, css: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return list(driver.find_elements(By.CSS_SELECTOR, css))


def _texts(driver: Any, css: str) -> list[str]:
    """Texts of the matching elements read in one go (live lists are re-rendered under us)."""
    return list(driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map((e) => e.innerText)", css))


def _found(headline: str) -> int:
    """4812 from "4,812 of 5,000 found"."""
    return int(headline.split(" of ")[0].replace(",", "") or 0)


def _click(driver: Any, css: str) -> None:
    """Centre it first: a button at the viewport's bottom edge sits under the tab bar."""
    e = _by(driver, css)
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", e)
    e.click()


def _shot(driver: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SHOTS / f"{name}.png"))


def _sign_in(driver: Any, store: Store, lang: str) -> None:
    driver.delete_all_cookies()
    driver.get(store.url + f"?lang={lang}")
    wait_until(lambda: _by(driver, "#sign-in-form").is_displayed(), "the sign-in form")
    _by(driver, "#login").send_keys("camille")
    _by(driver, "#pin").send_keys("0000")
    _click(driver, "#sign-in")
    wait_until(lambda: _by(driver, "#sign-in-error").is_displayed(), "the refusal")
    _by(driver, "#pin").send_keys("1357")
    _click(driver, "#sign-in")
    wait_until(lambda: _by(driver, "#tabs").is_displayed(), "the signed-in page")
    try:
        wait_until(lambda: _all(driver, "input.zone"), "the zones")
    except AssertionError:
        print(driver.get_log("browser"))
        raise


def _console_errors(driver: Any) -> list[str]:
    """The browser console's errors since the last call (the log is drained by reading it)."""
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def test_first_visit_shows_the_sign_in_with_no_console_error(browser: Any,
                                                             store: Store) -> None:
    browser.get(store.url + "?lang=en")
    browser.delete_all_cookies()
    _console_errors(browser)  # a blank page's log, and what earlier loads left
    browser.get(store.url + "?lang=fr")
    wait_until(lambda: _by(browser, "#sign-in-form").is_displayed(), "the sign-in form")
    # its French words come after the session probe: the marker that the probe answered
    wait_until(lambda: _by(browser, "#sign-in").text == "Se connecter", "its words")
    assert not _by(browser, "#tabs").is_displayed()
    assert _console_errors(browser) == []
    # signed in, a reload goes straight to the page, still without an error
    _by(browser, "#login").send_keys("camille")
    _by(browser, "#pin").send_keys("1357")
    _click(browser, "#sign-in")
    wait_until(lambda: _by(browser, "#tabs").is_displayed(), "the signed-in page")
    browser.refresh()
    wait_until(lambda: _all(browser, "input.zone"), "the zones, after a reload")
    assert not _by(browser, "#sign-in-form").is_displayed()
    # nothing ticked, nothing to count: the button is disabled rather than ignoring a tap
    assert not _by(browser, "#start-count").is_enabled()
    _all(browser, "input.zone")[0].click()
    assert _by(browser, "#start-count").is_enabled()
    _all(browser, "input.zone")[0].click()
    assert not _by(browser, "#start-count").is_enabled()
    assert _console_errors(browser) == []


def test_count_with_live_progress_and_missing_list(browser: Any, store: Store) -> None:
    _sign_in(browser, store, "en")
    assert _by(browser, "#user").text == "Camille"
    wait_until(lambda: store.daemon.ingestor is not None
               and store.daemon.ingestor.stats.reads > 0, "reads", timeout=30)
    for box in _all(browser, "input.zone"):
        if box.get_attribute("value") in ("floor", "stockroom"):
            box.click()
    store.site.hold(True)  # the readers pause: at the start every booked item is still missing
    try:
        _click(browser, "#start-count")
        wait_until(lambda: " found" in _by(browser, "#count-headline").text, "live progress",
                   timeout=20)
        assert not _by(browser, "#start-count").is_displayed()  # one count at a time here
        # Items the book holds but no reader has seen: listed with the catalog's product names.
        wait_until(lambda: _texts(browser, "#missing-list li"), "the missing list", timeout=20)
        first = _texts(browser, "#missing-list li")[0]
        before = _found(_by(browser, "#count-headline").text)
    finally:
        store.site.hold(False)
    assert "?" not in first.splitlines()[0]
    products = store.ops.catalog.catalog
    names = {products[g].name for g in products}
    assert any(n in first for n in names), first
    # The readers read again: found rises live, without reloading the page.
    wait_until(lambda: _found(_by(browser, "#count-headline").text) > before, "found rising",
               timeout=20)
    width = _by(browser, "#count-bar").get_attribute("style")
    assert "width" in width
    _shot(browser, "count-en")
    closed_at = time.time()
    _click(browser, "#close-count")
    wait_until(lambda: _by(browser, "#count-report").is_displayed(), "the count report")
    assert _by(browser, "#start-count").is_displayed()  # the next count may start
    assert "%" in _by(browser, "#report-accuracy").text
    assert " found" in _by(browser, "#report-headline").text
    _shot(browser, "count-report-en")
    # HQ learns who counted by the opaque staff id, never the name.
    staff_id = next(iter(store.daemon.api.auth.users))  # type: ignore[union-attr]
    with store.daemon.db.session() as s:  # type: ignore[union-attr]
        payloads = [json.loads(p) for p in s.scalars(
            select(Event.payload).where(Event.biz_step == "cycle_counting",
                                        Event.created_at >= closed_at))]
    assert payloads and all(p["rfidd:actor"] == staff_id for p in payloads)
    assert not any("Camille" in json.dumps(p) for p in payloads)


def test_close_a_reception_with_a_note(browser: Any, store: Store) -> None:
    wait_until(lambda: any(a.action.action == "shipment" for a in store.site.applied),
               "the shipment at reception", timeout=30)
    shipment = next(a for a in store.site.applied if a.action.action == "shipment")
    _send_asn(store.daemon, shipment, store.scenario)
    _sign_in(browser, store, "en")
    _click(browser, 'nav button[data-tab="reception"]')
    wait_until(lambda: _texts(browser, "#reception-lines tr"), "the ASN lines", timeout=20)
    wait_until(lambda: any(int(t.split()[-1]) > 0 for t in
                           _texts(browser, "#reception-lines tr")), "items received", timeout=20)
    colours = {str(r["colour"]) for r in store.scenario.catalog_rows() if r.get("colour")}
    # two colours of one product are two lines: each names its colour
    assert any(c in t for t in _texts(browser, "#reception-lines tr") for c in colours)
    _by(browser, "#reception-note").send_keys("two cartons, one dented")
    _shot(browser, "reception-en")
    _click(browser, "#close-reception")
    wait_until(lambda: _by(browser, "#reception-status").text == "closed", "closed")
    audit = store.daemon.api.app.state.audit.since(0)  # type: ignore[union-attr]
    closes = [e for e in audit if e["path"].endswith("/close")]
    assert closes and "dented" in closes[-1]["detail"] and closes[-1]["actor"].startswith("s-")


def test_find_an_item(browser: Any, store: Store) -> None:
    _sign_in(browser, store, "en")
    _click(browser, 'nav button[data-tab="find"]')
    product = next(iter(store.scenario.catalog_rows()))
    _by(browser, "#find-q").send_keys(str(product["name"]))
    _click(browser, "#find-go")
    wait_until(lambda: _texts(browser, "#find-results .result"), "results", timeout=10)
    card = _texts(browser, "#find-results .result")[0]
    assert str(product["name"]) in card and "Where:" in card
    assert "\nPrice: €" in card  # on its own line, not glued to the state
    _shot(browser, "find-en")


def test_switch_to_french(browser: Any, store: Store) -> None:
    _sign_in(browser, store, "en")
    _click(browser, "#lang-fr")
    wait_until(lambda: _by(browser, 'nav button[data-tab="count"]').text == "Inventaire",
               "French words")
    assert browser.find_element("css selector", "html").get_attribute("lang") == "fr"
    # a search shown in English is asked again in French, its state in words
    _click(browser, 'nav button[data-tab="find"]')
    _by(browser, "#find-q").send_keys("no-such-product-anywhere")
    _click(browser, "#find-go")
    wait_until(lambda: _by(browser, "#find-results").text == "Rien trouvé.", "nothing, in French")
    _click(browser, "#lang-en")
    wait_until(lambda: _by(browser, "#find-results").text == "Nothing found.", "in English again")
    _click(browser, "#lang-fr")
    wait_until(lambda: _by(browser, "#find-results").text == "Rien trouvé.", "French again")
    _click(browser, 'nav button[data-tab="count"]')
    for box in _all(browser, "input.zone"):
        if box.get_attribute("value") == "floor":
            box.click()
    _click(browser, "#start-count")
    wait_until(lambda: "trouvés" in _by(browser, "#count-headline").text, "French progress",
               timeout=20)
    wait_until(lambda: not _by(browser, "#count-headline").text.startswith("0 "),
               "items found", timeout=20)
    _shot(browser, "count-fr")
    _click(browser, "#close-count")
    wait_until(lambda: _by(browser, "#count-report").is_displayed(), "the report")
    assert "," in _by(browser, "#report-accuracy").text  # French decimals: 98,9 %
    _shot(browser, "count-report-fr")
    _click(browser, 'nav button[data-tab="charts"]')
    for chart in ("chart-accuracy", "chart-shrinkage-zone", "chart-shrinkage-category"):
        wait_until(lambda c=chart: browser.execute_script(  # type: ignore[misc]
            f"return document.getElementById('{c}').naturalWidth") > 0, chart, timeout=20)
    _shot(browser, "charts-fr")
    _click(browser, "#lang-en")
    wait_until(lambda: _by(browser, 'nav button[data-tab="count"]').text == "Count", "English")


def test_replenish_says_how_many_to_bring_out(browser: Any, store: Store) -> None:
    """Each line of the pick list: the product, then how many to bring out and what the
    stockroom and the floor hold (the page showed "Porte-clés Étoile —" and no figure)."""
    want = store.ops.replenishment.replenishment(1)
    assert want, "the demo boutique has a product missing from the floor"
    _sign_in(browser, store, "en")
    _click(browser, 'nav button[data-tab="replenish"]')
    wait_until(lambda: len(_texts(browser, "#replenish-list li small")) == len(want),
               "the pick list", timeout=10)
    shown = _texts(browser, "#replenish-list li small")
    assert shown == [f"bring out {ln.suggested} ({ln.stock_qty} in the stockroom, "
                     f"{ln.floor_qty} on the floor)" for ln in want]
    assert all(ln.suggested > 0 for ln in want)
    _shot(browser, "replenish-en")
