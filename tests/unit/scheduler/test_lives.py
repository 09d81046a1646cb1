"""A live's job ids and when a live that outlived or lost its job gets another."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.scheduler.lives import (
    MAX_ATTEMPTS,
    RESTART_BACKOFF_MAX,
    attempt_of,
    job_id_for,
    job_lost,
    restart_at,
)
from shared.jobs import JobRequest, RecordingPart
from shared.watchers import Watcher

ROOM = "7584500533205058723"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _watcher() -> Watcher:
    return Watcher(key="@a", task_id="task-a", created_at=T0)


def _ended(state: str, ran: float = 10.0) -> RecordingPart:
    return RecordingPart(
        job_id="j",
        state=state,  # type: ignore[arg-type]
        started_at=T0,
        ended_at=T0 + timedelta(seconds=ran),
    )


def test_attempts_have_their_own_stable_ids_and_attempt_0_keeps_the_old_one() -> None:
    w = _watcher()
    ids = [job_id_for(w, ROOM, n) for n in range(3)]
    assert len(set(ids)) == 3
    assert ids == [job_id_for(_watcher(), ROOM, n) for n in range(3)]  # a retry dedupes
    assert ids[0] == job_id_for(w, ROOM)
    w.current_job_id = ids[2]
    assert attempt_of(w, ROOM) == 2
    assert attempt_of(w, "7584500533205058724") is None  # another live
    w.current_job_id = None
    assert attempt_of(w, ROOM) is None


def test_a_job_still_running_or_cancelled_is_never_restarted() -> None:
    assert restart_at(None, 0, 60) is None  # no recorder took it yet
    assert restart_at(RecordingPart(job_id="j", state="STARTED"), 0, 60) is None
    assert restart_at(RecordingPart(job_id="j", state="RETRY"), 0, 60) is None
    assert restart_at(_ended("CANCELLED"), 0, 60) is None
    assert restart_at(_ended("FAILURE"), MAX_ATTEMPTS - 1, 60) is None


def test_quick_failures_back_off_and_a_long_recording_does_not() -> None:
    end = (T0 + timedelta(seconds=10)).timestamp()
    assert restart_at(_ended("FAILURE"), 0, 60) == end + 60
    assert restart_at(_ended("SUCCESS"), 1, 60) == end + 120
    assert restart_at(_ended("FAILURE"), 20, 60) == end + RESTART_BACKOFF_MAX
    long = _ended("FAILURE", ran=RESTART_BACKOFF_MAX)
    assert restart_at(long, 5, 60) == (T0 + timedelta(seconds=RESTART_BACKOFF_MAX)).timestamp()


def test_a_job_gone_from_kv_is_lost_and_one_still_there_is_not() -> None:
    request = JobRequest(job_id="j", room_id=ROOM)
    assert job_lost(None, None, 0)  # both documents gone with the NATS store
    assert not job_lost(request, None, 0)  # submitted, no recorder took it yet
    assert not job_lost(None, RecordingPart(job_id="j", state="STARTED"), 0)
    assert not job_lost(None, None, MAX_ATTEMPTS - 1)  # the live had all its jobs
