"""Store scenarios: readers, zones, a catalog, an item population and a timeline (TOML).

A scenario is the one description of a simulated site that the simulator, the demo and the tests
share: the simulator needs which tags each antenna sees and how well; the demo and the tests need
the same items (EPC, GTIN, serial, zone) and the catalog to check what the daemon concluded.

File format (every key checked; a typo is an error naming the key)::

    [scenario]
    name = "demo-store"
    seed = 7                       # everything random (items picked, RSSI) derives from it
    catalog = "maison-catalog.csv" # relative to the scenario file
    company_prefix_digits = 7

    [zones.stockroom]
    kind = "stock"
    read_probability = 0.9
    rssi_mean_dbm = -58.0
    rssi_stddev_dbm = 4.0

    [readers.stockroom-1]
    antennas = { 1 = "stockroom", 2 = "stockroom" }
    reads_per_s = 900

    [serial_readers.pos-desk]      # a desk reader on a pseudo-terminal, serving one zone
    zone = "pos"
    protocol = "binary"            # binary (0xA0 frames) | ascii (one tag per line)
    antenna = 1                    # the antenna its reads carry (1-8)
    # link = "/tmp/ttyPOS"         # default: <per-run temp dir>/<reader name>

    [[population]]
    zone = "stockroom"
    count = 200
    categories = ["bags"]          # optional: restrict the catalog rows used

    [[timeline]]
    t = 3.0
    action = "shipment"            # shipment | move | exit | remove | fault
    zone = "reception"
    count = 40

    [[timeline]]
    t = 5.0
    action = "fault"
    reader = "pos-desk"            # LLRP faults: drop silent garbage huge_frame error occupy
    fault = "unplug"               # reboot; serial: unplug replug garbage bad_checksum silent
    duration_s = 2.0               # reboot (durations in scenario seconds)
"""

from __future__ import annotations

import csv
import random
import threading
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from inventory.epc import sgtin96_hex
from simulator.llrp.reader import FieldTag, tid_for

_ID = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
CATALOG_COLUMNS = ("gtin", "sku", "name", "size", "colour", "category", "price", "currency")
FAULTS = ("drop", "silent", "garbage", "huge_frame", "error", "occupy", "reboot")
SERIAL_FAULTS = ("unplug", "replug", "garbage", "bad_checksum", "silent", "reboot")


class ScenarioError(Exception):
    """A scenario that cannot be used; `errors` lists every problem as 'where: what'."""

    def __init__(self, source: str, errors: list[str]) -> None:
        self.source = source
        self.errors = errors
        super().__init__(f"{source}: " + "; ".join(errors))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ScenarioHeader(_Strict):
    name: str = Field(description="Scenario name, for logs.")
    seed: int = Field(1, description="Seed of every random choice; same seed, same run.")
    catalog: str = Field(description="Catalog CSV, relative to the scenario file.")
    company_prefix_digits: int = Field(7, ge=6, le=12, description="GS1 company prefix length.")
    serial_start: int = Field(1, ge=0, description="First serial number used per GTIN.")


class ZoneSpec(_Strict):
    kind: str = Field("stock", description="Zone kind (stock, floor, reception, exit...).")
    read_probability: float = Field(0.9, ge=0, le=1, description="Chance a read attempt works.")
    rssi_mean_dbm: float = Field(-60.0, ge=-128, le=0, description="Mean peak RSSI in dBm.")
    rssi_stddev_dbm: float = Field(4.0, ge=0, le=40, description="RSSI standard deviation.")
    clones: int = Field(0, ge=0, description="How many items of the zone (the first by EPC) "
                        "have a cloned tag beside them: same EPC, another chip (TID).")


class ReaderSpec(_Strict):
    antennas: dict[str, str] = Field(description="Antenna number -> zone name.")
    reads_per_s: float = Field(1000.0, gt=0, le=1300, description="Reader throughput (Gen2 "
                               "air interface: ~1,100-1,300 reads/s at most).")
    quirks: list[str] = Field(
        default_factory=list, description="Field quirks the reader shows (`rfidd-sim --quirks` "
        "names, e.g. 'needs-start-rospec', 'loses-rospec=30'; see simulator.llrp.QUIRKS).")
    identity: Literal["generic", "impinj", "zebra"] = Field(
        "generic", description="What the reader claims to be in its capabilities.")

    @model_validator(mode="after")
    def _check(self) -> ReaderSpec:
        from simulator.llrp.reader import ReaderQuirks

        ReaderQuirks.from_names([q.replace("_", "-") for q in self.quirks])
        if not self.antennas:
            raise ValueError("map at least one antenna to a zone")
        for ant in self.antennas:
            if not ant.isdigit() or not 1 <= int(ant) <= 64:
                raise ValueError(f"antenna {ant!r} is not a number 1-64")
        return self

    def antenna_zones(self) -> dict[int, str]:
        return {int(a): z for a, z in self.antennas.items()}


