"""A ``Media`` that plays a script: segments opened, hooks called, a pause a test can step."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from services.recorder.media import SessionPlan
from services.recorder.session_types import (
    Progress,
    Reason,
    RecordedSegment,
    SessionResult,
    StreamLookup,
)
from shared.errors import ErrorCode
from shared.jobs import SegmentEntry

STARTED_AT = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


@dataclass(frozen=True)
class Take:
    """One segment of the session: its size, media time, and whether its remux worked."""

    size: int = 1000
    duration_s: float = 2.0
    remuxed: bool = True


class FakeMedia:
    """``record`` looks the stream up, reports it, then for each take: opens its path, reports
    progress and the finished file (in ``options.format`` when remuxed, else the raw path).
    Like ``RecordingSession`` it stops opening files once ``plan.stop`` is set (reason "stopped",
    the open segment still finished) and ends with reason "error" / INTERNAL, keeping what it
    recorded, when ``open_path`` raises. No file is written: paths are only names.

    ``pause_after_open=n``: after opening take ``n`` the session sets ``paused`` and waits for
    ``resume`` (or ``plan.stop``), so a test can act while it records.

    ``take_over`` answers from ``takeovers`` (by the entry's path; absent: None, no file).
    """

    def __init__(
        self,
        takes: list[Take] | None = None,
        *,
        ending: Reason = "ended",
        error_code: ErrorCode | None = None,
        error: str | None = None,
        pause_after_open: int | None = None,
    ) -> None:
        self.takes = [Take()] if takes is None else takes
        self.ending = ending
        self.error_code = error_code
        self.error = error
        self.pause_after_open = pause_after_open
        self.paused = asyncio.Event()
        self.resume = asyncio.Event()
        self.plans: list[SessionPlan] = []
        self.lookups: list[StreamLookup] = []
        self.opened: list[Path] = []
        self.open_error: Exception | None = None
        self.results: list[SessionResult] = []
        self.takeovers: dict[str, SegmentEntry | None] = {}
        self.taken: list[tuple[str, int]] = []
        self.taken_as: list[str | None] = []
        self.joins: list[tuple[str, list[str]]] = []
        self.removed: list[str] = []

    async def record(self, plan: SessionPlan) -> SessionResult:
        self.plans.append(plan)
        result = await self._play(plan)
        self.results.append(result)
        return result

    async def take_over(
        self, entry: SegmentEntry, token: int, container: str | None = None
    ) -> SegmentEntry | None:
        self.taken.append((entry.path, token))
        self.taken_as.append(container)
        return self.takeovers.get(entry.path)

    async def join(self, segments: Sequence[SegmentEntry], container: str) -> list[SegmentEntry]:
        """One joined file of every final segment given (two or more): ``<first>-joined``."""
        final = sorted((s for s in segments if s.state == "final"), key=lambda s: s.part)
        self.joins.append((container, [s.path for s in segments]))
        if len(final) < 2:
            return []
        stem, _, suffix = final[0].path.rpartition(".")
        return [
            SegmentEntry(
                path=f"{stem}-joined.{suffix}",
                part=final[0].part,
                size=sum(s.size for s in final),
                duration_s=sum(s.duration_s or 0 for s in final),
                state="final",
                joined_from=tuple(s.part for s in final),
            )
        ]

    async def remove(self, paths: Sequence[str]) -> None:
        self.removed.extend(paths)

    async def _play(self, plan: SessionPlan) -> SessionResult:
        try:
            found = await plan.lookup()
        except Exception as exc:
            if getattr(exc, "retryable", True) is not False:
                raise
            # As RecordingSession: a lookup error that says so ends the session on its code.
            code = getattr(exc, "code", ErrorCode.INTERNAL)
            return _result([], "error", code, str(exc))
        self.lookups.append(found)
        if found.status != "live" or not found.urls:
            return _result([], "error", ErrorCode.LIVE_OFFLINE, "the live was not on")
        await plan.on_stream(found.urls[0])
        files: list[RecordedSegment] = []
        received, recorded = 0, 0.0
        for index, take in enumerate(self.takes):
            if plan.stop.is_set():
                break
            try:
                raw = plan.open_path(index, STARTED_AT + timedelta(seconds=recorded))
            except Exception as exc:  # as RecordingSession: what was recorded is kept
                self.open_error = exc
                return _result(files, "error", ErrorCode.INTERNAL, repr(exc), received)
            self.opened.append(raw)
            await asyncio.sleep(0)  # the listing open_path started lands before any byte
            if index == self.pause_after_open:
                await self._hold(plan.stop)
            received += take.size
            recorded += take.duration_s
            progress = Progress(
                bytes=received,
                bitrate=8 * take.size / take.duration_s,
                recorded_s=recorded,
                segments=index + 1,
                reconnects=0,
                stalls=0,
            )
            await plan.on_progress(progress)
            segment = RecordedSegment(
                path=raw.with_suffix(f".{plan.options.format}") if take.remuxed else raw,
                size=take.size,
                duration_s=take.duration_s,
                part=index,
                remuxed=take.remuxed,
            )
            files.append(segment)
            await plan.on_file(segment)
        if plan.stop.is_set():
            return _result(files, "stopped", None, None, received)
        return _result(files, self.ending, self.error_code, self.error, received)

    async def _hold(self, stop: asyncio.Event) -> None:
        self.paused.set()
        waits = [asyncio.ensure_future(self.resume.wait()), asyncio.ensure_future(stop.wait())]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()


def _result(
    files: list[RecordedSegment],
    reason: Reason,
    code: ErrorCode | None,
    error: str | None,
    received: int = 0,
) -> SessionResult:
    return SessionResult(
        files=files,
        reason=reason,
        error_code=code,
        reconnects=0,
        stalls=0,
        bytes=received,
        error=error,
    )
