"""The uploader's Prometheus metrics (``tlr_uploader_*``). Labels are bounded: no job ids."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from shared.metrics import PREFIX

_P = f"{PREFIX}_uploader"

FILES = Counter(
    f"{_P}_files_total",
    "Files handled, by outcome (uploaded, already_present, missing, failed)",
    ["outcome"],
)
BYTES = Counter(f"{_P}_bytes_total", "Bytes sent to object storage and confirmed by ETag")
FILE_SECONDS = Histogram(
    f"{_P}_file_seconds",
    "Time to upload one file, retries within a delivery included",
    buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800),
)
RETRIES = Counter(
    f"{_P}_retries_total",
    "Tries of a file repeated within a delivery after a transient error, by kind",
    ["kind"],
)
DEFERRED = Counter(
    f"{_P}_jobs_deferred_total",
    "Jobs handed back to JetStream for a later delivery, by error code",
    ["error_code"],
)
JOBS = Counter(
    f"{_P}_jobs_total", "Upload jobs finished, by outcome (success, failure)", ["outcome"]
)
ACTIVE = Gauge(f"{_P}_active_jobs", "Upload jobs running in this process")
