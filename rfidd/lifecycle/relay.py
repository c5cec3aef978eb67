"""HQ-side ASN relay: `{prefix}/{origin}/asn` -> `{prefix}/{destination}/cmd/asn` and
`.../cmd/shipment`.

Why a relay rather than sites publishing on each other's topics: a site's broker credentials
then only need write access under its own prefix (a compromised store PC cannot command the
other stores), and HQ checks that the ASN comes from the site it names as origin. The relay is
at-least-once: it subscribes with manual acknowledgement and acknowledges an ASN only after the
broker has acknowledged both forwarded copies; the destination's commands are idempotent (ASN
content hash at reception, (epc, step, txn) in the lifecycle), so a duplicate is harmless.
MQTT 5 shared subscription: several HQ instances share the work.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from inventory.asn import parse_asn_json

log = logging.getLogger("rfidd.lifecycle.relay")

_SITE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
FORWARD_COMMANDS = ("asn", "shipment")
MAX_ASN_BYTES = 256 * 1024


class AsnRelay:
    """Run with start()/stop(); `stats` counts forwarded and dropped ASNs."""

    def __init__(self, host: str, port: int, *, topic_prefix: str = "rfidd/v1",
                 share_group: str | None = "rfidd-asn-relay", client_id: str | None = None,
                 username: str | None = None, password: str | None = None) -> None:
        self.prefix = topic_prefix
        self.host, self.port = host, port
        filt = f"{topic_prefix}/+/asn"
        self.topic_filter = f"$share/{share_group}/{filt}" if share_group else filt
        self.stats = {"forwarded": 0, "dropped": 0}
        self._pending: dict[int, tuple[int, int]] = {}  # outgoing mid -> (inbound mid, qos)
        self._left: dict[int, int] = {}  # inbound mid -> outgoing copies not yet acknowledged
        self._lock = threading.RLock()
        self.subscribed = threading.Event()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id or "",
                                   protocol=mqtt.MQTTv5, manual_ack=True)
        if username is not None:
            self._client.username_pw_set(username, password)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = lambda *_a: self.subscribed.set()
        self._client.on_message = self._on_message
        self._client.on_publish = self._on_publish

    def start(self) -> None:
        self._client.connect_async(self.host, self.port, keepalive=30)
        self._client.loop_start()

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: ReasonCode,
                    _p: Any) -> None:
        if reason.is_failure:
            log.error("ASN relay: broker refused the connection: %s", reason)
            return
        client.subscribe(self.topic_filter, qos=1)

    def _drop(self, client: mqtt.Client, msg: mqtt.MQTTMessage, why: str) -> None:
        self.stats["dropped"] += 1
        log.warning("ASN relay: dropped message on %s: %s", msg.topic, why)
        client.ack(msg.mid, msg.qos)

    def _on_message(self, client: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        parts = msg.topic[len(self.prefix) + 1:].split("/")
        if not msg.topic.startswith(self.prefix + "/") or len(parts) != 2 \
                or not _SITE.match(parts[0]):
            self._drop(client, msg, "not a site asn topic")
            return
        origin = parts[0]
        if len(msg.payload) > MAX_ASN_BYTES:
            self._drop(client, msg, f"{len(msg.payload)} bytes exceed {MAX_ASN_BYTES}")
            return
        parsed = parse_asn_json(bytes(msg.payload), source=msg.topic)
        if not parsed.ok or len(parsed.asns) != 1:
            errs = "; ".join(f"{e.field}: {e.message}" for e in parsed.errors[:5])
            self._drop(client, msg, f"not one valid ASN: {errs or 'several ASNs'}")
            return
        asn = parsed.asns[0]
        if asn.origin != origin:
            self._drop(client, msg, f"ASN {asn.asn_id} names origin {asn.origin!r} but came "
                       f"from site {origin!r}")
            return
        if not _SITE.match(asn.destination) or asn.destination == origin:
            self._drop(client, msg, f"ASN {asn.asn_id}: bad destination {asn.destination!r}")
            return
        with self._lock:
            self._left[msg.mid] = len(FORWARD_COMMANDS)
            for cmd in FORWARD_COMMANDS:
                info = client.publish(f"{self.prefix}/{asn.destination}/cmd/{cmd}",
                                      bytes(msg.payload), qos=1)
                self._pending[info.mid] = (msg.mid, msg.qos)
        log.info("ASN relay: %s %s -> %s (%d items)", asn.asn_id, origin, asn.destination,
                 asn.expected_items)

    def _on_publish(self, client: mqtt.Client, _u: Any, mid: int, reason: ReasonCode,
                    _p: Any) -> None:
        with self._lock:
            src = self._pending.pop(mid, None)
            if src is None:
                return
            in_mid, qos = src
            self._left[in_mid] -= 1
            if self._left[in_mid] > 0:
                return
            del self._left[in_mid]
        self.stats["forwarded"] += 1
        client.ack(in_mid, qos)
