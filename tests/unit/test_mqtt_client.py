"""The one paho client factory: each setting lands on the paho client (no broker needed here;
tests/integration/test_mqtt_tls.py connects with the same settings over TLS)."""

from __future__ import annotations

import logging
import ssl
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import ConnackCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode
from tlsutil import issue, make_ca

from rfidd.config import MqttConfig, TlsConfig
from rfidd.hq.config import parse_hq_config
from rfidd.hq.consumer import HqConsumer, HqConsumerError
from rfidd.hq.relay import AsnRelay, RelayError
from rfidd.mqtt_client import (
    ClientSettings,
    MqttSetupError,
    Will,
    build_client,
    connect,
    is_auth_refusal,
)

SECRET = f"pw-{uuid.uuid4().hex}-Kq3"


def built(**kw: object) -> tuple[mqtt.Client, ClientSettings]:
    s = ClientSettings(**{"host": "127.0.0.1", "port": 1883, "client_id": "c1", **kw})  # type: ignore[arg-type]
    c = build_client(s)
    connect(c, s)  # records the CONNECT options; nothing is sent before loop_start()
    return c, s


def password_file(tmp_path: Path, text: str = SECRET + "\n") -> Path:
    f = tmp_path / "mqtt-password"
    f.write_text(text)
    return f


def test_mqtt5_persistent_session_with_its_connect_properties() -> None:
    c, _ = built(protocol="5", persistent_session=True, session_expiry_s=3600,
                 receive_maximum=50, max_packet_bytes=65536, keepalive_s=17)
    assert c.protocol == mqtt.MQTTv5
    assert c._client_id == b"c1"
    assert c._clean_start is False
    props = c._connect_properties
    assert props is not None
    assert props.SessionExpiryInterval == 3600
    assert props.ReceiveMaximum == 50
    assert props.MaximumPacketSize == 65536
    assert (c.host, c.port, c.keepalive) == ("127.0.0.1", 1883, 17)


def test_mqtt5_clean_session_expires_at_once() -> None:
    c, _ = built(protocol="5", persistent_session=False, session_expiry_s=3600)
    assert c._clean_start is True
    assert c._connect_properties is not None
    assert c._connect_properties.SessionExpiryInterval == 0


@pytest.mark.parametrize("persistent", [True, False])
def test_mqtt311_keeps_the_session_through_clean_session(persistent: bool) -> None:
    c, _ = built(protocol="3.1.1", persistent_session=persistent)
    assert c.protocol == mqtt.MQTTv311
    assert c._clean_session is (not persistent)
    assert c._connect_properties is None  # no properties in 3.1.1


def test_user_name_and_password_from_a_file(tmp_path: Path) -> None:
    c, _ = built(username="store-01", password_file=password_file(tmp_path))
    assert c.username == "store-01"
    assert c.password == SECRET  # one trailing newline dropped


def test_password_from_a_systemd_credential(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "mqtt").write_text(SECRET)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    c, _ = built(username="store-01", password_file=Path("credential:mqtt"))
    assert c.password == SECRET


def test_user_name_alone_and_no_credentials() -> None:
    c, _ = built(username="store-01")
    assert (c.username, c.password) == ("store-01", None)
    c, _ = built()
    assert (c.username, c.password) == (None, None)


def test_password_problems_name_the_setting_never_the_secret(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(MqttSetupError, match=f"mqtt.password_file {missing}: cannot read"):
        built(username="u", password_file=missing)
    two = password_file(tmp_path, f"{SECRET}\nsecond\n")
    with pytest.raises(MqttSetupError) as err:
        built(username="u", password_file=two)
    assert str(err.value) == f"mqtt.password_file {two}: more than one line"
    assert SECRET not in str(err.value)


def test_tls_from_a_ca_file_verifies_chain_and_host(tmp_path: Path) -> None:
    ca = make_ca(tmp_path, "factory test CA")
    c, _ = built(tls=TlsConfig(ca_file=ca.cert_file))
    ctx = c._ssl_context
    assert isinstance(ctx, ssl.SSLContext)
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    # Only the given CA is trusted, not the system store as well.
    assert [cert["subject"] for cert in ctx.get_ca_certs()] == [
        ((("commonName", "factory test CA"),),)]


def test_tls_with_the_system_store_a_client_certificate_and_insecure(tmp_path: Path) -> None:
    ca = make_ca(tmp_path, "factory test CA")
    client = issue(ca, tmp_path, "client-01", client=True)
    c, _ = built(tls=TlsConfig(cert_file=client.cert_file, key_file=client.key_file,
                               insecure=True))
    ctx = c._ssl_context
    assert isinstance(ctx, ssl.SSLContext)
    assert ctx.verify_mode == ssl.CERT_REQUIRED and not ctx.check_hostname
    c, _ = built()
    assert c._ssl_context is None  # plain TCP


def test_a_bad_ca_file_names_the_setting(tmp_path: Path) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate")
    with pytest.raises(MqttSetupError, match=f"mqtt.tls.ca_file {bad}: cannot load"):
        built(tls=TlsConfig(ca_file=bad))


def test_reconnect_bounds_will_acknowledgements_and_queue() -> None:
    c, _ = built(reconnect_min_s=2, reconnect_max_s=30, manual_ack=True, max_inflight=7,
                 will=Will("rfidd/v1/s1/status", b"offline", qos=1, retain=True))
    assert (c._reconnect_min_delay, c._reconnect_max_delay) == (2, 30)
    assert c._manual_ack is True
    assert c.max_inflight_messages == 7
    assert c.max_queued_messages == 0  # unbounded: paho never drops an outgoing message
    assert (c.will_topic, c.will_payload) == ("rfidd/v1/s1/status", b"offline")
    assert (c._will_qos, c._will_retain) == (1, True)
    c, _ = built()
    assert c._manual_ack is False and c.will_topic == ""


def test_paho_logs_to_the_named_logger_only_when_asked() -> None:
    c, _ = built(logger="rfidd.test.paho")
    assert c.logger is logging.getLogger("rfidd.test.paho")
    c, _ = built()
    assert c.logger is None


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="protocol"):
        ClientSettings("h", 1, protocol="4")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="reconnect"):
        ClientSettings("h", 1, reconnect_min_s=10, reconnect_max_s=5)


