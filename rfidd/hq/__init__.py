"""HQ side of the feed: consume every site's EPCIS events, store them once, answer queries.

`hq_command` is the `rfidd hq` click group (registered by rfidd.cli).
"""

from rfidd.hq import (
    cli_chain,  # noqa: F401  (registers the chain-view commands)
    cli_schema,  # noqa: F401  (registers `rfidd hq migrate`)
    signing,  # noqa: F401  (registers `rfidd hq keygen`)
)
from rfidd.hq.cli import hq_command

__all__ = ["hq_command"]
