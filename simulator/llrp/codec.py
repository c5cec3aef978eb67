"""LLRP 1.0.1 wire format, reader side, hand-encoded with `struct`.

The simulator must not borrow sllurp's encoder (sllurp cannot encode reader messages anyway, and a
simulator built on the library under test would only prove the library agrees with itself), so
every message and parameter the reader sends is packed here from the standard's layouts, and the
few client messages the reader must understand are parsed here too.

Layouts (LLRP 1.0.1, big-endian):
  message header  : u16 (rsvd:3 | version:3 | type:10), u32 length (incl. header), u32 message id
  TLV parameter   : u16 (rsvd:6 | type:10), u16 length (incl. header), body
  TV parameter    : u8 (1 | type:7), fixed-size value
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

LLRP_VERSION = 1
HEADER = struct.Struct("!HII")
HEADER_LEN = HEADER.size
PARAM_HEADER = struct.Struct("!HH")


class LlrpDecodeError(ValueError):
    """A client message the simulator cannot make sense of (names what and where)."""


class MessageType:
    """Message type numbers (LLRP 1.0.1 section 16.1)."""

    GET_READER_CAPABILITIES = 1
    GET_READER_CONFIG = 2
    SET_READER_CONFIG = 3
    CLOSE_CONNECTION_RESPONSE = 4
    GET_READER_CAPABILITIES_RESPONSE = 11
    GET_READER_CONFIG_RESPONSE = 12
    SET_READER_CONFIG_RESPONSE = 13
    CLOSE_CONNECTION = 14
    ADD_ROSPEC = 20
    DELETE_ROSPEC = 21
    START_ROSPEC = 22
    STOP_ROSPEC = 23
    ENABLE_ROSPEC = 24
    DISABLE_ROSPEC = 25
    GET_ROSPECS = 26
    ADD_ROSPEC_RESPONSE = 30
    DELETE_ROSPEC_RESPONSE = 31
    START_ROSPEC_RESPONSE = 32
    STOP_ROSPEC_RESPONSE = 33
    ENABLE_ROSPEC_RESPONSE = 34
    DISABLE_ROSPEC_RESPONSE = 35
    GET_ROSPECS_RESPONSE = 36
    ADD_ACCESSSPEC = 40
    DELETE_ACCESSSPEC = 41
    ENABLE_ACCESSSPEC = 42
    DISABLE_ACCESSSPEC = 43
    ADD_ACCESSSPEC_RESPONSE = 50
    DELETE_ACCESSSPEC_RESPONSE = 51
    ENABLE_ACCESSSPEC_RESPONSE = 52
    DISABLE_ACCESSSPEC_RESPONSE = 53
    GET_REPORT = 60
    RO_ACCESS_REPORT = 61
    KEEPALIVE = 62
    READER_EVENT_NOTIFICATION = 63
    ENABLE_EVENTS_AND_REPORTS = 64
    KEEPALIVE_ACK = 72
    ERROR_MESSAGE = 100
    CUSTOM_MESSAGE = 1023


MESSAGE_NAMES: dict[int, str] = {
    v: k for k, v in vars(MessageType).items() if k.isupper() and isinstance(v, int)
}

# Request type -> response type, for the requests the simulated reader answers.
RESPONSE_OF: dict[int, int] = {
    MessageType.GET_READER_CAPABILITIES: MessageType.GET_READER_CAPABILITIES_RESPONSE,
    MessageType.GET_READER_CONFIG: MessageType.GET_READER_CONFIG_RESPONSE,
    MessageType.SET_READER_CONFIG: MessageType.SET_READER_CONFIG_RESPONSE,
    MessageType.CLOSE_CONNECTION: MessageType.CLOSE_CONNECTION_RESPONSE,
    MessageType.ADD_ROSPEC: MessageType.ADD_ROSPEC_RESPONSE,
    MessageType.DELETE_ROSPEC: MessageType.DELETE_ROSPEC_RESPONSE,
    MessageType.START_ROSPEC: MessageType.START_ROSPEC_RESPONSE,
    MessageType.STOP_ROSPEC: MessageType.STOP_ROSPEC_RESPONSE,
    MessageType.ENABLE_ROSPEC: MessageType.ENABLE_ROSPEC_RESPONSE,
    MessageType.DISABLE_ROSPEC: MessageType.DISABLE_ROSPEC_RESPONSE,
    MessageType.GET_ROSPECS: MessageType.GET_ROSPECS_RESPONSE,
    MessageType.ADD_ACCESSSPEC: MessageType.ADD_ACCESSSPEC_RESPONSE,
    MessageType.DELETE_ACCESSSPEC: MessageType.DELETE_ACCESSSPEC_RESPONSE,
    MessageType.ENABLE_ACCESSSPEC: MessageType.ENABLE_ACCESSSPEC_RESPONSE,
    MessageType.DISABLE_ACCESSSPEC: MessageType.DISABLE_ACCESSSPEC_RESPONSE,
}


class ParamType:
    """TLV parameter type numbers (LLRP 1.0.1 section 16.2)."""

    UTC_TIMESTAMP = 128
    UPTIME = 129
    GENERAL_DEVICE_CAPABILITIES = 137
    RECEIVE_SENSITIVITY_TABLE_ENTRY = 139
    PER_ANTENNA_AIR_PROTOCOL = 140
    GPIO_CAPABILITIES = 141
    LLRP_CAPABILITIES = 142
    REGULATORY_CAPABILITIES = 143
    UHF_BAND_CAPABILITIES = 144
    TRANSMIT_POWER_LEVEL_TABLE_ENTRY = 145
    FREQUENCY_INFORMATION = 146
    FREQUENCY_HOP_TABLE = 147
    RO_SPEC = 177
    RO_BOUNDARY_SPEC = 178
    RO_SPEC_START_TRIGGER = 179
    RO_SPEC_STOP_TRIGGER = 182
    AI_SPEC = 183
    AI_SPEC_STOP_TRIGGER = 184
    TAG_OBSERVATION_TRIGGER = 185
    INVENTORY_PARAMETER_SPEC = 186
    ROSPEC_EVENT = 249
    READER_EVENT_NOTIFICATION_SPEC = 244
    EVENT_NOTIFICATION_STATE = 245
    ANTENNA_CONFIGURATION = 222
    C1G2_INVENTORY_COMMAND = 330
    C1G2_RF_CONTROL = 335
    C1G2_SINGULATION_CONTROL = 336
    CUSTOM = 1023
    IDENTIFICATION = 218
    KEEPALIVE_SPEC = 220
    ANTENNA_PROPERTIES = 221
    RO_REPORT_SPEC = 237
    TAG_REPORT_CONTENT_SELECTOR = 238
    TAG_REPORT_DATA = 240
    EPC_DATA = 241
    READER_EVENT_NOTIFICATION_DATA = 246
    CONNECTION_ATTEMPT_EVENT = 256
    CONNECTION_CLOSE_EVENT = 257
    LLRP_STATUS = 287
    C1G2_LLRP_CAPABILITIES = 327
    UHF_C1G2_RF_MODE_TABLE = 328
    UHF_C1G2_RF_MODE_TABLE_ENTRY = 329
    C1G2_EPC_MEMORY_SELECTOR = 348
    ACCESS_SPEC = 207
    ACCESS_COMMAND = 209
    C1G2_READ = 341
    C1G2_READ_OP_SPEC_RESULT = 349


class TvType:
    """TV parameter types used in TagReportData (LLRP 1.0.1 section 16.2.7.3)."""

    ANTENNA_ID = 1  # u16
    FIRST_SEEN_UTC = 2  # u64 microseconds
    LAST_SEEN_UTC = 4  # u64 microseconds
    PEAK_RSSI = 6  # s8 dBm
    CHANNEL_INDEX = 7  # u16
    TAG_SEEN_COUNT = 8  # u16
    RO_SPEC_ID = 9  # u32
    INVENTORY_PARAMETER_SPEC_ID = 10  # u16
    EPC_96 = 13  # 12 bytes
    SPEC_INDEX = 14  # u16


# TV value sizes, so a TagReportData can be walked without knowing every TV type by name.
TV_SIZES: dict[int, int] = {
    1: 2, 2: 8, 3: 8, 4: 8, 5: 8, 6: 1, 7: 2, 8: 2, 9: 4, 10: 2, 11: 2, 12: 2, 13: 12, 14: 2,
    15: 2, 16: 4, 17: 2, 18: 4, 19: 2, 20: 2,
}


class Status:
    """LLRPStatus codes (LLRP 1.0.1 section 14.1.1)."""

    SUCCESS = 0
    PARAMETER_ERROR = 100
    FIELD_ERROR = 101
    UNEXPECTED_PARAMETER = 102
    MISSING_PARAMETER = 103
    UNSUPPORTED_MESSAGE = 109
    UNSUPPORTED_VERSION = 110
    A_INVALID = 300
    A_OUT_OF_RANGE = 301
    R_DEVICE_ERROR = 401


class ConnectionStatus:
    """ConnectionAttemptEvent status (LLRP 1.0.1 section 16.2.7.6.11)."""

    SUCCESS = 0
    READER_INITIATED_EXISTS = 1
    CLIENT_INITIATED_EXISTS = 2
    OTHER_FAILURE = 3
    ANOTHER_CONNECTION_ATTEMPTED = 4


# --------------------------------------------------------------------------------------------
# Encoding


def message(msg_type: int, msg_id: int, body: bytes = b"") -> bytes:
    """A complete LLRP message: header (version 1) followed by `body`."""
    return HEADER.pack((LLRP_VERSION << 10) | (msg_type & 0x3FF), HEADER_LEN + len(body),
                       msg_id & 0xFFFFFFFF) + body


def tlv(param_type: int, *parts: bytes) -> bytes:
    """A TLV parameter wrapping the concatenation of `parts`."""
    body = b"".join(parts)
    length = 4 + len(body)
    if length > 0xFFFF:
        raise ValueError(f"TLV parameter {param_type} of {length} bytes exceeds 65535")
    return PARAM_HEADER.pack(param_type & 0x3FF, length) + body


def utf8v(text: str) -> bytes:
    raw = text.encode("utf-8")
    return struct.pack("!H", len(raw)) + raw


def llrp_status(code: int = Status.SUCCESS, description: str = "") -> bytes:
    return tlv(ParamType.LLRP_STATUS, struct.pack("!H", code), utf8v(description))


def utc_timestamp(microseconds: int) -> bytes:
    return tlv(ParamType.UTC_TIMESTAMP, struct.pack("!Q", microseconds))


def reader_event_connection(msg_id: int, microseconds: int, status: int) -> bytes:
    """READER_EVENT_NOTIFICATION carrying a ConnectionAttemptEvent."""
    data = tlv(ParamType.READER_EVENT_NOTIFICATION_DATA, utc_timestamp(microseconds),
               tlv(ParamType.CONNECTION_ATTEMPT_EVENT, struct.pack("!H", status)))
    return message(MessageType.READER_EVENT_NOTIFICATION, msg_id, data)


def reader_event_close(msg_id: int, microseconds: int) -> bytes:
    """READER_EVENT_NOTIFICATION carrying a ConnectionCloseEvent (reader closing the link)."""
    data = tlv(ParamType.READER_EVENT_NOTIFICATION_DATA, utc_timestamp(microseconds),
               tlv(ParamType.CONNECTION_CLOSE_EVENT))
    return message(MessageType.READER_EVENT_NOTIFICATION, msg_id, data)


def status_response(msg_type: int, msg_id: int, code: int = Status.SUCCESS,
                    description: str = "") -> bytes:
    """A response whose body is only an LLRPStatus (most *_RESPONSE messages, ERROR_MESSAGE)."""
    return message(msg_type, msg_id, llrp_status(code, description))


def error_message(msg_id: int, code: int, description: str) -> bytes:
    return status_response(MessageType.ERROR_MESSAGE, msg_id, code, description)


def get_rospecs_response(msg_id: int, specs: list[tuple[int, int, int]]) -> bytes:
    """GET_ROSPECS_RESPONSE: (ROSpecID, priority, CurrentState 0/1/2) per ROSpec. Each ROSpec
    carries only its leading fields here (what a client reads to learn the state)."""
    body = b"".join(tlv(ParamType.RO_SPEC, struct.pack("!IBB", sid, prio, state))
                    for sid, prio, state in specs)
    return message(MessageType.GET_ROSPECS_RESPONSE, msg_id, llrp_status() + body)


def custom_parameter(vendor: int, subtype: int, data: bytes) -> bytes:
    """A vendor (type 1023) parameter: vendor PEN, subtype, opaque data."""
    return tlv(ParamType.CUSTOM, struct.pack("!II", vendor, subtype), data)


def custom_message(msg_id: int, vendor: int, subtype: int, body: bytes) -> bytes:
    """A CUSTOM_MESSAGE (type 1023): vendor PEN, u8 subtype, then the vendor's body."""
    return message(MessageType.CUSTOM_MESSAGE, msg_id, struct.pack("!IB", vendor, subtype) + body)


