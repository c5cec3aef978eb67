"""OS-level thread names: what `top -H`, /proc/PID/task/*/comm and `rfidd bench`'s idle figures
show instead of "python3" for every thread.

Python 3.11 names its threads for itself only. `name_os_threads()` gives each thread its Python
name at the OS level (prctl PR_SET_NAME: 15 bytes): every thread the threading module starts
after the call, on its first Python call (a one-shot profile hook,
removed as soon as it ran: nothing is left on the thread's path). Linux only; elsewhere, or
without a C library to call, it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
import threading
from types import FrameType
from typing import Any

PR_SET_NAME = 15
_installed = False


def _libc() -> Any | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        # PyDLL: called with the GIL held. prctl is a few microseconds; releasing the GIL at
        # every new thread's first call would hand the CPU to another thread right there.
        return ctypes.PyDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None


_LIBC = _libc()


def os_name(name: str) -> bytes:
    """The 15 bytes the kernel keeps of `name` (the tail of "Thread-3 (worker)" style names
    is dropped, the start is what tells threads apart)."""
    return name.encode("utf-8", "replace")[:15]


def set_current(name: str) -> None:
    """Name the calling thread at the OS level."""
    if _LIBC is not None:
        _LIBC.prctl(PR_SET_NAME, ctypes.c_char_p(os_name(name)), 0, 0, 0)


def _first_call(_frame: FrameType, _event: str, _arg: Any) -> None:
    sys.setprofile(None)  # one shot: this thread runs unprofiled from here
    set_current(threading.current_thread().name)


def name_os_threads() -> None:
    """Name every thread started from now on (idempotent). Call it before starting threads:
    one already running keeps its name (naming another thread by its pthread id races with
    that thread's end), and so does the main thread, whose name is the process's (ps, pgrep)."""
    global _installed
    if _LIBC is None:
        return
    if not _installed:
        _installed = True
        threading.setprofile(_first_call)