class SerialReaderSpec(_Strict):
    """A desk or handheld reader on a pseudo-terminal: one zone in front of one antenna."""

    zone: str = Field(description="The zone whose items the reader sees.")
    protocol: Literal["binary", "ascii"] = Field("binary", description="binary: 0xA0 command "
                                                 "frames; ascii: one tag per line.")
    antenna: int = Field(1, ge=1, le=8, description="Antenna number its reads carry.")
    link: str | None = Field(None, description="Device path to create (a symlink to the pty); "
                             "default: a per-run temporary directory.")
    address: int = Field(0xFF, ge=0, le=255, description="Module address (binary).")
    interval_s: float = Field(0.2, ge=0, le=60, description="ascii: seconds between rounds.")
    split_frames: bool = Field(False, description="fault: write replies in pieces.")
    garbage_every: int = Field(0, ge=0, description="fault: noise after every Nth tag frame.")
    bad_checksum_every: int = Field(0, ge=0, description="fault: every Nth tag frame corrupt "
                                    "(binary).")

    @model_validator(mode="after")
    def _check(self) -> SerialReaderSpec:
        if self.link is not None and not self.link.startswith("/"):
            raise ValueError(f"link {self.link!r} must be an absolute path")
        if self.protocol == "ascii" and self.bad_checksum_every:
            raise ValueError("bad_checksum_every applies to the binary protocol only")
        return self


class PopulationSpec(_Strict):
    zone: str
    count: int = Field(ge=0, le=1_000_000)
    categories: list[str] = Field(default_factory=list, description="Catalog categories to use.")
    gtins: list[str] = Field(default_factory=list, description="Catalog GTINs to use.")


class Action(_Strict):
    """One timeline step at `t` seconds after the site starts."""

    t: float = Field(ge=0)
    action: Literal["shipment", "move", "exit", "remove", "fault"]
    zone: str | None = Field(None, description="shipment: where it appears; exit: the exit zone.")
    from_zone: str | None = Field(None, alias="from", description="move/exit/remove: source.")
    to: str | None = Field(None, description="move: destination zone.")
    count: int = Field(1, ge=0)
    epcs: list[str] = Field(default_factory=list, description="Explicit items instead of count.")
    categories: list[str] = Field(default_factory=list, description="shipment: catalog subset.")
    dwell_s: float = Field(2.0, ge=0, description="exit: seconds in the exit field, then gone.")
    reader: str | None = Field(None, description="fault: which reader (LLRP or serial).")
    fault: Literal["drop", "silent", "garbage", "huge_frame", "error", "occupy", "reboot",
                   "unplug", "replug", "bad_checksum"] | None = None
    duration_s: float | None = Field(None, ge=0, description="silent/occupy/reboot duration; "
                                     "serial unplug: replug after it (none: stays out).")
    message: str | None = Field(None, description="error: the request answered with an error.")