def rospec_event(msg_id: int, microseconds: int, event_type: int, rospec_id: int) -> bytes:
    """READER_EVENT_NOTIFICATION with a ROSpecEvent (0 start, 1 end of ROSpec)."""
    data = tlv(ParamType.READER_EVENT_NOTIFICATION_DATA, utc_timestamp(microseconds),
               tlv(ParamType.ROSPEC_EVENT, struct.pack("!BII", event_type, rospec_id, 0)))
    return message(MessageType.READER_EVENT_NOTIFICATION, msg_id, data)


def keepalive(msg_id: int) -> bytes:
    return message(MessageType.KEEPALIVE, msg_id)


@dataclass(frozen=True)
class ReaderIdentity:
    """What the simulated reader claims to be in its capabilities."""

    max_antennas: int = 4
    manufacturer: int = 0xFFFF  # no IANA private enterprise number: a simulator
    model: int = 1
    firmware: str = "rfidd-sim 1.0"
    country_code: int = 250  # ISO 3166 numeric: France
    communications_standard: int = 2  # ETSI 302 208
    # dBm x 100 per index (index 1 = lowest); sllurp takes the highest as index 0 = "max".
    power_levels_cdbm: tuple[int, ...] = tuple(range(1000, 3175, 25))
    frequencies_khz: tuple[int, ...] = (865700, 866300, 866900, 867500)
    reader_id: bytes = b"\x00\x16\x25\x00\x00\x01"  # a MAC-like identity


