"""TOML configuration -> validated settings.

Every model forbids unknown keys and describes every field, so a typo is an error with its key
path instead of a silently ignored setting (sllurp itself ignores misspelled keys).
"""

from __future__ import annotations

import enum
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from rfidd.config_http import HttpConfig

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
    batch_max_rows: int = Field(500, ge=1, description="Commit an ingest batch at this many reads.")
    batch_max_ms: int = Field(250, ge=1, description="...or after this many milliseconds.")

    @field_validator("url")
    @classmethod
    def _check_url(cls, v: str) -> str:
        if not v.startswith(("sqlite:", "postgresql")):
            raise ValueError("only sqlite:// and postgresql:// URLs are supported")
        return v


CREDENTIAL_PREFIX = "credential:"
_CREDENTIAL_NAME = re.compile(r"^[A-Za-z0-9_@:.-]{1,255}$")


def resolve_secret_file(
    value: Path, setting: str, environ: Mapping[str, str] | None = None
) -> Path:
    """`credential:NAME` -> $CREDENTIALS_DIRECTORY/NAME; any other path is returned unchanged.

    Resolved when the secret is read, not at config load: `rfidd check-config` runs anywhere,
    while systemd sets CREDENTIALS_DIRECTORY (LoadCredential=) only in the service's processes,
    under a path that depends on the unit name. Raises ValueError naming `setting`.
    """
    text = str(value)
    if not text.startswith(CREDENTIAL_PREFIX):
        return value
    name = text[len(CREDENTIAL_PREFIX):]
    directory = (os.environ if environ is None else environ).get("CREDENTIALS_DIRECTORY")
    if not directory:
        raise ValueError(
            f"{setting} {text}: $CREDENTIALS_DIRECTORY is not set (run under systemd with "
            f"LoadCredential={name}:/path/to/secret, or give the file's path instead)"
        )
    return Path(directory) / name


def _check_secret_file(v: Any) -> Any:
    """The `credential:NAME` form names one file of the credentials directory, nothing else."""
    if isinstance(v, str | Path) and str(v).startswith(CREDENTIAL_PREFIX):
        name = str(v)[len(CREDENTIAL_PREFIX):]
        if not _CREDENTIAL_NAME.match(name) or name in (".", ".."):
            raise ValueError(
                f"{str(v)!r}: a systemd credential name (letters, digits, _ @ : . -; no /) "
                "must follow 'credential:'"
            )
    return v


class TlsConfig(_Strict):
    ca_file: Path | None = Field(
        None,
        description="PEM CA bundle that signs the broker's certificate; without it an mqtts:// "
        "URL is verified against the system trust store.",
    )
    cert_file: Path | None = Field(
        None, description="Client certificate, PEM (mutual TLS), optional; may hold the key too."
    )
    key_file: Path | None = Field(
        None, description="Client private key, PEM, unencrypted (mutual TLS); needs cert_file. "
        "Default: the key is in cert_file."
    )
    insecure: bool = Field(
        False,
        description="Skip the check that the certificate names the broker's host (testing "
        "only); the certificate chain is still verified.",
    )

    @model_validator(mode="after")
    def _check_key(self) -> TlsConfig:
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("tls.key_file needs tls.cert_file (the client certificate)")
        return self

    @property
    def configured(self) -> bool:
        return (self.ca_file is not None or self.cert_file is not None
                or self.key_file is not None or self.insecure)


