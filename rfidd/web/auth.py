"""Who is asking: API tokens, staff accounts (argon2) with session cookies, and slow-down of
guessing. No I/O but reading the configured files at start.

Tokens are compared by their SHA-256 (a token is 32 random bytes: a fast hash is enough, and
the daemon never keeps the secret itself); PINs and passwords, guessable by nature, by argon2.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import logging
import os
import secrets
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rfidd.config import resolve_secret_file
from rfidd.config_http import AuthConfig, Role

if TYPE_CHECKING:
    from argon2 import PasswordHasher

log = logging.getLogger("rfidd.web")

ALL_ROLES = frozenset(Role)
SESSION_COOKIE = "rfidd_session"
CSRF_HEADER = "x-csrf-token"


@functools.cache
def _hasher() -> PasswordHasher:
    """argon2, imported when a PIN is first set or checked (an idle daemon without staff
    accounts never loads it)."""
    from argon2 import PasswordHasher

    return PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    """Verified when the user is unknown, so a wrong name costs as long as a wrong PIN
    (made on first use: an argon2 hash costs a second of a loaded store PC at import)."""
    return _hasher().hash("not a pin")


class AuthSetupError(Exception):
    """A credential file that cannot be used (names the setting, never the secret)."""


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: `name` is what the audit records (token name or staff id)."""

    kind: str  # "token", "cli" or "user"
    name: str
    roles: frozenset[Role]
    display: str = ""
    csrf: str | None = None  # set for cookie sessions: writes must echo it

    def has(self, role: Role) -> bool:
        return role in self.roles


@dataclass
class _Session:
    principal: Principal
    expires: float


@dataclass
class User:
    id: str
    name: str
    roles: frozenset[Role]
    hash: str


def token_digest(token: str) -> str:
    return hashlib.sha256(token.strip().encode()).hexdigest()


def read_token_file(path: Path, setting: str) -> str:
    """SHA-256 hex of the token in `path` (which may hold 'sha256:HEX' already)."""
    try:
        text = resolve_secret_file(path, setting).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else str(exc).split(":")[0]
        raise AuthSetupError(f"{setting} {path}: cannot read: {why}") from None
    if text.startswith("sha256:"):
        digest = text[len("sha256:"):].lower()
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise AuthSetupError(f"{setting} {path}: 'sha256:' must be followed by 64 hex digits")
        return digest
    if len(text) < 16:
        raise AuthSetupError(f"{setting} {path}: a token needs at least 16 characters")
    return token_digest(text)


