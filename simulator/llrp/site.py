"""A whole simulated site in-process: every LLRP reader of a scenario plus its timeline.

    with SimulatedSite(Scenario.load(path), host="127.0.0.1") as site:
        site.ports  # {"stockroom-1": 40231, ...}
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from simulator.llrp.reader import FieldTag, ReaderQuirks, SimulatedReader
from simulator.scenario import Action, Scenario, ScenarioItem, World

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AppliedAction:
    """What the timeline did, for demos and tests to check the daemon's conclusions against."""

    at_s: float
    action: Action
    items: tuple[ScenarioItem, ...]


class SimulatedSite:
    """Starts one SimulatedReader per scenario reader (port 0: ephemeral, or base_port + i)."""

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
    ) -> None:
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
        chosen = sorted(scenario.readers.items())
        if only is not None:
            unknown = sorted(set(only) - set(scenario.readers))
            if unknown:
                raise ValueError(f"unknown reader(s) {', '.join(unknown)}; the scenario has "
                                 f"{', '.join(sorted(scenario.readers))}")
            chosen = [(n, s) for n, s in chosen if n in only]
        for i, (name, spec) in enumerate(chosen):
            zones = spec.antenna_zones()
            quirks = ReaderQuirks(**{q: True for q in spec.quirks})
            self.readers[name] = SimulatedReader(
                name, self._field_for(zones), host=host,
                port=base_port + i if base_port else 0, antennas=sorted(zones),
                reads_per_s=reads_per_s if reads_per_s is not None else spec.reads_per_s,
                quirks=quirks, seed=scenario.spec.scenario.seed * 1000 + i,
            )

    def _field_for(self, zones: dict[int, str]) -> Callable[[int], Sequence[FieldTag]]:
        world = self.world

        def tags(antenna: int) -> Sequence[FieldTag]:
            zone = zones.get(antenna)
            return world.tags_in(zone) if zone is not None else ()

        return tags

    # ------------------------------------------------------------------------- lifecycle
    def start(self) -> None:
        started: list[SimulatedReader] = []
        try:
            for reader in self.readers.values():
                reader.start()
                started.append(reader)
        except OSError:
            for reader in started:
                reader.stop()
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

    def __enter__(self) -> SimulatedSite:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def ports(self) -> dict[str, int]:
        return {name: r.port for name, r in self.readers.items()}

    def elapsed(self) -> float:
        """Scenario seconds since start (scaled by time_scale)."""
        return (self._clock() - self._started_at) * self._time_scale

    def hold(self, held: bool = True) -> None:
        """Pause or resume read generation on every reader (pending reads still go out)."""
        for reader in self.readers.values():
            reader.hold(held)

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

    def _fault(self, act: Action) -> None:
        assert act.reader is not None
        reader = self.readers.get(act.reader)
        if reader is None:  # not simulated in this process (rfidd-sim llrp runs one reader)
            return
        duration = act.duration_s
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
            reader.occupy(duration if duration is not None else 5.0)
        elif act.fault == "reboot":
            reader.reboot(duration if duration is not None else 5.0)

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
