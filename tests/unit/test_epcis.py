"""EPCIS 2.0 JSON: events and documents, validated against GS1's EPCIS 2.0 JSON Schema."""

from __future__ import annotations

import functools
import json
import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jsonschema  # type: ignore[import-untyped]
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inventory.epc import sgtin96_hex
from inventory.epcis import (
    EPCIS_CONTEXT,
    EpcisError,
    EpcisSerializer,
    biz_transaction_uri,
    epc_uri,
    epcis_document,
    event_to_json,
    gln_of_sgln,
    to_epcis,
)
from inventory.events import Action, ItemEvent, stable_event_id
from inventory.lifecycle import ItemState, Lifecycle, Step, Transition
from inventory.presence import ChangeKind, PresenceChange
from inventory.rules import SiteRules

DATA = Path(__file__).parent.parent / "data"
SITE_SGLN = "urn:epc:id:sgln:0614141.00777.0"
EPC = "3034257BF7194E4000003039"
EPC_URI = "urn:epc:id:sgtin:0614141.812345.12345"
T_WINTER = datetime(2024, 1, 15, 9, 30, 0, 123000, tzinfo=UTC).timestamp()
T_SUMMER = datetime(2024, 7, 15, 9, 30, 0, tzinfo=UTC).timestamp()
EVENT_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


