"""TOML configuration of the HQ consumer (`rfidd hq run -c FILE`).

Its own file, validated like the site daemon's (unknown keys are errors, every problem reported
at once with its key path and line). The URL and topic-prefix rules are the site daemon's own,
applied through rfidd.config so both sides of the feed agree on what a valid prefix is.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from rfidd.config import (
    ConfigError,
    DatabaseConfig,
    MqttConfig,
    TlsConfig,
    read_config_text,
    validate_toml,
)

__all__ = ["ConfigError", "HqConfig", "load_hq_config", "parse_hq_config"]

_GROUP = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _site_rule(model: type[BaseModel], key: str, value: Any) -> Any:
    """Apply one field rule of a site-daemon model, so the two configs cannot drift apart."""
    try:
        model.model_validate({key: value})
    except ValidationError as exc:
        for err in exc.errors():
            if err["loc"] and err["loc"][0] == key:
                raise ValueError(str(err["msg"]).removeprefix("Value error, ")) from None
    return value


class HqDatabaseConfig(_Strict):
    url: str = Field(
        "postgresql+psycopg://rfidd@127.0.0.1/rfidd_hq",
        description="SQLAlchemy URL of the HQ database: postgresql+psycopg://user@host/db in "
        "production; sqlite:///path is accepted for trials.",
    )
    batch_max_messages: int = Field(
        500, ge=1, le=100_000,
        description="Commit (and then acknowledge) at most this many MQTT messages at once...",
    )
    batch_max_ms: int = Field(
        200, ge=0, description="...or after this many milliseconds of gathering, whichever first."
    )

    @field_validator("url")
    @classmethod
    def _check_url(cls, v: str) -> str:
        return str(_site_rule(DatabaseConfig, "url", v))


class HqMqttConfig(_Strict):
    url: str = Field(
        "mqtt://127.0.0.1:1883",
        description="Broker URL: mqtt://host:port or mqtts://host:port (TLS).",
    )
    protocol: Literal["5", "3.1.1"] = Field(
        "5",
        description="MQTT protocol version. 5 is needed for shared subscriptions (load spread "
        "over several consumers); 3.1.1 falls back to plain subscriptions, so run one "
        "consumer only.",
    )
    topic_prefix: str = Field(
        "rfidd/v1", description="The sites' topic prefix: feeds are {topic_prefix}/{site}/..."
    )
    share_group: str = Field(
        "rfidd-hq",
        description="Shared-subscription group: consumers with the same group split the feed "
        "between them, each message going to one of them. \"\": plain subscriptions (every "
        "consumer gets every message; HQ's eventID dedup keeps that correct). Mosquitto 2.0 "
        "does not keep shared subscriptions over a broker restart: what sites publish after "
        "the restart and before the consumers subscribe again is lost, so with Mosquitto use "
        "\"\" (plain subscriptions are kept in the consumer's session).",
    )
    client_id: str = Field(
        default_factory=lambda: f"rfidd-hq-{socket.gethostname()}"[:64],
        description="MQTT client id; must be unique per consumer instance and stable across "
        "its restarts (the broker keeps the queued messages under it). Default: "
        "rfidd-hq-{hostname}.",
    )
    session_expiry_s: int = Field(
        7 * 86_400, ge=0, le=0xFFFFFFFF,
        description="How long the broker keeps this consumer's session and queued messages "
        "while it is down (MQTT 5).",
    )
    receive_maximum: int = Field(
        1000, ge=1, le=65_535,
        description="Unacknowledged messages the broker may have in flight to this consumer "
        "(bounds memory; messages are acknowledged only once committed).",
    )
    max_message_bytes: int = Field(
        16 * 1024 * 1024, ge=1024,
        description="Larger messages are refused by the broker (MQTT 5 Maximum Packet Size) "
        "or, if they arrive, counted as malformed.",
    )
    username: str | None = Field(None, description="Broker user name.")
    password_file: Path | None = Field(
        None,
        description="File holding the broker password (e.g. $CREDENTIALS_DIRECTORY/mqtt); the "
        "password itself never appears in the config or the logs.",
    )
    tls: TlsConfig = Field(default_factory=TlsConfig, description="TLS settings (mqtts://).")
    keepalive_s: int = Field(30, ge=5, le=3600, description="MQTT keepalive interval.")
    reconnect_max_s: int = Field(
        10, ge=1, le=3600,
        description="Longest wait between reconnection attempts (the wait doubles from 1 s). "
        "Short, unlike a site's: HQ is one client or a few, and what the sites sent during a "
        "broker outage waits in HQ's session until HQ is back.",
    )
    relay_asns: bool = Field(
        True,
        description="Also relay the ASNs sites publish on {topic_prefix}/{origin}/asn to the "
        "destination's {topic_prefix}/{destination}/cmd/asn and .../cmd/shipment (sites never "
        "publish on each other's topics). Same broker, credentials and TLS as the consumer; "
        "client id {client_id}-asn, same session expiry. Turn off when another HQ process "
        "relays.",
    )
    relay_share_group: str = Field(
        "rfidd-asn-relay",
        description="Shared-subscription group of the ASN relays (MQTT 5): each ASN is "
        "relayed by one HQ instance of the group. \"\": a plain subscription (every instance "
        "relays every ASN; the destination's commands are idempotent). Same Mosquitto 2.0 "
        "caveat as share_group.",
    )
    relay_signing_key_file: Path | None = Field(
        None,
        description="HQ's Ed25519 private key (PEM, from `rfidd hq keygen`; e.g. "
        "$CREDENTIALS_DIRECTORY/command-signing-key): the relay then forwards each "
        "state-changing command (shipment) as a compact JWS signed with it, which sites with "
        "mqtt.require_signed_commands accept. Unset: forwarded unsigned, and such sites refuse "
        "relayed shipments. Once set, every site needs the public key in "
        "mqtt.command_public_key_file (a site without it refuses a signed command). The key "
        "never appears in the config or the logs.",
    )

    @field_validator("url")
    @classmethod
    def _check_url(cls, v: str) -> str:
        return str(_site_rule(MqttConfig, "url", v))

    @field_validator("topic_prefix")
    @classmethod
    def _check_prefix(cls, v: str) -> str:
        return str(_site_rule(MqttConfig, "topic_prefix", v))

    @field_validator("share_group", "relay_share_group")
    @classmethod
    def _check_group(cls, v: str) -> str:
        if v and not _GROUP.match(v):
            raise ValueError("share group: 1-64 of A-Z a-z 0-9 _ . - (no / + #), or \"\" for "
                             "plain subscriptions")
        return v

    @field_validator("client_id")
    @classmethod
    def _check_client_id(cls, v: str) -> str:
        if not v or len(v.encode()) > 256 or any(c in v for c in "#+/\x00"):
            raise ValueError("client id: 1-256 bytes, without / + # or NUL")
        return v

    @model_validator(mode="after")
    def _check_as_site_link(self) -> HqMqttConfig:
        # The consumer and the relay build their client with the site link's factory
        # (rfidd.mqtt_client), so the settings they share must pass the site link's rules.
        self.site_mqtt_config()
        if self.relay_asns and len(self.relay_client_id().encode()) > 256:
            raise ValueError("client_id: at most 252 bytes with relay_asns (the relay's client "
                             "id appends '-asn')")
        return self

    def site_mqtt_config(self) -> MqttConfig:
        """These broker settings as the site daemon's MqttConfig (for rfidd.mqtt_client and
        `rfidd hq check-config`); ValueError when the site link's rules refuse them."""
        try:
            return MqttConfig.model_validate({
                "url": self.url, "protocol": self.protocol, "topic_prefix": self.topic_prefix,
                "username": self.username, "password_file": self.password_file,
                "tls": self.tls, "keepalive_s": self.keepalive_s,
            })
        except ValidationError as exc:
            raise ValueError("; ".join(
                str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())) from None

    def host_port(self) -> tuple[str, int]:
        u = urlsplit(self.url)
        return u.hostname or "127.0.0.1", u.port or (8883 if u.scheme == "mqtts" else 1883)

    def relay_client_id(self) -> str:
        return f"{self.client_id}-asn"