# (ModeIdentifier, DR(0=8, 1=64/3), M (0 FM0, 1-3 Miller 2/4/8), FLM, SMI, BDR, PIE, Tari...)
RF_MODES: tuple[tuple[int, int, int, int, int, int, int, int, int, int], ...] = (
    (1000, 1, 0, 2, 1, 640_000, 1500, 6250, 6250, 0),  # max throughput
    (1002, 1, 2, 2, 3, 250_000, 2000, 20000, 20000, 0),  # dense reader, Miller 4
    (1004, 1, 3, 2, 3, 160_000, 2000, 25000, 25000, 0),  # dense reader, Miller 8
)


def capabilities_response(msg_id: int, ident: ReaderIdentity, extra: bytes = b"") -> bytes:
    """GET_READER_CAPABILITIES_RESPONSE with everything sllurp parses (and pyllrp validates)."""
    gdc = tlv(
        ParamType.GENERAL_DEVICE_CAPABILITIES,
        struct.pack("!HHII", ident.max_antennas, 0x4000,  # HasUTCClockCapability
                    ident.manufacturer, ident.model),
        utf8v(ident.firmware),
        tlv(ParamType.RECEIVE_SENSITIVITY_TABLE_ENTRY, struct.pack("!Hh", 1, 0)),
        tlv(ParamType.GPIO_CAPABILITIES, struct.pack("!HH", 0, 0)),
        *(tlv(ParamType.PER_ANTENNA_AIR_PROTOCOL, struct.pack("!HHB", ant, 1, 1))
          for ant in range(1, ident.max_antennas + 1)),
    )
    llrpc = tlv(ParamType.LLRP_CAPABILITIES,
                struct.pack("!BBHIIIII", 0x00, 1, 0, 1, 1, 1, 0, 0))
    power = b"".join(
        tlv(ParamType.TRANSMIT_POWER_LEVEL_TABLE_ENTRY, struct.pack("!Hh", i, cdbm))
        for i, cdbm in enumerate(ident.power_levels_cdbm, start=1)
    )
    hop = tlv(ParamType.FREQUENCY_HOP_TABLE,
              struct.pack("!BBH", 1, 0, len(ident.frequencies_khz)),
              *(struct.pack("!I", f) for f in ident.frequencies_khz))
    freq = tlv(ParamType.FREQUENCY_INFORMATION, b"\x80", hop)
    modes = tlv(ParamType.UHF_C1G2_RF_MODE_TABLE, *(
        tlv(ParamType.UHF_C1G2_RF_MODE_TABLE_ENTRY,
            struct.pack("!IBBBBIIIII", mid, dr << 7, m, flm, smi, bdr, pie, tmin, tmax, tstep))
        for mid, dr, m, flm, smi, bdr, pie, tmin, tmax, tstep in RF_MODES
    ))
    regc = tlv(ParamType.REGULATORY_CAPABILITIES,
               struct.pack("!HH", ident.country_code, ident.communications_standard),
               tlv(ParamType.UHF_BAND_CAPABILITIES, power, freq, modes))
    c1g2 = tlv(ParamType.C1G2_LLRP_CAPABILITIES, struct.pack("!BH", 0x00, 2))
    return message(MessageType.GET_READER_CAPABILITIES_RESPONSE, msg_id,
                   llrp_status() + gdc + llrpc + regc + c1g2 + extra)


