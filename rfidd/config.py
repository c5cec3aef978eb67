"""TOML configuration -> validated settings.

Every model forbids unknown keys and describes every field, so a typo is an error with its key
path instead of a silently ignored setting (sllurp itself ignores misspelled keys).
"""

from __future__ import annotations

import enum
import re
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from rfidd.config_http import HttpConfig as HttpConfig
from rfidd.config_http import raw_exposure_error
from rfidd.config_mqtt import (  # re-exported: one place to import any setting from
    CREDENTIAL_PREFIX as CREDENTIAL_PREFIX,
)
from rfidd.config_mqtt import MqttConfig as MqttConfig
from rfidd.config_mqtt import TlsConfig as TlsConfig
from rfidd.config_mqtt import _check_secret_file as _check_secret_file
from rfidd.config_mqtt import resolve_secret_file as resolve_secret_file
from rfidd.config_readers import LlrpOptions as LlrpOptions
from rfidd.config_readers import ReaderConfig as ReaderConfig
from rfidd.config_readers import SerialOptions as SerialOptions
from rfidd.config_readers import Session as Session

EX_CONFIG = 78  # sysexits.h EX_CONFIG: systemd's RestartPreventExitStatus= can name it
EX_TEMPFAIL = 75  # sysexits.h EX_TEMPFAIL: a temporary failure, worth a restart

