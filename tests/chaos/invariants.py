"""After each chaos scenario: disk = jobs = recording.finished, all final and clean; media lost."""

from __future__ import annotations

import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import nats.js.errors

from services.recorder.ffmpeg import ffmpeg_binary
from shared import events as ev
from shared.bus import Bus
from shared.subjects import EVENTS_STREAM, subject_for
from tests.helpers import JobsApi, decode_errors
from tlr.fake_tiktok import FakeTikTok

_DURATION = re.compile(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)")


@dataclass
class Live:
    """A live a scenario records: its fake TikTok user and stream, its job, when it ended."""

    user: str
    stream_id: str
    task_id: str = ""
    ended_at: float | None = None  # wall clock, as the fake's request log keeps it


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
    jobs: JobsApi, bus: Bus, fake: FakeTikTok, recordings: Path, lives: list[Live]
) -> list[Outcome]:
    """Assert the invariants over ``lives`` (all ended) and return what each job kept.

    Files on disk = files listed in the jobs = files in their recording.finished events;
    every one final and decoding cleanly. The media lost is the time the fake served the
    live (first CDN request to its end) minus the duration of what was recorded.
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
    return outcomes
