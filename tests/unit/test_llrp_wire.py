"""The hand-encoded LLRP pieces the driver needs beside sllurp (GET_ROSPECS, vendor params)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sllurp.llrp import LLRPMessage

from readers import llrp_wire as wire
from readers.llrp_profiles import IMPINJ_PEN, device_info
from simulator.llrp import IDENTITIES
from simulator.llrp import codec as c


def test_get_rospecs_request_layout() -> None:
    frame = wire.get_rospecs(7)
    hdr = c.decode_header(frame)
    assert (hdr.version, hdr.msg_type, hdr.length, hdr.msg_id) == (1, 26, 10, 7)


@given(st.lists(st.tuples(st.integers(1, 2**32 - 1), st.integers(0, 7), st.integers(0, 2)),
                max_size=5, unique_by=lambda t: t[0]))
def test_get_rospecs_response_round_trip(specs: list[tuple[int, int, int]]) -> None:
    got = wire.parse_get_rospecs_response(c.get_rospecs_response(3, specs))
    assert got.status_code == 0 and got.states == {i: s for i, _, s in specs}


def test_get_rospecs_response_errors_name_the_problem() -> None:
    with pytest.raises(wire.WireError, match="without LLRPStatus"):
        wire.parse_get_rospecs_response(c.message(36, 1))
    bad = c.message(36, 1, c.llrp_status() + b"\x00\xb1\x00\x40")
    with pytest.raises(wire.WireError, match="parameter 177 at byte"):
        wire.parse_get_rospecs_response(bad)


def test_stripping_vendor_parameters_lets_sllurp_decode_the_rest() -> None:
    vendor = c.custom_parameter(161, 1, b"\x01")  # a Zebra parameter sllurp chokes on
    caps = c.capabilities_response(9, IDENTITIES["zebra"], vendor)
    with pytest.raises(Exception, match="unpack"):
        LLRPMessage(msgbytes=caps)
    stripped, removed = wire.strip_custom_parameters(caps)
    assert removed == 1
    info = device_info(LLRPMessage(msgbytes=stripped).msgdict["GET_READER_CAPABILITIES_RESPONSE"])
    assert (info.vendor, info.model, info.modes) == ("zebra", 7500, (1000, 1002, 1004))

    obs = [c.TagObservation(bytes(range(12)), 2, -50, 10, 10)]
    sel = c.ContentSelector()
    report = c.ro_access_report(4, obs, sel, 1, vendor)  # beside the TagReportData
    fields = c.tag_report_data(obs[0], sel, 1)[4:]  # ...and inside one
    nested = c.message(61, 5, c.tlv(c.ParamType.TAG_REPORT_DATA, fields, vendor))
    for frame, n in ((report, 1), (nested, 1)):
        out, k = wire.strip_custom_parameters(frame)
        assert k == n
        tags = LLRPMessage(msgbytes=out).msgdict["RO_ACCESS_REPORT"]["TagReportData"]
        assert tags[0]["EPC-96"] == bytes(range(12)).hex().encode() and tags[0]["AntennaID"] == 2


def test_device_info_of_an_impinj_reader() -> None:
    caps = LLRPMessage(msgbytes=c.capabilities_response(1, IDENTITIES["impinj"]))
    info = device_info(caps.msgdict["GET_READER_CAPABILITIES_RESPONSE"])
    assert (info.manufacturer, info.vendor, info.max_antennas) == (IMPINJ_PEN, "impinj", 4)
    assert "Speedway" in info.firmware
    assert device_info({}).vendor == "generic"
