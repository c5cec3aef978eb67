"""TSL ASCII 2.0 lines -> blocks (driver side), and the simulator's answers to them."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given
from hypothesis import strategies as st

from readers import tsl
from simulator import tsl_sim


@dataclass
class T:
    epc: str
    rssi: float = -50.0


def parse(data: bytes) -> tuple[list[tsl.TslBlock], list[tuple[str, str]]]:
    bad: list[tuple[str, str]] = []
    return tsl.TslParser(lambda k, d: bad.append((k, d))).feed(data), bad


def test_inventory_block_with_rssi() -> None:
    blocks, bad = parse(b"CS: .iv -r on\r\nEP: 3034257BF7194E4000001A85\r\nRI: -58\r\n"
                        b"EP: E2801160600002054CC2\r\nRI: -61\r\nOK:\r\n")
    assert not bad
    (b,) = blocks
    assert b.ok and b.command == ".iv -r on"
    assert b.tags == [("3034257BF7194E4000001A85", -58.0), ("E2801160600002054CC2", -61.0)]


def test_version_errors_and_empty_field() -> None:
    blocks, _ = parse(b"CS: .vr\r\nMF: TSL\r\nUF: 2.6\r\nOK:\r\nCS: .iv\r\nER: 005\r\n"
                      b"CS: .xx\r\nER: 001\r\n")
    vr, empty, unknown = blocks
    assert vr.fields == {"MF": "TSL", "UF": "2.6"} and vr.ok
    assert empty.empty_field and not empty.ok
    assert unknown.error == "001" and not unknown.empty_field


def test_bad_lines_are_named_and_skipped() -> None:
    blocks, bad = parse(b"garbage\r\nRI: -3\r\nCS: .iv -r on\r\nEP: 12Z\r\nRI: loud\r\n"
                        b"EP: 3034\r\nRI: -40\r\nOK:\r\n" + b"x" * 600)
    (b,) = blocks
    assert b.tags == [("3034", -40.0)]
    assert [k for k, _ in bad] == ["bad_line", "bad_line", "bad_epc", "bad_line", "bad_line"]


@given(st.lists(st.text("0123456789ABCDEF", min_size=1, max_size=6).map(lambda s: s * 4),
                max_size=20, unique=True),
       st.integers(1, 40))
def test_simulator_answers_parse_back_whatever_the_chunking(epcs: list[str], cut: int) -> None:
    tags = [T(e, -40 - i) for i, e in enumerate(epcs)]
    raw = tsl_sim.answer(".iv -r on", lambda: tags, lambda t: t.rssi).encode()
    parser = tsl.TslParser(lambda k, d: None)
    blocks: list[tsl.TslBlock] = []
    for i in range(0, len(raw), cut):
        blocks += parser.feed(raw[i:i + cut])
    (b,) = blocks
    assert b.tags == [(t.epc, float(round(t.rssi))) for t in tags]
    assert b.ok == bool(tags) and b.empty_field == (not tags)


def test_find_selects_one_epc() -> None:
    cmd = tsl.inventory_command("3034257BF7194E4000001A85").decode()
    assert cmd == ".iv -r on -sb epc -sd 3034257BF7194E4000001A85 -so 0020 -sl 60\r\n"
    tags = [T("3034257BF7194E4000001A85"), T("3034257BF7194E4000001A86")]
    blocks, _ = parse(tsl_sim.answer(cmd, lambda: tags, lambda t: t.rssi).encode())
    assert [e for e, _ in blocks[0].tags] == ["3034257BF7194E4000001A85"]
