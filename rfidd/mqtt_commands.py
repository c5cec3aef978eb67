"""HQ commands arriving on the site link: bounded, fair between senders, acknowledged only once
handled.

The HQ link's paho callback hands each message on `.../cmd/NAME` to `CommandInbox.receive`,
which checks its size, tells who sent it (`screen`: `hq` when HQ's signature verifies,
`unsigned`, `forged`), refuses at once what would be refused anyway (a forged signature, an
unsigned state-changing command when signatures are required) and queues the rest in that
sender's own bounded queue (never blocking paho's network thread). One thread runs `run`,
taking the senders' queues in turn, calls the daemon's handler, counts the result in
`rfidd_commands_total` under a bounded label and answers a rejection on `.../errors`. So a
flood from one sender fills its own queue and never takes the place of another's commands;
`rfidd_command_senders_total{sender,result}` counts each sender's commands.

A command is acknowledged after it was handled, on the connection that delivered it. One that
finds its sender's queue full is dropped: with a persistent session it is left unacknowledged,
and once the queues are drained `redeliver` is called (the link reconnects: a broker redelivers
an unacknowledged message only on a new connection of the session, and until then it holds a
slot of the broker's window; MQTT 3.1.1 has no Receive Maximum to keep the broker from sending
more than the site can queue). Without a session to redeliver it, it is refused for good:
acknowledged and answered on `.../errors`, so HQ knows to send it again.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections import deque
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

CommandScreen = Callable[[str, bytes], tuple[str, "str | None"]]
"""(name, payload) -> (sender, refusal or None), on arrival: see CommandGuard.screen."""

SENDERS = ("hq", "unsigned", "forged")  # the bounded sender labels, and the queues
RESULTS = ("queued", "refused", "dropped")
LOG_BURST = 10
IDLE_WAIT_S = 30.0
"""The command thread's longest sleep without a command (a safety net: a queued command and
the link's stop wake it at once)."""


def unsigned_screen(_name: str, payload: bytes) -> tuple[str, str | None]:
    """Without a guard: JSON is `unsigned`; a compact JWS nobody can verify is `forged`."""
    body = payload.strip()
    if body[:1] in (b"{", b"[") or body.count(b".") != 2:
        return "unsigned", None
    return "forged", None

_Queued = tuple[str, bytes, int, int, int]  # name, payload, mid, qos, connection generation


class CommandStats(Protocol):
    commands_ok: int
    commands_failed: int
    commands_rejected: int


