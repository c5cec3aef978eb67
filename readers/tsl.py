"""TSL ASCII 2.0: the line protocol of TSL (now Zebra) Bluetooth/serial handheld UHF readers.

A subset, from TSL's published "ASCII 2.0 Protocol" command reference (facts only, no code):
- A command is one line: a dot, two letters, options (`-r on`), CR LF: `.vr` version,
  `.iv` inventory. Inventory options used here: `-r on` (report each tag's RSSI), and the
  select options `-sb epc -sd HEX -so 0020 -sl BITS` (bank, data, bit offset past CRC and PC,
  length in bits, hex) that limit the round to one EPC, which is how "find this item" works.
- Every response is a block of `XX: value` lines: `CS: <the command>` first, then data lines
  (`EP:` an EPC, `RI:` its RSSI in dBm, `MF:`/`UF:`/`US:` identity lines of `.vr`), ended by
  `OK:` or `ER: nnn` (`ER: 005` is "no transponder found", an empty field, not an error).
- Pulling the handheld's trigger runs its trigger command (an inventory) on the device: the
  same block arrives unasked, so the driver parses whatever comes, polled or not.
Checked against this project's simulator (simulator/serial_sim.py), not a TSL device.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from readers.base import TagRead

NO_TRANSPONDER = "005"
_LINE = re.compile(rb"^([A-Z]{2}):\s?(.*)$")
_HEX = re.compile(r"^[0-9A-F]+$")


def version_command() -> bytes:
    return b".vr\r\n"


def inventory_command(find_epc: str | None = None) -> bytes:
    """`.iv -r on`, selecting one EPC when finding it (EPC bank, after CRC and PC)."""
    cmd = ".iv -r on"
    if find_epc is not None:
        cmd += f" -sb epc -sd {find_epc} -so 0020 -sl {len(find_epc) * 4:02X}"
    return cmd.encode("ascii") + b"\r\n"


@dataclass
class TslBlock:
    """One response block: the command it answers, tags (EPC, RSSI), fields, the outcome."""

    command: str = ""
    tags: list[tuple[str, float | None]] = field(default_factory=list)
    fields: dict[str, str] = field(default_factory=dict)
    ok: bool = False
    error: str | None = None

    @property
    def empty_field(self) -> bool:
        return self.error == NO_TRANSPONDER


class TslParser:
    """Bytes -> complete blocks. A malformed line is reported and skipped, never fatal."""

    def __init__(self, on_anomaly: Callable[[str, str], None], max_line: int = 512) -> None:
        self._on_anomaly = on_anomaly
        self._max_line = max_line
        self._buf = bytearray()
        self._block: TslBlock | None = None

    def feed(self, data: bytes) -> list[TslBlock]:
        self._buf += data
        out: list[TslBlock] = []
        while True:
            end = self._buf.find(b"\n")
            if end < 0:
                if len(self._buf) > self._max_line:
                    self._on_anomaly("bad_line", f"{len(self._buf)} bytes without a line end")
                    self._buf.clear()
                return out
            raw = bytes(self._buf[:end]).rstrip(b"\r")
            del self._buf[:end + 1]
            if raw:
                block = self._line(raw)
                if block is not None:
                    out.append(block)

    def _line(self, raw: bytes) -> TslBlock | None:
        m = _LINE.match(raw)
        if m is None:
            self._on_anomaly("bad_line", f"not a TSL response line: {raw[:60]!r}")
            return None
        head, value = m.group(1).decode(), m.group(2).decode("ascii", "replace").strip()
        if head == "CS":
            if self._block is not None:
                self._on_anomaly("bad_line", f"block for {self._block.command!r} never ended")
            self._block = TslBlock(command=value)
            return None
        block = self._block
        if block is None:
            self._on_anomaly("bad_line", f"{head}: line outside a response block")
            return None
        if head == "EP":
            epc = value.upper()
            if not epc or len(epc) % 4 or not _HEX.match(epc):
                self._on_anomaly("bad_epc", f"EP: {value[:40]!r} is not whole words of hex")
            else:
                block.tags.append((epc, None))
        elif head == "RI":
            try:
                rssi = float(value)
            except ValueError:
                self._on_anomaly("bad_line", f"RI: {value[:20]!r} is not a number")
            else:
                if block.tags and block.tags[-1][1] is None:
                    block.tags[-1] = (block.tags[-1][0], rssi)
        elif head in ("OK", "ER"):
            block.ok = head == "OK"
            block.error = value if head == "ER" else None
            self._block = None
            return block
        else:
            block.fields[head] = value
        return None


class Finder:
    """"Find this item": the EPC a handheld is looking for and the RSSI samples it got.

    Set from any thread (the API), read by the session thread; one reference swap each."""

    def __init__(self, keep: int = 200) -> None:
        self.epc: str | None = None
        self.samples: list[tuple[float, float | None]] = []  # (time, rssi dBm) of the target
        self._keep = keep

    def start(self, epc: str | None) -> None:
        self.samples = []
        self.epc = epc.upper() if epc else None

    def add(self, at: float, rssi: float | None) -> None:
        samples = [*self.samples, (at, rssi)]
        self.samples = samples[-self._keep:]


class SessionIO(Protocol):
    """What a TSL session needs of its serial reader (readers.serial.SerialReader)."""

    name: str
    device: str
    antennas: list[int]
    poll_interval_s: float
    finder: Finder

    def _read_chunk(self, port: Any) -> bytes: ...

    def _deliver(self, reads: list[TagRead]) -> None: ...

    def _anomaly(self, kind: str, detail: str) -> None: ...

    def _went_online(self, how: str, ready: Callable[[], None]) -> None: ...

    @property
    def _response_timeout_s(self) -> float: ...


def session(r: SessionIO, port: Any, stop: threading.Event, ready: Callable[[], None],
            clock: Callable[[], float], max_missed: int) -> None:
    """Ask `.vr`, then poll `.iv -r on` (or the find selection) every poll interval; deliver
    every tag block, asked for or pushed by the trigger. Raises TslTimeout when it goes mute."""
    parser = TslParser(r._anomaly)
    antenna = r.antennas[0]
    online = False
    in_flight = True
    missed = 0
    port.write(version_command())
    sent_at = next_poll = time.monotonic()
    target = r.finder.epc
    while not stop.is_set():
        now = time.monotonic()
        if r.finder.epc != target:  # find started or stopped: poll now
            target, next_poll = r.finder.epc, now
        if online and not in_flight and now >= next_poll:
            port.write(inventory_command(r.finder.epc))
            in_flight, sent_at = True, now
        elif in_flight and now - sent_at > r._response_timeout_s:
            missed += 1
            what = "inventory" if online else "version query"
            if missed >= max_missed:
                raise TslTimeout(f"no answer to {missed} {what} command(s) from {r.device}")
            r._anomaly("no_response", f"{what} unanswered; resending")
            port.write(inventory_command(r.finder.epc) if online else version_command())
            sent_at = now
        data = r._read_chunk(port)
        if not data:
            continue
        for block in parser.feed(data):
            asked = block.command.startswith(".vr") or block.command.startswith(".iv")
            if asked and in_flight:
                in_flight, missed = False, 0
                next_poll = max(sent_at + r.poll_interval_s, time.monotonic())
            if not online:
                if block.command.startswith(".vr"):
                    online, next_poll = True, time.monotonic()
                    r._went_online(f"TSL handheld {block.fields.get('MF', '?')} "
                                   f"{block.fields.get('UF', '')} on {r.device}", ready)
                continue
            if block.error is not None and not block.empty_field:
                r._anomaly("reader_error", f"{block.command}: ER: {block.error}")
            at = clock()
            reads = [TagRead(epc, r.name, antenna, rssi, at) for epc, rssi in block.tags]
            looking_for = r.finder.epc
            if looking_for is not None:
                for read in reads:
                    if read.epc == looking_for:
                        r.finder.add(at, read.rssi_dbm)
            r._deliver(reads)


class TslTimeout(Exception):
    """The handheld stopped answering (out of Bluetooth range, switched off)."""
