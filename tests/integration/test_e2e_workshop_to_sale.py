"""Issue 5's trial, as a new user runs it: workshop -> HQ -> store, across processes and outages.

Three OS processes through the real CLI (`rfidd run -c ws.toml`, `rfidd run -c store.toml`,
`rfidd hq run -c hq.toml`), a private mosquitto the test stops and restarts, PostgreSQL for HQ,
SQLite for the sites, simulated LLRP readers (in this process) whose fields the test changes to
"move" the items: commissioning happens from real bench reads, the store's arrivals, reception
-> stock -> floor moves from real reads too. Commands go through each daemon's HTTP API and the
store's MQTT command topic.

Mid-flow the broker is down for RFIDD_E2E_OUTAGE_S seconds (default 20) while both sites keep
working (events pile up in their outboxes) and the store daemon is SIGKILLed and restarted. At
the end `rfidd hq history EPC --json` shows, for every item, each lifecycle step exactly once
and no eventID twice. Figures (outage, outbox depths, drain time, events) are printed (-s).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import paho.mqtt.publish as mqtt_publish
import pytest

from inventory.epc import decode, sgtin96_hex
from rfidd.lifecycle.cli import call
from simulator.llrp.reader import FieldTag, SimulatedReader

ROOT = Path(__file__).resolve().parents[2]
OUTAGE_S = float(os.environ.get("RFIDD_E2E_OUTAGE_S", "20"))
# After the outage a site's link may wait up to its 60 s reconnect ceiling before draining.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(int(200 + OUTAGE_S))]
GTIN = "00614141123452"
PREFIX = "rfidd/v1"
CBV_PREFIXES = ("urn:epcglobal:cbv:bizstep:", "https://ref.gs1.org/cbv/BizStep-")
LIFECYCLE = ["commissioning", "packing", "shipping", "receiving", "stocking", "retail_selling"]
WS_STEPS = {"commissioning", "packing", "shipping"}


# ----------------------------------------------------------------------------- helpers


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait(pred: Callable[[], Any], timeout: float, what: str, step: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")


class MovableField:
    """The tags each antenna of a simulated reader sees; the test moves items between them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_antenna: dict[int, tuple[FieldTag, ...]] = {}

    def __call__(self, antenna: int) -> Sequence[FieldTag]:
        with self._lock:
            return self._by_antenna.get(antenna, ())

    def place(self, epcs: Sequence[str], antenna: int) -> None:
        """The items are now in front of `antenna` only (out of every other antenna's field)."""
        raw = {bytes.fromhex(e) for e in epcs}
        with self._lock:
            for ant, tags in list(self._by_antenna.items()):
                self._by_antenna[ant] = tuple(t for t in tags if t.epc not in raw)
            self._by_antenna[antenna] = self._by_antenna.get(antenna, ()) + tuple(
                FieldTag(r, rssi_stddev_dbm=1.0) for r in sorted(raw))

    def remove(self, epcs: Sequence[str]) -> None:
        raw = {bytes.fromhex(e) for e in epcs}
        with self._lock:
            for ant, tags in list(self._by_antenna.items()):
                self._by_antenna[ant] = tuple(t for t in tags if t.epc not in raw)


class Process:
    """One `python -m rfidd.cli ...` process, its stderr in a log file."""

    def __init__(self, name: str, args: list[str], log: Path) -> None:
        self.name, self.args, self.log = name, args, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "rfidd.cli", *self.args],
                                         cwd=ROOT, env=env, stdout=log, stderr=log)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def tail(self, n: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""


def http_ready(api: str, proc: Process,
               get: Callable[..., tuple[int, Any]] | None = None) -> bool:
    if not proc.alive():
        pytest.fail(f"{proc.name} exited ({proc.proc and proc.proc.returncode}):\n{proc.tail()}")
    try:
        if get is not None:
            return get("/api/v1/status", timeout=2)[0] == 200
        return call(api, "GET", "/api/v1/status", timeout=2)[0] == 200
    except Exception:
        return False


def outbox_pending(db: Path) -> int:
    """Rows the site has committed but the broker has not acknowledged (read-only peek)."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        row = con.execute("SELECT count(*) FROM outbox WHERE sent_at IS NULL "
                          "AND failed_at IS NULL").fetchone()
        return int(row[0])
    finally:
        con.close()


def outbox_event_ids(db: Path) -> set[str]:
    """The eventIDs of every EPCIS event the site ever committed for HQ."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return {r[0] for r in con.execute(
            "SELECT DISTINCT event_id FROM outbox WHERE stream = 'epcis'")}
    finally:
        con.close()


