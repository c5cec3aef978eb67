"""Framing of the 0xA0 serial protocol and ASCII line parsing (pure, no I/O)."""

from __future__ import annotations

import itertools
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from readers.serial import DEFAULT_LINE_PATTERN
from readers.serial_protocols import (
    CMD_REAL_TIME_INVENTORY,
    HEAD,
    CommandStatus,
    FirmwareVersion,
    Frame,
    FrameDecoder,
    LineParser,
    LineRecord,
    RecordError,
    RoundEnd,
    TagRecord,
    checksum,
    encode_frame,
    firmware_version_command,
    inventory_command,
    parse_reply,
    set_work_antenna_command,
    tag_record_data,
)

# Bytes captured from a real reader and published (hackmd.io/@5giotlead/ryPJYEvcp): host commands
# and the reader's answers to a real-time inventory, used as independent test vectors.
PUBLISHED_INVENTORY_CMD = bytes.fromhex("a004ff8901d3")
PUBLISHED_FIRMWARE_CMD = bytes.fromhex("a003ff72ec")
PUBLISHED_TAG_FRAME = bytes.fromhex(
    "a0 13 01 89 e8 30 00 00 00 00 00 00 70 02 21 10 42 40 67 48 d7"
)
PUBLISHED_ROUND_END = bytes.fromhex("a0 0a ff 89 00 00 20 00 00 00 01 ad")


class Anomalies:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def __call__(self, kind: str, detail: str) -> None:
        self.seen.append((kind, detail))

    def count(self, kind: str) -> int:
        return sum(1 for k, _ in self.seen if k == kind)


# --- encoding against published bytes ----------------------------------------------------------


def test_commands_match_published_captures() -> None:
    assert inventory_command(0xFF, repeat=1) == PUBLISHED_INVENTORY_CMD
    assert firmware_version_command(0xFF) == PUBLISHED_FIRMWARE_CMD
    assert set_work_antenna_command(0x01, 1) == encode_frame(0x01, 0x74, b"\x00")


def test_published_tag_frame_decodes() -> None:
    frames = FrameDecoder().feed(PUBLISHED_TAG_FRAME + PUBLISHED_ROUND_END)
    assert [f.cmd for f in frames] == [0x89, 0x89]
    tag = parse_reply(frames[0])
    assert tag == TagRecord(
        antenna=1, epc="000000000070022110424067", pc=0x3000, rssi_dbm=72 - 129.0,
        freq_channel=0xE8 >> 2,
    )
    end = parse_reply(frames[1])
    assert end == RoundEnd(antenna=1, read_rate=0x20, total_reads=1)


def test_checksum_makes_frame_sum_zero() -> None:
    for frame in (PUBLISHED_TAG_FRAME, PUBLISHED_ROUND_END, PUBLISHED_INVENTORY_CMD):
        assert sum(frame) & 0xFF == 0
        assert checksum(frame[:-1]) == frame[-1]


def test_encode_rejects_out_of_range() -> None:
    with pytest.raises(ValueError, match="252"):
        encode_frame(1, 0x89, bytes(253))
    with pytest.raises(ValueError, match="address"):
        encode_frame(256, 0x89)
    with pytest.raises(ValueError, match="repeat"):
        inventory_command(1, 0)
    with pytest.raises(ValueError, match="antenna 9"):
        set_work_antenna_command(1, 9)


# --- replies -----------------------------------------------------------------------------------


def test_antennas_five_to_eight_use_rssi_high_bit() -> None:
    data = tag_record_data(6, bytes.fromhex("300833B2DDD9014000000001"), -60.0)
    assert data[-1] & 0x80
    rec = parse_reply(Frame(1, CMD_REAL_TIME_INVENTORY, data))
    assert isinstance(rec, TagRecord)
    assert (rec.antenna, rec.rssi_dbm) == (6, -60.0)


def test_pc_length_disagreeing_with_frame_is_rejected() -> None:
    data = tag_record_data(1, bytes(12), -50.0, pc=0x2000)  # PC says 4 words, 6 follow
    with pytest.raises(RecordError, match="4 EPC word"):
        parse_reply(Frame(1, CMD_REAL_TIME_INVENTORY, data))
    with pytest.raises(RecordError, match="too short"):
        parse_reply(Frame(1, CMD_REAL_TIME_INVENTORY, b"\x00\x30"))


def test_status_and_firmware_replies() -> None:
    assert parse_reply(Frame(1, 0x89, b"\x11")) == CommandStatus(0x89, 0x11)
    assert not CommandStatus(0x89, 0x11).ok
    assert parse_reply(Frame(1, 0x74, b"\x10")) == CommandStatus(0x74, 0x10)
    assert parse_reply(Frame(1, 0x72, b"\x03\x07")) == FirmwareVersion(3, 7)
    other = Frame(1, 0x99, b"\x01\x02")
    assert parse_reply(other) is other


