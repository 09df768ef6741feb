"""Prometheus metrics of one running desk (its own registry, so several desks can live in one test process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]


class Metrics:
    """The counters, gauges and histograms relaydesk exports on ``/metrics``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.messages_in = Counter(
            "relaydesk_messages_in",
            "Inbound messages accepted, per channel or workspace",
            ["source"],
            registry=self.registry,
        )
        self.messages_out = Counter(
            "relaydesk_messages_out",
            "Outbound deliveries sent, per adapter",
            ["adapter"],
            registry=self.registry,
        )
        self.duplicates = Counter(
            "relaydesk_duplicates_dropped",
            "Inbound events dropped as duplicates",
            ["source"],
            registry=self.registry,
        )
        self.delivery_failures = Counter(
            "relaydesk_delivery_failures",
            "Deliveries that failed (kind: retry_after, temporary, undeliverable, gave_up)",
            ["adapter", "kind"],
            registry=self.registry,
        )
        self.outbox_depth = Gauge(
            "relaydesk_outbox_depth", "Outbox rows not yet sent or given up", registry=self.registry
        )
        self.bus_pending = Gauge(
            "relaydesk_bus_pending", "Bus entries published but not yet acknowledged", registry=self.registry
        )
        self.receiving_state = Gauge(
            "relaydesk_receiving_state",
            "Receiving loops of the adapters: 0 ok, 1 degraded (failing a while), 2 down",
            ["adapter", "loop"],
            registry=self.registry,
        )
        self.handler_seconds = Histogram(
            "relaydesk_handler_seconds",
            "Time spent in plugin handlers",
            ["plugin", "event"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0),
            registry=self.registry,
        )
        self.event_seconds = Histogram(
            "relaydesk_event_seconds",
            "Time from taking a bus entry to acknowledging it, per event type",
            ["event"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0),
            registry=self.registry,
        )
        self.handler_errors = Counter(
            "relaydesk_handler_errors",
            "Plugin handlers that raised",
            ["plugin", "event"],
            registry=self.registry,
        )

    def render(self) -> bytes:
        """The text exposition format for a scrape."""
        return generate_latest(self.registry)
