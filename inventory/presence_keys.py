"""The presence tracker's compact item keys: an EPC as its bytes, not its hex string.

At a million items the key is a third of an item's memory: a 24-digit hex string takes 80
bytes, its 12 bytes 48. A canonical EPC — upper-case hex, whole bytes: what every reader
driver produces — is keyed by its bytes; any other string is its own key. The mapping is
one-to-one (bytes never equal a string) and `epc_of` gives back exactly the string given.
"""

from __future__ import annotations

_fromhex = bytes.fromhex

Key = bytes | str


def epc_key(epc: str) -> Key:
    """The key of one EPC (non-canonical strings, and non-strings, are their own key)."""
    if type(epc) is str:
        try:
            b = _fromhex(epc)
        except ValueError:
            return epc
        if len(epc) == 2 * len(b) and epc == epc.upper():
            return b
    return epc


def epc_keys(epcs: list[str]) -> list[Key]:
    """The keys of a batch, in C loops when the whole batch is canonical (the common case):
    `fromhex` accepts lower case and spaces too, so one check on the joined batch rules them
    out before the batch's bytes are taken as keys."""
    try:
        keys: list[Key] = list(map(_fromhex, epcs))
    except (ValueError, TypeError):
        return list(map(epc_key, epcs))
    joined = "".join(epcs)
    if len(joined) == 2 * len(b"".join(keys)) and joined == joined.upper():  # type: ignore[arg-type]
        return keys
    return list(map(epc_key, epcs))


def epc_of(key: Key) -> str:
    """The EPC string a key was made from."""
    return key.hex().upper() if type(key) is bytes else key  # type: ignore[return-value]
