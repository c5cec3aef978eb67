"""HQ's command signing key (rfidd.hq.signing): `rfidd hq keygen`, loading errors that name the
setting and the file, signatures the site's CommandGuard verifies, check-config's view."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from click.testing import CliRunner
from joserfc.jwk import OKPKey

from rfidd.cli import main
from rfidd.command_auth import CommandGuard
from rfidd.config import EX_CONFIG
from rfidd.hq.config import config_kind, parse_hq_config
from rfidd.hq.relay import SITE_COMMAND_BYTES, AsnRelay, RelayError
from rfidd.hq.signing import (
    PRIVATE_NAME,
    PUBLIC_NAME,
    SigningKeyError,
    load_signing_key,
    sign,
)
from rfidd.mqtt import MAX_COMMAND_BYTES

DOC = b'{"asn_id": "A-1", "destination": "st"}'


def test_keygen_writes_a_private_key_only_its_owner_reads(tmp_path: Path) -> None:
    out = tmp_path / "keys"
    res = CliRunner().invoke(main, ["hq", "keygen", "--out", str(out)])
    assert res.exit_code == 0, res.output
    private, public = out / PRIVATE_NAME, out / PUBLIC_NAME
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert b"PRIVATE KEY" in private.read_bytes()
    assert b"PRIVATE" not in public.read_bytes()
    assert str(private) in res.output and "command_public_key_file" in res.output
    # What HQ signs with the private key, the site verifies with the public one.
    guard = CommandGuard("st", require_signed=True, public_key_file=public)
    assert guard.check("shipment", sign(load_signing_key(private), DOC)) == DOC
    # A second keygen never replaces the key the sites trust.
    before = private.read_bytes()
    again = CliRunner().invoke(main, ["hq", "keygen", "--out", str(out)])
    assert again.exit_code != 0 and "exists" in again.output
    assert private.read_bytes() == before


def test_a_signature_by_another_key_does_not_verify(tmp_path: Path) -> None:
    pub = tmp_path / "pub.pem"
    pub.write_bytes(OKPKey.generate_key("Ed25519").as_pem(private=False))
    guard = CommandGuard("st", require_signed=True, public_key_file=pub)
    other = OKPKey.generate_key("Ed25519")
    with pytest.raises(ValueError, match="does not verify"):
        guard.check("shipment", sign(other, DOC))


@pytest.mark.parametrize(("content", "why"), [
    (None, "cannot read"),
    (b"not a key", "not an Ed25519 private key"),
    ("public", r"not an Ed25519 private key \(curve Ed25519, public\)"),
])
def test_a_bad_key_file_is_named(tmp_path: Path, content: bytes | str | None,
                                 why: str) -> None:
    path = tmp_path / "key.pem"
    if content == "public":
        path.write_bytes(OKPKey.generate_key("Ed25519").as_pem(private=False))
    elif isinstance(content, bytes):
        path.write_bytes(content)
    with pytest.raises(SigningKeyError, match=f"mqtt.relay_signing_key_file {path}: {why}"):
        load_signing_key(path)
    with pytest.raises(RelayError, match=f"ASN relay: mqtt.relay_signing_key_file .*{why}"):
        AsnRelay("127.0.0.1", 1, signing_key_file=path)


def test_the_relay_knows_the_sites_command_limit() -> None:
    assert SITE_COMMAND_BYTES == MAX_COMMAND_BYTES


def test_check_config_opens_the_key_and_warns_without_one(tmp_path: Path) -> None:
    cfg = tmp_path / "hq.toml"
    base = f'[database]\nurl = "sqlite:///{tmp_path}/hq.db"\n[mqtt]\nurl = "mqtt://127.0.0.1:1883"\n'
    cfg.write_text(base)
    res = CliRunner().invoke(main, ["hq", "check-config", str(cfg)])
    assert res.exit_code == 0, res.output
    assert "relay_signing_key_file is not set" in res.output
    assert "ASN relay on (unsigned)" in res.output

    missing = tmp_path / "missing.pem"
    cfg.write_text(base + f'relay_signing_key_file = "{missing}"\n')
    res = CliRunner().invoke(main, ["hq", "check-config", str(cfg)])
    assert res.exit_code == EX_CONFIG
    assert f"mqtt.relay_signing_key_file {missing}: cannot read" in res.output

    out = tmp_path / "keys"
    assert CliRunner().invoke(main, ["hq", "keygen", "--out", str(out)]).exit_code == 0
    key = out / PRIVATE_NAME
    cfg.write_text(base + f'relay_signing_key_file = "{key}"\n')
    res = CliRunner().invoke(main, ["hq", "check-config", str(cfg)])
    assert res.exit_code == 0, res.output
    assert "ASN relay on (signed)" in res.output and "not set" not in res.output
    assert key.read_text().splitlines()[1] not in res.output  # the key is never printed
    assert parse_hq_config(cfg.read_text()).mqtt.relay_signing_key_file == key
    only = tmp_path / "only.toml"
    only.write_text(f'[mqtt]\nrelay_signing_key_file = "{key}"\n')
    assert config_kind(only) == "hq"
