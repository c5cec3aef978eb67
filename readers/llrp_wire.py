"""The few LLRP messages the driver must handle without sllurp.

sllurp 3.0.5 has no GET_ROSPECS at all (it can neither encode the request nor decode the
response), and a vendor parameter its decoder chokes on makes it drop the whole message. These
helpers pack and walk the standard's layouts (LLRP 1.0.1) with `struct`:

  message header : u16 (rsvd:3 | version:3 | type:10), u32 length, u32 message id
  TLV parameter  : u16 (rsvd:6 | type:10), u16 length (incl. header), body
  TV parameter   : u8 (1 | type:7), fixed-size value
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

HEADER = struct.Struct("!HII")
PARAM = struct.Struct("!HH")

GET_ROSPECS = 26
GET_ROSPECS_RESPONSE = 36
START_ROSPEC = 22
ENABLE_ROSPEC = 24
ADD_ROSPEC = 20
RO_ACCESS_REPORT = 61
CUSTOM = 1023

P_ROSPEC = 177
P_LLRP_STATUS = 287
P_TAG_REPORT_DATA = 240

# ROSpec CurrentState (LLRP 1.0.1 section 16.2.4.1)
DISABLED, INACTIVE, ACTIVE = 0, 1, 2
STATE_NAMES = {DISABLED: "Disabled", INACTIVE: "Inactive", ACTIVE: "Active"}

# TV parameter sizes (LLRP 1.0.1 section 16.2.7.3), to step over them while walking.
_TV_SIZES = {1: 2, 2: 8, 3: 8, 4: 8, 5: 8, 6: 1, 7: 2, 8: 2, 9: 4, 10: 2, 11: 2, 12: 2, 13: 12,
             14: 2, 15: 2, 16: 4, 17: 2, 18: 4, 19: 2, 20: 2}


class WireError(ValueError):
    """A frame that does not follow the layout (names what and where)."""


def get_rospecs(msg_id: int) -> bytes:
    """A GET_ROSPECS request (no body)."""
    return HEADER.pack((1 << 10) | GET_ROSPECS, HEADER.size, msg_id & 0xFFFFFFFF)


def message_type(frame: bytes) -> int:
    return int(HEADER.unpack_from(frame)[0]) & 0x3FF


@dataclass(frozen=True)
class RoSpecStates:
    """A GET_ROSPECS_RESPONSE: the status and each ROSpec's current state by id."""

    status_code: int
    description: str
    states: dict[int, int]


def parse_get_rospecs_response(frame: bytes) -> RoSpecStates:
    body = frame[HEADER.size:]
    status, description = -1, ""
    states: dict[int, int] = {}
    pos = 0
    while pos + PARAM.size <= len(body):
        ptype, plen = PARAM.unpack_from(body, pos)
        ptype &= 0x3FF
        if plen < PARAM.size or pos + plen > len(body):
            raise WireError(f"GET_ROSPECS_RESPONSE: parameter {ptype} at byte {pos} claims "
                            f"{plen} bytes, {len(body) - pos} left")
        value = body[pos + PARAM.size:pos + plen]
        if ptype == P_LLRP_STATUS and len(value) >= 4:
            status, dlen = struct.unpack_from("!HH", value)
            description = value[4:4 + dlen].decode("utf-8", "replace")
        elif ptype == P_ROSPEC and len(value) >= 6:
            rospec_id, _priority, state = struct.unpack_from("!IBB", value)
            states[rospec_id] = state
        pos += plen
    if status < 0:
        raise WireError("GET_ROSPECS_RESPONSE without LLRPStatus")
    return RoSpecStates(status, description, states)


def strip_custom_parameters(frame: bytes) -> tuple[bytes, int]:
    """The frame without its vendor (type 1023) parameters, at top level and inside each
    TagReportData; returns (frame, how many were removed). Used only after sllurp failed to
    decode the frame: a vendor field we do not need must not cost the standard data around it."""
    word, _length, msg_id = HEADER.unpack_from(frame)
    body, removed = _strip(frame[HEADER.size:], recurse=message_type(frame) == RO_ACCESS_REPORT)
    return HEADER.pack(word, HEADER.size + len(body), msg_id) + body, removed


