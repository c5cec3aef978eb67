"""HQ-side ASN relay: `{prefix}/{origin}/asn` -> `{prefix}/{destination}/cmd/asn` and
`.../cmd/shipment`.

Why a relay rather than sites publishing on each other's topics: a site's broker credentials
then only need write access under its own prefix (a compromised store PC cannot command the
other stores), and HQ checks that the ASN comes from the site it names as origin.

At-least-once, across outages: the relay subscribes with manual acknowledgement and acknowledges
an ASN only after the broker has acknowledged both forwarded copies, on the connection that
delivered it (packet ids are per connection: acknowledging an old id on a new connection could
acknowledge another message). With a stable client id it keeps a persistent session
(clean_start=False, session expiry), so ASNs published while the relay is down or reconnecting
wait for it in the broker, and one delivered but not acknowledged before a disconnect is
delivered again. The destination's commands are idempotent (ASN content hash at reception,
(epc, step, txn) in the lifecycle), so a duplicate is harmless. MQTT 5 shared subscription:
several HQ instances share the work.

Signed, when HQ has a signing key (mqtt.relay_signing_key_file): each state-changing command
(`shipment`) is forwarded as a compact JWS of the origin's exact bytes, so a site requiring
HQ-signed commands accepts it; `asn` only informs and stays as sent.
"""

from __future__ import annotations

import itertools
import logging
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode
from prometheus_client import CollectorRegistry, Counter, Gauge

from inventory.asn import parse_asn_json
from rfidd.command_auth import STATE_CHANGING
from rfidd.config import TlsConfig
from rfidd.hq.signing import SigningKeyError, load_signing_key, sign
from rfidd.mqtt_client import ClientSettings, MqttSetupError, build_client, connect

if TYPE_CHECKING:
    from joserfc.jwk import OKPKey

    from rfidd.hq.config import HqMqttConfig

log = logging.getLogger("rfidd.hq.relay")

_SITE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
FORWARD_COMMANDS = ("asn", "shipment")
MAX_ASN_BYTES = 256 * 1024
SITE_COMMAND_BYTES = 256 * 1024
"""rfidd.mqtt.MAX_COMMAND_BYTES (a test keeps them equal): a signed copy, a third larger than
the ASN (base64), must still fit the destination's command limit."""
RESULTS = ("forwarded", "dropped", "failed")


class RelayError(Exception):
    """The relay cannot be set up (unreadable password file, bad CA file...)."""


