"""The indexer's Prometheus metrics (``tlr_indexer_*``, and the disk gauges). No paths as labels."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from shared.metrics import PREFIX

_P = f"{PREFIX}_indexer"

FILES = Gauge(f"{_P}_files", "Files in the index (local or only in S3)")
IS_LEADER = Gauge(f"{_P}_leader", "1 while this indexer holds the lease: it indexes and deletes")
QUERY_SECONDS = Histogram(
    f"{_P}_query_seconds",
    "Time to answer one files.query",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
REBUILDS = Counter(f"{_P}_rebuilds_total", "Scans of RECORDINGS_DIR that reconciled the index")
DELETIONS = Counter(
    f"{_P}_deletions_total",
    "Local files deleted by the indexer, by reason (retention, quota, disk_floor)",
    ["reason"],
)
DELETED_BYTES = Counter(
    f"{_P}_deleted_bytes_total", "Bytes freed by those deletions, by reason", ["reason"]
)
RETENTION_PASSES = Counter(f"{_P}_retention_passes_total", "Retention and disk checks run")
DISK_FREE = Gauge(f"{PREFIX}_disk_bytes_free", "Free bytes on the RECORDINGS_DIR file system")
DISK_LOW = Gauge(f"{PREFIX}_disk_low", "1 while free space is below DISK_FREE_WARN_BYTES")
JOBS_INDEX_APPLIED = Counter(
    f"{_P}_jobs_index_changes_total", "Job document changes applied to the job index"
)
JOBS_INDEX_PENDING = Gauge(
    f"{_P}_jobs_index_pending",
    "Job document changes in KV jobs the job index has still to apply (its lag; leader only)",
)
JOBS_QUERY_SECONDS = Histogram(
    f"{_P}_jobs_query_seconds",
    "Time to answer one jobs.query",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
