"""EPC <-> TID binding: a cloned EPC on another chip is told apart (pure rules)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from inventory.authenticity import Verdict, check_binding, normalize_tid

EPC = "3034E57E0400194000000003"
BOUND = "E28011602000A1B2C3D4E5F6"
CLONE = "E28011602000F0F1F2F3F4F5"


def test_verdicts() -> None:
    assert check_binding(EPC, BOUND, [BOUND, None]).verdict is Verdict.MATCH
    assert check_binding(EPC, BOUND, [BOUND.lower()]).verdict is Verdict.MATCH
    clone = check_binding(EPC, BOUND, [CLONE])
    assert clone.verdict is Verdict.MISMATCH and clone.refuse_at_intake
    assert CLONE in clone.reason() and BOUND in clone.reason()
    both = check_binding(EPC, BOUND, [BOUND, CLONE])  # original and clone in the field
    assert both.verdict is Verdict.MISMATCH and both.seen == tuple(sorted((BOUND, CLONE)))
    assert check_binding(EPC, None, [CLONE]).verdict is Verdict.UNBOUND
    assert check_binding(EPC, BOUND, [None, None]).verdict is Verdict.UNREAD
    assert check_binding(EPC, "E2801160", [CLONE]).verdict is Verdict.UNSERIALIZED
    assert check_binding(EPC, BOUND, ["E2801160"]).verdict is Verdict.UNSERIALIZED
    assert check_binding(EPC, BOUND, [BOUND[:16]]).verdict is Verdict.MATCH  # fewer words read
    for v in (Verdict.MATCH, Verdict.UNBOUND, Verdict.UNREAD, Verdict.UNSERIALIZED):
        assert not check_binding(EPC, BOUND if v is not Verdict.UNBOUND else None,
                                 {Verdict.MATCH: [BOUND], Verdict.UNBOUND: [BOUND],
                                  Verdict.UNREAD: [], Verdict.UNSERIALIZED: ["E280"]}[v]
                                 ).refuse_at_intake


def test_normalize_tid() -> None:
    assert normalize_tid("e280 1160-2000:a1b2") == "E28011602000A1B2"
    assert normalize_tid("") is None and normalize_tid(None) is None
    with pytest.raises(ValueError, match="not whole 16-bit words"):
        normalize_tid("E28")
    with pytest.raises(ValueError, match="not whole"):
        normalize_tid("E28Z")


words = st.lists(st.integers(0, 0xFFFF), min_size=3, max_size=8).map(
    lambda ws: "".join(f"{w:04X}" for w in ws))


@given(words, words)
def test_a_tid_matches_itself_and_only_prefix_compatible_tids(bound: str, read: str) -> None:
    assert check_binding(EPC, bound, [bound]).verdict is Verdict.MATCH
    n = min(len(bound), len(read))
    got = check_binding(EPC, bound, [read]).verdict
    assert got is (Verdict.MATCH if bound[:n] == read[:n] else Verdict.MISMATCH)
