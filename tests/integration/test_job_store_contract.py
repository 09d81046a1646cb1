"""The job store's rules, run against both backends: KV ``jobs`` on a real nats-server, and
the in-memory documents of the handler unit tests, so the fake cannot drift from the real."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from shared.bus import Bus
from shared.documents import KvDocuments
from shared.events import UploadedFile
from shared.job_store import JobExists, JobFinished, JobStore, StaleHolder
from shared.jobs import Claim, JobRequest, Outcome, SegmentEntry, Totals
from shared.subjects import JOBS_BUCKET
from tests.fakes.documents import MemoryDocuments

ROOM = "7" * 19


@pytest.fixture(params=["memory", "kv"])
async def store(request: pytest.FixtureRequest, bus: Bus) -> AsyncIterator[JobStore]:
    # Both get a nats-server (a fixture cannot be chosen by parameter); only one uses it.
    if request.param == "memory":
        yield JobStore(MemoryDocuments())
    else:
        yield JobStore(KvDocuments(await bus.kv(JOBS_BUCKET)))


def claim(recorder: str = "rec-a") -> Claim:
    return Claim(recorder, ROOM, "title", "kim", attempt=1)


async def test_submit_once_and_cancel(store: JobStore) -> None:
    await store.submit(JobRequest(job_id="j1", room_id=ROOM, duration=5))
    with pytest.raises(JobExists):
        await store.submit(JobRequest(job_id="j1"))
    request = await store.request("j1")
    assert request is not None
    assert (request.duration, request.desired) == (5, "run")
    cancelled = await store.request_cancel("j1")
    assert cancelled is not None
    assert cancelled.desired == "cancel"
    assert await store.request_cancel("nope") is None
    assert await store.request("nope") is None


async def test_claim_lists_segments_and_names_the_room_owner(store: JobStore) -> None:
    doc = await store.claim("j1", 5, claim())
    assert (doc.state, doc.fence, doc.recorder_id) == ("STARTED", 5, "rec-a")
    assert await store.room_owner(ROOM) == "j1"
    await store.segment_opened("j1", 5, SegmentEntry(path="a/0.flv", part=0))
    await store.segment_opened("j1", 5, SegmentEntry(path="a/0.flv", part=0))  # once
    final = SegmentEntry(path="a/0.mp4", part=0, size=10, duration_s=1.0, state="final")
    await store.segment_finalised("j1", 5, final)
    found = await store.recording("j1")
    assert found is not None
    assert [(s.path, s.state) for s in found.segments] == [("a/0.mp4", "final")]


async def test_concurrent_writes_are_not_lost(store: JobStore) -> None:
    await store.claim("j2", 1, claim())
    await asyncio.gather(
        *(store.segment_opened("j2", 1, SegmentEntry(path=f"f{n}.flv", part=n)) for n in range(10))
    )
    found = await store.recording("j2")
    assert found is not None
    assert sorted(s.path for s in found.segments) == sorted(f"f{n}.flv" for n in range(10))


async def test_a_stale_holder_is_refused_everywhere(store: JobStore) -> None:
    await store.claim("j3", 1, claim("rec-a"))
    await store.segment_opened("j3", 1, SegmentEntry(path="r/0.flv", part=0))
    # rec-a froze past its lease; rec-b took it over (a newer, larger token).
    await store.claim("j3", 2, claim("rec-b"))
    moved = SegmentEntry(path="r/0.takeover-2.mp4", part=0, size=9, state="final")
    await store.segment_finalised("j3", 2, moved, replaces="r/0.flv")
    raw = SegmentEntry(path="r/0.flv", part=0, size=0, state="raw")
    writes = [
        store.segment_finalised("j3", 1, raw),
        store.segment_opened("j3", 1, SegmentEntry(path="r/9.flv", part=9)),
        store.segment_dropped("j3", 1, "r/0.takeover-2.mp4"),
        store.progress("j3", 1, Totals(bytes=1), 1000.0),
        store.streaming("j3", 1, quality="hd", source="main", wanted="origin"),
        store.handed_over("j3", 1, Totals()),
        store.claim("j3", 1, claim("rec-a")),
        store.finish("j3", Outcome("FAILURE", "NETWORK_TIMEOUT", "x"), token=1),
    ]
    for write in writes:
        with pytest.raises(StaleHolder):
            await write
    found = await store.recording("j3")
    assert found is not None
    assert (found.state, found.recorder_id, found.fence) == ("STARTED", "rec-b", 2)
    assert [s.path for s in found.segments] == ["r/0.takeover-2.mp4"]


async def test_a_terminal_job_never_changes_again(store: JobStore) -> None:
    await store.claim("j4", 3, claim())
    await store.segment_opened("j4", 3, SegmentEntry(path="x/0.flv", part=0))
    doc, first = await store.finish("j4", Outcome("SUCCESS", room_id=ROOM), Totals(5), token=3)
    assert first
    assert (doc.state, doc.bytes, doc.segments) == ("SUCCESS", 5, [])  # no file behind it
    again, first = await store.finish("j4", Outcome("FAILURE", "X", "late"))
    assert not first
    assert (again.state, again.error_code) == ("SUCCESS", None)
    for write in (
        store.retrying("j4", "WAF_BLOCKED", "x"),
        store.handed_over("j4", 3, Totals()),
        store.claim("j4", 4, claim()),
        store.progress("j4", 3, Totals(), 0.0),
    ):
        with pytest.raises(JobFinished):
            await write
    found = await store.recording("j4")
    assert found is not None
    assert found.state == "SUCCESS"


async def test_upload_fenced_and_final_once_succeeded(store: JobStore) -> None:
    await store.upload_started("j5", 1, uploader_id="up-1", attempt=1, bytes_total=10)
    await store.upload_progress("j5", 1, 4)
    await store.upload_started("j5", 2, uploader_id="up-2", attempt=2, bytes_total=10)
    with pytest.raises(StaleHolder):
        await store.upload_progress("j5", 1, 8)
    uploaded = UploadedFile(path="a.mp4", bucket="b", key="k", size=10, etag="e")
    await store.upload_ended("j5", 2, "SUCCESS", uploader_id="up-2", attempt=2, files=[uploaded])
    with pytest.raises(JobFinished):
        await store.upload_ended(
            "j5", 3, "RETRY", uploader_id="up-3", attempt=3, error=("S3_UNAVAILABLE", "x")
        )
    found = await store.upload("j5")
    assert found is not None
    assert (found.state, found.uploader_id, found.bytes_done) == ("SUCCESS", "up-2", 10)


async def test_keeping_a_job_rewrites_it_unchanged(store: JobStore) -> None:
    request = JobRequest(job_id="j6", kind="watch", watcher_key="@ann")
    await store.submit(request)
    found = await store.docs.read("job.j6")
    assert found is not None
    assert await store.keep("j6")
    again = await store.docs.read("job.j6")
    assert again is not None
    assert again[1] > found[1]  # a new write: the bucket's TTL counts from it
    assert again[0] == found[0]
    assert not await store.keep("nope")
