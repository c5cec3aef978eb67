"""Reader drivers: hardware in, one normalized stream of TagRead batches out.

Nothing here knows about zones, items or business rules; a driver's only job is to keep its
reader talking and hand every tag it reports to a sink without blocking.
"""

from readers.base import ReaderSink, ReaderState, TagRead

__all__ = ["ReaderSink", "ReaderState", "TagRead"]