class MqttConfig(_Strict):
    enabled: bool = Field(True, description="Publish to HQ; false keeps events in the outbox.")
    url: str = Field(
        "mqtt://127.0.0.1:1883",
        description="Broker URL: mqtt://host:port or mqtts://host:port (TLS).",
    )
    protocol: Literal["5", "3.1.1"] = Field("5", description="MQTT protocol version.")
    topic_prefix: str = Field(
        "rfidd/v1", description="Topics are {topic_prefix}/{site.id}/...; no wildcards."
    )
    client_id: str | None = Field(None, description="MQTT client id; default rfidd-{site.id}.")
    username: str | None = Field(None, description="Broker user name.")
    password_file: Path | None = Field(
        None,
        description="File holding the broker password (UTF-8, one trailing newline ignored), "
        "or 'credential:NAME' for the systemd credential NAME ($CREDENTIALS_DIRECTORY/NAME, "
        "from LoadCredential=NAME:...). Read when the link starts; the password itself never "
        "appears in the config, the logs or error messages.",
    )
    tls: TlsConfig = Field(default_factory=TlsConfig, description="TLS settings (mqtts://).")
    keepalive_s: int = Field(30, ge=5, le=3600, description="MQTT keepalive interval.")
    reconnect_max_s: float = Field(
        60.0, ge=1, le=3600,
        description="Longest wait between reconnection attempts to HQ (doubling from 1 s, with "
        "jitter): lower drains the outbox sooner after an outage, higher spares the broker "
        "when hundreds of sites come back at once.",
    )
    max_events_per_document: int = Field(
        200, ge=1, le=10000, description="EPCIS events batched into one EPCISDocument."
    )
    outbox_alert_rows: int = Field(
        100_000, ge=1, description="Raise an alert when the outbox backlog passes this many rows."
    )
    require_signed_commands: bool = Field(
        False, description="Refuse state-changing HQ commands (sale, return, shipment, hold, "
        "transfer...) that are not a JWS (Ed25519) signed by HQ's key.")
    command_public_key_file: Path | None = Field(
        None, description="HQ's Ed25519 public key (PEM) that signs commands; needed by "
        "require_signed_commands.")

    @field_validator("url")
    @classmethod
    def _check_url(cls, v: str) -> str:
        if not re.match(r"^mqtts?://[^/:]+(:\d{1,5})?/?$", v):
            raise ValueError("expected mqtt://host:port or mqtts://host:port")
        return v

    @field_validator("topic_prefix")
    @classmethod
    def _check_prefix(cls, v: str) -> str:
        if any(c in v for c in "#+\x00") or v.startswith("/") or v.endswith("/") or not v:
            raise ValueError("topic prefix must not contain # or +, nor start or end with /")
        return v

    @field_validator("password_file", mode="before")
    @classmethod
    def _check_password_file(cls, v: Any) -> Any:
        return _check_secret_file(v)

    @model_validator(mode="after")
    def _check_signing(self) -> MqttConfig:
        if self.require_signed_commands and self.command_public_key_file is None:
            raise ValueError("mqtt.require_signed_commands needs mqtt.command_public_key_file")
        return self

    @model_validator(mode="after")
    def _check_tls(self) -> MqttConfig:
        # TLS on an mqtt:// URL would be a guess (which port?); plain text with TLS settings
        # would send the password in clear: both are refused.
        if self.tls.configured and not self.url.startswith("mqtts://"):
            raise ValueError("tls settings need an mqtts:// url (TLS); the url is mqtt://")
        return self

    def resolved_password_file(self, environ: Mapping[str, str] | None = None) -> Path | None:
        """The password file's path, `credential:NAME` resolved (ValueError when it cannot be)."""
        if self.password_file is None:
            return None
        return resolve_secret_file(self.password_file, "mqtt.password_file", environ)


class Session(enum.IntEnum):
    S0 = 0
    S1 = 1
    S2 = 2
    S3 = 3


class LlrpOptions(_Strict):
    """Options of a fixed LLRP reader. A misspelled option is an error (sllurp would ignore it)."""

    port: int = Field(5084, ge=1, le=65535, description="LLRP TCP port (5084 is the standard).")
    tx_power_dbm: float | None = Field(
        None, ge=0, le=33, description="Transmit power in dBm; None: the reader's maximum."
    )
    session: Session = Field(Session.S1, description="Gen2 session 0-3 (S1 for counts, S2/S3 "
                             "for dense stores).")
    tag_population: int = Field(32, ge=1, le=65535, description="Expected tags in the field.")
    mode_identifier: int | None = Field(
        None, ge=0, description="Reader RF mode from its mode table; None: reader default."
    )
    search_mode: Literal[0, 1, 2, 3] | None = Field(
        None, description="Impinj search mode (0 reader-selected, 1 dual, 2 single, 3 single "
        "with suppression); needs impinj_extensions."
    )
    report_every_n_tags: int = Field(
        100, ge=1, le=65535, description="Ask the reader for a report every N tags."
    )
    report_timeout_ms: int = Field(500, ge=0, description="...or after this many ms.")
    impinj_extensions: bool = Field(
        False, description="Use Impinj custom parameters (only on Impinj readers)."
    )
    epc_filter: list[str] = Field(
        default_factory=list,
        description="Hex prefixes of EPCs to keep (e.g. '30' for SGTIN-96); empty keeps all.",
    )
    keepalive_s: float = Field(
        10.0, gt=0, description="Keepalive period asked of the reader; silence for 3x this "
        "forces a reconnect."
    )
    handshake_timeout_s: float = Field(15.0, gt=0, description="Give up a handshake after this.")
    max_frame_bytes: int = Field(
        1_048_576, ge=1024, description="A frame claiming to be larger desynchronised the stream."
    )
    vendor: Literal["auto", "impinj", "zebra", "generic"] = Field(
        "auto", description="Reader family (profile of safe defaults); auto: detected from the "
        "reader's capabilities (manufacturer, model), which also win over a configured value "
        "that disagrees (counted as a vendor_mismatch anomaly)."
    )
    verify_s: float = Field(
        30.0, gt=0, description="With no tag reported this long, ask the reader (GET_ROSPECS) "
        "whether its ROSpec is still active; a lost one is reinstalled, an inactive one started."
    )
    not_reading_reconnect_s: float = Field(
        60.0, gt=0, description="Connected but not inventorying this long: reconnect afresh."
    )
    antenna_check_s: float = Field(
        60.0, gt=0, description="After this long inventorying, name mapped antennas that never "
        "reported (anomaly antenna_silent)."
    )
    read_tid: bool = Field(
        False, description="Read each tag's TID bank (an AccessSpec) so reads carry the chip "
        "serial that tells a cloned EPC apart; costs read rate, so for benches, reception "
        "and returns readers."
    )
    tid_words: int = Field(6, ge=2, le=32, description="TID words to read (6 = 96-bit TID).")

    @field_validator("epc_filter")
    @classmethod
    def _check_filter(cls, v: list[str]) -> list[str]:
        for prefix in v:
            if not re.fullmatch(r"[0-9A-Fa-f]{1,24}", prefix):
                raise ValueError(f"EPC filter {prefix!r} is not a hex prefix")
        return [p.upper() for p in v]

    @model_validator(mode="after")
    def _check_impinj(self) -> LlrpOptions:
        if self.search_mode is not None and not self.impinj_extensions \
                and self.vendor != "impinj":
            raise ValueError("search_mode is an Impinj extension: set impinj_extensions = true "
                             "(only on Impinj readers) or remove search_mode")
        return self


