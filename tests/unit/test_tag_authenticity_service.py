"""Tag authenticity wired through the lifecycle service and the reception (real SQLite).

The TIDs come in as the readers report them (rfidd.intake.TidMemory); the binding is made at
commissioning from the bench reads, travels on the ASN, and is checked at returns, repairs and
reception. A clone is refused at a desk, flagged at reception; stock without a binding and
reads without a TID are counted, never refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fakes import make_ingestor
from sqlalchemy import select

from inventory.asn import parse_asn_object
from inventory.epc import sgtin96_hex
from inventory.presence import ChangeKind, PresenceChange, PresenceTracker
from readers.base import TagRead
from rfidd.config import Config
from rfidd.context import ServiceContext
from rfidd.health import DomainLock
from rfidd.intake import TidMemory
from rfidd.lifecycle import authenticity, books
from rfidd.lifecycle.service import LifecycleService
from rfidd.metrics import Metrics
from rfidd.store.db import open_database
from rfidd.store.models import OutboxMessage

GTIN = "00614141123452"
T0 = 1_717_000_000.0
GENUINE = "E2801160200000000000A001"
CLONE = "E2801160200000000000C10E"


def E(n: int) -> str:
    return sgtin96_hex(GTIN, n, 7)


def tid(n: int) -> str:
    return f"E28011602000{n:012X}"


def config(site: str, kind: str) -> Config:
    return Config.model_validate({
        "site": {"id": site, "name": site, "kind": kind, "timezone": "Europe/Paris",
                 "sgln": f"urn:epc:id:sgln:0614141.0000{1 if kind == 'workshop' else 2}.0"},
        "zones": {"bench": {"kind": "bench"}, "stock": {"kind": "stock"},
                  "reception": {"kind": "reception"}},
        "mqtt": {"enabled": False}, "http": {"enabled": False},
    })


class Site:
    def __init__(self, tmp: Path, site: str, kind: str) -> None:
        self.tids = TidMemory()
        db = open_database(f"sqlite:///{tmp / (site + '.db')}")
        self.ctx = ServiceContext(config(site, kind), db, Metrics(),
                                  PresenceTracker(300.0, 6.0, 30.0), DomainLock())
        self.svc = LifecycleService(self.ctx, tids=self.tids)
        self.ingestor, _ = make_ingestor(
            db, {}, {z: str(zc.kind) for z, zc in self.ctx.config.zones.items()},
            lock=self.ctx.tracker_lock, metrics=self.ctx.metrics, tracker=self.ctx.tracker,
            books=lambda s, epcs: books.load_states(s, epcs, site), quiet_rules=True)
        self.ingestor.add_component(self.svc)

    def read(self, epc: str, *tids: str | None) -> None:
        """The readers report `epc` once per chip (None: a reader that sends no TID)."""
        self.tids.record([TagRead(epc, "r1", 1, -50.0, 0.0, tid=t) for t in tids])

    def bench(self, *epcs: str) -> None:
        self.ingestor.handle_changes([PresenceChange(ChangeKind.ARRIVED, e, "bench", None, T0)
                                      for e in epcs])

    def outbox(self, stream: str) -> list[dict[str, Any]]:
        with self.ctx.db.session() as s:
            q = select(OutboxMessage.stream, OutboxMessage.payload).order_by(OutboxMessage.id)
            return [json.loads(p) for st, p in s.execute(q) if st == stream]

    def metric(self, name: str, **labels: str) -> float:
        return self.ctx.metrics.registry.get_sample_value(name, labels) or 0.0


@pytest.fixture
def ws(tmp_path: Path) -> Site:
    return Site(tmp_path, "ws", "workshop")


@pytest.fixture
def st(tmp_path: Path) -> Site:
    return Site(tmp_path, "st", "store")


def test_commissioning_binds_the_tid_the_bench_read(ws: Site) -> None:
    ws.svc.commissioning.open_session({"gtin": GTIN, "expected": 4, "zone": "bench"})
    ws.read(E(1), tid(1))
    ws.read(E(2), tid(2), tid(0xC2))  # two chips carry E(2) at the bench: no guess
    ws.read(E(3), None)  # a bench reader without TID support
    ws.bench(E(1), E(2), E(3))
    assert ws.svc.item_state(E(1))["tid"] == tid(1)
    assert ws.svc.item_state(E(2))["tid"] is None
    assert ws.svc.item_state(E(3))["tid"] is None
    ev = {e["epcList"][0]: e for e in ws.outbox("epcis")}
    assert [e.get("rfidd:tid") for e in ev.values()] == [tid(1), None, None]
    for src, n in (("read", 1), ("ambiguous", 1), ("none", 1), ("bind_command", 0)):
        assert ws.metric("rfidd_tag_bindings_total", source=src) == n, src
    # the bind's TID wins; the ASN of a shipment carries the bindings
    ws.svc.commissioning.bind({"epc": E(4), "tid": tid(4)})
    ws.bench(E(4))
    assert ws.svc.item_state(E(4))["tid"] == tid(4)
    assert ws.metric("rfidd_tag_bindings_total", source="bind_command") == 1
    res = ws.svc.handle("ship", {"txn": "ASN-1", "to_site": "st", "epcs": [E(1), E(3), E(4)]})
    assert res.rejected == 0 and res.asn is not None
    assert res.asn["tids"] == {E(1): tid(1), E(4): tid(4)}
    parsed = parse_asn_object(ws.outbox("asn")[0])
    assert parsed.ok and dict(parsed.asns[0].tids) == {E(1): tid(1), E(4): tid(4)}


def sold_at_store(st: Site, bound: dict[str, str], plain: list[str]) -> None:
    """Items shipped here with their bindings (and stock without any), then sold."""
    epcs = sorted([*bound, *plain])
    st.svc.handle("shipment", {"asn_id": "ASN-1", "origin": "ws", "destination": "st",
                               "shipped_at": "2024-05-29T10:00:00Z", "epcs": epcs,
                               "tids": bound})
    assert st.svc.handle("transfer_in", {"txn": "ASN-1", "epcs": epcs}).rejected == 0
    assert st.svc.handle("sale", {"txn": "R-1", "epcs": epcs}).rejected == 0


def test_a_cloned_tag_is_refused_at_a_return_and_alerted(st: Site) -> None:
    sold_at_store(st, {E(1): tid(1), E(2): tid(2), E(3): tid(3)}, [E(4)])
    st.read(E(1), tid(1))  # the genuine item at the desk
    st.read(E(2), tid(0xC2))  # another chip with E(2)'s EPC: a clone
    st.read(E(4), tid(4))  # stock from before the binding: nothing to check against
    # E(3): the desk reader sent no TID
    res = st.svc.handle("return", {"txn": "RMA-1", "epcs": [E(1), E(2), E(3), E(4)]})
    by = {i.epc: i for i in res.items}
    assert by[E(1)].result == "accepted" and by[E(1)].tag_check == "match"
    assert by[E(2)].result == "rejected" and by[E(2)].reason_code == "cloned_tag"
    assert f"bound to TID {tid(2)}" in str(by[E(2)].reason) and tid(0xC2) in str(by[E(2)].reason)
    assert by[E(3)].result == "accepted" and by[E(3)].tag_check == "unread"
    assert "no TID read" in str(by[E(3)].tag_note)
    assert by[E(4)].result == "accepted" and by[E(4)].tag_check == "unbound"
    assert st.svc.item_state(E(2))["status"] == "sold"  # nothing changed for the clone
    alert = [a for a in st.outbox("alert") if a["type"] == "cloned_tag"]
    assert len(alert) == 1 and alert[0]["epc"] == E(2) and alert[0]["refused"] is True
    assert alert[0]["bound_tid"] == tid(2) and alert[0]["read_tids"] == [tid(0xC2)]
    assert [a["epc"] for a in st.svc.alerts.list(kind="cloned_tag")] == [E(2)]
    assert st.metric("rfidd_alerts_total", kind="cloned_tag") == 1
    assert st.metric("rfidd_lifecycle_rejections_total", step="return",
                     reason="cloned_tag") == 1
    for verdict, n in (("match", 1), ("mismatch", 1), ("unread", 1), ("unbound", 1)):
        assert st.metric("rfidd_tag_checks_total", point="return", verdict=verdict) == n
    assert res.to_json()["items"][1]["reason_code"] == "cloned_tag"


def test_the_clone_beside_the_genuine_chip_is_refused_and_old_reads_vouch_for_nothing(
        st: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    sold_at_store(st, {E(1): tid(1), E(2): tid(2)}, [])
    st.read(E(1), tid(1), tid(0xC1))  # both chips at the desk
    res = st.svc.handle("return", {"txn": "RMA-2", "epcs": [E(1)]})
    assert res.items[0].reason_code == "cloned_tag"
    st.read(E(2), tid(2))
    monkeypatch.setattr(authenticity, "TID_MAX_AGE_S", -1.0)  # every read is too old now
    res = st.svc.handle("return", {"txn": "RMA-3", "epcs": [E(2)]})
    assert res.items[0].result == "accepted" and res.items[0].tag_check == "unread"


def test_a_cloned_tag_is_refused_when_a_loan_comes_back(st: Site) -> None:
    """A piece lent for a press shoot comes back: a copy carrying its EPC is refused like at
    a return, and the genuine one, read later, is taken back."""
    epcs = [E(1), E(2)]
    st.svc.handle("shipment", {"asn_id": "ASN-1", "origin": "ws", "destination": "st",
                               "shipped_at": "2024-05-29T10:00:00Z", "epcs": epcs,
                               "tids": {E(1): tid(1), E(2): tid(2)}})
    assert st.svc.handle("transfer_in", {"txn": "ASN-1", "epcs": epcs}).rejected == 0
    assert st.svc.handle("loan_out", {"txn": "L-1", "epcs": epcs,
                                      "due": "2099-06-30T18:00:00Z"}).rejected == 0
    st.read(E(1), tid(1))
    st.read(E(2), tid(0xC2))  # a copy came back instead
    res = st.svc.handle("loan_back", {"txn": "L-1", "epcs": epcs})
    by = {i.epc: i for i in res.items}
    assert by[E(1)].result == "accepted" and by[E(1)].tag_check == "match"
    assert by[E(2)].result == "rejected" and by[E(2)].reason_code == "cloned_tag"
    assert st.svc.item_state(E(2))["status"] == "on_loan"  # still out: the copy is not it
    alert = [a for a in st.outbox("alert") if a["type"] == "cloned_tag"]
    assert [(a["epc"], a["refused"]) for a in alert] == [(E(2), True)]
    assert st.metric("rfidd_tag_checks_total", point="loan", verdict="mismatch") == 1
    assert st.metric("rfidd_tag_checks_total", point="loan", verdict="match") == 1
    assert st.metric("rfidd_lifecycle_rejections_total", step="loan_back",
                     reason="cloned_tag") == 1
    st.tids = TidMemory()
    st.svc.authenticity.tids = st.tids
    st.read(E(2), tid(2))  # the genuine piece, brought back later
    res = st.svc.handle("loan_back", {"txn": "L-1b", "epcs": [E(2)]})
    assert res.items[0].result == "accepted" and res.items[0].tag_check == "match"


def test_a_cloned_tag_is_refused_at_a_repair_intake(st: Site) -> None:
    sold_at_store(st, {E(1): tid(1)}, [])
    st.read(E(1), tid(0xC1))
    res = st.svc.handle("repair_in", {"txn": "REP-1", "epcs": [E(1)]})
    assert res.items[0].result == "rejected" and res.items[0].reason_code == "cloned_tag"
    assert st.metric("rfidd_tag_checks_total", point="repair", verdict="mismatch") == 1
    st.tids = TidMemory()
    st.svc.authenticity.tids = st.tids
    st.read(E(1), tid(1))
    assert st.svc.handle("repair_in", {"txn": "REP-2", "epcs": [E(1)]}).rejected == 0


def test_an_asn_with_a_malformed_tid_is_refused_naming_it() -> None:
    res = parse_asn_object({"asn_id": "A", "origin": "ws", "destination": "st",
                            "shipped_at": "2024-05-29T10:00:00Z", "epcs": [E(1)],
                            "tids": {E(1): "xyz", E(2): tid(2)}})
    assert not res.ok
    fields = {e.field: e.message for e in res.errors}
    assert "TID must be" in fields[f"tids.{E(1)}"]
    assert fields[f"tids.{E(2)}"] == "EPC not listed in epcs"