def _strip(body: bytes, recurse: bool) -> tuple[bytes, int]:
    out = bytearray()
    removed = 0
    pos = 0
    n = len(body)
    while pos < n:
        first = body[pos]
        if first & 0x80:  # TV: fixed size, never custom
            size = _TV_SIZES.get(first & 0x7F)
            if size is None or pos + 1 + size > n:
                raise WireError(f"unknown or truncated TV parameter {first & 0x7F} at byte {pos}")
            out += body[pos:pos + 1 + size]
            pos += 1 + size
            continue
        if pos + PARAM.size > n:
            raise WireError(f"parameter header truncated at byte {pos}")
        ptype, plen = PARAM.unpack_from(body, pos)
        ptype &= 0x3FF
        if plen < PARAM.size or pos + plen > n:
            raise WireError(f"parameter {ptype} at byte {pos} claims {plen} bytes")
        if ptype == CUSTOM:
            removed += 1
        elif recurse and ptype == P_TAG_REPORT_DATA:
            inner, k = _strip(body[pos + PARAM.size:pos + plen], recurse=False)
            removed += k
            out += PARAM.pack(body[pos] << 8 | body[pos + 1], PARAM.size + len(inner)) + inner
        else:
            out += body[pos:pos + plen]
        pos += plen
    return bytes(out), removed


# --------------------------------------------------------------------------------------------
# RO_ACCESS_REPORT tag data, without sllurp's per-parameter objects (~10 us a tag there).

P_EPC_DATA = 241
P_C1G2_READ_OP_SPEC_RESULT = 349
TV_ANTENNA_ID, TV_FIRST_UTC, TV_LAST_UTC, TV_PEAK_RSSI, TV_SEEN_COUNT, TV_EPC_96 = 1, 2, 4, 6, 8, 13

RawTag = tuple[str, int | None, int | None, int | None, int | None, str | None]
"""One tag as the wire gave it: (EPC hex upper-case, AntennaID, PeakRSSI, FirstSeen UTC
microseconds or else LastSeen UTC, TagSeenCount, TID hex of a successful C1G2Read or None)."""

Row = tuple[str, int, float | None, float, int, str | None]
"""A TagRead without its reader, as the reader host sends it: (epc, antenna, rssi_dbm,
seen_at, seen_count, tid)."""

_U16 = struct.Struct("!H")
_U64 = struct.Struct("!Q")
_S8 = struct.Struct("!b")
_READ_RESULT = struct.Struct("!BHH")  # Result, OpSpecID, ReadDataWordCount
_VENDOR_SUBTYPE = struct.Struct("!II")


class NotFast(ValueError):
    """A report the fast decoder does not take: sllurp decodes it as before."""


def _sllurp_custom_keys() -> frozenset[tuple[int, int]]:
    """Vendor parameters sllurp has a decoder for (Impinj's serialized TID, Motorola's...):
    a report carrying one goes to sllurp, so what it makes of them is unchanged."""
    try:
        from sllurp.llrp_proto import Param_Type2Name
    except ImportError:  # pragma: no cover - sllurp is a dependency
        return frozenset()
    return frozenset((v, s) for (t, v, s) in Param_Type2Name if t == CUSTOM)


_sllurp_custom: list[frozenset[tuple[int, int]]] = []
"""Filled on first use (the daemon imports this module without needing sllurp's tables)."""