class RelayMetrics:
    """rfidd_hq_asn_relayed_total{result}, rfidd_hq_asn_relay_connected (bounded labels)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.relayed = Counter(
            "hq_asn_relayed", "ASNs taken from a site's asn topic, by result: forwarded to the "
            "destination, dropped (malformed, wrong origin...), failed (the broker refused a "
            "forwarded copy).", ["result"], namespace="rfidd", registry=self.registry,
        )
        self.connected = Gauge(
            "hq_asn_relay_connected", "1 while the ASN relay is connected to the broker.",
            namespace="rfidd", registry=self.registry,
        )
        for r in RESULTS:
            self.relayed.labels(r)


@dataclass(slots=True)
class _Delivery:
    """One inbound ASN whose forwarded copies are not all acknowledged yet."""

    mid: int
    qos: int
    generation: int
    left: int
    failed: bool = False


class AsnRelay:
    """Run with start()/stop(); `stats` counts forwarded, dropped and failed ASNs.

    Without `client_id` the session is not kept (a random id, no expiry): fine for tests, not
    for HQ, where `from_config` gives a stable id and the configured session expiry.
    """

    def __init__(self, host: str, port: int, *, topic_prefix: str = "rfidd/v1",
                 share_group: str | None = "rfidd-asn-relay", client_id: str | None = None,
                 username: str | None = None, password_file: Path | None = None,
                 tls: TlsConfig | None = None, protocol: str = "5",
                 keepalive_s: int = 30, session_expiry_s: int | None = None,
                 reconnect_min_s: int = 1, reconnect_max_s: int = 60,
                 metrics: RelayMetrics | None = None,
                 signing_key_file: Path | None = None) -> None:
        if protocol not in ("5", "3.1.1"):
            raise ValueError(f"protocol must be '5' or '3.1.1', got {protocol!r}")
        self.prefix = topic_prefix
        self.host, self.port = host, port
        self.v5 = protocol == "5"
        self.persistent = client_id is not None
        if session_expiry_s is None:
            session_expiry_s = 7 * 86_400 if self.persistent else 0
        self.settings = ClientSettings(
            host=host, port=port, client_id=client_id or "",
            protocol="5" if self.v5 else "3.1.1", keepalive_s=keepalive_s,
            persistent_session=self.persistent, session_expiry_s=session_expiry_s,
            username=username, password_file=password_file, tls=tls,
            reconnect_min_s=reconnect_min_s, reconnect_max_s=reconnect_max_s,
            manual_ack=True, logger="rfidd.hq.relay.paho",
        )
        filt = f"{topic_prefix}/+/asn"
        # Shared subscriptions are MQTT 5; a 3.1.1 relay must run alone.
        self.topic_filter = f"$share/{share_group}/{filt}" if share_group and self.v5 else filt
        self.metrics = metrics or RelayMetrics()
        self.signing_key: OKPKey | None = None
        if signing_key_file is not None:
            try:
                self.signing_key = load_signing_key(signing_key_file)
            except SigningKeyError as exc:
                raise RelayError(f"ASN relay: {exc}") from None
        self.stats = dict.fromkeys(RESULTS, 0)
        self._deliveries: dict[int, _Delivery] = {}  # token -> inbound ASN in progress
        self._pending: dict[int, int] = {}  # outgoing mid -> token
        self._tokens = itertools.count(1)
        self._generation = 0
        self._lock = threading.RLock()
        self.subscribed = threading.Event()
        self.connected = threading.Event()
        try:
            # Forwarded copies are never dropped by paho's own queue (the factory's default).
            self._client = build_client(self.settings)
        except MqttSetupError as exc:
            raise RelayError(f"ASN relay: {exc}") from None
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = lambda *_a: self.subscribed.set()
        self._client.on_message = self._on_message
        self._client.on_publish = self._on_publish

    @classmethod
    def from_config(cls, config: HqMqttConfig, *, metrics: RelayMetrics | None = None,
                    reconnect_min_s: int = 1, reconnect_max_s: int = 60) -> AsnRelay:
        """The relay of `rfidd hq run`: the consumer's broker, credentials and TLS (through
        the one client factory, so both links check certificates alike), its own client id.

        Raises RelayError naming the setting when a secret or certificate cannot be loaded.
        """
        host, port = config.host_port()
        return cls(host, port, topic_prefix=config.topic_prefix,
                   share_group=config.relay_share_group, client_id=config.relay_client_id(),
                   username=config.username, password_file=config.password_file,
                   tls=config.tls if config.url.startswith("mqtts://") else None,
                   protocol=config.protocol, keepalive_s=config.keepalive_s,
                   session_expiry_s=config.session_expiry_s, reconnect_min_s=reconnect_min_s,
                   reconnect_max_s=reconnect_max_s, metrics=metrics,
                   signing_key_file=config.relay_signing_key_file)

    def start(self) -> None:
        """Connect in the background (the broker may be down); returns at once."""
        connect(self._client, self.settings)
        self._client.loop_start()

    def stop(self) -> None:
        """Disconnect; ASNs not yet acknowledged stay in the session for the next start."""
        self._client.disconnect()
        self._client.loop_stop()
        self.connected.clear()
        self.metrics.connected.set(0)

    def wait_subscribed(self, timeout: float) -> bool:
        return self.subscribed.wait(timeout)

    # ------------------------------------------------------------------ paho callbacks

    def _on_connect(self, client: mqtt.Client, _u: Any, flags: Any, reason: ReasonCode,
                    _p: Any) -> None:
        if reason.is_failure:
            log.error("ASN relay: broker %s:%d refused the connection: %s", self.host,
                      self.port, reason)
            return
        with self._lock:
            self._generation += 1
        self.connected.set()
        self.metrics.connected.set(1)
        log.info("ASN relay connected to %s:%d (session present: %s), filter %s", self.host,
                 self.port, getattr(flags, "session_present", None), self.topic_filter)
        client.subscribe(self.topic_filter, qos=1)

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: ReasonCode,
                       _p: Any) -> None:
        if self.connected.is_set():
            log.warning("ASN relay: broker connection lost (%s); reconnecting", reason)
        self.connected.clear()
        self.metrics.connected.set(0)

    def _count(self, result: str) -> None:
        self.stats[result] += 1
        self.metrics.relayed.labels(result).inc()

    def _ack(self, client: mqtt.Client, mid: int, qos: int, generation: int) -> None:
        with self._lock:
            current = generation == self._generation
        if current and qos > 0:
            client.ack(mid, qos)
        # Otherwise the connection that delivered it is gone: the broker delivers it again.

    def _drop(self, client: mqtt.Client, msg: mqtt.MQTTMessage, generation: int,
              why: str) -> None:
        self._count("dropped")
        log.warning("ASN relay: dropped message on %s: %s", msg.topic, why)
        self._ack(client, msg.mid, msg.qos, generation)

    def _on_message(self, client: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            generation = self._generation
        try:
            self._relay(client, msg, generation)
        except Exception as exc:  # never kill paho's network thread
            log.exception("ASN relay: message on %s", msg.topic)
            self._drop(client, msg, generation, f"internal error: {exc}")

    def _relay(self, client: mqtt.Client, msg: mqtt.MQTTMessage, generation: int) -> None:
        parts = msg.topic[len(self.prefix) + 1:].split("/")
        if not msg.topic.startswith(self.prefix + "/") or len(parts) != 2 \
                or not _SITE.match(parts[0]):
            self._drop(client, msg, generation, "not a site asn topic")
            return
        origin = parts[0]
        if len(msg.payload) > MAX_ASN_BYTES:
            self._drop(client, msg, generation,
                       f"{len(msg.payload)} bytes exceed {MAX_ASN_BYTES}")
            return
        parsed = parse_asn_json(bytes(msg.payload), source=msg.topic)
        if not parsed.ok or len(parsed.asns) != 1:
            errs = "; ".join(f"{e.field}: {e.message}" for e in parsed.errors[:5])
            self._drop(client, msg, generation, f"not one valid ASN: {errs or 'several ASNs'}")
            return
        asn = parsed.asns[0]
        if asn.origin != origin:
            self._drop(client, msg, generation, f"ASN {asn.asn_id} names origin "
                       f"{asn.origin!r} but came from site {origin!r}")
            return
        if not _SITE.match(asn.destination) or asn.destination == origin:
            self._drop(client, msg, generation,
                       f"ASN {asn.asn_id}: bad destination {asn.destination!r}")
            return
        raw = bytes(msg.payload)
        # A site requiring HQ's signature refuses an unsigned state-changing command.
        bodies = {cmd: sign(self.signing_key, raw)
                  if self.signing_key is not None and cmd in STATE_CHANGING else raw
                  for cmd in FORWARD_COMMANDS}
        big = max(len(b) for b in bodies.values())
        if big > SITE_COMMAND_BYTES:
            self._drop(client, msg, generation, f"ASN {asn.asn_id}: signed, {big} bytes exceed "
                       f"the site's command limit of {SITE_COMMAND_BYTES}")
            return
        with self._lock:
            token = next(self._tokens)
            self._deliveries[token] = _Delivery(msg.mid, msg.qos, generation,
                                                len(FORWARD_COMMANDS))
            for cmd in FORWARD_COMMANDS:
                info = client.publish(f"{self.prefix}/{asn.destination}/cmd/{cmd}",
                                      bodies[cmd], qos=1)
                # Not connected any more: paho keeps the copy and sends it after reconnecting.
                self._pending[info.mid] = token
        log.info("ASN relay: %s %s -> %s (%d items)", asn.asn_id, origin, asn.destination,
                 asn.expected_items)

    def _on_publish(self, client: mqtt.Client, _u: Any, mid: int, reason: ReasonCode,
                    _p: Any) -> None:
        with self._lock:
            token = self._pending.pop(mid, None)
            d = self._deliveries.get(token) if token is not None else None
            if d is None:
                return
            d.left -= 1
            if reason.is_failure:
                d.failed = True
                log.error("ASN relay: the broker refused a forwarded copy (mid %d): %s; is HQ "
                          "allowed to publish on the sites' cmd topics?", mid, reason)
            if d.left > 0:
                return
            del self._deliveries[token]  # type: ignore[arg-type]
        self._count("failed" if d.failed else "forwarded")
        self._ack(client, d.mid, d.qos, d.generation)
