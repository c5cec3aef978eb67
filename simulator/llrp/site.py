"""A whole simulated site in-process: every reader of a scenario plus its timeline.

    with SimulatedSite(Scenario.load(path), host="127.0.0.1") as site:
        site.ports         # LLRP readers: {"stockroom-1": 40231, ...}
        site.serial_paths  # serial readers on ptys: {"pos-desk": "/tmp/rfidd-serial-x/pos-desk"}

Both kinds read the same World, so a timeline move shows up on whichever reader covers the zone.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from simulator.llrp.reader import IDENTITIES, FieldTag, ReaderQuirks, SimulatedReader
from simulator.scenario import FAULTS, SERIAL_FAULTS, Action, Scenario, ScenarioItem, World
from simulator.serial_sim import SerialReaderSim, SimTag, TagSource

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AppliedAction:
    """What the timeline did, for demos and tests to check the daemon's conclusions against."""

    at_s: float
    action: Action
    items: tuple[ScenarioItem, ...]


DEFAULT_FAULT_S = 5.0
"""Scenario seconds a reboot, an occupied reader or a hung serial reader lasts by default."""


def zone_tag_source(world: World, zone: str, antenna: int = 1) -> TagSource:
    """The live tags of `zone` as a serial reader sees them on `antenna`.

    Converts the World's per-zone snapshot only when the World replaced it (snapshots are
    immutable and rebuilt on change), so a round costs nothing while the zone stays the same.
    """
    cache: list[tuple[tuple[FieldTag, ...], tuple[SimTag, ...]]] = []

    def tags() -> Sequence[SimTag]:
        snap = world.tags_in(zone)
        if cache and cache[0][0] is snap:
            return cache[0][1]
        converted = tuple(SimTag(t.epc.hex(), antenna, t.rssi_mean_dbm, t.read_probability)
                          for t in snap)
        cache[:] = [(snap, converted)]
        return converted

    return tags


