"""Wire formats of desk and handheld UHF readers: one binary command protocol and ASCII lines.

Binary protocol: the "0xA0" serial protocol that many R2000-based UHF modules and the desk and
handheld readers built on them publicly document ("UHF RFID Reader Serial Interface Protocol",
versions 2.x-3.7, e.g. the copy at scribd.com/document/797847866; the command list is mirrored in
many open drivers). Kept here only as facts, no code was taken from those sources:

- Frame: ``Head(0xA0) Len Address Cmd Data... Check``. ``Len`` counts the bytes after itself
  (address, cmd, data and check), so a frame is ``Len + 2`` bytes and at most 257.
- ``Check`` is the two's complement of the 8-bit sum of every byte before it, so the sum of a whole
  frame is 0 mod 256. Published captures: ``a0 04 ff 89 01 d3`` (real-time inventory, repeat 1),
  ``a0 03 ff 72 ec`` (get firmware version).
- Real-time inventory (``cmd 0x89``, data ``Repeat``) answers one frame per tag sighting:
  ``FreqAnt(1) PC(2) EPC(n) RSSI(1)``; the low 2 bits of ``FreqAnt`` are the antenna (0-3), the
  high 6 bits the frequency channel; RSSI is ``dBm + 129`` (31..98 is -99..-31 dBm). Eight-port
  variants put antennas 5-8 in the high bit of the RSSI byte. The round ends with
  ``AntID(1) ReadRate(2) TotalRead(4)`` or, on failure, a single error-code byte.
- Set work antenna ``0x74`` (data: antenna 0-7) and get firmware version ``0x72`` answer with an
  error code (``0x10`` success) or ``Major Minor``.

The PC word's top five bits give the EPC length in 16-bit words; a tag record that disagrees is
rejected, which is what keeps a frame that passes the 8-bit checksum by chance out of the pipeline.

ASCII mode: readers that print one tag per line; a configurable regular expression with a named
group ``epc`` and optional ``rssi`` and ``antenna`` groups (config: SerialOptions.line_pattern).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

HEAD = 0xA0
MAX_FRAME = 257  # Len is one byte: Head + Len + 255
MIN_LEN = 3  # address, cmd, check

CMD_SET_WORK_ANTENNA = 0x74
CMD_GET_FIRMWARE_VERSION = 0x72
CMD_REAL_TIME_INVENTORY = 0x89
CMD_FAST_SWITCH_ANT_INVENTORY = 0x8A
CMD_CUSTOMIZED_SESSION_INVENTORY = 0x8B
INVENTORY_COMMANDS = frozenset(
    {CMD_REAL_TIME_INVENTORY, CMD_FAST_SWITCH_ANT_INVENTORY, CMD_CUSTOMIZED_SESSION_INVENTORY}
)
SUCCESS = 0x10
RSSI_OFFSET = 129

AnomalyFn = Callable[[str, str], None]


def _ignore(kind: str, detail: str) -> None:
    """Default anomaly callback for callers that only want the frames."""


def checksum(data: bytes | bytearray) -> int:
    """Two's complement of the byte sum: what the reader appends so a frame sums to 0."""
    return (-sum(data)) & 0xFF


def encode_frame(address: int, cmd: int, data: bytes = b"") -> bytes:
    if not 0 <= address <= 255 or not 0 <= cmd <= 255:
        raise ValueError(f"address {address} and cmd {cmd} must be bytes (0-255)")
    if len(data) > 252:
        raise ValueError(f"frame data of {len(data)} bytes exceeds the 252 a Len byte allows")
    body = bytes((HEAD, len(data) + 3, address, cmd)) + data
    return body + bytes((checksum(body),))


def inventory_command(address: int, repeat: int = 1) -> bytes:
    if not 1 <= repeat <= 255:
        raise ValueError(f"inventory repeat {repeat} is not 1-255")
    return encode_frame(address, CMD_REAL_TIME_INVENTORY, bytes((repeat,)))


def set_work_antenna_command(address: int, antenna: int) -> bytes:
    """`antenna` is 1-based as in the config; the wire carries 0-7."""
    if not 1 <= antenna <= 8:
        raise ValueError(f"antenna {antenna} is not 1-8")
    return encode_frame(address, CMD_SET_WORK_ANTENNA, bytes((antenna - 1,)))


def firmware_version_command(address: int) -> bytes:
    return encode_frame(address, CMD_GET_FIRMWARE_VERSION)


@dataclass(frozen=True, slots=True)
class Frame:
    address: int
    cmd: int
    data: bytes

    def encode(self) -> bytes:
        return encode_frame(self.address, self.cmd, self.data)


