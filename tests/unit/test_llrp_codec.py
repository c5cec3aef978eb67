"""The simulator's hand-written LLRP codec, checked against two independent implementations.

sllurp decodes what the reader sends (its own decoder, not ours), pyllrp (MIT, written from the
LLRP spec separately) decodes it too and validates it against its parameter definitions, and the
client messages sllurp encodes are parsed by the simulator.
"""

from __future__ import annotations

import struct

import bitstring
import pytest
from pyllrp import pyllrp
from sllurp.llrp import LLRPMessage
from sllurp.llrp_proto import LLRPROSpec

from simulator.llrp import codec
from simulator.llrp.codec import ContentSelector, MessageType, TagObservation

EPC = bytes.fromhex("3034257BF7194E4000001A85")
FULL = ContentSelector(antenna_id=True, peak_rssi=True, first_seen=True, tag_seen_count=True)


def sllurp_decode(data: bytes) -> tuple[str, dict]:  # type: ignore[type-arg]
    msg = LLRPMessage(msgbytes=data)
    return msg.getName(), msg.msgdict[msg.getName()]


def pyllrp_decode(data: bytes) -> object:
    return pyllrp.UnpackMessage(bitstring.ConstBitStream(bytes=data))


def obs(epc: bytes = EPC, antenna: int = 2, rssi: int = -61, count: int = 3) -> TagObservation:
    return TagObservation(epc, antenna, rssi, 1_700_000_000_123_456, 1_700_000_000_223_456, count)


def test_header_layout() -> None:
    data = codec.message(MessageType.KEEPALIVE, 0xDEADBEEF)
    assert data == bytes.fromhex("043e0000000adeadbeef")  # ver 1, type 62, len 10
    hdr = codec.decode_header(data)
    assert (hdr.version, hdr.msg_type, hdr.length, hdr.msg_id) == (1, 62, 10, 0xDEADBEEF)
    assert hdr.name == "KEEPALIVE"


def test_tag_report_data_is_34_bytes_and_100_tags_report_is_3410() -> None:
    assert len(codec.tag_report_data(obs(), FULL, 1)) == 34
    report = codec.ro_access_report(7, [obs() for _ in range(100)], FULL, 1)
    assert len(report) == 3410


def test_report_decoded_by_sllurp() -> None:
    sel = ContentSelector(rospec_id=True, antenna_id=True, peak_rssi=True, first_seen=True,
                          last_seen=True, tag_seen_count=True, channel_index=True)
    other = bytes.fromhex("E2801160600002054CC2FFFF")
    name, body = sllurp_decode(codec.ro_access_report(9, [obs(), obs(other, 1, -70, 1)], sel, 5))
    assert name == "RO_ACCESS_REPORT"
    tags = body["TagReportData"]
    assert tags[0]["EPC-96"] == b"3034257bf7194e4000001a85"
    assert tags[0]["AntennaID"] == 2 and tags[0]["PeakRSSI"] == -61
    assert tags[0]["FirstSeenTimestampUTC"] == 1_700_000_000_123_456
    assert tags[0]["LastSeenTimestampUTC"] == 1_700_000_000_223_456
    assert tags[0]["TagSeenCount"] == 3 and tags[0]["ROSpecID"] == 5
    assert tags[1]["EPC-96"] == other.hex().encode() and tags[1]["AntennaID"] == 1


def test_content_selector_omits_fields() -> None:
    sel = ContentSelector(antenna_id=False, peak_rssi=False, first_seen=False,
                          tag_seen_count=False)
    _, body = sllurp_decode(codec.ro_access_report(1, [obs()], sel, 1))
    assert set(body["TagReportData"][0]) == {"EPC-96", "EPC"}


def test_non_96_bit_epc_goes_in_epcdata() -> None:
    epc128 = bytes(range(16))
    _, body = sllurp_decode(codec.ro_access_report(1, [obs(epc128)], FULL, 1))
    tag = body["TagReportData"][0]
    assert "EPC-96" not in tag and tag["EPC"] == epc128.hex().encode()


def test_capabilities_decoded_by_sllurp_with_power_and_mode_tables() -> None:
    ident = codec.ReaderIdentity(max_antennas=8)
    name, body = sllurp_decode(codec.capabilities_response(42, ident))
    assert name == "GET_READER_CAPABILITIES_RESPONSE" and body["ID"] == 42
    assert body["LLRPStatus"]["StatusCode"] == "Success"
    assert body["GeneralDeviceCapabilities"]["MaxNumberOfAntennaSupported"] == 8
    band = body["RegulatoryCapabilities"]["UHFBandCapabilities"]
    powers = band["TransmitPowerLevelTableEntry"]
    assert len(powers) == len(ident.power_levels_cdbm)
    assert powers[-1]["TransmitPowerValue"] == ident.power_levels_cdbm[-1]
    modes = band["UHFC1G2RFModeTable"]["UHFC1G2RFModeTableEntry"]
    assert [m["ModeIdentifier"] for m in modes] == [m[0] for m in codec.RF_MODES]


