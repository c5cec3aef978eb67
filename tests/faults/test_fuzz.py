"""Hypothesis fuzzing of every input the daemon parses: no crash, no hang, rejections counted.

LLRP frames (the driver's framing and sllurp's decoder), serial frames and lines, ASN and
catalog files, HQ command payloads (through the daemon's dispatcher), HTTP bodies (through the
API router) and the config file. "No crash" means the documented rejection only: ValueError
(and its kinds) for parsers and commands, a 4xx answer for HTTP, ConfigError for the config.
"""

from __future__ import annotations

import contextlib
import json
import struct
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inventory.asn import parse_asn_csv, parse_asn_json, parse_asn_object
from inventory.catalog import parse_catalog_csv, parse_catalog_json
from readers.serial_protocols import FrameDecoder, LineParser, RecordError, parse_reply
from rfidd.app import Daemon
from rfidd.config import Config, ConfigError, parse_config
from rfidd.credentials import auth_headers

pytestmark = pytest.mark.faults

FUZZ = settings(max_examples=60, deadline=2000, suppress_health_check=[
    HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda kids: st.lists(kids, max_size=5) | st.dictionaries(st.text(max_size=12), kids,
                                                             max_size=6),
    max_leaves=25)
LLRP_HEADER = struct.Struct("!HII")


# -- readers ------------------------------------------------------------------------------------
@FUZZ
@given(body=st.binary(max_size=400), msg_type=st.integers(0, 1023),
       msg_id=st.integers(0, 2**32 - 1))
def test_llrp_frames_decode_or_are_rejected(body: bytes, msg_type: int, msg_id: int) -> None:
    """Well-framed but arbitrary LLRP messages: sllurp decodes or raises an Exception that the
    driver counts as `undecodable_message` (readers/llrp.py); nothing escapes as BaseException."""
    from sllurp.llrp import LLRPMessage

    frame = LLRP_HEADER.pack((1 << 10) | msg_type, LLRP_HEADER.size + len(body), msg_id) + body
    with contextlib.suppress(Exception):
        LLRPMessage(msgbytes=frame)


@FUZZ
@given(chunks=st.lists(st.binary(max_size=80), max_size=20))
def test_serial_frames_and_replies(chunks: list[bytes]) -> None:
    anomalies: list[str] = []
    dec = FrameDecoder(on_anomaly=lambda kind, _d: anomalies.append(kind))
    frames = [f for c in chunks for f in dec.feed(c)] + dec.drain()
    for f in frames:
        with contextlib.suppress(RecordError):
            parse_reply(f)
    total = sum(len(c) for c in chunks)
    assert dec.pending <= total
    if total and not frames:
        assert dec.pending + dec.unreported <= total


@FUZZ
@given(data=st.binary(max_size=600))
def test_serial_ascii_lines(data: bytes) -> None:
    anomalies: list[str] = []
    parser = LineParser(r"(?P<epc>[0-9A-Fa-f]+)(,(?P<rssi>-?\d+))?",
                        on_anomaly=lambda kind, _d: anomalies.append(kind))
    records = parser.feed(data)
    assert parser.lines >= len(records)
    assert parser.bad_lines == parser.lines - len(records)


# -- files HQ and staff send ----------------------------------------------------------------
@FUZZ
@given(text=st.text(max_size=600))
def test_asn_and_catalog_csv(text: str) -> None:
    for res in (parse_asn_csv(text), parse_catalog_csv(text)):
        assert res is not None


@FUZZ
@given(value=json_values)
def test_asn_and_catalog_json(value: Any) -> None:
    text = json.dumps(value)
    for res in (parse_asn_json(text), parse_catalog_json(text), parse_asn_object(value)):
        assert res is not None


@FUZZ
@given(data=st.binary(max_size=300))
def test_asn_and_catalog_json_bytes(data: bytes) -> None:
    for parse in (parse_asn_json, parse_catalog_json):
        with contextlib.suppress(ValueError):
            parse(data)


# -- the daemon's command dispatcher and HTTP router -------------------------------------------
@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, str]]:
    """A whole daemon (no readers, no broker) with its web server on a free loopback port."""
    url = f"sqlite:///{tmp_path_factory.mktemp('fuzz') / 'site.db'}"
    cfg = Config.model_validate({
        "site": {"id": "fuzz", "name": "Fuzz", "sgln": "urn:epc:id:sgln:3760001.00001.0"},
        "database": {"url": url}, "mqtt": {"enabled": False}, "http": {"port": 0},
        "zones": {"stockroom": {"kind": "stock"}, "floor": {"kind": "floor"},
                  "exit": {"kind": "exit"}},
    })
    daemon = Daemon(cfg)
    daemon.start()
    try:
        assert daemon.api is not None
        yield daemon, f"http://127.0.0.1:{daemon.api.port}"
    finally:
        daemon.stop()


@FUZZ
@given(name=st.sampled_from(["asn", "catalog", "sale", "return", "shipment", "transfer",
                             "nope", "replay"]) | st.text(max_size=12),
       payload=json_values | st.binary(max_size=100))
def test_hq_commands_are_handled_or_rejected_with_a_reason(
        services: tuple[Daemon, str], name: str, payload: Any) -> None:
    daemon, _ = services
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    try:
        daemon._on_command(name, raw)
    except ValueError as exc:  # the HQ link answers it on .../errors and counts it
        assert str(exc)


@FUZZ
@given(path=st.sampled_from([
    "/api/v1/ops/asns", "/api/v1/ops/catalog", "/api/v1/ops/counts", "/api/v1/ops/receptions",
    "/api/v1/ops/shrinkage", "/api/v1/lifecycle/sell", "/api/v1/lifecycle/return",
    "/api/v1/ops/counts/x/stop"]), body=json_values | st.binary(max_size=200))
def test_http_bodies_get_an_answer_never_a_500(services: tuple[Daemon, str], path: str,
                                               body: Any) -> None:
    _, url = services
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url + path, data=raw, method="POST", headers={
        "Content-Type": "application/json", **auth_headers()})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            status, answer = r.status, r.read()
    except urllib.error.HTTPError as exc:
        status, answer = exc.code, exc.read()
    assert status < 500, (path, raw[:100], answer[:300])
    if status >= 400:
        assert json.loads(answer).get("error")


# -- the config file ---------------------------------------------------------------------------
VALID = (Path(__file__).resolve().parents[2] / "config" / "rfidd.example.toml").read_text()


@FUZZ
@given(cut=st.integers(0, len(VALID)), junk=st.text(max_size=30))
def test_config_text_is_valid_or_every_error_is_named(cut: int, junk: str) -> None:
    text = VALID[:cut] + junk + VALID[cut:]
    try:
        parse_config(text, "fuzz.toml")
    except ConfigError as exc:
        assert exc.errors and all(str(e) for e in exc.errors)
