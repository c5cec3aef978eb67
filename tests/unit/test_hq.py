"""HQ consumer, pure parts: config, EPCIS document parsing, EPC input, topic routing."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from rfidd.hq.config import ConfigError, HqConfig, load_hq_config, parse_hq_config
from rfidd.hq.consumer import HqConsumer
from rfidd.hq.documents import DocumentError, parse_document, parse_time
from rfidd.hq.query import EpcInputError, normalize_epc

ROOT = Path(__file__).resolve().parents[2]
EPC1 = "urn:epc:id:sgtin:0614141.107346.2017"
EPC2 = "urn:epc:id:sgtin:0614141.107346.2018"


def ev(event_id: str = "ni:///sha-256;aa?ver=CBV2.0", **kw: Any) -> dict[str, Any]:
    e: dict[str, Any] = {
        "type": "ObjectEvent",
        "eventID": event_id,
        "eventTime": "2024-03-01T10:00:00.000+01:00",
        "eventTimeZoneOffset": "+01:00",
        "action": "OBSERVE",
        "epcList": [EPC1, EPC2],
        "bizStep": "receiving",
        "disposition": "sellable_not_accessible",
        "readPoint": {"id": "urn:epc:id:sgln:0614141.00777.recv"},
        "bizLocation": {"id": "urn:epc:id:sgln:0614141.00777.0"},
        "bizTransactionList": [{"type": "desadv", "bizTransaction": "urn:x:asn:1"}],
    }
    e.update(kw)
    return {k: v for k, v in e.items() if v is not None}


def doc(*events: dict[str, Any]) -> bytes:
    return json.dumps({
        "@context": ["https://ref.gs1.org/standards/epcis/epcis-context.jsonld"],
        "type": "EPCISDocument", "schemaVersion": "2.0",
        "creationDate": "2024-03-01T09:00:00Z", "epcisBody": {"eventList": list(events)},
    }).encode()


# -- config -------------------------------------------------------------------------------------


def test_example_config_is_valid() -> None:
    cfg = load_hq_config(ROOT / "config" / "hq.example.toml")
    assert cfg.database.url.startswith("postgresql")
    assert cfg.mqtt.protocol == "5" and cfg.mqtt.share_group == "rfidd-hq"
    assert str(cfg.mqtt.tls.ca_file) == "/etc/rfidd/hq-ca.pem"


def test_defaults_and_every_field_described() -> None:
    cfg = parse_hq_config("")
    assert cfg.mqtt.topic_prefix == "rfidd/v1" and cfg.epcis.port == 9761
    assert cfg.mqtt.client_id.startswith("rfidd-hq-")

    def check(model: Any, path: str) -> None:
        for name, f in model.model_fields.items():
            assert f.description, f"{path}.{name} has no description"
            ann = f.annotation
            if isinstance(ann, type) and hasattr(ann, "model_fields"):
                check(ann, f"{path}.{name}")

    check(HqConfig, "hq")


def test_config_errors_are_all_reported_with_lines() -> None:
    text = (
        "[database]\nurl = \"mysql://x\"\n"
        "[mqtt]\nurl = \"http://broker\"\nprotocl = \"5\"\nshare_group = \"a/b\"\n"
        "topic_prefix = \"rfidd/+/v1\"\n"
        "[epcis]\nport = 70000\n"
    )
    with pytest.raises(ConfigError) as info:
        parse_hq_config(text, "hq.toml")
    errs = "\n".join(info.value.errors)
    assert len(info.value.errors) == 6, errs
    assert "hq.toml:2: database.url: " in errs and "sqlite:// and postgresql://" in errs
    assert "hq.toml:4: mqtt.url: " in errs
    assert "hq.toml:5: mqtt.protocl: unknown key (misspelled?)" in errs
    assert "hq.toml:6: mqtt.share_group" in errs
    assert "hq.toml:7: mqtt.topic_prefix" in errs and "# or +" in errs
    assert "hq.toml:9: epcis.port" in errs


def test_the_former_http_section_is_an_error_saying_where_its_keys_went() -> None:
    """HQ has one web port now ([epcis]): an old [http] section must not be silently ignored
    (an operator's port 9760 would stop answering without a word)."""
    with pytest.raises(ConfigError) as info:
        parse_hq_config("[http]\nport = 9760\n", "hq.toml")
    errs = "\n".join(info.value.errors)
    assert "hq.toml:1: http: " in errs or "hq.toml:2: http" in errs, errs
    assert "epcis.port" in errs and "9761" in errs


def test_config_syntax_and_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="TOML syntax"):
        parse_hq_config("[mqtt\n", "x.toml")
    with pytest.raises(ConfigError, match="cannot read"):
        load_hq_config(tmp_path / "missing.toml")


