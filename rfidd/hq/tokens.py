"""Integrator tokens of the EPCIS REST interface: one per integrator, scope read or capture
(or admin: HQ's own administration, e.g. forgetting a site; never a query nor a capture).

Only a SHA-256 digest is stored: a token is 256 random bits (secrets.token_urlsafe), so a fast
hash cannot be reversed by guessing, and a stolen database holds no usable credential. The token
itself is shown once, when created.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, delete, select

from rfidd.hq.store import hq_tokens

SCOPES = ("read", "capture", "admin")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
PREFIX = "rfq_"


class TokenError(ValueError):
    """A bad token name or scope, or a name already taken."""


@dataclass(frozen=True, slots=True)
class Integrator:
    name: str
    scope: str


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create(engine: Engine, name: str, scope: str, now: datetime) -> str:
    """A new token for `name` (shown once; only its digest is kept)."""
    if not _NAME.match(name):
        raise TokenError("token name: 1-64 of A-Z a-z 0-9 _ . - (e.g. the integrator)")
    if scope not in SCOPES:
        raise TokenError(f"scope {scope!r}: one of {', '.join(SCOPES)}")
    token = PREFIX + secrets.token_urlsafe(32)
    with engine.begin() as conn:
        if conn.execute(select(hq_tokens.c.name).where(hq_tokens.c.name == name)).first():
            raise TokenError(f"a token named {name!r} exists; revoke it first")
        conn.execute(hq_tokens.insert().values(name=name, scope=scope, digest=digest(token),
                                               created_at=now))
    return token


def revoke(engine: Engine, name: str) -> bool:
    with engine.begin() as conn:
        r = conn.execute(delete(hq_tokens).where(hq_tokens.c.name == name))
    return bool(r.rowcount)


def check(engine: Engine, token: str) -> Integrator | None:
    """The integrator holding `token`, or None."""
    d = digest(token)
    with engine.connect() as conn:
        row = conn.execute(select(hq_tokens.c.name, hq_tokens.c.scope, hq_tokens.c.digest)
                           .where(hq_tokens.c.digest == d)).first()
    if row is None or not hmac.compare_digest(row.digest, d):
        return None
    return Integrator(row.name, row.scope)
