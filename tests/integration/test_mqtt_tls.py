"""The secured HQ link: TLS with a CA file or the system trust store, mutual TLS, user name and
password from a file or a systemd credential; the password never in logs, errors, metrics or
the config's repr.

One private mosquitto (module scope) with a listener per case, on free loopback ports; never the
shared broker on 1883. Certificates are generated per run (tests/tlsutil.py).
"""

from __future__ import annotations

import base64
import json
import logging
import subprocess
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    Broker,
    MosquittoProcess,
    MqttCollector,
    free_port,
    missing_service,
    mosquitto_binary,
    wait_port,
)
from cryptography.hazmat.primitives import serialization
from prometheus_client import generate_latest
from pydantic import ValidationError
from tlsutil import (
    Issued,
    issue,
    make_ca,
    mosquitto_hash,
    mosquitto_passwd_binary,
    write_password_file,
)

from inventory.events import stable_event_id
from rfidd.config import MqttConfig
from rfidd.metrics import Metrics
from rfidd.mqtt import HqLink, HqLinkError
from rfidd.mqtt_client import read_password, tls_context
from rfidd.store import Database, EventRecord, apply_batch, open_database, outbox_stats

pytestmark = pytest.mark.integration

USER = "store-paris-01"
# Distinctive, so a leak anywhere is found by a substring search.
SECRET = f"pw-{uuid.uuid4().hex}-Zx9"
WRONG = f"wrong-{uuid.uuid4().hex}-Qv7"


@dataclass
class TlsBroker:
    """Listeners of one private mosquitto and the PKI around them."""

    proc: MosquittoProcess
    plain: int  # anonymous, no TLS: the test's own collector
    password: int  # TLS (server cert of CA "rfidd test CA"), user/password, no anonymous
    mtls: int  # same + a client certificate required
    wrong_host: int  # TLS with a certificate that names another host
    ca: Issued
    other_ca: Issued
    client: Issued
    rogue_client: Issued  # a client certificate of the other CA

    @property
    def collector_broker(self) -> Broker:
        return Broker("127.0.0.1", self.plain, True)


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsBroker]:
    binary = mosquitto_binary()
    if binary is None:
        missing_service("mosquitto binary (for a private TLS broker)")
    assert binary is not None
    d = tmp_path_factory.mktemp("mqtt-tls")
    pki = d / "pki"
    ca = make_ca(pki, "rfidd test CA")
    other_ca = make_ca(pki, "someone else CA")
    server = issue(ca, pki, "broker", dns=("localhost",), ips=("127.0.0.1",))
    elsewhere = issue(ca, pki, "broker-elsewhere", dns=("broker.invalid",))
    client = issue(ca, pki, "client-paris-01", client=True)
    rogue = issue(other_ca, pki, "client-rogue", client=True)
    passwd = d / "passwd"
    write_password_file(passwd, {USER: SECRET, "other-user": "other-password"})
    plain, password, mtls, wrong_host = (free_port() for _ in range(4))

    def tls_listener(port: int, cert: Issued, require_cert: bool = False) -> str:
        return (
            f"\nlistener {port} 127.0.0.1\nallow_anonymous false\npassword_file {passwd}\n"
            f"cafile {ca.cert_file}\ncertfile {cert.cert_file}\nkeyfile {cert.key_file}\n"
            f"require_certificate {'true' if require_cert else 'false'}\n"
        )

    m = MosquittoProcess(binary, d, port=plain)
    m.conf.write_text(
        "per_listener_settings true\n"
        + ("user root\n" if _is_root() else "")
        + f"listener {plain} 127.0.0.1\nallow_anonymous true\n"
        + tls_listener(password, server)
        + tls_listener(mtls, server, require_cert=True)
        + tls_listener(wrong_host, elsewhere)
    )
    m.start()
    try:
        for port in (password, mtls, wrong_host):
            if not wait_port("127.0.0.1", port):
                raise RuntimeError(f"mosquitto TLS listener {port} did not open: "
                                   f"{m.log.read_text()[-2000:]}")
        yield TlsBroker(m, plain, password, mtls, wrong_host, ca, other_ca, client, rogue)
    finally:
        m.stop()


