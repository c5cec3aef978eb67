"""HQ's command signing key: the relay signs what it forwards, so a site that requires
HQ-signed commands (`mqtt.require_signed_commands`) accepts a relayed shipment.

Compact JWS, Ed25519 (what rfidd.command_auth verifies); the payload is the exact bytes the
relay forwarded unsigned before. `rfidd hq keygen` makes the pair: the private key stays with
HQ (0600), the public key goes to each site's `mqtt.command_public_key_file`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

from rfidd.hq.cli import hq_command

if TYPE_CHECKING:
    from joserfc.jwk import OKPKey

KEY_SETTING = "mqtt.relay_signing_key_file"
PRIVATE_NAME = "hq-command-signing.key.pem"
PUBLIC_NAME = "hq-command-signing.pub.pem"


class SigningKeyError(ValueError):
    """The signing key cannot be loaded; the message names the setting and the file."""


def load_signing_key(path: Path) -> OKPKey:
    """HQ's Ed25519 private key from a PEM file (the key itself is never logged)."""
    from joserfc.errors import JoseError
    from joserfc.jwk import OKPKey

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SigningKeyError(f"{KEY_SETTING} {path}: cannot read: {exc.strerror}") from None
    try:
        key = OKPKey.import_key(data)
    except (JoseError, ValueError, TypeError) as exc:
        raise SigningKeyError(f"{KEY_SETTING} {path}: not an Ed25519 private key "
                              f"({type(exc).__name__})") from None
    if key.curve_name != "Ed25519" or not key.is_private:
        kind = "private" if key.is_private else "public"
        raise SigningKeyError(f"{KEY_SETTING} {path}: not an Ed25519 private key "
                              f"(curve {key.curve_name}, {kind})")
    return key


def sign(key: OKPKey, payload: bytes) -> bytes:
    """`payload` as a compact JWS signed with `key` (what CommandGuard verifies)."""
    from joserfc import jws

    return jws.serialize_compact({"alg": "Ed25519"}, payload, key,
                                 algorithms=["Ed25519"]).encode()


def write_key_pair(out: Path) -> tuple[Path, Path]:
    """A new pair in `out`: private key 0600 (never over an existing file), public key 0644."""
    from joserfc.jwk import OKPKey

    out.mkdir(parents=True, exist_ok=True)
    private, public = out / PRIVATE_NAME, out / PUBLIC_NAME
    for p in (private, public):
        if p.exists():
            raise FileExistsError(f"{p} exists: keep it or remove it first (a new key means "
                                  "a new public key on every site)")
    key = OKPKey.generate_key("Ed25519")
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.as_pem(private=True))
    fd = os.open(public, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(key.as_pem(private=False))
    return private, public


@hq_command.command("keygen")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Directory for the key pair (created if missing).")
def keygen_cmd(out: Path) -> None:
    """Make HQ's command signing key pair (Ed25519).

    The private key (0600) is HQ's mqtt.relay_signing_key_file; copy the public key to each
    site's mqtt.command_public_key_file.
    """
    try:
        private, public = write_key_pair(out)
    except OSError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"private key: {private} (0600; HQ's {KEY_SETTING})")
    click.echo(f"public key:  {public} (copy to each site's mqtt.command_public_key_file)")
