"""Segment-file I/O (mkdir, create, write, close, unlink) on worker threads, ordered per session."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import threading
import time
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
# How long a write waits for the others: ~250 hops a second at 200 streams become ~5.
BATCH_TICK_S = 0.2

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


class _Entry:
    """One queue's batch in a :class:`_Job`; taken by the job's thread or stolen for another."""

    __slots__ = ("batch", "error", "queue", "running", "stolen")

    def __init__(self, queue: WriteQueue, batch: list[_Op]) -> None:
        self.queue = queue
        self.batch = batch
        self.running = False
        self.stolen = False
        self.error: SegmentWriteError | None = None


class _Job:
    """Batches of several queues run by one worker thread, one after the other.

    A batch not yet started when the job has run longer than a tick may be stolen by the next
    tick's job (see :meth:`Disk._tick`), so a write stuck on a stalled file holds up only the
    batch it is in, not the other sessions' batches queued behind it.
    """

    def __init__(self, entries: list[_Entry], loop: asyncio.AbstractEventLoop) -> None:
        self.entries = entries
        self.loop = loop
        self.started = loop.time()
        self.lock = threading.Lock()
        self.finished: list[_Entry] = []
        self.complete = False

    def run(self) -> None:
        """Worker thread: run every batch not stolen; report to the loop as they finish."""
        began = time.monotonic()
        for entry in self.entries:
            with self.lock:
                if entry.stolen:
                    continue
                entry.running = True
            entry.error = entry.queue._run_batch(entry.batch)
            with self.lock:
                self.finished.append(entry)
            if time.monotonic() - began > BATCH_TICK_S:  # slow: report what is done already
                self._report_soon()
        self.complete = True
        self._report_soon()

    def steal(self) -> list[_Entry]:
        """Loop thread: the batches this job has not started, for another job to run."""
        stolen = []
        with self.lock:
            for entry in self.entries:
                if not entry.running and not entry.stolen:
                    entry.stolen = True
                    stolen.append(_Entry(entry.queue, entry.batch))
        return stolen

    def _report_soon(self) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            self.loop.call_soon_threadsafe(self._report)

    def _report(self) -> None:
        """Loop thread: hand each finished batch back to its queue."""
        with self.lock:
            done, self.finished = self.finished, []
        for entry in done:
            entry.queue._done(entry.batch, entry.error)


class WriteQueue:
    """One session's file operations, run in the order given, off the event loop.

    The methods return at once (the caller's loop thread never touches the disk); each ``then``
    callback runs on the loop once its operation is done, in order. Writes wait for the
    :class:`Disk`'s next tick, which hands every waiting queue's operations to ONE worker
    thread: a hop per tick for all sessions, not one per flush per session (each hop is a
    thread wake-up and a contended GIL hand-over: ~0.05 core at 200 streams). Creates, closes
    and writes someone waits for (:meth:`drain`, ``urgent``) go at once, with whatever the same
    loop turn queued (a new file's create and first keyframe: one hop). After the first
    failure, creates and writes are skipped (no file with a hole in it), closes still run, and
    :attr:`error` holds the failure for the caller to raise.

    Without an executor every operation runs at once in the caller's thread (tools and tests
    that drive a Segmenter without an event loop).
    """

    def __init__(
        self,
        executor: ThreadPoolExecutor | None = None,
        max_pending: int = DEFAULT_MAX_PENDING,
        disk: Disk | None = None,
    ) -> None:
        self._executor = executor
        self._disk = disk
        self.max_pending = max_pending
        self._ops: list[_Op] = []
        self._busy = False  # a batch is on a worker thread (or stolen, waiting for one)
        self._urgent = False  # the waiting ops must go as soon as they can
        self._soon = False  # a call_soon start is scheduled
        self._ticked = False  # waiting for the disk's tick
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
        self._submit(
            _Op("create", file, then=None if then is None else lambda: then(file)), urgent=True
        )
        return file

    def write(self, file: SegmentFile, data: bytes | bytearray, *, urgent: bool = False) -> None:
        """Append ``data`` (the queue owns it from now on: never modify it afterwards);
        ``urgent``: at once, not at the disk's next tick."""
        self._submit(_Op("write", file, data), urgent=urgent)

    def close(self, file: SegmentFile, *, discard: bool = False, then: Then | None = None) -> None:
        """Close the file after its writes; ``discard`` deletes it (if this queue created it)."""
        self._submit(_Op("close", file, discard=discard, then=then), urgent=True)

    async def drain(self, limit: int | None = None) -> None:
        """Wait until at most ``limit`` bytes are pending (None: until every operation, closes
        included, is done). Does not raise: the caller checks :attr:`error`."""
        while (not self.idle) if limit is None else self.pending > limit:
            self._urgent = True  # someone waits: no tick for what is queued
            if not self._busy and self._ops:
                self._start()
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter

    # --- internals ---------------------------------------------------------------------

    def _submit(self, op: _Op, *, urgent: bool) -> None:
        if self._executor is None:
            self._fail(self._run(op))
            if op.then is not None:
                op.then()
            return
        self.pending += len(op.data)
        self._ops.append(op)
        if urgent:
            self._urgent = True
        if self._busy:
            return  # _done goes on with these
        if self._urgent:
            if not self._soon:  # after this loop turn: what it queues goes in the same batch
                self._soon = True
                asyncio.get_running_loop().call_soon(self._kick)
        elif self._disk is not None:
            self._wait_for_tick()
        else:
            self._start()

    def _kick(self) -> None:
        self._soon = False
        if not self._busy and self._ops:
            self._start()

    def _wait_for_tick(self) -> None:
        if not self._ticked:
            self._ticked = True
            assert self._disk is not None
            self._disk._later(self)

    def _take(self) -> _Entry:
        """The waiting operations as a batch; the queue is busy until it is done."""
        batch, self._ops = self._ops, []
        self._busy = True
        self._urgent = False
        return _Entry(self, batch)

    def _start(self) -> None:
        """Run the waiting operations now, as a job of their own."""
        assert self._executor is not None
        # Not tracked for stealing: its one batch is this queue's, which nothing else can run.
        self._executor.submit(_Job([self._take()], asyncio.get_running_loop()).run)

    def _run_batch(self, batch: list[_Op]) -> SegmentWriteError | None:
        """Worker thread: run a batch; its first failure, if any."""
        error: SegmentWriteError | None = None
        try:
            for op in batch:  # every op runs: after a failure, closes still must
                failed = self._run(op)
                error = error or failed
        except BaseException as exc:  # a bug: the loop side must still learn the batch ended
            error = error or SegmentWriteError(errno.EIO, f"segment I/O crashed: {exc!r}")
            self._failed = True
        return error

    def _done(self, batch: list[_Op], error: SegmentWriteError | None) -> None:
        """Loop thread: account for a finished batch, start the next, run the callbacks."""
        self._busy = False
        self.pending -= sum(len(op.data) for op in batch)
        self._fail(error)
        if self._ops:
            if self._urgent or self._disk is None:
                self._start()
            else:
                self._wait_for_tick()
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
    """The process's segment-file writer: one bounded thread pool, one queue per session, and
    one tick (every :data:`BATCH_TICK_S` while writes wait) that sends them to a thread."""

    def __init__(
        self, threads: int = DEFAULT_THREADS, max_pending: int = DEFAULT_MAX_PENDING
    ) -> None:
        self._threads = threads
        self._max_pending = max_pending
        self._executor: ThreadPoolExecutor | None = None
        self._due: list[WriteQueue] = []
        self._jobs: list[_Job] = []  # running (or waiting for a thread), for _tick to steal from
        self._timer: asyncio.TimerHandle | None = None

    def queue(self) -> WriteQueue:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self._threads, thread_name_prefix="segment-io")
        return WriteQueue(self._executor, self._max_pending, disk=self)

    def _later(self, queue: WriteQueue) -> None:
        self._due.append(queue)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(BATCH_TICK_S, self._tick)

    def _tick(self) -> None:
        """Hand every waiting queue's operations to one worker thread, with the batches a
        slow job (a stalled file) has not started yet."""
        self._timer = None
        loop = asyncio.get_running_loop()
        entries: list[_Entry] = []
        due, self._due = self._due, []
        for queue in due:
            queue._ticked = False
            if not queue._busy and queue._ops:
                entries.append(queue._take())
        old = loop.time() - BATCH_TICK_S
        running = []
        for job in self._jobs:
            if job.complete:
                continue
            running.append(job)
            if job.started <= old:
                entries += job.steal()
        self._jobs = running
        if entries:
            assert self._executor is not None
            job = _Job(entries, loop)
            self._jobs.append(job)
            self._executor.submit(job.run)
        if self._jobs and self._timer is None:  # keep watching the slow ones
            self._timer = loop.call_later(BATCH_TICK_S, self._tick)


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
