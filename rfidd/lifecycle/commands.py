"""Validation of lifecycle commands (HQ over MQTT, the local HTTP API, the CLI).

One pydantic model per command, `extra="forbid"`: a misspelled field is an error naming it,
not a silently ignored value. EPCs come as hex (EPC bank) or as an SGTIN pure-identity URI and
are normalised to upper-case hex, the key of every table.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from inventory.epc import decode, sgtin96_hex
from inventory.lifecycle import Hold, Step

TXN_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/#-]{0,127}$"
SITE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
MAX_EPCS = 5000
_HEX = re.compile(r"^[0-9A-F]+$")
_SGTIN_URI = re.compile(r"^urn:epc:id:sgtin:(\d{6,12})\.(\d{1,7})\.(\d{1,12})$")
_SSCC_URI = r"^urn:epc:id:sscc:\d{6,12}\.\d{5,11}$"
_TID = re.compile(r"^[0-9A-F]{8,64}$")


def normalize_epc(text: str) -> str:
    """Hex EPC bank or SGTIN pure-identity URI -> upper-case hex; ValueError says why not."""
    if not isinstance(text, str):
        raise ValueError(f"EPC must be a string, got {type(text).__name__}")
    s = text.strip()
    if s.lower().startswith("urn:"):
        m = _SGTIN_URI.match(s)
        if not m:
            raise ValueError(f"EPC URI {text!r}: only numeric SGTIN URIs "
                             "(urn:epc:id:sgtin:CompanyPrefix.ItemRef.Serial) are accepted")
        cp, ref, serial = m.groups()
        if len(cp) + len(ref) != 13:
            raise ValueError(f"EPC URI {text!r}: company prefix + item reference must be 13 digits")
        body = ref[0] + cp + ref[1:]
        from inventory.epcis import gs1_check_digit

        try:
            return sgtin96_hex(body + gs1_check_digit(body), int(serial), len(cp))
        except Exception as exc:  # epcpy: serial too large for SGTIN-96...
            raise ValueError(f"EPC URI {text!r} has no SGTIN-96 encoding: {exc}") from None
    h = s.upper().removeprefix("0X")
    if not h or not _HEX.match(h) or len(h) % 4 or len(h) > 124:
        raise ValueError(f"EPC {text!r} is neither hex in whole 16-bit words nor an SGTIN URI")
    if not decode(h).ok:
        raise ValueError(f"EPC {text!r} does not decode to a GS1 identity")
    return h


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_max_length=256)


def _aware(v: datetime | None, name: str) -> datetime | None:
    if v is not None and v.tzinfo is None:
        raise ValueError(f"{name} needs a UTC offset (e.g. 2024-05-01T10:00:00Z)")
    return v


class ItemsCommand(_Strict):
    """Items that undergo one step under one business transaction (receipt, RMA, ASN, order).

    `txn` makes the command idempotent: the same (item, step, txn) is applied once.
    `at` is the business time (default: when the daemon applies it).
    """

    txn: str = Field(pattern=TXN_PATTERN)
    epcs: list[str] = Field(min_length=1, max_length=MAX_EPCS)
    at: datetime | None = None

    @field_validator("epcs")
    @classmethod
    def _epcs(cls, v: list[str]) -> list[str]:
        out: list[str] = []
        seen: dict[str, int] = {}
        for i, raw in enumerate(v):
            try:
                h = normalize_epc(raw)
            except ValueError as exc:
                raise ValueError(f"epcs[{i}]: {exc}") from None
            if h in seen:
                raise ValueError(f"epcs[{i}]: {raw!r} repeats epcs[{seen[h]}]")
            seen[h] = i
            out.append(h)
        return out

    @field_validator("at")
    @classmethod
    def _at(cls, v: datetime | None) -> datetime | None:
        return _aware(v, "at")


class SaleCommand(ItemsCommand):
    """A sale under receipt `txn`; `collect_later`: the client collects it later (alteration,
    gift wrap): sold, out of stock, and not free to leave until collected."""

    collect_later: bool = False


class RestockCommand(ItemsCommand):
    """Returned items inspected: back to sellable stock (`stock` or `floor`), to `repair`, or
    to `destroy`; `txn` is the inspection (or the RMA)."""

    to: Literal["stock", "floor", "repair", "destroy"]


class HoldCommand(ItemsCommand):
    """Reserve items for a client (a reference, not a name) until `until`; `for_site` when
    another store of the chain asked (HQ command): the item then travels by transfer."""

    client: str = Field(pattern=r"^[^\x00-\x1f]{1,128}$")
    staff: str | None = Field(None, max_length=128)
    until: datetime | None = None
    for_site: str | None = Field(None, pattern=SITE_PATTERN)

    @field_validator("until")
    @classmethod
    def _until(cls, v: datetime | None) -> datetime | None:
        return _aware(v, "until")


class ReturnCommand(ItemsCommand):
    """A customer return; `txn` is the RMA, `sale_txn` the original receipt when known."""

    sale_txn: str | None = Field(None, pattern=TXN_PATTERN)


class ShipCommand(ItemsCommand):
    """Pack (into `carton`, an SSCC URI, when given) and ship to `to_site`; `txn` is the ASN id."""

    to_site: str = Field(pattern=SITE_PATTERN)
    carton: str | None = Field(None, pattern=_SSCC_URI)


class LoanOutCommand(ItemsCommand):
    """A loan (press shoot, client approval) due back at `due`."""

    due: datetime
    borrower: str | None = Field(None, max_length=128)

    @field_validator("due")
    @classmethod
    def _due(cls, v: datetime) -> datetime:
        out = _aware(v, "due")
        assert out is not None
        return out


class OpenSessionCommand(_Strict):
    """A commissioning batch: tags of `gtin` read at a bench, up to `expected` of them."""

    gtin: str = Field(pattern=r"^\d{8,14}$")
    expected: int = Field(ge=1, le=100_000)
    zone: str | None = Field(None, pattern=SITE_PATTERN)
    id: str | None = Field(None, pattern=SITE_PATTERN)

    @field_validator("gtin")
    @classmethod
    def _gtin(cls, v: str) -> str:
        from inventory.epcis import gs1_check_digit

        g = v.zfill(14)
        if gs1_check_digit(g[:-1]) != g[-1]:
            raise ValueError(f"GTIN {v} has a wrong check digit")
        return g


class BindCommand(_Strict):
    """One encoded tag to commission when a bench reads it; `tid` (hex) to tell a clone later."""

    epc: str
    tid: str | None = None
    session: str | None = Field(None, pattern=SITE_PATTERN)

    @field_validator("epc")
    @classmethod
    def _epc(cls, v: str) -> str:
        h = normalize_epc(v)
        if decode(h).gtin14 is None:
            raise ValueError(f"EPC {v!r} is not an SGTIN: only trade items are commissioned")
        return h

    @field_validator("tid")
    @classmethod
    def _tid(cls, v: str | None) -> str | None:
        if v is None:
            return None
        t = v.strip().upper()
        if not _TID.match(t):
            raise ValueError(f"TID {v!r} is not 8-64 hex digits")
        return t


def transition_fields(cmd: ItemsCommand) -> dict[str, Any]:
    """The Transition fields a command's own model adds (sale, restock, hold)."""
    if isinstance(cmd, SaleCommand):
        return {"collect_later": cmd.collect_later}
    if isinstance(cmd, RestockCommand):
        return {"target": cmd.to}
    if isinstance(cmd, HoldCommand):
        until = cmd.until.timestamp() if cmd.until is not None else None
        return {"hold": Hold(cmd.client, cmd.staff, until, cmd.for_site)}
    return {}


