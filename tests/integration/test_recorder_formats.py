"""Output formats and joined files against the fake TikTok and a real ffmpeg: each format is
the container it says and decodes; a joined file plays for the sum of its segments (a session
and the join alone, then POST /recordings through the gateway and a recorder)."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from services.gateway.app import create_app
from services.gateway.nats_link import NatsLink
from services.gateway.settings import GatewaySettings
from services.recorder.ffmpeg import CONTAINERS, ffmpeg_binary
from services.recorder.media import FfmpegMedia
from services.recorder.service import RecorderService
from services.recorder.session import RecordingSession
from services.recorder.session_types import SessionResult, StreamLookup
from services.recorder.settings import RecorderSettings
from shared.bus import Bus
from shared.events import RecordingFinished, decode
from shared.jobs import SegmentEntry
from shared.naming import render
from shared.secrets import new_key
from shared.subjects import EVENTS_STREAM
from shared.tiktok import StreamCandidate
from tests.helpers import JobsApi, decode_errors, eventually
from tlr.fake_tiktok import FakeTikTok, RoomStatus
from tlr.nats_server import NatsServer

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


# --- through the API: POST /recordings to a joined file --------------------------------------

KEY = "k-formats"
H = {"X-API-Key": KEY}


@dataclass
class Stack:
    api: JobsApi
    fake: FakeTikTok
    recordings: Path
    bus: Bus


@pytest.fixture
async def stack(
    nats_server: NatsServer, bus: Bus, fake_tiktok: FakeTikTok, tmp_path: Path
) -> AsyncIterator[Stack]:
    await fake_tiktok.create_user(USER)
    secret = new_key()
    gw = GatewaySettings(
        api_keys=[KEY],
        nats_url=nats_server.client_url,
        secret_key=secret,
        rate_limit_per_min=100_000,
    )
    rec = RecorderSettings(
        nats_url=nats_server.client_url,
        instance_id="rec-formats",
        recordings_dir=tmp_path / "recordings",
        cookies_dir=tmp_path / "cookies",
        tiktok_web_base=fake_tiktok.base_url,
        tiktok_webcast_base=fake_tiktok.base_url,
        secret_key=secret,
        read_timeout=2.0,
        **fake_tiktok.egress_settings,
    )
    async with NatsLink(gw) as link, RecorderService(bus, rec):
        await link.wait_connected()
        transport = httpx.ASGITransport(app=create_app(gw, link=link))
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            yield Stack(JobsApi(client, KEY), fake_tiktok, rec.recordings_dir, bus)


async def three_segments(stack: Stack, task_id: str, stream_id: str) -> None:
    """Let each segment get some media, then cut it (two drops), then end the live."""
    for part, mode in enumerate(["reset", "eof", None]):

        async def written(part: int = part) -> bool:
            files = (await stack.api.job(task_id))["progress"]["files"]
            if len(files) <= part:
                return False
            raw = stack.recordings / files[part]["path"]
            return raw.is_file() and raw.stat().st_size >= 200_000

        await eventually(written, timeout=WAIT_S)
        if mode is None:
            await stack.fake.end(USER, mode="eof")
        else:
            await stack.fake.drop(stream_id, after_bytes=0, mode=mode)


async def finished_event(bus: Bus, job_id: str) -> RecordingFinished:
    info = await bus.js.stream_info(EVENTS_STREAM)
    found = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        event = decode((await bus.js.get_msg(EVENTS_STREAM, seq)).data or b"")
        if isinstance(event, RecordingFinished) and event.job_id == job_id:
            found.append(event)
    assert len(found) == 1
    return found[0]


async def test_a_joined_file_plays_for_the_length_of_the_live(stack: Stack) -> None:
    _, stream_id = await stack.fake.go_live(USER, title="one file / please")
    options = {"format": "mkv", "join": True}
    task_id = await stack.api.record(url=f"@{USER}", options=options)
    await three_segments(stack, task_id, stream_id)
    job = await stack.api.wait(task_id, "SUCCESS", timeout=WAIT_S)

    files = job["progress"]["files"]
    segments = [f for f in files if not f["joined_from"]]
    joined = [f for f in files if f["joined_from"]]
    assert [s["part"] for s in segments] == [0, 1, 2]
    assert [j["joined_from"] for j in joined] == [[0, 1, 2]]
    assert job["progress"]["segments"] == 3
    # Listed next to the segments, in the job's result and in recording.finished.
    assert sorted(job["result"]["files"]) == sorted(f["path"] for f in files)
    event = await finished_event(stack.bus, task_id)
    assert [(f.path, f.joined_from) for f in event.files if f.joined_from] == [
        (joined[0]["path"], (0, 1, 2))
    ]
    path = stack.recordings / joined[0]["path"]
    assert path.parent == (stack.recordings / segments[0]["path"]).parent
    assert path.name.endswith("-joined.mkv")
    assert container_of(path).startswith("matroska")
    total = sum(duration_of(stack.recordings / s["path"]) for s in segments)
    assert total > 3
    assert duration_of(path) == pytest.approx(total, abs=1.0)
    assert joined[0]["duration_s"] == pytest.approx(total, abs=1.0)
    assert decode_errors(path) == ""
    # The segments are kept, each in the format asked for.
    for s in segments:
        assert s["path"].endswith(".mkv")
        assert (stack.recordings / s["path"]).is_file()


async def test_without_the_segments_only_the_joined_file_is_left(stack: Stack) -> None:
    _, stream_id = await stack.fake.go_live(USER)
    options = {"join": True, "keep_segments": False}
    task_id = await stack.api.record(url=f"@{USER}", options=options)
    await three_segments(stack, task_id, stream_id)
    job = await stack.api.wait(task_id, "SUCCESS", timeout=WAIT_S)

    files = job["progress"]["files"]
    assert [(f["joined_from"], f["state"]) for f in files] == [([0, 1, 2], "final")]
    assert job["result"]["files"] == [files[0]["path"]]
    path = stack.recordings / files[0]["path"]
    assert sorted(p for p in stack.recordings.rglob("*") if p.is_file()) == [path]
    assert path.suffix == ".mp4"
    assert decode_errors(path) == ""


@pytest.mark.parametrize("fmt", ["avi", "webm", "MKV"])
async def test_an_unknown_format_is_422(stack: Stack, fmt: str) -> None:
    r = await stack.api.client.post(
        "/recordings", json={"url": f"@{USER}", "options": {"format": fmt}}, headers=H
    )
    assert r.status_code == 422, r.text
    assert r.json()["error_code"] == "VALIDATION_ERROR"
    assert "options.format" in r.json()["error_message"]