def load_users(path: Path) -> dict[str, User]:
    """Staff accounts by id from the JSON users file."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        users = {}
        for u in raw["users"]:
            users[str(u["id"])] = User(str(u["id"]), str(u["name"]),
                                       frozenset(Role(r) for r in u["roles"]), str(u["hash"]))
        return users
    except OSError as exc:
        raise AuthSetupError(f"http.auth.users_file {path}: cannot read: {exc.strerror}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise AuthSetupError(f"http.auth.users_file {path}: not a users file: {exc}") from None


def add_user(path: Path, name: str, roles: list[Role], secret: str) -> User:
    """Add (or replace, by name) a staff account; its id is opaque (HQ sees only that)."""
    users = load_users(path) if path.exists() else {}
    old = next((u for u in users.values() if u.name == name), None)
    uid = old.id if old is not None else "s-" + secrets.token_hex(5)
    users[uid] = User(uid, name, frozenset(roles), _hasher().hash(secret))
    data = {"users": [{"id": u.id, "name": u.name, "roles": sorted(u.roles), "hash": u.hash}
                      for u in users.values()]}
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, path)
    return users[uid]


def ensure_cli_token(path: Path) -> str | None:
    """The local CLI's token: reused from `path` when it is ours and private, else created
    (mode 0640: the daemon's user and group). None when it cannot be written."""
    try:
        st = path.stat()
        private = not (st.st_mode & stat.S_IRWXO) and st.st_uid == os.getuid()
        if private:
            token = path.read_text(encoding="utf-8").strip()
            if len(token) >= 32:
                return token
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("%s, for the CLI token file %s; the local CLI needs RFIDD_TOKEN",
                    exc.strerror, path)
        return None
    token = secrets.token_urlsafe(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    except FileExistsError:  # another daemon of this machine won the race: share its token
        return ensure_cli_token(path)
    except OSError as exc:
        log.warning("cannot create the CLI token file (%s, at %s); the local CLI needs "
                    "RFIDD_TOKEN", exc.strerror, path)
        return None
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(token + "\n")
    return token


@dataclass
class _Failures:
    count: int = 0
    last: float = 0.0


@dataclass
class Throttle:
    """Per address: after a few failed credentials each attempt waits longer (doubling)."""

    base_delay_s: float
    free_failures: int = 2
    forget_after_s: float = 900.0
    max_delay_s: float = 30.0
    max_addresses: int = 10_000
    on_failure: Callable[[str], None] | None = None  # the metric, per address
    _by_addr: dict[str, _Failures] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def delay(self, addr: str, now: float) -> float:
        with self._lock:
            f = self._by_addr.get(addr)
            if f is None or now - f.last > self.forget_after_s:
                return 0.0
            extra = f.count - self.free_failures
            if extra <= 0 or self.base_delay_s <= 0:
                return 0.0
            return float(min(self.max_delay_s, self.base_delay_s * 2 ** (extra - 1)))

    def failed(self, addr: str, now: float) -> None:
        with self._lock:
            if len(self._by_addr) >= self.max_addresses:  # bounded: forget the oldest half
                for a, _ in sorted(self._by_addr.items(), key=lambda kv: kv[1].last)[
                        : self.max_addresses // 2]:
                    del self._by_addr[a]
            f = self._by_addr.setdefault(addr, _Failures())
            if now - f.last > self.forget_after_s:
                f.count = 0
            f.count += 1
            f.last = now
        if self.on_failure is not None:
            self.on_failure(addr)

    def succeeded(self, addr: str) -> None:
        with self._lock:
            self._by_addr.pop(addr, None)


class Authenticator:
    """Checks bearer tokens and session cookies; signs staff in and out."""

    def __init__(self, config: AuthConfig, cli_token: str | None = None) -> None:
        self.config = config
        self._tokens: dict[str, Principal] = {}
        for t in config.tokens:
            digest = read_token_file(t.file, f"http.auth.tokens[{t.name}].file")
            self._tokens[digest] = Principal("token", t.name, frozenset(t.roles))
        if cli_token is not None:
            self._tokens[token_digest(cli_token)] = Principal("cli", "cli", ALL_ROLES)
        self.users = load_users(config.users_file) if config.users_file is not None else {}
        self._sessions: dict[str, _Session] = {}
        self._lock = threading.Lock()
        self.throttle = Throttle(config.failure_delay_s)

    def bearer(self, token: str) -> Principal | None:
        digest = token_digest(token)
        for known, principal in self._tokens.items():
            if hmac.compare_digest(known, digest):
                return principal
        return None

    def session(self, cookie: str, now: float) -> Principal | None:
        key = token_digest(cookie)
        with self._lock:
            s = self._sessions.get(key)
            if s is None:
                return None
            if s.expires <= now:
                del self._sessions[key]
                return None
            return s.principal

    def sign_in(self, login: str, secret: str, now: float) -> tuple[str, Principal] | None:
        """(cookie value, principal) for a right id-or-name and PIN, else None."""
        user = self.users.get(login) or next(
            (u for u in self.users.values() if u.name.casefold() == login.casefold()), None)
        from argon2.exceptions import InvalidHashError, VerificationError

        try:
            _hasher().verify(user.hash if user else _dummy_hash(), secret)
        except (VerificationError, InvalidHashError):
            return None
        if user is None:
            return None
        principal = Principal("user", user.id, user.roles, display=user.name,
                              csrf=secrets.token_urlsafe(24))
        cookie = secrets.token_urlsafe(32)
        with self._lock:
            for k in [k for k, s in self._sessions.items() if s.expires <= now]:
                del self._sessions[k]
            self._sessions[token_digest(cookie)] = _Session(
                principal, now + self.config.session_ttl_s)
        return cookie, principal

    def sign_out(self, cookie: str) -> None:
        with self._lock:
            self._sessions.pop(token_digest(cookie), None)

    def user_names(self) -> dict[str, str]:
        return {u.id: u.name for u in self.users.values()}


def now() -> float:
    return time.time()


def describe(p: Principal) -> dict[str, Any]:
    return {"kind": p.kind, "name": p.name, "display": p.display or p.name,
            "roles": sorted(p.roles)}
