"""A new user's first day through the `rfidd` CLI and the page's API, against a real daemon
over loopback (a fake reader feeding its ingest queue): the take-over count says what it did
("N items put on the books", not "0 of 0 found"), where an item is reads as words (the zone's
label, else "the floor zone"), and every listing command answers `--json`."""

from __future__ import annotations

import http.client
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from fakes import FakeReader
from waits import wait_until

from inventory.epc import sgtin96_hex
from rfidd.app import Daemon, Timings
from rfidd.config import Config
from rfidd.intake import IngestQueue
from rfidd.lifecycle.alerts_cli import alerts_cli
from rfidd.lifecycle.cli import lifecycle_cli, trace_command
from rfidd.ops import ops_cli
from rfidd.readers_cli import readers_command

pytestmark = pytest.mark.integration

GTIN = "00614141123452"
FLOOR = [sgtin96_hex(GTIN, n, 7) for n in range(1, 4)]  # antenna 2: the floor, unlabelled
STOCK = [sgtin96_hex(GTIN, n, 7) for n in range(10, 12)]  # antenna 1: labelled "Réserve"


class Site:
    def __init__(self, tmp_path: Path) -> None:
        cfg = Config.model_validate({
            "site": {"id": "first-day", "name": "First day", "kind": "store",
                     "sgln": "urn:epc:id:sgln:0614141.00002.0", "timezone": "Europe/Paris",
                     "company_prefixes": ["0614141"]},
            "database": {"url": f"sqlite:///{tmp_path / 'site.db'}", "batch_max_ms": 20},
            "mqtt": {"enabled": False},
            "http": {"port": 0, "auth": {"cli_token_file": str(tmp_path / "cli-token")}},
            "zones": {"stock": {"kind": "stock", "label": "Réserve"},
                      "floor": {"kind": "floor"}, "exit": {"kind": "exit"}},
            "readers": {"r1": {"kind": "llrp", "address": "127.0.0.1",
                               "antennas": {"1": "stock", "2": "floor", "4": "exit"}}},
        })
        self.readers: dict[str, FakeReader] = {}

        def factory(name: str, _rc: Any, q: IngestQueue) -> FakeReader:
            self.readers[name] = FakeReader(name, q)
            return self.readers[name]

        self.daemon = Daemon(cfg, timings=Timings(sweep_s=0.2), reader_factory=factory)
        self.daemon.start()
        assert self.daemon.api is not None and self.daemon.api.cli_token
        self.api = f"http://127.0.0.1:{self.daemon.api.port}"
        self.env = {"RFIDD_TOKEN": self.daemon.api.cli_token, "RFIDD_API": self.api}

    def run(self, group: Any, *args: str) -> Result:
        res = CliRunner().invoke(group, list(args), env=self.env)
        assert res.exit_code == 0, (args, res.output, res.exception)
        return res

    def json(self, group: Any, *args: str) -> Any:
        return json.loads(self.run(group, *args, "--json").stdout)

    def get(self, path: str) -> Any:
        conn = http.client.HTTPConnection("127.0.0.1", self.daemon.api.port,  # type: ignore
                                          timeout=15)
        conn.request("GET", path, headers={"Authorization": f"Bearer {self.env['RFIDD_TOKEN']}"})
        resp = conn.getresponse()
        body = json.loads(resp.read())
        conn.close()
        assert resp.status == 200, (path, body)
        return body

    def read(self) -> None:
        self.readers["r1"].read(FLOOR, antenna=2)
        self.readers["r1"].read(STOCK, antenna=1)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    s = Site(tmp_path_factory.mktemp("first-day"))
    try:
        yield s
    finally:
        s.daemon.stop()


def _headline(site: Site, cid: str, lang: str) -> str:
    return str(site.get(f"/api/v1/page/counts/{cid}?lang={lang}")["headline"])


