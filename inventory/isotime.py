"""The one ISO 8601 parser of rfidd: what a site or HQ is given as a time, from any edge (HQ
commands, ASNs, the HTTP API, the CLI, EPCIS documents, replay requests).

One error format everywhere, naming the field: `<field>: <value> is not an ISO 8601 date-time`,
`<field>: <value> has no time zone offset ...`. A time without offset means something else at
each site, so it is refused unless the caller says which zone it means (`naive_as`: the HQ
CLI's "UTC unless it says otherwise").
"""

from __future__ import annotations

from datetime import datetime, tzinfo
from typing import Any


class IsoTimeError(ValueError):
    """A time that cannot be read; `str()` is `<field>: <problem>`, `problem` alone for callers
    whose error already names the field (an import issue, a CLI option)."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


def parse_iso_datetime(value: Any, field: str, *, naive_as: tzinfo | None = None) -> datetime:
    """An ISO 8601 date-time ("Z" or +hh:mm offset) as an aware datetime; a date alone or a
    time without offset only with `naive_as` (taken in that zone). Raises IsoTimeError."""
    if not isinstance(value, str):
        raise IsoTimeError(field, f"expected an ISO 8601 string, got {type(value).__name__}")
    text = value.strip()
    if not text:
        raise IsoTimeError(field, "is required (an ISO 8601 date-time)")
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise IsoTimeError(field, f"{value!r} is not an ISO 8601 date-time") from None
    if t.tzinfo is None:
        if naive_as is None:
            raise IsoTimeError(field, f"{value!r} has no time zone offset (a UTC offset: "
                                      "Z or +hh:mm)")
        t = t.replace(tzinfo=naive_as)
    return t


__all__ = ["IsoTimeError", "parse_iso_datetime"]
