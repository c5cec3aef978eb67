"""The HQ program's composition root: builds, starts and stops its components.

`HqDaemon.start` runs small named steps — store -> partitions -> subscription hub -> consumer
-> gap repair -> ASN relay -> web interface (EPCIS 2.0, /api/v1, /chain, /metrics: one FastAPI
app on one port) — each registering its stop; `stop` runs them last-in-first-out, so the
interface closes before the consumer, the hub after the consumer, and the store goes last.
`rfidd hq run` and the tests build HQ here, never by hand.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from rfidd.hq.config import HqConfig
from rfidd.hq.consumer import HqConsumer
from rfidd.hq.gaps import GapRepairer
from rfidd.hq.store import HqStore

log = logging.getLogger("rfidd.hq")


class HqStartError(Exception):
    """A component could not start (database, broker settings, a port in use): the message
    says which; `rfidd hq run` exits 1."""


class HqDaemon:
    """One HQ consumer process: every site's feed into the store, with its interfaces."""

    def __init__(self, config: HqConfig) -> None:
        self.config = config
        self.store: HqStore | None = None
        self.consumer: HqConsumer | None = None
        self.gaps: GapRepairer | None = None
        self.partitions: Any = None
        self.relay: Any = None
        self.epcis: Any = None
        self.hub: Any = None
        self.stopped: list[str] = []
        self._stops: list[tuple[str, Callable[[], None]]] = []

    def start(self) -> None:
        self._open_store()
        self._start_partitions()
        self._start_subscriptions()
        self._start_consumer()
        self._start_gap_repair()
        self._start_relay()
        self._start_epcis()

    def _open_store(self) -> None:
        from rfidd.hq.store import HqDatabaseError

        cfg = self.config
        try:
            self.store = HqStore.open(cfg.database.url,
                                      known_sites_only=not cfg.sites.accept_unknown)
        except HqDatabaseError as exc:
            raise HqStartError(f"database: {exc}") from exc
        self._on_stop("store", self.store.dispose)

    def _start_partitions(self) -> None:
        """PostgreSQL: the coming months' partitions of hq_events, made now and every few
        hours (an event of a month without one gets it on demand, before its batch)."""
        store = self.store
        assert store is not None
        if store.dialect != "postgresql":
            return
        from rfidd.hq.partitions import PartitionKeeper

        self.partitions = PartitionKeeper(store.engine)
        self.partitions.start()
        self._on_stop("partitions", self.partitions.stop)

    def _start_subscriptions(self) -> None:
        """The query-subscription hub: before the consumer (which feeds it) and stopped
        after it, so no stored event is offered to a stopped hub."""
        from prometheus_client import CollectorRegistry

        from rfidd.hq.consumer import HqMetrics
        from rfidd.hq.subscriptions import SubscriptionHub

        assert self.store is not None
        self.metrics = HqMetrics(CollectorRegistry())
        e = self.config.epcis
        self.hub = SubscriptionHub(self.store.engine, self.metrics.registry,
                                   max_attempts=e.webhook_attempts,
                                   retry_max_s=e.webhook_retry_max_s)
        self.hub.start()
        self._on_stop("query subscriptions", self.hub.stop)

    def _start_consumer(self) -> None:
        from rfidd.hq.consumer import HqConsumerError

        cfg, store = self.config, self.store
        assert store is not None
        self.consumer = HqConsumer(
            cfg.mqtt, store, batch_max_messages=cfg.database.batch_max_messages,
            batch_max_s=cfg.database.batch_max_ms / 1000,
            reconnect_max_s=cfg.mqtt.reconnect_max_s, metrics=self.metrics,
            on_stored=self.hub.offer,
        )
        try:
            self.consumer.start()
        except HqConsumerError as exc:
            raise HqStartError(str(exc)) from exc
        self._on_stop("consumer", self.consumer.stop)

    def _start_gap_repair(self) -> None:
        cfg, store, consumer = self.config, self.store, self.consumer
        assert store is not None and consumer is not None
        self.gaps = GapRepairer(
            store.engine, consumer.publish, cfg.mqtt.topic_prefix, consumer.metrics.registry,
            registered_only=not cfg.sites.accept_unknown,
            check_interval_s=cfg.sites.gap_check_interval_s, grace_s=cfg.sites.gap_grace_s,
            retry_s=cfg.sites.replay_retry_s, alert_s=cfg.sites.gap_alert_s,
        )
        self.gaps.start()
        self._on_stop("gap repair", self.gaps.stop)

    def _start_relay(self) -> None:
        cfg, consumer = self.config, self.consumer
        assert consumer is not None
        if not cfg.mqtt.relay_asns:
            return
        from rfidd.hq.relay import AsnRelay, RelayError, RelayMetrics

        try:
            # Its metrics go to the consumer's registry: one /metrics for the HQ process.
            self.relay = AsnRelay.from_config(cfg.mqtt,
                                              metrics=RelayMetrics(consumer.metrics.registry),
                                              reconnect_max_s=cfg.mqtt.reconnect_max_s)
        except RelayError as exc:
            raise HqStartError(str(exc)) from exc
        self.relay.start()
        self._on_stop("asn relay", self.relay.stop)
        log.info("ASN relay: %s -> {destination}/cmd/{asn,shipment}", self.relay.topic_filter)

    def _start_epcis(self) -> None:
        cfg, store, consumer = self.config, self.store, self.consumer
        assert store is not None and consumer is not None
        if not cfg.epcis.enabled:
            return
        from rfidd.hq.epcis_api import EpcisServer, build_app

        e = cfg.epcis
        self.epcis = EpcisServer(
            build_app(store, consumer.metrics.registry, capture_limit=e.capture_limit,
                      capture_size_limit=e.capture_size_limit_bytes,
                      topic_prefix=cfg.mqtt.topic_prefix, publish=consumer.publish,
                      hub=self.hub, allow_http_webhooks=e.webhook_allow_http,
                      consumer=consumer),
            e.listen, e.port,
            ssl_certfile=str(e.tls_cert_file) if e.tls_cert_file else None,
            ssl_keyfile=str(e.tls_key_file) if e.tls_key_file else None)
        try:
            self.epcis.start()
        except OSError as exc:
            raise HqStartError(f"EPCIS interface {e.listen}:{e.port}: {exc}") from exc
        self._on_stop("epcis interface", self.epcis.stop)
        log.info("HQ web interface (EPCIS 2.0 /events, /api/v1, /chain, /metrics) on "
                 "http%s://%s:%d/",
                 "s" if e.tls_cert_file else "", self.epcis.listen, self.epcis.port)

    def stop(self) -> None:
        """Stop what started, last first; a failing stop is logged and the rest still run."""
        while self._stops:
            name, fn = self._stops.pop()
            try:
                fn()
            except Exception:
                log.exception("stopping %s failed", name)
            self.stopped.append(name)

    def _on_stop(self, name: str, fn: Callable[[], None]) -> None:
        self._stops.append((name, fn))
