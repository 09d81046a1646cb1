"""The notifier's Prometheus metrics (``tlr_notifier_*``). Labels are bounded: target kind
and event type, never a subscription id."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from shared.metrics import PREFIX

_P = f"{PREFIX}_notifier"

QUEUED = Counter(
    f"{_P}_queued_total", "Notifications queued for delivery, by event type", ["event_type"]
)
SENT = Counter(
    f"{_P}_sent_total",
    "Attempts at delivering a notification, by target kind and outcome "
    "(delivered, failed, dead_letter)",
    ["kind", "outcome"],
)
SEND_SECONDS = Histogram(
    f"{_P}_send_seconds",
    "Time one delivery attempt took, by target kind",
    ["kind"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
