"""The alert workflow: open -> acknowledged -> resolved, with who, when and a note.

An alert (an unsold item through the exit, a refused return) is a claim staff check. Its
resolution is what the figures follow: `confirmed_loss` makes an exit alert confirmed shrinkage,
`false_alarm` (the item never left: a tag read through the door, staff carrying it) and
`recovered` (it left and came back) take it out of every loss figure and put the item back on
the books. An open or acknowledged exit alert is suspected loss.

Pure: `acknowledge` and `resolve` return an `AlertOutcome`; a step that does not apply is a
rejection naming the state the alert is in, not an exception. Repeating the exact step that was
applied (same action, same resolution, same person) is a duplicate, so a retried command
changes nothing.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any


class AlertState(enum.StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class Resolution(enum.StrEnum):
    FALSE_ALARM = "false_alarm"  # the item never left
    RECOVERED = "recovered"  # it left and is back
    CONFIRMED_LOSS = "confirmed_loss"  # gone: confirmed shrinkage


CLEARS_LOSS = frozenset({Resolution.FALSE_ALARM, Resolution.RECOVERED})
MAX_NOTE = 1000


@dataclass(frozen=True, slots=True)
class Alert:
    alert_id: str
    kind: str  # exit_unsold, return_refused, ...
    epc: str
    zone: str | None
    raised_at: float
    home_zone: str | None = None  # last stock or floor zone before the exit
    state: AlertState = AlertState.OPEN
    acknowledged_by: str | None = None
    acknowledged_at: float | None = None
    acknowledged_note: str | None = None
    resolution: Resolution | None = None
    resolved_by: str | None = None
    resolved_at: float | None = None
    resolved_note: str | None = None

    @property
    def loss_status(self) -> str | None:
        """What shrinkage makes of it: suspected until resolved, confirmed on confirmed_loss,
        nothing once cleared."""
        if self.resolution is None:
            return "suspected"
        return "confirmed" if self.resolution is Resolution.CONFIRMED_LOSS else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "alert_id": self.alert_id, "type": self.kind, "epc": self.epc, "zone": self.zone,
            "home_zone": self.home_zone, "raised_at": _iso(self.raised_at),
            "state": self.state.value,
            "acknowledged_by": self.acknowledged_by,
            "acknowledged_at": _iso(self.acknowledged_at),
            "acknowledged_note": self.acknowledged_note,
            "resolution": self.resolution.value if self.resolution else None,
            "resolved_by": self.resolved_by, "resolved_at": _iso(self.resolved_at),
            "resolved_note": self.resolved_note,
        }


@dataclass(frozen=True, slots=True)
class AlertOutcome:
    accepted: bool
    alert: Alert
    duplicate: bool = False
    reason: str | None = None


def acknowledge(alert: Alert, who: str, at: float, note: str | None = None) -> AlertOutcome:
    if (why := _who_note(who, note)) is not None:
        return _reject(alert, "acknowledge", why)
    if alert.state is AlertState.ACKNOWLEDGED:
        if alert.acknowledged_by == who:
            return AlertOutcome(True, alert, duplicate=True)
        return _reject(alert, "acknowledge", f"already acknowledged by {alert.acknowledged_by} "
                       f"at {_iso(alert.acknowledged_at)}")
    if alert.state is AlertState.RESOLVED:
        return _reject(alert, "acknowledge", _resolved(alert))
    return AlertOutcome(True, replace(alert, state=AlertState.ACKNOWLEDGED, acknowledged_by=who,
                                      acknowledged_at=at, acknowledged_note=note))


def resolve(alert: Alert, resolution: Resolution | str, who: str, at: float,
            note: str | None = None) -> AlertOutcome:
    """Resolve an open or acknowledged alert (resolving an open one acknowledges it too)."""
    try:
        res = Resolution(resolution)
    except ValueError:
        return _reject(alert, "resolve", f"resolution {resolution!r} is not one of "
                       f"{', '.join(r.value for r in Resolution)}")
    if (why := _who_note(who, note)) is not None:
        return _reject(alert, "resolve", why)
    if alert.state is AlertState.RESOLVED:
        if alert.resolution is res and alert.resolved_by == who:
            return AlertOutcome(True, alert, duplicate=True)
        return _reject(alert, "resolve", _resolved(alert))
    ack = {} if alert.state is AlertState.ACKNOWLEDGED else {
        "acknowledged_by": who, "acknowledged_at": at}
    return AlertOutcome(True, replace(alert, state=AlertState.RESOLVED, resolution=res,
                                      resolved_by=who, resolved_at=at, resolved_note=note,
                                      **ack))  # type: ignore[arg-type]


def _who_note(who: str, note: str | None) -> str | None:
    if not who or not who.strip():
        return "who: the staff member's name or id is required"
    if len(who) > 128:
        return "who: at most 128 characters"
    if note is not None and len(note) > MAX_NOTE:
        return f"note: at most {MAX_NOTE} characters"
    return None


def _resolved(a: Alert) -> str:
    res = a.resolution.value if a.resolution else "?"
    return f"already resolved as {res} by {a.resolved_by} at {_iso(a.resolved_at)}"


def _reject(a: Alert, action: str, why: str) -> AlertOutcome:
    return AlertOutcome(False, a, reason=f"{action} rejected for alert {a.alert_id} "
                        f"({a.state.value}): {why}")


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