# -- documents ----------------------------------------------------------------------------------


def test_parse_document_fields() -> None:
    parsed = parse_document(doc(ev()), "paris-01")
    assert parsed.errors == []
    (row,) = parsed.events
    assert row.site == "paris-01" and row.type == "ObjectEvent"
    assert row.event_time == datetime(2024, 3, 1, 9, 0, tzinfo=UTC)
    assert row.biz_location == "urn:epc:id:sgln:0614141.00777.0"
    assert row.read_point == "urn:epc:id:sgln:0614141.00777.recv"
    assert row.epcs == (EPC1, EPC2)
    assert row.biz_transactions == [{"type": "desadv", "bizTransaction": "urn:x:asn:1"}]
    assert row.raw["eventTimeZoneOffset"] == "+01:00"


def test_example_object_event_from_the_standard() -> None:
    raw = (ROOT / "tests" / "data" / "example-ObjectEvent.json").read_bytes()
    (row,) = parse_document(raw, "s").events
    assert row.event_time == datetime(2005, 4, 4, 2, 33, 31, 116000, tzinfo=UTC)
    assert row.biz_location is None and len(row.epcs) == 2


def test_aggregation_event_epcs_include_parent() -> None:
    agg = ev(type="AggregationEvent", epcList=None, action="ADD",
             parentID="urn:epc:id:sscc:0614141.1234567890", childEPCs=[EPC1, EPC1, EPC2])
    (row,) = parse_document(doc(agg), "w").events
    assert row.epcs == (EPC1, EPC2, "urn:epc:id:sscc:0614141.1234567890")


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (ev(type="Banana"), "not an EPCIS event type"),
        (ev(eventID=None), "eventID missing"),
        (ev(eventID=""), "eventID missing"),
        (ev(eventTime=None), "eventTime missing"),
        (ev(eventTime="yesterday"), "not an ISO 8601"),
        (ev(eventTime="2024-03-01T10:00:00"), "no time zone offset"),
        (ev(eventTime=12), "expected an ISO 8601 string"),
        (ev(epcList=None), "without an epcList"),
        (ev(epcList=[]), "empty epcList"),
        (ev(epcList=[EPC1, 7]), "epcList[1] is not an EPC URI"),
        (ev(epcList="urn:x"), "epcList is str"),
        (ev(bizLocation={"x": 1}), "bizLocation has no id"),
        (ev(bizStep=3), "bizStep is int"),
        (ev(bizTransactionList={"a": 1}), "bizTransactionList"),
        ("not an object", "expected an object"),
    ],
)
def test_bad_event_is_rejected_with_reason_and_others_kept(bad: Any, reason: str) -> None:
    parsed = parse_document(doc(ev("good-1"), bad, ev("good-2")), "s")
    assert [e.event_id for e in parsed.events] == ["good-1", "good-2"]
    assert len(parsed.errors) == 1
    assert parsed.errors[0].startswith("eventList[1]")
    assert reason in parsed.errors[0]


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "top level is list"),
        (b'{"type": "EPCISQueryDocument"}', "neither EPCISDocument"),
        (b'{"type": "EPCISDocument", "epcisBody": {}}', "without epcisBody.eventList"),
    ],
)
def test_unusable_document(payload: bytes, reason: str) -> None:
    with pytest.raises(DocumentError, match=reason):
        parse_document(payload, "s")


def test_parse_time_forms() -> None:
    assert parse_time("2024-01-01T00:00:00Z") == datetime(2024, 1, 1, tzinfo=UTC)
    assert parse_time("2024-01-01T01:30:00.5+01:30") == datetime(2024, 1, 1, 0, 0, 0, 500000,
                                                                  tzinfo=UTC)


# -- EPC input ----------------------------------------------------------------------------------


def test_normalize_epc() -> None:
    from inventory.epc import sgtin96_hex

    assert normalize_epc(f"  {EPC1} ") == EPC1
    hexepc = sgtin96_hex("10614141073467", 2017, 7)
    assert normalize_epc(hexepc) == "urn:epc:id:sgtin:0614141.107346.2017"
    assert normalize_epc(hexepc.lower()) == "urn:epc:id:sgtin:0614141.107346.2017"
    with pytest.raises(EpcInputError, match="whole number"):
        normalize_epc("30F")
    with pytest.raises(EpcInputError, match="does not decode"):
        normalize_epc("0000000000000000")
    with pytest.raises(EpcInputError, match="neither an EPC URI"):
        normalize_epc("sgtin 0614141")
    with pytest.raises(EpcInputError, match="empty"):
        normalize_epc(" ")


# -- topics -------------------------------------------------------------------------------------