class HqEpcisConfig(_Strict):
    enabled: bool = Field(True, description="Serve HQ's web interface: the EPCIS 2.0 REST "
                          "interface (GS1 OpenAPI: /events, /queries, /capture), /api/v1, "
                          "/chain and /metrics, for holders of a token.")
    listen: str = Field("127.0.0.1", description="Address to bind; other than loopback only "
                        "with tls_cert_file and tls_key_file.")
    port: int = Field(9761, ge=0, le=65535, description="HQ's one web port: EPCIS interface, "
                      "/api/v1, /chain, /metrics (0: any; the former [http] port 9760 is "
                      "gone).")
    tls_cert_file: Path | None = Field(None, description="TLS certificate (PEM) for HTTPS.")
    tls_key_file: Path | None = Field(None, description="TLS private key (PEM) for HTTPS.")
    capture_limit: int = Field(10_000, ge=1, description="Most events one POST /capture may "
                               "hold (GS1-EPCIS-Capture-Limit).")
    capture_size_limit_bytes: int = Field(
        8 * 1024 * 1024, ge=1024,
        description="Largest POST /capture body (GS1-EPCIS-Capture-File-Size-Limit).")
    webhook_allow_http: bool = Field(
        False, description="Let query subscriptions deliver to plain http:// destinations "
        "other than loopback (https:// otherwise; a signatureToken still signs each document).")
    webhook_attempts: int = Field(
        8, ge=1, le=100, description="Attempts per webhook delivery (the wait between them "
        "doubles from 1 s) before the document is dropped and counted "
        "(rfidd_hq_subscription_deliveries_total{result=\"dropped\"}).")
    webhook_retry_max_s: float = Field(
        60.0, gt=0, description="Longest wait between two attempts of a webhook delivery.")

    @model_validator(mode="after")
    def _remote_needs_tls(self) -> HqEpcisConfig:
        loopback = self.listen in ("127.0.0.1", "::1", "localhost") or \
            self.listen.startswith("127.")
        if not loopback and (self.tls_cert_file is None or self.tls_key_file is None):
            raise ValueError(f"listen {self.listen}: a non-loopback address needs "
                             "tls_cert_file and tls_key_file (tokens travel in each request)")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together")
        return self