@functools.cache
def validator() -> jsonschema.Draft7Validator:
    """The schema is large: compile it once per test session.

    With format checking: the schema accepts any *URI* as a bizStep, disposition or bizTransaction
    type besides the CBV short names, so without a `uri` format check a typo like "shelving"
    would pass. jsonschema checks `uri` with rfc3986-validator, `date-time` with
    rfc3339-validator (the `format-nongpl` extra).
    """
    checker = jsonschema.Draft7Validator.FORMAT_CHECKER
    assert {"uri", "date-time"} <= checker.checkers.keys(), (
        "install rfc3986-validator and rfc3339-validator: without them jsonschema skips "
        "the uri and date-time formats the EPCIS schema relies on"
    )
    schema = json.loads((DATA / "EPCIS-JSON-Schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema, format_checker=checker)


def errors(doc: dict[str, Any]) -> list[str]:
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator().iter_errors(doc)]


def event(**kw: Any) -> ItemEvent:
    base: dict[str, Any] = {
        "event_id": stable_event_id("s", EPC, kw.get("event_time", T_WINTER)),
        "event_time": T_WINTER,
        "action": Action.OBSERVE,
        "epcs": (EPC,),
        "biz_step": "stocking",
        "disposition": "sellable_accessible",
        "read_point": "urn:epc:id:sgln:0614141.00777.floor",
        "biz_location": SITE_SGLN,
    }
    base.update(kw)
    return ItemEvent(**base)


# -- the schema and the validator can fail ------------------------------------------------------


def test_gs1_example_event_validates() -> None:
    assert errors(json.loads((DATA / "example-ObjectEvent.json").read_text())) == []


def test_validator_rejects_what_the_schema_forbids() -> None:
    ser = EpcisSerializer("Europe/Paris")
    good = ser.event(event(biz_transactions=(("desadv", "urn:epcglobal:cbv:bt:0614141007776:D"),)))
    doc = epcis_document([good], datetime.now(UTC))
    assert errors(doc) == []
    no_offset = {k: v for k, v in good.items() if k != "eventTimeZoneOffset"}
    assert errors(epcis_document([no_offset], datetime.now(UTC)))
    cbv_uri_type = dict(good)
    cbv_uri_type["bizTransactionList"] = [
        {"type": "urn:epcglobal:cbv:btt:desadv", "bizTransaction": "urn:x:1"}
    ]
    assert errors(epcis_document([cbv_uri_type], datetime.now(UTC)))
    bad_step = dict(good, bizStep="shelving")
    assert errors(epcis_document([bad_step], datetime.now(UTC)))
    bad_time = dict(good, eventTime="2024-01-15 09:30")
    assert errors(epcis_document([bad_time], datetime.now(UTC)))
    no_epcs = {k: v for k, v in good.items() if k != "epcList"}
    assert errors(epcis_document([no_epcs], datetime.now(UTC)))


# -- events -----------------------------------------------------------------------------------


def test_object_event_fields() -> None:
    ev = event(
        biz_transactions=(("inv", "urn:epcglobal:cbv:bt:0614141007776:R-1"),),
        extensions={"loanDue": "2024-02-01T00:00:00Z", "ex:custom": 1},
    )
    d = EpcisSerializer("Europe/Paris").event(ev)
    assert d == {
        "type": "ObjectEvent",
        "eventTime": "2024-01-15T09:30:00.123Z",
        "eventTimeZoneOffset": "+01:00",
        "eventID": ev.event_id,
        "epcList": [EPC_URI],
        "action": "OBSERVE",
        "bizStep": "stocking",
        "disposition": "sellable_accessible",
        "readPoint": {"id": "urn:epc:id:sgln:0614141.00777.floor"},
        "bizLocation": {"id": SITE_SGLN},
        "bizTransactionList": [
            {"type": "inv", "bizTransaction": "urn:epcglobal:cbv:bt:0614141007776:R-1"}
        ],
        "rfidd:loanDue": "2024-02-01T00:00:00Z",
        "ex:custom": 1,
    }
    assert type(d["action"]) is str


def test_optional_fields_are_omitted() -> None:
    d = to_epcis(event(biz_step=None, disposition=None, read_point=None, biz_location=None))
    assert set(d) == {"type", "eventTime", "eventTimeZoneOffset", "eventID", "epcList", "action"}
    assert d["eventTimeZoneOffset"] == "+00:00"


def test_aggregation_event_when_parent_is_set() -> None:
    sscc_hex = "3154257BF4499602D2000000"
    d = to_epcis(event(parent_id=sscc_hex, action=Action.ADD, kind="AggregationEvent"))
    assert d["type"] == "AggregationEvent"
    assert d["parentID"] == "urn:epc:id:sscc:0614141.1234567890"
    assert d["childEPCs"] == [EPC_URI]
    assert "epcList" not in d
    assert errors(epcis_document([d], datetime.now(UTC))) == []


def test_epcs_become_uris() -> None:
    assert epc_uri(EPC) == EPC_URI
    assert epc_uri(EPC_URI) == EPC_URI
    assert epc_uri("E2801160600002000000") == "urn:epc:raw:80.xE2801160600002000000"
    with pytest.raises(EpcisError, match="cannot be written as a URI"):
        epc_uri("XYZ")


def test_bad_event_errors_name_the_event() -> None:
    ev = event(epcs=("not hex!",))
    with pytest.raises(EpcisError, match=re.escape(ev.event_id)):
        to_epcis(ev)
    with pytest.raises(EpcisError, match="same EPC twice"):
        to_epcis(event(epcs=(EPC, EPC_URI)))
    with pytest.raises(EpcisError, match="without a parent"):
        to_epcis(event(kind="AggregationEvent"))
    with pytest.raises(EpcisError, match="child EPC"):
        to_epcis(event(epcs=(), parent_id="urn:epc:id:sscc:0614141.1234567890"))


def test_event_time_is_utc_with_milliseconds() -> None:
    ser = EpcisSerializer("Asia/Tokyo")
    assert ser.time_text(0.0) == "1970-01-01T00:00:00.000Z"
    assert ser.time_text(T_WINTER) == "2024-01-15T09:30:00.123Z"
    assert ser.time_text(59.9996) == "1970-01-01T00:01:00.000Z"  # rounding carries
    assert ser.time_text(59.0004) == "1970-01-01T00:00:59.000Z"
    assert ser.time_text(59.0006) == "1970-01-01T00:00:59.001Z"


@pytest.mark.parametrize(
    ("tz", "instant", "offset"),
    [
        ("UTC", T_WINTER, "+00:00"),
        ("Europe/Paris", T_WINTER, "+01:00"),
        ("Europe/Paris", T_SUMMER, "+02:00"),
        ("America/New_York", T_WINTER, "-05:00"),
        ("America/New_York", T_SUMMER, "-04:00"),
        ("Asia/Kolkata", T_WINTER, "+05:30"),
        ("Asia/Kathmandu", T_WINTER, "+05:45"),
        ("Australia/Lord_Howe", T_WINTER, "+11:00"),  # half-hour DST
        ("Australia/Lord_Howe", T_SUMMER, "+10:30"),
        ("Pacific/Kiritimati", T_WINTER, "+14:00"),
        # Paris spring-forward, 2024-03-31 01:00:00Z: the last millisecond before and the instant
        ("Europe/Paris", datetime(2024, 3, 31, 0, 59, 59, 999000, UTC).timestamp(), "+01:00"),
        ("Europe/Paris", datetime(2024, 3, 31, 1, 0, 0, tzinfo=UTC).timestamp(), "+02:00"),
    ],
)
def test_time_zone_offset_at_the_instant(tz: str, instant: float, offset: str) -> None:
    ser = EpcisSerializer(tz)
    assert ser.offset(instant) == offset
    assert ser.offset(instant) == offset  # cached answer is the same


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["Europe/Paris", "America/New_York", "Australia/Lord_Howe", "Asia/Tehran"]),
    st.lists(st.integers(946_684_800_000, 2_145_916_800_000), min_size=1, max_size=20),
)
def test_cached_offsets_match_zoneinfo(tz: str, millis: list[int]) -> None:
    ser = EpcisSerializer(tz)
    zone = ZoneInfo(tz)
    for ms in millis + [m + 1 for m in millis] + millis:
        t = ms / 1000
        off = datetime.fromtimestamp(t, zone).utcoffset()
        assert off is not None
        minutes = int(off.total_seconds() // 60)
        sign = "+" if minutes >= 0 else "-"
        expected = f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
        assert ser.offset(t) == expected
        assert EVENT_TIME.match(ser.time_text(t))


def test_biz_transaction_uris() -> None:
    assert gln_of_sgln(SITE_SGLN) == "0614141007776"
    assert biz_transaction_uri("R-17", SITE_SGLN) == "urn:epcglobal:cbv:bt:0614141007776:R-17"
    assert biz_transaction_uri("A B/1", SITE_SGLN) == "urn:epcglobal:cbv:bt:0614141007776:A%20B%2F1"
    assert biz_transaction_uri("https://erp.example/po/1", SITE_SGLN) == "https://erp.example/po/1"
    with pytest.raises(ValueError, match="SGLN"):
        gln_of_sgln("urn:epc:id:sgtin:0614141.812345.1")


# -- documents --------------------------------------------------------------------------------


def test_document_envelope() -> None:
    created = datetime(2024, 1, 15, 10, 0, 0, 456789, tzinfo=timezone(timedelta(hours=1)))
    doc = epcis_document([], created, sender="store-paris")
    assert doc == {
        "@context": [EPCIS_CONTEXT, {"rfidd": "urn:rfidd:epcis:"}],
        "type": "EPCISDocument",
        "schemaVersion": "2.0",
        "creationDate": "2024-01-15T09:00:00.456Z",
        "sender": "store-paris",
        "epcisBody": {"eventList": []},
    }
    assert errors(doc) == []
    assert "sender" not in epcis_document([], created)
    with pytest.raises(ValueError, match="timezone-aware"):
        epcis_document([], datetime(2024, 1, 1))


def lifecycle_events() -> list[ItemEvent]:
    """Every kind of lifecycle event, from a full journey and its side roads."""
    lc = Lifecycle()
    ws = ("workshop", "urn:epc:id:sgln:0614141.00001.0")
    st = ("store", SITE_SGLN)
    out: list[ItemEvent] = []
    t = T_WINTER

    def go(state: ItemState | None, step: Step, site: tuple[str, str], **kw: Any) -> ItemState:
        nonlocal t
        t += 3600
        o = lc.apply(state, Transition(step, EPC, t, site[0], site[1], **kw))
        assert o.accepted, o.reason
        out.extend(o.events)
        assert o.state is not None
        return o.state

    s = go(None, Step.COMMISSION, ws)
    s = go(s, Step.PACK, ws, parent_id="urn:epc:id:sscc:0614141.1234567890")
    s = go(s, Step.SHIP, ws, to_site="store", txn="D-1")
    s = go(s, Step.RECEIVE, st, txn="D-1")
    s = go(s, Step.COUNT, st, txn="C-1")
    s = go(s, Step.STOCK, st, read_point="urn:epc:id:sgln:0614141.00777.floor", zone="floor")
    s = go(s, Step.STORE, st)
    s = go(s, Step.LOAN_OUT, st, due=t + 10 * 86400)
    s = go(s, Step.LOAN_BACK, st)
    s = go(s, Step.REPAIR_IN, st)
    s = go(s, Step.REPAIR_OUT, st)
    s = go(s, Step.TRANSFER_OUT, st, to_site="other", txn="T-1")
    s = go(ItemState.shipped_to(EPC, "store", t, "T-2"), Step.TRANSFER_IN, st, txn="T-2")
    s = go(s, Step.SELL, st, txn="R-1")
    s = go(s, Step.RETURN, st, txn="RMA-1")
    s = go(s, Step.STORE, st)
    s = go(s, Step.EXIT_UNSOLD, st)
    s = go(s, Step.COUNT, st)
    s = go(s, Step.DESTROY, st)
    s = go(s, Step.DECOMMISSION, st)
    return out


def rules_events() -> list[ItemEvent]:
    rules = SiteRules(
        SITE_SGLN,
        {z: f"urn:epc:id:sgln:0614141.00777.{z}" for z in ("stock", "floor", "fitting")},
        {"stock": "stock", "floor": "floor", "fitting": "fitting"},
        "store",
    )
    changes = [
        PresenceChange(ChangeKind.ARRIVED, EPC, "stock", None, T_WINTER),
        PresenceChange(ChangeKind.MOVED, EPC, "floor", "stock", T_WINTER + 60),
        PresenceChange(ChangeKind.MOVED, EPC, "fitting", "floor", T_WINTER + 120),
        PresenceChange(ChangeKind.MOVED, EPC, "stock", "fitting", T_WINTER + 180),
        PresenceChange(ChangeKind.DEPARTED, EPC, None, "stock", T_WINTER + 240),
    ]
    return rules.events_for(changes)


def test_every_event_we_produce_validates_in_a_document() -> None:
    events = lifecycle_events() + rules_events()
    assert {e.biz_step for e in events} >= {
        "commissioning",
        "packing",
        "shipping",
        "receiving",
        "cycle_counting",
        "stocking",
        "storing",
        "retail_selling",
        "repairing",
        "entering_exiting",
        "destroying",
        "decommissioning",
        None,
    }
    ser = EpcisSerializer("Europe/Paris")
    doc = ser.document(events, sender="store")
    assert errors(doc) == []
    kinds = {e["type"] for e in doc["epcisBody"]["eventList"]}
    assert kinds == {"ObjectEvent", "AggregationEvent"}
    for e in doc["epcisBody"]["eventList"]:
        assert EVENT_TIME.match(e["eventTime"])
        assert e["eventID"].startswith("urn:uuid:")


def test_two_hundred_events_are_one_dumps_away() -> None:
    ser = EpcisSerializer("Europe/Paris")
    events = [
        event(
            event_id=stable_event_id("s", i),
            event_time=T_SUMMER + i * 0.37,
            epcs=(sgtin96_hex("80614141123458", i, 7),),
            biz_transactions=(("desadv", biz_transaction_uri(f"D-{i}", SITE_SGLN)),),
        )
        for i in range(200)
    ]
    doc = epcis_document(ser.events(events), datetime.now(UTC), "store")
    text = json.dumps(doc)
    back = json.loads(text)
    assert back == doc
    assert len(back["epcisBody"]["eventList"]) == 200
    assert len({e["eventID"] for e in back["epcisBody"]["eventList"]}) == 200
    assert errors(back) == []


def test_event_to_json_is_to_epcis() -> None:
    assert event_to_json(event(), "Europe/Paris") == to_epcis(event(), "Europe/Paris")
