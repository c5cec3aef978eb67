"""Shared fixtures: MQTT brokers, databases, a message collector.

Services missing from the machine make the tests that need them skip with a reason naming what is
missing — unless RFIDD_REQUIRE_SERVICES=1 (CI), where a missing PostgreSQL or MQTT 5 broker is a
failure: a green CI must not hide skipped integration tests.

Overrides: RFIDD_TEST_MQTT=host:port (an existing MQTT 5 broker), RFIDD_TEST_PG_URL (an admin URL
of a PostgreSQL database the tests may create schemas in).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import pytest

REQUIRE_SERVICES = os.environ.get("RFIDD_REQUIRE_SERVICES") == "1"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--long", action="store_true", default=False,
                     help="fault suite (tests/faults): outages of minutes instead of seconds")
    parser.addoption("--faults-table", default=None, metavar="FILE",
                     help="fault suite: also write its table, ready to quote in a note "
                          "(Markdown, with the outage length and the machine's load), to FILE")


def missing_service(what: str) -> None:
    """Skip (developer machine) or fail (RFIDD_REQUIRE_SERVICES=1) because `what` is missing."""
    if REQUIRE_SERVICES:
        pytest.fail(f"required service missing: {what} (RFIDD_REQUIRE_SERVICES=1)")
    pytest.skip(f"service missing: {what}")


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(host: str, port: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(host, port, 0.2):
            return True
        time.sleep(0.02)
    return False


class Broker(NamedTuple):
    host: str
    port: int
    supports_v5: bool


# --------------------------------------------------------------------------- mosquitto


def mosquitto_binary() -> str | None:
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()),
        None,
    )


class MosquittoProcess:
    """A private mosquitto on a loopback port that a test can stop and restart (same port)."""

    def __init__(self, binary: str, workdir: Path, port: int | None = None) -> None:
        self.binary = binary
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.workdir = workdir
        self.conf = workdir / f"mosquitto-{self.port}.conf"
        # Persistence (saved on a clean stop) keeps subscribers' sessions across a restart, so an
        # outage test's collector misses nothing while the broker is down.
        store = workdir / f"mosquitto-{self.port}-data"
        store.mkdir(exist_ok=True)
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
            f"persistence true\npersistence_location {store}/\n"
            "max_queued_messages 100000\n"
            # As root mosquitto would switch to user `mosquitto`, who cannot write the test's
            # private temp dir, and persistence would silently fail.
            + ("user root\n" if os.geteuid() == 0 else "")
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / f"mosquitto-{self.port}.log"

    @property
    def broker(self) -> Broker:
        return Broker(self.host, self.port, True)

    def start(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [self.binary, "-c", str(self.conf)], stdout=log, stderr=subprocess.STDOUT
            )
        if not wait_port(self.host, self.port):
            self.stop()
            raise RuntimeError(
                f"mosquitto did not listen on {self.port}: {self.log.read_text()[-2000:]}"
            )

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a paused broker cannot handle SIGTERM
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
        # Wait until the port is really closed so "outage" is an outage.
        deadline = time.monotonic() + 5
        while port_open(self.host, self.port, 0.1) and time.monotonic() < deadline:
            time.sleep(0.02)

    def restart(self) -> None:
        self.stop()
        self.start()

    def kill(self) -> None:
        """SIGKILL: what the broker acknowledged but had not saved yet is gone."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(5)
        self.proc = None
        deadline = time.monotonic() + 5
        while port_open(self.host, self.port, 0.1) and time.monotonic() < deadline:
            time.sleep(0.02)

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP): connections stay open, nothing is answered."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


# --------------------------------------------------------------------------- amqtt


class AmqttBroker:
    """An in-process amqtt broker (MQTT 3.1.1 only) on its own event-loop thread."""

    def __init__(self, port: int | None = None) -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="amqtt")
        self._broker: Any = None

    @property
    def broker(self) -> Broker:
        return Broker(self.host, self.port, False)

    def start(self) -> None:
        from amqtt.broker import Broker as _Amqtt

        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {
                "allow_anonymous": True
            }},
        }

        async def _start() -> None:
            self._broker = _Amqtt(config, loop=self._loop)
            await self._broker.start()

        self._thread.start()
        asyncio.run_coroutine_threadsafe(_start(), self._loop).result(15)
        if not wait_port(self.host, self.port):
            raise RuntimeError(f"amqtt did not listen on {self.port}")

    def stop(self) -> None:
        if self._broker is not None:
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self._broker.shutdown(), self._loop).result(15)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


