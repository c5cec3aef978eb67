"""The handheld's side of TSL ASCII 2.0 (see readers/tsl.py for the subset and its source).

Written apart from the driver's parser on purpose: a shared mistake would agree with itself.
Used by simulator/serial_sim.py for `protocol="tsl"`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

_OPT = re.compile(r"-(\w+)\s+(\S+)")


class _Tag(Protocol):
    @property
    def epc(self) -> str: ...


T = TypeVar("T", bound=_Tag)


def answer(line: str, tags: Callable[[], Sequence[T]], rssi: Callable[[T], float],
           identity: tuple[str, str, str] = ("Technology Solutions Ltd", "2.6.7", "1166-00123")
           ) -> str:
    """The response block to one command line (CR LF separated, ending OK: or ER:)."""
    cmd = line.strip()
    out = [f"CS: {cmd}"]
    if cmd.startswith(".vr"):
        mf, uf, us = identity
        out += [f"MF: {mf}", f"UF: {uf}", f"US: {us}", "OK:"]
    elif cmd.startswith(".iv"):
        opts = dict(_OPT.findall(cmd))
        with_rssi = opts.get("r") == "on"
        found = list(tags())
        if opts.get("sb", "").lower() == "epc" and "sd" in opts:
            want = opts["sd"].upper()
            bits = int(opts.get("sl", f"{len(want) * 4:X}"), 16)
            found = [t for t in found if t.epc.startswith(want[:bits // 4])]
        for t in found:
            out.append(f"EP: {t.epc}")
            if with_rssi:
                out.append(f"RI: {round(rssi(t))}")
        out.append("OK:" if found else "ER: 005")
    else:
        out.append("ER: 001")  # unknown command
    return "\r\n".join(out) + "\r\n"
