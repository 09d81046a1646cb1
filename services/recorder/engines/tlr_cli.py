"""The tlr-cli engine: the upstream tiktok-live-recorder CLI run as a subprocess.

Around it, what the native engine guarantees and the CLI does not:

- a private run folder (mode 0700, removed after): a copy of its ``src`` made of symlinks,
  its ``cookies.json`` (the job's cookies), its log file, its working folder; its output
  goes to a hidden folder under RECORDINGS_DIR;
- its output file is read as it grows and split by our Segmenter into segment files
  (a new one at each FLV header it appends after a reconnection, at each resolution
  change), each remuxed and checked by our ffmpeg as the native engine does; a job lists
  them the same way, and a recorder that dies leaves them to a take-over like native ones;
- a read watchdog: no growth of its output for READ_TIMEOUT x TLR_STALL_FACTOR and its whole
  process group gets SIGTERM, then SIGKILL (no ffmpeg child left); if it had recorded and
  the room is still live, it is run again (a stall is a reconnect, not the end);
- cancel and shutdown: SIGTERM to the group; what it wrote is kept and remuxed by us;
- once it logs "Recording finished" its file is complete: it is stopped before its own
  conversion (which would stream-copy the joined FLV into one broken MP4);
- its end mapped to an error code from its exit status and its log lines (``cli_log``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from services.recorder.background import Background
from services.recorder.disk import shared_disk
from services.recorder.engines import failed, process_group
from services.recorder.engines.checkout import CheckoutError, mirror_src, open_checkout
from services.recorder.engines.cli_args import cli_argv, cli_env, write_cookies
from services.recorder.engines.cli_log import classify
from services.recorder.engines.flv_split import FlvSplitter
from services.recorder.ffmpeg import container_of
from services.recorder.media import Media, SessionPlan
from services.recorder.segmenter import Segmenter, SegmentWriteError
from services.recorder.session_types import Progress, Reason, SessionResult
from services.recorder.settings import RecorderSettings
from shared.errors import ErrorCode
from shared.jobs import SegmentEntry
from shared.logging import get_logger, redact_text
from shared.secrets import SecretBox, SecretError
from shared.tiktok.cookies import CookiesError, load_cookies

log = get_logger(__name__)

WORK_DIR = ".tlr-cli"  # under RECORDINGS_DIR: hidden, so the indexer never lists it
_CHUNK = 1 << 20
_POLL_S = 0.25
_LOOKUP_TIMEOUT_S = 30.0
_MAX_RESTARTS = 20
_KEEP_LINES = 200
_FINISHED = re.compile(r"Recording finished:")


@dataclass
class _Run:
    """One run of the CLI: how it ended and what it gave."""

    why: str | None = None  # stop, limit, stall, finished; None: it exited by itself
    returncode: int = 0
    bytes: int = 0
    lines: collections.deque[str] = field(
        default_factory=lambda: collections.deque(maxlen=_KEEP_LINES)
    )


class TlrCliEngine:
    """Records a session by running the upstream CLI from TLR_ROOT (see the module doc)."""

    def __init__(
        self,
        *,
        settings: RecorderSettings,
        ffmpeg: str | None,
        native: Media,
        progress_interval: float,
    ) -> None:
        self.settings = settings
        self.root = settings.recordings_dir.resolve()
        self.ffmpeg = ffmpeg
        self.native = native
        self.progress_interval = progress_interval
        self.stall_after = settings.read_timeout * settings.tlr_stall_factor
        self._secrets = SecretBox(settings.secret_key) if settings.secret_key else None

    async def take_over(
        self, entry: SegmentEntry, token: int, container: str | None = None
    ) -> SegmentEntry | None:
        # Its segments are our Segmenter's files, finalised exactly as the native ones.
        return await self.native.take_over(entry, token, container)

    async def join(self, segments: Sequence[SegmentEntry], container: str) -> list[SegmentEntry]:
        return await self.native.join(segments, container)

    async def remove(self, paths: Sequence[str]) -> None:
        await self.native.remove(paths)

    async def record(self, plan: SessionPlan) -> SessionResult:
        if self.ffmpeg is None:
            return failed(ErrorCode.FFMPEG_MISSING, "no ffmpeg on this recorder")
        s = self.settings
        try:
            checkout = await asyncio.to_thread(
                open_checkout, s.tlr_root, s.tlr_python, s.tlr_pin, override=s.tlr_pin_override
            )
        except CheckoutError as exc:
            return failed(exc.code, str(exc))
        try:
            proxy = self._proxy(plan)
            cookies = None
            if plan.options.cookies:
                cookies = await asyncio.to_thread(load_cookies, plan.options.cookies, s.cookies_dir)
        except (CookiesError, SecretError) as exc:
            return failed(ErrorCode.VALIDATION_ERROR, str(exc))
        private = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="tlr-cli-"))
        out = self.root / WORK_DIR / private.name
        try:
            await asyncio.to_thread(_prepare, checkout.src, private, out, self.ffmpeg, cookies)
            session = _Session(self, plan, checkout.python, private, out, proxy)
            return await session.run()
        finally:
            await asyncio.to_thread(_remove, private, out)

    def _proxy(self, plan: SessionPlan) -> str | None:
        if plan.options.proxy is None:
            return None
        if self._secrets is None:
            msg = "options.proxy is sealed but this process has no SECRET_KEY"
            raise SecretError(msg)
        return self._secrets.unseal(plan.options.proxy)


class _Session:
    """The runs of the CLI for one session, their output split into our segments."""

    def __init__(
        self,
        engine: TlrCliEngine,
        plan: SessionPlan,
        python: Path,
        private: Path,
        out: Path,
        proxy: str | None,
    ) -> None:
        self.engine = engine
        self.plan = plan
        self.python = python
        self.private = private
        self.out = out
        self.proxy = proxy
        assert engine.ffmpeg is not None
        self.background = Background(
            ffmpeg=engine.ffmpeg,
            limiter=None,
            on_segment_closed=None,
            on_file=plan.on_file,
            container=container_of(plan.options.format),
        )
        budget = None if plan.duration is None else round(plan.duration * 1000)
        self.segmenter = Segmenter(
            plan.open_path,
            shared_disk().queue(),
            on_close=self.background.segment_closed,
            budget_ms=budget,
        )
        self.splitter = FlvSplitter(self.segmenter)
        self.bytes = 0
        self.stalls = 0
        self.runs = 0
        self._progress_at = 0.0
        self._progress: asyncio.Task[None] | None = None

    async def run(self) -> SessionResult:
        reason: Reason = "ended"
        code: ErrorCode | None = None
        error: str | None = None
        try:
            try:
                reason, code, error = await self._runs()
            except SegmentWriteError as exc:
                reason, code, error = "error", _write_error_code(exc), str(exc)
            except Exception as exc:  # a bug, or open_path refused (lease): keep what we have
                log.exception("recorder.cli_session_crashed")
                reason, code, error = "error", ErrorCode.INTERNAL, repr(exc)
            try:
                self.splitter.finish()
                await self.segmenter.aclose("end")
            except SegmentWriteError as exc:
                if code is None:
                    reason, code, error = "error", _write_error_code(exc), str(exc)
            await self.background.drain()
        except BaseException:
            self.background.keep_raw()
            with contextlib.suppress(Exception):
                await self.segmenter.aclose("cancelled")
            await self.background.cancel()
            raise
        files = sorted(self.background.files, key=lambda f: f.part)
        if code is None and reason == "ended" and not files:
            code, error = ErrorCode.LIVE_OFFLINE, "the live was not on"
        if code is not None:
            reason = "error"
        log.info(
            "recorder.cli_finished",
            reason=reason,
            error_code=code,
            files=len(files),
            runs=self.runs,
            stalls=self.stalls,
            bytes=self.bytes,
            connections=self.splitter.headers,
            dropped_bytes=self.splitter.dropped_bytes,
        )
        return SessionResult(
            files=files,
            reason=reason,
            error_code=code,
            reconnects=max(0, self.splitter.headers - 1),
            stalls=self.stalls,
            bytes=self.bytes,
            error=error,
        )

    async def _runs(self) -> tuple[Reason, ErrorCode | None, str | None]:
        """Run the CLI, again after a stall while the room is live; how the session ends."""
        while True:
            before = self.bytes
            run = await self._run_once()
            media = self.bytes > before
            if run.why == "stop":
                return "stopped", None, None
            if run.why == "limit" or self.segmenter.limit_reached:
                return "duration", None, None
            if run.why == "stall":
                self.stalls += 1
                if media and self.runs <= _MAX_RESTARTS and await self._still_live():
                    self.segmenter.new_segment("stall")
                    continue
                if media:
                    return "ended", None, None
                msg = f"the upstream CLI wrote nothing for {self.engine.stall_after:.0f}s"
                return "error", ErrorCode.NETWORK_TIMEOUT, msg
            returncode = 0 if run.why == "finished" else run.returncode
            end = classify(returncode, list(run.lines), media=self.bytes > 0)
            return ("ended" if end.code is None else "error"), end.code, end.message

    async def _still_live(self) -> bool:
        try:
            async with asyncio.timeout(_LOOKUP_TIMEOUT_S):
                found = await self.plan.lookup()
        except Exception as exc:  # TikTok away: the stall ends the session with what it has
            log.warning("recorder.cli_lookup_failed", error=repr(exc))
            return False
        return found.status in ("live", "paused") and not self.plan.stop.is_set()

    async def _run_once(self) -> _Run:
        plan, engine = self.plan, self.engine
        self.runs += 1
        remaining = None
        if plan.duration is not None:
            remaining = max(1.0, plan.duration - self.segmenter.recorded_ms / 1000)
        run_out = self.out / f"run-{self.runs}"
        await asyncio.to_thread(run_out.mkdir, mode=0o700, parents=True)
        argv = cli_argv(
            self.python,
            room_id=plan.room_id or None,
            user=plan.unique_id,
            output=run_out,
            duration=remaining,
            proxy=self.proxy,
        )
        env = cli_env(self.private, self.private / "bin", engine.settings.tlr_pass_env)
        run = _Run()
        try:
            proc = await process_group.spawn(argv, cwd=self.private / "src", env=env)
        except OSError as exc:  # its Python vanished since the checkout was opened
            run.returncode = -1
            run.lines.append(f"cannot start the CLI: {exc}")
            return run
        log.info("recorder.cli_started", pid=proc.pid, run=self.runs, job_id=plan.job_id)
        reader = asyncio.create_task(self._read_lines(proc, run))
        stopper: asyncio.Task[None] | None = None
        file: BinaryIO | None = None
        loop = asyncio.get_running_loop()
        grew_at = loop.time()
        try:
            while True:
                if file is None:
                    file = await asyncio.to_thread(_open_output, run_out)
                data = await asyncio.to_thread(file.read, _CHUNK) if file else b""
                if data:
                    grew_at = loop.time()
                    await self._feed(data, run)
                    if self.segmenter.limit_reached and run.why is None:
                        run.why, stopper = "limit", _stop(proc)
                    continue
                if proc.returncode is not None:
                    break
                if run.why is None:
                    if plan.stop.is_set():
                        run.why, stopper = "stop", _stop(proc)
                    elif _finished(run):  # its file is complete: no conversion of ours
                        run.why, stopper = "finished", _stop(proc)
                    elif loop.time() - grew_at > engine.stall_after:
                        log.warning("recorder.cli_stalled", seconds=engine.stall_after)
                        run.why, stopper = "stall", _stop(proc)
                await _wait_any(proc, plan.stop, _POLL_S)
        finally:
            if stopper is None:
                stopper = _stop(proc)
            await stopper
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            if file is not None:
                await asyncio.to_thread(file.close)
        run.returncode = proc.returncode if proc.returncode is not None else -1
        log.info(
            "recorder.cli_exited",
            returncode=run.returncode,
            why=run.why,
            bytes=run.bytes,
            job_id=plan.job_id,
        )
        return run

    async def _feed(self, data: bytes, run: _Run) -> None:
        run.bytes += len(data)
        self.bytes += len(data)
        self.splitter.feed(data)
        if self.segmenter.backlogged:
            await self.segmenter.drain()
        now = asyncio.get_running_loop().time()
        if now - self._progress_at >= self.engine.progress_interval:
            self._progress_at = now
            if self._progress is None or self._progress.done():
                progress = Progress(
                    bytes=self.bytes,
                    bitrate=0.0,
                    recorded_s=self.segmenter.recorded_ms / 1000,
                    segments=len(self.segmenter.closed),
                    reconnects=max(0, self.splitter.headers - 1),
                    stalls=self.stalls,
                )
                hook = self.plan.on_progress(progress)
                self._progress = self.background.hook("on_progress", hook)

    async def _read_lines(self, proc: asyncio.subprocess.Process, run: _Run) -> None:
        """Its output, line by line: kept for ``classify``, logged without secrets."""
        assert proc.stdout is not None
        while True:
            try:
                raw = await proc.stdout.readline()
            except ValueError:  # a line over the stream's limit: skip what is buffered
                continue
            if not raw:
                return
            line = redact_text(raw.decode(errors="replace").rstrip())
            if line:
                run.lines.append(line)
                log.debug("recorder.cli_line", line=line[:300])


def _write_error_code(exc: SegmentWriteError) -> ErrorCode:
    return ErrorCode.DISK_FULL if exc.disk_full else ErrorCode.INTERNAL


def _finished(run: _Run) -> bool:
    return any(_FINISHED.search(line) for line in run.lines)


def _stop(proc: asyncio.subprocess.Process) -> asyncio.Task[None]:
    return asyncio.create_task(process_group.stop_group(proc))


async def _wait_any(proc: asyncio.subprocess.Process, stop: asyncio.Event, timeout: float) -> None:
    """Until the process exits, ``stop`` is set, or ``timeout`` passes."""
    waits = [asyncio.ensure_future(proc.wait()), asyncio.ensure_future(stop.wait())]
    try:
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()


def _prepare(
    src: Path, private: Path, out: Path, ffmpeg: str, cookies: dict[str, str] | None
) -> None:
    """The run folder (blocking): the copy of ``src``, its cookies, our ffmpeg first on PATH."""
    mirror_src(src, private / "src")
    write_cookies(private / "src" / "cookies.json", cookies)
    (private / "bin").mkdir(mode=0o700)
    (private / "bin" / "ffmpeg").symlink_to(ffmpeg)
    out.mkdir(mode=0o700, parents=True)


def _open_output(folder: Path) -> BinaryIO | None:
    """The FLV it writes (``TK_<user>_<time>_flv.mp4``), once it exists."""
    found = sorted(folder.glob("*_flv.mp4"))
    return found[0].open("rb") if found else None


def _remove(private: Path, out: Path) -> None:
    shutil.rmtree(private, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
