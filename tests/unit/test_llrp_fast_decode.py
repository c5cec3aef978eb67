"""The struct decoder of RO_ACCESS_REPORTs (readers.llrp_wire.decode_report) against sllurp's.

Frames come from the simulator's encoder, with what field readers add: vendor parameters (ones
sllurp decodes and ones it does not), a failed TID read, EPCData of any length, uptime and
LastSeen timestamps, unknown or truncated parameters. Whatever the driver makes of a frame
through the fast path (falling back to sllurp where it declines) must equal what it makes of it
through sllurp alone: the same reads, the same anomalies, in the same order.
"""

from __future__ import annotations

import struct
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from sllurp.llrp import LLRPMessage

from readers import llrp_wire as wire
from readers.base import TagRead
from readers.llrp import LlrpReader
from readers.llrp_profiles import IMPINJ_PEN
from simulator.llrp import codec as c
from simulator.llrp.testing import RecordingSink

NOW = 1_790_000_000.0
_US = int(NOW * 1e6)

_timestamps = st.one_of(st.integers(_US - 20_000_000, _US + 1_000_000),  # within the skew
                        st.integers(0, 2**64 - 1))  # anything, a clock far off included
_observations = st.builds(
    c.TagObservation,
    epc=st.one_of(st.binary(min_size=12, max_size=12), st.binary(min_size=1, max_size=32)),
    antenna=st.integers(0, 0xFFFF),
    peak_rssi=st.integers(-128, 127),
    first_seen_us=_timestamps,
    last_seen_us=_timestamps,
    seen_count=st.integers(0, 0xFFFF),
    read_data=st.one_of(st.none(), st.binary(max_size=24).map(lambda b: b[: len(b) // 2 * 2])),
    op_spec_id=st.integers(0, 0xFFFF),
)
_selectors = st.builds(c.ContentSelector, *(st.booleans() for _ in range(9)))


def _read_result(result: int, words: int, data: bytes) -> bytes:
    """A C1G2ReadOpSpecResult as a reader may send it (the word count need not match)."""
    return c.tlv(c.ParamType.C1G2_READ_OP_SPEC_RESULT, struct.pack("!BHH", result, 1, words), data)


_extras = st.sampled_from([
    b"",
    c.custom_parameter(4242, 7, b"\x01\x02\x03"),  # unknown to sllurp: skipped by length
    c.custom_parameter(IMPINJ_PEN, 56, struct.pack("!h", -5500)),  # ImpinjPeakRSSI: sllurp's
    _read_result(3, 1, b"\xab\xcd"),  # a failed TID read
    _read_result(0, 1, b"\xe2\x80\x11\x05"),  # more data than its word count
    _read_result(0, 9, b"\xe2\x80"),  # less
    bytes((0x80 | 3,)) + struct.pack("!Q", 123),  # FirstSeenTimestampUptime
    bytes((0x80 | 5,)) + struct.pack("!Q", 456),  # LastSeenTimestampUptime
    bytes((0x80 | 12,)) + struct.pack("!H", 0x3000),  # C1G2PC
    bytes((0x80 | 16,)) + struct.pack("!I", 9),  # AccessSpecID
    bytes((0x80 | 99,)) + b"\x00\x00",  # an unknown TV type
    c.tlv(350, struct.pack("!BH", 0, 1) + b"\x00\x01"),  # C1G2WriteOpSpecResult
    c.tlv(c.ParamType.EPC_DATA, b"\x00"),  # EPCData without its bit count
])


def _trd(obs: c.TagObservation, sel: c.ContentSelector, extra: bytes) -> bytes:
    trd = c.tag_report_data(obs, sel, rospec_id=1)
    return c.tlv(c.ParamType.TAG_REPORT_DATA, trd[4:], extra)


@st.composite
def reports(draw: st.DrawFn) -> bytes:
    sel = draw(_selectors)
    tags = draw(st.lists(st.tuples(_observations, _extras), max_size=6))
    top = draw(st.sampled_from([b"", c.custom_parameter(4242, 1, b"x"),
                                c.custom_parameter(IMPINJ_PEN, 21, b""),
                                c.tlv(c.ParamType.LLRP_STATUS, b"\x00\x00\x00\x00")]))
    body = b"".join(_trd(o, sel, e) for o, e in tags) + top
    frame = c.message(c.MessageType.RO_ACCESS_REPORT, 5, body)
    cut = draw(st.one_of(st.none(), st.integers(c.HEADER_LEN, max(c.HEADER_LEN, len(frame)))))
    if cut is not None:  # a truncated body (the header's length stays consistent)
        frame = c.message(c.MessageType.RO_ACCESS_REPORT, 5, frame[c.HEADER_LEN:cut])
    return frame


class RowSink(RecordingSink):
    """Like the reader host's sink: takes rows (readers.host), kept here as TagReads."""

    def on_rows(self, reader: str, rows: list[Any]) -> None:
        self.on_reads(reader, [TagRead(e, reader, a, r, t, n, tid) for e, a, r, t, n, tid in rows])


def _driver(rows: bool = False, **opts: Any) -> tuple[LlrpReader, RecordingSink]:
    sink = RowSink() if rows else RecordingSink()
    return LlrpReader("dock", "127.0.0.1", opts, [1], sink, wall_clock=lambda: NOW), sink


def _through_sllurp(frame: bytes, **opts: Any) -> tuple[list[Any], list[Any]] | None:
    driver, sink = _driver(**opts)
    try:
        msg = LLRPMessage(msgbytes=frame)
    except Exception:
        return None  # the driver counts it as undecodable (or strips vendor parameters)
    driver.convert_and_deliver(msg.msgdict["RO_ACCESS_REPORT"]["TagReportData"])
    return sink.reads, sink.anomalies


def _through_fast(frame: bytes, rows: bool = False,
                  **opts: Any) -> tuple[list[Any], list[Any]] | None:
    try:
        tags = wire.decode_report(frame)
    except wire.NotFast:
        return _through_sllurp(frame, **opts)
    driver, sink = _driver(rows, **opts)
    driver.deliver_raw(tags)
    return sink.reads, sink.anomalies


@settings(max_examples=400, deadline=None)
@given(reports())
def test_fast_decoder_gives_what_sllurp_gives(frame: bytes) -> None:
    assert _through_fast(frame) == _through_sllurp(frame)


@settings(max_examples=100, deadline=None)
@given(reports())
def test_same_as_rows_for_the_reader_host(frame: bytes) -> None:
    assert _through_fast(frame, rows=True) == _through_sllurp(frame)


@settings(max_examples=100, deadline=None)
@given(reports())
def test_same_with_an_epc_filter(frame: bytes) -> None:
    assert _through_fast(frame, epc_filter=["30", "E2"]) == \
        _through_sllurp(frame, epc_filter=["30", "E2"])


@settings(max_examples=200, deadline=None)
@given(st.lists(_observations, min_size=1, max_size=8), _selectors)
def test_standard_reports_take_the_fast_path(tags: list[c.TagObservation],
                                             sel: c.ContentSelector) -> None:
    """What a reader sends by default never needs sllurp (else the fast path is never used)."""
    got = wire.decode_report(c.ro_access_report(1, tags, sel, rospec_id=1))
    assert [t[0] for t in got] == [o.epc.hex().upper() for o in tags]
    assert [t[1] for t in got] == [o.antenna if sel.antenna_id else None for o in tags]


def test_what_the_fast_decoder_declines_names_where() -> None:
    obs = c.TagObservation(epc=bytes(12), antenna=1, peak_rssi=-50, first_seen_us=_US,
                           last_seen_us=_US)
    frame = c.message(c.MessageType.RO_ACCESS_REPORT, 1,
                      _trd(obs, c.ContentSelector(), c.custom_parameter(IMPINJ_PEN, 56, b"\0\0")))
    try:
        wire.decode_report(frame)
    except wire.NotFast as exc:
        assert "vendor parameter sllurp decodes at byte" in str(exc)
    else:
        raise AssertionError("an ImpinjPeakRSSI report must go to sllurp")


@settings(max_examples=200, deadline=None)
@given(st.lists(_observations, max_size=8), _selectors)
def test_antenna_counts_of_a_shed_report(tags: list[c.TagObservation],
                                         sel: c.ContentSelector) -> None:
    """A report shed undecoded counts, per antenna, what decoding it would have delivered."""
    frame = c.ro_access_report(1, tags, sel, rospec_id=1)
    want: dict[int, int] = {}
    for _epc, antenna, *_ in wire.decode_report(frame):
        key = 7 if antenna is None else antenna
        want[key] = want.get(key, 0) + 1
    assert wire.antenna_counts(frame, 7) == want
