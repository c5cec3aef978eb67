"""After `rfidd restore`: continue the event sequence above anything the site ever numbered.

The restored journal ends at the backup's last number; the events made after the backup took
numbers HQ already holds. Numbering them again would hide a loss among reused numbers (HQ
dedups by eventID and its head never goes backwards). So the first start after a restore,
before anything is journaled or published, reads the site's retained sequence head from the
broker (the highest numbers the site announced), continues above it (RESTORE_MARGIN above,
unless the head is the exact one of a clean stop) and records
the numbers jumped over as a known skip, announced to HQ with the head: HQ does not wait for
them, and reports as lost those it never received that the site no longer has.

No broker within `wait_s` (down, or MQTT disabled), or no retained head: the daemon does not
block; it jumps RESTORE_JUMP_UNKNOWN above the restored journal, says so, and records that skip.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from rfidd.config import MqttConfig
from rfidd.mqtt_client import ClientSettings, build_client, connect
from rfidd.store import sequence
from rfidd.store.db import Database

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Head:
    """What the retained head says the site had numbered (None: it could not be read)."""

    highest: int | None
    source: str  # for the log and the skip's reason
    final: bool = False  # announced at a clean stop: exact, no margin needed


def read_retained_head(config: MqttConfig, site_id: str, *, wait_s: float,
                       quiet_s: float = 1.0) -> Head:
    """The site's retained `{prefix}/{site}/seq` from the broker: connect (at most `wait_s`),
    subscribe, take the retained message (none `quiet_s` after the SUBACK: nothing retained).
    Never raises for a broker problem: the answer says what was learnt."""
    topic = f"{config.topic_prefix}/{site_id}/seq"
    settings = ClientSettings.from_config(
        config, client_id=f"{config.client_id or f'rfidd-{site_id}'}-restore",
        persistent_session=False, session_expiry_s=0)
    got: list[bytes] = []
    subscribed = threading.Event()
    arrived = threading.Event()

    def on_connect(c: mqtt.Client, _u: Any, _f: Any, reason: ReasonCode,
                   _p: Properties | None) -> None:
        if not reason.is_failure:
            c.subscribe(topic, qos=1)

    def on_subscribe(_c: mqtt.Client, _u: Any, _m: int, _r: Any, _p: Any) -> None:
        subscribed.set()

    def on_message(_c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.retain:
            got.append(bytes(msg.payload))
            arrived.set()

    try:
        client = build_client(settings)
    except Exception as exc:  # unreadable password file...: the link will say it again
        return Head(None, f"head unknown: MQTT client cannot be set up ({exc})")
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    deadline = time.monotonic() + wait_s
    try:
        connect(client, settings)
        client.loop_start()
        if not subscribed.wait(max(0.0, deadline - time.monotonic())):
            return Head(None, f"head unknown: broker {settings.host}:{settings.port} not "
                              f"reachable within {wait_s:.0f} s")
        arrived.wait(quiet_s)
    finally:
        client.disconnect()
        client.loop_stop()
    if not got or not got[-1]:
        return Head(None, f"head unknown: nothing retained on {topic}")
    try:
        body = json.loads(got[-1])
        values = [body.get(k) for k in ("published_through", "last_seq")]
        nums = [v for v in values if isinstance(v, int) and not isinstance(v, bool) and v >= 0]
        if not nums:
            raise ValueError("no published_through")
    except (ValueError, AttributeError) as exc:
        return Head(None, f"head unknown: retained {topic} unreadable ({exc})")
    final = body.get("final") is True
    return Head(max(nums), f"retained head {max(nums)}{' (clean stop)' if final else ''}",
                final)


def continue_sequence(db: Database, config: MqttConfig, site_id: str, *,
                      wait_s: float) -> tuple[int, int] | None:
    """At start: if the database was restored, continue its sequence above the learnt head
    and record the skip. Returns the skip (None: not restored)."""
    with db.session() as s:
        at = sequence.restored_at(s)
    if at is None:
        return None
    head = (read_retained_head(config, site_id, wait_s=wait_s) if config.enabled
            else Head(None, "head unknown: MQTT disabled"))
    reason = f"restored {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(at))}; {head.source}"
    with db.write() as s:
        skip = sequence.continue_after_restore(s, head.highest, reason, time.time(),
                                               exact=head.final)
    if skip is None:
        log.info("sequence continued after a restore: nothing was numbered after the backup "
                 "(%s)", reason)
        return None
    first, last = skip
    (log.info if head.highest is not None else log.warning)(
        "sequence continued after a restore: numbers %d-%d skipped (%s); HQ is told with the "
        "sequence head and reports any event it lacks among them", first, last, reason)
    return skip


__all__ = ["Head", "continue_sequence", "read_retained_head"]
