"""Times in the command line's tables: one convention everywhere, the site's time zone (the
daemon's `site.timezone`, from /api/v1/status) and always its offset, so a store PC or a
container left in UTC never shows site times as if they were its own. When the daemon does not
say (unreachable, refused, an older daemon), the CLI machine's own zone, with its offset."""

from __future__ import annotations

from datetime import datetime, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from rfidd.client import ApiClient, Unreachable

_ZONES: dict[str, tzinfo] = {}  # by API base: one status request per CLI run


def local_zone() -> tzinfo:
    """The CLI machine's zone (its offset now)."""
    zone = datetime.now().astimezone().tzinfo
    assert zone is not None
    return zone


def site_zone(base: str) -> tzinfo:
    """The site's zone as the daemon at `base` says, else the local one (not cached: a later
    call may reach the daemon)."""
    if base in _ZONES:
        return _ZONES[base]
    try:
        status = ApiClient(base, timeout=5.0).send("GET", "/api/v1/status")
    except Unreachable:
        return local_zone()
    name = status.body.get("timezone") if status.ok and isinstance(status.body, dict) else None
    if not isinstance(name, str):
        return local_zone()
    try:
        _ZONES[base] = ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return local_zone()
    return _ZONES[base]


def fmt_time(t: float | None, zone: tzinfo) -> str:
    """'2026-12-02 15:18:15 +01:00' (empty for no time)."""
    if t is None:
        return ""
    when = datetime.fromtimestamp(t, zone)
    return when.strftime("%Y-%m-%d %H:%M:%S ") + when.isoformat()[-6:]


def fmt_iso(s: str | None, zone: tzinfo) -> str:
    """An ISO 8601 time from the API (e.g. '...Z') in `zone`; shown as sent if it is not one."""
    if not s:
        return ""
    try:
        when = datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        return s
    if when.tzinfo is None:
        return s
    return fmt_time(when.timestamp(), zone)


__all__ = ["fmt_iso", "fmt_time", "local_zone", "site_zone"]
