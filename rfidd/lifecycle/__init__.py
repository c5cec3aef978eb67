"""Item lifecycle in the running daemon: commissioning, shipping, sales, returns, transfers,
loans, repairs (service.py), their commands (commands.py), HTTP routes (http.py), the CLI
(cli.py), trace (trace.py) and the HQ-side ASN relay (relay.py).

Kept import-light: `rfidd.store.db.import_all_models` imports `rfidd.lifecycle.models`.
"""