def test_the_take_over_count_says_what_it_put_on_the_books(site: Site) -> None:
    started = site.json(ops_cli, "count", "start", "floor", "stock", "--adopt")
    cid = started["session_id"]
    assert started["adopt"] is True and started["status"] == "running"

    def progress() -> Any:
        site.read()
        return site.json(ops_cli, "count", "progress", cid)

    wait_until(lambda: progress()["progress"]["unexpected"] == 5, "the 5 items seen")
    line = site.run(ops_cli, "count", "progress", cid).stdout
    assert line.startswith("take-over: 5 items found, put on the books when the count "
                           "closes"), line
    assert "0 of 0 found" not in line
    assert _headline(site, cid, "en") == "5 items found, put on the books when the count closes"
    assert _headline(site, cid, "fr") == "5 articles trouvés, mis en stock à la clôture"

    out = " ".join(site.run(ops_cli, "count", "stop", cid).stdout.split())
    assert f"Take-over count {cid} over floor, stock: 5 items put on the books" in out, out
    assert "0 of 0" not in out and "Books: 5 taken over" in out
    assert "Items to check" not in out  # what it took over is no exception to check
    report = " ".join(site.run(ops_cli, "count", "report", cid).stdout.split())
    assert "5 items put on the books" in report and "0 of 0" not in report
    assert _headline(site, cid, "en") == "5 items put on the books"
    assert _headline(site, cid, "fr") == "5 articles mis en stock"
    view = site.get(f"/api/v1/page/counts/{cid}?lang=en")
    assert view["accuracy"] == "—" and view["unexpected"] == []
    # and so does its row in the count listing, for people and for scripts
    listed = {c["session_id"]: c for c in site.json(ops_cli, "count", "list")}
    assert listed[cid]["adopt"] is True and listed[cid]["taken_over"] == 5, listed[cid]
    table = site.run(ops_cli, "count", "list").stdout
    assert "take-over: 5 put on the books" in " ".join(table.split()), table
    assert "n/a" not in table

    # the next count expects what the take-over booked: an ordinary "found of expected"
    cid2 = site.json(ops_cli, "count", "start", "floor")["session_id"]

    def found() -> int:
        site.read()
        return int(site.json(ops_cli, "count", "progress", cid2)["progress"]["found"])

    wait_until(lambda: found() == 3, "the floor's 3 items found")
    early = CliRunner().invoke(ops_cli, ["count", "report", cid2, "--json"], env=site.env)
    assert early.exit_code == 1 and early.stdout == ""  # no report yet, said on stderr
    assert f"count {cid2} is running: no report yet" in early.stderr
    assert _headline(site, cid2, "en") == "3 of 3 found"
    assert "3 of 3 found" in " ".join(site.run(ops_cli, "count", "stop", cid2).stdout.split())


def test_where_an_item_is_reads_as_words(site: Site) -> None:
    site.read()
    wait_until(lambda: site.daemon.ingestor is not None
               and site.daemon.ingestor.zone_counts.get("stock", 0) == 2, "the stock located")
    for lang, floor, stock in (("en", "now in the floor zone", "now in Réserve"),
                               ("fr", "actuellement dans la zone floor",
                                "actuellement en Réserve")):
        for epc, want in ((FLOOR[0], floor), (STOCK[0], stock)):
            got = site.get(f"/api/v1/floor/find?q={epc}&lang={lang}")["results"]
            assert [r["where_text"] for r in got] == [want], (lang, epc, got)
    # and so does each item's history: first a reader's sighting (then any count's)
    history = site.get(f"/api/v1/floor/find?q={STOCK[0]}&lang=en")["results"][0]["history"]
    assert history[0]["step_text"] == "seen by a reader", history
    assert {h["where_text"] for h in history} == {"in Réserve"}
    assert all(h["step_text"] for h in history), history
    # the page's zone chooser names them the same way
    ctx = site.get("/api/v1/page/context?lang=en")
    assert ctx["zones"] == ["exit", "floor", "stock"] and ctx["zone_labels"] == {
        "stock": "Réserve"}


def test_every_listing_command_answers_json(site: Site) -> None:
    started = site.json(ops_cli, "takeover", "floor")  # without --seconds: just started
    assert started["adopt"] is True and started["status"] == "running"
    assert site.json(ops_cli, "count", "list")[0]["status"] == "running"

    def seen() -> int:  # on the books already (an earlier test's take-over) or taken over now
        site.read()
        p = site.json(ops_cli, "count", "progress", started["session_id"])["progress"]
        return int(p["found"] + p["unexpected"])

    wait_until(lambda: seen() == 3, "the floor's 3 items seen")
    site.json(ops_cli, "count", "stop", started["session_id"])
    counts = site.json(ops_cli, "count", "list")
    assert isinstance(counts, list) and {c["status"] for c in counts} == {"finished"}
    assert all(re.fullmatch(r"[\w-]+", c["session_id"]) for c in counts)
    assert isinstance(site.json(ops_cli, "reception", "list"), list)
    assert isinstance(site.json(ops_cli, "count", "schedule", "list"), list)
    site.run(ops_cli, "count", "schedule", "add", "0 7 * * 1", "floor")
    counts_only = site.json(ops_cli, "count", "schedule", "list")
    everything = site.json(ops_cli, "count", "schedule", "list", "--all")
    assert isinstance(everything, list), everything  # one shape, with --all or without
    assert [r for r in everything if r["kind"] == "count"] == counts_only
    assert {r["kind"] for r in everything} == {"count", "housekeeping"}, everything
    assert all(r["state"] == ("scheduled" if r["next_run"] else "unscheduled")
               for r in everything), everything
    assert counts_only[-1]["cron"] == "0 7 * * 1" and counts_only[-1]["state"] == "scheduled"
    done = site.json(ops_cli, "count", "progress", counts[0]["session_id"])
    assert done["status"] == "finished" and done["report"]["totals"]
    alerts = site.json(alerts_cli, "list")
    assert alerts == {"alerts": []}
    readers = site.json(readers_command)
    assert readers["site"] == "first-day" and set(readers["readers"]) == {"r1"}
    held = site.json(lifecycle_cli, "hold", FLOOR[0], "--txn", "H-1", "--client", "C-7")
    assert held["accepted"] == 1, held
    trace = site.json(trace_command, FLOOR[0])
    assert trace["epc"] == FLOOR[0] and trace["state"]["status"] == "held"