def _consumer(protocol: str = "5") -> HqConsumer:
    cfg = parse_hq_config(
        f'[mqtt]\nprotocol = "{protocol}"\ntopic_prefix = "acme/rfidd/v1"\nshare_group = "g1"\n'
    )
    return HqConsumer(cfg.mqtt, store=None)  # type: ignore[arg-type]  # routing only


def test_subscriptions_shared_under_v5_plain_under_v311() -> None:
    assert _consumer("5").subscriptions() == [
        "$share/g1/acme/rfidd/v1/+/epcis",
        "$share/g1/acme/rfidd/v1/+/alerts",
        "$share/g1/acme/rfidd/v1/+/reports/+",
        "$share/g1/acme/rfidd/v1/+/replay",
        "acme/rfidd/v1/+/status",  # retained messages never reach a shared subscription
        "acme/rfidd/v1/+/seq",
    ]
    assert _consumer("3.1.1").subscriptions() == [
        "acme/rfidd/v1/+/epcis", "acme/rfidd/v1/+/alerts", "acme/rfidd/v1/+/reports/+",
        "acme/rfidd/v1/+/replay", "acme/rfidd/v1/+/status", "acme/rfidd/v1/+/seq",
    ]


def test_route() -> None:
    c = _consumer()
    assert c._route("acme/rfidd/v1/paris-01/epcis") == ("paris-01", "epcis")
    assert c._route("acme/rfidd/v1/paris-01/status") == ("paris-01", "status")
    assert c._route("acme/rfidd/v1/paris-01/alerts") == ("paris-01", "alert")
    assert c._route("acme/rfidd/v1/paris-01/seq") == ("paris-01", "seq")
    assert c._route("acme/rfidd/v1/paris-01/replay") == ("paris-01", "replay")
    assert c._route("acme/rfidd/v1/w1/reports/count") == ("w1", "report/count")
    for bad in ("other/v1/s/epcis", "acme/rfidd/v1/s/epcis/x", "acme/rfidd/v1/$bad/epcis",
                "acme/rfidd/v1/s/reports", "acme/rfidd/v1/s/readers/r1/status"):
        with pytest.raises(ValueError):
            c._route(bad)


def test_hq_daemon_starts_in_order_and_stops_last_first(tmp_path: Path) -> None:
    """The HQ composition root (rfidd/hq/app.py) on SQLite with its interfaces off: the
    consumer does not need a reachable broker to start (paho connects in the background)."""
    from rfidd.hq.app import HqDaemon
    from rfidd.hq.config import HqConfig

    cfg = HqConfig.model_validate({
        "database": {"url": f"sqlite:///{tmp_path / 'hq.db'}"},
        "mqtt": {"url": "mqtt://127.0.0.1:1", "relay_asns": False},
        "epcis": {"enabled": False},
    })
    hq = HqDaemon(cfg)
    hq.start()
    hq.stop()
    assert hq.stopped == ["gap repair", "consumer", "query subscriptions", "store"]


def test_subscription_schedules_fire_at_the_named_seconds_only() -> None:
    """GS1's schedule fields: numbers, [a-b] ranges, comma lists; an omitted finer field is
    its lowest value, an omitted coarser one any value."""
    from datetime import UTC, datetime

    from rfidd.hq.subscriptions import SubscriptionError, parse_schedule, schedule_matches

    s = parse_schedule({"hour": "1", "minute": "5"})
    t = datetime(2026, 12, 2, 1, 5, 0, tzinfo=UTC)
    assert schedule_matches(s, t)
    assert not schedule_matches(s, t.replace(second=1))
    assert not schedule_matches(s, t.replace(hour=2))
    assert schedule_matches(s, t.replace(day=3))  # any day
    every = parse_schedule({"second": "0,[30-31]"})
    assert [x for x in range(60) if schedule_matches(every, t.replace(second=x))] == [0, 30, 31]
    monday = parse_schedule({"dayOfWeek": "1", "hour": "[8-9]"})  # 2026-12-07 is a Monday
    assert schedule_matches(monday, datetime(2026, 12, 7, 8, 0, 0, tzinfo=UTC))
    assert not schedule_matches(monday, datetime(2026, 12, 7, 8, 1, 0, tzinfo=UTC))
    assert not schedule_matches(monday, datetime(2026, 12, 8, 8, 0, 0, tzinfo=UTC))
    for bad, where in (({"hour": "24"}, "schedule/hour"), ({"minute": "[9-3]"},
                       "schedule/minute"), ({"week": "1"}, "schedule/week"), ({}, "schedule"),
                       ({"second": "0/30"}, "schedule/second")):
        with pytest.raises(SubscriptionError) as err:
            parse_schedule(bad)
        assert err.value.field == where