def short(step: str | None) -> str | None:
    if step is None:
        return None
    for p in CBV_PREFIXES:
        if step.startswith(p):
            return step[len(p):]
    return step


def site_toml(tmp: Path, site: str, kind: str, sgln: str, broker_port: int, http_port: int,
              zones: dict[str, str], reader_port: int) -> Path:
    antennas = ", ".join(f"{i + 1} = \"{z}\"" for i, z in enumerate(zones))
    zone_tables = "".join(f"[zones.{z}]\nkind = \"{k}\"\n" for z, k in zones.items())
    conf = tmp / f"{site}.toml"
    conf.write_text(f"""
[site]
id = "{site}"
name = "{site} (e2e trial)"
kind = "{kind}"
sgln = "{sgln}"
timezone = "Europe/Paris"
company_prefixes = ["0614141"]

[database]
url = "sqlite:///{tmp / (site + '.db')}"
batch_max_ms = 50

[mqtt]
url = "mqtt://127.0.0.1:{broker_port}"
topic_prefix = "{PREFIX}"

[http]
port = {http_port}

[presence]
departure_s = 600
move_margin_db = 0
move_margin_decay_s = 1

{zone_tables}
[readers.r1]
kind = "llrp"
address = "127.0.0.1"
antennas = {{ {antennas} }}
[readers.r1.llrp]
port = {reader_port}
keepalive_s = 1.0
report_every_n_tags = 50
report_timeout_ms = 200
""")
    return conf


# ----------------------------------------------------------------------------- the trial


