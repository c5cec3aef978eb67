"""A simulated desk or handheld UHF reader on a pseudo-terminal.

The reader's side of the "0xA0" serial protocol (see readers/serial_protocols.py for the public
documentation it follows) or an ASCII reader printing one tag per line. It has its own frame
encoder and command parser on purpose: sharing the driver's code would let a framing mistake
agree with itself.

The driver opens a symlink (`path`) that points at the pty slave. Unplugging closes the pty (the
driver's reads fail with EIO) and removes the link (opening fails); replugging creates a new pty
and points the link at it, which is what a USB device node does when it vanishes and returns.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import random
import select
import shutil
import signal
import sys
import tempfile
import threading
import time
import tty
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Literal

from simulator import tsl_sim

log = logging.getLogger(__name__)

HEAD = 0xA0
CMD_GET_FIRMWARE_VERSION = 0x72
CMD_SET_WORK_ANTENNA = 0x74
CMD_REAL_TIME_INVENTORY = 0x89
OK = 0x10
FAIL = 0x11


@dataclass
class SimTag:
    """A tag in the field of one antenna, with its mean RSSI and per-round read probability."""

    epc: str
    antenna: int = 1
    rssi_dbm: float = -55.0
    read_probability: float = 1.0

    def __post_init__(self) -> None:
        self.epc = self.epc.upper()
        if len(self.epc) % 4 or not all(c in "0123456789ABCDEF" for c in self.epc):
            raise ValueError(f"simulated tag {self.epc!r}: EPC must be whole 16-bit words of hex")
        if not 1 <= self.antenna <= 8:
            raise ValueError(f"simulated tag {self.epc}: antenna {self.antenna} is not 1-8")


@dataclass
class SimStats:
    commands: int = 0
    bad_commands: int = 0
    rounds: int = 0
    tag_frames: int = 0  # good tag records sent
    lines: int = 0
    garbage_bytes: int = 0
    bad_checksums: int = 0
    dropped_bytes: int = 0  # output the pty could not take (nobody reading)
    plugs: int = 0
    source_errors: int = 0  # the live tag source raised; that round saw no tag


def _frame(address: int, cmd: int, data: bytes) -> bytes:
    body = bytes((HEAD, len(data) + 3, address, cmd)) + data
    return body + bytes(((0x100 - (sum(body) & 0xFF)) & 0xFF,))


TagSource = Callable[[], Sequence[SimTag]]
"""The tags in front of the reader right now (a scenario's World); called once per round."""


class SerialReaderSim:
    """`SerialReaderSim(tags).start()` -> device path; `.unplug()`, `.replug()`, `.stop()`.

    `tags` is a fixed list (change it with `set_tags`) or a callable returning the current field,
    so a scenario's timeline shows up on the serial line as it does on LLRP readers.
    """

    def __init__(
        self,
        tags: Iterable[SimTag | str] | TagSource = (),
        protocol: Literal["binary", "ascii", "tsl"] = "binary",
        *,
        address: int = 0xFF,
        link_path: str | None = None,
        link_name: str = "ttyRFID0",
        firmware: tuple[int, int] = (3, 7),
        rssi_jitter_db: float = 0.0,
        seed: int | None = None,
        line_format: str = "{epc},{rssi:.0f},{antenna}",
        line_end: str = "\r\n",
        ascii_interval_s: float = 0.1,
        ascii_auto: bool = True,
        split_frames: bool = False,
        garbage_every: int = 0,
        bad_checksum_every: int = 0,
        pace_baud: int | None = None,
        silent: bool = False,
    ) -> None:
        if protocol not in ("binary", "ascii", "tsl"):
            raise ValueError(f"protocol {protocol!r} is not 'binary', 'ascii' or 'tsl'")
        self.protocol = protocol
        self.address = address
        self.firmware = firmware
        self.rssi_jitter_db = rssi_jitter_db
        self.line_format = line_format
        self.line_end = line_end
        self.ascii_interval_s = ascii_interval_s
        self.ascii_auto = ascii_auto
        self.split_frames = split_frames
        self.garbage_every = garbage_every
        self.bad_checksum_every = bad_checksum_every
        self.pace_baud = pace_baud
        self.silent = silent  # a hung module: the port stays up, nothing answers
        self.stats = SimStats()
        self._rng = random.Random(seed)
        self._source: TagSource | None = None
        self._tags: list[SimTag] = []
        if callable(tags):
            self._source = tags
        else:
            self._tags = [t if isinstance(t, SimTag) else SimTag(t) for t in tags]
        self._tags_lock = threading.Lock()
        self._held = False
        self._closed = False
        self._timers: dict[str, threading.Timer] = {}
        self._timers_lock = threading.Lock()
        if not link_name or "/" in link_name or link_name in (".", ".."):
            raise ValueError(f"serial simulator: link name {link_name!r} is not a file name")
        self._link_path = link_path
        self._link_name = link_name
        self._tmpdir: str | None = None
        self._master = -1
        self._slave = -1
        self._slave_name = ""
        self._thread: threading.Thread | None = None
        self._running = threading.Event()
        self._outq: deque[bytes] = deque()
        self._outq_lock = threading.Lock()
        self._corrupt_next = 0
        self._work_antenna = 0
        self._frames_since_garbage = 0
        self._frames_since_bad = 0
        self._plug_lock = threading.Lock()

    # --- lifecycle ---------------------------------------------------------------------------

    @property
    def path(self) -> str:
        """The device path a driver opens (a symlink to the current pty)."""
        if self._link_path is None:
            raise RuntimeError("simulator not started")
        return self._link_path

    @property
    def link_path(self) -> str | None:
        """The device path, or None before `start()` picks a temporary one."""
        return self._link_path

    @property
    def slave_path(self) -> str:
        return self._slave_name

    @property
    def plugged(self) -> bool:
        return self._master >= 0

    def start(self) -> str:
        if self._link_path is None:
            self._tmpdir = tempfile.mkdtemp(prefix="rfidd-serial-")
            self._link_path = os.path.join(self._tmpdir, self._link_name)
        elif os.path.lexists(self._link_path) and not os.path.islink(self._link_path):
            # Only ever replace our own kind of node: a symlink, never a real file or device.
            raise FileExistsError(f"serial simulator: {self._link_path} exists and is not a "
                                  "symlink; refusing to replace it")
        self._closed = False
        self.replug()
        return self.path

    def stop(self) -> None:
        self._closed = True
        self._cancel_timers()
        self.unplug()
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def __enter__(self) -> SerialReaderSim:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def unplug(self, duration_s: float | None = None) -> None:
        """The cable is pulled: the pty closes under the driver and the device node disappears.

        With `duration_s`, it is plugged back that many seconds later (a module power-cycling)."""
        self._cancel_timer("plug")
        self._unplug()
        if duration_s is not None:
            self._schedule("plug", duration_s, self._timed_replug)

    def _timed_replug(self) -> None:
        try:
            self._replug(unless_stopped=True)
        except OSError as exc:  # e.g. the link's directory went away meanwhile
            log.error("serial simulator %s: cannot plug back in: %s", self._link_path, exc)

    def _unplug(self) -> None:
        with self._plug_lock:
            self._running.clear()
            if self._thread is not None:
                self._thread.join(5.0)
                self._thread = None
            for fd in (self._master, self._slave):
                if fd >= 0:
                    with contextlib.suppress(OSError):
                        os.close(fd)
            self._master = self._slave = -1
            if self._link_path is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._link_path)
            with self._outq_lock:
                self._outq.clear()

    def replug(self) -> None:
        """The cable is plugged back: a new pty appears behind the same device path."""
        self._cancel_timer("plug")
        self._replug()

    def _replug(self, unless_stopped: bool = False) -> None:
        with self._plug_lock:
            if self._master >= 0 or (unless_stopped and self._closed):
                return
            master, slave = os.openpty()
            try:
                tty.setraw(slave)  # no echo or line editing before the driver sets the port up
                os.set_blocking(master, False)
                slave_name = os.ttyname(slave)
                link = self.path
                tmp = f"{link}.{os.getpid()}.tmp"
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                os.symlink(slave_name, tmp)
                os.replace(tmp, link)
            except BaseException:
                os.close(master)
                os.close(slave)
                raise
            self._master, self._slave = master, slave
            self._slave_name = slave_name
            self._work_antenna = 0
            self.stats.plugs += 1
            self._running.set()
            self._thread = threading.Thread(target=self._loop, name="serial-sim", daemon=True)
            self._thread.start()

    # --- controls ----------------------------------------------------------------------------

    def set_tags(self, tags: Iterable[SimTag | str]) -> None:
        """A fixed field from now on (replaces a live tag source too)."""
        fixed = [t if isinstance(t, SimTag) else SimTag(t) for t in tags]
        with self._tags_lock:
            self._tags = fixed
            self._source = None

    def set_source(self, source: TagSource) -> None:
        """A live field from now on: `source()` is asked for the tags at every round."""
        with self._tags_lock:
            self._source = source

    @property
    def tags(self) -> list[SimTag]:
        with self._tags_lock:
            source, fixed = self._source, self._tags
        return list(source()) if source is not None else list(fixed)

    def hold(self, held: bool = True) -> None:
        """Pause (or resume) reading: rounds still run and answer, with no tag in them."""
        self._held = held

    def go_silent(self, duration_s: float | None = None) -> None:
        """Hang: the port stays up and nothing answers or prints, for `duration_s` seconds
        (None: until `silent` is set back to False)."""
        self._cancel_timer("silent")
        self.silent = True
        if duration_s is not None:
            self._schedule("silent", duration_s, self._wake_up)

    def _wake_up(self) -> None:
        self.silent = False

    def _schedule(self, key: str, delay_s: float, fn: Callable[[], None]) -> None:
        timer = threading.Timer(max(0.0, delay_s), fn)
        timer.daemon = True
        timer.name = f"serial-sim-{key}"
        with self._timers_lock:
            old = self._timers.pop(key, None)
            self._timers[key] = timer
        if old is not None:
            old.cancel()
        timer.start()

    def _cancel_timer(self, key: str) -> None:
        with self._timers_lock:
            timer = self._timers.pop(key, None)
        if timer is not None and timer is not threading.current_thread():
            timer.cancel()

    def _cancel_timers(self) -> None:
        with self._timers_lock:
            timers = list(self._timers.values())
            self._timers.clear()
        for timer in timers:
            if timer is not threading.current_thread():
                timer.cancel()

    def inject_garbage(self, data: bytes | None = None) -> None:
        """Noise on the line (default: random bytes, some of them frame headers)."""
        self._send(data if data is not None else self._garbage())

    def corrupt_next(self, n: int = 1) -> None:
        """Send the next `n` tag frames with a wrong checksum."""
        self._corrupt_next += n

    def write_line(self, text: str) -> None:
        """ASCII mode: print one raw line (any text, e.g. a garbage line)."""
        self._send((text + self.line_end).encode("ascii", errors="replace"))
        self.stats.lines += 1

    def write_lines(self, lines: Sequence[str]) -> None:
        data = "".join(line + self.line_end for line in lines).encode("ascii", errors="replace")
        self._send(data)
        self.stats.lines += len(lines)

    def pull_trigger(self) -> None:
        """TSL handheld: the user pulls the trigger; an inventory block arrives unasked."""
        self._send(tsl_sim.answer(".iv -r on", lambda: self._round(None), self._rssi).encode())

    def emit_round(self) -> int:
        """ASCII mode: print every tag read this round; returns how many."""
        lines = [self._format_line(t) for t in self._round(None)]
        if lines:
            self.write_lines(lines)
        return len(lines)

    # --- internals ---------------------------------------------------------------------------

    def _garbage(self) -> bytes:
        n = self._rng.randint(1, 24)
        raw = bytearray(self._rng.getrandbits(8) for _ in range(n))
        if self._rng.random() < 0.5:
            raw[self._rng.randrange(n)] = HEAD  # a false frame start
        return bytes(raw)

    def _send(self, data: bytes) -> None:
        with self._outq_lock:
            self._outq.append(data)

    def _round(self, antenna: int | None) -> list[SimTag]:
        if self._held:
            return []
        with self._tags_lock:
            source, fixed = self._source, self._tags
        if source is None:
            tags: Sequence[SimTag] = fixed
        else:
            try:
                tags = source()
            except Exception:  # a broken source must not kill the reader's thread
                self.stats.source_errors += 1
                log.exception("serial simulator: the tag source failed; empty round")
                tags = ()
        return [
            t
            for t in tags
            if (antenna is None or t.antenna == antenna)
            and (t.read_probability >= 1.0 or self._rng.random() < t.read_probability)
        ]

    def _rssi(self, tag: SimTag) -> float:
        if self.rssi_jitter_db:
            return tag.rssi_dbm + self._rng.gauss(0.0, self.rssi_jitter_db)
        return tag.rssi_dbm

    def _format_line(self, tag: SimTag) -> str:
        return self.line_format.format(epc=tag.epc, rssi=self._rssi(tag), antenna=tag.antenna)

    def _tag_frame(self, tag: SimTag, channel: int) -> bytes:
        epc = bytes.fromhex(tag.epc)
        pc = (len(epc) // 2) << 11
        ant = tag.antenna - 1
        raw_rssi = max(0, min(127, round(self._rssi(tag)) + 129))
        if ant >= 4:
            raw_rssi |= 0x80
        data = bytes(((channel & 0x3F) << 2 | (ant & 3),)) + pc.to_bytes(2, "big") + epc
        frame = bytearray(_frame(self.address, CMD_REAL_TIME_INVENTORY, data + bytes((raw_rssi,))))
        self._frames_since_bad += 1
        if self._corrupt_next > 0 or (
            self.bad_checksum_every and self._frames_since_bad >= self.bad_checksum_every
        ):
            self._corrupt_next = max(0, self._corrupt_next - 1)
            self._frames_since_bad = 0
            frame[-1] ^= 0x5A
            self.stats.bad_checksums += 1
        else:
            self.stats.tag_frames += 1
        out = bytes(frame)
        self._frames_since_garbage += 1
        if self.garbage_every and self._frames_since_garbage >= self.garbage_every:
            self._frames_since_garbage = 0
            out += self._garbage()
        return out

    def _inventory(self, repeat: int) -> bytes:
        out = bytearray()
        total = 0
        t0 = time.monotonic()
        for _ in range(max(1, repeat)):
            for tag in self._round(self._work_antenna + 1):
                out += self._tag_frame(tag, self._rng.randrange(50))
                total += 1
        elapsed = max(time.monotonic() - t0, 1e-3)
        rate = min(0xFFFF, int(total / elapsed))
        summary = bytes((self._work_antenna,)) + rate.to_bytes(2, "big") + total.to_bytes(4, "big")
        out += _frame(self.address, CMD_REAL_TIME_INVENTORY, summary)
        self.stats.rounds += 1
        return bytes(out)

    def _answer(self, address: int, cmd: int, data: bytes) -> bytes:
        if address not in (self.address, 0xFF) or self.silent:
            return b""  # another module on the bus, or a hung one
        self.stats.commands += 1
        if cmd == CMD_REAL_TIME_INVENTORY:
            return self._inventory(data[0] if data else 1)
        if cmd == CMD_SET_WORK_ANTENNA:
            if len(data) == 1 and data[0] < 8:
                self._work_antenna = data[0]
                return _frame(self.address, cmd, bytes((OK,)))
            return _frame(self.address, cmd, bytes((FAIL,)))
        if cmd == CMD_GET_FIRMWARE_VERSION:
            return _frame(self.address, cmd, bytes(self.firmware))
        return _frame(self.address, cmd, bytes((FAIL,)))

    def _commands(self, buf: bytearray) -> bytes:
        """Parse host commands out of `buf` (consumed in place) and build the replies."""
        out = bytearray()
        while buf:
            start = buf.find(HEAD)
            if start < 0:
                buf.clear()
                break
            del buf[:start]
            if len(buf) < 2 or len(buf) < buf[1] + 2:
                break
            total = buf[1] + 2
            if buf[1] < 3 or sum(buf[:total]) & 0xFF:
                self.stats.bad_commands += 1
                del buf[:1]
                continue
            out += self._answer(buf[2], buf[3], bytes(buf[4 : total - 1]))
            del buf[:total]
        return bytes(out)

    def _loop(self) -> None:
        master = self._master
        inbuf = bytearray()
        next_emit = time.monotonic()
        while self._running.is_set():
            wait = 0.02
            if self.protocol == "ascii" and self.ascii_auto:
                wait = min(wait, max(0.0, next_emit - time.monotonic()))
            try:
                ready, _, _ = select.select([master], [], [], wait)
            except (OSError, ValueError):
                return
            if ready:
                try:
                    data = os.read(master, 4096)
                except BlockingIOError:
                    data = b""
                except OSError:  # EIO: no slave open at the moment
                    data = b""
                    time.sleep(0.01)
                if data and self.protocol == "binary":
                    inbuf += data
                    reply = self._commands(inbuf)
                    if reply:
                        self._send(reply)
                elif data and self.protocol == "tsl":
                    inbuf += data
                    while b"\n" in inbuf and not self.silent:
                        end = inbuf.index(b"\n")
                        line = inbuf[:end].decode("ascii", "replace")
                        del inbuf[:end + 1]
                        if line.strip():
                            self.stats.commands += 1
                            self._send(tsl_sim.answer(line, lambda: self._round(None),
                                                      self._rssi).encode())
            if self.protocol == "ascii" and self.ascii_auto and time.monotonic() >= next_emit:
                next_emit = time.monotonic() + self.ascii_interval_s
                if not self.silent:  # a hung ASCII reader stops printing
                    self.emit_round()
            self._flush(master)

    def _flush(self, master: int) -> None:
        while True:
            with self._outq_lock:
                if not self._outq:
                    return
                data = self._outq.popleft()
            if self.split_frames and len(data) > 1:
                cuts = sorted(self._rng.sample(range(1, len(data)), min(3, len(data) - 1)))
                parts = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
                for part in parts:
                    self._write(master, part)
                    time.sleep(0.001)
            else:
                self._write(master, data)

    def _write(self, master: int, data: bytes) -> None:
        view = memoryview(data)
        deadline = time.monotonic() + 0.5
        while view:
            try:
                n = os.write(master, view)
                view = view[n:]
            except BlockingIOError:
                if time.monotonic() > deadline or not self._running.is_set():
                    break
                with contextlib.suppress(OSError, ValueError):
                    select.select([], [master], [], 0.02)
            except OSError:
                break
        if view:
            self.stats.dropped_bytes += len(view)
        if self.pace_baud:
            time.sleep(len(data) * 10 / self.pace_baud)


def sgtin_like_epcs(n: int, prefix: str = "3034257BF4") -> list[str]:
    """`n` distinct 96-bit EPCs for demos and tests (a fixed header and a running serial)."""
    width = 24 - len(prefix)
    return [f"{prefix}{i:0{width}X}" for i in range(n)]


def scenario_tags(path: str, zone: str, antenna: int = 1) -> tuple[list[SimTag], float]:
    """The initial items of `zone` in a scenario file, with the zone's read probability and mean
    RSSI; also returns the zone's RSSI standard deviation (the simulator's jitter)."""
    from simulator.scenario import Scenario

    scenario = Scenario.load(path)
    zones = scenario.zones
    if zone not in zones:
        raise ValueError(f"{path}: no zone {zone!r} (zones: {', '.join(sorted(zones))})")
    spec = zones[zone]
    tags = [
        SimTag(item.epc_hex, antenna, spec.rssi_mean_dbm, spec.read_probability)
        for item in scenario.items()
        if item.zone == zone
    ]
    return tags, spec.rssi_stddev_dbm


def main(argv: Sequence[str] | None = None) -> int:
    """`rfidd-sim serial` (or `python -m simulator.serial_sim`): a reader on a pty until stopped.

    Prints "<device path> <n> tags <protocol>" once the device exists, then serves until
    SIGINT/SIGTERM. With `--scenario F --reader NAME` it runs that [serial_readers.NAME] of the
    scenario (its protocol, antenna and faults) on the live zone, with the scenario's timeline.
    """
    ap = argparse.ArgumentParser(
        prog="rfidd-sim serial", description="A desk/handheld UHF reader on a pseudo-terminal."
    )
    ap.add_argument("--protocol", choices=["binary", "ascii", "tsl"], default="binary")
    ap.add_argument("--scenario", default=None, help="scenario TOML; tags = the items of --zone")
    ap.add_argument("--zone", default=None, help="zone of the scenario in front of the reader")
    ap.add_argument("--reader", default=None,
                    help="a [serial_readers.NAME] of --scenario, run with its timeline")
    ap.add_argument("--time-scale", type=float, default=1.0,
                    help="--reader: run the timeline this many times faster")
    ap.add_argument("--tags", type=int, default=20, help="without a scenario: synthetic tags")
    ap.add_argument("--antenna", type=int, default=1, help="antenna the tags are seen on (1-8)")
    ap.add_argument("--rssi", type=float, default=-55.0, help="without a scenario: RSSI dBm")
    ap.add_argument("--address", type=int, default=0xFF, help="module address (binary)")
    ap.add_argument("--link", default=None, help="device path to create (a symlink)")
    ap.add_argument("--interval", type=float, default=0.2, help="ascii: seconds between rounds")
    ap.add_argument("--split-frames", action="store_true", help="fault: replies in pieces")
    ap.add_argument("--garbage-every", type=int, default=0, help="fault: noise every N frames")
    ap.add_argument("--bad-checksum-every", type=int, default=0,
                    help="fault: wrong checksum on every Nth tag frame")
    args = ap.parse_args(argv)
    from simulator.scenario import ScenarioError

    if args.reader is not None:
        if args.scenario is None or args.zone is not None:
            ap.error("--reader needs --scenario and takes its zone from the scenario, not --zone")
        link = os.path.abspath(args.link) if args.link else None
        return _serve_scenario_reader(args.scenario, args.reader, link, args.time_scale)
    jitter = 2.0
    try:
        if args.scenario is not None:
            if args.zone is None:
                ap.error("--scenario needs --zone (the zone in front of the reader)")
            tags, jitter = scenario_tags(args.scenario, args.zone, args.antenna)
        else:
            tags = [SimTag(e, args.antenna, args.rssi) for e in sgtin_like_epcs(args.tags)]
        sim = SerialReaderSim(
            tags, args.protocol, address=args.address, link_path=args.link,
            rssi_jitter_db=jitter, ascii_interval_s=args.interval,
            split_frames=args.split_frames, garbage_every=args.garbage_every,
            bad_checksum_every=args.bad_checksum_every,
        )
        path = sim.start()
    except (ScenarioError, ValueError, OSError) as exc:
        print(f"rfidd-sim serial: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    print(f"{path} {len(tags)} tags {args.protocol}", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        sim.stop()
    return 0


def _serve_scenario_reader(scenario_path: str, name: str, link: str | None,
                           time_scale: float) -> int:
    from simulator.llrp.site import SimulatedSite
    from simulator.scenario import Scenario, ScenarioError

    try:
        scenario = Scenario.load(scenario_path)
        specs = scenario.serial_readers
        if name not in specs:
            raise ValueError(f"{scenario_path}: no serial reader {name!r} (serial readers: "
                             f"{', '.join(sorted(specs)) or 'none'})")
        site = SimulatedSite(scenario, only=[name], time_scale=time_scale,
                             serial_links={name: link} if link else None)
        site.start()
    except (ScenarioError, ValueError, OSError) as exc:
        notes = " ".join(getattr(exc, "__notes__", []))
        print(f"rfidd-sim serial: {exc}{' (' + notes + ')' if notes else ''}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    spec = specs[name]
    print(f"{site.serial_paths[name]} {site.world.count(spec.zone)} tags {spec.protocol}",
          flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        site.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
