"""The scheduler's Prometheus metrics (``tlr_scheduler_*``). No watcher keys as labels."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from shared.metrics import PREFIX

_P = f"{PREFIX}_scheduler"

WATCHERS_ACTIVE = Gauge(f"{PREFIX}_watchers_active", "Watchers being polled")
IS_LEADER = Gauge(f"{_P}_leader", "1 while this scheduler holds the polling lease")
CHECKS = Counter(f"{_P}_checks_total", "Watcher checks by outcome", ["outcome"])
REQUESTS = Counter(
    f"{_P}_tiktok_requests_total", "TikTok requests made by the poller", ["endpoint"]
)
EGRESS_BACKOFF = Gauge(
    f"{_P}_egress_backoff_seconds", "Current backoff of an egress (0 = none)", ["egress"]
)
WATCHERS_BACKING_OFF = Gauge(
    f"{_P}_watchers_backing_off", "Watchers whose next check is delayed by errors"
)
PASS_FAILURES = Counter(
    f"{_P}_pass_failures_total", "Poll passes that raised (log: scheduler.pass_failed)"
)
LIVES_DETECTED = Counter(f"{_P}_lives_detected_total", "room.live published")
LIVE_RESTARTS = Counter(
    f"{_P}_live_restarts_total", "New jobs for lives that outlived their job (room.live again)"
)
DETECTION_SECONDS = Histogram(
    f"{_P}_detection_seconds",
    "From a live's start (room/info start_time) to room.live",
    buckets=(1, 2, 5, 10, 20, 30, 60, 90, 120, 300, 600),
)