@given(
    antenna=st.integers(1, 8),
    words=st.integers(1, 31),
    rssi=st.integers(-99, -31),
    channel=st.integers(0, 63),
    data=st.data(),
)
def test_tag_record_roundtrip(antenna: int, words: int, rssi: int, channel: int,
                              data: st.DataObject) -> None:
    epc = data.draw(st.binary(min_size=words * 2, max_size=words * 2))
    rec = parse_reply(Frame(0xFF, 0x89, tag_record_data(antenna, epc, rssi, channel)))
    assert rec == TagRecord(antenna, epc.hex().upper(), words << 11, float(rssi), channel)


# --- stream decoding ---------------------------------------------------------------------------

epcs = st.integers(1, 8).flatmap(lambda w: st.binary(min_size=2 * w, max_size=2 * w))
tag_frames = st.builds(
    lambda a, e, r, c: encode_frame(0x01, 0x89, tag_record_data(a, e, r, c)),
    st.integers(1, 8), epcs, st.integers(-99, -31), st.integers(0, 63),
)
any_frames = st.one_of(
    tag_frames,
    st.builds(lambda c, d: encode_frame(0xFF, c, d), st.integers(0, 255), st.binary(max_size=40)),
)


def _splits(draw_data: st.DataObject, stream: bytes) -> list[bytes]:
    cuts = sorted(draw_data.draw(st.sets(st.integers(0, len(stream)), max_size=20)))
    bounds = [0, *cuts, len(stream)]
    return [stream[a:b] for a, b in itertools.pairwise(bounds)]


@given(frames=st.lists(any_frames, max_size=12), data=st.data())
def test_any_split_decodes_the_same_frames(frames: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(frames)
    whole = FrameDecoder().feed(stream)
    assert [f.encode() for f in whole] == frames
    dec = FrameDecoder()
    got: list[Frame] = []
    for chunk in _splits(data, stream):
        got += dec.feed(chunk)
    assert got == whole
    assert dec.pending == 0


@given(
    frames=st.lists(tag_frames, min_size=1, max_size=10),
    garbage=st.lists(st.binary(min_size=1, max_size=30).map(lambda b: b.replace(b"\xa0", b"")),
                     min_size=1, max_size=11),
    data=st.data(),
)
def test_headerless_garbage_is_skipped_and_counted(
    frames: list[bytes], garbage: list[bytes], data: st.DataObject
) -> None:
    stream = b""
    bursts = 0
    for i, frame in enumerate(frames):
        g = garbage[i % len(garbage)]
        bursts += bool(g)
        stream += g + frame
    anomalies = Anomalies()
    dec = FrameDecoder(anomalies)
    got: list[Frame] = []
    for chunk in _splits(data, stream):
        got += dec.feed(chunk)
    assert [f.encode() for f in got] == frames
    assert anomalies.count("garbage") == bursts
    assert dec.garbage_bytes == sum(len(garbage[i % len(garbage)]) for i in range(len(frames)))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    frames=st.lists(tag_frames, min_size=1, max_size=8),
    garbage=st.lists(
        st.lists(st.one_of(st.just(HEAD), st.integers(0, 255)), max_size=40).map(bytes),
        min_size=1, max_size=9,
    ),
    data=st.data(),
)
def test_garbage_with_false_headers_never_yields_a_bad_record(
    frames: list[bytes], garbage: list[bytes], data: st.DataObject
) -> None:
    stream = b"".join(garbage[i % len(garbage)] + f for i, f in enumerate(frames))
    stream += garbage[-1]
    dec = FrameDecoder()
    got: list[Frame] = []
    for chunk in _splits(data, stream):
        got += dec.feed(chunk)
    got += dec.drain()  # the stream went quiet: a false header waiting for bytes is garbage
    planted = {parse_reply(FrameDecoder().feed(f)[0]) for f in frames}
    records = []
    for frame in got:
        try:
            rec = parse_reply(frame)
        except RecordError:
            continue
        if isinstance(rec, TagRecord):
            records.append(rec)
    assert set(records) <= planted  # nothing invented
    if all(f.encode() in frames for f in got):
        # No chance frame passed the checksum, so nothing can have been swallowed.
        assert [f.encode() for f in got] == frames


def test_bad_checksum_counted_and_next_frame_kept() -> None:
    good = encode_frame(1, 0x89, tag_record_data(1, bytes(12), -50))
    bad = bytearray(good)
    bad[-1] ^= 0xFF
    anomalies = Anomalies()
    dec = FrameDecoder(anomalies)
    assert dec.feed(bytes(bad) + good) == [Frame(1, 0x89, good[4:-1])]
    assert anomalies.count("checksum") == 1
    assert dec.checksum_errors == 1
    assert "expected" in anomalies.seen[0][1]


