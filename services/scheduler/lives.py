"""A live's recording jobs: their deterministic ids, and when a live that outlived its job
(the recorder gave up, the disk was full, any end while TikTok still says live) or lost it
(its documents are gone from KV jobs: the NATS store was lost) gets another.

Attempt 0 is the job of the live; attempt n its n-th restart. Each id is derived, never
stored: a scheduler that crashed after publishing room.live and before saving its state
derives the same job (and Nats-Msg-Id) again, so a retry never records the same live twice.
"""

from __future__ import annotations

import uuid

from shared.jobs import TERMINAL, JobRequest, RecordingPart
from shared.watchers import Watcher

JOB_NAMESPACE = uuid.UUID("6f1d2b9e-5c3a-4e1f-9a7b-2d8c4e6f1a3b")
# A live gets at most this many jobs: one that fails every time stops costing recorders.
MAX_ATTEMPTS = 100
# After a job that failed quickly the next one waits poll_interval * 2**attempt since it
# ended, at most this long; a job that ran this long was no quick failure: no wait.
RESTART_BACKOFF_MAX = 600.0


def job_id_for(w: Watcher, room_id: str, attempt: int = 0) -> str:
    live = f"{w.task_id}:{room_id}:{w.generation}"
    return str(uuid.uuid5(JOB_NAMESPACE, live if attempt == 0 else f"{live}:{attempt}"))


def attempt_of(w: Watcher, room_id: str) -> int | None:
    """Which attempt at the live of ``room_id`` the watcher's current job is; None if none."""
    if w.current_job_id is None:
        return None
    for attempt in range(MAX_ATTEMPTS):
        if job_id_for(w, room_id, attempt) == w.current_job_id:
            return attempt
    return None


def restart_at(rec: RecordingPart | None, attempt: int, poll_interval: int) -> float | None:
    """When the live of job ``rec`` (attempt ``attempt``) may get its next job, in epoch
    seconds; None while the job runs (or no recorder took it yet), when it was cancelled
    (someone stopped it on purpose), or when the live has had MAX_ATTEMPTS jobs."""
    if rec is None or rec.state not in TERMINAL or rec.state == "CANCELLED":
        return None
    if attempt + 1 >= MAX_ATTEMPTS:
        return None
    ended = (rec.ended_at or rec.updated_at).timestamp()
    started = rec.started_at.timestamp() if rec.started_at else ended
    if ended - started >= RESTART_BACKOFF_MAX:
        return ended
    return ended + min(RESTART_BACKOFF_MAX, poll_interval * 2.0**attempt)


def job_lost(request: JobRequest | None, rec: RecordingPart | None, attempt: int) -> bool:
    """The live's current job (attempt ``attempt``) has no document left in KV jobs: the NATS
    store was lost (a wiped volume, a replaced R1 node) with its room.live, so nothing will
    ever record it. Its next job starts at once: nothing failed, there is nothing to back off.
    A job is submitted before it becomes a watcher's current job, so none is merely not yet
    written."""
    return request is None and rec is None and attempt + 1 < MAX_ATTEMPTS
