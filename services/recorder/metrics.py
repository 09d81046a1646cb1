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
SEGMENTS = Counter(f"{_P}_segments_total", "Segment files closed with media in them")
REMUX_FAILURES = Counter(
    f"{_P}_remux_failures_total", "Segments whose MP4 remux or verification failed (FLV kept)"
)
FINISHED = Counter(
    f"{_P}_recordings_finished_total",
    "Recordings finished, by outcome (success, failure, cancelled) and error code",
    ["outcome", "error_code"],
)