class ScenarioFile(_Strict):
    scenario: ScenarioHeader
    zones: dict[Annotated[str, Field(pattern=_ID)], ZoneSpec]
    readers: dict[Annotated[str, Field(pattern=_ID)], ReaderSpec] = Field(default_factory=dict)
    serial_readers: dict[Annotated[str, Field(pattern=_ID)], SerialReaderSpec] = Field(
        default_factory=dict)
    population: list[PopulationSpec] = Field(default_factory=list)
    timeline: list[Action] = Field(default_factory=list)

    @model_validator(mode="after")
    def _refs(self) -> ScenarioFile:
        errors: list[str] = []

        def zone(where: str, name: str | None, required: bool = True) -> None:
            if name is None:
                if required:
                    errors.append(f"{where}: a zone is required")
            elif name not in self.zones:
                errors.append(f"{where}: unknown zone {name!r} (zones: "
                              f"{', '.join(sorted(self.zones))})")

        if not self.readers and not self.serial_readers:
            errors.append("readers: declare at least one reader ([readers.NAME] or "
                          "[serial_readers.NAME])")
        for rname, reader in self.readers.items():
            for ant, z in reader.antennas.items():
                zone(f"readers.{rname}.antennas.{ant}", z)
        for rname, sreader in self.serial_readers.items():
            zone(f"serial_readers.{rname}.zone", sreader.zone)
            if rname in self.readers:
                errors.append(f"serial_readers.{rname}: name already used by an LLRP reader "
                              "(reader names are one namespace in the daemon's config)")
        links = [s.link for s in self.serial_readers.values() if s.link is not None]
        for dup in sorted({lk for lk in links if links.count(lk) > 1}):
            errors.append(f"serial_readers: link {dup!r} used by more than one reader")
        for i, pop in enumerate(self.population):
            zone(f"population[{i}].zone", pop.zone)
        for i, act in enumerate(self.timeline):
            where = f"timeline[{i}] ({act.action} at t={act.t:g})"
            if act.action == "shipment":
                zone(where + ".zone", act.zone)
            elif act.action == "move":
                zone(where + ".from", act.from_zone, required=not act.epcs)
                zone(where + ".to", act.to)
            elif act.action == "exit":
                zone(where + ".from", act.from_zone, required=not act.epcs)
                exits = [z for z, s in self.zones.items() if s.kind == "exit"]
                if act.zone is None and not exits:
                    errors.append(f"{where}: no zone given and no zone of kind 'exit'")
                zone(where + ".zone", act.zone, required=False)
            elif act.action == "remove":
                zone(where + ".from", act.from_zone, required=not act.epcs)
            elif act.action == "fault":
                self._check_fault(where, act, errors)
        if errors:
            raise ValueError("; ".join(errors))
        return self

    def _check_fault(self, where: str, act: Action, errors: list[str]) -> None:
        serial = self.serial_readers.get(act.reader or "")
        if act.reader not in self.readers and serial is None:
            known = sorted([*self.readers, *self.serial_readers])
            errors.append(f"{where}.reader: unknown reader {act.reader!r} (readers: "
                          f"{', '.join(known)})")
            return
        allowed = SERIAL_FAULTS if serial is not None else FAULTS
        kind = "serial" if serial is not None else "LLRP"
        if act.fault is None:
            errors.append(f"{where}.fault: one of {', '.join(allowed)} is required")
        elif act.fault not in allowed:
            errors.append(f"{where}.fault: {act.fault!r} does not apply to {kind} reader "
                          f"{act.reader!r} ({kind} faults: {', '.join(allowed)})")
        elif serial is not None and act.fault == "bad_checksum" and serial.protocol != "binary":
            errors.append(f"{where}.fault: bad_checksum needs a binary-protocol reader")
        if act.fault == "error" and not act.message:
            errors.append(f"{where}.message: which request to answer with an error")


class ScenarioItem(NamedTuple):
    epc_hex: str
    gtin: str
    serial: int
    zone: str


@dataclass(frozen=True)
class CatalogRow:
    gtin: str
    sku: str
    name: str
    size: str
    colour: str
    category: str
    price: str
    currency: str

    def as_dict(self) -> dict[str, str]:
        return {c: getattr(self, c) for c in CATALOG_COLUMNS}