def _is_root() -> bool:
    import os

    return os.geteuid() == 0


# --------------------------------------------------------------------------- links


def builder(events: list[dict[str, Any]], created: datetime, sender: str) -> dict[str, Any]:
    return {"type": "EPCISDocument", "creationDate": created.isoformat(), "sender": sender,
            "epcisBody": {"eventList": events}}


@pytest.fixture
def db(sqlite_url: str) -> Iterator[Database]:
    d = open_database(sqlite_url)
    yield d
    d.dispose()


def commit_event(db: Database, n: int) -> str:
    eid = stable_event_id("mqtt-tls-test", str(uuid.uuid4()), n)
    with db.write() as s:
        apply_batch(s, events=[EventRecord(eid, 1000.0 + n, {"eventID": eid, "n": n})])
    return eid


def depth(db: Database) -> int:
    with db.session() as s:
        return outbox_stats(s)[0]


@dataclass
class Made:
    link: HqLink
    config: MqttConfig
    metrics: Metrics
    site: str


class Links:
    """Builds HqLinks with fast timings; stops them at teardown."""

    def __init__(self, db: Database, tmp: Path) -> None:
        self.db = db
        self.tmp = tmp
        self.made: list[Made] = []
        self.stop_event = threading.Event()

    def password_file(self, password: str) -> Path:
        p = self.tmp / f"pw-{uuid.uuid4().hex[:8]}"
        p.write_text(password + "\n")
        return p

    def config(self, port: int, host: str = "127.0.0.1", **settings: Any) -> MqttConfig:
        return MqttConfig.model_validate({
            "url": f"mqtts://{host}:{port}", "client_id": f"rfidd-tls-{uuid.uuid4().hex[:8]}",
            "keepalive_s": 5, **settings,
        })

    def __call__(self, config: MqttConfig) -> Made:
        site = f"tls{uuid.uuid4().hex[:8]}"
        metrics = Metrics()
        link = HqLink(config, site, self.db, metrics, self.stop_event, document_builder=builder,
                      poll_interval_s=0.05, stats_interval_s=0.0, reconnect_min_s=0.05,
                      reconnect_max_s=0.3, persistent_session=False)
        made = Made(link, config, metrics, site)
        self.made.append(made)
        return made

    def close(self) -> None:
        for m in self.made:
            if m.link._client is not None:
                m.link.stop(timeout=2, drain_s=0)


@pytest.fixture
def links(db: Database, tmp_path: Path) -> Iterator[Links]:
    f = Links(db, tmp_path)
    yield f
    f.close()


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Everything, paho's debug log of each packet included: a leak at any level counts."""
    caplog.set_level(logging.DEBUG)
    return caplog


