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
