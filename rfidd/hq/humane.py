"""Times and site messages for people (the CLI, the /chain page): UTC said so, to the second
(HQ's sites span time zones), and a message's fields as "name value" pairs, not raw JSON. The
JSON outputs and APIs keep the full ISO 8601 and the payload as sent."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?$")
_SKIP = {"type", "kind", "site", "@context"}  # shown in their own columns, or noise
MAX_ITEMS = 3  # of a list, then "+n more"
EPOCH_MIN, EPOCH_MAX = 946_684_800, 4_102_444_800  # 2000-01-01..2100-01-01: an epoch instant


def when(t: datetime | None) -> str:
    """'2026-12-02 13:04:05 UTC' (a naive time is taken as UTC, as HQ stores every time)."""
    if t is None:
        return ""
    u = t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)
    return u.strftime("%Y-%m-%d %H:%M:%S UTC")


def when_text(value: str) -> str:
    """An ISO 8601 text as `when` shows it; any other text unchanged."""
    from inventory.isotime import IsoTimeError, parse_iso_datetime

    if not _ISO.match(value):
        return value
    try:  # HQ stores every time in UTC: one without offset is one
        return when(parse_iso_datetime(value, "time", naive_as=UTC))
    except IsoTimeError:
        return value


def _instant(key: str, v: Any) -> bool:
    """Sites publish an alert's or report's instants as epoch seconds (`at`, `closed_at`...)."""
    return ((key == "at" or key.endswith("_at")) and isinstance(v, int | float)
            and not isinstance(v, bool) and EPOCH_MIN <= v < EPOCH_MAX)


def value_text(v: Any, key: str = "") -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if _instant(key, v):
        return when(datetime.fromtimestamp(v, UTC))
    if isinstance(v, float):  # a ratio to 4 digits; a figure in full (12345.67, not 1.235e+04)
        if abs(v) < 1:
            return f"{v:.4g}"
        return format(round(v, 2), "f").rstrip("0").rstrip(".")
    if isinstance(v, str):
        return when_text(v)
    if isinstance(v, dict):
        return ", ".join(f"{k} {value_text(x, str(k))}" for k, x in v.items())
    if isinstance(v, list):
        shown = "; ".join(value_text(x) for x in v[:MAX_ITEMS])
        return shown + (f" (+{len(v) - MAX_ITEMS} more)" if len(v) > MAX_ITEMS else "")
    return "" if v is None else str(v)


def pairs(payload: Any) -> list[tuple[str, str]]:
    """A site message's fields as (name, text), in the order sent; a payload that is not an
    object is one unnamed pair."""
    if not isinstance(payload, dict):
        return [("", value_text(payload))]
    return [(str(k).replace("_", " "), value_text(v, str(k))) for k, v in payload.items()
            if k not in _SKIP and v is not None and v != "" and v != [] and v != {}]
