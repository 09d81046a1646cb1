"""A segment of which nothing reached the disk (it was full) is dropped, not listed."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from services.recorder.background import Background
from services.recorder.ffmpeg import ffmpeg_binary
from services.recorder.segmenter import SegmentInfo
from services.recorder.session_types import RecordedSegment


async def test_an_empty_segment_is_dropped_and_never_announced(tmp_path: Path) -> None:
    announced: list[RecordedSegment] = []

    async def on_file(segment: RecordedSegment) -> None:
        announced.append(segment)

    background = Background(
        ffmpeg=ffmpeg_binary(None), limiter=None, on_segment_closed=None, on_file=on_file
    )
    empty = tmp_path / "0.flv"
    empty.write_bytes(b"")
    # The segmenter counted what it was given (2.1 s, 256 KiB), but the write hit ENOSPC.
    info = SegmentInfo(
        index=0, path=empty, started_at=datetime.now(UTC), bytes=262_144, duration_ms=2101
    )
    background.segment_closed(info)
    await background.drain()
    assert background.files == []
    assert announced == []
    assert not empty.exists()