def wait_log(caplog: pytest.LogCaptureFixture, needle: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for r in list(caplog.records):
            msg = r.getMessage()
            if needle in msg:
                return msg
        time.sleep(0.02)
    pytest.fail(f"no log record containing {needle!r}; got "
                f"{[r.getMessage() for r in caplog.records][-15:]}")


def wait_until(cond: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def assert_no_secret(caplog: pytest.LogCaptureFixture, made: Made, *secrets: str) -> None:
    """No secret in any log record (message, arguments, exception), the metrics, the config."""
    texts = [caplog.text]
    for r in caplog.records:
        texts.append(r.getMessage())
        texts.append(repr(r.args))
        if r.exc_info and r.exc_info[1] is not None:
            texts.extend(traceback.format_exception(r.exc_info[1]))
    texts.append(generate_latest(made.metrics.registry).decode())
    texts += [repr(made.config), str(made.config), made.config.model_dump_json()]
    texts.append(repr(made.link.__dict__))
    for secret in secrets:
        for t in texts:
            assert secret not in t


def published(collector: MqttCollector, made: Made, eid: str) -> None:
    topic = f"rfidd/v1/{made.site}/epcis"
    msgs = collector.wait_for(lambda ms: any(m.topic == topic for m in ms))
    doc = json.loads(next(m for m in msgs if m.topic == topic).payload)
    assert [e["eventID"] for e in doc["epcisBody"]["eventList"]] == [eid]


# --------------------------------------------------------------------------- the happy paths


@pytest.mark.parametrize(("host", "protocol"), [
    ("127.0.0.1", "5"), ("localhost", "5"), ("127.0.0.1", "3.1.1"),
])
def test_publishes_over_tls_with_ca_file_and_password(
    tls_broker: TlsBroker, links: Links, db: Database, logs: pytest.LogCaptureFixture,
    mqtt_collector: Callable[..., MqttCollector], host: str, protocol: str,
) -> None:
    made = links(links.config(
        tls_broker.password, host, username=USER,
        password_file=str(links.password_file(SECRET)),
        tls={"ca_file": str(tls_broker.ca.cert_file)}, protocol=protocol,
    ))
    collector = mqtt_collector(tls_broker.collector_broker, f"rfidd/v1/{made.site}/#")
    eid = commit_event(db, 1)
    made.link.start()
    assert made.link.wait_connected(10), logs.text[-3000:]
    published(collector, made, eid)
    collector.wait_for(lambda ms: any(
        m.topic == f"rfidd/v1/{made.site}/status" and m.payload == b"online" for m in ms))
    made.link.stop(timeout=2)
    assert depth(db) == 0  # acknowledged by the broker, marked sent
    assert f"TLS with CA file {tls_broker.ca.cert_file}" in logs.text
    assert_no_secret(logs, made, SECRET)


def test_mutual_tls_with_client_certificate(
    tls_broker: TlsBroker, links: Links, db: Database, logs: pytest.LogCaptureFixture,
    mqtt_collector: Callable[..., MqttCollector],
) -> None:
    made = links(links.config(
        tls_broker.mtls, username=USER, password_file=str(links.password_file(SECRET)),
        tls={"ca_file": str(tls_broker.ca.cert_file), "cert_file": str(tls_broker.client.cert_file),
             "key_file": str(tls_broker.client.key_file)},
    ))
    collector = mqtt_collector(tls_broker.collector_broker, f"rfidd/v1/{made.site}/#")
    eid = commit_event(db, 2)
    made.link.start()
    assert made.link.wait_connected(10), logs.text[-3000:]
    published(collector, made, eid)
    assert_no_secret(logs, made, SECRET)


def test_client_certificate_and_key_in_one_file(
    tls_broker: TlsBroker, links: Links, tmp_path: Path,
) -> None:
    both = tmp_path / "client.pem"
    both.write_bytes(tls_broker.client.cert_file.read_bytes()
                     + tls_broker.client.key_file.read_bytes())
    made = links(links.config(
        tls_broker.mtls, username=USER, password_file=str(links.password_file(SECRET)),
        tls={"ca_file": str(tls_broker.ca.cert_file), "cert_file": str(both)},
    ))
    made.link.start()
    assert made.link.wait_connected(10)


def test_password_from_systemd_credential(
    tls_broker: TlsBroker, links: Links, db: Database, tmp_path: Path,
    logs: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
    mqtt_collector: Callable[..., MqttCollector],
) -> None:
    creds = tmp_path / "credentials"
    creds.mkdir()
    (creds / "mqtt-password").write_text(SECRET)  # systemd writes it without a newline
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    made = links(links.config(
        tls_broker.password, username=USER, password_file="credential:mqtt-password",
        tls={"ca_file": str(tls_broker.ca.cert_file)},
    ))
    collector = mqtt_collector(tls_broker.collector_broker, f"rfidd/v1/{made.site}/#")
    eid = commit_event(db, 3)
    made.link.start()
    assert made.link.wait_connected(10), logs.text[-3000:]
    published(collector, made, eid)
    assert_no_secret(logs, made, SECRET)


def test_mqtts_without_ca_file_uses_the_system_trust_store(
    tls_broker: TlsBroker, links: Links, logs: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    # OpenSSL's default verify paths honour SSL_CERT_FILE/SSL_CERT_DIR: make our CA the
    # "system" store. Trusted there -> connects; the real store (no test CA) -> refused.
    empty = tmp_path / "no-certs"
    empty.mkdir()
    monkeypatch.setenv("SSL_CERT_DIR", str(empty))
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_broker.ca.cert_file))
    config = links.config(tls_broker.password, username=USER,
                          password_file=str(links.password_file(SECRET)))
    assert config.tls.ca_file is None
    made = links(config)
    made.link.start()
    assert made.link.wait_connected(10), logs.text[-3000:]
    assert "TLS with system trust store" in logs.text
    made.link.stop(timeout=2, drain_s=0)

    monkeypatch.setenv("SSL_CERT_FILE", str(tls_broker.other_ca.cert_file))
    logs.clear()
    made = links(config)
    made.link.start()
    wait_log(logs, "certificate was not accepted")
    assert not made.link.connected
    made.link.stop(timeout=2, drain_s=0)

    # A ca_file replaces the system store: the broker's CA trusted system-wide does not help.
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_broker.ca.cert_file))
    logs.clear()
    made = links(links.config(tls_broker.password, username=USER,
                              password_file=str(links.password_file(SECRET)),
                              tls={"ca_file": str(tls_broker.other_ca.cert_file)}))
    made.link.start()
    wait_log(logs, "certificate was not accepted")
    assert not made.link.connected


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_wrong_password_is_refused_and_logged_without_the_password(
    tls_broker: TlsBroker, links: Links, db: Database, logs: pytest.LogCaptureFixture,
    mqtt_collector: Callable[..., MqttCollector], protocol: str,
) -> None:
    pw_file = links.password_file(WRONG)
    made = links(links.config(
        tls_broker.password, username=USER, password_file=str(pw_file),
        tls={"ca_file": str(tls_broker.ca.cert_file)}, protocol=protocol,
    ))
    collector = mqtt_collector(tls_broker.collector_broker, f"rfidd/v1/{made.site}/#")
    commit_event(db, 4)
    made.link.start()
    msg = wait_log(logs, "refused the connection")
    assert "Bad user name or password" in msg or "Not authorized" in msg, msg
    assert str(pw_file) in msg and USER in msg  # what to check, not the secret
    wait_until(lambda: made.link.stats.refusals >= 2, "a retry")  # it keeps retrying...
    refusals = [r for r in list(logs.records) if "refused the connection" in r.getMessage()]
    # ...but says so once (state changes only, as for readers), the repeats at debug level.
    assert [r.levelname for r in refusals].count("ERROR") == 1, refusals
    assert "closed the connection before accepting it" not in logs.text  # no misleading hint
    assert not made.link.connected
    assert made.metrics.mqtt_connected._value.get() == 0
    assert collector.messages == []
    made.link.stop(timeout=2, drain_s=0)
    assert depth(db) == 1  # nothing lost: the event waits in the outbox
    assert_no_secret(logs, made, WRONG, SECRET)