class FrameDecoder:
    """Incremental decoder: bytes split anywhere in, whole checksummed frames out.

    It never consumes more than one byte on a failure, so a corrupt length or a header byte inside
    garbage cannot swallow a valid frame that follows: scanning resumes at the next 0xA0.
    """

    def __init__(self, on_anomaly: AnomalyFn = _ignore) -> None:
        self._buf = bytearray()
        self._on_anomaly = on_anomaly
        self._skipped = 0
        self.frames = 0
        self.checksum_errors = 0
        self.garbage_bytes = 0

    @property
    def unreported(self) -> int:
        """Garbage bytes skipped but not yet reported (the run may go on in the next read)."""
        return self._skipped

    @property
    def pending(self) -> int:
        """Bytes held waiting for the rest of a frame."""
        return len(self._buf)

    def reset(self) -> None:
        """Forget buffered bytes (a new connection starts a new stream)."""
        self._buf.clear()
        self._skipped = 0

    def feed(self, data: bytes | bytearray) -> list[Frame]:
        self._buf += data
        return self._decode(final=False)

    def drain(self) -> list[Frame]:
        """The stream stalled or ended: drop the partial frame at the head, salvage the rest."""
        return self._decode(final=True)

    def _skip(self, n: int) -> None:
        del self._buf[:n]
        self._skipped += n
        self.garbage_bytes += n

    def _report_skipped(self) -> None:
        if self._skipped:
            self._on_anomaly("garbage", f"{self._skipped} byte(s) skipped before a frame header")
            self._skipped = 0

    def _decode(self, final: bool) -> list[Frame]:
        out: list[Frame] = []
        buf = self._buf
        while buf:
            start = buf.find(HEAD)
            if start < 0:
                self._skip(len(buf))
                break
            if start:
                self._skip(start)
            self._report_skipped()  # a header ends a run of garbage
            if len(buf) < 2:
                if final:
                    self._skip(1)
                    continue
                break
            length = buf[1]
            if length < MIN_LEN:
                self._skip(1)
                continue
            total = length + 2
            if len(buf) < total:
                if final:
                    self._skip(1)
                    continue
                break
            if sum(buf[:total]) & 0xFF:
                self.checksum_errors += 1
                self._report_skipped()
                self._on_anomaly(
                    "checksum",
                    f"frame cmd=0x{buf[3]:02X} len={length}: checksum 0x{buf[total - 1]:02X}, "
                    f"expected 0x{checksum(buf[: total - 1]):02X}; skipped",
                )
                # The header byte is the only byte known to belong to the bad frame.
                del buf[:1]
                continue
            self._report_skipped()
            out.append(Frame(buf[2], buf[3], bytes(buf[4 : total - 1])))
            self.frames += 1
            del buf[:total]
        if final:
            self._report_skipped()
        return out


# --- replies -----------------------------------------------------------------------------------


class RecordError(ValueError):
    """A checksummed frame whose content is not a valid record."""


@dataclass(frozen=True, slots=True)
class TagRecord:
    antenna: int  # 1-based
    epc: str  # upper-case hex, without PC
    pc: int
    rssi_dbm: float
    freq_channel: int


@dataclass(frozen=True, slots=True)
class RoundEnd:
    antenna: int  # 1-based
    read_rate: int  # tags/s as reported by the reader
    total_reads: int


@dataclass(frozen=True, slots=True)
class CommandStatus:
    cmd: int
    code: int

    @property
    def ok(self) -> bool:
        return self.code == SUCCESS


@dataclass(frozen=True, slots=True)
class FirmwareVersion:
    major: int
    minor: int


Reply = TagRecord | RoundEnd | CommandStatus | FirmwareVersion | Frame


