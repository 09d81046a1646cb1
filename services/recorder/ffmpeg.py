"""The ffmpeg edge: choose the binary, remux a raw FLV segment to its container (MP4 by
default), verify the result, read a file's stream parameters.

ffmpeg always runs from an argument list (never a shell), in its own process that is killed
and reaped if the awaiting coroutine is cancelled or times out: no child outlives a call.
Remuxes are bounded per event loop (``DEFAULT_REMUX_CONCURRENCY``, or a caller's semaphore).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import itertools
import os
import re
import shutil
import signal
import subprocess
import sys
import weakref
from dataclasses import dataclass
from pathlib import Path

from shared.errors import ErrorCode
from shared.logging import get_logger

log = get_logger(__name__)

DEFAULT_REMUX_CONCURRENCY = 4
# Stream copy moves tens of MB/s even on slow disks; the floor covers process start-up.
_MIN_TIMEOUT_S = 120.0
_TIMEOUT_BYTES_PER_S = 5 * 1024 * 1024
_STDERR_KEEP = 2000
_PROBE_TIMEOUT_S = 10.0
_OUT_TIME_US = re.compile(rb"^out_time_us=(\d+)\s*$", re.M)

_limiters: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary()
)


class FfmpegMissingError(RuntimeError):
    """No usable ffmpeg binary; ``code`` is ``ErrorCode.FFMPEG_MISSING``."""

    code = ErrorCode.FFMPEG_MISSING


# Enhanced FLV (HEVC, as TikTok serves its higher rungs) is demuxed and muxed from 6.1 on:
# Debian 12's 5.1 fails such a remux with "dimensions not set".
MIN_VERSION = (6, 1)
_VERSION_LINE = re.compile(rb"^ffmpeg version (\S+)")
_RELEASE = re.compile(r"^n?(\d+)\.(\d+)")
# A build from FFmpeg's master branch ("N-112233-gabc..."), newer than any release.
_MASTER_BUILD = re.compile(r"^N-\d+")


@dataclass(frozen=True, slots=True)
class FfmpegChoice:
    """The ffmpeg the recorder runs, where it came from, and why (logged at start)."""

    path: str
    version: str
    source: str  # "FFMPEG_BIN", "PATH" or "bundled"
    note: str | None = None


def ffmpeg_binary(explicit: str | None = None) -> str:
    """The path of :func:`choose_ffmpeg`'s choice."""
    return choose_ffmpeg(explicit).path


def choose_ffmpeg(explicit: str | None = None) -> FfmpegChoice:
    """The ffmpeg to run: ``explicit`` (a path or a name on PATH; the operator's word wins),
    else ``ffmpeg`` on PATH when it is 6.1 or newer, else the binary bundled with
    imageio-ffmpeg (also when the one on PATH is older), else an older one on PATH.

    Raises:
        FfmpegMissingError: ``explicit`` is not an executable, or no ffmpeg is found at all.
    """
    if explicit:
        found = shutil.which(explicit)
        if found is None:
            msg = f"FFMPEG_BIN {explicit!r} is not an executable file"
            raise FfmpegMissingError(msg)
        version = ffmpeg_version(found)
        note = None if is_capable(version) else _too_old(version)
        return FfmpegChoice(found, version, "FFMPEG_BIN", note)
    on_path = shutil.which("ffmpeg")
    path_version = ffmpeg_version(on_path) if on_path else ""
    if on_path and is_capable(path_version):
        return FfmpegChoice(on_path, path_version, "PATH")
    bundled = _bundled()
    if bundled is not None:
        note = f"ffmpeg on PATH ({on_path}) is {_too_old(path_version)}" if on_path else None
        return FfmpegChoice(bundled, ffmpeg_version(bundled), "bundled", note)
    if on_path:
        return FfmpegChoice(on_path, path_version, "PATH", _too_old(path_version))
    msg = "no ffmpeg: set FFMPEG_BIN, install ffmpeg, or install imageio-ffmpeg"
    raise FfmpegMissingError(msg)


def ffmpeg_version(path: str) -> str:
    """The version word of ``ffmpeg -version`` ("5.1.9-0+deb12u1"), or "" if it will not say."""
    try:
        mtime_ns = os.stat(path).st_mtime_ns
    except OSError:
        return ""
    return _probe_version(os.path.realpath(path), mtime_ns)


