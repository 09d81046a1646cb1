"""Segment files are written off the event loop: a stalled disk stalls its session, not the loop."""

from __future__ import annotations

import asyncio
import errno
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from io import FileIO
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.recorder import disk
from services.recorder import session as session_module
from services.recorder.disk import Disk, SegmentWriteError, WriteQueue
from services.recorder.ffmpeg import ffmpeg_binary
from services.recorder.flv import FlvReader
from services.recorder.segmenter import Segmenter, SegmentInfo
from services.recorder.session import RecordingSession
from services.recorder.session_types import StreamLookup
from services.recorder.stream import StreamPuller
from shared.errors import ErrorCode
from shared.tiktok.models import StreamCandidate
from tests.helpers import eventually
from tests.unit.test_recorder_flv import gop, keyframe, run_stream, stream_start, walk

WriteAll = Callable[[FileIO, bytes | bytearray], None]


class Gate:
    """Stands in for the disk's low-level write: every write waits until the gate opens."""

    def __init__(self, real: WriteAll) -> None:
        self.real = real
        self.opened = threading.Event()
        self.entered = threading.Event()
        self.calls = 0

    def __call__(self, fh: FileIO, data: bytes | bytearray) -> None:
        self.calls += 1
        self.entered.set()
        self.opened.wait(60)  # the test fails long before: this only frees the thread
        self.real(fh, data)

    async def wait_entered(self) -> None:
        assert await asyncio.to_thread(self.entered.wait, 30), "no write reached the disk"


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> Gate:
    gate = Gate(disk._write_all)
    monkeypatch.setattr(disk, "_write_all", gate)
    return gate


class Ticker:
    """A task that counts its turns on the event loop: it runs only while the loop is free."""

    def __init__(self) -> None:
        self.ticks = 0
        self._target = 0
        self._reached = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            self.ticks += 1
            if self.ticks >= self._target:
                self._reached.set()
            await asyncio.sleep(0)

    async def advance(self, n: int) -> None:
        """Return once the ticker has run ``n`` more times."""
        self._target = self.ticks + n
        self._reached.clear()
        await self._reached.wait()

    def stop(self) -> None:
        self._task.cancel()


class Paths:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.closed: list[SegmentInfo] = []

    def open_path(self, index: int, started_at: datetime) -> Path:  # noqa: ARG002
        return self.root / "rec" / f"part{index}.flv"

    def on_close(self, info: SegmentInfo) -> None:
        # Only once the file is complete: what the segmenter counted is what is on disk.
        assert info.path.stat().st_size == info.bytes
        self.closed.append(info)


def inline_files(
    root: Path,
    data: bytes,
    reason: str = "end",
    *,
    flush_bytes: int,
    max_segment_ms: int | None = None,
) -> list[bytes]:
    """What the segmenter writes for ``data`` with its I/O inline (the reference output)."""
    paths = Paths(root)
    seg = Segmenter(
        paths.open_path,
        on_close=paths.on_close,
        flush_bytes=flush_bytes,
        max_segment_ms=max_segment_ms,
    )
    run_stream(seg, data)
    seg.close(reason)
    return [info.path.read_bytes() for info in paths.closed]


def long_live(gops: int) -> bytes:
    return stream_start() + b"".join(gop(i * 990) for i in range(gops))


async def test_a_blocked_write_holds_up_its_session_not_the_event_loop(
    tmp_path: Path, gate: Gate
) -> None:
    data = long_live(6)
    paths = Paths(tmp_path / "threaded")
    seg = Segmenter(
        paths.open_path, Disk(threads=2).queue(), on_close=paths.on_close, flush_bytes=4096
    )
    run_stream(seg, data)  # returns at once: the writes are queued, the first one is stuck
    await gate.wait_entered()
    ticker = Ticker()
    try:
        await ticker.advance(200)  # the loop runs while the write is blocked
        info = seg.close()
        assert info is not None
        await ticker.advance(200)
        assert paths.closed == []  # the file is not complete: no remux may start yet
        assert not gate.opened.is_set()
        gate.opened.set()
        await seg.aclose()
    finally:
        gate.opened.set()
        ticker.stop()
    assert gate.calls > 1
    assert paths.closed == [info]
    expected = inline_files(tmp_path / "inline", data, flush_bytes=4096)
    assert [i.path.read_bytes() for i in paths.closed] == expected  # complete, in order
    assert len(walk(expected[0])[1]) == 3 + 6 * 60


