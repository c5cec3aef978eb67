"""Tag authenticity: is the chip that carries this EPC the one it was bound to?

An EPC is a number anyone can write into any tag; the TID bank holds the chip's own serial,
burnt in at the fab. Commissioning binds the EPC to the TID read at the bench; at reception,
returns and repairs the TID read now is checked against that binding. A different TID is a
cloned EPC on another chip. Pure rules: no I/O, the caller loads the binding and the reads.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

# Gen2 TID: class E2, then 12-bit mask designer and 12-bit model (32 bits); a serialized TID
# (XTID) carries a chip serial after that. Two words identify a chip model, not a chip.
_MIN_SERIALIZED_HEX = 12  # 48 bits: header + at least 16 bits of serial


class Verdict(enum.Enum):
    MATCH = "match"  # the bound chip, read now
    MISMATCH = "mismatch"  # another chip carries this EPC: a clone
    UNBOUND = "unbound"  # no TID was recorded at commissioning: nothing to check against
    UNREAD = "unread"  # the reader sent no TID with these reads
    UNSERIALIZED = "unserialized"  # the TID read or bound names a chip model only


@dataclass(frozen=True)
class TidCheck:
    epc: str
    verdict: Verdict
    bound: str | None
    seen: tuple[str, ...]  # distinct TIDs read for this EPC, sorted

    @property
    def refuse_at_intake(self) -> bool:
        """Returns and repairs refuse a clone; the other verdicts cannot prove one."""
        return self.verdict is Verdict.MISMATCH

    def reason(self) -> str:
        if self.verdict is Verdict.MISMATCH:
            others = ", ".join(t for t in self.seen if t != self.bound)
            return (f"EPC {self.epc} is bound to TID {self.bound} but was read on chip(s) "
                    f"{others}: a cloned tag")
        return {
            Verdict.MATCH: f"EPC {self.epc}: TID {self.bound} matches its binding",
            Verdict.UNBOUND: f"EPC {self.epc}: no TID bound at commissioning",
            Verdict.UNREAD: f"EPC {self.epc}: no TID read (reader not reading the TID bank)",
            Verdict.UNSERIALIZED: f"EPC {self.epc}: TID too short to identify one chip",
        }[self.verdict]


def normalize_tid(tid: str | None) -> str | None:
    """Upper-case hex without separators; None for empty. Raises ValueError if not hex."""
    if tid is None:
        return None
    text = tid.replace(" ", "").replace(":", "").replace("-", "").upper()
    if not text:
        return None
    if len(text) % 4 or any(c not in "0123456789ABCDEF" for c in text):
        raise ValueError(f"TID {tid!r} is not whole 16-bit words of hex")
    return text


def check_binding(epc: str, bound_tid: str | None, read_tids: Iterable[str | None]) -> TidCheck:
    """The verdict for one EPC from its commissioning TID and the TIDs read with it now.

    A read that shares the bound TID's prefix but is shorter (the reader read fewer words)
    matches on what it has; any TID that differs within the words both have is a clone,
    even when the bound chip is also in the field (two chips, one EPC)."""
    bound = normalize_tid(bound_tid)
    seen = tuple(sorted({t for t in (normalize_tid(x) for x in read_tids) if t is not None}))
    if bound is None:
        return TidCheck(epc, Verdict.UNBOUND, None, seen)
    if not seen:
        return TidCheck(epc, Verdict.UNREAD, bound, seen)
    if len(bound) < _MIN_SERIALIZED_HEX:
        return TidCheck(epc, Verdict.UNSERIALIZED, bound, seen)
    comparable = [t for t in seen if len(t) >= _MIN_SERIALIZED_HEX]
    if not comparable:
        return TidCheck(epc, Verdict.UNSERIALIZED, bound, seen)
    for t in comparable:
        n = min(len(t), len(bound))
        if t[:n] != bound[:n]:
            return TidCheck(epc, Verdict.MISMATCH, bound, seen)
    return TidCheck(epc, Verdict.MATCH, bound, seen)