class HqSitesConfig(_Strict):
    accept_unknown: bool = Field(
        False,
        description="Store what any site publishes. false: only sites registered with "
        "`rfidd hq site add` (the others are counted, per site in `rfidd hq sites`, and in "
        "rfidd_hq_unknown_site_messages_total).",
    )
    gap_check_interval_s: float = Field(
        5.0, gt=0, description="How often each site's sequence is checked for gaps.")
    gap_grace_s: float = Field(
        10.0, ge=0,
        description="A gap younger than this is events in flight, not a loss: no replay yet.")
    replay_retry_s: float = Field(
        30.0, gt=0, description="Ask a site again for a replay after this long while the "
        "gap stays open.")
    gap_alert_s: float = Field(
        300.0, gt=0, description="A gap open longer than this raises an alert (log, the "
        "site's alerts, rfidd_hq_sequence_gap_alerts_total).")


class HqConfig(_Strict):
    database: HqDatabaseConfig = Field(
        default_factory=HqDatabaseConfig, description="Where events are stored."
    )
    mqtt: HqMqttConfig = Field(default_factory=HqMqttConfig, description="The sites' feed.")
    http: Any = Field(
        None, description="Removed: HQ has one web port, [epcis] (see its fields); a [http] "
        "section is an error saying where its keys went.")
    epcis: HqEpcisConfig = Field(
        default_factory=HqEpcisConfig, description="HQ's one web port: the EPCIS 2.0 REST "
        "interface, /api/v1, the /chain page and /metrics.")
    sites: HqSitesConfig = Field(
        default_factory=HqSitesConfig, description="Site registry and sequence gap repair.")


    @field_validator("http", mode="before")
    @classmethod
    def _http_moved(cls, v: Any) -> Any:
        if v is not None:
            raise ValueError(
                "the [http] section is gone: HQ serves /api/v1 and /metrics on its one web "
                "port, [epcis] (default 127.0.0.1:9761), with a read token. Move http.port to "
                "epcis.port (9760 was the old default), http.listen to epcis.listen, "
                "http.enabled to epcis.enabled, and remove [http]")
        return v


def parse_hq_config(text: str, source: str = "<hq config>") -> HqConfig:
    """Parse and validate; raise ConfigError naming every problem (key path and line)."""
    return validate_toml(HqConfig, text, source)


def load_hq_config(path: str | Path) -> HqConfig:
    return parse_hq_config(*read_config_text(path))


_HQ_ONLY = {"epcis", "sites"}  # top-level tables only an HQ config has
_SITE_ONLY = {"site", "zones", "readers", "presence", "counts", "reception", "shrinkage"}
# [mqtt] keys only HQ has
_HQ_MQTT = {"share_group", "relay_asns", "relay_share_group", "relay_signing_key_file"}


def config_kind(path: str | Path) -> Literal["hq", "site"] | None:
    """What a TOML file looks like by its top-level tables, so a check-config of the wrong
    kind can say which command to run; None when it cannot tell (or cannot read it)."""
    import tomllib

    try:
        doc = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None
    keys, mqtt = set(doc), doc.get("mqtt")
    hq = bool(keys & _HQ_ONLY) or (isinstance(mqtt, dict) and bool(set(mqtt) & _HQ_MQTT))
    site = bool(keys & _SITE_ONLY)
    if hq and not site:
        return "hq"
    if site and not hq:
        return "site"
    return None
