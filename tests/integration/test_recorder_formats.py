"""Output formats and joined files against the fake TikTok CDN and a real ffmpeg: each format
is the container it says and decodes; a joined file plays for the sum of its segments."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from services.recorder.ffmpeg import CONTAINERS, ffmpeg_binary
from services.recorder.media import FfmpegMedia
from services.recorder.session import RecordingSession
from services.recorder.session_types import SessionResult, StreamLookup
from shared.jobs import SegmentEntry
from shared.naming import render
from shared.tiktok import StreamCandidate
from tests.helpers import decode_errors
from tlr.fake_tiktok import FakeTikTok, RoomStatus

FAKE_TIKTOK_OPTIONS = {"speed": 10.0}
FFMPEG = ffmpeg_binary(os.environ.get("FFMPEG_BIN"))
USER = "fmt"
WAIT_S = 20.0
# What ffmpeg's banner names each container ("Input #0, matroska,webm, from ...").
DEMUXERS = {"mp4": "mov,mp4", "mkv": "matroska", "ts": "mpegts", "flv": "flv"}


class Live:
    """A session of the fake's live of USER, its files under ``root``."""

    def __init__(self, fake: FakeTikTok, root: Path, http: httpx.AsyncClient) -> None:
        self.fake = fake
        self.root = root
        self.http = http

    async def lookup(self) -> StreamLookup:
        user = self.fake.user(USER)
        room = None if user.room_id is None else self.fake.room(user.room_id)
        if room is None or room.status == RoomStatus.ENDED:
            return StreamLookup(status="ended")
        url = self.fake.flv_url(room.stream_id, backup=True)
        return StreamLookup(status="live", candidates=(StreamCandidate("origin", url),))

    def open_path(self, index: int, started_at: datetime) -> Path:
        values = {"user": USER, "part": index, "title": 'it\'s a "live"; $(x)'}
        template = "{user}/{timestamp}_{part}_{title}.mp4"
        return render(template, values, self.root, when=started_at).with_suffix(".flv")

    def session(self, fmt: str) -> RecordingSession:
        return RecordingSession(
            lookup=self.lookup,
            http=self.http,
            open_path=self.open_path,
            ffmpeg=FFMPEG,
            read_timeout=2.0,
            backoff_initial=0.1,
            backoff_max=0.4,
            container=CONTAINERS[fmt],
        )

    def on_disk(self) -> list[Path]:
        return sorted(p for p in self.root.rglob("*") if p.is_file())


@pytest.fixture
async def live(fake_tiktok: FakeTikTok, tmp_path: Path) -> AsyncIterator[Live]:
    await fake_tiktok.create_user(USER)
    async with httpx.AsyncClient() as http:
        yield Live(fake_tiktok, tmp_path / "recordings", http)


async def until(predicate: Callable[[], bool], timeout: float = WAIT_S) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            msg = f"condition not met within {timeout}s"
            raise AssertionError(msg)
        await asyncio.sleep(0.02)


async def media_s(session: RecordingSession, seconds: float, part: int) -> None:
    """Wait until segment ``part`` is being written and holds ``seconds`` of media."""

    def ready() -> bool:
        seg = session.current_segment
        return (
            seg is not None and seg.index == part and seg.last_ts - seg.first_ts >= seconds * 1000
        )

    await until(ready)


