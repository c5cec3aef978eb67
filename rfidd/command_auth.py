"""What an HQ command must prove before anything is applied: that it is for this site, and —
when the site requires it — that HQ signed it (compact JWS, Ed25519, RFC 9864 "Ed25519").

Anyone who can publish on the broker can send a command; the broker's ACL confines each site's
identity to its own prefix, and the signature makes a state-changing command HQ's word.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from joserfc.jwk import OKPKey


# Commands that change what the site believes about an item (the rest only inform).
STATE_CHANGING = frozenset({
    "sale", "return", "shipment", "hold", "release", "transfer", "transfer_in",
    "transfer_out", "ship", "receive", "loan_out", "loan_back", "repair_in", "repair_out",
})
SITE_FIELDS = ("site", "destination", "site_id")
ALGORITHMS = ["Ed25519"]


class CommandGuard:
    def __init__(self, site_id: str, require_signed: bool = False,
                 public_key_file: Path | None = None) -> None:
        self.site_id = site_id
        self.require_signed = require_signed
        self.key: OKPKey | None = None
        if public_key_file is not None:
            # joserfc (and cryptography, ~6 MiB) only for a site that verifies HQ's signatures
            from joserfc.errors import JoseError
            from joserfc.jwk import OKPKey

            try:
                self.key = OKPKey.import_key(public_key_file.read_bytes())
            except OSError as exc:
                raise ValueError(f"mqtt.command_public_key_file {public_key_file}: cannot read: "
                                 f"{exc.strerror}") from None
            except (JoseError, ValueError) as exc:
                raise ValueError(f"mqtt.command_public_key_file {public_key_file}: not an "
                                 f"Ed25519 public key ({exc})") from None

    def screen(self, name: str, payload: bytes) -> tuple[str, str | None]:
        """On arrival, before a command is queued: who sent it — `hq` (its signature verifies
        with HQ's key), `unsigned`, or `forged` (signed, but not by that key) — and why it is
        refused at once, if it is (so a flood of refusals never takes a genuine command's
        place in the queue). `check` stays the authority before anything is applied."""
        body = payload.strip()
        if body[:1] in (b"{", b"[") or body.count(b".") != 2:
            if self.require_signed and name in STATE_CHANGING:
                return "unsigned", (f"command {name}: must be signed by HQ "
                                    "(mqtt.require_signed_commands)")
            return "unsigned", None
        if self.key is None:
            return "forged", (f"command {name}: signed, but this site has no "
                              "mqtt.command_public_key_file to verify it")
        from joserfc import jws  # on first use: an idle daemon without signatures needs none
        from joserfc.errors import JoseError

        try:
            jws.deserialize_compact(body, self.key, algorithms=ALGORITHMS)
        except (JoseError, ValueError):
            return "forged", f"command {name}: the signature does not verify"
        return "hq", None

    def check(self, name: str, payload: bytes) -> bytes:
        """The command's JSON, verified; ValueError says why it is refused."""
        body = payload.strip()
        signed = False
        if body[:1] not in (b"{", b"[") and body.count(b".") == 2:
            if self.key is None:
                raise ValueError(f"command {name}: signed, but this site has no "
                                 "mqtt.command_public_key_file to verify it")
            from joserfc import jws
            from joserfc.errors import JoseError

            try:
                body = jws.deserialize_compact(body, self.key, algorithms=ALGORITHMS).payload
            except (JoseError, ValueError):
                raise ValueError(f"command {name}: the signature does not verify") from None
            signed = True
        if self.require_signed and name in STATE_CHANGING and not signed:
            raise ValueError(f"command {name}: must be signed by HQ "
                             "(mqtt.require_signed_commands)")
        try:
            doc = json.loads(body)
        except ValueError as exc:
            raise ValueError(f"command {name}: payload is not JSON: {exc}") from None
        for obj in doc if isinstance(doc, list) else [doc]:
            other = _other_site(obj, self.site_id)
            if other is not None:
                raise ValueError(f"command {name}: {other[0]} {other[1]!r} is another site "
                                 f"(this is {self.site_id})")
        return bytes(body)


def _other_site(obj: Any, site_id: str) -> tuple[str, str] | None:
    if not isinstance(obj, dict):
        return None
    for f in SITE_FIELDS:
        v = obj.get(f)
        if isinstance(v, str) and v != site_id:
            return f, v
    return None
