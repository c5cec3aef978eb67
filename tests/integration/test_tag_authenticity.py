"""A cloned tag refused at the returns desk: the real daemons, their LLRP drivers reading TIDs
from the simulator (an AccessSpec on the TID bank), commissioning from the bench reads, and the
returns through the real HTTP API and the real CLI.

The workshop commissions two items at its bench (the TIDs bound are the chips the bench read)
and ships them; the ASN carries the bindings to the store (HQ's relay, done by hand), which
receives and sells both. Then its desk antenna sees the genuine chip of one and, for the other,
another chip carrying its EPC: the clone's return is refused (HTTP 409 / CLI exit 1, naming the
reason), alerted as `cloned_tag` (queued for HQ and in the alert workflow) and counted; the
genuine one's return is accepted."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select
from waits import wait_until

from inventory.epc import sgtin96_hex
from readers import supervise
from rfidd.app import Daemon, Timings
from rfidd.config import Config
from rfidd.lifecycle.cli import call, lifecycle_cli
from rfidd.store.models import OutboxMessage
from simulator.llrp.reader import FieldTag, ReaderQuirks, SimulatedReader, tid_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
GTIN = "00614141123452"


class Field:
    """What each antenna sees now; the test moves chips (genuine or cloned) between them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tags: dict[int, tuple[FieldTag, ...]] = {}

    def __call__(self, antenna: int) -> Sequence[FieldTag]:
        with self._lock:
            return self._tags.get(antenna, ())

    def show(self, antenna: int, tags: Sequence[FieldTag]) -> None:
        with self._lock:
            self._tags = {antenna: tuple(tags)}


def site(tmp: Path, sid: str, kind: str, zone: str, zone_kind: str, port: int) -> Daemon:
    cfg = Config.model_validate({
        "site": {"id": sid, "name": sid, "kind": kind, "timezone": "Europe/Paris",
                 "sgln": f"urn:epc:id:sgln:0614141.0000{1 if kind == 'workshop' else 2}.0"},
        "database": {"url": f"sqlite:///{tmp / (sid + '.db')}", "batch_max_ms": 20},
        "mqtt": {"enabled": False}, "http": {"port": 0},
        "zones": {zone: {"kind": zone_kind}},
        "readers": {"r1": {"kind": "llrp", "address": "127.0.0.1", "antennas": {"1": zone},
                           "llrp": {"port": port, "read_tid": True}}},
    })
    daemon = Daemon(cfg, timings=Timings(sweep_s=0.2, supervisor_s=0.1), ops_settings=None)
    daemon.start()
    return daemon