def decode_report(frame: bytes) -> list[RawTag]:
    """The tags of an RO_ACCESS_REPORT frame, the same values sllurp's decoder would give.

    Raises NotFast (naming what and where) for anything outside the common layout: another
    top-level parameter, an unknown TV type, an OpSpecResult other than C1G2Read, a vendor
    parameter sllurp decodes, an empty EPC or a truncated field."""
    n = len(frame)
    if n < HEADER.size or frame[0] & 0x03 != RO_ACCESS_REPORT >> 8 \
            or frame[1] != RO_ACCESS_REPORT & 0xFF:
        raise NotFast("not an RO_ACCESS_REPORT")
    tags: list[RawTag] = []
    append = tags.append
    unpack_param = PARAM.unpack_from
    pos = HEADER.size
    while pos < n:
        if pos + 4 > n:
            raise NotFast(f"parameter header truncated at byte {pos}")
        ptype, plen = unpack_param(frame, pos)
        ptype &= 0x3FF
        end = pos + plen
        if plen < 4 or end > n:
            raise NotFast(f"parameter {ptype} at byte {pos} claims {plen} bytes")
        if ptype == P_TAG_REPORT_DATA:
            layout = _layouts.get(plen)
            if layout is not None:
                values = layout.struct.unpack_from(frame, pos + 4)
                if values[0::2] == layout.types:  # the same TV parameters as the last tag
                    values += (None,)
                    at = layout.fields
                    append((values[at[0]].hex().upper(), values[at[1]], values[at[2]],
                            values[at[3]], values[at[4]], None))
                    pos = end
                    continue
            append(_tag(frame, pos + 4, end))
            if layout is None:
                _learn(frame, pos, end)
        elif ptype == CUSTOM:
            _check_custom(frame, pos, plen)
        else:
            raise NotFast(f"top-level parameter {ptype} at byte {pos}")
        pos = end
    return tags


# TV value formats, to unpack a TagReportData made of TV parameters only in one call.
_TV_FORMATS = {1: "H", 2: "Q", 3: "Q", 4: "Q", 5: "Q", 6: "b", 7: "H", 8: "H", 9: "I", 10: "H",
               11: "H", 12: "H", 13: "12s", 14: "H", 15: "H", 16: "I", 17: "H", 18: "4s",
               19: "H", 20: "H"}


@dataclass(frozen=True)
class _Layout:
    """A TagReportData of TV parameters only (what readers send by default): one Struct for
    all of it, the type bytes it must have, and where EPC, antenna, RSSI, time and count are
    in its values (-1: absent, which indexes the None appended to them)."""

    struct: struct.Struct
    types: tuple[int, ...]
    fields: tuple[int, int, int, int, int]


_layouts: dict[int, _Layout] = {}
"""By TagReportData length: the layout last seen with that length (a reader sends one)."""
_MAX_LAYOUTS = 64


_NONE = _Layout(struct.Struct("!"), (-1,), (-1, -1, -1, -1, -1))
"""A length whose TagReportData has a TLV (EPCData, a TID): never matches, not re-learnt."""


def _learn(frame: bytes, start: int, end: int) -> None:
    """Remember the layout of this (decoded) TagReportData: one Struct if it is made of TV
    parameters only, else _NONE."""
    if len(_layouts) >= _MAX_LAYOUTS:
        _layouts.clear()
    _layouts[end - start] = _compile(frame, start + 4, end)


def _compile(frame: bytes, pos: int, end: int) -> _Layout:
    fmt = ["!"]
    types: list[int] = []
    where: dict[int, int] = {}
    while pos < end:
        b = frame[pos]
        tv = b & 0x7F
        if not b & 0x80 or tv not in _TV_FORMATS:
            return _NONE
        where[tv] = 2 * len(types) + 1  # a repeated field: the last one counts, as in sllurp
        types.append(b)
        fmt.append("B" + _TV_FORMATS[tv])
        pos += 1 + _TV_SIZES[tv]
    if pos != end or TV_EPC_96 not in where:
        return _NONE
    micros = where.get(TV_FIRST_UTC, where.get(TV_LAST_UTC, -1))
    fields = (where[TV_EPC_96], where.get(TV_ANTENNA_ID, -1), where.get(TV_PEAK_RSSI, -1),
              micros, where.get(TV_SEEN_COUNT, -1))
    return _Layout(struct.Struct("".join(fmt)), tuple(types), fields)


def _check_custom(frame: bytes, pos: int, plen: int) -> None:
    if plen < 12:
        raise NotFast(f"vendor parameter at byte {pos} is {plen} bytes")
    if not _sllurp_custom:
        _sllurp_custom.append(_sllurp_custom_keys())
    if _VENDOR_SUBTYPE.unpack_from(frame, pos + 4) in _sllurp_custom[0]:
        raise NotFast(f"vendor parameter sllurp decodes at byte {pos}")


