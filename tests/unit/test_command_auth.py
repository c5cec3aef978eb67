"""HQ commands: for this site only, and signed by HQ when the site requires it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from joserfc import jws
from joserfc.jwk import OKPKey

from rfidd.command_auth import CommandGuard
from rfidd.config import MqttConfig

SALE = json.dumps({"txn": "R-1", "epcs": ["3034E57E04001A00000003F3"]}).encode()


@pytest.fixture
def hq_key(tmp_path: Path) -> tuple[OKPKey, Path]:
    key = OKPKey.generate_key("Ed25519")
    pub = tmp_path / "hq.pub.pem"
    pub.write_bytes(key.as_pem(private=False))
    return key, pub


def sign(key: OKPKey, payload: bytes) -> bytes:
    return jws.serialize_compact({"alg": "Ed25519"}, payload, key,
                                 algorithms=["Ed25519"]).encode()


def test_unsigned_commands_pass_unless_signatures_are_required(hq_key: tuple[OKPKey, Path]
                                                               ) -> None:
    assert CommandGuard("st").check("sale", SALE) == SALE
    strict = CommandGuard("st", require_signed=True, public_key_file=hq_key[1])
    with pytest.raises(ValueError, match="must be signed by HQ"):
        strict.check("sale", SALE)
    assert strict.check("catalog", b"[]") == b"[]"  # informs, changes no item: not required


def test_a_signature_is_verified_before_anything_is_applied(hq_key: tuple[OKPKey, Path]) -> None:
    key, pub = hq_key
    strict = CommandGuard("st", require_signed=True, public_key_file=pub)
    assert json.loads(strict.check("sale", sign(key, SALE))) == json.loads(SALE)
    forged = sign(OKPKey.generate_key("Ed25519"), SALE)
    with pytest.raises(ValueError, match="signature does not verify"):
        strict.check("sale", forged)
    head, _, sig = sign(key, SALE).decode().split(".")
    other_body = sign(key, b"{}").decode().split(".")[1]
    tampered = f"{head}.{other_body}.{sig}"  # HQ's signature over another payload
    with pytest.raises(ValueError, match="signature does not verify"):
        strict.check("sale", tampered.encode())
    with pytest.raises(ValueError, match=r"no mqtt\.command_public_key_file"):
        CommandGuard("st").check("sale", sign(key, SALE))


def test_commands_naming_another_site_are_refused() -> None:
    guard = CommandGuard("st")
    asn = {"asn_id": "A", "origin": "ws", "destination": "elsewhere", "epcs": []}
    with pytest.raises(ValueError, match="destination 'elsewhere' is another site"):
        guard.check("asn", json.dumps(asn).encode())
    with pytest.raises(ValueError, match="another site"):
        guard.check("asn", json.dumps([{**asn, "destination": "st"}, asn]).encode())
    assert guard.check("asn", json.dumps({**asn, "destination": "st"}).encode())
    with pytest.raises(ValueError, match="not JSON"):
        guard.check("sale", b"{nope")


def test_requiring_signatures_needs_the_key_in_config() -> None:
    with pytest.raises(ValueError, match=r"needs mqtt\.command_public_key_file"):
        MqttConfig(require_signed_commands=True)