def load_catalog(path: Path) -> list[CatalogRow]:
    """Read a catalog CSV; raises ScenarioError naming the line of every bad row."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(str(path), [f"cannot read catalog: {exc.strerror}"]) from exc
    reader = csv.DictReader(text.splitlines())
    missing = [c for c in CATALOG_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise ScenarioError(str(path), [f"missing column(s): {', '.join(missing)}"])
    rows: list[CatalogRow] = []
    errors: list[str] = []
    seen: set[str] = set()
    for lineno, raw in enumerate(reader, start=2):
        row = {c: (raw.get(c) or "").strip() for c in CATALOG_COLUMNS}
        gtin = row["gtin"]
        if not (gtin.isdigit() and len(gtin) == 14 and _gtin_check_ok(gtin)):
            errors.append(f"line {lineno}: gtin {gtin!r} is not a GTIN-14 with a valid check digit")
            continue
        if gtin in seen:
            errors.append(f"line {lineno}: duplicate gtin {gtin}")
            continue
        try:
            float(row["price"])
        except ValueError:
            errors.append(f"line {lineno}: price {row['price']!r} is not a number")
            continue
        seen.add(gtin)
        rows.append(CatalogRow(**row))
    if errors:
        raise ScenarioError(str(path), errors)
    if not rows:
        raise ScenarioError(str(path), ["the catalog has no rows"])
    return rows


def _gtin_check_ok(gtin: str) -> bool:
    digits = [int(c) for c in gtin]
    total = sum(d * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(digits[:-1])))
    return (10 - total % 10) % 10 == digits[-1]


class Scenario:
    """A loaded scenario: the file's settings, its catalog and its initial population."""

    def __init__(self, spec: ScenarioFile, catalog: list[CatalogRow], source: str = "<scenario>"):
        self.spec = spec
        self.source = source
        self._catalog = catalog
        self._serials: dict[str, int] = {}
        self._lock = threading.Lock()
        self._rng = random.Random(spec.scenario.seed)
        self._epc_cache: dict[tuple[str, int], str] = {}
        self._initial = [item for i, pop in enumerate(spec.population)
                         for item in self._make(pop.zone, pop.count, pop.categories, pop.gtins,
                                                f"population[{i}]")]

    @classmethod
    def load(cls, path: str | Path) -> Scenario:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise ScenarioError(str(p), [f"cannot read: {exc.strerror}"]) from exc
        return cls.parse(text, source=str(p), base_dir=p.parent)

    @classmethod
    def parse(cls, text: str, source: str = "<scenario>", base_dir: Path | None = None) -> Scenario:
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ScenarioError(source, [f"TOML syntax: {exc}"]) from exc
        try:
            spec = ScenarioFile.model_validate(raw)
        except ValidationError as exc:
            errors = []
            for err in exc.errors():
                path = ".".join(str(p) for p in err["loc"]) or "(top)"
                msg = "unknown key (misspelled?)" if err["type"] == "extra_forbidden" \
                    else err["msg"]
                errors.append(f"{path}: {msg}")
            raise ScenarioError(source, errors) from exc
        catalog_path = Path(spec.scenario.catalog)
        if not catalog_path.is_absolute():
            catalog_path = (base_dir or Path.cwd()) / catalog_path
        return cls(spec, load_catalog(catalog_path), source)

    # ----------------------------------------------------------------------- public API
    @property
    def name(self) -> str:
        return self.spec.scenario.name

    @property
    def readers(self) -> dict[str, ReaderSpec]:
        return dict(self.spec.readers)

    @property
    def serial_readers(self) -> dict[str, SerialReaderSpec]:
        """Desk/handheld readers on pseudo-terminals (not in `readers`, which are LLRP only)."""
        return dict(self.spec.serial_readers)

    @property
    def zones(self) -> dict[str, ZoneSpec]:
        return dict(self.spec.zones)

    @property
    def timeline(self) -> list[Action]:
        return sorted(self.spec.timeline, key=lambda a: a.t)

    def items(self) -> list[ScenarioItem]:
        """The initial population (before any timeline step), in a stable order."""
        return list(self._initial)

    def catalog_rows(self) -> list[dict[str, str]]:
        """Catalog rows as dicts with the CSV's columns (gtin, sku, name, ...)."""
        return [r.as_dict() for r in self._catalog]

    def catalog(self) -> list[CatalogRow]:
        return list(self._catalog)

    def new_items(self, zone: str, count: int, categories: Iterable[str] = (),
                  gtins: Iterable[str] = ()) -> list[ScenarioItem]:
        """Fresh items (next serials), e.g. a shipment: deterministic given the seed and order."""
        return self._make(zone, count, list(categories), list(gtins), "shipment")

    # ----------------------------------------------------------------------- internals
    def _make(self, zone: str, count: int, categories: list[str], gtins: list[str],
              where: str) -> list[ScenarioItem]:
        rows = self._catalog
        if categories:
            rows = [r for r in rows if r.category in categories]
        if gtins:
            rows = [r for r in rows if r.gtin in gtins]
        if not rows and count:
            raise ScenarioError(self.source, [f"{where}: no catalog row matches categories "
                                              f"{categories} / gtins {gtins}"])
        digits = self.spec.scenario.company_prefix_digits
        out = []
        with self._lock:
            for _ in range(count):
                row = self._rng.choice(rows)
                serial = self._serials.get(row.gtin, self.spec.scenario.serial_start)
                self._serials[row.gtin] = serial + 1
                out.append(ScenarioItem(sgtin96_hex(row.gtin, serial, digits), row.gtin, serial,
                                        zone))
        return out


