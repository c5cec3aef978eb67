"""Settings of the readers ([readers.NAME] tables with their [.llrp] or [.serial] options).

Kept apart from rfidd/config.py (which imports them from here) so that reader options grow
with the drivers without growing the site config module.
"""

from __future__ import annotations

import enum
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


_ID = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"


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
        None, description="Impinj search mode (Impinj LTK ImpinjInventorySearchType: 0 reader "
        "selected, 1 single target, 2 dual target, 3 single target with suppression); needs "
        "impinj_extensions. Unset: the reader family's profile decides (impinj: 2)."
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
