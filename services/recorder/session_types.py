"""What a RecordingSession exchanges with its caller: the lookup, the files, progress, result."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from services.recorder.segmenter import SegmentInfo
from shared.errors import ErrorCode
from shared.tiktok.models import StreamCandidate

Reason = Literal["ended", "duration", "stopped", "error"]


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
