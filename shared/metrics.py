"""Prometheus metrics shared by every service, and how a service exposes them."""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
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
    "JetStream messages handled by a durable consumer, by outcome (ack, nak, term, left)",
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

# Job states as the API shows them (pending, started, retry, success, failure, cancelled),
# counted by the process that wrote the change; sum over instances in PromQL.
JOBS = Counter(
    f"{PREFIX}_jobs_total", "Job state changes written to KV jobs, by the new state", ["status"]
)
# Lag per durable, sampled by every instance consuming it (so take max() across instances):
# pending = in the stream, not yet delivered; ack_pending = delivered, not yet acked.
CONSUMER_PENDING = Gauge(
    f"{PREFIX}_consumer_pending", "Messages not yet delivered to a durable consumer", ["durable"]
)
CONSUMER_ACK_PENDING = Gauge(
    f"{PREFIX}_consumer_ack_pending",
    "Messages delivered to a durable consumer and not yet acknowledged",
    ["durable"],
)
CONSUMER_REDELIVERED = Gauge(
    f"{PREFIX}_consumer_redelivered",
    "Messages of a durable consumer delivered more than once and still unacknowledged",
    ["durable"],
)


def render_latest() -> tuple[bytes, str]:
    """The exposition text and its content type, for a framework route (the gateway)."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
