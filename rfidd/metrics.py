"""Prometheus metrics of one daemon.

Each daemon instance owns its registry (tests run several in one process). Labels are bounded:
reader, antenna, zone, kind — never an EPC. Label children are created at start so a dashboard
sees a 0 rather than a missing series.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from rfidd.version import package_version

NS = "rfidd"
# The CBV business steps the daemon produces ("observe": an arrival without a business step).
BIZ_STEPS = (
    "observe", "commissioning", "packing", "shipping", "receiving", "stocking", "storing",
    "cycle_counting", "retail_selling", "repairing", "entering_exiting", "destroying",
    "decommissioning",
)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.reads = Counter(
            "reads", "Tag reads received from readers.", ["reader", "antenna"],
            namespace=NS, registry=r,
        )
        self.reader_up = Gauge(
            "reader_up", "1 when the reader is connected and inventorying.", ["reader"],
            namespace=NS, registry=r,
        )
        self.reader_state = Gauge(
            "reader_state", "1 for the reader's current state (online = inventorying; "
            "connected_not_reading = connected, ROSpec not active; connecting; offline).",
            ["reader", "state"], namespace=NS, registry=r,
        )
        self.reader_last_report_age = Gauge(
            "reader_last_report_age_seconds",
            "Seconds since the reader last reported a tag (or came online): silence from a "
            "reader whose field is never empty is the alarm; the reader_up gauge is its link.",
            ["reader"], namespace=NS, registry=r,
        )
        self.reader_reconnects = Counter(
            "reader_reconnects", "Reconnections of a reader.", ["reader"],
            namespace=NS, registry=r,
        )
        self.reader_anomalies = Counter(
            "reader_anomalies", "Tolerated deviations and rejected input from readers.",
            ["reader", "kind"], namespace=NS, registry=r,
        )
        self.rejected_epcs = Counter(
            "rejected_epcs", "Reads whose EPC is not one of ours, by classification.", ["kind"],
            namespace=NS, registry=r,
        )
        self.unknown_product_epcs = Counter(
            "unknown_product_epcs", "Distinct EPCs of our prefix whose GTIN the catalog lacks.",
            namespace=NS, registry=r,
        )
        self.ingest_queue_depth = Gauge(
            "ingest_queue_depth", "Read batches waiting for the ingest thread.",
            namespace=NS, registry=r,
        )
        self.ingest_dropped = Counter(
            "ingest_dropped_batches", "Read batches dropped because the ingest queue was full.",
            namespace=NS, registry=r,
        )
        self.ingest_dropped_reads = Counter(
            "ingest_dropped_reads", "Tag reads shed because the ingest queue was full, by reader "
            "(overload: each reader loses its share, none is starved).", ["reader"],
            namespace=NS, registry=r,
        )
        self.batch_commit = Histogram(
            "batch_commit_duration_seconds", "Time to commit one ingest batch.",
            namespace=NS, registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
        )
        self.items_present = Gauge(
            "items_present", "Items currently present per zone.", ["zone"],
            namespace=NS, registry=r,
        )
        self.events = Counter(
            "events", "Business events produced, by CBV business step.", ["biz_step"],
            namespace=NS, registry=r,
        )
        self.outbox_depth = Gauge(
            "outbox_depth", "Messages waiting in the outbox for HQ.", namespace=NS, registry=r,
        )
        self.outbox_oldest_age = Gauge(
            "outbox_oldest_age_seconds", "Age of the oldest unsent outbox message.",
            namespace=NS, registry=r,
        )
        self.published = Counter(
            "mqtt_published_messages", "Messages acknowledged by the broker.", ["stream"],
            namespace=NS, registry=r,
        )
        self.mqtt_connected = Gauge(
            "mqtt_connected", "1 when connected to the HQ broker.", namespace=NS, registry=r,
        )
        self.commands = Counter(
            "commands", "Inbound HQ commands, by command and result.", ["command", "result"],
            namespace=NS, registry=r,
        )
        self.command_senders = Counter(
            "command_senders", "Inbound HQ commands by sender (hq: signed with HQ's key; "
            "unsigned; forged: a signature that does not verify) and fate on arrival: queued, "
            "refused (answered on .../errors), dropped (that sender's queue full: left "
            "unacknowledged and redelivered through a reconnect once the queues drain; "
            "without a persistent session, refused and answered on .../errors).",
            ["sender", "result"],
            namespace=NS, registry=r,
        )
        self.http_auth_failures = Counter(
            "http_auth_failures", "Wrong credentials (token, session cookie, PIN) by client "
            "address: the first 64 addresses seen, then 'other'.", ["client"],
            namespace=NS, registry=r,
        )
        self.http_auth_failures.labels("other")
        self.reader_thread_restarts = Counter(
            "reader_thread_restarts", "Reader supervisor threads found dead and started again "
            "(a bug in a driver: the log has its traceback).", ["reader"],
            namespace=NS, registry=r,
        )
        self.database_errors = Counter(
            "database_errors", "Database errors met by the daemon's writers (each retried "
            "batch attempt counts once); staff writes answer 503 while the database is down.",
            namespace=NS, registry=r,
        )
        self.database_up = Gauge(
            "database_up", "0 while the daemon's database fails (writes are being retried).",
            namespace=NS, registry=r,
        )
        self.database_up.set(1)
        self.component_errors = Counter(
            "ingest_component_errors", "Batches a domain component failed to plan, write or "
            "apply (its part of the batch is skipped; the rest commits).", ["component"],
            namespace=NS, registry=r,
        )
        self.component_write_failures = Counter(
            "ingest_component_write_failures", "A component's part of a batch left out because "
            "its own statements failed twice in the commit (error: the driver's exception "
            "class); the batch's reads and the other parts were committed.",
            ["component", "error"], namespace=NS, registry=r,
        )
        self.ops_ticks_skipped = Counter(
            "ops_ticks_skipped", "Periodic store-operations ticks (timed count stops, reception "
            "rules) skipped because the database or the domain state was unavailable; the next "
            "tick does the same work.", namespace=NS, registry=r,
        )
        self.count_sessions = Counter(
            "count_sessions", "Cycle count sessions completed.", namespace=NS, registry=r,
        )
        self.alerts = Counter(
            "alerts", "Alerts raised, by kind.", ["kind"], namespace=NS, registry=r,
        )
        self.http_requests = Counter(
            "http_requests", "HTTP answers by route template ('other' when none matched) and "
            "status code, refusals (401, 403, 400 foreign Host) included.", ["route", "code"],
            namespace=NS, registry=r,
        )

        self.build_info = Gauge(
            "build_info", "1, labelled with the version of this rfidd (the package's).",
            ["version"], namespace=NS, registry=r,
        )
        self.build_info.labels(package_version()).set(1)

        for step in BIZ_STEPS:
            self.events.labels(step)

    def init_readers(self, readers: Iterable[tuple[str, Iterable[int]]]) -> None:
        for name, antennas in readers:
            self.reader_up.labels(name).set(0)
            for state in ("online", "connected_not_reading", "connecting", "offline"):
                self.reader_state.labels(name, state).set(1 if state == "offline" else 0)
            self.reader_anomalies.labels(name, "silent")
            self.reader_last_report_age.labels(name)
            self.reader_reconnects.labels(name)
            self.reader_thread_restarts.labels(name)
            self.ingest_dropped_reads.labels(name)
            for a in antennas:
                self.reads.labels(name, str(a))

    def init_zones(self, zones: Iterable[str]) -> None:
        for z in zones:
            self.items_present.labels(z).set(0)
