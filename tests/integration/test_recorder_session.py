"""RecordingSession against the fake TikTok CDN and a real ffmpeg: every file must decode."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import re
import stat
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvloop
from prometheus_client import REGISTRY

from services.recorder.ffmpeg import FfmpegMissingError, ffmpeg_binary, remux
from services.recorder.flv_pull import flv_get, route_for
from services.recorder.segmenter import SegmentInfo
from services.recorder.session import RecordingSession
from services.recorder.session_types import Progress, SessionResult, StreamLookup
from shared.errors import ErrorCode
from shared.naming import render
from shared.tiktok import StreamCandidate
from tests.http_proxy import AuthProxy
from tlr.fake_tiktok import FakeTikTok, FaultMode, RoomStatus

# 10x real time: 6 s of media arrive in 0.6 s. FLV timestamps are media time (x speed).
FAKE_TIKTOK_OPTIONS = {"speed": 10.0}
FFMPEG = ffmpeg_binary(os.environ.get("FFMPEG_BIN"))
USER = "alice"
WAIT_S = 20.0


# --- helpers ----------------------------------------------------------------------------------


async def until(predicate: Callable[[], bool], timeout: float = WAIT_S) -> None:
    """Poll ``predicate`` until it holds, or fail after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            msg = f"condition not met within {timeout}s"
            raise AssertionError(msg)
        await asyncio.sleep(0.02)


@dataclass
class Env:
    fake: FakeTikTok
    root: Path
    http: httpx.AsyncClient
    lookups: list[str] = field(default_factory=list)
    closed: list[SegmentInfo] = field(default_factory=list)

    async def lookup(self) -> StreamLookup:
        """What the caller's room/info lookup does, through the fake's Python API."""
        user = self.fake.user(USER)
        room = None if user.room_id is None else self.fake.room(user.room_id)
        if room is None or room.status == RoomStatus.ENDED:
            self.lookups.append("ended")
            return StreamLookup(status="ended")
        if room.status == RoomStatus.PAUSED:
            self.lookups.append("paused")
            return StreamLookup(status="paused")
        self.lookups.append("live")
        # As room/info lists them today: the top rung's main URL is dead, its backup plays.
        main = StreamCandidate("origin", self.fake.flv_url(room.stream_id))
        backup = StreamCandidate("origin", self.fake.flv_url(room.stream_id, backup=True), "backup")
        return StreamLookup(status="live", candidates=(main, backup))

    def open_path(self, index: int, started_at: datetime) -> Path:
        values = {"user": USER, "part": index, "title": "test live"}
        template = "{user}/{timestamp}_{part}_{title}.mp4"
        return render(template, values, self.root, when=started_at).with_suffix(".flv")

    async def on_segment_closed(self, info: SegmentInfo) -> None:
        self.closed.append(info)

    def session(self, **options: Any) -> RecordingSession:
        settings: dict[str, Any] = {
            "lookup": self.lookup,
            "http": self.http,
            "open_path": self.open_path,
            "ffmpeg": FFMPEG,
            "read_timeout": 2.0,
            "backoff_initial": 0.1,
            "backoff_max": 0.4,
            "on_segment_closed": self.on_segment_closed,
        }
        return RecordingSession(**(settings | options))

    def files_on_disk(self) -> list[Path]:
        return self.listing(self.root)

    @staticmethod
    def listing(root: Path) -> list[Path]:
        return sorted(p for p in root.rglob("*") if p.is_file())


@pytest.fixture
async def env(fake_tiktok: FakeTikTok, tmp_path: Path) -> AsyncIterator[Env]:
    await fake_tiktok.create_user(USER)
    async with httpx.AsyncClient() as http:
        yield Env(fake=fake_tiktok, root=tmp_path / "recordings", http=http)


