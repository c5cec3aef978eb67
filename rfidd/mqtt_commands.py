"""HQ commands arriving on the site link: bounded, acknowledged only once handled.

The HQ link's paho callback hands each message on `.../cmd/NAME` to `CommandInbox.receive`,
which only checks its size and queues it (never blocking paho's network thread); one thread
runs `run`, calls the daemon's handler, counts the result in `rfidd_commands_total` under a
bounded label and answers a rejection on `.../errors`. A command is acknowledged after it was
handled, on the connection that delivered it; a full queue leaves it unacknowledged, so the
broker redelivers it (persistent session) rather than it being lost to a flood.
"""

from __future__ import annotations

import json
import logging
import queue
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

import paho.mqtt.client as mqtt

from rfidd.metrics import Metrics

log = logging.getLogger("rfidd.mqtt")

_LABEL_OK = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_MAX_COMMAND_LABELS = 32

CommandHandler = Callable[[str, bytes], None]
"""(name, payload) -> None; raises ValueError naming what is wrong in a rejected command."""


class CommandStats(Protocol):
    commands_ok: int
    commands_failed: int
    commands_rejected: int


class CommandInbox:
    """The queue and the handling of HQ commands (see the module docstring)."""

    def __init__(self, site_id: str, command_prefix: str, errors_topic: str,
                 handler: CommandHandler | None, metrics: Metrics, stats: CommandStats, *,
                 max_command_bytes: int, queue_size: int) -> None:
        self.site_id = site_id
        self.command_prefix = command_prefix
        self.errors_topic = errors_topic
        self.handler = handler
        self.metrics = metrics
        self.stats = stats
        self.max_command_bytes = max_command_bytes
        self._labels: set[str] = set()
        # (name, payload, mid, qos, connection generation)
        self._queue: queue.Queue[tuple[str, bytes, int, int, int]] = queue.Queue(queue_size)

    def receive(self, client: mqtt.Client, msg: mqtt.MQTTMessage, generation: int) -> None:
        """On paho's thread: check and queue, never block."""
        topic = msg.topic
        name = topic[len(self.command_prefix):] if topic.startswith(self.command_prefix) else ""
        payload = bytes(msg.payload)
        if not name:
            log.warning("ignoring message on unexpected topic %r", topic)
            client.ack(msg.mid, msg.qos)
            return
        if len(payload) > self.max_command_bytes:
            self.reject(client, name, f"payload of {len(payload)} bytes exceeds the limit of "
                        f"{self.max_command_bytes} bytes")
            client.ack(msg.mid, msg.qos)
            return
        if self.handler is None:
            self.reject(client, name, "this site accepts no commands")
            client.ack(msg.mid, msg.qos)
            return
        try:
            self._queue.put_nowait((name, payload, msg.mid, msg.qos, generation))
        except queue.Full:  # not acknowledged: the broker redelivers it (persistent session)
            self.stats.commands_rejected += 1
            self.metrics.commands.labels(self.label(name), "dropped").inc()
            log.warning("HQ command %r not queued (queue full): left for redelivery", name[:100])

    def label(self, name: str) -> str:
        """Bounded metric label: commands come from the network, label values must not."""
        if not _LABEL_OK.match(name):
            return "invalid"
        if name in self._labels:
            return name
        if len(self._labels) >= _MAX_COMMAND_LABELS:
            return "other"
        self._labels.add(name)
        return name

    def reject(self, client: mqtt.Client, name: str, reason: str) -> None:
        self.stats.commands_rejected += 1
        self.metrics.commands.labels(self.label(name), "rejected").inc()
        log.warning("rejected HQ command %r: %s", name[:100], reason)
        self.reply_error(client, name, reason)

    def reply_error(self, client: mqtt.Client, name: str, reason: str) -> None:
        body = {
            "site": self.site_id,
            "command": name[:200],
            "error": reason[:2000],
            "time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        }
        client.publish(self.errors_topic, json.dumps(body).encode(), qos=1, retain=False)

    def run(self, client_of: Callable[[], Any], generation_of: Callable[[], int],
            stopping: Callable[[], bool]) -> None:
        """The command thread: handle each queued command, then acknowledge it."""
        while True:
            try:
                name, payload, mid, qos, generation = self._queue.get(timeout=0.2)
            except queue.Empty:
                if stopping():
                    return
                continue
            handler = self.handler
            assert handler is not None
            try:
                handler(name, payload)
            except ValueError as exc:  # rejected input: the message says what and where
                self.stats.commands_failed += 1
                self.metrics.commands.labels(self.label(name), "error").inc()
                log.warning("HQ command %r rejected: %s", name[:100], exc)
                if client_of() is not None:
                    self.reply_error(client_of(), name, str(exc))
            except Exception as exc:  # the handler's bug must not kill the link
                self.stats.commands_failed += 1
                self.metrics.commands.labels(self.label(name), "error").inc()
                log.error("HQ command %r failed: %s", name[:100], exc, exc_info=True)
                if client_of() is not None:
                    self.reply_error(client_of(), name, f"{type(exc).__name__}: {exc}")
            else:
                self.stats.commands_ok += 1
                self.metrics.commands.labels(self.label(name), "ok").inc()
            client = client_of()
            if client is not None and generation == generation_of():
                client.ack(mid, qos)  # handled: the broker may forget it
            # Else the connection that delivered it is gone: the broker redelivers it on the
            # persistent session, and commands are idempotent.
