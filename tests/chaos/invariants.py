"""After each chaos scenario: disk = jobs = recording.finished (= index = S3 where asked), all
final and clean; media lost."""

from __future__ import annotations

import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats.js.errors

from services.recorder.ffmpeg import ffmpeg_binary
from shared import events as ev
from shared.bus import Bus
from shared.files import MAX_PAGE_SIZE
from shared.subjects import EVENTS_STREAM, subject_for
from tests.chaos.s3 import ChaosS3
from tests.helpers import JobsApi, decode_errors, eventually
from tlr.fake_tiktok import FakeTikTok

_DURATION = re.compile(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)")


@dataclass
class Live:
    """A live a scenario records: its fake TikTok user and stream, its job, when it ended."""

    user: str
    stream_id: str
    task_id: str = ""
    ended_at: float | None = None  # wall clock, as the fake's request log keeps it
    upload: bool = False  # the job asked for an upload (options.upload_s3)


@dataclass
class Outcome:
    """What one job kept of its live: the figures a scenario reports."""

    task_id: str
    files: list[str]
    served_s: float
    recorded_s: float
    starts: list[tuple[str, int]] = field(default_factory=list)  # (recorder, part)

    @property
    def lost_s(self) -> float:
        return self.served_s - self.recorded_s

    @property
    def handovers(self) -> int:
        return max(0, len(self.starts) - 1)


async def end_live(fake: FakeTikTok, live: Live) -> None:
    await fake.end(live.user, mode="eof")
    live.ended_at = time.time()


async def events_on(bus: Bus, event_type: type[ev.Event]) -> list[ev.Event]:
    """Every event on the subject of ``event_type`` still in the EVENTS stream, in order."""
    found: list[ev.Event] = []
    seq = 1
    while True:
        try:
            msg = await bus.js.get_msg(
                EVENTS_STREAM, seq, subject=subject_for(event_type), next=True
            )
        except nats.js.errors.NotFoundError:
            return found
        assert msg.data is not None
        assert msg.seq is not None
        found.append(ev.decode(msg.data))
        seq = msg.seq + 1


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def media_seconds(path: Path) -> float:
    """The container's duration as ffmpeg reads it (the same binary the recorder uses)."""
    out = subprocess.run(
        [ffmpeg_binary(None), "-hide_banner", "-i", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    m = _DURATION.search(out.stderr)
    assert m, f"no duration for {path}: {out.stderr[-500:]}"
    return int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3))


async def check_invariants(
    jobs: JobsApi,
    bus: Bus,
    fake: FakeTikTok,
    recordings: Path,
    lives: list[Live],
    *,
    index: bool = False,
    s3: ChaosS3 | None = None,
) -> list[Outcome]:
    """Assert the invariants over ``lives`` (all ended) and return what each job kept.

    Files on disk = files listed in the jobs = files in their recording.finished events;
    every one final and decoding cleanly. The media lost is the time the fake served the
    live (first CDN request to its end) minus the duration of what was recorded. With
    ``index``: the files the index lists (GET /files) = the files of the jobs. With ``s3``:
    the objects in the bucket = the files of the lives that asked for an upload.
    """
    finished = await events_on(bus, ev.RecordingFinished)
    started = await events_on(bus, ev.RecordingStarted)
    cdn = await fake.requests()
    on_disk = files_under(recordings)
    listed_all: set[str] = set()
    outcomes = []
    for live in lives:
        assert live.ended_at is not None, f"{live.user}: end the live before checking"
        job = await jobs.job(live.task_id)
        files = job["progress"]["files"]
        assert all(f["state"] == "final" for f in files), files
        listed = {f["path"] for f in files}
        announced = [e for e in finished if getattr(e, "job_id", None) == live.task_id]
        assert announced, f"no recording.finished for {live.task_id}"
        for event in announced:
            assert isinstance(event, ev.RecordingFinished)
            assert {f.path for f in event.files} == listed, (event.files, listed)
        recorded = 0.0
        for path in sorted(listed):
            full = recordings / path
            assert full.is_file(), path
            assert full.stat().st_size > 0, path
            assert decode_errors(full) == "", path
            recorded += media_seconds(full)
        first_get = min(r["time"] for r in cdn if live.stream_id in r["path"])
        starts = [
            (e.recorder_id, e.part)
            for e in started
            if isinstance(e, ev.RecordingStarted) and e.job_id == live.task_id
        ]
        outcomes.append(
            Outcome(live.task_id, sorted(listed), live.ended_at - first_get, recorded, starts)
        )
        listed_all |= listed
    assert on_disk == listed_all, {
        "unlisted": on_disk - listed_all,
        "missing": listed_all - on_disk,
    }
    if index:
        for live, outcome in zip(lives, outcomes, strict=True):
            await check_indexed(jobs, live, set(outcome.files), uploaded=s3 is not None)
    if s3 is not None:
        await check_uploaded(jobs, s3, recordings, lives)
    return outcomes


async def indexed(jobs: JobsApi, task_id: str) -> list[dict[str, Any]] | None:
    """The index's files of one job (GET /files?job_id=); None while the gateway answers 503
    (NATS, or every indexer that could answer, away)."""
    r = await jobs.client.get(
        "/files", params={"job_id": task_id, "page_size": MAX_PAGE_SIZE}, headers=jobs.headers
    )
    if r.status_code == 503:
        return None
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["total"] <= MAX_PAGE_SIZE, body["total"]
    items: list[dict[str, Any]] = body["items"]
    return items


async def check_indexed(jobs: JobsApi, live: Live, files: set[str], *, uploaded: bool) -> None:
    """The index lists exactly the job's files, each still local (and, with ``uploaded``, with
    its S3 copy, once the indexer consumed upload.done)."""
    seen: list[list[dict[str, Any]]] = []

    async def caught_up() -> bool:
        items = await indexed(jobs, live.task_id)
        if items is None:
            return False
        seen.append(items)
        if {i["path"] for i in items} != files:
            return False
        return not (live.upload and uploaded) or all(i["s3"] for i in items)

    try:
        await eventually(caught_up, timeout=60, interval=0.5)
    except AssertionError:
        last = {i["path"] for i in seen[-1]} if seen else None
        msg = f"index of {live.task_id}: {last} != {files} (last answer {seen[-1:]})"
        raise AssertionError(msg) from None
    assert all(i["local"] for i in seen[-1]), seen[-1]


async def check_uploaded(jobs: JobsApi, s3: ChaosS3, recordings: Path, lives: list[Live]) -> None:
    """Each uploading job SUCCESS with every file in S3; the bucket holds exactly those
    objects, each the size of its file on disk, and no multipart upload is left open."""
    wanted: dict[str, int] = {}
    for live in lives:
        if not live.upload:
            continue
        job = await jobs.job(live.task_id)
        assert job["upload"] is not None, job
        assert job["upload"]["state"] == "SUCCESS", job["upload"]
        paths = {f["path"] for f in job["progress"]["files"]}
        keys = {o["key"] for o in job["result"]["s3"]}
        assert {o["bucket"] for o in job["result"]["s3"]} <= {s3.bucket}, job["result"]["s3"]
        assert keys == paths, (keys, paths)
        wanted |= {p: (recordings / p).stat().st_size for p in paths}
    objects = await s3.objects()
    assert objects == wanted, {
        "not uploaded": sorted(set(wanted) - set(objects)),
        "not a file of a job": sorted(set(objects) - set(wanted)),
        "sizes": {k: (objects[k], v) for k, v in wanted.items() if objects.get(k, v) != v},
    }
    assert await s3.pending_uploads() == []