def describe_errors(exc: ValidationError, command: str) -> str:
    """A pydantic error list as one line naming each bad field."""
    parts = []
    for e in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in e["loc"]) or "(payload)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown field"
        parts.append(f"{loc}: {msg}")
    return f"command {command}: " + "; ".join(parts)


def parse(model: type[_Strict], data: Any, command: str) -> Any:
    """Validate `data` against `model`; ValueError naming every bad field."""
    if not isinstance(data, dict):
        raise ValueError(f"command {command}: payload must be a JSON object, "
                         f"got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ValueError(describe_errors(exc, command)) from None


# command name -> (step, model). The same names on MQTT (cmd/<name>) and HTTP.
STEP_COMMANDS: dict[str, tuple[Step, type[ItemsCommand]]] = {
    "sale": (Step.SELL, SaleCommand),
    "restock": (Step.RESTOCK, RestockCommand),
    "hold": (Step.HOLD, HoldCommand),
    "release": (Step.RELEASE, ItemsCommand),
    "collect": (Step.COLLECT, ItemsCommand),
    "return": (Step.RETURN, ReturnCommand),
    "ship": (Step.SHIP, ShipCommand),
    "transfer_out": (Step.TRANSFER_OUT, ShipCommand),
    "transfer_in": (Step.TRANSFER_IN, ItemsCommand),
    "receive": (Step.RECEIVE, ItemsCommand),
    "loan_out": (Step.LOAN_OUT, LoanOutCommand),
    "loan_back": (Step.LOAN_BACK, ItemsCommand),
    "repair_in": (Step.REPAIR_IN, ItemsCommand),
    "repair_out": (Step.REPAIR_OUT, ItemsCommand),
}
MQTT_COMMANDS = ("sale", "return", "ship", "transfer_out", "transfer_in", "loan_out",
                 "loan_back", "repair_in", "repair_out", "shipment", "restock", "hold",
                 "release", "collect")
"""`receive` is HTTP only: HQ's reception of ASNs is the store-operations `asn` command."""
