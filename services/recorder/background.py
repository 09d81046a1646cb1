"""A session's background work: each closed segment made its final file, and its hooks."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Coroutine
from pathlib import Path
from typing import Any

from services.recorder import metrics
from services.recorder.ffmpeg import MP4, Container, finalise
from services.recorder.segmenter import SegmentInfo
from services.recorder.session_types import FileHook, RecordedSegment, SegmentHook
from shared.logging import get_logger

log = get_logger(__name__)

_HOOK_TIMEOUT_S = 30.0


class Background:
    """Starts finalising every segment the segmenter closes, runs hooks, and waits for (or
    cancels) all of it; ``files`` collects the final files as they come.

    Args:
        ffmpeg: the binary that remuxes (see ``ffmpeg.ffmpeg_binary``).
        limiter: bounds concurrent remuxes (None: one bound per event loop).
        on_segment_closed: awaited when a segment file is closed.
        on_file: awaited when a segment is final (remuxed or kept raw).
        container: what the final files are (``options.format``; flv: the segment itself).
    """

    def __init__(
        self,
        *,
        ffmpeg: str,
        limiter: asyncio.Semaphore | None,
        on_segment_closed: SegmentHook | None,
        on_file: FileHook | None,
        container: Container = MP4,
    ) -> None:
        self._ffmpeg = ffmpeg
        self._container = container
        self._limiter = limiter
        self._on_segment_closed = on_segment_closed
        self._on_file = on_file
        self._tasks: set[asyncio.Task[None]] = set()
        self._aborting = False
        self.files: list[RecordedSegment] = []

    def segment_closed(self, info: SegmentInfo) -> None:
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
            self.files.append(_raw(info, None))
            return
        if self._on_segment_closed is not None:  # apart, so a slow hook cannot delay the remux
            self.hook("on_segment_closed", self._on_segment_closed(info))
        self.spawn(self._finalise(info))

    def hook(self, name: str, awaitable: Awaitable[None]) -> asyncio.Task[None]:
        """Run a caller's hook in the background: bounded in time, its failure only logged."""
        return self.spawn(_call_hook(name, awaitable))

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def drain(self) -> None:
        """Wait for every remux and hook (they may start more while we wait)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def keep_raw(self) -> None:
        """From now on a closed segment is kept raw, not remuxed: the session is aborting."""
        self._aborting = True

    async def cancel(self) -> None:
        """Cancel every background task and reap it (a remux's ffmpeg is killed)."""
        tasks = set(self._tasks)
        for task in tasks:
            task.cancel()
        while any(not task.done() for task in tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait(tasks)
        for task in tasks:
            if not task.cancelled():
                task.exception()  # retrieved: nothing left to report

    async def _finalise(self, info: SegmentInfo) -> None:
        try:
            result = await finalise(
                info.path, ffmpeg=self._ffmpeg, container=self._container, limiter=self._limiter
            )
        except asyncio.CancelledError:
            self.files.append(_raw(info, "remux cancelled"))
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
        # Nothing reached the disk (it filled before the first flush): not a recording. On a
        # worker thread: a stat or unlink on a stalled disk must not hold up the event loop.
        if not segment.remuxed and await asyncio.to_thread(_drop_if_empty, segment, info.path):
            log.warning("recorder.segment_empty", part=info.index, path=str(info.path))
            return
        if not segment.remuxed:
            metrics.REMUX_FAILURES.inc()
        self.files.append(segment)
        log.info(
            "recorder.segment_final",
            part=segment.part,
            path=str(segment.path),
            remuxed=segment.remuxed,
            duration_s=segment.duration_s,
        )
        if self._on_file is not None:
            await _call_hook("on_file", self._on_file(segment))


async def _call_hook(name: str, awaitable: Awaitable[None]) -> None:
    try:
        async with asyncio.timeout(_HOOK_TIMEOUT_S):
            await awaitable
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("recorder.hook_failed", hook=name)


def _drop_if_empty(segment: RecordedSegment, raw: Path) -> bool:
    """Delete ``raw`` if ``segment`` holds nothing (or is gone); True if so."""
    try:
        if segment.path.stat().st_size:
            return False
    except OSError:
        pass
    with contextlib.suppress(OSError):
        raw.unlink(missing_ok=True)
    return True


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
