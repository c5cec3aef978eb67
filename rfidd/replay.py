"""`cmd/replay`: HQ asks the site to publish journaled events again.

Why: a PUBACK is the broker's receipt, not HQ's. A broker that dies before saving what it
acknowledged, or an HQ restored from an old backup, is missing events the site has marked sent.
Each journaled event has a gap-free sequence number; HQ asks for the numbers it lacks (or for
everything since a time) and the site queues those events again through its outbox, in order,
behind an announcement saying what it queued. HQ drops the copies it already has by eventID.

Payload (JSON object), one of:
  {"ranges": [[first, last], ...]}   sequence numbers, inclusive
  {"from_seq": N, "to_seq": M}       to_seq defaults to the latest
  {"since": "2026-12-01T00:00:00Z"}  everything journaled since that instant
plus an optional "request_id" (echoed in the announcement, for HQ's progress display).
"""

from __future__ import annotations

import logging
import re
import time
from datetime import UTC, datetime
from typing import Any

from inventory.epcis import parse_datetime
from rfidd.context import ServiceContext
from rfidd.store import repo

log = logging.getLogger(__name__)

MAX_RANGES = 1000
CHUNK = 5000  # rows per transaction: a long replay never holds the write lock for long
_REQUEST_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


def _int(data: dict[str, Any], key: str, where: str = "") -> int:
    v = data[key]
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"replay: {where or key} must be a whole number >= 1, got {v!r}")
    return v


def _since(value: Any) -> float:
    return parse_datetime(value, "replay: since").timestamp()


def parse_request(data: Any) -> tuple[str | None, list[tuple[int, int]] | None, float | None]:
    """(request_id, ranges or None, since or None); ValueError names the bad field."""
    if not isinstance(data, dict):
        raise ValueError(f"replay: payload is {type(data).__name__}, expected an object")
    unknown = set(data) - {"request_id", "ranges", "from_seq", "to_seq", "since"}
    if unknown:
        raise ValueError(f"replay: unknown fields {sorted(unknown)}")
    rid = data.get("request_id")
    if rid is not None and (not isinstance(rid, str) or not _REQUEST_ID.match(rid)):
        raise ValueError("replay: request_id must be 1-128 of A-Z a-z 0-9 _ . : -")
    modes = [k for k in ("ranges", "from_seq", "since") if k in data]
    if len(modes) != 1:
        raise ValueError("replay: give exactly one of ranges, from_seq or since")
    if "to_seq" in data and "from_seq" not in data:
        raise ValueError("replay: to_seq needs from_seq")
    if "since" in data:
        return rid, None, _since(data["since"])
    if "from_seq" in data:
        first = _int(data, "from_seq")
        last = _int(data, "to_seq") if "to_seq" in data else 2**62
        if last < first:
            raise ValueError(f"replay: to_seq {last} is before from_seq {first}")
        return rid, [(first, last)], None
    raw = data["ranges"]
    if not isinstance(raw, list) or not raw or len(raw) > MAX_RANGES:
        raise ValueError(f"replay: ranges must be a list of 1-{MAX_RANGES} [first, last] pairs")
    ranges: list[tuple[int, int]] = []
    for i, pair in enumerate(raw):
        if not (isinstance(pair, list) and len(pair) == 2):
            raise ValueError(f"replay: ranges[{i}] is not a [first, last] pair")
        first = _int({"v": pair[0]}, "v", f"ranges[{i}][0]")
        last = _int({"v": pair[1]}, "v", f"ranges[{i}][1]")
        if last < first:
            raise ValueError(f"replay: ranges[{i}]: {last} is before {first}")
        ranges.append((first, last))
    return rid, ranges, None


class ReplayService:
    """Registers `cmd/replay` and queues journal events again through the outbox."""

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        ctx.register_command("replay", self.command_replay)

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def command_replay(self, data: Any) -> str:
        rid, ranges, since = parse_request(data)
        ctx = self.ctx
        with ctx.db.session() as s:
            head = repo.last_seq(s)
            if since is not None:
                first = repo.seq_since(s, since)
                ranges = [] if first is None else [(first, head)]
        assert ranges is not None
        clipped = [(a, min(b, head)) for a, b in sorted(ranges) if a <= head]
        announce = {
            "site": ctx.config.site.id,
            "request_id": rid,
            "ranges": [list(r) for r in clipped],
            "events": sum(b - a + 1 for a, b in clipped),
            "last_seq": head,
            "time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        }
        queued = 0
        # The announcement first: the outbox keeps order, so HQ learns what is coming before it.
        with ctx.tracker_lock.waiting(), ctx.transaction() as s:
            repo.enqueue(s, [repo.Message(repo.REPLAY_STREAM, "replay", announce)])
        for a, b in clipped:
            for lo in range(a, b + 1, CHUNK):
                hi = min(b, lo + CHUNK - 1)
                with ctx.tracker_lock.waiting(), ctx.transaction() as s:
                    queued += repo.queue_replay(s, lo, hi, time.time())
        return (f"replay {rid or ''} of {announce['events']} events in {len(clipped)} ranges: "
                f"{queued} queued (the rest still pending)").replace("  ", " ")