def test_reader_event_and_status_messages_decoded_by_sllurp() -> None:
    _, ev = sllurp_decode(codec.reader_event_connection(1, 123, codec.ConnectionStatus.SUCCESS))
    data = ev["ReaderEventNotificationData"]
    assert data["ConnectionAttemptEvent"]["Status"] == "Success"
    assert data["UTCTimestamp"]["Microseconds"] == 123
    _, refused = sllurp_decode(codec.reader_event_connection(
        2, 1, codec.ConnectionStatus.CLIENT_INITIATED_EXISTS))
    assert refused["ReaderEventNotificationData"]["ConnectionAttemptEvent"]["Status"] == \
        "Failed (a Client initiated connection already exists)"
    name, err = sllurp_decode(codec.error_message(77, codec.Status.UNSUPPORTED_MESSAGE, "nope"))
    assert name == "ERROR_MESSAGE" and err["ID"] == 77
    assert err["LLRPStatus"]["StatusCode"] == "UnsupportedMessage"
    assert err["LLRPStatus"]["ErrorDescription"] == b"nope"
    name, cfg = sllurp_decode(codec.config_response(5, codec.ReaderIdentity(), [1, 2], 1000))
    assert name == "GET_READER_CONFIG_RESPONSE" and cfg["LLRPStatus"]["StatusCode"] == "Success"


@pytest.mark.parametrize("data", [
    codec.capabilities_response(1, codec.ReaderIdentity()),
    codec.config_response(2, codec.ReaderIdentity(), [1], 500),
    codec.reader_event_connection(3, 99, codec.ConnectionStatus.SUCCESS),
    codec.reader_event_close(4, 99),
    codec.keepalive(5),
    codec.status_response(MessageType.ADD_ROSPEC_RESPONSE, 6),
    codec.error_message(7, codec.Status.A_INVALID, "x"),
    codec.ro_access_report(8, [obs()], FULL, 1),
], ids=["caps", "config", "event", "close", "keepalive", "add_rospec_resp", "error", "report"])
def test_pyllrp_decodes_and_validates(data: bytes) -> None:
    msg = pyllrp_decode(data)
    assert msg.MessageID == codec.decode_header(data).msg_id  # type: ignore[attr-defined]
    msg._validate()  # type: ignore[attr-defined]  # pyllrp's own structural check
    assert pyllrp.PackMessage(msg).tobytes() == data  # re-encodes to the very same bytes


def test_pyllrp_reads_the_tags() -> None:
    msg = pyllrp_decode(codec.ro_access_report(8, [obs()], FULL, 1))
    (tag,) = msg.getTagData()  # type: ignore[attr-defined]
    assert tag["AntennaID"] == 2 and tag["PeakRSSI"] == -61 and tag["TagSeenCount"] == 3
    assert tag["Timestamp"] == 1_700_000_000_123_456
    assert pyllrp.HexFormatToStr(tag["EPC"]) == "3034257BF7194E4000001A85"


def _sllurp_add_rospec(**kwargs: object) -> bytes:
    rospec = LLRPROSpec(None, 3, antennas=[1, 3], **kwargs)
    return LLRPMessage(msgdict={"ADD_ROSPEC": {"ID": 11, "ROSpecID": 3, "ROSpec": rospec}}).msgbytes  # type: ignore[no-any-return]


def test_parse_sllurp_add_rospec() -> None:
    data = _sllurp_add_rospec(report_every_n_tags=50, report_timeout_ms=400, tag_content_selector={
        "EnableFirstSeenTimestamp": True, "EnableLastSeenTimestamp": False})
    hdr = codec.decode_header(data)
    assert hdr.msg_type == MessageType.ADD_ROSPEC and hdr.msg_id == 11
    spec = codec.parse_add_rospec(data[codec.HEADER_LEN:])
    assert spec.rospec_id == 3 and spec.antennas == [1, 3]
    assert spec.start_trigger == 1  # Immediate
    assert spec.n_tags == 50 and spec.report_timeout_ms == 400
    assert spec.selector.first_seen and not spec.selector.last_seen
    assert spec.selector.antenna_id and spec.selector.peak_rssi and spec.selector.rospec_id


def test_parse_add_rospec_without_n_tags_reports_at_end_only() -> None:
    spec = codec.parse_add_rospec(_sllurp_add_rospec()[codec.HEADER_LEN:])
    assert spec.n_tags == 0 and spec.report_timeout_ms == 0


def test_parse_keepalive_from_sllurp_set_reader_config() -> None:
    msg = {"SET_READER_CONFIG": {"ID": 1, "ResetToFactoryDefaults": False,
                                 "KeepaliveSpec": {"KeepaliveTriggerType": 1,
                                                   "TimeInterval": 2500}}}
    data = LLRPMessage(msgdict=msg).msgbytes
    assert codec.parse_keepalive_ms(data[codec.HEADER_LEN:]) == 2500
    assert codec.parse_keepalive_ms(b"\x00") is None


@pytest.mark.parametrize("body, fragment", [
    (b"", "no ROSpec"),
    (struct.pack("!HH", 177, 40) + b"\x00" * 4, "claims 40 bytes"),
    (b"\xff", "unknown TV parameter 127"),
    (struct.pack("!HH", 177, 6) + b"\x00\x00", "ROSpec: needs 6 bytes"),
])
def test_bad_add_rospec_is_a_clear_error(body: bytes, fragment: str) -> None:
    with pytest.raises(codec.LlrpDecodeError, match=fragment):
        codec.parse_add_rospec(body)