_ID = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
_SGLN = re.compile(r"^urn:epc:id:sgln:(\d{6,12})\.(\d{0,6})\.([!%-?A-Z_a-z\x22]{1,20})$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ZoneKind(enum.StrEnum):
    STOCK = "stock"
    FLOOR = "floor"
    FITTING = "fitting"
    RECEPTION = "reception"
    EXIT = "exit"
    POS = "pos"
    BENCH = "bench"
    AFTERSALES = "aftersales"
    SHIPPING = "shipping"


class SiteKind(enum.StrEnum):
    STORE = "store"
    WAREHOUSE = "warehouse"
    WORKSHOP = "workshop"


class SiteConfig(_Strict):
    id: str = Field(pattern=_ID, description="Short site id, used in MQTT topics (no wildcards).")
    name: str = Field(description="Human name of the site, shown in reports.")
    kind: SiteKind = Field(SiteKind.STORE, description="store, warehouse or workshop.")
    sgln: str = Field(
        description="GS1 SGLN URN of the site (urn:epc:id:sgln:CompanyPrefix.LocationRef.Ext); "
        "EPCIS bizLocation, and the base of each zone's readPoint."
    )
    timezone: str = Field("UTC", description="IANA time zone, for eventTimeZoneOffset and reports.")
    company_prefixes: list[str] = Field(
        default_factory=list,
        description="GS1 company prefixes that are 'ours'; tags of other prefixes are classified "
        "as foreign and kept out of stock figures. Empty: accept every prefix.",
    )

    @field_validator("sgln")
    @classmethod
    def _check_sgln(cls, v: str) -> str:
        if not _SGLN.match(v):
            raise ValueError(
                "not an SGLN pure-identity URN, expected urn:epc:id:sgln:0614141.00777.0"
            )
        return v

    @field_validator("timezone")
    @classmethod
    def _check_tz(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {v!r}") from exc
        return v


class DatabaseConfig(_Strict):
    url: str = Field(
        "sqlite:///rfidd.db",
        description="SQLAlchemy URL: sqlite:///path (default, WAL mode) or "
        "postgresql+psycopg://user@host/db.",
    )
    batch_max_rows: int = Field(
        2000, ge=1, description="Commit an ingest batch at this many reads (under load a "
        "batch fills in milliseconds; its fixed cost, the commit and its fsync, is paid once "
        "per this many reads).")
    batch_max_ms: int = Field(250, ge=1, description="...or after this many milliseconds.")

    @field_validator("url")
    @classmethod
    def _check_url(cls, v: str) -> str:
        if not v.startswith(("sqlite:", "postgresql")):
            raise ValueError("only sqlite:// and postgresql:// URLs are supported")
        return v


class ZoneConfig(_Strict):
    kind: ZoneKind = Field(description="What the zone is for; drives behaviour (exit alerts...).")
    label: str | None = Field(None, description="Human name; default: the zone's key.")
    sgln: str | None = Field(
        None, description="SGLN of the zone as readPoint; default: site SGLN with the zone as "
        "extension."
    )


class PresenceConfig(_Strict):
    departure_s: float = Field(
        300.0, gt=0, description="An item unseen this long has left its zone."
    )
    move_margin_db: float = Field(
        6.0, ge=0, description="A new zone must beat the current one by this RSSI margin..."
    )
    move_margin_decay_s: float = Field(
        30.0, gt=0, description="...a margin that decays to 0 over this many seconds unseen."
    )


class ShrinkageConfig(_Strict):
    exit_alert_debounce_s: float = Field(
        60.0, ge=0, description="One exit alert per item within this window."
    )
    counts_before_suspected: int = Field(
        2, ge=1,
        description="Consecutive counts that must miss an item before it is suspected lost.",
    )


class CountsConfig(_Strict):
    first_count_takes_over: bool = Field(
        False,
        description="Go-live: the site's first finished count takes over what it finds (items "
        "rfidd never received go on the books at their zone), like `rfidd ops takeover`.",
    )


class ReceptionConfig(_Strict):
    auto_close_complete_s: float | None = Field(
        60.0, gt=0,
        description="Close a reception this long after every item on its ASNs was read "
        "(no more can arrive); unset to close by hand only.",
    )
    auto_close_idle_s: float | None = Field(
        1800.0, gt=0,
        description="Close a reception when no new item was read for this long (the rest is "
        "reported missing); unset to close by hand only.",
    )


class SchedulesConfig(_Strict):
    misfire_grace_s: float = Field(
        3600.0, ge=0,
        description="A scheduled job missed (daemon down, or busy) runs late if still within "
        "this many seconds of its time, once; older misses are logged and skipped. A count "
        "schedule may set its own.",
    )
    retention_cron: str = Field(
        "30 3 * * *", description="When the retention job runs (crontab, site time zone)."
    )
    outbox_sent_days: float = Field(
        7.0, gt=0, description="Delete outbox rows HQ acknowledged more than this long ago."
    )
    journal_days: float = Field(
        730.0, gt=0,
        description="Delete event journal rows (item history on this site) older than this.",
    )
    count_days: float = Field(
        400.0, gt=0,
        description="Delete finished or aborted count sessions (their sightings and report) "
        "older than this.",
    )
    shrinkage_report_cron: str | None = Field(
        "15 2 * * *",
        description="When the nightly shrinkage report of the previous day is published to HQ "
        "(crontab, site time zone); unset: none.",
    )

    @field_validator("retention_cron", "shrinkage_report_cron")
    @classmethod
    def _check_cron(cls, v: str | None) -> str | None:
        if v is not None:
            from apscheduler.triggers.cron import CronTrigger

            try:
                CronTrigger.from_crontab(v)
            except ValueError as exc:
                raise ValueError(f"not a crontab expression (minute hour day month weekday): "
                                 f"{exc}") from None
        return v


class Config(_Strict):
    site: SiteConfig = Field(description="This site.")
    database: DatabaseConfig = Field(default_factory=DatabaseConfig, description="Storage.")
    mqtt: MqttConfig = Field(default_factory=MqttConfig, description="The HQ link.")
    http: HttpConfig = Field(default_factory=HttpConfig, description="Local API and metrics.")
    presence: PresenceConfig = Field(default_factory=PresenceConfig, description="Location rules.")
    shrinkage: ShrinkageConfig = Field(
        default_factory=ShrinkageConfig, description="Loss detection rules."
    )
    reception: ReceptionConfig = Field(
        default_factory=ReceptionConfig, description="When receptions close by rule."
    )
    schedules: SchedulesConfig = Field(
        default_factory=SchedulesConfig,
        description="Scheduled work: missed-run policy, retention horizons, nightly report.",
    )
    counts: CountsConfig = Field(
        default_factory=CountsConfig, description="Cycle counts and the go-live take-over."
    )
    zones: dict[Annotated[str, Field(pattern=_ID)], ZoneConfig] = Field(
        description="Zones of the site by name."
    )
    readers: dict[Annotated[str, Field(pattern=_ID)], ReaderConfig] = Field(
        default_factory=dict, description="Readers by name."
    )
    llrp_process: bool = Field(
        True, description="Run the LLRP readers in a child process (the reader host, restarted "
        "if it dies) so their decoding never starves the ingest of the interpreter lock; false "
        "runs them as threads of the daemon (one process, as before 0.3)."
    )

    @model_validator(mode="after")
    def _check_refs(self) -> Config:
        errors = []
        for name, reader in self.readers.items():
            for port, zone in reader.antennas.items():
                if zone not in self.zones:
                    errors.append(
                        f"readers.{name}.antennas.{port}: unknown zone {zone!r} "
                        f"(zones: {', '.join(sorted(self.zones))})"
                    )
        if errors:
            raise ValueError("; ".join(errors))
        return self

    def topic(self, *parts: str) -> str:
        return "/".join((self.mqtt.topic_prefix, self.site.id, *parts))

    def zone_read_point(self, zone: str) -> str:
        z = self.zones[zone]
        if z.sgln:
            return z.sgln
        base = self.site.sgln.rsplit(".", 1)[0]
        return f"{base}.{zone}"


class ConfigError(Exception):
    """A config file that cannot be used; `errors` lists every problem as 'key.path: message'."""

    def __init__(self, path: str, errors: list[str]) -> None:
        self.path = path
        self.errors = errors
        super().__init__(f"{path}: " + "; ".join(errors))


def _locate(text: str, loc: tuple[Any, ...]) -> int | None:
    """Best-effort line number of a key path in TOML text (tomllib keeps no positions)."""
    lines = text.splitlines()
    keys = [str(k) for k in loc if not isinstance(k, int)]
    start = 0
    for depth in range(len(keys), 0, -1):
        table = ".".join(keys[: depth - 1])
        key = keys[depth - 1]
        header = re.compile(rf"^\s*\[\s*{re.escape(table)}\s*\]\s*$") if table else None
        begin = 0
        if header is not None:
            for i, line in enumerate(lines):
                if header.match(line):
                    begin = i + 1
                    break
            else:
                continue
        key_rx = re.compile(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*=")
        tbl_rx = re.compile(rf"^\s*\[\s*{re.escape('.'.join(keys[:depth]))}\s*\]\s*$")
        for i in range(begin, len(lines)):
            if i > begin and header is not None and lines[i].lstrip().startswith("["):
                break
            if key_rx.match(lines[i]) or tbl_rx.match(lines[i]):
                return i + 1
        start = begin
    return start + 1 if start else None


_KEY_PATH = re.compile(r"^(?:Value error, )?([A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)+)\b")


def _named_key(loc: tuple[Any, ...], msg: str) -> tuple[Any, ...]:
    """A table's own check (a model validator) is reported at the table; when its message
    starts with the key it is about (`http.listen '0.0.0.0' is ...`), at that key's line."""
    m = _KEY_PATH.match(msg)
    if m is None:
        return loc
    keys = tuple(m.group(1).split("."))
    names = tuple(str(k) for k in loc if not isinstance(k, int))
    return keys if len(keys) > len(names) and keys[: len(names)] == names else loc


M = TypeVar("M", bound=BaseModel)


def validate_toml(
    model: type[M], text: str, source: str,
    cross_checks: Callable[[dict[str, Any]], list[tuple[tuple[str, ...], str]]] | None = None,
) -> M:
    """Parse TOML into `model`; raise ConfigError naming every problem with key path and line.

    `cross_checks` runs on the raw data so that reference errors are reported together with
    field errors (a model validator only runs once every field is valid).
    """
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, [f"{source}: TOML syntax: {exc}"]) from exc
    refs = cross_checks(raw) if cross_checks is not None else []
    try:
        cfg = model.model_validate(raw)
    except ValidationError as exc:
        errors = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            if err["type"] == "value_error" and not loc and refs:
                continue  # the model's own cross-reference check: reported from refs, with lines
            if any(str(err["msg"]).removeprefix("Value error, ") == m for _, m in refs):
                continue  # a table's own check that the raw checks also made
            path = ".".join(str(p) for p in loc) or "(top)"
            line = _locate(text, _named_key(loc, str(err["msg"])))
            where = f"{source}:{line}: " if line else f"{source}: "
            msg = ("unknown key (misspelled?)" if err["type"] == "extra_forbidden"
                   else str(err["msg"]).removeprefix("Value error, "))
            errors.append(f"{where}{path}: {msg}")
        errors += _with_lines(text, source, refs)
        raise ConfigError(source, errors) from exc
    return cfg


def read_config_text(path: str | Path) -> tuple[str, str]:
    """(text, source name) of a config file; ConfigError when it cannot be read."""
    p = Path(path)
    try:
        return p.read_text(encoding="utf-8"), str(p)
    except OSError as exc:
        raise ConfigError(str(p), [f"cannot read: {exc.strerror}"]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(str(p), [f"not UTF-8 text: {exc}"]) from exc


def parse_config(text: str, source: str = "<config>") -> Config:
    """Parse and validate a site config; raise ConfigError naming every problem at once."""
    return validate_toml(Config, text, source, _reference_errors)


def _reference_errors(raw: dict[str, Any]) -> list[tuple[tuple[str, ...], str]]:
    """Cross-references checked on the raw data, so they are reported with field errors."""
    zones = raw.get("zones") if isinstance(raw.get("zones"), dict) else {}
    readers = raw.get("readers") if isinstance(raw.get("readers"), dict) else {}
    assert isinstance(zones, dict) and isinstance(readers, dict)
    out: list[tuple[tuple[str, ...], str]] = []
    exposed = raw_exposure_error(raw.get("http"))
    if exposed is not None:
        out.append((("http",), exposed))
    for name, reader in readers.items():
        antennas = reader.get("antennas") if isinstance(reader, dict) else None
        if not isinstance(antennas, dict):
            continue
        for port, zone in antennas.items():
            if isinstance(zone, str) and zone not in zones:
                known = ", ".join(sorted(zones)) or "none defined"
                out.append(((
                    "readers", name, "antennas"), f"antenna {port}: unknown zone {zone!r} "
                    f"(zones: {known})"))
    return out


def _with_lines(
    text: str, source: str, errors: list[tuple[tuple[str, ...], str]]
) -> list[str]:
    result = []
    for loc, msg in errors:
        line = _locate(text, _named_key(loc, msg))
        where = f"{source}:{line}: " if line else f"{source}: "
        result.append(f"{where}{'.'.join(loc)}: {msg}")
    return result


def load_config(path: str | Path) -> Config:
    return parse_config(*read_config_text(path))