async def test_many_sessions_on_few_threads_keep_every_file_in_order(tmp_path: Path) -> None:
    shared = Disk(threads=3, max_pending=64 * 1024)
    lives = [long_live(3 + n % 4) for n in range(12)]
    sessions = []
    for n, data in enumerate(lives):
        paths = Paths(tmp_path / f"s{n}")
        seg = Segmenter(
            paths.open_path,
            shared.queue(),
            on_close=paths.on_close,
            flush_bytes=2048,
            max_segment_ms=1500,
        )
        sessions.append((paths, seg, data))

    async def feed(seg: Segmenter, data: bytes) -> None:
        reader = FlvReader()
        for i in range(0, len(data), 4096):
            run_stream(seg, data[i : i + 4096], reader=reader)
            if seg.backlogged:
                await seg.drain()
            await asyncio.sleep(0)  # let the other sessions interleave
        await seg.aclose()

    await asyncio.gather(*(feed(seg, data) for _, seg, data in sessions))
    for n, (paths, _, data) in enumerate(sessions):
        expected = inline_files(
            tmp_path / f"inline{n}", data, flush_bytes=2048, max_segment_ms=1500
        )
        assert [i.path.read_bytes() for i in paths.closed] == expected
        assert [i.cut_reason for i in paths.closed][-1] == "end"


def streaming_client(data: bytes, chunk: int, served: list[int]) -> httpx.AsyncClient:
    """An HTTP client whose every GET streams ``data``; ``served[0]`` counts bytes handed out."""

    async def body() -> AsyncIterator[bytes]:
        for i in range(0, len(data), chunk):
            served[0] += len(data[i : i + chunk])
            yield data[i : i + chunk]
            await asyncio.sleep(0)

    def handler(request: httpx.Request) -> httpx.Response:  # noqa: ARG001
        return httpx.Response(200, content=body())

    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


async def test_a_session_stops_reading_while_its_disk_is_behind(tmp_path: Path, gate: Gate) -> None:
    data = stream_start() + b"".join(keyframe(i * 33, n=3000) for i in range(1000))  # ~3 MB
    max_pending, flush, chunk = 64 * 1024, 16 * 1024, 8 * 1024
    paths = Paths(tmp_path / "threaded")
    seg = Segmenter(
        paths.open_path,
        Disk(threads=2, max_pending=max_pending).queue(),
        on_close=paths.on_close,
        flush_bytes=flush,
    )
    stop = asyncio.Event()
    served = [0]
    async with streaming_client(data, chunk, served) as http:
        puller = StreamPuller(
            http=http,
            segmenter=seg,
            stop=stop,
            read_timeout=0.2,
            connect_timeout=5.0,
            progress_interval=60.0,
            on_stream=lambda _: None,
            on_tick=lambda _: None,
        )
        pull = asyncio.create_task(puller.pull((StreamCandidate("origin", "http://cdn/live.flv"),)))
        await gate.wait_entered()
        ticker = Ticker()
        try:
            await ticker.advance(500)
            received = puller.bytes_received
            await ticker.advance(500)
            await asyncio.sleep(0.5)  # past read_timeout: waiting for the disk is not a stall
            assert puller.bytes_received == received  # parked: no more reads
            assert received <= max_pending + flush + 2 * chunk
            assert served[0] < len(data) // 4
            assert not pull.done()
            assert puller.stalls == 0
            stop.set()
            conn = await pull
            assert conn.kind == "stop"
        finally:
            gate.opened.set()
            ticker.stop()
    await seg.aclose()
    assert len(paths.closed) == 1
    expected = inline_files(tmp_path / "inline", data[:received], "stopped", flush_bytes=flush)
    assert paths.closed[0].path.read_bytes() == expected[0]


