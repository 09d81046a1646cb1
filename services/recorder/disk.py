"""Segment-file I/O (mkdir, create, write, close, unlink) on worker threads, ordered per session."""

from __future__ import annotations

import asyncio
import contextlib
import errno
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from io import FileIO
from pathlib import Path

from shared.logging import get_logger

log = get_logger(__name__)

# Threads are started only when every existing one is busy, so the bound costs nothing while
# disks are fast: it only caps how many sessions a stalled disk can hold up at once (past it,
# other sessions' writes queue behind them; the event loop never does).
DEFAULT_THREADS = 32
# Unwritten bytes a session may queue before its pull waits for the disk: about 8 s of a
# 2 Mbit/s live, so a disk hiccup costs no reading, and a stalled disk costs bounded memory.
DEFAULT_MAX_PENDING = 2 * 1024 * 1024

Then = Callable[[], None]


class SegmentWriteError(OSError):
    """Writing a segment failed (disk full, permissions...); ``errno`` is the OS error."""

    @property
    def disk_full(self) -> bool:
        return self.errno in (errno.ENOSPC, errno.EDQUOT)


class SegmentFile:
    """One segment file. ``path`` is the one asked for until the file exists, then the one
    really created (a ``-N`` variant when the name was taken)."""

    __slots__ = ("created", "fh", "path")

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fh: FileIO | None = None
        self.created = False


class _Op:
    __slots__ = ("data", "discard", "file", "kind", "then")

    def __init__(
        self,
        kind: str,
        file: SegmentFile,
        data: bytes | bytearray = b"",
        *,
        discard: bool = False,
        then: Then | None = None,
    ) -> None:
        self.kind = kind
        self.file = file
        self.data = data
        self.discard = discard
        self.then = then


class WriteQueue:
    """One session's file operations, run in the order given, off the event loop.

    The methods return at once (the caller's loop thread never touches the disk); each ``then``
    callback runs on the loop once its operation is done, in order. Operations queued while a
    batch is on a worker thread go together in the next batch: one thread hop per batch. After
    the first failure, creates and writes are skipped (no file with a hole in it), closes still
    run, and :attr:`error` holds the failure for the caller to raise.

    Without an executor every operation runs at once in the caller's thread (tools and tests
    that drive a Segmenter without an event loop).
    """

    def __init__(
        self, executor: ThreadPoolExecutor | None = None, max_pending: int = DEFAULT_MAX_PENDING
    ) -> None:
        self._executor = executor
        self.max_pending = max_pending
        self._ops: list[_Op] = []
        self._busy = False  # a batch is on a worker thread
        self._failed = False  # worker side: set by the failing op, read by the next ones
        self._waiters: list[asyncio.Future[None]] = []
        self.pending = 0
        """Bytes handed to write() and not yet on disk (or dropped after a failure)."""
        self.error: SegmentWriteError | None = None

    @property
    def backlogged(self) -> bool:
        """The caller should ``await drain(max_pending)``: too much queued, or a failure."""
        return self.pending > self.max_pending or self.error is not None

    @property
    def idle(self) -> bool:
        return not self._busy and not self._ops

    def create(self, path: Path, then: Callable[[SegmentFile], None] | None = None) -> SegmentFile:
        """Create ``path`` (and its folders) exclusively, with a ``-N`` suffix if taken."""
        file = SegmentFile(path)
        self._submit(_Op("create", file, then=None if then is None else lambda: then(file)))
        return file

    def write(self, file: SegmentFile, data: bytes | bytearray) -> None:
        """Append ``data`` (the queue owns it from now on: never modify it afterwards)."""
        self._submit(_Op("write", file, data))

    def close(self, file: SegmentFile, *, discard: bool = False, then: Then | None = None) -> None:
        """Close the file after its writes; ``discard`` deletes it (if this queue created it)."""
        self._submit(_Op("close", file, discard=discard, then=then))

    async def drain(self, limit: int | None = None) -> None:
        """Wait until at most ``limit`` bytes are pending (None: until every operation, closes
        included, is done). Does not raise: the caller checks :attr:`error`."""
        while (not self.idle) if limit is None else self.pending > limit:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter

    # --- internals ---------------------------------------------------------------------

    def _submit(self, op: _Op) -> None:
        if self._executor is None:
            self._fail(self._run(op))
            if op.then is not None:
                op.then()
            return
        self.pending += len(op.data)
        self._ops.append(op)
        if not self._busy:
            self._start()

    def _start(self) -> None:
        batch, self._ops = self._ops, []
        self._busy = True
        assert self._executor is not None
        self._executor.submit(self._work, batch, asyncio.get_running_loop())

    def _work(self, batch: list[_Op], loop: asyncio.AbstractEventLoop) -> None:
        """Worker thread: run the batch, then hand the outcome back to the loop."""
        error: SegmentWriteError | None = None
        try:
            for op in batch:  # every op runs: after a failure, closes still must
                failed = self._run(op)
                error = error or failed
        except BaseException as exc:  # a bug: the loop side must still learn the batch ended
            error = error or SegmentWriteError(errno.EIO, f"segment I/O crashed: {exc!r}")
            self._failed = True
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(self._done, batch, error)

    def _done(self, batch: list[_Op], error: SegmentWriteError | None) -> None:
        """Loop thread: account for a finished batch, start the next, run the callbacks."""
        self._busy = False
        self.pending -= sum(len(op.data) for op in batch)
        self._fail(error)
        if self._ops:
            self._start()
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()
        for op in batch:
            if op.then is not None:
                try:
                    op.then()
                except Exception:  # one broken callback must not stop the others
                    log.exception("recorder.segment_callback_failed", path=str(op.file.path))

    def _fail(self, error: SegmentWriteError | None) -> None:
        if error is not None and self.error is None:
            self.error = error

    def _run(self, op: _Op) -> SegmentWriteError | None:
        """Run one operation in the current thread; its failure, if any."""
        file = op.file
        try:
            if op.kind == "close":
                _close(file, discard=op.discard)
            elif self._failed:
                pass  # after a failure nothing more is written: no file with a hole
            elif op.kind == "create":
                _create(file)
            elif file.fh is not None:
                _write_all(file.fh, op.data)
        except SegmentWriteError as exc:
            self._failed = True
            return exc
        except OSError as exc:
            self._failed = True
            return SegmentWriteError(exc.errno, f"{op.kind} {file.path}: {exc}")
        return None


