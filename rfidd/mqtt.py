"""The HQ link over MQTT (paho-mqtt 2.x): connection, status and last will, commands; the outbox
publisher is rfidd.mqtt_outbox (a mixin of HqLink).

Delivery is at-least-once: a row leaves the outbox (sent_at set) only when the broker has
acknowledged it (PUBACK). Rows handed to paho but not acknowledged when the connection drops are
resent by paho after the reconnect, before anything newer, so order is kept; after a restart the
unacknowledged rows are simply still pending. HQ drops duplicates by `eventID`.

Threads: paho's network loop (callbacks only record and wake, never touch the database), one
publisher thread (reads the outbox, publishes, marks acknowledged rows), one command thread (runs
the command handler so a slow handler never stalls the network loop).
"""

from __future__ import annotations

import collections
import json
import logging
import random
import select
import socket
import sys
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from rfidd.config import MqttConfig
from rfidd.metrics import Metrics
from rfidd.mqtt_client import (
    ClientSettings,
    MqttSetupError,
    Will,
    build_client,
    connect,
    explain_connect_error,
    is_auth_refusal,
    trust_source,
)
from rfidd.mqtt_commands import CommandHandler, CommandInbox, CommandScreen
from rfidd.mqtt_outbox import (
    SEQ_FIELD,
    DocumentBuilder,
    LinkStats,
    OutboxPublisher,
    _InFlight,
)
from rfidd.store import repo
from rfidd.store.db import Database

log = logging.getLogger(__name__)

ONLINE = b"online"
OFFLINE = b"offline"
MAX_COMMAND_BYTES = 256 * 1024

class _ClosingFilter(logging.Filter):
    def __init__(self, link: HqLink) -> None:
        super().__init__()
        self.link = link

    def filter(self, record: logging.LogRecord) -> bool:
        down = self.link._closing or not self.link._connected.is_set()
        if down and record.levelno >= logging.ERROR:
            # The link logs its own state changes; paho repeats "not connected" per loop.
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


# The link cannot be set up (unreadable password file...): the factory's error, by its old name.
HqLinkError = MqttSetupError


REDELIVERY_DRAIN_S = 2.0  # at most, reading what the broker still sends after our DISCONNECT


