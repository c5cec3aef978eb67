"""Just enough TOML output for the tests that write a daemon's config from a Config dump
(the standard library reads TOML but does not write it)."""

from __future__ import annotations

import json
from typing import Any


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"no TOML for {v!r}")


def to_toml(d: dict[str, Any], prefix: str = "") -> str:
    """Just enough TOML for a Config dump (tables, scalars, lists of scalars)."""
    scalars = [f"{json.dumps(k)} = {_toml_value(v)}" for k, v in d.items()
               if not isinstance(v, dict) and v is not None]
    out = ([f"[{prefix}]"] if prefix and scalars else []) + scalars
    for k, v in d.items():
        if isinstance(v, dict):
            key = f"{prefix}.{json.dumps(k)}" if prefix else json.dumps(k)
            sub = to_toml(v, key)
            if sub:
                out.append(sub)
    return "\n".join(out)