class Disk:
    """The process's segment-file writer: one bounded thread pool, one queue per session."""

    def __init__(
        self, threads: int = DEFAULT_THREADS, max_pending: int = DEFAULT_MAX_PENDING
    ) -> None:
        self._threads = threads
        self._max_pending = max_pending
        self._executor: ThreadPoolExecutor | None = None

    def queue(self) -> WriteQueue:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self._threads, thread_name_prefix="segment-io")
        return WriteQueue(self._executor, self._max_pending)


_shared: Disk | None = None


def shared_disk() -> Disk:
    """The per-process writer every session uses unless given another."""
    global _shared
    if _shared is None:
        _shared = Disk()
    return _shared


def _create(file: SegmentFile) -> None:
    path = file.path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        candidate = path
        for n in range(1, 1000):
            try:
                file.fh = FileIO(candidate, "xb")  # closed by the queue's close operation
            except FileExistsError:
                candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
                continue
            file.path = candidate
            file.created = True
            return
    except OSError as exc:
        raise SegmentWriteError(exc.errno, f"creating {path}: {exc}") from exc
    msg = f"creating {path}: every -N variant exists"
    raise SegmentWriteError(errno.EEXIST, msg)


def _close(file: SegmentFile, *, discard: bool) -> None:
    fh, file.fh = file.fh, None
    try:
        if fh is not None:
            fh.close()  # may report a delayed write error (NFS): it counts as a write failure
    finally:
        if discard and file.created:
            file.path.unlink(missing_ok=True)


def _write_all(fh: FileIO, data: bytes | bytearray) -> None:
    with memoryview(data) as view:
        done = 0
        total = len(view)
        while done < total:
            written = fh.write(view[done:])
            if not written:
                raise OSError(errno.EIO, "short write")
            done += written