@pytest.fixture
def make_sites(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A workshop with a bench reader and a store with a reader at its returns counter
    (`desk_quirks`: that reader's simulator quirks)."""
    monkeypatch.setattr(supervise, "BACKOFF_INITIAL_S", 0.05)
    monkeypatch.setattr(supervise, "POLL_S", 0.01)
    sims: list[SimulatedReader] = []
    daemons: list[Daemon] = []

    def make(desk_quirks: Sequence[str] = ()) -> tuple[Daemon, Field, Daemon, Field]:
        ws_field, st_field = Field(), Field()
        sims.extend([SimulatedReader("ws-bench", ws_field, reads_per_s=200),
                     SimulatedReader("st-counter", st_field, reads_per_s=200,
                                     quirks=ReaderQuirks.from_names(desk_quirks))])
        for sim in sims:
            sim.start()
        daemons.append(site(tmp_path, "ws", "workshop", "bench", "bench", sims[0].port))
        daemons.append(site(tmp_path, "st", "store", "counter", "pos", sims[1].port))
        return daemons[0], ws_field, daemons[1], st_field

    yield make
    for d in daemons:
        d.stop()
    for sim in sims:
        sim.stop()


def api_of(d: Daemon) -> str:
    assert d.api is not None
    return f"http://127.0.0.1:{d.api.port}"


def item(api: str, epc: str) -> dict[str, Any]:
    code, body = call(api, "GET", f"/api/v1/lifecycle/items/{epc}")
    return body.get("state") or {} if code == 200 else {}


def commissioned_shipped_sold(ws: Daemon, ws_field: Field, st: Daemon,
                              raw: dict[str, bytes]) -> None:
    """The workshop commissions the items at its bench (the original chips) and ships them;
    the ASN goes to the store (HQ's relay, by hand), which receives and sells them."""
    ws_api, api = api_of(ws), api_of(st)
    status, sess = call(ws_api, "POST", "/api/v1/lifecycle/commissioning/sessions",
                        {"gtin": GTIN, "expected": len(raw)})
    assert status == 201, sess
    ws_field.show(1, [FieldTag(r) for r in raw.values()])
    wait_until(lambda: all(item(ws_api, e).get("tid") for e in raw),
               "all commissioned, with TIDs", timeout=30)
    assert {e: item(ws_api, e)["tid"] for e in raw} == {e: tid_for(r).hex().upper()
                                                       for e, r in raw.items()}
    status, res = call(ws_api, "POST", "/api/v1/lifecycle/ship",
                       {"txn": "ASN-9", "to_site": "st", "epcs": sorted(raw)})
    assert status == 200 and sorted(res["asn"]["tids"]) == sorted(raw), res
    status, res = call(api, "POST", "/api/v1/lifecycle/shipment", res["asn"])
    assert status == 200, res
    asn_id = res["txn"]
    for cmd, body in (("receive", {"txn": asn_id}), ("sale", {"txn": "R-1"})):
        status, res = call(api, "POST", f"/api/v1/lifecycle/{cmd}",
                           {**body, "epcs": sorted(raw)})
        assert status == 200 and res["accepted"] == len(raw), res
    assert all(item(api, e)["tid"] == tid_for(r).hex().upper() for e, r in raw.items())


def test_a_cloned_tag_is_refused_at_the_returns_desk_and_the_genuine_one_accepted(
        make_sites: Any) -> None:
    ws, ws_field, st, st_field = make_sites()
    api = api_of(st)
    genuine, cloned = sgtin96_hex(GTIN, 501, 7), sgtin96_hex(GTIN, 502, 7)
    raw = {e: bytes.fromhex(e) for e in (genuine, cloned)}
    commissioned_shipped_sold(ws, ws_field, st, raw)

    # At the desk: the genuine item, and another chip carrying the second item's EPC.
    clone_tid = tid_for(raw[cloned], clone=1).hex().upper()
    st_field.show(1, [FieldTag(raw[genuine]),
                      FieldTag(raw[cloned], tid=bytes.fromhex(clone_tid))])
    assert st.queue is not None
    queue = st.queue
    wait_until(lambda: clone_tid in queue.tids.of(cloned) and queue.tids.of(genuine),
               "the clone's TID read at the desk", timeout=15)
    runner = CliRunner(env={"COLUMNS": "250"})
    r = runner.invoke(lifecycle_cli, ["return", "--rma", "RMA-1", "--api", api, cloned])
    assert r.exit_code == 1, r.output
    assert "cloned tag" in r.output and clone_tid in r.output.replace("\n", ""), r.output
    status, res = call(api, "POST", "/api/v1/lifecycle/return", {"txn": "RMA-2",
                                                                 "epcs": [cloned]})
    assert status == 409 and res["items"][0]["reason_code"] == "cloned_tag", res
    assert item(api, cloned)["status"] == "sold"

    status, res = call(api, "POST", "/api/v1/lifecycle/return", {"txn": "RMA-3",
                                                                 "epcs": [genuine]})
    assert status == 200 and res["items"][0]["tag_check"] == "match", res
    assert item(api, genuine)["status"] == "returned"

    status, alerts = call(api, "GET", "/api/v1/alerts?type=cloned_tag")
    assert status == 200, alerts
    assert [a["epc"] for a in alerts["alerts"]] == [cloned, cloned]  # one per RMA
    assert st.db is not None
    with st.db.session() as s:
        queued = [json.loads(p) for stream, p in s.execute(
            select(OutboxMessage.stream, OutboxMessage.payload)) if stream == "alert"]
    clones = [m for m in queued if m["type"] == "cloned_tag"]
    assert {m["txn"] for m in clones} == {"RMA-1", "RMA-2"}
    assert all(m["read_tids"] == [clone_tid] and m["refused"] for m in clones), clones
    reg = st.metrics.registry
    assert reg.get_sample_value("rfidd_alerts_total", {"kind": "cloned_tag"}) == 2
    assert reg.get_sample_value("rfidd_tag_checks_total",
                                {"point": "return", "verdict": "mismatch"}) == 2
    assert ws.metrics.registry.get_sample_value("rfidd_tag_bindings_total",
                                                {"source": "read"}) == 2


def test_a_desk_reader_without_tid_support_refuses_nothing_and_says_so(
        make_sites: Any) -> None:
    """The ordinary day: the counter's reader cannot read TIDs (no access operations). A
    return is accepted; the answer says the chip could not be checked, and that is counted."""
    ws, ws_field, st, st_field = make_sites(desk_quirks=["no-tid-read"])
    api = api_of(st)
    epc = sgtin96_hex(GTIN, 601, 7)
    raw = {epc: bytes.fromhex(epc)}
    commissioned_shipped_sold(ws, ws_field, st, raw)
    st_field.show(1, [FieldTag(raw[epc], tid=tid_for(raw[epc], clone=1))])  # even a clone
    assert st.ctx is not None
    ctx = st.ctx
    wait_until(lambda: ctx.tracker.zone_of(epc) == "counter", "the item read at the desk",
               timeout=15)
    reg = st.metrics.registry
    assert reg.get_sample_value("rfidd_reader_anomalies_total",
                                {"reader": "r1", "kind": "tid_read_refused"}) == 1
    r = CliRunner(env={"COLUMNS": "250"}).invoke(
        lifecycle_cli, ["return", "--rma", "RMA-7", "--api", api, epc])
    assert r.exit_code == 0, r.output
    assert "1 accepted" in r.output and "no TID read" in r.output, r.output
    assert reg.get_sample_value("rfidd_tag_checks_total",
                                {"point": "return", "verdict": "unread"}) == 1
    assert reg.get_sample_value("rfidd_alerts_total", {"kind": "cloned_tag"}) == 0