def test_corrupt_length_does_not_swallow_following_frame() -> None:
    good = encode_frame(1, 0x89, tag_record_data(2, bytes(range(12)), -40))
    dec = FrameDecoder()
    # A header whose length claims 200 bytes, then a whole valid frame.
    assert dec.feed(bytes((HEAD, 200, 1, 0x89)) + good) == []
    assert dec.drain() == [Frame(1, 0x89, good[4:-1])]
    assert dec.pending == 0


def test_too_short_length_byte_is_skipped() -> None:
    good = encode_frame(1, 0x72, b"\x01\x02")
    assert FrameDecoder().feed(bytes((HEAD, 0x02)) + good) == [Frame(1, 0x72, b"\x01\x02")]


def test_reset_forgets_partial_frame() -> None:
    good = encode_frame(1, 0x72, b"\x01\x02")
    dec = FrameDecoder()
    assert dec.feed(good[:4]) == []
    dec.reset()
    assert dec.feed(good) == [Frame(1, 0x72, b"\x01\x02")]


# --- ASCII lines -------------------------------------------------------------------------------

EPC = "3034257BF400000000000001"


def test_default_pattern_fields() -> None:
    p = LineParser(DEFAULT_LINE_PATTERN)
    got = p.feed(f"{EPC},-55,2\r\n{EPC.lower()}\n{EPC};-61.5\r".encode())
    assert got == [
        LineRecord(EPC, -55.0, 2),
        LineRecord(EPC, None, None),
        LineRecord(EPC, -61.5, None),
    ]


def test_garbage_lines_counted_and_skipped() -> None:
    anomalies = Anomalies()
    p = LineParser(DEFAULT_LINE_PATTERN, anomalies)
    text = f"hello reader\n{EPC}\nZZZZ0000\n123\n30342\n{EPC[:-1]}\n\n\x00\xff\xfe\n"
    got = p.feed(text.encode("latin-1"))
    assert got == [LineRecord(EPC, None, None)]
    assert anomalies.count("garbage_line") == 6
    assert p.bad_lines == 6


def test_overlong_line_dropped_until_next_line_end() -> None:
    anomalies = Anomalies()
    p = LineParser(DEFAULT_LINE_PATTERN, anomalies, max_line=64)
    assert p.feed(b"A" * 100) == []
    assert p.feed(b"BBBB" + b"\n" + EPC.encode() + b"\n") == [LineRecord(EPC, None, None)]
    assert anomalies.count("garbage_line") == 1


def test_custom_pattern() -> None:
    p = LineParser(r"^TAG=(?P<epc>[0-9A-F]+) ANT=(?P<antenna>\d) RSSI=(?P<rssi>-?\d+)$")
    assert p.feed(f"TAG={EPC} ANT=3 RSSI=-70\n".encode()) == [LineRecord(EPC, -70.0, 3)]


def test_bad_patterns_rejected_with_reason() -> None:
    with pytest.raises(ValueError, match="invalid regex"):
        LineParser("(")
    with pytest.raises(ValueError, match="named group"):
        LineParser(r"^[0-9A-F]+$")


@given(
    recs=st.lists(
        st.tuples(
            st.integers(2, 15).flatmap(lambda w: st.binary(min_size=2 * w, max_size=2 * w)),
            st.one_of(st.none(), st.integers(-99, -20)),
            st.integers(1, 4),
        ),
        max_size=15,
    ),
    eol=st.sampled_from(["\n", "\r\n", "\r"]),
    data=st.data(),
)
def test_lines_split_anywhere_parse_the_same(
    recs: list[tuple[bytes, int | None, int]], eol: str, data: st.DataObject
) -> None:
    lines = []
    expected = []
    for epc, rssi, ant in recs:
        if rssi is None:
            lines.append(epc.hex())
            expected.append(LineRecord(epc.hex().upper(), None, None))
        else:
            lines.append(f"{epc.hex()},{rssi},{ant}")
            expected.append(LineRecord(epc.hex().upper(), float(rssi), ant))
    stream = "".join(line + eol for line in lines).encode()
    p = LineParser(DEFAULT_LINE_PATTERN)
    got: list[LineRecord] = []
    for chunk in _splits(data, stream):
        got += p.feed(chunk)
    assert got == expected


def test_default_pattern_matches_config_default() -> None:
    from rfidd.config import SerialOptions

    assert SerialOptions.model_validate({}).line_pattern == DEFAULT_LINE_PATTERN
    assert re.compile(DEFAULT_LINE_PATTERN).groupindex.keys() >= {"epc", "rssi", "antenna"}