def tag_record_data(
    antenna: int, epc: bytes, rssi_dbm: float, freq_channel: int = 0, pc: int | None = None
) -> bytes:
    """Data of one real-time inventory tag frame (for tests; the simulator has its own encoder)."""
    if not 1 <= antenna <= 8:
        raise ValueError(f"antenna {antenna} is not 1-8")
    raw = round(rssi_dbm) + RSSI_OFFSET
    if not 0 <= raw <= 127:
        raise ValueError(f"RSSI {rssi_dbm} dBm is outside -129..-2 dBm")
    if pc is None:
        pc = (len(epc) // 2) << 11
    ant = antenna - 1
    return (
        bytes(((freq_channel & 0x3F) << 2 | (ant & 3),))
        + pc.to_bytes(2, "big")
        + epc
        + bytes((raw | (0x80 if ant >= 4 else 0),))
    )


def parse_reply(frame: Frame) -> Reply:
    """Interpret a frame from the reader; unknown commands come back as the raw Frame."""
    data = frame.data
    if frame.cmd in INVENTORY_COMMANDS:
        if len(data) == 1:
            return CommandStatus(frame.cmd, data[0])
        if len(data) == 7:
            return RoundEnd(
                antenna=data[0] + 1,
                read_rate=int.from_bytes(data[1:3], "big"),
                total_reads=int.from_bytes(data[3:7], "big"),
            )
        if len(data) < 5:
            raise RecordError(f"inventory frame of {len(data)} data bytes is too short")
        freq_ant, pc, epc, rssi = data[0], int.from_bytes(data[1:3], "big"), data[3:-1], data[-1]
        words = pc >> 11
        if not epc or len(epc) != words * 2:
            raise RecordError(
                f"tag record: PC 0x{pc:04X} announces {words} EPC word(s) but "
                f"{len(epc)} byte(s) follow"
            )
        antenna = (freq_ant & 0x03) + (4 if rssi & 0x80 else 0) + 1
        return TagRecord(
            antenna=antenna,
            epc=epc.hex().upper(),
            pc=pc,
            rssi_dbm=float((rssi & 0x7F) - RSSI_OFFSET),
            freq_channel=freq_ant >> 2,
        )
    if frame.cmd == CMD_GET_FIRMWARE_VERSION and len(data) == 2:
        return FirmwareVersion(data[0], data[1])
    if len(data) == 1:
        return CommandStatus(frame.cmd, data[0])
    return frame


# --- ASCII lines -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LineRecord:
    epc: str
    rssi_dbm: float | None
    antenna: int | None


_EOL = re.compile(rb"[\r\n]")


class LineParser:
    """Splits a byte stream into lines and matches each against the configured pattern.

    A line that does not match, or whose EPC is not a whole number of 16-bit words, is reported
    as an anomaly and skipped; a line longer than `max_line` without a terminator is dropped.
    """

    def __init__(
        self, pattern: str, on_anomaly: AnomalyFn = _ignore, max_line: int = 1024
    ) -> None:
        try:
            self._rx = re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"line pattern {pattern!r}: invalid regex: {exc}") from exc
        if "epc" not in self._rx.groupindex:
            raise ValueError(f"line pattern {pattern!r} has no named group (?P<epc>...)")
        self._on_anomaly = on_anomaly
        self._max = max_line
        self._buf = bytearray()
        self._overlong = False
        self.lines = 0
        self.bad_lines = 0

    def reset(self) -> None:
        self._buf.clear()
        self._overlong = False

    def feed(self, data: bytes | bytearray) -> list[LineRecord]:
        out: list[LineRecord] = []
        self._buf += data
        while True:
            m = _EOL.search(self._buf)
            if m is None:
                break
            cut = m.start()
            raw = bytes(self._buf[:cut])
            del self._buf[: cut + 1]
            if self._overlong:
                self._overlong = False
                continue
            rec = self.parse_line(raw)
            if rec is not None:
                out.append(rec)
        if len(self._buf) > self._max:
            self.bad_lines += 1
            self._on_anomaly(
                "garbage_line", f"{len(self._buf)} bytes without a line end; dropped"
            )
            self._buf.clear()
            self._overlong = True
        return out

    def parse_line(self, raw: bytes) -> LineRecord | None:
        if not raw.strip():
            return None
        self.lines += 1
        text = raw.decode("ascii", errors="replace").strip()
        m = self._rx.match(text)
        problem = None
        if m is None:
            problem = "does not match the line pattern"
        else:
            epc = m.group("epc") or ""
            if not re.fullmatch(r"[0-9A-Fa-f]+", epc) or len(epc) % 4:
                problem = f"EPC {epc!r} is not whole 16-bit words of hex"
            groups = m.groupdict()
            rssi: float | None = None
            antenna: int | None = None
            try:
                if groups.get("rssi"):
                    rssi = float(groups["rssi"])
                if groups.get("antenna"):
                    antenna = int(groups["antenna"])
                    if not 1 <= antenna <= 65535:
                        problem = f"antenna {antenna} is not 1-65535"
            except ValueError as exc:
                problem = f"bad number: {exc}"
            if problem is None:
                return LineRecord(epc.upper(), rssi, antenna)
        self.bad_lines += 1
        shown = text if len(text) <= 80 else text[:77] + "..."
        self._on_anomaly("garbage_line", f"line {shown!r}: {problem}; skipped")
        return None