async def ffmpeg_run(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        FFMPEG,
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, err.decode(errors="replace")


async def assert_decodes(path: Path) -> None:
    """A full decode of every stream reports nothing at all."""
    code, err = await ffmpeg_run(
        "-hide_banner", "-nostdin", "-v", "error", "-i", str(path), "-f", "null", "-"
    )
    assert code == 0
    assert err.strip() == "", f"{path.name}: {err[:2000]}"


async def probe(path: Path) -> tuple[float, str]:
    """(container duration in seconds, video WxH) from ffmpeg's input banner."""
    _, err = await ffmpeg_run("-hide_banner", "-nostdin", "-i", str(path))
    duration = re.search(r"Duration: (\d+):(\d+):(\d+\.\d+)", err)
    size = re.search(r"Video: .*?, (\d{2,5}x\d{2,5})", err)
    assert duration is not None, err
    assert size is not None, err
    h, m, s = duration.groups()
    return int(h) * 3600 + int(m) * 60 + float(s), size.group(1)


async def video_codec(path: Path) -> str:
    _, err = await ffmpeg_run("-hide_banner", "-nostdin", "-i", str(path))
    found = re.search(r"Video: (\w+)", err)
    assert found is not None, err
    return found.group(1)


async def assert_final(env: Env, result: SessionResult, count: int | None = None) -> None:
    """Every file is a remuxed MP4 that decodes; nothing else is left in the root."""
    if count is not None:
        assert len(result.files) == count, result.files
    assert [f.part for f in result.files] == list(range(len(result.files)))
    for f in result.files:
        assert f.remuxed, f.error
        assert f.path.suffix == ".mp4"
        assert f.path.stat().st_size == f.size
        assert f.duration_s is not None
        assert f.duration_s > 0
    assert env.files_on_disk() == sorted(f.path for f in result.files)
    await asyncio.gather(*(assert_decodes(f.path) for f in result.files))


async def media_s_at_least(session: RecordingSession, seconds: float, part: int = 0) -> None:
    """Wait until segment ``part`` is being written and holds ``seconds`` of media."""

    def ready() -> bool:
        current = session.current_segment
        return (
            current is not None
            and current.index == part
            and current.last_ts - current.first_ts >= seconds * 1000
        )

    await until(ready)


# --- cases ------------------------------------------------------------------------------------


async def test_duration_gives_one_clean_mp4_of_that_length(env: Env) -> None:
    await env.fake.go_live(USER)
    result = await env.session(duration=6.0).run()
    assert result.reason == "duration"
    assert result.error_code is None
    await assert_final(env, result, count=1)
    duration, size = await probe(result.files[0].path)
    assert size == "640x360"
    assert abs(duration - 6.0) < 0.25
    assert result.files[0].duration_s == pytest.approx(6.0, abs=0.25)
    assert result.bytes > 0
    assert result.reconnects == 0


async def test_drops_reset_and_eof_give_new_clean_segments(env: Env) -> None:
    _, stream_id = await env.fake.go_live(USER)
    session = env.session()
    task = asyncio.create_task(session.run())
    await media_s_at_least(session, 3, part=0)
    await env.fake.drop(stream_id, after_bytes=0, mode="reset")
    await media_s_at_least(session, 3, part=1)
    await env.fake.drop(stream_id, after_bytes=0, mode="eof")
    await media_s_at_least(session, 3, part=2)
    await env.fake.end(USER, mode="eof")
    result = await asyncio.wait_for(task, WAIT_S)
    assert result.reason == "ended"
    assert result.reconnects == 2
    assert result.stalls == 0
    await assert_final(env, result, count=3)
    for info in env.closed:
        data = info.path.with_suffix(".mp4").read_bytes()
        assert b"FLV\x01" not in data[:64]


async def test_stall_is_detected_by_the_watchdog(env: Env) -> None:
    _, stream_id = await env.fake.go_live(USER)
    session = env.session(read_timeout=1.0)
    task = asyncio.create_task(session.run())
    await media_s_at_least(session, 3)
    await env.fake.drop(stream_id, after_bytes=0, mode="stall")
    loop = asyncio.get_running_loop()
    stalled_at = loop.time()
    await until(lambda: session.stalls == 1)
    assert 0.9 <= loop.time() - stalled_at < 3.0
    await media_s_at_least(session, 2, part=1)
    await env.fake.end(USER, mode="eof")
    result = await asyncio.wait_for(task, WAIT_S)
    assert result.reason == "ended"
    assert result.stalls == 1
    assert result.reconnects == 1
    await assert_final(env, result, count=2)


async def test_resolution_switch_cuts_a_segment_each_decodes(env: Env) -> None:
    await env.fake.prepare("h264_360p", "h264_540p")
    _, stream_id = await env.fake.go_live(USER, profile="h264_360p")
    session = env.session()
    task = asyncio.create_task(session.run())
    await media_s_at_least(session, 3)
    await env.fake.switch(stream_id, "h264_540p")
    await media_s_at_least(session, 3, part=1)
    await env.fake.end(USER, mode="eof")
    result = await asyncio.wait_for(task, WAIT_S)
    assert result.reason == "ended"
    assert result.reconnects == 0
    assert [i.cut_reason for i in env.closed] == ["video_config", "disconnected"]
    await assert_final(env, result, count=2)
    sizes = [(await probe(f.path))[1] for f in result.files]
    assert sizes == ["640x360", "960x540"]


async def test_codec_switch_to_enhanced_flv_hevc(env: Env) -> None:
    await env.fake.prepare("h264_360p", "hevc_360p")
    _, stream_id = await env.fake.go_live(USER, profile="h264_360p")
    session = env.session()
    task = asyncio.create_task(session.run())
    await media_s_at_least(session, 2)
    await env.fake.switch(stream_id, "hevc_360p")
    await media_s_at_least(session, 2, part=1)
    await env.fake.end(USER, mode="eof")
    result = await asyncio.wait_for(task, WAIT_S)
    assert [i.cut_reason for i in env.closed] == ["video_config", "disconnected"]
    await assert_final(env, result, count=2)
    codecs = [await video_codec(f.path) for f in result.files]
    assert codecs == ["h264", "hevc"]


@pytest.mark.parametrize("mode", ["eof", "reset", "stall"])
async def test_end_is_detected_and_files_are_final_quickly(env: Env, mode: FaultMode) -> None:
    await env.fake.go_live(USER)
    session = env.session(read_timeout=1.0)
    task = asyncio.create_task(session.run())
    await media_s_at_least(session, 4)
    loop = asyncio.get_running_loop()
    ended_at = loop.time()
    await env.fake.end(USER, mode=mode)
    result = await asyncio.wait_for(task, WAIT_S)
    assert loop.time() - ended_at < 5.0
    assert result.reason == "ended"
    assert result.error_code is None
    assert env.lookups[-1] == "ended"
    await assert_final(env, result, count=1)


async def test_pause_keeps_the_recording_going_until_resume(env: Env) -> None:
    await env.fake.go_live(USER)
    session = env.session(read_timeout=1.0)
    task = asyncio.create_task(session.run())
    await media_s_at_least(session, 2)
    await env.fake.pause(USER)
    # The open connection goes silent: the watchdog drops it, lookups say "paused".
    await until(lambda: env.lookups.count("paused") >= 3)
    assert not task.done()
    assert session.segments_closed == 1
    await env.fake.resume(USER)
    await media_s_at_least(session, 2, part=1)
    await env.fake.end(USER, mode="eof")
    result = await asyncio.wait_for(task, WAIT_S)
    assert result.reason == "ended"
    assert result.stalls == 1
    await assert_final(env, result, count=2)


async def test_stop_finalises_the_files(env: Env) -> None:
    await env.fake.go_live(USER)
    stop = asyncio.Event()
    session = env.session(stop=stop)
    task = asyncio.create_task(session.run())
    await media_s_at_least(session, 3)
    stop.set()
    result = await asyncio.wait_for(task, WAIT_S)
    assert result.reason == "stopped"
    assert result.error_code is None
    await assert_final(env, result, count=1)
    assert env.fake.room(env.fake.user(USER).room_id or "").status == RoomStatus.LIVE


async def test_offline_at_first_lookup_is_live_offline(env: Env) -> None:
    result = await env.session().run()
    assert result.reason == "error"
    assert result.error_code == ErrorCode.LIVE_OFFLINE
    assert result.files == []
    assert env.lookups == ["ended"]
    assert env.files_on_disk() == []


def ffmpeg_children() -> list[int]:
    """Child processes of this test process, from /proc (no psutil)."""
    me = str(os.getpid())
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == me:  # fields: state, ppid, ...
            found.append(int(entry.name))
    return found


def process_exists(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


async def test_cancel_during_remux_leaves_no_ffmpeg_behind(env: Env, tmp_path: Path) -> None:
    # A stand-in that records its pid, then becomes a real ffmpeg that never finishes.
    pidfile = tmp_path / "ffmpeg.pids"
    wrapper = tmp_path / "slow-ffmpeg"
    wrapper.write_text(
        "#!/bin/sh\n"
        f'echo $$ >> "{pidfile}"\n'
        f'exec "{FFMPEG}" -nostdin -v error -re -f lavfi -i anullsrc -f null -\n'
    )
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    await env.fake.go_live(USER)
    task = asyncio.create_task(env.session(duration=2.0, ffmpeg=str(wrapper)).run())
    await until(lambda: pidfile.exists() and pidfile.read_text().strip() != "")
    pid = int(pidfile.read_text().split()[0])
    assert pid in ffmpeg_children()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not process_exists(pid)  # killed and reaped (no zombie either)
    assert ffmpeg_children() == []
    # The raw segment stays, complete and playable; no half-written MP4 remains.
    leftovers = env.files_on_disk()
    assert [p.suffix for p in leftovers] == [".flv"]
    await assert_decodes(leftovers[0])


async def test_duration_counts_media_across_reconnects(env: Env) -> None:
    _, stream_id = await env.fake.go_live(USER)
    progress: list[Progress] = []

    async def on_progress(p: Progress) -> None:
        progress.append(p)

    session = env.session(duration=6.0, on_progress=on_progress, progress_interval=0.05)
    task = asyncio.create_task(session.run())
    await media_s_at_least(session, 3, part=0)
    await env.fake.drop(stream_id, after_bytes=0, mode="reset")
    result = await asyncio.wait_for(task, WAIT_S)
    assert result.reason == "duration"
    assert result.reconnects == 1
    await assert_final(env, result, count=2)
    durations = [(await probe(f.path))[0] for f in result.files]
    assert sum(durations) == pytest.approx(6.0, abs=0.3)
    assert progress
    assert progress[-1].bytes <= result.bytes
    assert max(p.bitrate for p in progress) > 0


async def test_expired_url_and_lookup_errors_are_retried(env: Env) -> None:
    _, stream_id = await env.fake.go_live(USER)
    calls = 0

    async def flaky_lookup() -> StreamLookup:
        nonlocal calls
        calls += 1
        if calls == 1:
            msg = "WAF says please wait"
            raise RuntimeError(msg)
        if calls == 2:  # a signed URL that has expired: the CDN answers 403
            return StreamLookup(status="live", url=env.fake.flv_url(stream_id, ttl_s=-10))
        return await env.lookup()

    session = env.session(lookup=flaky_lookup, duration=2.0)
    result = await asyncio.wait_for(session.run(), WAIT_S)
    assert result.reason == "duration"
    assert calls == 3
    await assert_final(env, result, count=1)
    statuses = [r["status"] for r in await env.fake.requests("/game/")]
    assert statuses[:2] == [403, 404]  # expired, then the fresh but dead top rung
    (backup, *_) = await env.fake.requests("/bk/game/")
    assert backup["status"] == 200


async def test_gives_up_when_nothing_can_be_recorded(env: Env) -> None:
    async def broken_lookup() -> StreamLookup:
        msg = "signer down"
        raise RuntimeError(msg)

    session = env.session(lookup=broken_lookup, give_up_after=0.5)
    result = await asyncio.wait_for(session.run(), WAIT_S)
    assert result.reason == "error"
    assert result.error_code == ErrorCode.NETWORK_TIMEOUT
    assert result.error is not None
    assert "signer down" in result.error
    assert result.files == []


async def test_a_permanent_lookup_error_ends_at_once(env: Env) -> None:
    class Restricted(Exception):
        code = ErrorCode.AGE_RESTRICTED
        retryable = False

    async def restricted() -> StreamLookup:
        msg = "login required"
        raise Restricted(msg)

    result = await asyncio.wait_for(env.session(lookup=restricted).run(), WAIT_S)
    assert result.reason == "error"
    assert result.error_code == ErrorCode.AGE_RESTRICTED


async def test_remux_failure_keeps_the_raw_flv(tmp_path: Path) -> None:
    raw = tmp_path / "broken.flv"
    raw.write_bytes(b"FLV\x01\x05\x00\x00\x00\x09" + bytes(4) + b"\x09garbage" * 100)
    result = await remux(raw, tmp_path / "broken.mp4", ffmpeg=FFMPEG)
    assert not result.ok
    assert result.path == raw
    assert result.error
    assert [p.name for p in Env.listing(tmp_path)] == ["broken.flv"]


async def test_missing_ffmpeg_keeps_the_raw_flv(tmp_path: Path) -> None:
    raw = tmp_path / "seg.flv"
    raw.write_bytes(b"FLV")
    result = await remux(raw, tmp_path / "seg.mp4", ffmpeg=str(tmp_path / "no-such-ffmpeg"))
    assert not result.ok
    assert result.error is not None
    assert "cannot run" in result.error
    assert raw.exists()


def test_ffmpeg_binary_resolution(tmp_path: Path) -> None:
    assert Path(ffmpeg_binary(None)).is_file()
    assert ffmpeg_binary(FFMPEG) == FFMPEG
    with pytest.raises(FfmpegMissingError) as caught:
        ffmpeg_binary(str(tmp_path / "nope"))
    assert caught.value.code == ErrorCode.FFMPEG_MISSING


@pytest.mark.parametrize("mode", ["404", "empty"])
async def test_a_dead_rung_is_skipped_for_its_backup_within_one_connection(
    env: Env, mode: str
) -> None:
    # StreamCap #120: the top rung's URL answers 404 (or closes before any media) while its
    # backup plays. The session moves on at once, without another room/info lookup.
    await env.fake.set_scenario(dead_rung_mode=mode)
    await env.fake.go_live(USER)
    streams: list[StreamCandidate] = []

    async def on_stream(stream: StreamCandidate) -> None:
        streams.append(stream)

    dead_before = REGISTRY.get_sample_value("tlr_recorder_dead_streams_total") or 0.0
    session = env.session(duration=2.0, on_stream=on_stream)
    result = await asyncio.wait_for(session.run(), WAIT_S)
    assert result.reason == "duration"
    assert env.lookups == ["live"]
    assert [(s.quality, s.source) for s in streams] == [("origin", "backup")]
    assert (REGISTRY.get_sample_value("tlr_recorder_dead_streams_total") or 0.0) > dead_before
    assert result.reconnects == 0
    await assert_final(env, result, count=1)


# --- the read path (services/recorder/flv_pull.py) ---------------------------------------------

SEGMENTS = {**FAKE_TIKTOK_OPTIONS, "delivery": "segments"}


@pytest.mark.parametrize("fake_tiktok", [SEGMENTS], indirect=True)
async def test_segment_sized_writes_are_read_in_large_pieces(env: Env) -> None:
    # The CDN writes one ~1.4 KB HTTP chunk at a time; read through httpx, each would be a read.
    await env.fake.go_live(USER)
    session = env.session(duration=6.0)
    result = await asyncio.wait_for(session.run(), WAIT_S)
    assert result.reason == "duration"
    await assert_final(env, result, count=1)
    writes, pulled = env.fake.wire.writes, session._puller
    assert writes > 200
    assert pulled.socket.deliveries == pulled.reads > 0
    assert pulled.reads * 5 < writes
    assert pulled.socket.recvs * 5 < writes


@pytest.mark.parametrize("fake_tiktok", [SEGMENTS], indirect=True)
async def test_stall_and_stop_with_segment_sized_writes(env: Env) -> None:
    _, stream_id = await env.fake.go_live(USER)
    session = env.session(read_timeout=1.0)
    task = asyncio.create_task(session.run())
    await media_s_at_least(session, 2)
    await env.fake.drop(stream_id, after_bytes=0, mode="stall")
    await until(lambda: session.stalls == 1)
    await media_s_at_least(session, 2, part=1)
    session.stop_event.set()
    result = await asyncio.wait_for(task, WAIT_S)
    assert result.reason == "stopped"
    assert (result.stalls, result.reconnects) == (1, 1)
    await assert_final(env, result, count=2)


async def test_records_through_an_http_proxy(env: Env) -> None:
    await env.fake.go_live(USER)
    async with AuthProxy("rec", "pw") as proxy, httpx.AsyncClient(proxy=proxy.url()) as http:
        session = env.session(http=http, duration=2.0)
        result = await asyncio.wait_for(session.run(), WAIT_S)
    assert result.reason == "duration"
    await assert_final(env, result, count=1)
    assert sum(n for path, n in proxy.requests.items() if path.endswith(".flv")) == 2
    assert proxy.refused == 0
    assert session._puller.socket.deliveries > 0  # read by flv_pull, not httpx


@pytest.mark.parametrize("auth", [True, False])
async def test_records_through_a_socks5_proxy(env: Env, auth: bool) -> None:
    await env.fake.go_live(USER)
    async with Socks5Proxy(("rec", "pw") if auth else None) as proxy:
        credentials = "rec:pw@" if auth else ""
        async with httpx.AsyncClient(proxy=f"socks5://{credentials}127.0.0.1:{proxy.port}") as http:
            session = env.session(http=http, duration=2.0)
            result = await asyncio.wait_for(session.run(), WAIT_S)
    assert result.reason == "duration"
    await assert_final(env, result, count=1)
    assert [port for _, port in proxy.connects] == [env.fake.port] * 2  # dead rung, backup
    assert session._puller.socket.deliveries > 0


async def test_a_client_flv_pull_cannot_follow_streams_through_httpx(env: Env) -> None:
    class Custom(httpx.AsyncHTTPTransport):
        pass

    await env.fake.go_live(USER)
    async with httpx.AsyncClient(transport=Custom()) as http:
        session = env.session(http=http, duration=2.0)
        result = await asyncio.wait_for(session.run(), WAIT_S)
    assert result.reason == "duration"
    await assert_final(env, result, count=1)
    assert session._puller.reads > 0
    assert session._puller.socket.deliveries == 0


class Socks5Proxy:
    """A SOCKS5 server (RFC 1928, CONNECT only; RFC 1929 auth when given credentials)."""

    def __init__(self, credentials: tuple[str, str] | None) -> None:
        self._credentials = credentials
        self.connects: list[tuple[str, int]] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def __aenter__(self) -> Socks5Proxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._handshake_and_pipe(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _handshake_and_pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        _, n = await reader.readexactly(2)
        methods = await reader.readexactly(n)
        method = 0 if self._credentials is None else 2
        if method not in methods:
            writer.write(b"\x05\xff")
            return
        writer.write(bytes((5, method)))
        if self._credentials is not None:
            _, n = await reader.readexactly(2)
            user = (await reader.readexactly(n)).decode()
            password = (await reader.readexactly((await reader.readexactly(1))[0])).decode()
            ok = (user, password) == self._credentials
            writer.write(b"\x01\x00" if ok else b"\x01\x01")
            if not ok:
                return
        _, _, _, atyp = await reader.readexactly(4)
        if atyp == 3:
            host = (await reader.readexactly((await reader.readexactly(1))[0])).decode()
        else:
            host = str(ipaddress.ip_address(await reader.readexactly(4 if atyp == 1 else 16)))
        port = int.from_bytes(await reader.readexactly(2), "big")
        self.connects.append((host, port))
        up_reader, up_writer = await asyncio.open_connection(host, port)
        writer.write(b"\x05\x00\x00\x01" + bytes(6))
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            up_writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


def test_flv_pull_on_uvloop() -> None:
    # The services run on uvloop (shared/runtime.py), whose transports are not subclasses of
    # asyncio.Transport; the tests above run on asyncio's loop.
    body = bytes(range(256)) * 40

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for i in range(0, len(body), 1400):
            piece = body[i : i + 1400]
            writer.write(b"%x\r\n%b\r\n" % (len(piece), piece))
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        writer.close()

    async def pull() -> bytes:
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/stream.flv"
        async with httpx.AsyncClient() as client:
            route = route_for(client, httpx.URL(url))
            assert route is not None
            async with flv_get(client, route, url, connect_timeout=5, read_timeout=5) as got:
                assert got.status == 200
                data = b"".join([piece async for piece in got.chunks()])
        server.close()
        await server.wait_closed()
        return data

    assert uvloop.run(pull()) == body
