"""The scheduler's Prometheus metrics (``tlr_scheduler_*``). No watcher keys as labels."""

from __future__ import annotations

import contextlib

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

# The egress pool (services/scheduler/egress_pool.py), labelled by the egress's name (never
# its URL; names are the operator's, a bounded set).
EGRESS_REQUESTS = Counter(
    f"{_P}_egress_requests_total", "TikTok requests made through a pool egress", ["egress"]
)
EGRESS_WAF = Counter(
    f"{_P}_egress_waf_answers_total",
    "WAF pages and empty bodies answered through a pool egress",
    ["egress"],
)
EGRESS_SOLVES = Counter(
    f"{_P}_egress_challenge_solves_total",
    "WAF proof-of-work challenges solved through a pool egress",
    ["egress"],
)
EGRESS_ERRORS = Counter(
    f"{_P}_egress_errors_total",
    "Other failed requests through a pool egress (network, unexpected answers)",
    ["egress"],
)
EGRESS_WATCHERS = Gauge(f"{_P}_egress_watchers", "Watchers assigned to a pool egress", ["egress"])
EGRESS_HEALTHY = Gauge(
    f"{_P}_egress_healthy", "1 while a pool egress is in use, 0 while blocked or down", ["egress"]
)
EGRESS_PROBE_BACKOFF = Gauge(
    f"{_P}_egress_probe_backoff_seconds",
    "How long a blocked or down pool egress waits for its probe (0 = in use)",
    ["egress"],
)
POOL_CAPACITY = Gauge(
    f"{_P}_egress_pool_capacity_per_min", "Requests a minute the healthy pool egresses may make"
)
POOL_NEED = Gauge(f"{_P}_egress_pool_need_per_min", "Requests a minute the pool's watchers cost")

_EGRESS_LABELLED = (
    EGRESS_REQUESTS,
    EGRESS_WAF,
    EGRESS_SOLVES,
    EGRESS_ERRORS,
    EGRESS_WATCHERS,
    EGRESS_HEALTHY,
    EGRESS_PROBE_BACKOFF,
)


def forget_egress(name: str) -> None:
    """An egress left the pool: its series go (a removed proxy is no longer reported)."""
    for metric in _EGRESS_LABELLED:
        with contextlib.suppress(KeyError):
            metric.remove(name)