def test_unknown_user_is_refused(
    tls_broker: TlsBroker, links: Links, logs: pytest.LogCaptureFixture,
) -> None:
    made = links(links.config(
        tls_broker.password, username="nobody", password_file=str(links.password_file(SECRET)),
        tls={"ca_file": str(tls_broker.ca.cert_file)},
    ))
    made.link.start()
    wait_log(logs, "refused the connection")
    assert not made.link.connected
    assert_no_secret(logs, made, SECRET)


def test_no_credentials_is_refused(
    tls_broker: TlsBroker, links: Links, logs: pytest.LogCaptureFixture,
) -> None:
    made = links(links.config(tls_broker.password,
                              tls={"ca_file": str(tls_broker.ca.cert_file)}))
    made.link.start()
    wait_log(logs, "refused the connection")
    assert not made.link.connected


def test_untrusted_server_certificate_is_refused(
    tls_broker: TlsBroker, links: Links, logs: pytest.LogCaptureFixture,
    mqtt_collector: Callable[..., MqttCollector],
) -> None:
    made = links(links.config(
        tls_broker.password, username=USER, password_file=str(links.password_file(SECRET)),
        tls={"ca_file": str(tls_broker.other_ca.cert_file)},
    ))
    collector = mqtt_collector(tls_broker.collector_broker, f"rfidd/v1/{made.site}/#")
    made.link.start()
    msg = wait_log(logs, "certificate was not accepted")
    assert f"127.0.0.1:{tls_broker.password}" in msg
    # OpenSSL's verdict, as the broker sends its chain or not.
    assert ("unable to get local issuer certificate" in msg
            or "self-signed certificate in certificate chain" in msg), msg
    assert "mqtt.tls.ca_file" in msg
    assert not made.link.connected
    assert collector.messages == []
    assert_no_secret(logs, made, SECRET)