def config_response(msg_id: int, ident: ReaderIdentity, antennas: list[int],
                    keepalive_ms: int) -> bytes:
    """GET_READER_CONFIG_RESPONSE: identification, antenna properties, keepalive spec."""
    ident_p = tlv(ParamType.IDENTIFICATION, struct.pack("!BH", 0, len(ident.reader_id)),
                  ident.reader_id)
    props = b"".join(
        tlv(ParamType.ANTENNA_PROPERTIES,
            struct.pack("!BHh", 0x80 if ant in antennas else 0x00, ant, 0))
        for ant in range(1, ident.max_antennas + 1)
    )
    ka = tlv(ParamType.KEEPALIVE_SPEC, struct.pack("!BI", 1 if keepalive_ms else 0, keepalive_ms))
    return message(MessageType.GET_READER_CONFIG_RESPONSE, msg_id,
                   llrp_status() + ident_p + props + ka)


@dataclass(frozen=True, slots=True)
class ContentSelector:
    """Which optional fields each TagReportData carries (TagReportContentSelector)."""

    rospec_id: bool = False
    spec_index: bool = False
    inventory_parameter_spec_id: bool = False
    antenna_id: bool = True
    channel_index: bool = False
    peak_rssi: bool = True
    first_seen: bool = True
    last_seen: bool = False
    tag_seen_count: bool = True

    @classmethod
    def from_flags(cls, flags: int) -> ContentSelector:
        return cls(
            rospec_id=bool(flags & 0x8000), spec_index=bool(flags & 0x4000),
            inventory_parameter_spec_id=bool(flags & 0x2000), antenna_id=bool(flags & 0x1000),
            channel_index=bool(flags & 0x0800), peak_rssi=bool(flags & 0x0400),
            first_seen=bool(flags & 0x0200), last_seen=bool(flags & 0x0100),
            tag_seen_count=bool(flags & 0x0080),
        )


