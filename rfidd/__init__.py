"""rfidd: the daemon — wiring and every I/O edge (readers in, database, MQTT to HQ, HTTP)."""

__version__ = "0.1.0"
