"""HTTP: the API, authentication, the guard and the staff page (FastAPI on uvicorn).

What app.py wires: WebServer(http_config, metrics, audit=AuditLog(db)), then
`include_router(...)` for each service's router, `start()` and `stop()`.

The names below are loaded on first use, not when the package is: a leaf such as
rfidd.web.answers (the API's answer models, which rfidd.ops.answers builds on) must not pull
in the server, the app and the page, which import the services' answers back — that cycle
made `import rfidd.ops.api` fail in a fresh interpreter.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rfidd.web.audit import AuditLog
    from rfidd.web.errors import ApiError
    from rfidd.web.server import WebServer
    from rfidd.web.site import site_router

_WHERE = {"ApiError": "rfidd.web.errors", "AuditLog": "rfidd.web.audit",
          "WebServer": "rfidd.web.server", "site_router": "rfidd.web.site"}


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module 'rfidd.web' has no attribute {name!r}")
    return getattr(import_module(where), name)


__all__ = ["ApiError", "AuditLog", "WebServer", "site_router"]
