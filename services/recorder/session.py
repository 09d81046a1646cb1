"""One live recording: look up the stream, pull HTTP-FLV, cut segments, remux them to MP4.

Pure asyncio: no thread and no process per stream (ffmpeg runs only to remux closed segments).

The loop::

    lookup -> ended:  finish (reason "ended"; LIVE_OFFLINE if nothing was ever recorded)
           -> paused: wait (backoff), look again; the recording stays open
           -> live:   GET the FLV, feed the segmenter until EOF / error / stall / stop / limit,
                      close the segment (its remux starts at once), then look up again

Guarantees:

- never hangs on a silent socket: no byte for ``read_timeout`` seconds is a stall, and the
  connection is dropped (httpx read timeout plus a monotonic watchdog of our own);
- a new file on every connection and on every codec/resolution change (see segmenter.py);
- ``stop`` (cancel, shutdown) ends the current connection at once and finishes cleanly:
  the open segment is closed and remuxed and ``run()`` returns ``reason="stopped"``;
- ``run()`` returns only once every remux has finished; if ``run()`` itself is cancelled,
  remuxes are cancelled too (their ffmpeg is killed and reaped) and raw FLVs stay on disk.

``duration`` counts recorded MEDIA time summed over every segment of this session (gaps
while disconnected or paused do not count), so the files add up to the requested length. It
is a total across reconnects, unlike the upstream CLI, which restarts its timer on each one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import httpx

from services.recorder import metrics
from services.recorder.ffmpeg import remux
from services.recorder.flv import FlvFormatError, FlvReader
from services.recorder.segmenter import (
    DEFAULT_FLUSH_BYTES,
    Segmenter,
    SegmentInfo,
    SegmentWriteError,
)
from shared.errors import ErrorCode
from shared.logging import get_logger
from shared.tiktok.models import StreamCandidate

log = get_logger(__name__)

Reason = Literal["ended", "duration", "stopped", "error"]
_HOOK_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class StreamLookup:
    """What the room looks like now. When live, ``candidates`` (HTTP-FLV URLs, best first)
    or a single ``url`` say where to pull from."""

    status: Literal["live", "paused", "ended"]
    url: str | None = None
    candidates: tuple[StreamCandidate, ...] = ()

    @property
    def urls(self) -> tuple[StreamCandidate, ...]:
        if self.candidates:
            return self.candidates
        return (StreamCandidate("unknown", self.url),) if self.url else ()


@dataclass(frozen=True, slots=True)
class RecordedSegment:
    """A finished file. ``remuxed`` False means ``path`` is the raw FLV (the remux failed)."""

    path: Path
    size: int
    duration_s: float | None
    part: int
    remuxed: bool
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Progress:
    """Periodic progress for job status."""

    bytes: int
    """Bytes received so far, all connections."""
    bitrate: float
    """Bits per second received over the last interval."""
    recorded_s: float
    segments: int
    reconnects: int
    stalls: int


@dataclass(frozen=True, slots=True)
class SessionResult:
    files: list[RecordedSegment]
    """In part order; MP4s, or raw FLVs where the remux failed."""
    reason: Reason
    error_code: ErrorCode | None
    reconnects: int
    stalls: int
    bytes: int
    """Bytes received from the CDN, all connections."""
    error: str | None = None
    """A human-readable cause when ``reason`` is ``error``."""


LookupFn = Callable[[], Awaitable[StreamLookup]]
OpenPathFn = Callable[[int, datetime], Path]
SegmentHook = Callable[[SegmentInfo], Awaitable[None]]
FileHook = Callable[[RecordedSegment], Awaitable[None]]
ProgressHook = Callable[[Progress], Awaitable[None]]
StreamHook = Callable[[StreamCandidate], Awaitable[None]]


@dataclass(slots=True)
class _Conn:
    """How one connection ended."""

    kind: Literal["eof", "stall", "stop", "limit", "http", "error"]
    media: bool = False
    status: int | None = None
    detail: str = ""

    @property
    def dead(self) -> bool:
        """The URL is not worth waiting for: it answered an error status, or closed (or
        failed) before any media. A listed rung can be dead while others play (StreamCap
        #120; upstream 7.7 counts a connection under ~4 KB as dead)."""
        return self.kind == "http" or (self.kind in ("eof", "error") and not self.media)


class _Watch:
    """Expires an ``asyncio.timeout`` block when the stream goes quiet or ``stop`` is set.

    The idle check is one timer per ``read_timeout`` (re-armed from ``last``), not one per
    chunk: the streaming loop only stores the time of the latest chunk in ``last``.
    """

    def __init__(self, stop: asyncio.Event, idle: float | None) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = stop
        self._idle = idle
        self._cm: asyncio.Timeout | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._waiter: asyncio.Task[Literal[True]] | None = None
        self.why: Literal["stall", "stop"] | None = None
        self.last = self._loop.time()

    def arm(self, cm: asyncio.Timeout) -> None:
        self._cm = cm
        self.last = self._loop.time()
        if self._idle is not None:
            self._handle = self._loop.call_at(self.last + self._idle, self._check)
        if self._stop.is_set():
            self._fire("stop")
        else:
            self._waiter = self._loop.create_task(self._stop.wait())
            self._waiter.add_done_callback(self._on_stop)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._waiter is not None:
            self._waiter.remove_done_callback(self._on_stop)
            self._waiter.cancel()
            self._waiter = None

    def _check(self) -> None:
        assert self._idle is not None
        due = self.last + self._idle
        if self._loop.time() >= due:
            self._handle = None
            self._fire("stall")
        else:
            self._handle = self._loop.call_at(due, self._check)

    def _on_stop(self, task: asyncio.Task[Literal[True]]) -> None:
        if not task.cancelled():
            self._fire("stop")

    def _fire(self, why: Literal["stall", "stop"]) -> None:
        if self.why is None and self._cm is not None:
            self.why = why
            self._cm.reschedule(self._loop.time())


class _Fatal(Exception):
    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class RecordingSession:
    """Records one live until it ends, ``duration`` is reached, or ``stop`` is set.

    Args:
        lookup: asks TikTok for the room's state and a fresh stream URL (called before every
            connection; an exception is a transient failure, unless it carries
            ``retryable = False``, in which case its ``code`` ends the session).
        http: shared client (proxy and cookies configured by the caller); not closed here.
        open_path: ``(part index, started_at) -> Path`` of a segment's raw ``.flv``; the MP4
            goes next to it with the ``.mp4`` suffix.
        ffmpeg: the binary (see ``ffmpeg.ffmpeg_binary``).
        duration: seconds of media to record in total, or None for the whole live.
        read_timeout: seconds without a byte before a connection counts as stalled.
        backoff_initial, backoff_max: delay before retrying after a failed connection or
            lookup and between lookups while paused; doubles, reset by a connection that
            delivered media.
        give_up_after: seconds without media (not counting paused time) before giving up with
            NETWORK_TIMEOUT (or the last lookup error's code).
        stop: set it to finish cleanly (reason "stopped").
        on_segment_closed: awaited (in the background) when a segment file is closed.
        on_file: awaited (in the background) when a segment is final (remuxed or kept raw).
        on_progress: awaited (in the background) every ``progress_interval`` seconds while
            data flows; skipped while the previous call is still running.
        on_stream: awaited (in the background) when media starts flowing from a candidate
            other than the last one that did: the quality really recorded.
        remux_limiter: bounds concurrent remuxes (default: one bound per event loop).
        max_segment_s: optionally split long lives into parts of about this length.
    """

    def __init__(
        self,
        *,
        lookup: LookupFn,
        http: httpx.AsyncClient,
        open_path: OpenPathFn,
        ffmpeg: str,
        duration: float | None = None,
        read_timeout: float = 10.0,
        connect_timeout: float = 10.0,
        lookup_timeout: float = 30.0,
        backoff_initial: float = 0.5,
        backoff_max: float = 10.0,
        give_up_after: float = 300.0,
        stop: asyncio.Event | None = None,
        on_segment_closed: SegmentHook | None = None,
        on_file: FileHook | None = None,
        on_progress: ProgressHook | None = None,
        on_stream: StreamHook | None = None,
        progress_interval: float = 5.0,
        remux_limiter: asyncio.Semaphore | None = None,
        max_segment_s: float | None = None,
        flush_bytes: int = DEFAULT_FLUSH_BYTES,
    ) -> None:
        if read_timeout <= 0 or backoff_initial <= 0 or backoff_max < backoff_initial:
            msg = "read_timeout and backoff_initial must be > 0, backoff_max >= backoff_initial"
            raise ValueError(msg)
        if duration is not None and duration <= 0:
            msg = "duration must be > 0 (or None)"
            raise ValueError(msg)
        self._lookup = lookup
        self._http = http
        self._ffmpeg = ffmpeg
        self._read_timeout = read_timeout
        self._lookup_timeout = lookup_timeout
        self._timeouts = httpx.Timeout(
            connect=connect_timeout, read=read_timeout, write=connect_timeout, pool=connect_timeout
        )
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._give_up_after = give_up_after
        self._stop = stop if stop is not None else asyncio.Event()
        self._on_segment_closed = on_segment_closed
        self._on_file = on_file
        self._on_progress = on_progress
        self._on_stream = on_stream
        self._streaming: StreamCandidate | None = None
        self._rounds = 0
        self._progress_interval = progress_interval
        self._limiter = remux_limiter
        self._segmenter = Segmenter(
            open_path,
            on_close=self._segment_closed,
            flush_bytes=flush_bytes,
            budget_ms=None if duration is None else round(duration * 1000),
            max_segment_ms=None if max_segment_s is None else round(max_segment_s * 1000),
        )
        self._tasks: set[asyncio.Task[None]] = set()
        self._progress_task: asyncio.Task[None] | None = None
        self._files: list[RecordedSegment] = []
        self._aborting = False
        self._started = False
        self._connections = 0
        self.reconnects = 0
        self.stalls = 0
        self.bytes_received = 0
        self._bytes_counted = 0  # part of bytes_received already added to the metric
        self._progress_mark = (0.0, 0)  # (loop time, bytes) of the last progress report

    # --- read-only state (for callers and tests) ----------------------------------------

    @property
    def stop_event(self) -> asyncio.Event:
        return self._stop

    @property
    def recorded_s(self) -> float:
        """Media seconds written so far (all segments)."""
        return self._segmenter.recorded_ms / 1000

    @property
    def segments_closed(self) -> int:
        return len(self._segmenter.closed)

    @property
    def current_segment(self) -> SegmentInfo | None:
        return self._segmenter.current

    # --- the loop ------------------------------------------------------------------------

    async def run(self) -> SessionResult:
        """Record until the live ends, the duration is reached, or stop is set."""
        if self._started:
            msg = "a RecordingSession runs once"
            raise RuntimeError(msg)
        self._started = True
        error: str | None = None
        code: ErrorCode | None = None
        try:
            try:
                reason = await self._loop()
            except _Fatal as exc:
                reason, code, error = "error", exc.code, str(exc)
            except SegmentWriteError as exc:
                reason, code, error = "error", _write_error_code(exc), str(exc)
            except Exception as exc:  # a bug, or open_path failed: keep what was recorded
                log.exception("recorder.session_crashed")
                reason, code, error = "error", ErrorCode.INTERNAL, repr(exc)
            try:
                self._segmenter.close("end")
            except SegmentWriteError as exc:
                if code is None:
                    reason, code, error = "error", _write_error_code(exc), str(exc)
            self._count_bytes()
            await self._drain()
        except BaseException:
            await self._abort()
            raise
        if reason == "ended" and not self._segmenter.closed:
            reason, code, error = "error", ErrorCode.LIVE_OFFLINE, "the live was not on"
        files = sorted(self._files, key=lambda f: f.part)
        log.info(
            "recorder.session_finished",
            reason=reason,
            error_code=code,
            files=len(files),
            raw_files=sum(not f.remuxed for f in files),
            reconnects=self.reconnects,
            stalls=self.stalls,
            bytes=self.bytes_received,
            recorded_s=round(self.recorded_s, 3),
        )
        return SessionResult(
            files=files,
            reason=reason,
            error_code=code,
            reconnects=self.reconnects,
            stalls=self.stalls,
            bytes=self.bytes_received,
            error=error,
        )

    async def _loop(self) -> Reason:
        loop = asyncio.get_running_loop()
        backoff = self._backoff_initial
        delay = 0.0
        alive_at = loop.time()  # last time media flowed or the room said "paused"
        last_error: BaseException | None = None
        while True:
            if delay > 0 and await self._sleep(delay):
                return "stopped"
            if self._stop.is_set():
                return "stopped"
            if loop.time() - alive_at > self._give_up_after:
                raise _give_up(last_error, self._give_up_after)
            try:
                found = await self._lookup_guarded()
            except _Stopped:
                return "stopped"
            except Exception as exc:
                if getattr(exc, "retryable", True) is False:
                    raise _Fatal(_code_of(exc, ErrorCode.INTERNAL), str(exc)) from exc
                last_error = exc
                log.warning("recorder.lookup_failed", error=repr(exc), retry_in=backoff)
                delay, backoff = backoff, self._next(backoff)
                continue
            if found.status == "ended":
                return "ended"
            if found.status == "paused" or not found.urls:
                if found.status == "paused":
                    alive_at = loop.time()
                    log.info("recorder.paused", retry_in=backoff)
                else:
                    log.warning("recorder.no_stream_url", retry_in=backoff)
                delay, backoff = backoff, self._next(backoff)
                continue

            conn = await self._pull(found.urls)
            if conn.kind == "stop":
                return "stopped"
            if conn.kind == "limit":
                return "duration"
            if conn.media:
                alive_at = loop.time()
                backoff = self._backoff_initial
            if conn.kind in ("eof", "stall") and conn.media:
                delay = 0.0  # look up at once: either the live ended or it goes on
            else:
                last_error = RuntimeError(conn.detail or conn.kind)
                delay, backoff = backoff, self._next(backoff)
            log.info(
                "recorder.connection_ended",
                kind=conn.kind,
                status=conn.status,
                detail=conn.detail,
                media=conn.media,
                retry_in=delay,
            )

    def _next(self, backoff: float) -> float:
        return min(backoff * 2, self._backoff_max)

    async def _sleep(self, delay: float) -> bool:
        """Wait ``delay`` seconds; True if stop was set meanwhile."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._stop.wait()
        return self._stop.is_set()

    async def _lookup_guarded(self) -> StreamLookup:
        watch = _Watch(self._stop, None)
        try:
            async with asyncio.timeout(self._lookup_timeout) as cm:
                watch.arm(cm)
                try:
                    return await self._lookup()
                finally:
                    watch.close()
        except TimeoutError:
            if watch.why == "stop":
                raise _Stopped from None
            raise

    async def _pull(self, candidates: tuple[StreamCandidate, ...]) -> _Conn:
        """Connect to the candidates in turn until one is not dead; how that one ended.

        A dead candidate is skipped for this connection only: the next lookup tries the
        list from the top again (a rung can come back).
        """
        if self._rounds:
            self.reconnects += 1
            metrics.RECONNECTS.inc()
        self._rounds += 1
        conn = _Conn("error", detail="no stream URL")
        for candidate in candidates:
            conn = await self._connect(candidate)
            self._segmenter.close(_close_reason(conn))
            if not conn.dead:
                return conn
            metrics.DEAD_STREAMS.inc()
            log.warning(
                "recorder.stream_dead",
                quality=candidate.quality,
                source=candidate.source,
                kind=conn.kind,
                status=conn.status,
                detail=conn.detail,
            )
            if self._stop.is_set():
                break
        return conn

    def _media_from(self, candidate: StreamCandidate) -> None:
        """Media flows from ``candidate``: say so when it is not the one it last came from."""
        if candidate == self._streaming:
            return
        self._streaming = candidate
        log.info("recorder.stream", quality=candidate.quality, source=candidate.source)
        if self._on_stream is not None:
            self._spawn(_call_hook("on_stream", self._on_stream(candidate)))

    async def _connect(self, candidate: StreamCandidate) -> _Conn:
        """Pull one HTTP-FLV response into the segmenter; report how it ended."""
        url = candidate.url
        self._connections += 1
        segmenter = self._segmenter
        segmenter.new_segment()
        reader = FlvReader()
        loop = asyncio.get_running_loop()
        now = loop.time
        watch = _Watch(self._stop, self._read_timeout)
        media = False
        next_progress = now() + self._progress_interval
        if self._connections == 1:
            self._progress_mark = (now(), 0)
        log.info("recorder.connecting", url=url.split("?", 1)[0], attempt=self._connections)
        try:
            async with asyncio.timeout(None) as cm:
                watch.arm(cm)
                try:
                    async with self._http.stream(
                        "GET", url, timeout=self._timeouts, follow_redirects=True
                    ) as response:
                        if response.status_code != httpx.codes.OK:
                            return _Conn("http", status=response.status_code)
                        async for chunk in response.aiter_bytes():
                            watch.last = t = now()
                            self.bytes_received += len(chunk)
                            tags = reader.feed(chunk)
                            if not tags:
                                continue
                            if reader.tags_out == len(tags):  # the first tags: header is known
                                assert reader.header is not None
                                segmenter.set_stream(reader.header)
                            write = segmenter.write
                            for tag in tags:
                                write(tag)
                            if not media and segmenter.current is not None:
                                media = True
                                self._media_from(candidate)
                            if segmenter.limit_reached:
                                return _Conn("limit", media=media)
                            if t >= next_progress:
                                next_progress = t + self._progress_interval
                                self._progress(t)
                finally:
                    watch.close()
        except TimeoutError:
            if watch.why == "stop":
                return _Conn("stop", media=media)
            if watch.why == "stall":
                return self._stalled(media, "watchdog")
            return _Conn("error", media=media, detail="timeout")
        except httpx.ReadTimeout:
            return self._stalled(media, "read timeout")
        except (httpx.HTTPError, httpx.InvalidURL, OSError, FlvFormatError) as exc:
            if isinstance(exc, SegmentWriteError):
                raise _Fatal(_write_error_code(exc), str(exc)) from exc
            return _Conn("error", media=media, detail=f"{type(exc).__name__}: {exc}")
        finally:
            self._count_bytes()
        return _Conn("eof", media=media)

    def _stalled(self, media: bool, how: str) -> _Conn:
        self.stalls += 1
        metrics.STALLS.inc()
        log.warning("recorder.stalled", how=how, read_timeout=self._read_timeout)
        return _Conn("stall", media=media, detail=how)

    # --- segments, remuxes and hooks -------------------------------------------------------

    def _segment_closed(self, info: SegmentInfo) -> None:
        """Segmenter callback (synchronous): start finalising the file in the background."""
        metrics.SEGMENTS.inc()
        log.info(
            "recorder.segment_closed",
            part=info.index,
            path=str(info.path),
            bytes=info.bytes,
            duration_s=info.duration_ms / 1000,
            reason=info.cut_reason,
        )
        if self._aborting:
            self._files.append(_raw(info, None))
            return
        if self._on_segment_closed is not None:  # apart, so a slow hook cannot delay the remux
            self._spawn(_call_hook("on_segment_closed", self._on_segment_closed(info)))
        self._spawn(self._finalise(info))

    async def _finalise(self, info: SegmentInfo) -> None:
        try:
            result = await remux(
                info.path, info.path.with_suffix(".mp4"), ffmpeg=self._ffmpeg, limiter=self._limiter
            )
        except asyncio.CancelledError:
            self._files.append(_raw(info, "remux cancelled"))
            raise
        except Exception as exc:  # a bug must not lose the file from the result
            log.exception("recorder.remux_crashed", path=str(info.path))
            segment = _raw(info, repr(exc))
        else:
            segment = RecordedSegment(
                path=result.path,
                size=result.size,
                duration_s=result.duration_s
                if result.duration_s is not None
                else info.duration_ms / 1000,
                part=info.index,
                remuxed=result.ok,
                error=result.error,
            )
        if not segment.remuxed:
            metrics.REMUX_FAILURES.inc()
        self._files.append(segment)
        log.info(
            "recorder.segment_final",
            part=segment.part,
            path=str(segment.path),
            remuxed=segment.remuxed,
            duration_s=segment.duration_s,
        )
        if self._on_file is not None:
            await _call_hook("on_file", self._on_file(segment))

    def _progress(self, t: float) -> None:
        self._count_bytes()
        if self._on_progress is None:
            return
        if self._progress_task is not None and not self._progress_task.done():
            return
        last_t, last_bytes = self._progress_mark
        self._progress_mark = (t, self.bytes_received)
        bitrate = (self.bytes_received - last_bytes) * 8 / (t - last_t) if t > last_t else 0.0
        progress = Progress(
            bytes=self.bytes_received,
            bitrate=bitrate,
            recorded_s=self.recorded_s,
            segments=len(self._segmenter.closed),
            reconnects=self.reconnects,
            stalls=self.stalls,
        )
        self._progress_task = self._spawn(_call_hook("on_progress", self._on_progress(progress)))

    def _count_bytes(self) -> None:
        new = self.bytes_received - self._bytes_counted
        if new:
            metrics.BYTES.inc(new)
            self._bytes_counted = self.bytes_received

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _drain(self) -> None:
        """Wait for every remux and hook (they may start more while we wait)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _abort(self) -> None:
        """run() is being cancelled: close the file, cancel and reap every background task."""
        self._aborting = True
        with contextlib.suppress(Exception):
            self._segmenter.close("cancelled")
        self._count_bytes()
        tasks = set(self._tasks)
        for task in tasks:
            task.cancel()
        while any(not task.done() for task in tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait(tasks)
        for task in tasks:
            if not task.cancelled():
                task.exception()  # retrieved: nothing left to report


class _Stopped(Exception):
    """The stop event was set during a lookup."""


async def _call_hook(name: str, awaitable: Awaitable[None]) -> None:
    try:
        async with asyncio.timeout(_HOOK_TIMEOUT_S):
            await awaitable
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("recorder.hook_failed", hook=name)


def _raw(info: SegmentInfo, error: str | None) -> RecordedSegment:
    size = 0
    with contextlib.suppress(OSError):
        size = info.path.stat().st_size
    return RecordedSegment(
        path=info.path,
        size=size,
        duration_s=info.duration_ms / 1000,
        part=info.index,
        remuxed=False,
        error=error,
    )


def _close_reason(conn: _Conn) -> str:
    return {"stop": "stopped", "limit": "duration"}.get(conn.kind, "disconnected")


def _code_of(exc: BaseException | None, default: ErrorCode) -> ErrorCode:
    code = getattr(exc, "code", None)
    return code if isinstance(code, ErrorCode) else default


def _give_up(last_error: BaseException | None, after: float) -> _Fatal:
    detail = f": {last_error}" if last_error is not None else ""
    return _Fatal(
        _code_of(last_error, ErrorCode.NETWORK_TIMEOUT),
        f"no media for {after:.0f}s{detail}",
    )


def _write_error_code(exc: SegmentWriteError) -> ErrorCode:
    return ErrorCode.DISK_FULL if exc.disk_full else ErrorCode.INTERNAL