def test_certificate_for_another_host_is_refused_unless_insecure(
    tls_broker: TlsBroker, links: Links, logs: pytest.LogCaptureFixture,
) -> None:
    tls = {"ca_file": str(tls_broker.ca.cert_file)}
    made = links(links.config(tls_broker.wrong_host, username=USER,
                              password_file=str(links.password_file(SECRET)), tls=tls))
    made.link.start()
    msg = wait_log(logs, "certificate was not accepted")
    assert "mismatch" in msg.lower(), msg
    assert not made.link.connected
    made.link.stop(timeout=2, drain_s=0)

    insecure = links(links.config(tls_broker.wrong_host, username=USER,
                                  password_file=str(links.password_file(SECRET)),
                                  tls={**tls, "insecure": True}))
    insecure.link.start()
    assert insecure.link.wait_connected(10), logs.text[-3000:]
    assert "host name NOT checked" in logs.text


def test_insecure_still_verifies_the_chain(
    tls_broker: TlsBroker, links: Links, logs: pytest.LogCaptureFixture,
) -> None:
    made = links(links.config(
        tls_broker.wrong_host, username=USER, password_file=str(links.password_file(SECRET)),
        tls={"ca_file": str(tls_broker.other_ca.cert_file), "insecure": True},
    ))
    made.link.start()
    wait_log(logs, "certificate was not accepted")
    assert not made.link.connected


@pytest.mark.parametrize("cert", [None, "rogue"])
def test_mutual_tls_listener_refuses_a_missing_or_foreign_client_certificate(
    tls_broker: TlsBroker, links: Links, logs: pytest.LogCaptureFixture,
    mqtt_collector: Callable[..., MqttCollector], cert: str | None,
) -> None:
    tls: dict[str, str] = {"ca_file": str(tls_broker.ca.cert_file)}
    if cert == "rogue":
        tls |= {"cert_file": str(tls_broker.rogue_client.cert_file),
                "key_file": str(tls_broker.rogue_client.key_file)}
    made = links(links.config(tls_broker.mtls, username=USER,
                              password_file=str(links.password_file(SECRET)), tls=tls))
    collector = mqtt_collector(tls_broker.collector_broker, f"rfidd/v1/{made.site}/#")
    made.link.start()
    # TLS 1.3: the client finishes its handshake before the broker checks the certificate, so
    # the refusal shows as the connection closing before CONNACK (or a TLS alert under 1.2).
    msg = wait_log(logs, f"HQ broker 127.0.0.1:{tls_broker.mtls}")
    assert ("closed the connection before accepting it" in msg
            or "TLS handshake failed" in msg), msg
    if cert is None:
        wait_log(logs, "does it require a client certificate (mqtt.tls.cert_file)?")
    time.sleep(0.3)  # a few reconnect attempts: none may get through
    assert not made.link.connected
    assert collector.messages == []
    assert_no_secret(logs, made, SECRET)


# --------------------------------------------------------------------------- setup errors


def _start_error(links: Links, config: MqttConfig) -> str:
    made = links(config)
    with pytest.raises(HqLinkError) as err:
        made.link.start()
    text = "".join(traceback.format_exception(err.value))
    assert SECRET not in text
    return str(err.value)