def files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def full_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    def enospc(fh: FileIO, data: bytes | bytearray) -> None:  # noqa: ARG001
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(disk, "_write_all", enospc)


async def test_a_full_disk_surfaces_as_disk_full_at_the_next_drain_and_close(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    full_disk(monkeypatch)
    paths = Paths(tmp_path)
    # max_pending 0: drain() waits for every queued write, so it meets the failure.
    io = Disk(threads=2, max_pending=0).queue()
    seg = Segmenter(paths.open_path, io, flush_bytes=4096)
    run_stream(seg, long_live(2))
    assert io.error is None  # nothing waited for the disk yet: the failure is still to come
    with pytest.raises(SegmentWriteError) as drained:
        await seg.drain()
    assert drained.value.disk_full
    assert seg.backlogged  # the pull loop's cue to drain, which raises
    with pytest.raises(SegmentWriteError) as closed:
        await seg.aclose()
    assert closed.value.disk_full
    assert seg.current is None
    # Nothing after the failure was written: no file with a hole in it.
    assert (tmp_path / "rec" / "part0.flv").stat().st_size == 0


async def test_a_full_disk_ends_the_session_with_disk_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    full_disk(monkeypatch)

    async def lookup() -> StreamLookup:
        return StreamLookup(status="live", url="http://cdn/live.flv")

    async with streaming_client(long_live(40), 8192, [0]) as http:
        session = RecordingSession(
            lookup=lookup,
            http=http,
            open_path=Paths(tmp_path).open_path,
            ffmpeg=ffmpeg_binary(None),
            flush_bytes=4096,
            disk=Disk(threads=2),
        )
        result = await asyncio.wait_for(session.run(), 30)
    assert result.reason == "error"
    assert result.error_code == ErrorCode.DISK_FULL
    assert result.files == []  # nothing reached the disk: nothing is listed
    assert files_under(tmp_path) == []


def test_a_failed_create_raises_at_once_when_inline(tmp_path: Path) -> None:
    (tmp_path / "rec").write_bytes(b"a file where the folder should be")
    seg = Segmenter(Paths(tmp_path).open_path)
    with pytest.raises(SegmentWriteError) as failed:
        run_stream(seg, long_live(1))
    assert failed.value.errno in (errno.ENOTDIR, errno.EEXIST)
    with pytest.raises(SegmentWriteError):
        seg.close()
    assert (tmp_path / "rec").read_bytes() == b"a file where the folder should be"


class TrackingDisk(Disk):
    """A Disk that keeps the queues it hands out, so a test can wait for them."""

    def __init__(self) -> None:
        super().__init__(threads=2, max_pending=64 * 1024)
        self.queues: list[WriteQueue] = []

    def queue(self) -> WriteQueue:
        queue = super().queue()
        self.queues.append(queue)
        return queue


def cancellable_session(
    tmp_path: Path, http: httpx.AsyncClient, disk: Disk | None = None
) -> RecordingSession:
    async def lookup() -> StreamLookup:
        return StreamLookup(status="live", url="http://cdn/live.flv")

    return RecordingSession(
        lookup=lookup,
        http=http,
        open_path=Paths(tmp_path).open_path,
        ffmpeg=ffmpeg_binary(None),
        flush_bytes=16 * 1024,
        disk=disk if disk is not None else Disk(threads=2, max_pending=64 * 1024),
    )


async def test_a_cancelled_session_still_writes_what_it_had_queued(
    tmp_path: Path, gate: Gate
) -> None:
    data = stream_start() + b"".join(keyframe(i * 33, n=3000) for i in range(1000))
    async with streaming_client(data, 8192, [0]) as http:
        session = cancellable_session(tmp_path, http)
        task = asyncio.create_task(session.run())
        await gate.wait_entered()
        ticker = Ticker()
        try:
            await ticker.advance(200)
            info = session.current_segment
            assert info is not None
            task.cancel()
            await ticker.advance(200)
            assert not task.done()  # the abort waits for the disk (a bounded wait)
            gate.opened.set()
            with pytest.raises(asyncio.CancelledError):
                await task
        finally:
            gate.opened.set()
            ticker.stop()
    assert info.path.stat().st_size == info.bytes  # every queued byte reached the file


async def test_a_stalled_disk_does_not_hold_up_a_cancel_for_ever(
    tmp_path: Path, gate: Gate, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(session_module, "_ABORT_FLUSH_S", 0.05)
    data = stream_start() + b"".join(keyframe(i * 33, n=3000) for i in range(1000))
    tracking = TrackingDisk()
    async with streaming_client(data, 8192, [0]) as http:
        task = asyncio.create_task(cancellable_session(tmp_path, http, tracking).run())
        try:
            await gate.wait_entered()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert not gate.opened.is_set()  # the cancel ended while the write was stuck
        finally:
            gate.opened.set()
    # The disk is back: what was queued is written and the file closed after all.
    [queue] = tracking.queues
    await queue.drain()
    assert queue.error is None


class CountingPool(ThreadPoolExecutor):
    """Counts the jobs handed to worker threads: each one a thread hop."""

    submitted = 0

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
        CountingPool.submitted += 1
        return super().submit(fn, *args, **kwargs)


async def all_idle(queues: list[WriteQueue]) -> None:
    async def check() -> bool:
        return all(q.idle for q in queues)

    await eventually(check)


async def test_writes_of_many_sessions_reach_the_disk_in_one_hop_per_tick(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(disk, "ThreadPoolExecutor", CountingPool)
    shared = Disk(threads=4)
    queues = [shared.queue() for _ in range(50)]
    files = [q.create(tmp_path / f"s{n}.flv") for n, q in enumerate(queues)]
    await all_idle(queues)
    CountingPool.submitted = 0
    for n, (queue, file) in enumerate(zip(queues, files, strict=True)):
        for part in range(3):
            queue.write(file, f"{n}.{part};".encode())
    await all_idle(queues)
    # 150 writes of 50 sessions: one tick's job (two if the writes straddled a tick), not 150.
    assert 1 <= CountingPool.submitted <= 2
    for queue, file in zip(queues, files, strict=True):
        queue.close(file)
    await all_idle(queues)
    for n, file in enumerate(files):
        assert file.path.read_bytes() == f"{n}.0;{n}.1;{n}.2;".encode()


async def test_a_write_stuck_on_one_file_holds_up_only_its_own_session(tmp_path: Path) -> None:
    stuck = tmp_path / "stuck.flv"
    opened = threading.Event()
    real = disk._write_all

    def write_all(fh: FileIO, data: bytes | bytearray) -> None:
        if str(fh.name) == str(stuck):
            opened.wait(60)  # the test fails long before: this only frees the thread
        real(fh, data)

    shared = Disk(threads=4)
    a, b = shared.queue(), shared.queue()
    fa, fb = a.create(stuck), b.create(tmp_path / "fine.flv")
    await all_idle([a, b])
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(disk, "_write_all", write_all)
            a.write(fa, b"a")  # the same tick's job, a's batch first: b's is stolen from it
            b.write(fb, b"b")
            await all_idle([b])
            assert fb.path.read_bytes() == b"b"
            assert not a.idle
            opened.set()
            await a.drain()
    finally:
        opened.set()
        a.close(fa)
        b.close(fb)
        await all_idle([a, b])
    assert fa.path.read_bytes() == b"a"
