"""The staff page's floor screens in headless Chromium, against a real daemon fed by the
simulated boutique with a serial desk reader (store-with-desk.toml) and a simulated TSL
handheld: client holds placed and released, the sales floor's notification line when a held
item reaches reception, the item put on the desk reader, a missing item's "last seen", the
handheld's proximity bar, open alerts acknowledged by staff and resolved by a manager only, the
favicon. Screenshots as in test_staff_page.py (RFIDD_SCREENSHOTS=docs/screenshots refreshes
the README's).
"""

from __future__ import annotations

import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from chromium import chromium
from sqlalchemy import select
from test_staff_page import _all, _by, _click, _shot, _texts
from waits import wait_until

import simulator
from inventory.catalog import parse_catalog_records
from rfidd.app import Daemon, Timings
from rfidd.config_http import Role
from rfidd.config_readers import ReaderConfig
from rfidd.demo import demo_config, take_over
from rfidd.store.models import ZonePresence
from rfidd.web import page
from rfidd.web.auth import add_user
from simulator import Scenario, SimulatedSite
from simulator.scenario import action
from simulator.serial_sim import SerialReaderSim, SimTag

pytestmark = pytest.mark.integration

DESK_SCENARIO = Path(simulator.__file__).parent / "scenarios" / "store-with-desk.toml"
NNBSP = "\u202f"


class Approach:
    """The handheld's field: once a search starts, the item looked for, louder as the
    staff member walks towards it (-75 dBm rising by 4 dB a second to -35 dBm)."""

    def __init__(self) -> None:
        self.epc: str | None = None
        self.t0 = 0.0

    def start(self, epc: str) -> None:
        self.epc, self.t0 = epc, time.monotonic()

    def tags(self) -> list[SimTag]:
        if self.epc is None:
            return []
        rssi = min(-35.0, -75.0 + 4.0 * (time.monotonic() - self.t0))
        return [SimTag(self.epc, 1, rssi)]


class Floor:
    def __init__(self, daemon: Daemon, site: Any, approach: Approach) -> None:
        self.daemon, self.site, self.approach = daemon, site, approach
        assert daemon.api is not None
        self.url = f"http://127.0.0.1:{daemon.api.port}/"

    def items_in(self, zone: str) -> list[str]:
        assert self.daemon.db is not None
        with self.daemon.db.session() as s:
            return sorted(s.scalars(select(ZonePresence.epc).where(ZonePresence.zone == zone)))

    def zone_of(self, epc: str) -> str | None:
        assert self.daemon.db is not None
        with self.daemon.db.session() as s:
            row = s.get(ZonePresence, epc)
            return row.zone if row is not None else None

    def name_of(self, epc: str) -> str:
        assert self.daemon.ops is not None
        cat = self.daemon.ops.catalog
        return cat.catalog[cat.gtin_of(epc)].name  # type: ignore[index]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as driver:
        yield driver


@pytest.fixture(scope="module")
def floor() -> Iterator[Floor]:
    page.LIVE_INTERVAL_S = 0.2
    scenario = Scenario.load(DESK_SCENARIO)
    approach = Approach()
    with tempfile.TemporaryDirectory(prefix="rfidd-floor-") as tmp:
        users = Path(tmp) / "users.json"
        add_user(users, "Camille", [Role.STAFF], "1357")
        add_user(users, "Dominique", [Role.MANAGER], "8642")
        handheld = SerialReaderSim(approach.tags, protocol="tsl", link_path=f"{tmp}/ttyTSL")
        hpath = handheld.start()
        try:
            with SimulatedSite(scenario) as site:
                cfg = demo_config(scenario, site.ports, f"sqlite:///{tmp}/rfidd.db", None,
                                  serial_paths=site.serial_paths,
                                  http={"port": 0, "auth": {"users_file": str(users),
                                                            "cli_token_file": f"{tmp}/cli"}})
                readers = {**cfg.readers, "handheld": ReaderConfig.model_validate({
                    "kind": "serial", "address": hpath, "antennas": {"1": "stockroom"},
                    "serial": {"protocol": "tsl", "poll_interval_ms": 50}})}
                cfg = cfg.model_copy(update={"readers": readers})
                daemon = Daemon(cfg, timings=Timings(supervisor_s=0.2, sweep_s=0.5))
                daemon.start()
                try:
                    assert daemon.ops is not None
                    daemon.ops.catalog.import_catalog(
                        parse_catalog_records(scenario.catalog_rows(), "catalog"))
                    taken = take_over(daemon)
                    assert taken is not None and taken["books"]["taken_over"]
                    # The scenario's own desk visits are over before a test puts its own.
                    assert site.wait_timeline(timeout=90)
                    yield Floor(daemon, site, approach)
                finally:
                    daemon.stop()
        finally:
            handheld.stop()
    page.LIVE_INTERVAL_S = 1.0


