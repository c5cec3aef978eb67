"""rfidd: the daemon — wiring and every I/O edge (readers in, database, MQTT to HQ, HTTP)."""


def __getattr__(name: str) -> str:
    """`rfidd.__version__` from the package metadata (rfidd.version), read on first use: every
    process imports this package, few ask its version."""
    if name == "__version__":
        from rfidd.version import package_version

        return package_version()
    raise AttributeError(f"module 'rfidd' has no attribute {name!r}")
