"""The one wait-until helper of the suite: poll a condition until it holds or a deadline passes.

Import it as `from waits import wait_until` (tests/ is on the path through conftest.py).
Use it for positive checks (something must happen). A negative check (something must *not*
happen) waits for a positive marker that proves the system got past the point instead of
sleeping a fixed time.
"""

from __future__ import annotations

import time
from collections.abc import Callable

POLL_S = 0.02


def wait_until(cond: Callable[[], object], what: str = "condition", timeout: float = 10.0,
               poll_s: float = POLL_S) -> None:
    """Return as soon as `cond()` is truthy; fail the test naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        if cond():
            return
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.1f} s waiting for {what}")
        time.sleep(poll_s)