class Trial:
    """The three daemons, the readers, and the figures the report needs."""

    def __init__(self, tmp: Path, broker: Any, pg_url: str) -> None:
        self.tmp = tmp
        self.broker = broker
        self.figures: dict[str, Any] = {}
        self.ws_field, self.st_field = MovableField(), MovableField()
        self.ws_reader = SimulatedReader("ws-bench", self.ws_field, antennas=[1])
        self.st_reader = SimulatedReader("st-door", self.st_field, antennas=[1, 2, 3])
        self.ws_reader.start()
        self.st_reader.start()
        self.ws_port, self.st_port, self.hq_port = free_port(), free_port(), free_port()
        self.ws_api = f"http://127.0.0.1:{self.ws_port}"
        self.st_api = f"http://127.0.0.1:{self.st_port}"
        self.hq_api = f"http://127.0.0.1:{self.hq_port}"
        self.ws_db, self.st_db = tmp / "ws.db", tmp / "st.db"
        ws_conf = site_toml(tmp, "ws", "workshop", "urn:epc:id:sgln:0614141.00001.0",
                            broker.port, self.ws_port, {"bench": "bench"}, self.ws_reader.port)
        st_conf = site_toml(tmp, "st", "store", "urn:epc:id:sgln:0614141.00002.0",
                            broker.port, self.st_port,
                            {"reception": "reception", "stock": "stock", "floor": "floor"},
                            self.st_reader.port)
        self.hq_conf = tmp / "hq.toml"
        self.hq_conf.write_text(f"""
[database]
url = "{pg_url}"
batch_max_ms = 50

[mqtt]
url = "mqtt://127.0.0.1:{broker.port}"
topic_prefix = "{PREFIX}"
client_id = "rfidd-hq-e2e"
relay_asns = true
# Plain subscriptions, as config/hq.example.toml says for Mosquitto: Mosquitto 2.0 drops
# shared subscriptions on a restart, and what the sites publish before HQ resubscribes is lost.
share_group = ""
relay_share_group = ""

[epcis]
port = {self.hq_port}

[sites]
accept_unknown = true
""")
        self.ws = Process("workshop", ["run", "-c", str(ws_conf)], tmp / "ws.log")
        self.st = Process("store", ["run", "-c", str(st_conf)], tmp / "st.log")
        self.hq = Process("hq", ["hq", "run", "-c", str(self.hq_conf)], tmp / "hq.log")
        # HQ's API takes an integrator token (read scope), made as an operator would.
        from click.testing import CliRunner

        from rfidd.hq import hq_command
        added = CliRunner().invoke(hq_command, ["token", "add", "e2e", "--scope", "read",
                                                "-c", str(self.hq_conf)])
        assert added.exit_code == 0, added.output
        self.hq_token = added.stdout.strip().splitlines()[-1]

    def hq_call(self, path: str, timeout: float = 30.0) -> tuple[int, Any]:
        from rfidd.client import ApiClient

        r = ApiClient(self.hq_api, timeout=timeout, token=self.hq_token).send("GET", path)
        return r.status, r.body

    def start(self) -> None:
        for p in (self.hq, self.ws, self.st):
            p.start()
        # HQ's web interface starts last (after FastAPI's imports): slow on a loaded machine.
        wait(lambda: http_ready(self.hq_api, self.hq, self.hq_call), 90, "HQ's HTTP API")
        wait(lambda: http_ready(self.ws_api, self.ws), 30, "the workshop's HTTP API")
        wait(lambda: http_ready(self.st_api, self.st), 30, "the store's HTTP API")

    def stop(self) -> dict[str, int | None]:
        codes = {p.name: p.stop() for p in (self.st, self.ws, self.hq)}
        self.ws_reader.stop()
        self.st_reader.stop()
        return codes

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.tail(2500)}" for p in (self.ws, self.st, self.hq))

    # -- site queries -----------------------------------------------------------------------
    def status(self, api: str, epc: str) -> str | None:
        code, body = call(api, "GET", f"/api/v1/lifecycle/items/{epc}")
        return body["state"]["status"] if code == 200 and body.get("state") else None

    def all_status(self, api: str, epcs: Sequence[str], status: str) -> bool:
        return all(self.status(api, e) == status for e in epcs)

    def zone(self, api: str, epc: str) -> str | None:
        code, body = call(api, "GET", f"/api/v1/items/{epc}")
        return body.get("zone") if code == 200 else None

    def all_in(self, api: str, epcs: Sequence[str], zone: str) -> bool:
        return all(self.zone(api, e) == zone for e in epcs)

    # -- HQ queries -------------------------------------------------------------------------
    def hq_steps(self, epc: str) -> list[str]:
        code, body = self.hq_call(f"/api/v1/items/{decode(epc).uri}/history")
        if code != 200:
            return []
        return [s for e in body["events"] if (s := short(e["biz_step"]))]

    def hq_has(self, epcs: Sequence[str], steps: Sequence[str]) -> bool:
        return all(set(steps) <= set(self.hq_steps(e)) for e in epcs)

    def hq_status(self) -> dict[str, Any]:
        code, body = self.hq_call("/api/v1/status")
        assert code == 200, body
        return dict(body)

    # -- the workshop's part ----------------------------------------------------------------
    def commission_and_ship(self, epcs: list[str], asn: str, carton: str) -> None:
        code, sess = call(self.ws_api, "POST", "/api/v1/lifecycle/commissioning/sessions",
                          {"gtin": GTIN, "expected": len(epcs)})
        assert code == 201, sess
        self.ws_field.place(epcs, 1)  # the tags are put on the bench reader
        wait(lambda: call(self.ws_api, "GET", "/api/v1/lifecycle/commissioning/sessions/"
                          + sess["id"])[1]["commissioned"] == len(epcs), 20,
             f"{len(epcs)} items commissioned from bench reads")
        code, res = call(self.ws_api, "POST", "/api/v1/lifecycle/ship", {
            "txn": asn, "to_site": "st", "carton": carton, "epcs": epcs})
        assert code == 200 and res["accepted"] == len(epcs), res
        self.ws_field.remove(epcs)  # the carton leaves the bench

    # -- the store's part -------------------------------------------------------------------
    def receive_and_stock(self, epcs: list[str], asn: str) -> None:
        self.st_field.place(epcs, 1)  # the carton arrives at reception
        wait(lambda: self.all_in(self.st_api, epcs, "reception"), 20, "arrival at reception")
        code, res = call(self.st_api, "POST", "/api/v1/lifecycle/receive",
                         {"txn": asn, "epcs": epcs})
        assert code == 200 and res["accepted"] == len(epcs), res
        wait(lambda: self.all_status(self.st_api, epcs, "in_stock"), 10, "received")
        self.st_field.place(epcs, 2)  # into the stockroom...
        wait(lambda: self.all_in(self.st_api, epcs, "stock"), 20, "moved to the stockroom")
        self.st_field.place(epcs, 3)  # ...and onto the sales floor
        wait(lambda: self.all_status(self.st_api, epcs, "on_floor"), 20, "stocked on the floor")

    def publish(self, topic: str, payload: str | bytes) -> None:
        mqtt_publish.single(topic, payload, qos=1, hostname=self.broker.host,
                            port=self.broker.port)


