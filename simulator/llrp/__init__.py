"""LLRP 1.0.1 reader simulator: wire codec and simulated readers."""

from simulator.llrp.reader import (
    IDENTITIES,
    QUIRKS,
    FieldTag,
    ReaderQuirks,
    ReaderStats,
    SimulatedReader,
    StaticField,
    TagField,
)

__all__ = ["IDENTITIES", "QUIRKS", "FieldTag", "ReaderQuirks", "ReaderStats", "SimulatedReader",
           "StaticField", "TagField"]