@functools.cache
def _probe_version(path: str, mtime_ns: int) -> str:  # noqa: ARG001  (part of the cache key)
    """One ``-version`` run per binary (and per change to it)."""
    try:
        run = subprocess.run(
            [path, "-hide_banner", "-version"],
            capture_output=True,
            timeout=_PROBE_TIMEOUT_S,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    match = _VERSION_LINE.match(run.stdout)
    return match[1].decode(errors="replace") if match else ""


def is_capable(version: str) -> bool:
    """True for 6.1 or newer, or a master-branch build; False for older or unknown words."""
    release = _RELEASE.match(version)
    if release:
        return (int(release[1]), int(release[2])) >= MIN_VERSION
    return bool(_MASTER_BUILD.match(version))


def _too_old(version: str) -> str:
    wanted = ".".join(map(str, MIN_VERSION))
    return f"version {version or 'unknown'}, older than {wanted}: HEVC lives will not remux"


def _bundled() -> str | None:
    try:
        import imageio_ffmpeg  # only needed when no capable system ffmpeg is installed

        return str(imageio_ffmpeg.get_ffmpeg_exe())
    except (ImportError, RuntimeError):
        return None


def remux_limiter() -> asyncio.Semaphore:
    """The default bound on concurrent remuxes of the running event loop."""
    loop = asyncio.get_running_loop()
    limiter = _limiters.get(loop)
    if limiter is None:
        limiter = _limiters[loop] = asyncio.Semaphore(DEFAULT_REMUX_CONCURRENCY)
    return limiter


@dataclass(frozen=True, slots=True)
class Container:
    """A container the files are written in (``options.format``)."""

    name: str
    suffix: str
    muxer: str  # ffmpeg's -f
    options: tuple[str, ...] = ()
    # False for flv: the segment as received is the file (checked, not rewritten).
    remuxed: bool = True


MP4 = Container("mp4", ".mp4", "mp4", ("-movflags", "+faststart"))
CONTAINERS = {
    c.name: c
    for c in (
        MP4,
        Container("mkv", ".mkv", "matroska"),
        Container("ts", ".ts", "mpegts"),
        Container("flv", ".flv", "flv", remuxed=False),
    )
}


def container_of(name: str | None) -> Container:
    """The container ``name`` (a job's ``options.format``); MP4 for None or one this
    recorder does not know (a newer gateway's), which is logged."""
    found = CONTAINERS.get(name or MP4.name)
    if found is None:
        log.warning("recorder.format_unknown", format=name, used=MP4.name)
        return MP4
    return found


@dataclass(frozen=True, slots=True)
class RemuxResult:
    """Outcome of one remux. On failure ``path`` is the raw FLV, which is kept."""

    ok: bool
    path: Path
    size: int
    duration_s: float | None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class _Run:
    returncode: int
    stdout: bytes
    stderr: bytes


def timeout_for(size: int) -> float:
    """Seconds one ffmpeg run over ``size`` bytes may take (stream copy or a check)."""
    return max(_MIN_TIMEOUT_S, size / _TIMEOUT_BYTES_PER_S)


async def finalise(
    src_flv: Path,
    *,
    ffmpeg: str,
    container: Container = MP4,
    limiter: asyncio.Semaphore | None = None,
) -> RemuxResult:
    """A closed raw segment made final in ``container``: remuxed next to it under the
    container's suffix (:func:`remux`), or for flv checked where it is (:func:`check`)."""
    if not container.remuxed:
        return await check(src_flv, ffmpeg=ffmpeg, limiter=limiter)
    dst = src_flv.with_suffix(container.suffix)
    return await remux(src_flv, dst, ffmpeg=ffmpeg, container=container, limiter=limiter)


async def remux(
    src_flv: Path,
    dst: Path,
    *,
    ffmpeg: str,
    container: Container = MP4,
    limiter: asyncio.Semaphore | None = None,
    timeout: float | None = None,
) -> RemuxResult:
    """Stream-copy ``src_flv`` into ``dst`` in ``container``, verify it, then delete the FLV.

    The file is written to a temp file of this call's own and linked into place only if
    ``dst`` does not exist, so ``dst`` is either absent or complete, and a file someone
    else made there is never replaced nor deleted (a recorder that woke up after losing
    its lease must not touch its successor's files). Verification demuxes the whole file
    (``-c copy -f null``): exit 0 and no error output, and yields the duration. On any
    failure what this call made is removed, the raw FLV is kept and returned. Cancellation
    kills and reaps ffmpeg, then propagates.

    Args:
        timeout: seconds for each ffmpeg run; default scales with the file size.
    """
    # Every file-system call here runs on a worker thread: a stalled disk (NFS, EFS) must
    # stall this remux, not the event loop that renews every recording's lease.
    size = await asyncio.to_thread(_size, src_flv)
    error, duration = await write_verified(
        ["-i", str(src_flv)],
        dst,
        ffmpeg=ffmpeg,
        container=container,
        size=size,
        limiter=limiter,
        timeout=timeout,
    )
    if error is not None:
        log.warning("recorder.remux_failed", src=str(src_flv), error=error)
        return RemuxResult(ok=False, path=src_flv, size=size, duration_s=None, error=error)
    await asyncio.to_thread(_unlink, src_flv)
    size = await asyncio.to_thread(_size, dst)
    return RemuxResult(ok=True, path=dst, size=size, duration_s=duration)


async def check(
    path: Path,
    *,
    ffmpeg: str,
    limiter: asyncio.Semaphore | None = None,
    timeout: float | None = None,
) -> RemuxResult:
    """Verify ``path`` where it is, as :func:`remux` verifies its result (flv: the segment
    is the file); ``ok`` False with the reason when it does not demux cleanly."""
    size = await asyncio.to_thread(_size, path)
    if timeout is None:
        timeout = timeout_for(size)
    async with limiter or remux_limiter():
        error, duration = await _verify(path, ffmpeg, timeout)
    if error is not None:
        log.warning("recorder.check_failed", path=str(path), error=error)
    return RemuxResult(ok=error is None, path=path, size=size, duration_s=duration, error=error)


async def write_verified(
    inputs: list[str],
    dst: Path,
    *,
    ffmpeg: str,
    container: Container,
    size: int,
    limiter: asyncio.Semaphore | None = None,
    timeout: float | None = None,
) -> tuple[str | None, float | None]:
    """Write ``dst`` in ``container`` by stream copy of every stream of ``inputs`` (ffmpeg
    input arguments, e.g. ``["-i", path]``), through a temp file of this call's and a link
    that never replaces a file, then verify it. (error, duration): on error nothing this
    call made is left. ``size``: of the input, for the default timeout."""
    if timeout is None:
        timeout = timeout_for(size)
    tmp = dst.with_name(f"{dst.name}.{os.getpid()}-{next(_tmp_ids)}.tmp")
    installed = [False]
    async with limiter or remux_limiter():
        try:
            error, duration = await _write_and_verify(
                inputs, dst, tmp, ffmpeg, container, timeout, installed
            )
        except BaseException:
            _unlink(tmp)
            raise
    if error is not None:
        await asyncio.to_thread(_unlink, tmp)
        if installed[0]:
            await asyncio.to_thread(_unlink, dst)
    return error, duration


async def _write_and_verify(
    inputs: list[str],
    dst: Path,
    tmp: Path,
    ffmpeg: str,
    container: Container,
    timeout: float,
    installed: list[bool],
) -> tuple[str | None, float | None]:
    """(error, duration): error is None when ``dst`` is in place and verified;
    ``installed[0]`` says whether this call put ``dst`` there."""
    try:
        await asyncio.to_thread(dst.parent.mkdir, parents=True, exist_ok=True)
    except OSError as exc:
        return f"cannot create {dst.parent}: {exc}", None
    convert = [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *inputs]
    convert += ["-map", "0", "-c", "copy", *container.options, "-f", container.muxer, str(tmp)]
    run = await run_ffmpeg(convert, timeout=timeout)
    if run.returncode != 0:
        return _failure("remux", run), None
    try:
        await asyncio.to_thread(_install, tmp, dst)
    except FileExistsError:
        return f"{dst.name} exists already: not replaced", None
    except OSError as exc:
        return f"cannot move the remuxed file into place: {exc}", None
    installed[0] = True
    return await _verify(dst, ffmpeg, timeout)


async def _verify(path: Path, ffmpeg: str, timeout: float) -> tuple[str | None, float | None]:
    """(error, duration) of demuxing all of ``path``: an error unless exit 0 and silent."""
    verify = [ffmpeg, "-hide_banner", "-nostdin", "-v", "error", "-progress", "pipe:1"]
    verify += ["-nostats", "-i", str(path), "-map", "0", "-c", "copy", "-f", "null", "-"]
    run = await run_ffmpeg(verify, timeout=timeout)
    if run.returncode != 0 or run.stderr.strip():
        return _failure("verify", run), None
    return None, parse_out_time(run.stdout)


# One stream of ffmpeg's input banner: "Stream #0:0[0x1](und): Video: h264 (High) (avc1 /
# 0x31637661), yuv420p(progressive), 1280x720 [SAR 1:1 DAR 16:9], 30 fps, ..."
_STREAM_LINE = re.compile(r"^\s*Stream #\d+:\d+\S*: (Video|Audio): (.*)$", re.M)
_WORD = re.compile(r"^[\w-]+")
_SIZE = re.compile(r"^\d{1,5}x\d{1,5}")
_PROFILE = re.compile(r"^[\w-]+ \(([^)]*)\)")
_DURATION = re.compile(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)")
_FPS = re.compile(r", (\d+(?:\.\d+)?) fps\b")


@dataclass(frozen=True, slots=True)
class Probe:
    """What ffmpeg's banner says of a file (the bundled ffmpeg comes without ffprobe)."""

    # What must match for files to be joined by stream copy, one entry per stream: codec,
    # profile, pixel format and frame size of video; codec, profile, rate, channels of audio.
    params: tuple[str, ...]
    duration: float | None  # of the container, seconds (to 10 ms)
    fps: float | None  # of the video, when it says


async def probe(path: Path, *, ffmpeg: str) -> Probe | None:
    """The file's :class:`Probe`; None when ffmpeg finds no audio or video in it."""
    run = await run_ffmpeg(
        [ffmpeg, "-hide_banner", "-nostdin", "-i", str(path)], timeout=_PROBE_TIMEOUT_S
    )
    text = run.stderr.decode(errors="replace")
    found = _STREAM_LINE.findall(text)
    if not found:
        return None
    duration = _DURATION.search(text)
    rates = (_FPS.search(rest) for kind, rest in found if kind == "Video")
    fps = next((m for m in rates if m), None)
    return Probe(
        params=tuple(_describe(kind, rest) for kind, rest in found),
        duration=(
            int(duration[1]) * 3600 + int(duration[2]) * 60 + float(duration[3])
            if duration
            else None
        ),
        fps=float(fps[1]) if fps and float(fps[1]) > 0 else None,
    )


def _describe(kind: str, rest: str) -> str:
    fields = _top_level_fields(rest)
    codec = _WORD.match(fields[0])
    profile = _PROFILE.match(fields[0])
    words = [kind, codec[0] if codec else fields[0], profile[1] if profile else ""]
    if kind == "Video":
        pixfmt = _WORD.match(fields[1]) if len(fields) > 1 else None
        size = next((m[0] for m in map(_SIZE.match, fields[1:]) if m), "")
        words += [pixfmt[0] if pixfmt else "", size]
    else:
        words += fields[1:3]  # "44100 Hz", "stereo"
    return " ".join(words)


def _top_level_fields(text: str) -> list[str]:
    """``text`` split at the commas that are not inside () or []."""
    fields, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth = max(0, depth - 1)
        elif ch == "," and depth == 0:
            fields.append(text[start:i].strip())
            start = i + 1
    fields.append(text[start:].strip())
    return fields


def _install(tmp: Path, dst: Path) -> None:
    """Move ``tmp`` to ``dst`` unless ``dst`` exists (FileExistsError): never replace a file
    this process did not make."""
    try:
        os.link(tmp, dst)  # fails if dst exists
    except FileExistsError:
        raise
    except OSError:
        # A filesystem without hard links: claim the name exclusively, then replace our own.
        os.close(os.open(dst, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        os.replace(tmp, dst)
        return
    _unlink(tmp)


_tmp_ids = itertools.count()


def parse_out_time(progress: bytes) -> float | None:
    """The last ``out_time_us`` of ffmpeg ``-progress`` output, in seconds."""
    found = _OUT_TIME_US.findall(progress)
    return int(found[-1]) / 1e6 if found else None


def _failure(step: str, run: _Run) -> str:
    detail = run.stderr.decode(errors="replace").strip()[-_STDERR_KEEP:]
    return f"ffmpeg {step} exited {run.returncode}: {detail or 'no output'}"


async def run_ffmpeg(argv: list[str], *, timeout: float) -> _Run:
    """Run ``argv`` (no shell) and collect its output; a timeout yields returncode -9.

    The child is killed and reaped on timeout and on cancellation.
    """
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            preexec_fn=_die_with_parent,
        )
    except OSError as exc:
        return _Run(returncode=-1, stdout=b"", stderr=f"cannot run {argv[0]}: {exc}".encode())
    try:
        async with asyncio.timeout(timeout):
            stdout, stderr = await proc.communicate()
    except TimeoutError:
        await _kill(proc)
        return _Run(returncode=-9, stdout=b"", stderr=f"timed out after {timeout:.0f}s".encode())
    except BaseException:
        await _kill(proc)
        raise
    assert proc.returncode is not None
    return _Run(returncode=proc.returncode, stdout=stdout, stderr=stderr)


def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL it when the recorder dies. Without it an ffmpeg of
    a SIGKILLed recorder goes on remuxing the file a takeover is remuxing too."""
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


# The same for the other children of the recorder (the tlr-cli engine's CLI).
die_with_parent = _die_with_parent


_PR_SET_PDEATHSIG = 1
# Loaded in the parent: the child, between fork and exec, must not look anything up.
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None


async def _kill(proc: asyncio.subprocess.Process) -> None:
    """Kill and reap ``proc``, even if cancelled again meanwhile (re-raised afterwards)."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    waiter = asyncio.ensure_future(proc.wait())
    cancelled = False
    while not waiter.done():
        try:
            await asyncio.shield(waiter)
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _unlink(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)
