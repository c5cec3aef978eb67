"""Domain events: what happened to which items, where, why. The EPCIS mapping is in epcis.py."""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field
from hashlib import sha1
from typing import Any

# Namespace for deterministic event ids: the same fact produces the same eventID, so a replay
# (crash between commit and PUBACK, a repeated HQ command) is a duplicate HQ can drop.
EVENT_ID_NAMESPACE = uuid.UUID("6f1c0f8e-2a4b-5c8e-9d3a-7b6e5f4a3c21")
_NAMESPACE_BYTES = EVENT_ID_NAMESPACE.bytes


class Action(enum.StrEnum):
    ADD = "ADD"
    OBSERVE = "OBSERVE"
    DELETE = "DELETE"


@dataclass(frozen=True, slots=True)
class ItemEvent:
    """One business fact about one or more items.

    `biz_step` and `disposition` are CBV short names ("receiving", "sellable_accessible");
    times are seconds since the epoch (UTC); `read_point`/`biz_location` are SGLN URNs.
    """

    event_id: str
    event_time: float
    action: Action
    epcs: tuple[str, ...]
    biz_step: str | None
    disposition: str | None
    read_point: str | None
    biz_location: str | None
    biz_transactions: tuple[tuple[str, str], ...] = ()
    zone: str | None = None
    parent_id: str | None = None
    kind: str = "ObjectEvent"
    extensions: dict[str, Any] = field(default_factory=dict)


def stable_event_id(*parts: object) -> str:
    """A deterministic `urn:uuid:` from the parts that identify a fact: the UUID version 5
    of `uuid.uuid5(EVENT_ID_NAMESPACE, key)`, computed without building a UUID object (a
    count of 100,000 items makes 100,000 of them)."""
    key = "\x1f".join(str(p) for p in parts)
    h = bytearray(sha1(_NAMESPACE_BYTES + key.encode("utf-8"), usedforsecurity=False)
                  .digest()[:16])
    h[6] = (h[6] & 0x0F) | 0x50  # version 5
    h[8] = (h[8] & 0x3F) | 0x80  # RFC 4122 variant
    x = h.hex()
    return f"urn:uuid:{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"
