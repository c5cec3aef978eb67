"""What every store-operations service shares: the error staff can fix, the behaviour knobs,
session ids, and the outbox streams they write to."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from inventory.catalog import ImportIssue
from rfidd.config import Config, ZoneKind

REPORT_STREAM = "report"
ALERT_STREAM = "alert"
LOSS_STATE_KEY = "loss_tracker"


def taken_over(doc: Mapping[str, Any]) -> int | None:
    """Items a take-over count put on the books (its report) or will put there on closing (its
    progress); None for any other count. A take-over expects nothing, the books being what it
    makes, so its "0 of 0 found" tells nothing: this is its figure."""
    if not doc.get("adopt"):
        return None
    books = doc.get("books")
    if isinstance(books, Mapping):
        return len(books.get("taken_over") or [])
    progress = doc.get("progress")
    if isinstance(progress, Mapping):  # running: what it found that the books do not hold
        return int(progress.get("unexpected") or 0)
    return None  # closed without lifecycle books: nothing was put on any


def mark_takeovers(rows: list[dict[str, Any]],
                   count_of: Callable[[str], Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The count listing's take-overs say so (`adopt`) with their figure (`taken_over`): their
    row would read "0 expected, 0 found, no accuracy". Only a count that expected nothing can
    be one, so only those (few: the go-live one, a count of the exit) are looked up."""
    for r in rows:
        if r.get("expected") or r.get("status") not in ("running", "finished"):
            continue
        doc = count_of(str(r["session_id"]))
        src = doc.get("report") if doc.get("status") == "finished" else doc
        if isinstance(src, Mapping) and src.get("adopt"):
            r["adopt"] = True
            r["taken_over"] = taken_over(src)
    return rows


def booked_by_takeover(doc: Mapping[str, Any]) -> set[str]:
    """The EPCs a take-over count put on the books: "unexpected" in its report, yet no
    exception to check (the report's headline counts them)."""
    books = doc.get("books") if doc.get("adopt") else None
    return set(books.get("taken_over") or []) if isinstance(books, Mapping) else set()


class OpsError(Exception):
    """A request staff or HQ can fix; `status` is the HTTP status the API answers with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class OpsSettings:
    """Behaviour knobs; tests set the time constants small."""

    auto_open_reception: bool = True  # an ASN for this site opens (or joins) a reception
    exit_debounce_s: float | None = None  # None: config.shrinkage.exit_alert_debounce_s
    count_event_chunk: int = 1000  # EPCs per cycle_counting event
    apply_chunk: int = 100  # items a closing count or reception books per transaction
    default_count_duration_s: float = 600.0  # scheduled counts
    tick_s: float = 2.0  # live count progress refresh and timed stops
    loss_min_confidence: float = 0.95


def new_id(prefix: str, at: float) -> str:
    """A session id staff can read: kind, UTC time, and a random suffix."""
    stamp = datetime.fromtimestamp(at, UTC).strftime("%Y%m%dT%H%M%S")
    return f"{prefix}-{stamp}-{uuid.uuid4().hex[:6]}"


def issues_text(issues: Sequence[ImportIssue], limit: int = 20) -> str:
    """Import issues in one line (for an HQ command's error reply), at most `limit` of them."""
    shown = "; ".join(str(i) for i in issues[:limit])
    more = len(issues) - limit
    return shown + (f"; ... and {more} more" if more > 0 else "")


def zones_of_kind(config: Config, *kinds: ZoneKind) -> frozenset[str]:
    """The configured zones of these kinds."""
    return frozenset(z for z, zc in config.zones.items() if zc.kind in kinds)


__all__ = ["ALERT_STREAM", "LOSS_STATE_KEY", "REPORT_STREAM", "OpsError", "OpsSettings",
           "issues_text", "new_id", "zones_of_kind"]