def banner(path: Path) -> str:
    """ffmpeg's description of ``path`` (the bundled ffmpeg has no ffprobe)."""
    run = subprocess.run(
        [FFMPEG, "-hide_banner", "-nostdin", "-i", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return run.stderr


def container_of(path: Path) -> str:
    found = re.search(r"^Input #0, (.+?), from ", banner(path), re.M)
    assert found is not None, banner(path)
    return found[1]


def duration_of(path: Path) -> float:
    found = re.search(r"Duration: (\d+):(\d+):(\d+\.\d+)", banner(path))
    assert found is not None, banner(path)
    return int(found[1]) * 3600 + int(found[2]) * 60 + float(found[3])


def frame_size(path: Path) -> str:
    found = re.search(r"Video: .*?, (\d{2,5}x\d{2,5})", banner(path))
    assert found is not None
    return found[1]


def entries(root: Path, result: SessionResult) -> list[SegmentEntry]:
    """The session's files as the job lists them."""
    return [
        SegmentEntry(
            path=str(f.path.relative_to(root.resolve())),
            part=f.part,
            size=f.size,
            duration_s=f.duration_s,
            state="final" if f.remuxed else "raw",
        )
        for f in result.files
    ]


@pytest.mark.parametrize("fmt", ["mp4", "mkv", "ts", "flv"])
async def test_each_format_is_its_container_and_decodes(live: Live, fmt: str) -> None:
    _, stream_id = await live.fake.go_live(USER)
    session = live.session(fmt)
    task = asyncio.create_task(session.run())
    await media_s(session, 2, part=0)
    await live.fake.drop(stream_id, after_bytes=0, mode="eof")
    await media_s(session, 2, part=1)
    await live.fake.end(USER, mode="eof")
    result = await asyncio.wait_for(task, WAIT_S)
    assert result.reason == "ended"
    assert len(result.files) == 2
    for f in result.files:
        assert f.remuxed, f.error
        assert f.path.suffix == f".{fmt}"
        assert container_of(f.path).startswith(DEMUXERS[fmt])
        assert decode_errors(f.path) == ""
        assert f.duration_s is not None
        assert f.duration_s >= 1.5
    # The final files only: no raw FLV (unless it is the file), no temp file.
    assert live.on_disk() == sorted(f.path for f in result.files)


@pytest.mark.parametrize("fmt", ["mp4", "ts"])
async def test_join_of_three_segments_plays_for_their_sum(live: Live, fmt: str) -> None:
    _, stream_id = await live.fake.go_live(USER)
    session = live.session(fmt)
    task = asyncio.create_task(session.run())
    await media_s(session, 2, part=0)
    await live.fake.drop(stream_id, after_bytes=0, mode="reset")
    await media_s(session, 2, part=1)
    await live.fake.drop(stream_id, after_bytes=0, mode="eof")
    await media_s(session, 2, part=2)
    await live.fake.end(USER, mode="eof")
    result = await asyncio.wait_for(task, WAIT_S)
    assert len(result.files) == 3
    media = FfmpegMedia(
        root=live.root, ffmpeg=FFMPEG, http=live.http, read_timeout=2.0, progress_interval=5.0
    )
    segments = entries(live.root.resolve(), result)

    joined = await media.join(segments, fmt)

    assert len(joined) == 1
    entry = joined[0]
    assert entry.joined_from == (0, 1, 2)
    assert entry.state == "final"
    path = live.root / entry.path
    # Next to the segments, named after the first one.
    assert path.parent == result.files[0].path.parent
    assert path.name == f"{result.files[0].path.stem}-joined.{fmt}"
    assert entry.size == path.stat().st_size
    assert container_of(path).startswith(DEMUXERS[fmt])
    total = sum(duration_of(f.path) for f in result.files)
    assert duration_of(path) == pytest.approx(total, abs=1.0)
    assert entry.duration_s == pytest.approx(total, abs=1.0)
    assert decode_errors(path) == ""
    # The segments are kept; nothing else is left behind (no temp file, no list).
    assert live.on_disk() == sorted([*(f.path for f in result.files), path])


async def test_join_after_a_resolution_change_joins_each_run(live: Live) -> None:
    await live.fake.prepare("h264_360p", "h264_540p")
    _, stream_id = await live.fake.go_live(USER, profile="h264_360p")
    session = live.session("mkv")
    task = asyncio.create_task(session.run())
    await media_s(session, 2, part=0)
    await live.fake.switch(stream_id, "h264_540p")
    await media_s(session, 2, part=1)
    await live.fake.drop(stream_id, after_bytes=0, mode="eof")
    await media_s(session, 2, part=2)
    await live.fake.end(USER, mode="eof")
    result = await asyncio.wait_for(task, WAIT_S)
    assert [frame_size(f.path) for f in result.files] == ["640x360", "960x540", "960x540"]
    media = FfmpegMedia(
        root=live.root, ffmpeg=FFMPEG, http=live.http, read_timeout=2.0, progress_interval=5.0
    )

    joined = await media.join(entries(live.root.resolve(), result), "mkv")

    # The 540p run is joined; the 360p part before the change stays a file of its own.
    assert [j.joined_from for j in joined] == [(1, 2)]
    path = live.root / joined[0].path
    assert frame_size(path) == "960x540"
    total = duration_of(result.files[1].path) + duration_of(result.files[2].path)
    assert duration_of(path) == pytest.approx(total, abs=1.0)
    assert decode_errors(path) == ""