@pytest.fixture
def trial(private_mosquitto: Any, postgres_url: str, tmp_path: Path) -> Iterator[Trial]:
    t = Trial(tmp_path, private_mosquitto, postgres_url)
    try:
        t.start()
        yield t
    finally:
        if not private_mosquitto.running:
            private_mosquitto.start()
        codes = t.stop()
        t.figures["exit_codes"] = codes


def test_workshop_to_sale_through_hq_with_broker_outage_and_store_sigkill(
        trial: Trial, private_mosquitto: Any, mqtt_collector: Any) -> None:
    t = trial
    started = time.monotonic()
    batch_a = [sgtin96_hex(GTIN, n, 7) for n in (1001, 1002, 1003)]
    batch_b = [sgtin96_hex(GTIN, n, 7) for n in (2001, 2002)]
    items = batch_a + batch_b

    # 1. Broker up: the workshop commissions batch A from bench reads and ships it; HQ's relay
    #    forwards the ASN, so the store books A as in transit; A arrives at the store.
    t.commission_and_ship(batch_a, "ASN-A", "urn:epc:id:sscc:0614141.1000000001")
    wait(lambda: t.all_status(t.st_api, batch_a, "in_transit"), 30,
         "ASN-A relayed by `rfidd hq run` to the store")
    t.st_field.place(batch_a, 1)
    wait(lambda: t.all_in(t.st_api, batch_a, "reception"), 20, "A at the store's reception")
    wait(lambda: t.hq_has(batch_a, ["commissioning", "packing", "shipping"]), 30,
         "the workshop's events of A at HQ")

    # 2. Broker down. Both sites keep working: the store receives and stocks A, the workshop
    #    commissions and ships B; the store daemon loses power and comes back.
    private_mosquitto.stop()
    outage_from = time.monotonic()
    before = {"ws": outbox_pending(t.ws_db), "st": outbox_pending(t.st_db)}
    t.receive_and_stock(batch_a, "ASN-A")
    t.commission_and_ship(batch_b, "ASN-B", "urn:epc:id:sscc:0614141.1000000002")
    t.st.kill()
    t.st.start()
    wait(lambda: http_ready(t.st_api, t.st), 30, "the store daemon after SIGKILL")
    assert t.all_status(t.st_api, batch_a, "on_floor")  # nothing committed was lost
    piled = {"ws": outbox_pending(t.ws_db), "st": outbox_pending(t.st_db)}
    assert piled["ws"] > before["ws"] and piled["st"] > before["st"], (before, piled)
    time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - outage_from)))

    # 3. Broker back: the outboxes drain by themselves; B's ASN reaches the store via HQ.
    private_mosquitto.start()
    back = time.monotonic()
    outage = back - outage_from
    wait(lambda: outbox_pending(t.ws_db) == 0 and outbox_pending(t.st_db) == 0, 120,
         "both outboxes drained", step=0.05)
    drained = time.monotonic() - back
    wait(lambda: t.all_status(t.st_api, batch_b, "in_transit"), 30,
         "ASN-B (shipped during the outage) relayed to the store")
    wait(lambda: t.hq_has(batch_a, ["receiving", "stocking"]), 30,
         "the store's outage events of A at HQ")
    at_hq_s = time.monotonic() - back

    # 4. The store receives and stocks B, then sells everything over MQTT (the command is
    #    repeated: harmless); malformed commands get an error reply and change nothing.
    errors = mqtt_collector(private_mosquitto.broker, f"{PREFIX}/st/errors")
    t.receive_and_stock(batch_b, "ASN-B")
    t.publish(f"{PREFIX}/st/cmd/sale", b"{not json")
    t.publish(f"{PREFIX}/st/cmd/sale", json.dumps({"txn": "R-BAD", "epcs": [batch_a[0]],
                                                    "till": 3}))
    t.publish(f"{PREFIX}/st/cmd/sale", json.dumps({"txn": "R-BAD2", "epcs": ["nothex"]}))
    t.publish(f"{PREFIX}/st/cmd/frobnicate", "{}")
    replies = errors.wait_for(lambda ms: sum(
        "command sale" in json.loads(m.payload)["error"]
        or "frobnicate" in json.loads(m.payload)["error"] for m in ms) >= 4, timeout=20)
    texts = [json.loads(m.payload)["error"] for m in replies]
    assert any("unknown command 'frobnicate'" in x for x in texts), texts
    assert any("not JSON" in x for x in texts), texts
    assert any("till: unknown field" in x for x in texts), texts
    assert any("epcs" in x and "nothex" in x for x in texts), texts
    assert t.all_status(t.st_api, items, "on_floor")  # the bad commands sold nothing
    sale = json.dumps({"txn": "R-1001", "epcs": items})
    t.publish(f"{PREFIX}/st/cmd/sale", sale)
    t.publish(f"{PREFIX}/st/cmd/sale", sale)
    wait(lambda: t.all_status(t.st_api, items, "sold"), 20, "sold over MQTT")
    wait(lambda: t.hq_has(items, LIFECYCLE), 30, "every item's whole story at HQ")

    # 5. HQ's answer, through the CLI a user would run.
    procs = {e: subprocess.Popen(
        [sys.executable, "-m", "rfidd.cli", "hq", "history", decode(e).uri or e, "--json",
         "-c", str(t.hq_conf)], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE) for e in items}
    total_events = 0
    at_hq: set[str] = set()
    for epc, p in procs.items():
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err.decode()
        events = json.loads(out)["events"]
        ids = [e["event_id"] for e in events]
        assert len(ids) == len(set(ids)), f"{epc}: an eventID twice at HQ: {ids}"
        steps = [(short(e["biz_step"]), e["site"]) for e in events if e["biz_step"]]
        assert Counter(s for s, _ in steps) == Counter(LIFECYCLE), (epc, steps)
        assert all((site == "ws") == (s in WS_STEPS) for s, site in steps), (epc, steps)
        order = [s for s, _ in steps]
        assert order.index("commissioning") < order.index("shipping") < order.index(
            "receiving") < order.index("stocking") < order.index("retail_selling"), order
        # the arrivals and moves the readers saw, at each site, as OBSERVEs
        assert {e["site"] for e in events if e["action"] == "OBSERVE"} == {"ws", "st"}, events
        total_events += len(events)
        at_hq.update(ids)
    # Every event either site committed is at HQ, and HQ has nothing else.
    committed = outbox_event_ids(t.ws_db) | outbox_event_ids(t.st_db)
    assert at_hq == committed, (sorted(committed - at_hq), sorted(at_hq - committed))

    hq = t.hq_status()
    assert hq["events_malformed"] == 0 and hq["db_errors"] == 0, hq
    assert t.st.alive() and t.ws.alive() and t.hq.alive(), t.logs()
    t.figures.update({
        "outage_s": round(outage, 1), "outbox_rows_before_outage": before,
        "outbox_rows_piled_up": piled, "drain_s_after_broker_back": round(drained, 1),
        "hq_has_outage_events_s": round(at_hq_s, 1), "item_events_at_hq": total_events,
        "hq_events_stored": hq["events_stored"], "hq_events_duplicate": hq["events_duplicate"],
        "hq_messages": hq["messages"], "wall_s": round(time.monotonic() - started, 1),
    })
    print("\nE2E figures:", json.dumps(t.figures))
