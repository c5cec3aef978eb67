"""The one place that builds a paho-mqtt 2.x client: site link, HQ consumer and ASN relay.

Why one place: protocol, session, TLS, credentials and reconnect bounds must mean the same on
both ends of the feed, and the broker password must be handled (read, never shown) in one spot.
Callers describe the client with `ClientSettings`, then `build_client()` and `connect()`.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from rfidd.config import MqttConfig, TlsConfig, resolve_secret_file

__all__ = [
    "ClientSettings",
    "MqttSetupError",
    "Will",
    "build_client",
    "connect",
    "explain_connect_error",
    "is_auth_refusal",
    "read_password",
    "read_password_file",
    "tls_context",
    "trust_source",
]

# CONNACK refusals that mean "check the user name and password file" (MQTT 5 codes; paho maps
# the 3.1.1 return codes 4 and 5 onto them).
_AUTH_REFUSALS = (
    ReasonCode(PacketTypes.CONNACK, "Bad user name or password"),
    ReasonCode(PacketTypes.CONNACK, "Not authorized"),
)


class MqttSetupError(Exception):
    """A client cannot be built (unreadable password file, bad CA file...); the message names
    the setting and the file, never the secret."""


@dataclass(frozen=True, slots=True)
class Will:
    """Last will: what the broker publishes for us when we vanish without a DISCONNECT."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


@dataclass(frozen=True, slots=True)
class ClientSettings:
    """Everything that shapes a paho client and its CONNECT.

    `password_file` is a path or `credential:NAME` (systemd credentials), read when the client
    is built; `tls` None means plain TCP. `persistent_session` asks the broker to keep the
    session (clean_start/clean_session False) for `session_expiry_s` (MQTT 5).
    """

    host: str
    port: int
    client_id: str = ""
    protocol: Literal["5", "3.1.1"] = "5"
    keepalive_s: int = 30
    persistent_session: bool = True
    session_expiry_s: int = 0
    username: str | None = None
    password_file: Path | None = None
    tls: TlsConfig | None = None
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 60.0
    will: Will | None = None
    manual_ack: bool = False
    max_inflight: int | None = None
    receive_maximum: int | None = None
    max_packet_bytes: int | None = None
    logger: str | None = None  # paho's own log lines go there (None: not logged)

    def __post_init__(self) -> None:
        if self.protocol not in ("5", "3.1.1"):
            raise ValueError(f"protocol must be '5' or '3.1.1', got {self.protocol!r}")
        if not 0 <= self.reconnect_min_s <= self.reconnect_max_s:
            raise ValueError("reconnect delays: need 0 <= reconnect_min_s <= reconnect_max_s")

    @property
    def v5(self) -> bool:
        return self.protocol == "5"

    @classmethod
    def from_config(cls, config: MqttConfig, *, client_id: str, **kw: Any) -> ClientSettings:
        """Broker, protocol, keepalive, credentials and TLS from an `[mqtt]` table; the rest
        (session, will, acknowledgements...) is the caller's, through `kw`."""
        u = urlsplit(config.url)
        tls = u.scheme == "mqtts"
        return cls(
            host=u.hostname or "127.0.0.1", port=u.port or (8883 if tls else 1883),
            client_id=client_id, protocol=config.protocol, keepalive_s=config.keepalive_s,
            username=config.username, password_file=config.password_file,
            tls=config.tls if tls else None, **kw,
        )


def read_password_file(
    value: Path | None, environ: Mapping[str, str] | None = None,
    setting: str = "mqtt.password_file",
) -> str | None:
    """The password in `value` (a path or `credential:NAME`); None without one.

    Errors name the setting and the file, never its content (a decode error would quote bytes
    of the secret, so its details are dropped).
    """
    if value is None:
        return None
    try:
        path = resolve_secret_file(value, setting, environ)
    except ValueError as exc:
        raise MqttSetupError(str(exc)) from None
    shown = str(value) if path == value else f"{value} ({path})"
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise MqttSetupError(f"{setting} {shown}: cannot read: {exc.strerror}") from None
    try:
        text: str | None = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None  # raised outside the handler: no __context__ holding the secret's bytes
    if text is None:
        raise MqttSetupError(f"{setting} {shown}: not UTF-8 text")
    password = text[:-1] if text.endswith("\n") else text
    password = password[:-1] if password.endswith("\r") else password
    if not password:
        raise MqttSetupError(f"{setting} {shown}: empty")
    if "\n" in password:
        # Almost always an editing accident; sending it would fail authentication obscurely.
        raise MqttSetupError(f"{setting} {shown}: more than one line")
    return password


def read_password(config: MqttConfig, environ: Mapping[str, str] | None = None) -> str | None:
    """The broker password of an `[mqtt]` table (None without `password_file`)."""
    return read_password_file(config.password_file, environ)


