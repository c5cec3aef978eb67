"""Moved to rfidd.hq.relay (HQ-side code lives in rfidd/hq); kept so old imports still work."""

from rfidd.hq.relay import FORWARD_COMMANDS, MAX_ASN_BYTES, AsnRelay

__all__ = ["FORWARD_COMMANDS", "MAX_ASN_BYTES", "AsnRelay"]