def test_settings_from_an_mqtt_table(tmp_path: Path) -> None:
    pw = password_file(tmp_path)
    cfg = MqttConfig.model_validate({"url": "mqtts://hq.example:8884", "protocol": "3.1.1",
                                     "username": "u", "password_file": str(pw),
                                     "tls": {"insecure": True}, "keepalive_s": 45})
    s = ClientSettings.from_config(cfg, client_id="x", manual_ack=True)
    assert (s.host, s.port, s.protocol, s.keepalive_s) == ("hq.example", 8884, "3.1.1", 45)
    assert s.tls == cfg.tls and s.username == "u" and s.password_file == pw and s.manual_ack
    plain = ClientSettings.from_config(MqttConfig.model_validate({"url": "mqtt://hq"}),
                                       client_id="x")
    assert (plain.port, plain.tls) == (1883, None)
    tls = ClientSettings.from_config(MqttConfig.model_validate({"url": "mqtts://hq"}),
                                     client_id="x")
    assert tls.port == 8883 and tls.tls is not None
    assert SECRET not in repr(s)  # the settings hold where the password is, not the password


def test_auth_refusals_are_recognised_by_reason_code() -> None:
    assert is_auth_refusal(ReasonCode(PacketTypes.CONNACK, "Bad user name or password"))
    assert is_auth_refusal(ReasonCode(PacketTypes.CONNACK, "Not authorized"))
    # MQTT 3.1.1 return codes, as paho 2 hands them to a VERSION2 on_connect.
    assert is_auth_refusal(mqtt.convert_connack_rc_to_reason_code(
        ConnackCode.CONNACK_REFUSED_BAD_USERNAME_PASSWORD))
    assert is_auth_refusal(mqtt.convert_connack_rc_to_reason_code(
        ConnackCode.CONNACK_REFUSED_NOT_AUTHORIZED))
    assert not is_auth_refusal(ReasonCode(PacketTypes.CONNACK, "Server unavailable"))
    assert not is_auth_refusal(ReasonCode(PacketTypes.CONNACK, "Success"))


def test_hq_consumer_and_relay_use_the_factory_alike(tmp_path: Path) -> None:
    ca = make_ca(tmp_path, "hq CA")
    pw = password_file(tmp_path)
    cfg = parse_hq_config(f"""
[mqtt]
url = "mqtts://127.0.0.1:8883"
protocol = "5"
client_id = "hq-1"
username = "hq"
password_file = "{pw}"
session_expiry_s = 600
receive_maximum = 99
[mqtt.tls]
ca_file = "{ca.cert_file}"
""").mqtt
    consumer = HqConsumer(cfg, store=None, reconnect_max_s=9)  # type: ignore[arg-type]
    c = consumer._make_client()
    assert (c.username, c.password, c._manual_ack) == ("hq", SECRET, True)
    assert isinstance(c._ssl_context, ssl.SSLContext)
    assert c._reconnect_max_delay == 9
    assert consumer.settings.receive_maximum == 99 and consumer.settings.persistent_session
    relay = AsnRelay.from_config(cfg)
    r = relay._client
    assert (r.username, r.password, r._manual_ack) == ("hq", SECRET, True)
    assert isinstance(r._ssl_context, ssl.SSLContext)
    assert relay.settings.client_id == "hq-1-asn" and relay.settings.session_expiry_s == 600


def test_hq_setup_errors_keep_their_names(tmp_path: Path) -> None:
    cfg = parse_hq_config(f"""
[mqtt]
username = "hq"
password_file = "{tmp_path / 'missing'}"
""").mqtt
    with pytest.raises(HqConsumerError, match=r"mqtt.password_file .*missing: cannot read"):
        HqConsumer(cfg, store=None)._make_client()  # type: ignore[arg-type]
    with pytest.raises(RelayError, match=r"ASN relay: mqtt.password_file .*missing"):
        AsnRelay.from_config(cfg)