def _tag(frame: bytes, pos: int, end: int) -> RawTag:
    epc96: bytes | None = None
    epc_data: bytes | None = None
    antenna = rssi = first = last = count = None
    tid: str | None = None
    while pos < end:
        first_byte = frame[pos]
        if first_byte & 0x80:
            tv = first_byte & 0x7F
            size = _TV_SIZES.get(tv)
            if size is None or pos + 1 + size > end:
                raise NotFast(f"unknown or truncated TV parameter {tv} at byte {pos}")
            if tv == TV_EPC_96:
                epc96 = frame[pos + 1:pos + 13]
            elif tv == TV_ANTENNA_ID:
                antenna = _U16.unpack_from(frame, pos + 1)[0]
            elif tv == TV_PEAK_RSSI:
                rssi = _S8.unpack_from(frame, pos + 1)[0]
            elif tv == TV_FIRST_UTC:
                first = _U64.unpack_from(frame, pos + 1)[0]
            elif tv == TV_LAST_UTC:
                last = _U64.unpack_from(frame, pos + 1)[0]
            elif tv == TV_SEEN_COUNT:
                count = _U16.unpack_from(frame, pos + 1)[0]
            pos += 1 + size  # the others (uptime, channel, ROSpecID, PC, CRC...): unused
            continue
        if pos + 4 > end:
            raise NotFast(f"parameter header truncated at byte {pos}")
        ptype, plen = PARAM.unpack_from(frame, pos)
        ptype &= 0x3FF
        if plen < 4 or pos + plen > end:
            raise NotFast(f"parameter {ptype} at byte {pos} claims {plen} bytes")
        if ptype == P_EPC_DATA:
            if plen < 6:
                raise NotFast(f"EPCData at byte {pos} without its bit count")
            epc_data = frame[pos + 6:pos + plen]
        elif ptype == P_C1G2_READ_OP_SPEC_RESULT:
            if plen < 9:
                raise NotFast(f"C1G2ReadOpSpecResult at byte {pos} truncated")
            result, _op, words = _READ_RESULT.unpack_from(frame, pos + 4)
            data = frame[pos + 9:min(pos + plen, pos + 9 + 2 * words)]
            tid = data.hex().upper() if result == 0 and data else None
        elif ptype == CUSTOM:
            _check_custom(frame, pos, plen)
        else:
            raise NotFast(f"TagReportData parameter {ptype} at byte {pos}")
        pos += plen
    epc = epc96 if epc96 is not None else epc_data
    if not epc:
        raise NotFast(f"TagReportData ending at byte {end} without an EPC")
    return (epc.hex().upper(), antenna, rssi, first if first is not None else last, count, tid)


def antenna_counts(frame: bytes, default_antenna: int) -> dict[int, int]:
    """How many tags each antenna has in an RO_ACCESS_REPORT, without decoding the rest: what
    a shed report is counted as (a tag without AntennaID counts as `default_antenna`)."""
    n = len(frame)
    counts: dict[int, int] = {}
    pos = HEADER.size
    unpack_param = PARAM.unpack_from
    while pos < n:
        if pos + 4 > n:
            raise NotFast(f"parameter header truncated at byte {pos}")
        ptype, plen = unpack_param(frame, pos)
        end = pos + plen
        if plen < 4 or end > n:
            raise NotFast(f"parameter {ptype & 0x3FF} at byte {pos} claims {plen} bytes")
        if ptype & 0x3FF == P_TAG_REPORT_DATA:
            antenna = default_antenna
            i = pos + 4
            while i < end:  # AntennaID is a TV, usually right after the EPC-96
                b = frame[i]
                if b & 0x80:
                    if b == 0x80 | TV_ANTENNA_ID and i + 3 <= end:
                        antenna = _U16.unpack_from(frame, i + 1)[0]
                        break
                    size = _TV_SIZES.get(b & 0x7F)
                    if size is None:
                        raise NotFast(f"unknown TV parameter {b & 0x7F} at byte {i}")
                    i += 1 + size
                else:
                    if i + 4 > end:
                        raise NotFast(f"parameter header truncated at byte {i}")
                    sub = _U16.unpack_from(frame, i + 2)[0]
                    if sub < 4:
                        raise NotFast(f"parameter at byte {i} claims {sub} bytes")
                    i += sub
            counts[antenna] = counts.get(antenna, 0) + 1
        pos = end
    return counts