def test_missing_password_file_is_a_clear_error(links: Links, tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "mqtt-password"
    msg = _start_error(links, links.config(1, username=USER, password_file=str(missing)))
    assert msg == f"mqtt.password_file {missing}: cannot read: No such file or directory"


def test_unreadable_password_file_is_a_clear_error(links: Links, tmp_path: Path) -> None:
    # A directory is unreadable as a file even for root (chmod 000 is not, for root).
    msg = _start_error(links, links.config(1, username=USER, password_file=str(tmp_path)))
    assert msg.startswith(f"mqtt.password_file {tmp_path}: cannot read: ")


@pytest.mark.parametrize(("content", "problem"), [
    (b"\xff\xfe" + SECRET.encode(), "not UTF-8 text"),
    (SECRET.encode() + b"\xff", "not UTF-8 text"),
    (b"", "empty"),
    (b"\n", "empty"),
    (SECRET.encode() + b"\nsecond line\n", "more than one line"),
])
def test_bad_password_file_content_is_named_not_shown(
    links: Links, tmp_path: Path, content: bytes, problem: str,
) -> None:
    f = tmp_path / "pw"
    f.write_bytes(content)
    msg = _start_error(links, links.config(1, username=USER, password_file=str(f)))
    assert msg == f"mqtt.password_file {f}: {problem}"


def test_password_file_newline_handling(tmp_path: Path) -> None:
    for content, expected in [(f"{SECRET}\n", SECRET), (f"{SECRET}\r\n", SECRET),
                              (SECRET, SECRET), (f" {SECRET} \n", f" {SECRET} ")]:
        f = tmp_path / "pw"
        f.write_text(content, newline="")
        cfg = MqttConfig.model_validate({"username": USER, "password_file": str(f)})
        assert read_password(cfg) == expected


def test_credential_without_credentials_directory(
    links: Links, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    msg = _start_error(links, links.config(1, username=USER,
                                           password_file="credential:mqtt-password"))
    assert msg.startswith("mqtt.password_file credential:mqtt-password: $CREDENTIALS_DIRECTORY "
                          "is not set"), msg
    assert "LoadCredential=mqtt-password:" in msg


def test_missing_credential_names_the_resolved_file(
    links: Links, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    msg = _start_error(links, links.config(1, username=USER, password_file="credential:mqtt"))
    assert msg == (f"mqtt.password_file credential:mqtt ({tmp_path / 'mqtt'}): cannot read: "
                   "No such file or directory")


@pytest.mark.parametrize("bad", ["credential:", "credential:../etc/shadow", "credential:a/b",
                                 "credential:..", "credential:a b"])
def test_credential_names_are_validated_at_load(bad: str) -> None:
    with pytest.raises(ValidationError) as err:
        MqttConfig.model_validate({"password_file": bad})
    assert "systemd credential name" in str(err.value)
    assert "password_file" in str(err.value)


def test_tls_settings_need_an_mqtts_url(tls_broker: TlsBroker) -> None:
    with pytest.raises(ValidationError) as err:
        MqttConfig.model_validate({"url": "mqtt://hq:1883",
                                   "tls": {"ca_file": str(tls_broker.ca.cert_file)}})
    assert "tls settings need an mqtts:// url" in str(err.value)


def test_key_file_needs_cert_file() -> None:
    with pytest.raises(ValidationError) as err:
        MqttConfig.model_validate({"url": "mqtts://hq:8883", "tls": {"key_file": "/k.pem"}})
    assert "tls.key_file needs tls.cert_file" in str(err.value)


def test_bad_ca_file_is_a_clear_error(links: Links, tmp_path: Path) -> None:
    missing = tmp_path / "ca.pem"
    msg = _start_error(links, links.config(1, tls={"ca_file": str(missing)}))
    assert msg == f"mqtt.tls.ca_file {missing}: cannot load CA certificates: No such file or " \
                  "directory"
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    msg = _start_error(links, links.config(1, tls={"ca_file": str(junk)}))
    assert msg.startswith(f"mqtt.tls.ca_file {junk}: cannot load CA certificates: "), msg


def test_bad_client_certificate_is_a_clear_error(
    tls_broker: TlsBroker, links: Links, tmp_path: Path,
) -> None:
    # A key that does not belong to the certificate.
    msg = _start_error(links, links.config(1, tls={
        "cert_file": str(tls_broker.client.cert_file),
        "key_file": str(tls_broker.rogue_client.key_file)}))
    assert msg.startswith(f"mqtt.tls.cert_file {tls_broker.client.cert_file} / key_file "
                          f"{tls_broker.rogue_client.key_file}: cannot load the client "
                          "certificate and key: "), msg


def test_encrypted_client_key_is_refused_without_prompting(
    tls_broker: TlsBroker, tmp_path: Path,
) -> None:
    enc = tmp_path / "enc.key"
    enc.write_bytes(tls_broker.client.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase"),
    ))
    cfg = MqttConfig.model_validate({"url": "mqtts://hq:8883", "tls": {
        "cert_file": str(tls_broker.client.cert_file), "key_file": str(enc)}})
    with pytest.raises(HqLinkError, match=f"mqtt.tls.key_file {enc}: the key is encrypted"):
        tls_context(cfg.tls)


def test_tls_context_defaults_are_strict(tls_broker: TlsBroker) -> None:
    import ssl

    ctx = tls_context(MqttConfig.model_validate({"url": "mqtts://hq:8883"}).tls)
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert ctx.minimum_version >= ssl.TLSVersion.TLSv1_2
    ctx = tls_context(MqttConfig.model_validate(
        {"url": "mqtts://hq:8883", "tls": {"ca_file": str(tls_broker.ca.cert_file),
                                           "insecure": True}}).tls)
    assert ctx.verify_mode == ssl.CERT_REQUIRED and not ctx.check_hostname
    assert [c["subject"] for c in ctx.get_ca_certs()] == [((("commonName", "rfidd test CA"),),)]


def test_config_never_holds_the_password(tmp_path: Path) -> None:
    f = tmp_path / "pw"
    f.write_text(SECRET)
    cfg = MqttConfig.model_validate({"username": USER, "password_file": str(f)})
    for text in (repr(cfg), str(cfg), cfg.model_dump_json(), repr(cfg.model_dump())):
        assert SECRET not in text
        assert str(f) in text or "password_file" in text


# --------------------------------------------------------------------------- test tooling


def test_own_password_hash_matches_mosquitto_passwd(tmp_path: Path) -> None:
    """tlsutil writes the hash itself where mosquitto_passwd is missing: same format."""
    binary = mosquitto_passwd_binary()
    if binary is None:
        pytest.skip("mosquitto_passwd not installed: nothing to compare with")
    f = tmp_path / "passwd"
    subprocess.run([binary, "-b", "-c", str(f), "u", SECRET], check=True, capture_output=True)
    user, hashed = f.read_text().strip().split(":", 1)
    salt = base64.b64decode(hashed.split("$")[3])
    assert user == "u"
    assert mosquitto_hash(SECRET, salt) == hashed
    assert mosquitto_hash(WRONG, salt) != hashed


# --------------------------------------------------------------------------- the client factory


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
@pytest.mark.parametrize(("password", "accepted"), [(SECRET, True), (WRONG, False)])
def test_factory_client_over_tls_with_a_password_file_never_logs_it(
    tls_broker: TlsBroker, tmp_path: Path, logs: pytest.LogCaptureFixture, protocol: str,
    password: str, accepted: bool,
) -> None:
    """What the site link, the HQ consumer and the relay all build: a refusal is told apart by
    paho's reason code, and at DEBUG (paho's packet log included) no record holds the secret."""
    from paho.mqtt.reasoncodes import ReasonCode

    from rfidd.config import TlsConfig
    from rfidd.mqtt_client import ClientSettings, build_client, connect, is_auth_refusal

    pw = tmp_path / "pw"
    pw.write_text(password + "\n")
    settings = ClientSettings(
        "127.0.0.1", tls_broker.password, client_id=f"factory-{uuid.uuid4().hex[:6]}",
        protocol=protocol,  # type: ignore[arg-type]
        username=USER, password_file=pw, tls=TlsConfig(ca_file=tls_broker.ca.cert_file),
        persistent_session=False, logger="rfidd.test.factory.paho",
    )
    client = build_client(settings)
    answered = threading.Event()
    reasons: list[ReasonCode] = []

    def on_connect(_c: Any, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
        reasons.append(reason)
        answered.set()

    client.on_connect = on_connect
    connect(client, settings)
    client.loop_start()
    try:
        assert answered.wait(10), logs.text[-3000:]
    finally:
        client.disconnect()
        client.loop_stop()
    assert reasons[0].is_failure is not accepted
    assert is_auth_refusal(reasons[0]) is not accepted
    assert any(r.name == "rfidd.test.factory.paho" for r in logs.records)  # paho did log
    texts = [logs.text, *(r.getMessage() for r in logs.records),
             *(repr(r.args) for r in logs.records), repr(settings)]
    for t in texts:
        assert password not in t
