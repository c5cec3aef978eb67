"""The CLI's one HTTP client of a running daemon's API, and its one exit-code convention.

Every `rfidd` subcommand that talks to the daemon goes through `ApiClient`, so "cannot reach it"
and "it refused" look and exit the same everywhere (scripts can tell a stopped daemon from a
refused request):

  0  done
  1  the daemon refused (an HTTP error status; its message is printed)
  2  cannot reach the daemon (nothing listening, timeout, not an rfidd API: an HTML page,
     whatever its status, is some other web server)

The failures are click exceptions carrying those exit codes, so a command needs no handler.
Authentication is added through `token` (sent as `Authorization: Bearer`) or the `headers` hook.
"""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import IO, Any

import click

from rfidd.credentials import auth_headers, auth_hint

__all__ = [
    "EXIT_CODES_HELP",
    "EXIT_OK",
    "EXIT_REFUSED",
    "EXIT_UNREACHABLE",
    "ApiClient",
    "Refused",
    "Response",
    "Unreachable",
]

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_UNREACHABLE = 2

# The epilog of every command group that talks to the daemon (click rewraps it; \b keeps lines).
EXIT_CODES_HELP = (
    "\b\nExit codes:\n"
    "  0  done\n"
    "  1  the daemon refused the request (its message is printed)\n"
    "  2  cannot reach the daemon (or the command line is wrong)"
)

_MAX_MESSAGE = 2000


class _CliError(click.ClickException):
    """Shown as `error: ...` on stderr, like the commands' own messages."""

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True, file=file)


class Unreachable(_CliError):
    """No answer from the daemon: nothing listens there, it timed out, or it is no rfidd API."""

    exit_code = EXIT_UNREACHABLE


class Refused(_CliError):
    """The daemon answered with an HTTP error status; the message is its own."""

    exit_code = EXIT_REFUSED

    def __init__(self, status: int, message: str, body: Any = None) -> None:
        super().__init__(f"{message} (HTTP {status})")
        self.status = status
        self.body = body


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: Any

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def error(self) -> str | None:
        """The daemon's error message (its JSON `error`), if it sent one."""
        if isinstance(self.body, dict) and "error" in self.body:
            return str(self.body["error"])
        return None


class ApiClient:
    """JSON over HTTP to `base` (e.g. http://127.0.0.1:9750); paths are under `prefix`.

    `token`: sent as `Authorization: Bearer <token>`. `headers`: called before each request,
    its headers are added (a token file re-read per request, a request id...).
    """

    def __init__(self, base: str, *, prefix: str = "", timeout: float = 30.0,
                 token: str | None = None,
                 headers: Callable[[], Mapping[str, str]] | None = None,
                 hint: str = "is the daemon running, with [http] enabled? see --api") -> None:
        self.base = base.rstrip("/")
        self.prefix = prefix.rstrip("/")
        self.timeout = timeout
        self._token = token  # never in a message or a repr
        # Without a token of its own: the local CLI's ($RFIDD_TOKEN or the daemon's token file).
        self._headers = headers if headers is not None or token is not None else auth_headers
        self.hint = hint

    def __repr__(self) -> str:
        return f"ApiClient({self.base!r}, prefix={self.prefix!r})"

    def request_headers(self, has_body: bool) -> dict[str, str]:
        h = {"Accept": "application/json"}
        if has_body:
            h["Content-Type"] = "application/json"
        if self._token is not None:
            h["Authorization"] = f"Bearer {self._token}"
        if self._headers is not None:
            h.update(self._headers())
        return h

    def url(self, path: str, query: Mapping[str, Any] | None = None) -> str:
        url = f"{self.base}{self.prefix}{path}"
        q = {k: v for k, v in (query or {}).items() if v is not None}
        return f"{url}?{urllib.parse.urlencode(q)}" if q else url

    def send(self, method: str, path: str, body: Any = None,
             query: Mapping[str, Any] | None = None) -> Response:
        """One request; the response whatever its status. Raises Unreachable without one."""
        url = self.url(path, query)
        data = json.dumps(body).encode() if body is not None else None
        if urllib.parse.urlsplit(self.base).scheme not in ("http", "https"):
            raise Unreachable(f"{self.base} is not an http:// or https:// URL (see --api)")
        try:
            req = urllib.request.Request(url, data=data, method=method,
                                         headers=self.request_headers(data is not None))
        except ValueError as exc:  # e.g. no host
            raise Unreachable(f"{self.base}: {exc} (see --api)") from None
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                status, raw = resp.status, resp.read()
                ctype = resp.headers.get("Content-Type", "")
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
            ctype = exc.headers.get("Content-Type", "") if exc.headers else ""
            exc.close()
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            raise Unreachable(f"cannot reach rfidd at {self.base}: {_reason(exc)} "
                              f"({self.hint})") from None
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            if _is_html(ctype, raw):  # a web server, a router's page: not rfidd (its errors
                raise Unreachable(  # are JSON), whatever the status
                    f"{url} answered HTTP {status} with an HTML page, which is not JSON: is "
                    f"{self.base} an rfidd API? (see --api)") from None
            if 200 <= status < 300:
                raise Unreachable(f"{url} answered HTTP {status} with something that is not "
                                  f"JSON: is {self.base} an rfidd API?") from None
            parsed = {"error": raw.decode("utf-8", "replace").strip()[:_MAX_MESSAGE]
                      or http.client.responses.get(status, "error")}
        return Response(status, parsed)

    def call(self, method: str, path: str, body: Any = None,
             query: Mapping[str, Any] | None = None, *, accept: Collection[int] = ()) -> Any:
        """The JSON body of a success. An error status raises Refused with the daemon's
        message, except a status in `accept` whose body is a result without `error` (e.g. 422
        listing what a partial import rejected), which is returned for the caller to show."""
        r = self.send(method, path, body, query)
        if r.ok or (r.status in accept and r.error is None):
            return r.body
        raise refusal(r, None if self._headers is auth_headers else
                      "not authenticated: the daemon refused the credential given")


def refusal(r: Response, auth: str | None = None) -> Refused:
    """The error for an answer with an error status: the daemon's message, or for a 401 what
    to do about the credential (`auth`; default: about the local CLI's own credential)."""
    if r.status == 401:
        return Refused(401, auth or auth_hint(), r.body)
    return Refused(r.status, r.error or _short(r.body), r.body)


def _is_html(ctype: str, raw: bytes) -> bool:
    head = raw.lstrip()[:64].lower()
    return "html" in ctype.lower() or head.startswith((b"<!doctype", b"<html", b"<?xml"))


def _reason(exc: BaseException) -> str:
    """'Connection refused', not '<urlopen error [Errno 111] Connection refused>'."""
    reason: object = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return str(reason) or type(reason).__name__


def _short(body: Any) -> str:
    text = body if isinstance(body, str) else json.dumps(body)
    return text[:_MAX_MESSAGE]