class HqLink(OutboxPublisher):
    """Publishes the outbox to HQ and hands HQ commands to `command_handler`.

    Timing constants are parameters so tests can shrink them; defaults suit a store PC.
    `sender` is the sender identity written into EPCIS documents (the site SGLN).
    `poll_interval_s` is a safety net only: commits call `notify`, PUBACKs and connections wake
    the publisher, so it looks at an idle outbox this rarely.
    """

    def __init__(
        self,
        config: MqttConfig,
        site_id: str,
        database: Database,
        metrics: Metrics,
        stop: threading.Event,
        *,
        document_builder: DocumentBuilder,
        command_handler: CommandHandler | None = None,
        command_screen: CommandScreen | None = None,
        sender: str = "",
        max_inflight: int = 20,
        poll_interval_s: float = 30.0,
        stats_interval_s: float = 1.0,
        reconnect_min_s: float = 1.0,
        reconnect_max_s: float = 60.0,
        reconnect_jitter: float = 0.5,
        rejected_retry_s: float = 30.0,
        session_expiry_s: int = 86_400,
        persistent_session: bool = True,
        max_command_bytes: int = MAX_COMMAND_BYTES,
        command_queue_size: int = 100,
        head_interval_s: float = 30.0,
    ) -> None:
        if max_inflight < 1:
            raise ValueError("max_inflight must be at least 1")
        self.config = config
        self.site_id = site_id
        self.db = database
        self.metrics = metrics
        self._stop = stop
        self.document_builder = document_builder
        self.command_handler = command_handler
        self.sender = sender
        self.max_inflight = max_inflight
        self.poll_interval_s = poll_interval_s
        self.stats_interval_s = stats_interval_s
        self.reconnect_min_s = reconnect_min_s
        self.reconnect_max_s = reconnect_max_s
        self.reconnect_jitter = reconnect_jitter
        self.rejected_retry_s = rejected_retry_s
        self.session_expiry_s = session_expiry_s
        # The broker keeps our command subscription (and queues HQ commands) while we are away.
        self.persistent_session = persistent_session
        self.max_command_bytes = max_command_bytes
        self.head_interval_s = head_interval_s

        self.base = f"{config.topic_prefix}/{site_id}"
        self.status_topic = f"{self.base}/status"
        self.epcis_topic = f"{self.base}/epcis"
        self.errors_topic = f"{self.base}/errors"
        # Retained {"published_through": N}: how HQ sees a loss at the tail of the feed.
        self.head_topic = f"{self.base}/seq"
        self.command_filter = f"{self.base}/cmd/+"
        self._command_prefix = f"{self.base}/cmd/"

        self.client_id = config.client_id or f"rfidd-{site_id}"
        self.settings = ClientSettings.from_config(
            config, client_id=self.client_id,
            persistent_session=persistent_session, session_expiry_s=session_expiry_s,
            reconnect_min_s=reconnect_min_s, reconnect_max_s=reconnect_max_s,
            # Retained `offline` when we vanish; published last on connect, so it is current.
            will=Will(self.status_topic, OFFLINE, qos=1, retain=True),
            # A command is acknowledged once handled (or answered with an error), so one that
            # was queued when the daemon stopped is redelivered by the broker, not lost.
            manual_ack=True, max_inflight=max_inflight, logger=f"{__name__}.paho",
            # MQTT 5: ask the broker to send no more unacknowledged commands than one sender's
            # queue holds. Mosquitto 2.0.11 does not hold to it strictly, and 3.1.1 has no such
            # limit: what finds its queue full is redelivered through a reconnect (_redeliver).
            receive_maximum=command_queue_size,
        )
        self.tls = self.settings.tls is not None
        self.host = self.settings.host
        self.port = self.settings.port
        self.v5 = self.settings.v5

        self.stats = LinkStats()
        self._wake = threading.Event()
        self._connected = threading.Event()
        self._closing = False
        self._connect_fail_reason: str | None = None  # the last one logged
        self._refused = False  # the last CONNACK was a refusal (paho's network thread only)
        self._last_refusal: str | None = None  # its reason, logged once until it changes
        self._generation = 0  # connections so far: a command is acked on its own connection
        self._attempt = 0
        self._acks: collections.deque[tuple[int, bool, str]] = collections.deque()
        self._inflight: dict[int, _InFlight] = {}  # publisher thread only
        self._unmarked: list[_InFlight] = []  # acknowledged, mark_sent not yet committed
        self._cursor = 0  # highest outbox id handed to paho (publisher thread only)
        self._retry_at = 0.0
        self._next_stats = 0.0
        self._stats_owed = False  # a gauge update the stats interval held back
        self._depth = 0  # the outbox's pending rows at the last gauge update
        self._head: tuple[int, int] | None = None  # (connection generation, seq) last sent
        self._head_mark = -1  # _head_progress() when the head was last looked up
        self.on_outbox_depth = None
        """Told the outbox's depth at each gauge update (the site's backlog alert)."""
        self._next_head = 0.0
        self._readers: dict[str, bool | str] = {}
        self._readers_lock = threading.Lock()
        self.inbox = CommandInbox(
            site_id, f"{self.base}/cmd/", self.errors_topic, command_handler, metrics,
            self.stats, max_command_bytes=max_command_bytes, queue_size=command_queue_size,
            screen=command_screen,
            # A dropped command comes back only on a new connection of a session that lasts.
            redeliver=self._redeliver
            if persistent_session and (session_expiry_s > 0 or not self.v5) else None)
        self._client_mu = threading.Lock()  # a reconnect for redelivery vs stop()
        self._redelivering = False
        self._client: mqtt.Client | None = None
        self._publisher: threading.Thread | None = None
        self._command_thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Connect in the background and start the threads; returns at once."""
        self._client = self._make_client()
        self.metrics.mqtt_connected.set(0)
        connect(self._client, self.settings)
        self._client.loop_start()
        self._publisher = threading.Thread(
            target=self._run_publisher, name="mqtt-publisher", daemon=True
        )
        self._publisher.start()
        self._command_thread = threading.Thread(
            target=self.inbox.run, name="mqtt-commands", daemon=True,
            args=(lambda: self._client, lambda: self._generation,
                  lambda: self._closing or self._stop.is_set()),
        )
        self._command_thread.start()
        log.info("HQ link to %s:%d (MQTT %s%s) as %s%s", self.host, self.port,
                 self.config.protocol,
                 f", TLS with {trust_source(self.config.tls)}" if self.tls else "",
                 self.client_id,
                 f", user {self.config.username}" if self.config.username is not None else "")

    def stop(self, timeout: float = 5.0, drain_s: float = 3.0) -> None:
        """Clean stop: publish what is pending (up to `drain_s`), then retained `offline`.

        What is still pending after that stays in the outbox for the next start.
        """
        deadline = time.monotonic() + timeout
        drain_until = time.monotonic() + min(drain_s, timeout / 2)
        while self._connected.is_set() and time.monotonic() < drain_until:
            self._wake.set()
            if not self._inflight and self._pending_rows() == 0:
                break
            time.sleep(0.05)
        self._closing = True
        self._wake.set()
        self.inbox.wake()
        if self._publisher is not None:
            self._publisher.join(max(0.1, deadline - time.monotonic()))
        with self._client_mu:
            self._close_client(deadline)
        self._connected.clear()
        self._process_acks()  # PUBACKs that arrived while stopping
        if self._command_thread is not None:
            self._command_thread.join(max(0.1, deadline - time.monotonic()))
        self.metrics.mqtt_connected.set(0)

    def _close_client(self, deadline: float) -> None:
        client = self._client
        if client is not None:
            if self._connected.is_set():
                try:  # the exact head: what a restore of this site continues above
                    self._process_acks()
                    self._publish_head(force=True)
                except Exception as exc:  # the database may be what is failing
                    log.warning("could not publish the final sequence head: %s", exc)
                info = client.publish(self.status_topic, OFFLINE, qos=1, retain=True)
                try:
                    info.wait_for_publish(max(0.1, deadline - time.monotonic()))
                except (RuntimeError, ValueError) as exc:
                    log.warning("could not publish offline status: %s", exc)
            client.disconnect()
            client.loop_stop()

    def _redeliver(self) -> None:
        """Command thread, its queues drained: commands were left unacknowledged on this
        connection (their sender's queue was full). The broker redelivers them only on a new
        connection of the session, and until then each holds a slot of its window: reconnect,
        with a clean DISCONNECT (no Will, so HQ sees no `offline`)."""
        with self._client_mu:
            client = self._client
            if client is None or self._closing or not self._connected.is_set():
                return  # stopping, or already reconnecting: redelivered then
            log.info("reconnecting to HQ broker %s:%d: commands not queued (queue full) are "
                     "redelivered on a new connection", self.host, self.port)
            self._redelivering = True
            try:
                client.disconnect()
                client.loop_stop()
            finally:
                self._redelivering = False
            connect(client, self.settings)
            client.loop_start()

    def _on_socket_close(self, _client: mqtt.Client, _userdata: Any, sock: Any) -> None:
        """paho closes its socket right after writing DISCONNECT. With commands still arriving,
        unread bytes make that close a TCP reset, the broker may drop the DISCONNECT with it,
        and publish the Will (`offline`). On a reconnect for redelivery: half-close, and read
        until the broker closes its side (it has then read the DISCONNECT)."""
        if not self._redelivering:
            return
        try:
            sock.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + REDELIVERY_DRAIN_S
            while (left := deadline - time.monotonic()) > 0:
                readable, _w, _x = select.select([sock], [], [], left)
                if not readable or not sock.recv(65536):
                    return
        except (OSError, ValueError):  # already gone: nothing left to protect
            return

    def _pending_rows(self) -> int:
        with self.db.session() as s:
            return len(repo.outbox_pending(s, 1, after_id=self._cursor))

    def notify(self) -> None:
        """New rows were committed: publish now rather than at the next poll."""
        self._wake.set()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    @property
    def inflight_rows(self) -> int:
        return sum(len(f.ids) for f in list(self._inflight.values()))

    def publish_now(self, suffix: str, payload: dict[str, Any]) -> bool:
        """Best effort, outside the outbox: for what must reach HQ while the database itself
        is down (the outbox lives there). True when handed to paho while connected."""
        client = self._client
        if client is None or not self._connected.is_set():
            return False
        info = client.publish(f"{self.base}/{suffix}", json.dumps(payload), qos=1)
        return info.rc == mqtt.MQTT_ERR_SUCCESS

    def set_reader_status(self, reader: str, online: bool | str) -> None:
        """Retained reader status (`online`, `offline`, `connected_not_reading`; a bool means
        online/offline); remembered and republished after every reconnect."""
        with self._readers_lock:
            self._readers[reader] = online
        client = self._client
        if client is not None and self._connected.is_set():
            self._publish_reader(client, reader, online)

    # ------------------------------------------------------------------ paho setup

    def _paho_logger(self) -> logging.Logger:
        """paho's log, where the errors paho reports while the link is down or closing ("Client
        is not connected", once per loop, or its loop racing our own disconnect) are DEBUG."""
        logger = logging.getLogger(f"{__name__}.paho.{self.client_id}")
        for f in [f for f in logger.filters if isinstance(f, _ClosingFilter)]:
            logger.removeFilter(f)  # an earlier link of this client id
        logger.addFilter(_ClosingFilter(self))
        return logger

    def _make_client(self) -> mqtt.Client:
        c = build_client(self.settings)
        c.enable_logger(self._paho_logger())
        self._set_backoff(c)
        c.on_connect = self._on_connect
        c.on_connect_fail = self._on_connect_fail
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        c.on_message = self._on_message
        c.on_socket_close = self._on_socket_close
        return c

    def _set_backoff(self, client: mqtt.Client) -> None:
        """Exponential backoff with jitter, so a chain of sites does not reconnect in lockstep
        after an HQ outage. paho waits `min_delay` next; we choose it per attempt."""
        base = min(self.reconnect_max_s, self.reconnect_min_s * (2 ** min(self._attempt, 20)))
        delay = base * (1.0 - self.reconnect_jitter * random.random())
        client.reconnect_delay_set(delay, delay)  # type: ignore[arg-type,unused-ignore]  # floats work
        self._attempt += 1

    # ------------------------------------------------------------------ paho callbacks
    # They run on paho's network thread: record, wake, never block on the database.

    def _on_connect(
        self, client: mqtt.Client, _userdata: Any, flags: mqtt.ConnectFlags,
        reason: ReasonCode, _props: Properties | None,
    ) -> None:
        if reason.is_failure:
            hint = ""
            if is_auth_refusal(reason):
                hint = (f"; check mqtt.username ({self.config.username!r}) and "
                        f"mqtt.password_file ({self.config.password_file})")
            self.stats.refusals += 1
            # Once per change (a wrong password refused at every retry is one state); the
            # repeats at debug level.
            level = logging.DEBUG if str(reason) == self._last_refusal else logging.ERROR
            self._last_refusal = str(reason)
            log.log(level, "HQ broker %s:%d refused the connection: %s%s", self.host, self.port,
                    reason, hint)
            self._refused = True  # the disconnect that follows needs no second message
            return
        self._refused = False
        self._last_refusal = None
        self._generation += 1  # message ids are per connection: acks never cross one
        self._attempt = 0
        self._set_backoff(client)
        self.stats.connects += 1
        client.subscribe(self.command_filter, qos=1)
        with self._readers_lock:
            readers = dict(self._readers)
        for name, online in readers.items():
            self._publish_reader(client, name, online)
        client.publish(self.status_topic, ONLINE, qos=1, retain=True)
        self._connected.set()
        self.metrics.mqtt_connected.set(1)
        self._connect_fail_reason = None
        log.info("connected to HQ broker %s:%d (session present: %s)", self.host, self.port,
                 flags.session_present)
        self._wake.set()

    def _on_connect_fail(self, client: mqtt.Client, _userdata: Any) -> None:
        # paho calls this inside its `except OSError:` block: the exception is the reason.
        reason = explain_connect_error(sys.exc_info()[1])
        # Logged once per reason while the broker stays unreachable (state changes only).
        level = logging.DEBUG if reason == self._connect_fail_reason else logging.WARNING
        self._connect_fail_reason = reason
        log.log(level, "cannot connect to HQ broker %s:%d: %s; retrying", self.host, self.port,
                reason)
        self._set_backoff(client)

    def _on_disconnect(
        self, client: mqtt.Client, _userdata: Any, _flags: mqtt.DisconnectFlags,
        reason: ReasonCode, _props: Properties | None,
    ) -> None:
        was = self._connected.is_set()
        self._connected.clear()
        self.metrics.mqtt_connected.set(0)
        if was:
            self.stats.disconnects += 1
        if self._redelivering:
            log.debug("disconnected from HQ broker to have commands redelivered")
        elif not self._closing:
            if was:
                log.warning("HQ broker connection lost (%s); unacknowledged messages are resent "
                            "after reconnecting", reason)
            elif self._refused:
                self._refused = False
            else:
                # E.g. a broker that wants a client certificate closes the TLS session here.
                log.warning("HQ broker %s:%d closed the connection before accepting it (%s)%s",
                            self.host, self.port, reason,
                            "; does it require a client certificate (mqtt.tls.cert_file)?"
                            if self.tls and self.config.tls.cert_file is None else "")
            self._set_backoff(client)

    def _on_publish(
        self, _client: mqtt.Client, _userdata: Any, mid: int, reason: ReasonCode,
        _props: Properties | None,
    ) -> None:
        # Called under paho's message lock: only a deque append (atomic) and a wake-up.
        self._acks.append((mid, not reason.is_failure, str(reason)))
        self._wake.set()

    def _on_message(self, client: mqtt.Client, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self.inbox.receive(client, msg, self._generation)

    # ------------------------------------------------------------------ publisher

    def _publish_reader(self, client: mqtt.Client, reader: str, online: bool | str) -> None:
        payload = online if isinstance(online, str) else ONLINE if online else OFFLINE
        client.publish(f"{self.base}/readers/{reader}/status", payload, qos=1, retain=True)


__all__ = ["MAX_COMMAND_BYTES", "OFFLINE", "ONLINE", "SEQ_FIELD", "DocumentBuilder", "HqLink",
           "HqLinkError", "LinkStats", "OutboxPublisher"]
