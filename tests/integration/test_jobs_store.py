"""Job documents in KV: created once, updated under compare-and-set without lost updates."""

from __future__ import annotations

import asyncio

import nats.js.errors
import pytest

from shared import jobs
from shared.bus import Bus
from shared.subjects import JOBS_BUCKET


async def test_request_create_get_and_cancel(bus: Bus) -> None:
    kv = await bus.kv(JOBS_BUCKET)
    await jobs.create_request(kv, jobs.JobRequest(job_id="j1", room_id="7" * 19, duration=5))
    with pytest.raises(nats.js.errors.KeyWrongLastSequenceError):
        await jobs.create_request(kv, jobs.JobRequest(job_id="j1"))
    found = await jobs.get_request(kv, "j1")
    assert found is not None
    assert found[0].duration == 5
    assert found[0].desired == "run"

    def cancel(doc: jobs.JobRequest | None) -> jobs.JobRequest | None:
        assert doc is not None
        doc.desired = "cancel"
        return doc

    await jobs.update_request(kv, "j1", cancel)
    again = await jobs.get_request(kv, "j1")
    assert again is not None
    assert again[0].desired == "cancel"
    assert await jobs.get_request(kv, "nope") is None


async def test_concurrent_recording_updates_are_not_lost(bus: Bus) -> None:
    kv = await bus.kv(JOBS_BUCKET)

    def add(n: int):  # type: ignore[no-untyped-def]
        def change(doc: jobs.RecordingPart | None) -> jobs.RecordingPart:
            doc = doc or jobs.RecordingPart(job_id="j2")
            doc.segments.append(jobs.SegmentEntry(path=f"f{n}.mp4", state="final"))
            return doc

        return change

    await asyncio.gather(*(jobs.update_recording(kv, "j2", add(n)) for n in range(10)))
    found = await jobs.get_recording(kv, "j2")
    assert found is not None
    assert sorted(s.path for s in found[0].segments) == sorted(f"f{n}.mp4" for n in range(10))