def amqtt_available() -> bool:
    try:
        import amqtt.broker  # noqa: F401
    except ImportError:
        return False
    return True


# --------------------------------------------------------------------------- broker fixtures


@pytest.fixture(scope="session")
def mqtt_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """(host, port, supports_v5): the machine's Mosquitto on 1883, else a mosquitto we start,
    else an in-process amqtt (3.1.1 only)."""
    override = os.environ.get("RFIDD_TEST_MQTT")
    if override:
        host, _, port = override.rpartition(":")
        yield Broker(host or "127.0.0.1", int(port), True)
        return
    if port_open("127.0.0.1", 1883):
        yield Broker("127.0.0.1", 1883, True)
        return
    binary = mosquitto_binary()
    if binary:
        m = MosquittoProcess(binary, tmp_path_factory.mktemp("mosquitto"))
        m.start()
        try:
            yield m.broker
        finally:
            m.stop()
        return
    if amqtt_available():
        a = AmqttBroker()
        a.start()
        try:
            yield a.broker
        finally:
            a.stop()
        return
    missing_service("MQTT broker (no mosquitto on 127.0.0.1:1883, no mosquitto binary, no amqtt)")


@pytest.fixture
def mqtt5_broker(mqtt_broker: Broker) -> Broker:
    """A broker that speaks MQTT 5 (skip, or fail under RFIDD_REQUIRE_SERVICES=1, otherwise)."""
    if not mqtt_broker.supports_v5:
        missing_service("MQTT 5 broker (only amqtt, MQTT 3.1.1, is available)")
    return mqtt_broker


@pytest.fixture
def private_mosquitto(tmp_path: Path) -> Iterator[MosquittoProcess]:
    """A mosquitto of this test alone, started; the test may stop() and restart() it."""
    binary = mosquitto_binary()
    if binary is None:
        missing_service("mosquitto binary (for a private broker the test can stop)")
    assert binary is not None
    m = MosquittoProcess(binary, tmp_path)
    m.start()
    try:
        yield m
    finally:
        m.stop()


@pytest.fixture
def amqtt_broker() -> Iterator[Broker]:
    """An in-process amqtt broker (MQTT 3.1.1) on a free port; skips if amqtt is missing."""
    if not amqtt_available():
        pytest.skip("amqtt is not installed")
    a = AmqttBroker()
    a.start()
    try:
        yield a.broker
    finally:
        a.stop()


# --------------------------------------------------------------------------- collector


@dataclass
class Collected:
    topic: str
    payload: bytes
    retain: bool
    qos: int