_TV_U16 = struct.Struct("!BH")
_TV_U32 = struct.Struct("!BI")
_TV_U64 = struct.Struct("!BQ")
_TV_S8 = struct.Struct("!Bb")


@dataclass(slots=True)
class TagObservation:
    """One tag as it goes into a report: aggregated over the report window."""

    epc: bytes  # 12 bytes for EPC-96, else any even length
    antenna: int
    peak_rssi: int
    first_seen_us: int
    last_seen_us: int
    seen_count: int = 1
    read_data: bytes | None = None  # words read by an AccessSpec (C1G2ReadOpSpecResult)
    op_spec_id: int = 1


def tag_report_data(obs: TagObservation, sel: ContentSelector, rospec_id: int,
                    inventory_parameter_spec_id: int = 1, channel_index: int = 1) -> bytes:
    """One TagReportData; EPC-96 as a TV parameter when it is 96 bits, else an EPCData TLV."""
    if len(obs.epc) == 12:
        parts = [bytes((0x80 | TvType.EPC_96,)) + obs.epc]
    else:
        parts = [tlv(ParamType.EPC_DATA, struct.pack("!H", len(obs.epc) * 8), obs.epc)]
    if sel.rospec_id:
        parts.append(_TV_U32.pack(0x80 | TvType.RO_SPEC_ID, rospec_id))
    if sel.spec_index:
        parts.append(_TV_U16.pack(0x80 | TvType.SPEC_INDEX, 1))
    if sel.inventory_parameter_spec_id:
        parts.append(_TV_U16.pack(0x80 | TvType.INVENTORY_PARAMETER_SPEC_ID,
                                  inventory_parameter_spec_id))
    if sel.antenna_id:
        parts.append(_TV_U16.pack(0x80 | TvType.ANTENNA_ID, obs.antenna))
    if sel.peak_rssi:
        parts.append(_TV_S8.pack(0x80 | TvType.PEAK_RSSI, max(-128, min(127, obs.peak_rssi))))
    if sel.channel_index:
        parts.append(_TV_U16.pack(0x80 | TvType.CHANNEL_INDEX, channel_index))
    if sel.first_seen:
        parts.append(_TV_U64.pack(0x80 | TvType.FIRST_SEEN_UTC, obs.first_seen_us))
    if sel.last_seen:
        parts.append(_TV_U64.pack(0x80 | TvType.LAST_SEEN_UTC, obs.last_seen_us))
    if sel.tag_seen_count:
        parts.append(_TV_U16.pack(0x80 | TvType.TAG_SEEN_COUNT, min(obs.seen_count, 0xFFFF)))
    if obs.read_data is not None:
        parts.append(tlv(ParamType.C1G2_READ_OP_SPEC_RESULT,
                         struct.pack("!BHH", 0, obs.op_spec_id, len(obs.read_data) // 2),
                         obs.read_data))
    return tlv(ParamType.TAG_REPORT_DATA, *parts)


def ro_access_report(msg_id: int, tags: list[TagObservation], sel: ContentSelector,
                     rospec_id: int, extra: bytes = b"") -> bytes:
    return message(MessageType.RO_ACCESS_REPORT, msg_id,
                   b"".join(tag_report_data(t, sel, rospec_id) for t in tags) + extra)


# --------------------------------------------------------------------------------------------
# Decoding


@dataclass(frozen=True, slots=True)
class Header:
    version: int
    msg_type: int
    length: int
    msg_id: int

    @property
    def name(self) -> str:
        return MESSAGE_NAMES.get(self.msg_type, f"type {self.msg_type}")


def decode_header(data: bytes | bytearray | memoryview) -> Header:
    if len(data) < HEADER_LEN:
        raise LlrpDecodeError(f"message header needs {HEADER_LEN} bytes, got {len(data)}")
    word, length, msg_id = HEADER.unpack_from(data)
    return Header((word >> 10) & 0x7, word & 0x3FF, length, msg_id)


def iter_params(body: bytes, where: str) -> Iterator[tuple[int, bytes]]:
    """Walk a run of parameters: yields (type, value) for TLV and TV parameters alike."""
    pos = 0
    n = len(body)
    while pos < n:
        first = body[pos]
        if first & 0x80:  # TV
            tv_type = first & 0x7F
            size = TV_SIZES.get(tv_type)
            if size is None:
                raise LlrpDecodeError(f"{where}: unknown TV parameter {tv_type} at byte {pos}")
            if pos + 1 + size > n:
                raise LlrpDecodeError(f"{where}: TV parameter {tv_type} truncated at byte {pos}")
            yield tv_type, body[pos + 1:pos + 1 + size]
            pos += 1 + size
            continue
        if pos + 4 > n:
            raise LlrpDecodeError(f"{where}: parameter header truncated at byte {pos}")
        ptype, plen = PARAM_HEADER.unpack_from(body, pos)
        ptype &= 0x3FF
        if plen < 4 or pos + plen > n:
            raise LlrpDecodeError(
                f"{where}: parameter {ptype} at byte {pos} claims {plen} bytes, {n - pos} left")
        yield ptype, body[pos + 4:pos + plen]
        pos += plen


def _need(value: bytes, size: int, what: str) -> None:
    if len(value) < size:
        raise LlrpDecodeError(f"{what}: needs {size} bytes, got {len(value)}")


def u32_field(body: bytes, what: str) -> int:
    """The leading u32 of a body (ROSpecID, AccessSpecID)."""
    _need(body, 4, what)
    value: int = struct.unpack_from("!I", body)[0]
    return value


@dataclass
class RoSpec:
    """What the simulator honours of an ADD_ROSPEC."""

    rospec_id: int
    priority: int = 0
    start_trigger: int = 0  # 0 Null, 1 Immediate, 2 Periodic, 3 GPI
    stop_trigger: int = 0  # 0 Null, 1 Duration, 2 GPI
    stop_duration_ms: int = 0
    antennas: list[int] = field(default_factory=list)  # [0] = all
    ai_stop_trigger: int = 0  # 0 Null, 1 Duration, 2 GPI, 3 Tag observation
    ai_duration_ms: int = 0
    n_tags: int = 0  # from TagObservationTrigger (sllurp's report_every_n_tags) or ROReportSpec N
    report_timeout_ms: int = 0
    report_trigger: int = 2  # 0 None, 1 Upon N tags or end of AISpec, 2 ...or end of ROSpec
    selector: ContentSelector = field(default_factory=ContentSelector)
    configured_antennas: list[int] = field(default_factory=list)  # AntennaConfiguration ids
    mode_index: int | None = None  # C1G2RFControl ModeIndex of the first antenna configuration
    custom_parameters: int = 0  # vendor parameters seen anywhere in the InventoryParameterSpec
    session: int | None = None  # C1G2SingulationControl of the first antenna configuration
    tag_population: int | None = None
    search_mode: int | None = None  # ImpinjInventorySearchMode (Impinj custom parameter 23)

    @property
    def report_every(self) -> int:
        return self.n_tags


IMPINJ_VENDOR = 25882
IMPINJ_SEARCH_MODE = 23  # ImpinjInventorySearchMode subtype (Impinj LTK)


def parse_add_rospec(body: bytes) -> RoSpec:
    """The ROSpec of an ADD_ROSPEC body; raises LlrpDecodeError naming the faulty part."""
    rospec: RoSpec | None = None
    for ptype, value in iter_params(body, "ADD_ROSPEC"):
        if ptype == ParamType.RO_SPEC:
            rospec = _parse_rospec(value)
    if rospec is None:
        raise LlrpDecodeError("ADD_ROSPEC: no ROSpec parameter")
    return rospec


def _parse_rospec(value: bytes) -> RoSpec:
    _need(value, 6, "ROSpec")
    rospec_id, priority, _state = struct.unpack_from("!IBB", value)
    spec = RoSpec(rospec_id=rospec_id, priority=priority)
    report_n = 0
    for ptype, sub in iter_params(value[6:], "ROSpec"):
        if ptype == ParamType.RO_BOUNDARY_SPEC:
            for btype, bval in iter_params(sub, "ROBoundarySpec"):
                if btype == ParamType.RO_SPEC_START_TRIGGER:
                    _need(bval, 1, "ROSpecStartTrigger")
                    spec.start_trigger = bval[0]
                elif btype == ParamType.RO_SPEC_STOP_TRIGGER:
                    _need(bval, 5, "ROSpecStopTrigger")
                    spec.stop_trigger, spec.stop_duration_ms = struct.unpack_from("!BI", bval)
        elif ptype == ParamType.AI_SPEC:
            _parse_aispec(sub, spec)
        elif ptype == ParamType.RO_REPORT_SPEC:
            _need(sub, 3, "ROReportSpec")
            spec.report_trigger, report_n = struct.unpack_from("!BH", sub)
            for rtype, rval in iter_params(sub[3:], "ROReportSpec"):
                if rtype == ParamType.TAG_REPORT_CONTENT_SELECTOR:
                    _need(rval, 2, "TagReportContentSelector")
                    spec.selector = ContentSelector.from_flags(struct.unpack_from("!H", rval)[0])
    if report_n and spec.report_trigger in (1, 2):
        spec.n_tags = report_n if not spec.n_tags else min(spec.n_tags, report_n)
    return spec


def _parse_aispec(value: bytes, spec: RoSpec) -> None:
    if spec.antennas:  # only the first AISpec drives the simulation
        return
    _need(value, 2, "AISpec")
    (count,) = struct.unpack_from("!H", value)
    _need(value, 2 + 2 * count, "AISpec antenna list")
    spec.antennas = list(struct.unpack_from(f"!{count}H", value, 2))
    for ptype, sub in iter_params(value[2 + 2 * count:], "AISpec"):
        if ptype == ParamType.INVENTORY_PARAMETER_SPEC:
            _parse_inventory_parameter_spec(sub, spec)
            continue
        if ptype != ParamType.AI_SPEC_STOP_TRIGGER:
            continue
        _need(sub, 5, "AISpecStopTrigger")
        spec.ai_stop_trigger, spec.ai_duration_ms = struct.unpack_from("!BI", sub)
        for ttype, tval in iter_params(sub[5:], "AISpecStopTrigger"):
            if ttype == ParamType.TAG_OBSERVATION_TRIGGER:
                _need(tval, 12, "TagObservationTrigger")
                trig, _rsvd, n_tags, _attempts, _t, timeout = struct.unpack_from("!BBHHHI", tval)
                if trig in (0, 3):  # Upon N tags / N unique tags, or timeout
                    spec.n_tags = n_tags
                    spec.report_timeout_ms = timeout


def _parse_inventory_parameter_spec(value: bytes, spec: RoSpec) -> None:
    _need(value, 3, "InventoryParameterSpec")
    for ptype, sub in iter_params(value[3:], "InventoryParameterSpec"):
        if ptype == ParamType.CUSTOM:
            spec.custom_parameters += 1
        if ptype != ParamType.ANTENNA_CONFIGURATION:
            continue
        _need(sub, 2, "AntennaConfiguration")
        spec.configured_antennas.append(struct.unpack_from("!H", sub)[0])
        for ctype, csub in iter_params(sub[2:], "AntennaConfiguration"):
            if ctype != ParamType.C1G2_INVENTORY_COMMAND:
                continue
            _need(csub, 1, "C1G2InventoryCommand")
            for itype, isub in iter_params(csub[1:], "C1G2InventoryCommand"):
                if itype == ParamType.C1G2_RF_CONTROL and spec.mode_index is None:
                    _need(isub, 4, "C1G2RFControl")
                    spec.mode_index = struct.unpack_from("!H", isub)[0]
                elif itype == ParamType.C1G2_SINGULATION_CONTROL and spec.session is None:
                    _need(isub, 3, "C1G2SingulationControl")
                    bits, spec.tag_population = struct.unpack_from("!BH", isub)
                    spec.session = bits >> 6
                elif itype == ParamType.CUSTOM:
                    spec.custom_parameters += 1
                    if len(isub) >= 10 and struct.unpack_from("!II", isub) == (
                            IMPINJ_VENDOR, IMPINJ_SEARCH_MODE) and spec.search_mode is None:
                        spec.search_mode = struct.unpack_from("!H", isub, 8)[0]


@dataclass(frozen=True)
class AccessRead:
    """The C1G2Read of an ADD_ACCESSSPEC: which bank and words to read from every tag."""

    access_spec_id: int
    op_spec_id: int
    bank: int  # 0 reserved, 1 EPC, 2 TID, 3 user
    word_ptr: int
    word_count: int


def parse_add_accessspec(body: bytes) -> AccessRead | None:
    """The read operation of an ADD_ACCESSSPEC body, or None when it has no C1G2Read."""
    for ptype, value in iter_params(body, "ADD_ACCESSSPEC"):
        if ptype != ParamType.ACCESS_SPEC:
            continue
        _need(value, 12, "AccessSpec")
        spec_id = struct.unpack_from("!I", value)[0]
        for atype, aval in iter_params(value[12:], "AccessSpec"):
            if atype != ParamType.ACCESS_COMMAND:
                continue
            for ctype, cval in iter_params(aval, "AccessCommand"):
                if ctype == ParamType.C1G2_READ:
                    _need(cval, 11, "C1G2Read")
                    op_id, _pw, mb, ptr, count = struct.unpack_from("!HIBHH", cval)
                    return AccessRead(spec_id, op_id, mb >> 6, ptr, count)
    return None


def parse_rospec_events(body: bytes) -> bool | None:
    """Whether a SET_READER_CONFIG asks for ROSpecEvent notifications (None: not said)."""
    if not body:
        raise LlrpDecodeError("SET_READER_CONFIG: empty body")
    for ptype, value in iter_params(body[1:], "SET_READER_CONFIG"):
        if ptype != ParamType.READER_EVENT_NOTIFICATION_SPEC:
            continue
        for etype, evalue in iter_params(value, "ReaderEventNotificationSpec"):
            if etype == ParamType.EVENT_NOTIFICATION_STATE:
                _need(evalue, 3, "EventNotificationState")
                event, flag = struct.unpack_from("!HB", evalue)
                if event == 2:  # ROSpecEvent
                    return bool(flag & 0x80)
    return None


def parse_keepalive_ms(body: bytes) -> int | None:
    """KeepaliveSpec period of a SET_READER_CONFIG body: ms, 0 = off, None = not given."""
    if not body:
        raise LlrpDecodeError("SET_READER_CONFIG: empty body")
    for ptype, value in iter_params(body[1:], "SET_READER_CONFIG"):
        if ptype == ParamType.KEEPALIVE_SPEC:
            _need(value, 5, "KeepaliveSpec")
            trigger, interval = struct.unpack_from("!BI", value)
            return int(interval) if trigger == 1 else 0
    return None