class SerialOptions(_Strict):
    """Options of a desk or handheld reader on a serial port."""

    protocol: Literal["binary", "ascii", "tsl"] = Field(
        "binary", description="binary: framed command protocol of common UHF modules; "
        "ascii: one tag per line; tsl: TSL/Zebra handhelds (ASCII 2.0 commands, Bluetooth "
        "SPP or USB serial), with 'find this item'."
    )
    baudrate: int = Field(115200, description="Serial speed.")
    address: int = Field(0xFF, ge=0, le=255, description="Module address (binary protocol).")
    line_pattern: str = Field(
        r"^(?P<epc>[0-9A-Fa-f]{8,62})(?:[,; ](?P<rssi>-?\d+(?:\.\d+)?))?"
        r"(?:[,; ](?P<antenna>\d+))?\s*$",
        description="ascii mode: regex with named group epc and optional rssi, antenna.",
    )
    poll_interval_ms: int = Field(200, ge=0, description="Inventory command period (binary).")

    @field_validator("line_pattern")
    @classmethod
    def _check_pattern(cls, v: str) -> str:
        try:
            rx = re.compile(v)
        except re.error as exc:
            raise ValueError(f"invalid regular expression: {exc}") from exc
        if "epc" not in rx.groupindex:
            raise ValueError("the pattern needs a named group (?P<epc>...)")
        return v


class ReaderConfig(_Strict):
    kind: Literal["llrp", "serial"] = Field(description="llrp (fixed readers) or serial.")
    address: str = Field(
        description="llrp: host name or IP; serial: device path (e.g. /dev/ttyUSB0)."
    )
    antennas: dict[str, str] = Field(
        description="Antenna number -> zone name, e.g. {1 = 'stockroom', 2 = 'floor'}."
    )
    enabled: bool = Field(True, description="Set false to keep the entry but not connect.")
    silent_after_s: float = Field(
        1800.0, gt=0, description="Inventorying but no tag reported this long: a `silent` "
        "anomaly and a reader_silent alert (an empty field is legitimate, so no reconnect)."
    )
    llrp: LlrpOptions = Field(default_factory=LlrpOptions, description="LLRP reader options.")
    serial: SerialOptions = Field(
        default_factory=SerialOptions, description="Serial reader options."
    )

    @field_validator("antennas")
    @classmethod
    def _check_antennas(cls, v: dict[str, str]) -> dict[str, str]:
        if not v:
            raise ValueError("map at least one antenna to a zone")
        for port in v:
            if not port.isdigit() or not 1 <= int(port) <= 65535:
                raise ValueError(f"antenna {port!r} is not a number 1-65535")
        return v

    def antenna_zones(self) -> dict[int, str]:
        return {int(k): z for k, z in self.antennas.items()}


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
            path = ".".join(str(p) for p in loc) or "(top)"
            line = _locate(text, loc)
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
        line = _locate(text, loc)
        where = f"{source}:{line}: " if line else f"{source}: "
        result.append(f"{where}{'.'.join(loc)}: {msg}")
    return result


def load_config(path: str | Path) -> Config:
    return parse_config(*read_config_text(path))
