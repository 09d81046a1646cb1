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

The pull and its watchdog are in stream.py; the remuxes and the hooks run in background.py.
"""

from __future__ import annotations

import asyncio
import contextlib

import httpx

from services.recorder.background import Background
from services.recorder.disk import Disk, shared_disk
from services.recorder.ffmpeg import MP4, Container
from services.recorder.segmenter import (
    DEFAULT_FLUSH_BYTES,
    Segmenter,
    SegmentInfo,
    SegmentWriteError,
)
from services.recorder.session_types import (
    FileHook,
    LookupFn,
    OpenPathFn,
    Progress,
    ProgressHook,
    Reason,
    SegmentHook,
    SessionResult,
    StreamHook,
    StreamLookup,
)
from services.recorder.stream import StreamPuller, Watch
from shared.errors import ErrorCode
from shared.logging import get_logger
from shared.tiktok.models import StreamCandidate

log = get_logger(__name__)

_ABORT_FLUSH_S = 5.0


class _Fatal(Exception):
    """The session cannot go on; ``code`` is the error it ends with."""

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
        open_path: ``(part index, started_at) -> Path`` of a segment's raw ``.flv``; the final
            file goes next to it with ``container``'s suffix (flv: the raw file is it).
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
        disk: runs the segment files' I/O off the event loop (default: the process's one).
        container: the container of the final files (``options.format``; default MP4).
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
        disk: Disk | None = None,
        container: Container = MP4,
    ) -> None:
        if read_timeout <= 0 or backoff_initial <= 0 or backoff_max < backoff_initial:
            msg = "read_timeout and backoff_initial must be > 0, backoff_max >= backoff_initial"
            raise ValueError(msg)
        if duration is not None and duration <= 0:
            msg = "duration must be > 0 (or None)"
            raise ValueError(msg)
        self._lookup = lookup
        self._lookup_timeout = lookup_timeout
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._give_up_after = give_up_after
        self._stop = stop if stop is not None else asyncio.Event()
        self._on_progress = on_progress
        self._on_stream = on_stream
        self._background = Background(
            ffmpeg=ffmpeg,
            limiter=remux_limiter,
            on_segment_closed=on_segment_closed,
            on_file=on_file,
            container=container,
        )
        self._segmenter = Segmenter(
            open_path,
            (disk if disk is not None else shared_disk()).queue(),
            on_close=self._background.segment_closed,
            flush_bytes=flush_bytes,
            budget_ms=None if duration is None else round(duration * 1000),
            max_segment_ms=None if max_segment_s is None else round(max_segment_s * 1000),
        )
        self._puller = StreamPuller(
            http=http,
            segmenter=self._segmenter,
            stop=self._stop,
            read_timeout=read_timeout,
            connect_timeout=connect_timeout,
            progress_interval=progress_interval,
            on_stream=self._stream_changed,
            on_tick=self._progress,
        )
        self._progress_task: asyncio.Task[None] | None = None
        self._started = False

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

    @property
    def reconnects(self) -> int:
        return self._puller.reconnects

    @property
    def stalls(self) -> int:
        return self._puller.stalls

    @property
    def bytes_received(self) -> int:
        return self._puller.bytes_received

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
                # Waits for every file to be on disk and closed: their remuxes start only then.
                await self._segmenter.aclose("end")
            except SegmentWriteError as exc:
                if code is None:
                    reason, code, error = "error", _write_error_code(exc), str(exc)
            self._puller.count_bytes()
            await self._background.drain()
        except BaseException:
            await self._abort()
            raise
        if reason == "ended" and not self._segmenter.closed:
            reason, code, error = "error", ErrorCode.LIVE_OFFLINE, "the live was not on"
        files = sorted(self._background.files, key=lambda f: f.part)
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

            conn = await self._puller.pull(found.urls)
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
        watch = Watch(self._stop, None)
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

    # --- hooks and abort -----------------------------------------------------------------

    def _stream_changed(self, candidate: StreamCandidate) -> None:
        if self._on_stream is not None:
            self._background.hook("on_stream", self._on_stream(candidate))

    def _progress(self, t: float) -> None:
        if self._on_progress is None:
            return
        if self._progress_task is not None and not self._progress_task.done():
            return
        progress = Progress(
            bytes=self.bytes_received,
            bitrate=self._puller.bitrate(t),
            recorded_s=self.recorded_s,
            segments=len(self._segmenter.closed),
            reconnects=self.reconnects,
            stalls=self.stalls,
        )
        self._progress_task = self._background.hook("on_progress", self._on_progress(progress))

    async def _abort(self) -> None:
        """run() is being cancelled: close the file, cancel and reap every background task."""
        self._background.keep_raw()
        try:
            # What is queued for the disk still reaches it (kept raw), but a stalled disk must
            # not hold up the cancellation for longer than this.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(_ABORT_FLUSH_S):
                    await self._segmenter.aclose("cancelled")
        finally:
            self._puller.count_bytes()
            await self._background.cancel()


class _Stopped(Exception):
    """The stop event was set during a lookup."""


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