class CommandInbox:
    """The queue and the handling of HQ commands (see the module docstring)."""

    def __init__(self, site_id: str, command_prefix: str, errors_topic: str,
                 handler: CommandHandler | None, metrics: Metrics, stats: CommandStats, *,
                 max_command_bytes: int, queue_size: int,
                 screen: CommandScreen | None = None,
                 redeliver: Callable[[], None] | None = None) -> None:
        """`redeliver`: called on the command thread, once the queues are drained, when
        commands were dropped on the current connection (None: no persistent session, so a
        dropped command is refused and answered instead)."""
        self.site_id = site_id
        self.command_prefix = command_prefix
        self.errors_topic = errors_topic
        self.handler = handler
        self.metrics = metrics
        self.stats = stats
        self.max_command_bytes = max_command_bytes
        self.screen = screen or unsigned_screen
        self._labels: set[str] = set()
        self.queue_size = queue_size  # per sender
        self._lanes: dict[str, deque[_Queued]] = {s: deque() for s in SENDERS}
        self._turn = 0  # the sender served next (round robin)
        self._ready = threading.Condition()
        self._logged: dict[str, tuple[float, int]] = {}  # sender: (minute start, refusals)
        self._senders = {(s, r): metrics.command_senders.labels(s, r)
                         for s in SENDERS for r in RESULTS}
        self.redeliver = redeliver
        self._owed: int | None = None  # the connection on which commands were left unacked

    def receive(self, client: mqtt.Client, msg: mqtt.MQTTMessage, generation: int) -> None:
        """On paho's thread: check, tell the sender, queue; never block."""
        topic = msg.topic
        name = topic[len(self.command_prefix):] if topic.startswith(self.command_prefix) else ""
        payload = bytes(msg.payload)
        if not name:
            log.warning("ignoring message on unexpected topic %r", topic)
            client.ack(msg.mid, msg.qos)
            return
        if len(payload) > self.max_command_bytes:
            self._senders["unsigned" if payload[:1] in (b"{", b"[") else "forged",
                          "refused"].inc()
            self.reject(client, name, f"payload of {len(payload)} bytes exceeds the limit of "
                        f"{self.max_command_bytes} bytes")
            client.ack(msg.mid, msg.qos)
            return
        sender, refusal = self.screen(name, payload)
        sender = sender if sender in self._lanes else "forged"
        if self.handler is None or refusal is not None:
            self._senders[sender, "refused"].inc()
            self.reject(client, name, refusal or "this site accepts no commands", sender)
            client.ack(msg.mid, msg.qos)
            return
        with self._ready:
            lane = self._lanes[sender]
            if len(lane) < self.queue_size:
                lane.append((name, payload, msg.mid, msg.qos, generation))
                self._ready.notify()
                queued = True
            else:
                queued = False
        if queued:
            self._senders[sender, "queued"].inc()
            return
        self.stats.commands_rejected += 1
        self._senders[sender, "dropped"].inc()
        self.metrics.commands.labels(self.label(name), "dropped").inc()
        loud = self._loud(f"{sender} (queue full)")
        if self.redeliver is None:  # no session would bring it back: refused for good
            if loud:
                log.warning("HQ command %r from %s not queued (its queue is full): refused, "
                            "HQ is told to send it again", name[:100], sender)
            self.reply_error(client, name, f"not handled: the site's queue of {sender} "
                             f"commands is full ({self.queue_size}); send it again")
            client.ack(msg.mid, msg.qos)
            return
        # Not acknowledged: redelivered on the reconnect `run` asks for once the queues drain.
        self._owed = generation
        if loud:
            log.warning("HQ command %r from %s not queued (its queue is full): left for "
                        "redelivery", name[:100], sender)

    def pending(self) -> dict[str, int]:
        """Commands waiting, by sender."""
        with self._ready:
            return {s: len(q) for s, q in self._lanes.items()}

    def _next(self, timeout: float, stopping: Callable[[], bool]) -> _Queued | None:
        """The next command, taking the senders in turn; None after `timeout` without one, or
        at once when stopping (checked under the lock `wake` takes: no wake-up is lost)."""
        with self._ready:
            item = self._pop()
            if item is None and not stopping():
                self._ready.wait(timeout)
                item = self._pop()
            return item

    def _pop(self) -> _Queued | None:
        for i in range(len(SENDERS)):
            lane = self._lanes[SENDERS[(self._turn + i) % len(SENDERS)]]
            if lane:
                self._turn = (self._turn + i + 1) % len(SENDERS)
                return lane.popleft()
        return None

    def wake(self) -> None:
        """End the command thread's wait (the link is stopping: it looks at `stopping`)."""
        with self._ready:
            self._ready.notify_all()

    def _ask_redelivery(self, generation: int) -> None:
        """Commands left unacknowledged on this connection, none queued or being handled any
        more: have them redelivered now (on a later connection the broker already did)."""
        owed = self._owed
        if owed is None:
            return
        if owed != generation:
            self._owed = None
            return
        with self._ready:
            if any(self._lanes.values()):
                return
            self._owed = None
        if self.redeliver is not None:
            self.redeliver()

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

    def reject(self, client: mqtt.Client, name: str, reason: str, sender: str = "") -> None:
        self.stats.commands_rejected += 1
        self.metrics.commands.labels(self.label(name), "rejected").inc()
        if self._loud(sender):
            log.warning("rejected HQ command %r: %s", name[:100], reason)
        self.reply_error(client, name, reason)

    def _loud(self, sender: str) -> bool:
        """A flood is not a flood of log lines: the first LOG_BURST refusals of a sender per
        minute are logged, then one line says the rest are only counted."""
        now = time.monotonic()
        start, n = self._logged.get(sender, (now, 0))
        if now - start > 60.0:
            start, n = now, 0
        self._logged[sender] = (start, n + 1)
        if n == LOG_BURST:
            log.warning("more commands from %s refused or dropped this minute: counted in "
                        "rfidd_command_senders_total, not logged", sender or "HQ")
        return n < LOG_BURST

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
            self._ask_redelivery(generation_of())  # each turn: after the last queued one
            item = self._next(IDLE_WAIT_S, stopping)
            if item is None:
                if stopping():
                    return
                continue
            name, payload, mid, qos, generation = item
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
