"""The recorder's Prometheus metrics (``tlr_recorder_*``). Labels are bounded: no room ids."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from shared.metrics import PREFIX

_P = f"{PREFIX}_recorder"

ACTIVE = Gauge(f"{_P}_active_recordings", "Recordings running in this process")
BYTES = Counter(f"{_P}_bytes_total", "FLV bytes received from stream CDNs")
RECONNECTS = Counter(
    f"{_P}_reconnects_total", "Stream connections opened again after a previous one ended"
)
STALLS = Counter(
    f"{_P}_stalls_total", "Stream connections abandoned because no byte arrived within the timeout"
)
DEAD_STREAMS = Counter(
    f"{_P}_dead_streams_total",
    "Listed stream URLs skipped: an error status, or closed before any media",
)
JOBS_STUCK = Counter(
    f"{_P}_jobs_stuck_total",
    "Jobs whose session ended but that had no outcome after the deadline (handler cancelled)",
)
LOOP_LAG = Gauge(
    f"{_P}_event_loop_lag_seconds",
    "How late the event loop ran a timer, worst of the last second (new start-ups wait while"
    " it is above MAX_LOOP_LAG)",
)
EGRESS_PICK_FAILURES = Counter(
    f"{_P}_egress_pick_failures_total",
    "Jobs without a proxy of their own that went direct because the scheduler gave no egress "
    "(not running, no answer in time)",
)
SEGMENTS = Counter(f"{_P}_segments_total", "Segment files closed with media in them")
REMUX_FAILURES = Counter(
    f"{_P}_remux_failures_total", "Segments whose MP4 remux or verification failed (FLV kept)"
)
# The seed's names, unprefixed by service: dashboards and alerts read "did we miss a live?"
# straight from these two.
SUCCEEDED = Counter(f"{PREFIX}_recordings_success_total", "Recordings that ended with SUCCESS")
FAILED = Counter(
    f"{PREFIX}_recordings_failed_total",
    "Recordings that ended with FAILURE, by error code",
    ["error_code"],
)
CANCELLED = Counter(f"{PREFIX}_recordings_cancelled_total", "Recordings cancelled on request")


def count_finished(state: str, error_code: str | None) -> None:
    """One finished recording, by its final state."""
    if state == "SUCCESS":
        SUCCEEDED.inc()
    elif state == "CANCELLED":
        CANCELLED.inc()
    else:
        FAILED.labels(error_code or "UNKNOWN").inc()
