"""One file per live (``options.join``): runs of a job's final segments whose stream
parameters match, joined by stream copy with ffmpeg's concat demuxer.

A segment is cut at every reconnection, and at every resolution or codec change (see
segmenter.py). Segments of one run (consecutive parts, each final, the same codec, profile,
pixel format, frame size and audio format) are joined into ``<first segment>-joined.<ext>``
next to the first of them; a run of one segment is not copied. A change of parameters, or a
segment whose remux failed, starts a new run: a live with a resolution change gets one joined
file per resolution, each naming the parts it holds (``joined_from``), and a part in none of
them is one file already. Nothing is joined when the disk lacks the room for the copy.

The concat list never quotes a recording's own name: it names symlinks ``0000.mp4``,
``0001.mp4``... (portable characters only, as the demuxer's ``-safe 1`` requires) in a private
temp folder, each pointing at a segment checked to be a regular file inside RECORDINGS_DIR.

Each segment but the last is given a ``duration`` in the list: its own, rounded up to a whole
video frame. The next one then starts on the frame grid (and after both streams of this one
end): started half a frame off, its frames land two on one tick of a 1 ms timebase (Matroska)
and a decoder sees timestamps that do not increase.
"""

from __future__ import annotations

import asyncio
import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from services.recorder.ffmpeg import Container, Probe, probe, timeout_for, write_verified
from shared.jobs import SegmentEntry
from shared.logging import get_logger
from shared.paths import inside, regular_file

log = get_logger(__name__)

JOINED = "-joined"
# Free space kept besides the copy: a join must not be what fills the disk for the recordings
# still running on it.
SPARE_BYTES = 256 * 1024 * 1024
_MAX_NAMES = 1000
# ffmpeg's banner gives a duration to 10 ms: a segment's end may be that much later.
_DURATION_SLACK_S = 0.011


@dataclass(frozen=True, slots=True)
class _Piece:
    entry: SegmentEntry
    path: Path  # absolute, checked inside the root
    probe: Probe


async def join_segments(
    root: Path, segments: Sequence[SegmentEntry], container: Container, *, ffmpeg: str
) -> list[SegmentEntry]:
    """The joined files made from ``segments`` (a job's files; its joined ones are skipped),
    one per run of two or more that can be joined, in part order. A run that cannot be
    joined (no room, ffmpeg failed) is logged and left out: its segments stay as they are.
    ``root``: RECORDINGS_DIR, resolved; the segments' paths are relative to it."""
    runs = await _runs(root, segments, container, ffmpeg)
    joined = []
    for run in runs:
        entry = await _join_run(root, run, container, ffmpeg)
        if entry is not None:
            joined.append(entry)
    return joined


def join_budget(segments: Sequence[SegmentEntry]) -> float:
    """Seconds a join of ``segments`` may take: a write and a check of their whole size, and
    a look at each."""
    size = sum(s.size for s in segments)
    return 2 * timeout_for(size) + 10.0 * len(segments)


async def _runs(
    root: Path, segments: Sequence[SegmentEntry], container: Container, ffmpeg: str
) -> list[list[_Piece]]:
    """Runs of consecutive final segments in ``container`` with equal stream parameters."""
    runs: list[list[_Piece]] = []
    current: list[_Piece] = []
    last: tuple[str, ...] | None = None
    for entry in sorted(segments, key=lambda s: s.part):
        if entry.joined_from:
            continue
        path = await asyncio.to_thread(_checked, root, entry, container)
        found = None if path is None else await probe(path, ffmpeg=ffmpeg)
        params = found.params if found is not None else None
        if path is None or params is None or params != last:
            if len(current) > 1:
                runs.append(current)
            if current and path is not None and params is not None:
                log.info(
                    "recorder.join_split",
                    part=entry.part,
                    before=" | ".join(last or ()),
                    after=" | ".join(params),
                )
            current = []
        last = params
        if path is not None and found is not None:
            current.append(_Piece(entry, path, found))
    if len(current) > 1:
        runs.append(current)
    return runs


def _checked(root: Path, entry: SegmentEntry, container: Container) -> Path | None:
    """The segment's file if it is final, in ``container`` and a regular file inside
    ``root`` (blocking: stats)."""
    if entry.state != "final" or not entry.path.endswith(container.suffix):
        return None
    path = inside(root, entry.path)
    if path is None or regular_file(path) is None:
        return None
    return path


async def _join_run(
    root: Path, run: list[_Piece], container: Container, ffmpeg: str
) -> SegmentEntry | None:
    parts = tuple(p.entry.part for p in run)
    size = sum(p.entry.size for p in run)
    first = run[0].path
    free = await asyncio.to_thread(_free_bytes, first.parent)
    if free < size + SPARE_BYTES:
        log.warning("recorder.join_skipped", parts=parts, reason="disk", bytes=size, free=free)
        return None
    dst = await asyncio.to_thread(_vacant, first, container.suffix)
    if dst is None:
        log.warning("recorder.join_skipped", parts=parts, reason="no free name")
        return None
    folder = await asyncio.to_thread(tempfile.mkdtemp, prefix="tlr-join-")
    try:
        listing = await asyncio.to_thread(_concat_list, Path(folder), run, container.suffix)
        error, duration = await write_verified(
            ["-f", "concat", "-safe", "1", "-i", str(listing)],
            dst,
            ffmpeg=ffmpeg,
            container=container,
            size=size,
        )
    finally:
        await asyncio.to_thread(shutil.rmtree, folder, True)
    if error is not None:
        log.warning("recorder.join_failed", parts=parts, error=error)
        return None
    found = await asyncio.to_thread(regular_file, dst)
    entry = SegmentEntry(
        path=str(dst.relative_to(root)),
        part=parts[0],
        size=found[0] if found else 0,
        duration_s=duration,
        state="final",
        joined_from=parts,
    )
    log.info("recorder.joined", path=entry.path, parts=parts, duration_s=duration)
    return entry


def _concat_list(folder: Path, run: list[_Piece], suffix: str) -> Path:
    """The concat demuxer's list in ``folder``: symlinks of portable names to the segments,
    so no recording's name (a title, a user's) is ever quoted into it."""
    lines = []
    for n, piece in enumerate(run):
        name = f"{n:04d}{suffix}"
        os.symlink(piece.path, folder / name)
        lines.append(f"file '{name}'\n")
        duration = _on_frame_grid(piece.probe)
        if duration is not None and n < len(run) - 1:
            lines.append(f"duration {duration:.6f}\n")
    listing = folder / "list.txt"
    listing.write_text("ffconcat version 1.0\n" + "".join(lines))
    return listing


def _on_frame_grid(found: Probe) -> float | None:
    """The segment's duration rounded up to a whole frame of its video (None: unknown, the
    demuxer then takes the container's)."""
    if found.duration is None:
        return None
    end = found.duration + _DURATION_SLACK_S
    if found.fps is None:
        return end
    return math.ceil(end * found.fps) / found.fps


def _vacant(first: Path, suffix: str) -> Path | None:
    """``<first's stem>-joined<suffix>`` beside it, or ``-joined-2``... if that is taken."""
    stem = first.name.removesuffix(suffix)
    for n in range(1, _MAX_NAMES):
        tail = JOINED if n == 1 else f"{JOINED}-{n}"
        candidate = first.with_name(f"{stem}{tail}{suffix}")
        if not os.path.lexists(candidate):
            return candidate
    return None


def _free_bytes(folder: Path) -> int:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return 0
