"""Tag authenticity in the daemon: the commissioning binding EPC<->TID and its checks.

The rules are inventory.authenticity (pure); this is where they meet the readers (the TIDs the
readers reported with each EPC: rfidd.intake.TidMemory, fed on the reader threads), the books
(`lifecycle_items.tid`, the binding written at commissioning) and the metrics. The lifecycle
service checks what comes in from outside the chain's hands — returns, repair intakes, items
back from a loan — here, and refuses a clone; reception checks what it received and flags a
clone in its report. Both raise a `cloned_tag` alert (messages.cloned_tag). An item leaving
(repair_out, loan_out, ship) is not checked: out of repair it was checked at repair_in and a
repair may replace a damaged tag; the rest is checked at the desk it comes back to.

The TID memory is the reader process's (in memory, bounded): after a restart the last 15
minutes of TID reads are gone and a check at a desk says `unread` (accepted, said in the
answer) until the staff re-scan the item: nothing is refused or accepted on a TID not read.

Stock from before rfidd has no binding: "unbound" is counted, never refused. A reader without
TID support reports no TID: "unread" is counted and said in the answer, never refused.
"""

from __future__ import annotations

import logging
from typing import Protocol

from prometheus_client import Counter

from inventory.authenticity import TidCheck, Verdict, check_binding, normalize_tid
from inventory.lifecycle import Step
from rfidd.metrics import Metrics

log = logging.getLogger("rfidd.authenticity")

POINTS = ("reception", "return", "repair", "loan")
"""Where a binding is checked: the bounded `point` label of rfidd_tag_checks_total."""
INTAKE_POINTS = {Step.RETURN: "return", Step.REPAIR_IN: "repair", Step.LOAN_BACK: "loan"}
"""The lifecycle steps that take an item in from outside and refuse a clone (a loaned piece
comes back from a press shoot or a client's home: the swap of a copy for it is the risk)."""
BIND_SOURCES = ("bind_command", "read", "none", "ambiguous", "conflict")
"""How a commissioned tag got its TID: the `source` label of rfidd_tag_bindings_total.
bind_command: the workshop's bind gave it (and no read contradicted it); read: the bench read
one chip with that EPC; none: no TID read (a reader without TID support); ambiguous: two
chips carried the EPC at the bench (nothing bound: no guess); conflict: the bind's TID is not
the chip the bench read (the bind's is kept, and the conflict logged)."""

TID_MAX_AGE_S = 900.0
"""A TID vouches for the tag at a desk only if it was read this recently (a chip read last
week is not necessarily the one on the counter); patchable in tests."""


class TidSource(Protocol):
    """What the readers reported (rfidd.intake.TidMemory)."""

    def of(self, epc: str, within_s: float | None = None) -> tuple[str, ...]: ...


class NoTids:
    """The TID source of a service wired without readers (tests, tools): nothing read."""

    def of(self, epc: str, within_s: float | None = None) -> tuple[str, ...]:
        return ()


class TagAuthenticity:
    """Checks of the commissioning binding against the TIDs read now; counts every outcome.

    Given the metrics (its counters are registered there) and the readers' TID memory."""

    def __init__(self, metrics: Metrics, tids: TidSource | None = None, *,
                 max_age_s: float | None = None) -> None:
        self.tids: TidSource = tids if tids is not None else NoTids()
        self._max_age_s = max_age_s
        self.checks = Counter(
            "tag_checks", "Tag authenticity checks (commissioning TID against the TIDs read "
            "now), by point (reception, return, repair, loan) and verdict (match, mismatch = a "
            "cloned EPC, unbound = no TID bound at commissioning, unread = no TID read, "
            "unserialized = a TID naming a chip model only).",
            ["point", "verdict"], namespace="rfidd", registry=metrics.registry)
        self.bindings = Counter(
            "tag_bindings", "TIDs bound at commissioning, by source (bind_command, read, "
            "none, ambiguous, conflict).", ["source"], namespace="rfidd",
            registry=metrics.registry)
        for p in POINTS:
            for v in Verdict:
                self.checks.labels(p, v.value)
        for src in BIND_SOURCES:
            self.bindings.labels(src)
        metrics.alerts.labels("cloned_tag")
        self._alerts = metrics.alerts

    def read_now(self, epc: str) -> tuple[str, ...]:
        """The TIDs the readers reported with `epc` within the age window (TID_MAX_AGE_S)."""
        age = TID_MAX_AGE_S if self._max_age_s is None else self._max_age_s
        return self.tids.of(epc, within_s=age)

    def check(self, point: str, epc: str, bound: str | None,
              seen: tuple[str, ...] | None = None) -> TidCheck:
        """The verdict for `epc` against its binding, counted under `point`. `seen`: the TIDs
        read (default: those the readers reported within the window)."""
        assert point in POINTS, point
        try:
            chk = check_binding(epc, bound, self.read_now(epc) if seen is None else seen)
        except ValueError as exc:  # a malformed stored binding: say so, do not refuse
            log.warning("tag check %s %s: %s; treated as unbound", point, epc, exc)
            chk = check_binding(epc, None, ())
        self.checks.labels(point, chk.verdict.value).inc()
        if chk.verdict is Verdict.MISMATCH:
            log.warning("tag check at %s: %s", point, chk.reason())
        return chk

    def cloned(self, n: int = 1) -> None:
        """Count `n` cloned_tag alerts (once their transaction committed)."""
        self._alerts.labels("cloned_tag").inc(n)

    def commissioning_tid(self, epc: str, bind_tid: str | None) -> tuple[str | None, str]:
        """The TID to bind to `epc` at commissioning and its source (BIND_SOURCES): the
        bind's, else the one chip the bench read with it; two chips with one EPC bind
        nothing. Not counted here (a batch may be planned twice): `count_binding` once
        committed."""
        read = tuple(dict.fromkeys(t for t in (normalize_tid(x) for x in self.read_now(epc))
                                   if t is not None))
        bound = normalize_tid(bind_tid)
        if bound is not None:
            if read and check_binding(epc, bound, read).verdict is Verdict.MISMATCH:
                log.warning("commissioning %s: the bind says TID %s but the bench read %s; "
                            "the bind's TID is kept", epc, bound, ", ".join(read))
                return bound, "conflict"
            return bound, "bind_command"
        if not read:
            return None, "none"
        if len(read) > 1:
            log.warning("commissioning %s: %d chips carry this EPC at the bench (%s): no TID "
                        "bound", epc, len(read), ", ".join(read))
            return None, "ambiguous"
        return read[0], "read"

    def count_binding(self, source: str) -> None:
        self.bindings.labels(source).inc()


__all__ = ["BIND_SOURCES", "INTAKE_POINTS", "POINTS", "TID_MAX_AGE_S", "NoTids", "TagAuthenticity",
           "TidSource"]