class World:
    """Where every item is now; readers read from it, the timeline changes it. Thread-safe.

    Readers get immutable per-zone snapshots (rebuilt on change), so the hot read path takes no
    lock.
    """

    def __init__(self, scenario: Scenario, seed: int | None = None) -> None:
        self.scenario = scenario
        self._zones = scenario.zones
        self._lock = threading.Lock()
        self._rng = random.Random(scenario.spec.scenario.seed if seed is None else seed)
        self._items: dict[str, ScenarioItem] = {}
        self._by_zone: dict[str, list[str]] = {z: [] for z in self._zones}
        self._snap: dict[str, tuple[FieldTag, ...]] = {}
        for item in scenario.items():
            self._put(item)
        self._rebuild(set(self._zones))

    def _put(self, item: ScenarioItem) -> None:
        self._items[item.epc_hex] = item
        self._by_zone[item.zone].append(item.epc_hex)

    def _take(self, epc: str) -> ScenarioItem | None:
        item = self._items.pop(epc, None)
        if item is not None:
            self._by_zone[item.zone].remove(epc)
        return item

    def _rebuild(self, zones: set[str]) -> None:
        for z in zones:
            spec = self._zones[z]
            tags = [FieldTag(bytes.fromhex(epc), spec.read_probability, spec.rssi_mean_dbm,
                             spec.rssi_stddev_dbm) for epc in self._by_zone[z]]
            tags += [FieldTag(bytes.fromhex(epc), spec.read_probability, spec.rssi_mean_dbm,
                              spec.rssi_stddev_dbm, tid=tid_for(bytes.fromhex(epc), clone=1))
                     for epc in sorted(self._by_zone[z])[:spec.clones]]
            self._snap[z] = tuple(tags)

    def tags_in(self, zone: str) -> tuple[FieldTag, ...]:
        return self._snap.get(zone, ())

    def items(self) -> list[ScenarioItem]:
        with self._lock:
            return list(self._items.values())

    def zone_of(self, epc_hex: str) -> str | None:
        item = self._items.get(epc_hex.upper())
        return None if item is None else item.zone

    def count(self, zone: str) -> int:
        return len(self._by_zone.get(zone, ()))

    def apply(self, act: Action) -> list[ScenarioItem]:
        """Carry out a population step; returns the items it created, moved or removed."""
        with self._lock:
            if act.action == "shipment":
                assert act.zone is not None
                new = self.scenario.new_items(act.zone, act.count, act.categories)
                for item in new:
                    self._put(item)
                self._rebuild({act.zone})
                return new
            if act.action in ("move", "exit", "remove"):
                chosen = self._pick(act)
                dest = ""
                if act.action == "move":
                    dest = act.to or ""
                elif act.action == "exit":
                    dest = act.zone or next(
                        (z for z, s in self._zones.items() if s.kind == "exit"), "")
                if act.action != "remove" and dest not in self._zones:
                    raise ValueError(f"{act.action} at t={act.t:g}: no destination zone "
                                     f"({dest or 'none given'})")
                touched = {i.zone for i in chosen}
                out = []
                for item in chosen:
                    self._take(item.epc_hex)
                    if act.action != "remove":
                        moved = item._replace(zone=dest)
                        self._put(moved)
                        out.append(moved)
                        touched.add(dest)
                    else:
                        out.append(item)
                self._rebuild(touched)
                return out
            return []

    def _pick(self, act: Action) -> list[ScenarioItem]:
        if act.epcs:
            return [self._items[e.upper()] for e in act.epcs if e.upper() in self._items]
        assert act.from_zone is not None
        pool = sorted(self._by_zone[act.from_zone])
        chosen = self._rng.sample(pool, min(act.count, len(pool)))
        return [self._items[e] for e in chosen]


def action(**fields: Any) -> Action:
    """Build a timeline action in code (tests, demo): action(t=0, action="move", from_zone=...)."""
    return Action.model_validate(fields)
