"""The recorder's adapter to media: a recording session over HTTP-FLV, the takeover of a
segment a dead (or frozen) recorder left raw, and the join of a job's segments into one file.
The handlers see it as ``Media``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol

import httpx

from services.recorder.ffmpeg import container_of, finalise
from services.recorder.flv import trim_partial_tail
from services.recorder.join import join_segments
from services.recorder.session import RecordingSession
from services.recorder.session_types import Progress, RecordedSegment, SessionResult, StreamLookup
from shared.events import RecordingOptions
from shared.jobs import SegmentEntry
from shared.logging import get_logger
from shared.paths import inside
from shared.tiktok import StreamCandidate

log = get_logger(__name__)


@dataclass(frozen=True)
class SessionPlan:
    """One recording session of a job, with the hooks that report what it does."""

    lookup: Callable[[], Awaitable[StreamLookup]]
    open_path: Callable[[int, datetime], Path]
    stop: asyncio.Event
    on_file: Callable[[RecordedSegment], Awaitable[None]]
    on_progress: Callable[[Progress], Awaitable[None]]
    on_stream: Callable[[StreamCandidate], Awaitable[None]]
    duration: float | None = None
    # The TikTok client's own HTTP client when the job goes through a proxy, else None.
    http: httpx.AsyncClient | None = None
    # Which engine records it (services/recorder/engines), and what the tlr-cli engine needs
    # to run the upstream CLI: the room, its host, the job's options (proxy sealed).
    engine: str = "native"
    job_id: str = ""
    room_id: str = ""
    unique_id: str | None = None
    options: RecordingOptions = field(default_factory=RecordingOptions)


class Media(Protocol):
    """Records sessions, finalises what a dead holder left, joins a job's segments
    (``FfmpegMedia``). ``container`` is a job's ``options.format``."""

    async def record(self, plan: SessionPlan) -> SessionResult: ...

    async def take_over(
        self, entry: SegmentEntry, token: int, container: str | None = None
    ) -> SegmentEntry | None: ...

    async def join(self, segments: Sequence[SegmentEntry], container: str) -> list[SegmentEntry]:
        """The files joined from runs of ``segments`` (see join.py); [] when none."""
        ...

    async def remove(self, paths: Sequence[str]) -> None:
        """Delete these files of a job (relative paths), e.g. segments once joined."""
        ...


class FfmpegMedia:
    """Sessions pull FLV with httpx and remux with ``ffmpeg``; files live under ``root``."""

    def __init__(
        self,
        *,
        root: Path,
        ffmpeg: str,
        http: httpx.AsyncClient,
        read_timeout: float,
        progress_interval: float,
    ) -> None:
        self.root = root.resolve()
        self.ffmpeg = ffmpeg
        self.http = http
        self.read_timeout = read_timeout
        self.progress_interval = progress_interval

    async def record(self, plan: SessionPlan) -> SessionResult:
        session = RecordingSession(
            lookup=plan.lookup,
            http=plan.http or self.http,
            open_path=plan.open_path,
            ffmpeg=self.ffmpeg,
            duration=plan.duration,
            read_timeout=self.read_timeout,
            stop=plan.stop,
            on_file=plan.on_file,
            on_progress=plan.on_progress,
            on_stream=plan.on_stream,
            progress_interval=self.progress_interval,
            container=container_of(plan.options.format),
        )
        return await session.run()

    async def take_over(
        self, entry: SegmentEntry, token: int, container: str | None = None
    ) -> SegmentEntry | None:
        """Finalise a segment its recorder left "recording" (in the job's ``container``):
        the final entry, or None when no file is behind it.

        The raw file is first moved aside under a name of this holder's (``token``): if the
        old holder was only frozen and wakes up, its own remux of the old path finds nothing
        and can neither overwrite nor delete the file made here.
        """
        raw = (self.root / entry.path).resolve()
        if not raw.is_relative_to(self.root):
            return None
        kind = container_of(container)
        done = raw.with_suffix(kind.suffix)
        if not raw.exists():
            # The old holder remuxed it before it lost the lease: list its file.
            if done.is_file() and done.stat().st_size > 0:
                size = done.stat().st_size
                return SegmentEntry(
                    path=self.relative(done), part=entry.part, size=size, state="final"
                )
            return None
        if raw.stat().st_size == 0:
            return None
        aside = raw
        if entry.state == "recording":  # its writer may only be frozen: move it aside first
            aside = raw.with_name(f"{raw.stem}.takeover-{token}{raw.suffix}")
            raw.rename(aside)
        cut = await asyncio.to_thread(trim_partial_tail, aside)
        if cut:
            log.info("recorder.partial_tag_trimmed", path=self.relative(aside), bytes=cut)
        result = await finalise(aside, ffmpeg=self.ffmpeg, container=kind)
        log.info("recorder.orphan_finalised", path=self.relative(result.path), ok=result.ok)
        return SegmentEntry(
            path=self.relative(result.path),
            part=entry.part,
            size=result.size,
            duration_s=result.duration_s,
            state="final" if result.ok else "raw",
        )

    async def join(self, segments: Sequence[SegmentEntry], container: str) -> list[SegmentEntry]:
        return await join_segments(self.root, segments, container_of(container), ffmpeg=self.ffmpeg)

    async def remove(self, paths: Sequence[str]) -> None:
        await asyncio.to_thread(_remove, self.root, paths)

    def relative(self, path: Path) -> str:
        return str(path.relative_to(self.root)) if path.is_absolute() else str(path)


def _remove(root: Path, paths: Sequence[str]) -> None:
    """Unlink each path that is inside ``root`` (blocking); one already gone is fine."""
    for rel in paths:
        path = inside(root, rel)
        if path is None:
            log.warning("recorder.remove_refused", path=rel)
            continue
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        log.info("recorder.segment_removed", path=rel)
