"""Recording engines: ``native`` (media.FfmpegMedia, the recorder's own HTTP-FLV path) and
``tlr-cli`` (the upstream tiktok-live-recorder CLI as a subprocess, tlr_cli.py), chosen per
job by ``options.engine``, else RECORDER_ENGINE. Both are a ``Media``: a session in, a
SessionResult out, its files listed, remuxed and taken over the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

from services.recorder.media import Media, SessionPlan
from services.recorder.session_types import SessionResult
from shared.errors import ErrorCode
from shared.jobs import SegmentEntry


class Engines:
    """The ``Media`` the handlers see: each session goes to the engine its plan names.

    Without ffmpeg (``ffmpeg_missing`` says why) no engine can make a playable file: every
    session fails at once with FFMPEG_MISSING, so the job says so instead of the recorder
    refusing to start.
    """

    def __init__(
        self, engines: dict[str, Media], default: str, ffmpeg_missing: str | None = None
    ) -> None:
        self.engines = engines
        self.default = default
        self.ffmpeg_missing = ffmpeg_missing

    async def record(self, plan: SessionPlan) -> SessionResult:
        if self.ffmpeg_missing is not None:
            return failed(ErrorCode.FFMPEG_MISSING, self.ffmpeg_missing)
        engine = self.engines.get(plan.engine or self.default)
        if engine is None:
            return failed(ErrorCode.VALIDATION_ERROR, f"unknown engine {plan.engine!r}")
        return await engine.record(plan)

    async def take_over(
        self, entry: SegmentEntry, token: int, container: str | None = None
    ) -> SegmentEntry | None:
        # Whichever engine wrote it, what is left is a raw FLV segment at its listed path.
        return await self.engines["native"].take_over(entry, token, container)

    async def join(self, segments: Sequence[SegmentEntry], container: str) -> list[SegmentEntry]:
        # Whichever engine wrote them, the segments are files of the same kind.
        return await self.engines["native"].join(segments, container)

    async def remove(self, paths: Sequence[str]) -> None:
        await self.engines["native"].remove(paths)


def failed(code: ErrorCode, message: str) -> SessionResult:
    """A session that recorded nothing and ended with ``code``."""
    return SessionResult(
        files=[], reason="error", error_code=code, reconnects=0, stalls=0, bytes=0, error=message
    )
