"""Thumbnails: one JPEG per recorded file, a keyframe from about 10 % into it, made by ffmpeg.

A file's thumbnail lives at a path derived from the file's (``.thumbnails/<path>.jpg`` under
RECORDINGS_DIR: a hidden folder, so a rebuild never indexes it) and, once the file is in S3,
beside it (``<key>.jpg``). The indexer makes it when a recording finishes (and lists it); the
uploader makes it too if it gets there first, so it can upload it with the file. Both write a
temporary file of their own and link it into place only if none is there: whoever is first
wins, the other finds it made, and nobody ever sees half a JPEG.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
from pathlib import Path, PurePosixPath
from typing import Protocol

from shared.paths import inside, normalize, regular_file

THUMBNAILS_DIR = ".thumbnails"
SUFFIX = ".jpg"
AT_FRACTION = 0.10  # how far into the file the keyframe is looked for
TIMEOUT_S = 30.0  # one frame of a local file; more means ffmpeg is stuck


def thumbnail_path(relative: str) -> str:
    """Where the thumbnail of the recorded file ``relative`` (as indexed) lives, relative to
    RECORDINGS_DIR."""
    return str(PurePosixPath(THUMBNAILS_DIR) / f"{relative}{SUFFIX}")


def thumbnail_key(file_key: str) -> str:
    """The S3 key of a thumbnail: beside its file's object."""
    return f"{file_key}{SUFFIX}"


def find_ffmpeg(explicit: str | None = None) -> str | None:
    """``explicit`` (FFMPEG_BIN: a path or a name on PATH), else ``ffmpeg`` on PATH, else the
    binary imageio-ffmpeg bundles; None when there is none. Any version decodes one frame."""
    if explicit:
        return shutil.which(explicit)
    found = shutil.which("ffmpeg")
    if found is not None:
        return found
    try:
        import imageio_ffmpeg  # an optional fallback, as for the recorder

        return str(imageio_ffmpeg.get_ffmpeg_exe())
    except (ImportError, RuntimeError):
        return None


def thumbnail_argv(ffmpeg: str, source: Path, target: Path, duration_s: float | None) -> list[str]:
    """ffmpeg's arguments (a list: never a shell) for one JPEG of ``source`` at full size.

    ``-ss`` before ``-i`` seeks the input, which is fast whatever the file's length; with
    ``-noaccurate_seek`` and only keyframes decoded, the frame is the keyframe at or before the
    point (a file with a single keyframe still yields one).
    """
    at = max(0.0, (duration_s or 0.0) * AT_FRACTION)
    return [
        ffmpeg,
        "-nostdin",
        "-hide_banner",
        "-v",
        "error",
        "-skip_frame",
        "nokey",
        "-noaccurate_seek",
        "-ss",
        f"{at:.3f}",
        "-i",
        str(source),
        "-map",
        "0:v:0",
        "-frames:v",
        "1",
        "-q:v",
        "3",
        "-f",
        "image2",
        "-update",
        "1",
        "-y",
        str(target),
    ]


async def make_thumbnail(
    ffmpeg: str, source: Path, target: Path, duration_s: float | None, *, timeout: float = TIMEOUT_S
) -> bool:
    """Make ``target`` from ``source`` unless it exists; True when it exists afterwards.

    A file ffmpeg cannot read (no video stream, damaged) gets no thumbnail: False, never an
    exception. The child is killed and reaped on timeout and on cancellation.
    """
    if await asyncio.to_thread(target.is_file):
        return True
    await asyncio.to_thread(target.parent.mkdir, parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{secrets.token_hex(4)}.part")
    try:
        proc = await asyncio.create_subprocess_exec(
            *thumbnail_argv(ffmpeg, source, partial, duration_s),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
    except OSError:
        return False
    try:
        code = await _wait(proc, timeout)
        if code != 0 or not await asyncio.to_thread(_non_empty, partial):
            return False
        return await asyncio.to_thread(_link_if_absent, partial, target)
    finally:
        with contextlib.suppress(OSError):
            await asyncio.to_thread(partial.unlink, missing_ok=True)


async def _wait(proc: asyncio.subprocess.Process, timeout: float) -> int | None:
    """The child's exit code; None after a timeout. Killed and reaped on timeout or cancel."""
    try:
        async with asyncio.timeout(timeout):
            return await proc.wait()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        return None
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await asyncio.shield(proc.wait())
        raise


def _non_empty(path: Path) -> bool:
    try:
        return path.stat().st_size > 0
    except OSError:
        return False


def _link_if_absent(partial: Path, target: Path) -> bool:
    """Put ``partial`` at ``target`` unless another maker did first (then theirs stays)."""
    try:
        os.link(partial, target)
    except FileExistsError:
        pass
    except OSError:
        return False
    return True


class Thumbnails(Protocol):
    """What the indexer and the uploader ask of a thumbnail maker (faked in handler tests)."""

    async def make(self, relative: str, duration_s: float | None) -> Path | None: ...


class Thumbnailer:
    """Makes the thumbnails of recorded files under ``root`` (the indexer's and uploader's)."""

    def __init__(self, ffmpeg: str, root: Path) -> None:
        self.ffmpeg = ffmpeg
        self.root = root

    async def make(self, relative: str, duration_s: float | None) -> Path | None:
        """The thumbnail of ``relative`` (made now unless it was), or None when it cannot be:
        the file is not a regular file inside ``root``, or ffmpeg finds no frame in it."""
        found = await asyncio.to_thread(self._paths, relative)
        if found is None:
            return None
        source, target = found
        made = await make_thumbnail(self.ffmpeg, source, target, duration_s)
        return target if made else None

    def _paths(self, relative: str) -> tuple[Path, Path] | None:
        """(file, thumbnail), both inside ``root``; None for a symlink or a path leading out."""
        norm = normalize(relative)
        if norm is None:
            return None
        source = inside(self.root, norm)
        target = inside(self.root, thumbnail_path(norm))
        if source is None or target is None or regular_file(source) is None:
            return None
        return source, target
