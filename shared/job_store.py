"""The one owner of the job documents: methods named by intent, compare-and-set, fenced writes.

Every change of a job goes through ``JobStore``. The documents and their keys are in
``shared.jobs``; where they are kept is a ``Documents`` backend (KV ``jobs`` in production,
a dict in handler unit tests; both pass the same contract test).

Fencing: a recorder or an uploader holds a lease while it works on a job, and every write it
makes carries that lease's token (its creation revision, which only grows). The first write of
a holder (``claim``, ``upload_started``) stores the token in the document; a write with an
older token is refused with ``StaleHolder``, so a holder that froze past its lease and woke up
cannot undo what its successor wrote. A terminal job (SUCCESS, FAILURE, CANCELLED) never
changes state again: writes to it are refused with ``JobFinished``, and finishing it again
returns it unchanged. Writes without a token (0) are decisions about the whole job taken before
any lease (cancelled, invalid options, TikTok refused it): they are not fenced, only the
terminal rule applies.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TypeVar

import msgspec

from shared.documents import Conflict, Documents
from shared.events import UploadedFile, utc_now
from shared.jobs import (
    TERMINAL,
    Claim,
    IdempotentJob,
    JobRequest,
    Outcome,
    RecordingPart,
    SegmentEntry,
    Totals,
    UploadPart,
    UpState,
    idempotency_key,
    recording_key,
    request_key,
    room_key,
    upload_key,
)
from shared.metrics import JOBS

T = TypeVar("T")
NO_TOKEN = 0
# A CAS loop that loses this many races in a row is a bug or a storm: fail loudly.
MAX_CAS_ROUNDS = 50


class Refused(Exception):
    """The store refused a write; the writer must stop acting on the job."""


class StaleHolder(Refused):
    """A newer lease holder owns the job: this writer's lease lapsed."""


class JobFinished(Refused):
    """The job is terminal: it never changes state again."""


class JobExists(Exception):
    """A job with this id was submitted already."""


_request = msgspec.json.Decoder(JobRequest)
_recording = msgspec.json.Decoder(RecordingPart)
_upload = msgspec.json.Decoder(UploadPart)
_idempotent = msgspec.json.Decoder(IdempotentJob)


def _stem(path: str) -> str:
    return path.rsplit(".", 1)[0]


def _merge(doc: RecordingPart, files: tuple[SegmentEntry, ...]) -> None:
    """List ``files`` in ``doc``, each in place of its raw or "recording" entry (same stem)."""
    if not files:
        return
    stems = {_stem(f.path) for f in files}
    kept = [s for s in doc.segments if _stem(s.path) not in stems]
    doc.segments = sorted([*kept, *files], key=lambda s: (s.part, s.path))