@dataclass
class MqttCollector:
    """Subscribes to a topic filter and keeps every message, in arrival order."""

    broker: Broker
    topic_filter: str
    protocol: str = "5"
    persistent: bool = False  # keep the session (and queued messages) across reconnects
    messages: list[Collected] = field(default_factory=list)

    def __post_init__(self) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        v5 = self.protocol == "5"
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"collector-{uuid.uuid4().hex[:10]}",
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            clean_session=None if v5 else not self.persistent,
        )
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = lambda *a: self._subscribed.set()
        self._client.on_message = self._on_message
        self._client.reconnect_delay_set(0.05, 0.5)  # type: ignore[arg-type]
        if v5:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = 3600 if self.persistent else 0
            self._client.connect(self.broker.host, self.broker.port, keepalive=30,
                                 clean_start=not self.persistent, properties=props)
        else:
            self._client.connect(self.broker.host, self.broker.port, keepalive=30)
        self._client.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError(f"collector could not subscribe to {self.topic_filter}")

    def _on_connect(self, client: Any, _u: Any, _f: Any, _rc: Any, _p: Any = None) -> None:
        client.subscribe(self.topic_filter, qos=1)

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        with self._cond:
            self.messages.append(Collected(msg.topic, bytes(msg.payload), bool(msg.retain),
                                           int(msg.qos)))
            self._cond.notify_all()

    def wait_for(
        self, predicate: Callable[[list[Collected]], bool], timeout: float = 10.0
    ) -> list[Collected]:
        """Block until predicate(messages) holds; fail the test with what arrived otherwise."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self.messages):
                left = deadline - time.monotonic()
                if left <= 0:
                    pytest.fail(
                        f"timed out after {timeout}s on {self.topic_filter}; got "
                        f"{[(m.topic, m.payload[:80]) for m in self.messages][-20:]}"
                    )
                self._cond.wait(left)
            return list(self.messages)

    def wait_count(self, n: int, timeout: float = 10.0) -> list[Collected]:
        return self.wait_for(lambda ms: len(ms) >= n, timeout)

    def on(self, topic: str) -> list[Collected]:
        with self._cond:
            return [m for m in self.messages if m.topic == topic]

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


@pytest.fixture
def mqtt_collector() -> Iterator[Callable[..., MqttCollector]]:
    """Factory: mqtt_collector(broker, "topic/#", protocol="5", persistent=False) ->
    MqttCollector, stopped at teardown."""
    made: list[MqttCollector] = []

    def make(
        broker: Broker, topic_filter: str, protocol: str = "5", persistent: bool = False
    ) -> MqttCollector:
        c = MqttCollector(broker, topic_filter, protocol, persistent)
        made.append(c)
        return c

    yield make
    for c in made:
        c.stop()


# --------------------------------------------------------------------------- databases


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'rfidd.db'}"


def _pg_admin_urls() -> list[str]:
    override = os.environ.get("RFIDD_TEST_PG_URL")
    if override:
        return [override]
    return [
        f"postgresql+psycopg://{user}@127.0.0.1:5432/test" for user in ("root", "postgres")
    ]


@pytest.fixture(scope="session")
def _pg_admin_url() -> str | None:
    try:
        import psycopg  # noqa: F401
        from sqlalchemy import create_engine, text
    except ImportError:
        return None
    if not port_open("127.0.0.1", 5432) and not os.environ.get("RFIDD_TEST_PG_URL"):
        return None
    for url in _pg_admin_urls():
        engine = create_engine(url)
        try:
            with engine.connect() as c:
                c.execute(text("select 1"))
            return url
        except Exception:
            continue
        finally:
            engine.dispose()
    return None


@pytest.fixture
def postgres_url(_pg_admin_url: str | None) -> Iterator[str]:
    """A URL whose search_path is a fresh schema of database `test`, dropped after the test."""
    if _pg_admin_url is None:
        missing_service("PostgreSQL on 127.0.0.1:5432 (database test, user root or postgres)")
    assert _pg_admin_url is not None
    from sqlalchemy import create_engine, text

    schema = f"t_{uuid.uuid4().hex[:16]}"
    admin = create_engine(_pg_admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in _pg_admin_url else "?"
    try:
        yield f"{_pg_admin_url}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str:
    """Both databases in turn: the same code must run on each."""
    name = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    return str(request.getfixturevalue(name))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The fault suite's table (tests/faults/harness.py), when fault tests ran."""
    harness = sys.modules.get("harness")
    rows = getattr(harness, "RESULTS", None)
    if rows:
        terminalreporter.write_sep("=", "fault suite")
        terminalreporter.write_line(harness.table(rows))  # type: ignore[union-attr]
        out = terminalreporter.config.getoption("--faults-table")
        if out:
            long = bool(terminalreporter.config.getoption("--long"))
            Path(out).write_text(harness.note(rows, long))  # type: ignore[union-attr]
            terminalreporter.write_line(f"fault table written to {out}")


@pytest.fixture(autouse=True)
def _cli_token_file(tmp_path_factory: pytest.TempPathFactory,
                    monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test's daemons write, and its CLI calls read, a token file of their own (the
    daemon's default, /run/rfidd/cli-token, is the machine's)."""
    path = tmp_path_factory.mktemp("cli-token") / "cli-token"
    monkeypatch.setenv("RFIDD_TOKEN_FILE", str(path))
    monkeypatch.delenv("RFIDD_TOKEN", raising=False)
    return path