class _EncryptedKey(Exception):
    pass


def _no_key_passphrase() -> str:
    # Without this callback OpenSSL would prompt on the terminal (and hang a service).
    raise _EncryptedKey


def tls_context(tls: TlsConfig) -> ssl.SSLContext:
    """A verifying client context: the broker certificate must chain to `ca_file` (or the system
    trust store without one) and, unless `insecure`, name the host. Errors name the file."""
    # Not ssl.create_default_context(): it always loads the system store, and a private HQ CA
    # must be the only one trusted when given (any public CA could otherwise vouch for HQ).
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED, check_hostname
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls.ca_file is None:
        ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    else:
        try:
            ctx.load_verify_locations(cafile=str(tls.ca_file))
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise MqttSetupError(f"mqtt.tls.ca_file {tls.ca_file}: cannot load CA certificates:"
                                 f" {reason}") from None
    if tls.cert_file is not None:
        key = tls.key_file or tls.cert_file
        try:
            ctx.load_cert_chain(str(tls.cert_file), str(key), password=_no_key_passphrase)
        except _EncryptedKey:
            raise MqttSetupError(f"mqtt.tls.key_file {key}: the key is encrypted; rfidd needs an"
                                 " unencrypted key (protect it with file permissions or a "
                                 "systemd credential)") from None
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise MqttSetupError(f"mqtt.tls.cert_file {tls.cert_file} / key_file {key}: cannot "
                                 f"load the client certificate and key: {reason}") from None
    ctx.check_hostname = not tls.insecure
    return ctx


def trust_source(tls: TlsConfig) -> str:
    """What the TLS settings trust, for the start-up log line."""
    src = f"CA file {tls.ca_file}" if tls.ca_file else "system trust store"
    if tls.cert_file:
        src += f", client certificate {tls.cert_file}"
    if tls.insecure:
        src += ", host name NOT checked"
    return src


def explain_connect_error(exc: BaseException | None) -> str:
    """One line an operator can act on, for the exception paho hit while connecting."""
    if exc is None:
        return "unknown error"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (f"TLS: the broker's certificate was not accepted ({exc.verify_message}); check "
                "mqtt.tls.ca_file and that the certificate names this host")
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed: {exc.reason or exc}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return f"{type(exc).__name__}: {exc}"


def is_auth_refusal(reason: ReasonCode) -> bool:
    """The broker refused our credentials (bad user name or password, not authorized)."""
    return reason in _AUTH_REFUSALS


def build_client(settings: ClientSettings) -> mqtt.Client:
    """A paho client configured from `settings`, not yet connected (see `connect`).

    Reads the password file and loads the TLS files now, raising MqttSetupError naming the
    setting: a bad file is found at start, not at the first reconnect.
    """
    s = settings
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=s.client_id,
        protocol=mqtt.MQTTv5 if s.v5 else mqtt.MQTTv311,
        clean_session=None if s.v5 else not s.persistent_session,
        manual_ack=s.manual_ack,
    )
    if s.logger is not None:
        client.enable_logger(logging.getLogger(s.logger))
    if s.username is not None or s.password_file is not None:
        client.username_pw_set(s.username or "", read_password_file(s.password_file))
    if s.tls is not None:
        client.tls_set_context(tls_context(s.tls))
    if s.will is not None:
        client.will_set(s.will.topic, s.will.payload, qos=s.will.qos, retain=s.will.retain)
    if s.max_inflight is not None:
        client.max_inflight_messages_set(s.max_inflight)
    # Unbounded: an outgoing message must never be dropped by paho's own queue limit.
    client.max_queued_messages_set(0)
    client.reconnect_delay_set(s.reconnect_min_s, s.reconnect_max_s)  # type: ignore[arg-type,unused-ignore]  # floats work
    return client


def connect_properties(settings: ClientSettings) -> Properties | None:
    """The MQTT 5 CONNECT properties of `settings` (None for 3.1.1)."""
    if not settings.v5:
        return None
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = settings.session_expiry_s if settings.persistent_session else 0
    if settings.receive_maximum is not None:
        props.ReceiveMaximum = settings.receive_maximum
    if settings.max_packet_bytes is not None:
        props.MaximumPacketSize = settings.max_packet_bytes
    return props


def connect(client: mqtt.Client, settings: ClientSettings) -> None:
    """Start connecting in the background (the broker may be down); call loop_start() next.

    3.1.1 keeps the session through clean_session (set in build_client); MQTT 5 through
    clean_start and the session expiry.
    """
    client.connect_async(
        settings.host, settings.port, keepalive=settings.keepalive_s,
        clean_start=(not settings.persistent_session) if settings.v5
        else mqtt.MQTT_CLEAN_START_FIRST_ONLY,
        properties=connect_properties(settings),
    )
