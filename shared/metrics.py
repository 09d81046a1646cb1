"""Prometheus metrics shared by every service, and how a service exposes them."""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
)

PREFIX = "tlr"

NATS_CONNECTED = Gauge(
    f"{PREFIX}_nats_connected", "1 while this process is connected to NATS", ["service"]
)
NATS_RECONNECTS = Counter(
    f"{PREFIX}_nats_reconnects_total", "Reconnections to NATS after a loss", ["service"]
)
MESSAGES = Counter(
    f"{PREFIX}_messages_total",
    "JetStream messages handled by a durable consumer, by outcome (ack, nak, term)",
    ["durable", "outcome"],
)
HANDLER_SECONDS = Histogram(
    f"{PREFIX}_handler_seconds", "Time a handler took for one message", ["durable"]
)
EVENTS_PUBLISHED = Counter(
    f"{PREFIX}_events_published_total",
    "Events published, by type and whether JetStream saw a duplicate",
    ["type", "duplicate"],
)


def start_metrics_server(port: int) -> None:
    """Serve ``/metrics`` on ``port`` in a background thread; 0 turns it off."""
    if port:
        start_http_server(port)


def render_latest() -> tuple[bytes, str]:
    """The exposition text and its content type, for a framework route (the gateway)."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
