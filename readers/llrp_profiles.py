"""Reader families: who the reader says it is, and the safe defaults for each family.

The vendor comes from GET_READER_CAPABILITIES (GeneralDeviceCapabilities: the manufacturer's IANA
private enterprise number, the model number, the firmware version); a configured `vendor` is a
expectation, checked against it. Vendor extensions go only to a reader whose capabilities name
that vendor: an Impinj message to another reader is answered with ERROR_MESSAGE.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# IANA private enterprise numbers as LLRP readers report them.
IMPINJ_PEN = 25882
MOTOROLA_PEN = 161  # Zebra FX readers still report Motorola's number
ZEBRA_PEN = 10642
VENDOR_OF_PEN = {IMPINJ_PEN: "impinj", MOTOROLA_PEN: "zebra", ZEBRA_PEN: "zebra"}
VENDORS = ("impinj", "zebra", "generic")


@dataclass(frozen=True)
class Profile:
    """What a family gets by default. `defaults` are LLRP option values (rfidd.config
    LlrpOptions names) used where the configuration leaves the option unset; an option set
    in the configuration always wins. `sources`: where each choice comes from."""

    vendor: str
    impinj_extensions: bool  # may send IMPINJ_ENABLE_EXTENSIONS and Impinj ROSpec parameters
    defaults: Mapping[str, Any]
    note: str
    sources: tuple[str, ...] = ()

    @property
    def search_mode(self) -> int | None:
        """The Impinj search mode this family uses when the config leaves it unset."""
        value = self.defaults.get("search_mode")
        return None if value is None else int(value)


# Defaults shared by every family, each with its reason:
# - mode: none; the reader's default mode. Mode tables differ by model and region, and the
#   mode is selected by identifier from the capabilities' table (sllurp README "Known Issues",
#   #63, #124, #125), so a family-wide identifier would be wrong on some model.
# - report_timeout_ms 500: the AISpec stop trigger that carries report_every_n_tags (sllurp
#   implements it as UponNTags-or-timeout); without it a quiet field reports only at the
#   next N tags.
_COMMON: dict[str, Any] = {"report_timeout_ms": 500, "tag_population": 32}

PROFILES: dict[str, Profile] = {
    "impinj": Profile(
        "impinj", True,
        {**_COMMON, "session": 1, "search_mode": 2, "impinj_extensions": True,
         "report_every_n_tags": 100, "keepalive_s": 10.0},
        "Impinj: session 1 with Dual Target search (every tag re-inventoried from both A and "
        "B, as presence tracking needs); IMPINJ_ENABLE_EXTENSIONS only once the capabilities "
        "confirm Impinj; a report per 100 tags (~10 per second at the ~1,100 tags/s an R420 "
        "quotes)",
        ("Impinj, 'Understanding EPC Gen2 Search Modes and Sessions' (support.impinj.com "
         "article 202756158, cited in sllurp #109 and #128): search mode 2 = Dual Target",
         "sllurp #119, #118, #45: extensions sent to another reader are answered with "
         "ERROR_MESSAGE", "sllurp #97, #193: read rate far below spec with small "
         "report_every_n_tags; sllurp #134: report_every_n_tags 1 floods a small host")),
    "zebra": Profile(
        "zebra", False,
        {**_COMMON, "session": 0, "search_mode": None, "impinj_extensions": False,
         "report_every_n_tags": 50, "keepalive_s": 5.0},
        "Zebra FX: no Impinj extensions; session 0 (the FX firmware forces A/B flip on S0, so "
        "tags already read keep being reported); a report per 50 tags (~4 per second at the "
        "~200 tags/s of dense-reader mode); keepalive 5 s, so a link lost while the reader "
        "buffers reports is found within 15 s; vendor parameters sllurp cannot decode are "
        "skipped and counted",
        ("sllurp #75 (FX7500: tags read once are not reported again), #218 (FX9600 log: "
         "'Forcing ABFlip for session S0')", "sllurp #168, #203, #115: vendor parameters "
         "that sllurp cannot decode", "Zebra FX7500/FX9600 manual: ~66,000 messages buffered "
         "while no client is connected; ~200 tags/s in dense-reader mode")),
    "generic": Profile(
        "generic", False,
        {**_COMMON, "session": 1, "search_mode": None, "impinj_extensions": False,
         "report_every_n_tags": 100, "keepalive_s": 10.0},
        "generic LLRP: standard messages only (no vendor extension); session 1 (a tag's "
        "inventoried flag persists 0.5-5 s, so each tag is re-read within seconds); "
        "START_ROSPEC sent when the ROSpec is not active after ENABLE_ROSPEC",
        ("EPC Gen2 (ISO/IEC 18000-63) session persistence: S1 0.5-5 s",
         "sllurp #57, #177 (ThingMagic), #206 (Kathrein), #148 (Sensormatic): Impinj "
         "parameters refused by other readers")),
}
PROFILE_OPTIONS = ("session", "search_mode", "impinj_extensions", "report_every_n_tags",
                   "report_timeout_ms", "tag_population", "keepalive_s")
"""The LLRP options a profile sets when the configuration leaves them unset."""
assert all(set(p.defaults) == set(PROFILE_OPTIONS) for p in PROFILES.values())


@dataclass(frozen=True)
class DeviceInfo:
    """Identity of the reader as its capabilities state it."""

    manufacturer: int
    model: int
    firmware: str
    max_antennas: int
    modes: tuple[int, ...]  # ModeIdentifiers in table order

    @property
    def vendor(self) -> str:
        return VENDOR_OF_PEN.get(self.manufacturer, "generic")


def device_info(capabilities: Mapping[str, Any]) -> DeviceInfo:
    """DeviceInfo from sllurp's decoded GET_READER_CAPABILITIES_RESPONSE (missing: zeros)."""
    gdc = capabilities.get("GeneralDeviceCapabilities") or {}
    fw = gdc.get("ReaderFirmwareVersion", b"")
    firmware = fw.decode("utf-8", "replace") if isinstance(fw, bytes | bytearray) else str(fw)
    try:
        table = capabilities["RegulatoryCapabilities"]["UHFBandCapabilities"][
            "UHFC1G2RFModeTable"]["UHFC1G2RFModeTableEntry"]
        modes = tuple(int(m["ModeIdentifier"]) for m in table)
    except (KeyError, TypeError, ValueError):
        modes = ()
    return DeviceInfo(
        manufacturer=int(gdc.get("DeviceManufacturerName", 0) or 0),
        model=int(gdc.get("ModelName", 0) or 0),
        firmware=firmware,
        max_antennas=int(gdc.get("MaxNumberOfAntennaSupported", 0) or 0),
        modes=modes,
    )


def profile_for(configured: str, detected: str | None) -> Profile:
    """The profile to apply: the detected vendor wins over the configured one (a mismatch is
    an anomaly the caller counts); 'auto' before detection is generic (the safe one)."""
    if detected is not None:
        return PROFILES.get(detected, PROFILES["generic"])
    return PROFILES.get(configured, PROFILES["generic"])