class SimulatedSite:
    """Starts one SimulatedReader per scenario LLRP reader (port 0: ephemeral, or base_port + i)
    and one SerialReaderSim per scenario serial reader (on a pty, behind a symlink)."""

    def __init__(
        self,
        scenario: Scenario,
        *,
        host: str = "127.0.0.1",
        base_port: int = 0,
        run_timeline: bool = True,
        time_scale: float = 1.0,
        reads_per_s: float | None = None,
        only: Sequence[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        serial_links: Mapping[str, str] | None = None,
        quirks: Sequence[str] | None = None,
        identity: str | None = None,
    ) -> None:
        """`serial_links` overrides a serial reader's device path (the scenario's `link`);
        `quirks` and `identity` override every LLRP reader's (`rfidd-sim --quirks`)."""
        if time_scale <= 0:
            raise ValueError(f"time_scale must be > 0, got {time_scale}")
        self.scenario = scenario
        self.world = World(scenario)
        self.host = host
        self._clock = clock
        self._time_scale = time_scale
        self._run_timeline = run_timeline
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started_at = 0.0
        self.applied: list[AppliedAction] = []
        self._applied_lock = threading.Lock()
        self.readers: dict[str, SimulatedReader] = {}
        self.serial_readers: dict[str, SerialReaderSim] = {}
        chosen = sorted(scenario.readers.items())
        serial = sorted(scenario.serial_readers.items())
        if only is not None:
            known = set(scenario.readers) | set(scenario.serial_readers)
            unknown = sorted(set(only) - known)
            if unknown:
                raise ValueError(f"unknown reader(s) {', '.join(unknown)}; the scenario has "
                                 f"{', '.join(sorted(known))}")
            chosen = [(n, s) for n, s in chosen if n in only]
            serial = [(n, s) for n, s in serial if n in only]
        for i, (name, spec) in enumerate(chosen):
            zones = spec.antenna_zones()
            names = spec.quirks if quirks is None else quirks
            self.readers[name] = SimulatedReader(
                name, self._field_for(zones), host=host,
                port=base_port + i if base_port else 0, antennas=sorted(zones),
                reads_per_s=reads_per_s if reads_per_s is not None else spec.reads_per_s,
                quirks=ReaderQuirks.from_names([q.replace("_", "-") for q in names]),
                identity=IDENTITIES[identity or spec.identity],
                seed=scenario.spec.scenario.seed * 1000 + i,
            )
        zone_specs = scenario.zones
        links = dict(serial_links or {})
        unknown_links = sorted(set(links) - set(scenario.serial_readers))
        if unknown_links:
            raise ValueError(f"serial_links: no serial reader {', '.join(unknown_links)} in "
                             f"scenario {scenario.name!r}")
        for i, (name, sspec) in enumerate(serial):
            link = links.get(name, sspec.link)
            if link is not None and not os.path.isabs(link):
                raise ValueError(f"serial reader {name!r}: link {link!r} must be absolute")
            self.serial_readers[name] = SerialReaderSim(
                zone_tag_source(self.world, sspec.zone, sspec.antenna), sspec.protocol,
                address=sspec.address, link_path=link, link_name=name,
                rssi_jitter_db=zone_specs[sspec.zone].rssi_stddev_dbm,
                seed=scenario.spec.scenario.seed * 1000 + 500 + i,
                ascii_interval_s=sspec.interval_s, split_frames=sspec.split_frames,
                garbage_every=sspec.garbage_every, bad_checksum_every=sspec.bad_checksum_every,
            )

    def _field_for(self, zones: dict[int, str]) -> Callable[[int], Sequence[FieldTag]]:
        world = self.world

        def tags(antenna: int) -> Sequence[FieldTag]:
            zone = zones.get(antenna)
            return world.tags_in(zone) if zone is not None else ()

        return tags

    # ------------------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Bind every port and create every pty (an OSError names what failed; nothing stays
        started), then run the timeline."""
        started: list[SimulatedReader] = []
        plugged: list[SerialReaderSim] = []
        what = ""
        try:
            for name, reader in self.readers.items():
                what = f"LLRP reader {name!r}"
                reader.start()
                started.append(reader)
            for name, sim in self.serial_readers.items():
                what = f"serial reader {name!r}"
                sim.start()
                plugged.append(sim)
        except OSError as exc:
            for sim in plugged:
                sim.stop()
            for reader in started:
                reader.stop()
            exc.add_note(f"{what} of scenario {self.scenario.name!r}")
            raise
        self._started_at = self._clock()
        if self._run_timeline and self.scenario.timeline:
            self._thread = threading.Thread(target=self._timeline, name="sim-timeline",
                                            daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        for reader in self.readers.values():
            reader.stop(timeout)
        for sim in self.serial_readers.values():
            sim.stop()

    def __enter__(self) -> SimulatedSite:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def ports(self) -> dict[str, int]:
        return {name: r.port for name, r in self.readers.items()}

    @property
    def serial_paths(self) -> dict[str, str]:
        """Serial reader -> device path a driver opens (known once started, unless the scenario
        gave a `link`)."""
        return {name: s.link_path for name, s in self.serial_readers.items()
                if s.link_path is not None}

    def elapsed(self) -> float:
        """Scenario seconds since start (scaled by time_scale)."""
        return (self._clock() - self._started_at) * self._time_scale

    def hold(self, held: bool = True) -> None:
        """Pause or resume read generation on every reader (pending reads still go out)."""
        for reader in self.readers.values():
            reader.hold(held)
        for sim in self.serial_readers.values():
            sim.hold(held)

    def wait_timeline(self, timeout: float | None = None) -> bool:
        """Block until every timeline step ran; False on timeout."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # ------------------------------------------------------------------------- actions
    def apply(self, act: Action) -> list[ScenarioItem]:
        """Carry out one action now (population change or reader fault)."""
        if act.action == "fault":
            self._fault(act)
            items: list[ScenarioItem] = []
        else:
            items = self.world.apply(act)
        with self._applied_lock:
            self.applied.append(AppliedAction(self.elapsed(), act, tuple(items)))
        log.info("scenario %s: t=%.1f %s -> %d item(s)", self.scenario.name, act.t, act.action,
                 len(items))
        return items

    def _scaled(self, duration_s: float | None, default: float | None) -> float | None:
        """Scenario seconds -> real seconds (the timeline runs `time_scale` times faster)."""
        d = default if duration_s is None else duration_s
        return None if d is None else d / self._time_scale

    def _fault(self, act: Action) -> None:
        name = act.reader
        is_serial = name in self.scenario.serial_readers
        if name not in self.scenario.readers and not is_serial:
            raise ValueError(f"fault at t={act.t:g}: unknown reader {name!r}")
        allowed = SERIAL_FAULTS if is_serial else FAULTS
        if act.fault not in allowed:
            raise ValueError(f"fault at t={act.t:g}: {act.fault!r} does not apply to "
                             f"{'serial' if is_serial else 'LLRP'} reader {name!r} "
                             f"(one of {', '.join(allowed)})")
        assert name is not None
        sim = self.serial_readers.get(name)
        if sim is not None:
            self._serial_fault(sim, act)
            return
        reader = self.readers.get(name)
        if reader is None:  # not simulated in this process (rfidd-sim llrp runs one reader)
            return
        duration = self._scaled(act.duration_s, None)
        if act.fault == "drop":
            reader.drop_connection()
        elif act.fault == "silent":
            reader.go_silent(duration)
        elif act.fault == "garbage":
            reader.send_garbage("random")
        elif act.fault == "huge_frame":
            reader.send_garbage("huge_frame")
        elif act.fault == "error":
            assert act.message is not None
            reader.answer_with_error(act.message)
        elif act.fault == "occupy":
            reader.occupy(self._scaled(act.duration_s, DEFAULT_FAULT_S) or 0.0)
        elif act.fault == "reboot":
            reader.reboot(self._scaled(act.duration_s, DEFAULT_FAULT_S) or 0.0)

    def _serial_fault(self, sim: SerialReaderSim, act: Action) -> None:
        if act.fault == "unplug":  # no duration: out until a "replug" step
            sim.unplug(self._scaled(act.duration_s, None))
        elif act.fault == "replug":
            sim.replug()
        elif act.fault == "reboot":
            sim.unplug(self._scaled(act.duration_s, DEFAULT_FAULT_S))
        elif act.fault == "garbage":
            sim.inject_garbage()
        elif act.fault == "bad_checksum":
            sim.corrupt_next(max(1, act.count))
        elif act.fault == "silent":
            sim.go_silent(self._scaled(act.duration_s, DEFAULT_FAULT_S))

    def _timeline(self) -> None:
        seq = itertools.count()
        queue: list[tuple[float, int, Action]] = [(a.t, next(seq), a)
                                                   for a in self.scenario.timeline]
        heapq.heapify(queue)
        while queue and not self._stop.is_set():
            t, _, act = queue[0]
            wait = (t - self.elapsed()) / self._time_scale
            if wait > 0:
                self._stop.wait(min(wait, 0.5))
                continue
            heapq.heappop(queue)
            try:
                items = self.apply(act)
            except Exception:
                log.exception("scenario %s: timeline step at t=%g failed", self.scenario.name, t)
                continue
            if act.action == "exit" and items:
                gone = Action.model_validate({"t": t + act.dwell_s, "action": "remove",
                                              "epcs": [i.epc_hex for i in items]})
                heapq.heappush(queue, (gone.t, next(seq), gone))