class JobStore:
    """Reads and intent-named writes of ``job.<id>``, ``job.<id>.rec``, ``job.<id>.up``."""

    def __init__(self, docs: Documents) -> None:
        self.docs = docs

    # --- reads -----------------------------------------------------------------------------

    async def request(self, job_id: str) -> JobRequest | None:
        found = await self.docs.read(request_key(job_id))
        return _request.decode(found[0]) if found else None

    async def recording(self, job_id: str) -> RecordingPart | None:
        found = await self.docs.read(recording_key(job_id))
        return _recording.decode(found[0]) if found else None

    async def upload(self, job_id: str) -> UploadPart | None:
        found = await self.docs.read(upload_key(job_id))
        return _upload.decode(found[0]) if found else None

    async def room_owner(self, room_id: str) -> str | None:
        """The job that last recorded ``room_id`` (it keeps priority while it is unfinished)."""
        found = await self.docs.read(room_key(room_id))
        return found[0].decode() if found else None

    # --- the request (gateway, scheduler) ----------------------------------------------------

    async def submit(self, request: JobRequest) -> None:
        """Store a new job; raises JobExists if the id is taken."""
        try:
            await self.docs.create(request_key(request.job_id), msgspec.json.encode(request))
        except Conflict:
            raise JobExists(request.job_id) from None
        JOBS.labels(status="pending").inc()

    async def keep(self, job_id: str) -> bool:
        """Write ``job.<id>`` again unchanged, so the bucket's TTL counts from now: a watch
        job lives as long as its watcher, not 30 days. False when there is no such job."""
        key = request_key(job_id)
        found = await self.docs.read(key)
        if found is None:
            return False
        with contextlib.suppress(Conflict):  # written meanwhile: as fresh as this would be
            await self.docs.update(key, found[0], found[1])
        return True

    async def withdraw(self, job_id: str) -> None:
        """Take back a job whose starting event could not be published: nothing will run it."""
        await self.docs.delete(request_key(job_id))

    async def request_cancel(self, job_id: str) -> JobRequest | None:
        """Ask for the job to stop (the recorder hears it); None if there is no such job."""

        def cancel(doc: JobRequest | None) -> JobRequest | None:
            if doc is None or doc.desired == "cancel":
                return None
            doc.desired = "cancel"
            return doc

        await self._cas(request_key(job_id), _request, cancel)
        return await self.request(job_id)

    # --- idempotency keys (gateway) ---------------------------------------------------------

    async def idempotent_job(self, scope: str, key: str) -> IdempotentJob | None:
        """The job ``key`` of ``scope`` made, if any (kept as long as the jobs: KV's TTL)."""
        found = await self.docs.read(idempotency_key(scope, key))
        return _idempotent.decode(found[0]) if found else None

    async def remember_idempotency(self, scope: str, key: str, job: IdempotentJob) -> IdempotentJob:
        """Bind ``key`` of ``scope`` to ``job`` unless it is bound already: create-only, so of
        two concurrent requests under one key only one makes a job. Returns the binding that
        holds (``job``, or the one stored first)."""
        for _ in range(MAX_CAS_ROUNDS):
            try:
                await self.docs.create(idempotency_key(scope, key), msgspec.json.encode(job))
            except Conflict:
                found = await self.idempotent_job(scope, key)
                if found is not None:
                    return found
                continue  # deleted between the two calls: bind it again
            return job
        msg = "too many concurrent bindings of one idempotency key"
        raise RuntimeError(msg)

    async def idempotent_job_started(self, scope: str, key: str) -> None:
        """The job of ``key`` is stored and its event published: a retry only answers now."""

        def mark(doc: IdempotentJob | None) -> IdempotentJob | None:
            if doc is None or doc.started:
                return None
            doc.started = True
            return doc

        await self._cas(idempotency_key(scope, key), _idempotent, mark)

    # --- the recording (recorder) -----------------------------------------------------------

    async def claim(self, job_id: str, token: int, claim: Claim) -> RecordingPart:
        """The holder of lease ``token`` starts recording: the job is STARTED and fenced."""

        def start(doc: RecordingPart | None) -> RecordingPart:
            doc = self._fenced(doc, token) or RecordingPart(job_id=job_id, started_at=utc_now())
            doc.fence = token
            doc.state = "STARTED"
            doc.recorder_id = claim.recorder_id
            doc.room_id = claim.room_id
            doc.title = claim.title
            doc.unique_id = claim.unique_id or doc.unique_id
            doc.attempt = claim.attempt
            doc.engine, doc.engine_commit = claim.engine, claim.engine_commit
            doc.egress = claim.egress
            doc.failures = 0
            doc.error_code = doc.error_message = None
            return doc

        doc = await self._write_recording(job_id, start)
        await self.docs.put(room_key(claim.room_id), job_id.encode())
        return doc

    async def segment_opened(self, job_id: str, token: int, entry: SegmentEntry) -> None:
        """Listed before its first byte, so a recorder taking over finds a crashed one's file."""

        def add(doc: RecordingPart | None) -> RecordingPart | None:
            doc = self._fenced(doc, token)
            if doc is None or any(s.path == entry.path for s in doc.segments):
                return None
            doc.segments.append(entry)
            return doc

        await self._write_recording(job_id, add)

    async def segment_finalised(
        self, job_id: str, token: int, entry: SegmentEntry, replaces: str | None = None
    ) -> RecordingPart:
        """``entry`` takes the place of the raw file it was made from (same stem, or the
        path ``replaces`` when a takeover moved the raw file aside first)."""
        stems = {_stem(entry.path), _stem(replaces or entry.path)}

        def finalise(doc: RecordingPart | None) -> RecordingPart | None:
            doc = self._fenced(doc, token)
            if doc is None:
                return None
            kept = [s for s in doc.segments if _stem(s.path) not in stems]
            doc.segments = sorted([*kept, entry], key=lambda s: (s.part, s.path))
            return doc

        return await self._write_recording(job_id, finalise)

    async def segment_dropped(self, job_id: str, token: int, path: str) -> RecordingPart:
        """A listed file that never got a byte (or is gone) leaves the list."""

        def drop(doc: RecordingPart | None) -> RecordingPart | None:
            doc = self._fenced(doc, token)
            if doc is None:
                return None
            doc.segments = [s for s in doc.segments if s.path != path]
            return doc

        return await self._write_recording(job_id, drop)

    async def progress(self, job_id: str, token: int, totals: Totals, bitrate: float) -> None:
        def progressed(doc: RecordingPart | None) -> RecordingPart | None:
            doc = self._fenced(doc, token)
            if doc is None:
                return None
            doc.bitrate_kbps = round(bitrate / 1000, 1)
            totals.apply(doc)
            return doc

        await self._write_recording(job_id, progressed)

    async def streaming(
        self, job_id: str, token: int, *, quality: str, source: str, wanted: str | None
    ) -> None:
        """Media flows from this stream: the quality really recorded."""

        def streams(doc: RecordingPart | None) -> RecordingPart | None:
            doc = self._fenced(doc, token)
            if doc is None:
                return None
            doc.quality = quality
            doc.stream_source = source  # type: ignore[assignment]  # a StreamSource literal
            doc.quality_wanted = wanted
            return doc

        await self._write_recording(job_id, streams)

    async def handed_over(
        self,
        job_id: str,
        token: int,
        totals: Totals,
        files: tuple[SegmentEntry, ...] = (),
        error: tuple[str, str] | None = None,
    ) -> None:
        """Not the end: this holder stops (shutdown, lease lost, disk full: ``error``), and
        the job is tried again by whichever recorder takes it."""

        def hand(doc: RecordingPart | None) -> RecordingPart | None:
            doc = self._fenced(doc, token)
            if doc is None:
                return None
            _merge(doc, files)
            if error is not None:
                doc.error_code, doc.error_message = error
            doc.state = "RETRY"
            doc.bitrate_kbps = 0.0
            totals.apply(doc)
            return doc

        await self._write_recording(job_id, hand)

    async def retrying(self, job_id: str, code: str, message: str) -> int:
        """A try failed (TikTok refused for now, or a fault): the job waits for another.
        Returns the failures since the job last recorded: hand-overs and lease waits are
        not failures, so they do not use up the retry budget."""

        def retry(doc: RecordingPart | None) -> RecordingPart:
            doc = doc or RecordingPart(job_id=job_id)
            doc.state = "RETRY"
            doc.failures += 1
            doc.error_code, doc.error_message = code, message
            return doc

        return (await self._write_recording(job_id, retry)).failures

    async def finish(
        self, job_id: str, outcome: Outcome, totals: Totals | None = None, token: int = NO_TOKEN
    ) -> tuple[RecordingPart, bool]:
        """Write the terminal state; (document, True) if this call finished the job, or the
        document as it was finished before and False (a redelivery: publish nothing new)."""
        ended = utc_now()
        first = [True]

        def end(doc: RecordingPart | None) -> RecordingPart | None:
            if doc is not None and doc.state in TERMINAL:
                first[0] = False
                return None
            if token != NO_TOKEN:
                doc = self._fenced(doc, token)
            doc = doc or RecordingPart(job_id=job_id)
            first[0] = True
            doc.state = outcome.state
            _merge(doc, outcome.files)
            # Anything still "recording" here has no file behind it any more.
            doc.segments = [s for s in doc.segments if s.state != "recording"]
            doc.room_id = doc.room_id or outcome.room_id
            doc.ended_at = ended
            doc.bitrate_kbps = 0.0
            doc.returncode = 0 if outcome.state == "SUCCESS" else 1
            doc.error_code = outcome.error_code
            doc.error_message = outcome.error_message if outcome.error_code else None
            if totals is not None:
                totals.apply(doc)
            return doc

        doc = await self._write_recording(job_id, end, refuse_terminal=False)
        return doc, first[0]

    # --- the upload (uploader) --------------------------------------------------------------

    async def upload_started(
        self, job_id: str, token: int, *, uploader_id: str, attempt: int, bytes_total: int
    ) -> None:
        """The holder of upload lease ``token`` (re)starts the job's upload."""

        def start(doc: UploadPart | None) -> UploadPart:
            doc = self._upload_fenced(doc, token) or UploadPart(job_id=job_id)
            doc.fence = token
            doc.state = "STARTED"
            doc.uploader_id = uploader_id
            doc.attempt = attempt
            doc.files = []
            doc.bytes_total = bytes_total
            doc.bytes_done = 0
            doc.error_code = doc.error_message = None
            return doc

        await self._write_upload(job_id, start)

    async def upload_progress(self, job_id: str, token: int, bytes_done: int) -> None:
        def progressed(doc: UploadPart | None) -> UploadPart | None:
            doc = self._upload_fenced(doc, token)
            if doc is None or doc.state != "STARTED":
                return None
            doc.bytes_done = bytes_done
            return doc

        await self._write_upload(job_id, progressed)

    async def upload_ended(
        self,
        job_id: str,
        token: int,
        state: UpState,
        *,
        uploader_id: str,
        attempt: int,
        files: list[UploadedFile] | None = None,
        error: tuple[str, str] | None = None,
    ) -> None:
        """SUCCESS (final: never changes again), RETRY (queued again) or FAILURE."""

        def end(doc: UploadPart | None) -> UploadPart:
            doc = self._upload_fenced(doc, token) or UploadPart(job_id=job_id, fence=token)
            doc.state = state
            doc.uploader_id, doc.attempt = uploader_id, attempt
            if files is not None:
                doc.files = files
            if state == "SUCCESS":
                doc.bytes_done = doc.bytes_total = sum(f.size for f in doc.files)
            doc.error_code, doc.error_message = error if error else (None, None)
            return doc

        await self._write_upload(job_id, end)

    # --- the rules ----------------------------------------------------------------------------

    @staticmethod
    def _unfinished(doc: RecordingPart | None) -> RecordingPart | None:
        if doc is not None and doc.state in TERMINAL:
            msg = f"job {doc.job_id} is {doc.state}"
            raise JobFinished(msg)
        return doc

    @classmethod
    def _fenced(cls, doc: RecordingPart | None, token: int) -> RecordingPart | None:
        doc = cls._unfinished(doc)
        if doc is not None and token < doc.fence:
            msg = f"job {doc.job_id} is held by a newer lease ({doc.fence} > {token})"
            raise StaleHolder(msg)
        return doc

    @staticmethod
    def _upload_fenced(doc: UploadPart | None, token: int) -> UploadPart | None:
        if doc is not None and doc.state == "SUCCESS":
            msg = f"the upload of job {doc.job_id} succeeded"
            raise JobFinished(msg)
        if doc is not None and token < doc.fence:
            msg = f"the upload of job {doc.job_id} is held by a newer lease"
            raise StaleHolder(msg)
        return doc

    async def _write_recording(
        self,
        job_id: str,
        change: Callable[[RecordingPart | None], RecordingPart | None],
        *,
        refuse_terminal: bool = True,
    ) -> RecordingPart:
        before: list[str | None] = [None]

        def stamped(current: RecordingPart | None) -> RecordingPart | None:
            before[0] = current.state if current is not None else None
            if refuse_terminal:
                self._unfinished(current)
            new = change(current)
            if new is not None:
                new.updated_at = utc_now()
            return new

        result = await self._cas(recording_key(job_id), _recording, stamped)
        found, written = result
        # Counted on the write that changed the state: a lost CAS race counts once.
        if written and found is not None and found.state != before[0]:
            JOBS.labels(status=found.state.lower()).inc()
        return found if found is not None else RecordingPart(job_id=job_id)

    async def _write_upload(
        self, job_id: str, change: Callable[[UploadPart | None], UploadPart | None]
    ) -> None:
        def stamped(doc: UploadPart | None) -> UploadPart | None:
            new = change(doc)
            if new is not None:
                new.updated_at = utc_now()
            return new

        await self._cas(upload_key(job_id), _upload, stamped)

    async def _cas(
        self, key: str, decoder: msgspec.json.Decoder[T], change: Callable[[T | None], T | None]
    ) -> tuple[T | None, bool]:
        """Read, change, write at the read revision; on a lost race read again and retry.
        Returns the document as it now is and whether this call wrote it."""
        for _ in range(MAX_CAS_ROUNDS):
            current = await self.docs.read(key)
            doc = decoder.decode(current[0]) if current else None
            new = change(doc)
            if new is None:
                return doc, False
            data = msgspec.json.encode(new)
            try:
                if current is None:
                    await self.docs.create(key, data)
                else:
                    await self.docs.update(key, data, current[1])
            except Conflict:
                continue
            return new, True
        msg = f"too many concurrent updates of {key}"
        raise RuntimeError(msg)