def _sign_in(driver: Any, floor: Floor, login: str, pin: str, lang: str) -> None:
    driver.delete_all_cookies()
    driver.get(floor.url + f"?lang={lang}")
    wait_until(lambda: _by(driver, "#sign-in-form").is_displayed(), "the sign-in form")
    _by(driver, "#login").send_keys(login)
    _by(driver, "#pin").send_keys(pin)
    _click(driver, "#sign-in")
    wait_until(lambda: _by(driver, "#tabs").is_displayed(), "the signed-in page")
    wait_until(lambda: _all(driver, "input.zone"), "the zones")


def _text(driver: Any, css: str) -> str:
    return str(driver.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.innerText : ''", css))


def test_hold_for_a_client_then_its_arrival_on_the_floor_line(browser: Any,
                                                              floor: Floor) -> None:
    epc = floor.items_in("stockroom")[0]
    name = floor.name_of(epc)
    _sign_in(browser, floor, "camille", "1357", "fr")
    _click(browser, 'nav button[data-tab="holds"]')
    wait_until(lambda: "Aucun article réservé." in _text(browser, "#hold-list"), "no hold yet")
    _by(browser, "#hold-epc").clear()
    _by(browser, "#hold-epc").send_keys(epc)
    _by(browser, "#hold-client").send_keys("C-1042")
    _click(browser, "#place-hold")
    wait_until(lambda: "C-1042" in _text(browser, "#hold-list"), "the hold listed", timeout=10)
    row = _text(browser, "#hold-list li.hold")
    assert name in row and "actuellement dans la zone stockroom" in row and epc in row
    assert floor.daemon.lifecycle is not None
    state = floor.daemon.lifecycle.item_state(epc)
    assert state is not None and state["status"] == "held"
    assert state["hold"]["client"] == "C-1042" and state["hold"]["staff"].startswith("s-")
    # A second hold of the same item is refused, and the page says why (French typography).
    _by(browser, "#hold-epc").send_keys(epc)
    _by(browser, "#hold-client").send_keys("C-2000")
    _click(browser, "#place-hold")
    wait_until(lambda: _by(browser, "#hold-status").is_displayed(), "the refusal")
    assert _text(browser, "#hold-status").startswith(f"Refusé{NNBSP}:")
    _shot(browser, "holds-fr")

    # The sales floor: one discreet line, and it changes only when the held item arrives.
    _click(browser, "#floor-toggle")
    wait_until(lambda: _text(browser, "#floor-line") == "Rien de nouveau pour la vente.",
               "the quiet line")
    floor.site.apply(action(t=0, action="move", from_zone="stockroom", to="reception",
                            epcs=[epc]))
    wait_until(lambda: "C-1042" in _text(browser, "#floor-line"), "the arrival notice",
               timeout=30, poll_s=0.1)
    line = _text(browser, "#floor-line")
    assert line == (f"L'article réservé pour le client C-1042 est arrivé en réception{NNBSP}: "
                    f"{name}")
    assert not _by(browser, "#tabs").is_displayed()  # floor mode: the line, nothing else
    _shot(browser, "floor-fr")
    _click(browser, "#floor-toggle")

    # Back on the holds screen: where it is now; then the client's hold is released.
    _click(browser, 'nav button[data-tab="holds"]')
    wait_until(lambda: "actuellement dans la zone reception" in _text(browser, "#hold-list"),
               "the hold where the item is now", timeout=10)
    _click(browser, "#hold-list li.hold button.release")
    wait_until(lambda: "Aucun article réservé." in _text(browser, "#hold-list"), "released")
    state = floor.daemon.lifecycle.item_state(epc)
    assert state is not None and state["status"] != "held"


def test_item_put_on_the_desk_reader_shows_up(browser: Any, floor: Floor) -> None:
    epc = floor.items_in("floor")[0]
    _sign_in(browser, floor, "camille", "1357", "en")
    _click(browser, 'nav button[data-tab="find"]')
    wait_until(lambda: _by(browser, "#desk").is_displayed(), "the desk panel")
    floor.site.apply(action(t=0, action="move", from_zone="floor", to="pos", epcs=[epc]))
    wait_until(lambda: epc in _text(browser, "#desk-card"), "the desk item", timeout=30,
               poll_s=0.1)
    card = _text(browser, "#desk-card")
    assert floor.name_of(epc) in card and "State:" in card
    wait_until(lambda: "now in the pos zone" in _text(browser, "#desk-card"), "where it is now",
               timeout=20, poll_s=0.1)
    assert "History" in _text(browser, "#desk-card")
    _shot(browser, "desk-en")
    # Put on the desk, ready to hold: the holds form has its EPC.
    _click(browser, 'nav button[data-tab="holds"]')
    assert _by(browser, "#hold-epc").get_attribute("value") == epc


def test_a_missing_item_says_where_and_when_it_was_last_seen(browser: Any,
                                                             floor: Floor) -> None:
    epc = floor.items_in("floor")[-1]
    floor.site.apply(action(t=0, action="remove", from_zone="floor", epcs=[epc]))
    wait_until(lambda: floor.zone_of(epc) is None, "the item departed", timeout=30,
               poll_s=0.1)
    _sign_in(browser, floor, "camille", "1357", "fr")
    _click(browser, 'nav button[data-tab="find"]')
    _by(browser, "#find-q").send_keys(epc)
    _click(browser, "#find-go")
    wait_until(lambda: _texts(browser, "#find-results .result"), "the result", timeout=10)
    card = _texts(browser, "#find-results .result")[0]
    assert f"Où{NNBSP}: manquant — vu en dernier dans la zone floor le " in card, card


def test_handheld_proximity_bar_fills_as_it_nears(browser: Any, floor: Floor) -> None:
    epc = floor.items_in("stockroom")[-1]
    _sign_in(browser, floor, "camille", "1357", "en")
    _click(browser, 'nav button[data-tab="find"]')
    _by(browser, "#find-q").send_keys(epc)
    _click(browser, "#find-go")
    wait_until(lambda: _all(browser, "#find-results button.find-handheld"), "the find button",
               timeout=10)
    _click(browser, "#find-results button.find-handheld")
    wait_until(lambda: _by(browser, "#proximity").is_displayed(), "the proximity bar")
    assert "Not heard yet" in _text(browser, "#proximity-text")
    floor.approach.start(epc)  # the staff member walks towards it

    def width() -> float:
        return float(browser.execute_script(
            "return parseFloat(document.getElementById('proximity-bar').style.width) || 0"))

    wait_until(lambda: width() > 0, "a first signal", timeout=20, poll_s=0.1)
    first = width()
    wait_until(lambda: width() >= first + 20, "the bar filling", timeout=30, poll_s=0.1)
    assert "dBm" in _text(browser, "#proximity-text")
    _shot(browser, "find-handheld-en")
    _click(browser, "#stop-finding")
    wait_until(lambda: not _all(browser, "#proximity"), "the search stopped")
    assert floor.daemon.monitor is not None
    wait_until(lambda: floor.daemon.monitor.find_status("handheld")["epc"] is None,
               "the handheld told to stop")
    floor.approach.epc = None


def test_alerts_acknowledged_by_staff_resolved_by_a_manager(browser: Any,
                                                            floor: Floor) -> None:
    epc = floor.items_in("floor")[1]
    lifecycle = floor.daemon.lifecycle
    assert lifecycle is not None
    floor.site.apply(action(t=0, action="exit", from_zone="floor", epcs=[epc], dwell_s=2.0))
    wait_until(lambda: any(a["epc"] == epc for a in lifecycle.alerts.list("open")),
               "the exit alert", timeout=30, poll_s=0.1)
    aid = next(a["alert_id"] for a in lifecycle.alerts.list("open") if a["epc"] == epc)
    row = f'#open-alerts li[data-alert="{aid}"]'

    _sign_in(browser, floor, "camille", "1357", "en")
    _click(browser, 'nav button[data-tab="alerts"]')
    wait_until(lambda: _all(browser, row), "the alert listed", timeout=10)
    assert "Left through the exit unsold" in _text(browser, row)
    assert floor.name_of(epc) in _text(browser, row)
    # Staff: no resolve step, and the page says why.
    assert not _all(browser, f"{row} button.resolve")
    assert _text(browser, "#resolve-note") == ("Resolving an alert needs a manager: ask one to "
                                               "sign in.")
    # Even asked directly, the API refuses staff.
    status = browser.execute_async_script("""
        const done = arguments[arguments.length - 1];
        fetch(`/api/v1/alerts/${encodeURIComponent(arguments[0])}/resolve`, {method: "POST",
              headers: {"Content-Type": "application/json", "X-CSRF-Token": S.csrf},
              body: JSON.stringify({resolution: "false_alarm"})}).then((r) => done(r.status));
    """, aid)
    assert status == 403
    _click(browser, f"{row} button.acknowledge")
    wait_until(lambda: "acknowledged by Camille" in _text(browser, row), "acknowledged",
               timeout=10)
    assert lifecycle.alerts.get(aid)["state"] == "acknowledged"
    _shot(browser, "alerts-en")

    _sign_in(browser, floor, "dominique", "8642", "fr")
    _click(browser, 'nav button[data-tab="alerts"]')
    wait_until(lambda: _all(browser, f"{row} button.resolve"), "the manager's resolve step",
               timeout=10)
    assert not _by(browser, "#resolve-note").is_displayed()
    _shot(browser, "alerts-fr")
    browser.execute_script(
        "document.querySelector(arguments[0]).value = 'false_alarm'", f"{row} select")
    _click(browser, f"{row} button.resolve")
    wait_until(lambda: not _all(browser, row), "the alert resolved", timeout=10)
    got = lifecycle.alerts.get(aid)
    assert got["state"] == "resolved" and got["resolution"] == "false_alarm"


def test_every_screen_fits_a_phone_held_in_one_hand(browser: Any, floor: Floor) -> None:
    """390 x 844 (a phone): no screen scrolls sideways, every tab stays within thumb reach at
    the bottom, buttons are at least 44 px high."""
    _sign_in(browser, floor, "camille", "1357", "fr")
    browser.set_window_size(390, 844)
    try:
        for tab in ("count", "reception", "find", "holds", "replenish", "alerts", "charts"):
            _click(browser, f'nav button[data-tab="{tab}"]')
            wait_until(lambda t=tab: _by(browser, f"#tab-{t}").is_displayed(), tab)
            wide = browser.execute_script(
                "return document.documentElement.scrollWidth - window.innerWidth")
            assert wide <= 0, (tab, wide)
            nav = browser.execute_script(
                "const r = document.getElementById('tabs').getBoundingClientRect();"
                "return [r.bottom - window.innerHeight, Math.min(...[...document.querySelectorAll"
                "('nav button')].map((b) => b.getBoundingClientRect().height))]")
            assert nav[0] <= 1 and nav[1] >= 44, (tab, nav)
            cut = browser.execute_script(
                "return [...document.querySelectorAll('nav button, main button')]"
                ".filter((b) => b.offsetParent && b.scrollWidth > b.clientWidth + 1)"
                ".map((b) => b.innerText)")
            assert not cut, (tab, cut)  # no label cut off
            hidden = browser.execute_script(
                "const n = document.getElementById('tabs');"
                "return n.scrollWidth > n.clientWidth && !['auto', 'scroll'].includes("
                "getComputedStyle(n).overflowX)")
            assert not hidden, tab  # tabs past the edge can be scrolled to
        _click(browser, 'nav button[data-tab="holds"]')
        _shot(browser, "holds-phone-fr")
    finally:
        browser.set_window_size(820, 1180)


def test_favicon_needs_no_credential_but_nothing_else_opens(floor: Floor) -> None:
    with urllib.request.urlopen(floor.url + "favicon.ico", timeout=5) as r:
        assert r.status == 200 and r.headers["Content-Type"] == "image/x-icon"
        assert r.read(4) == b"\x00\x00\x01\x00"  # an ICO file
    for path in ("api/v1/floor/holds", "api/v1/floor/line", "api/v1/floor/desk"):
        with pytest.raises(urllib.error.HTTPError) as exc:
            urllib.request.urlopen(floor.url + path, timeout=5)
        assert exc.value.code == 401
