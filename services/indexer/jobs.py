"""What the job documents say about an indexed file: which job wrote it, whose it is, and
whether it must stay.

The index learns a file's job and upload wish from recording.finished, and its owner from the
job's document. A file a rebuild finds on disk has none of them: it may belong to a job still
recording, or to one whose upload has not happened yet (a lost INDEX_DB, ``POST /files/rebuild``
during a recording). Retention must not delete such a file, so a rebuild asks the job documents
(KV ``jobs``) whose file it is (and so learns its owner too), and a retention pass asks, before
deleting a file not in S3, whether its job still needs it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from shared.events import UploadedFile
from shared.jobs import TERMINAL, JobRequest, RecordingPart, UploadPart
from shared.logging import get_logger

log = get_logger(__name__)


class JobReader(Protocol):
    """The reads of ``shared.job_store.JobStore`` the indexer uses."""

    async def request(self, job_id: str) -> JobRequest | None: ...

    async def recording(self, job_id: str) -> RecordingPart | None: ...

    async def upload(self, job_id: str) -> UploadPart | None: ...

    async def room_owner(self, room_id: str) -> str | None: ...


@dataclass(frozen=True)
class JobView:
    """A job as far as its files' retention goes."""

    exists: bool
    running: bool  # the recording is not terminal: its files may still change hands
    wants_upload: bool
    uploaded: dict[str, UploadedFile]  # {path: its S3 copy} as the upload part lists them
    owner: str | None = None  # the API key name the job is of (None: an admin's only)

    def holds(self, path: str) -> str | None:
        """Why ``path`` of this job must stay on disk, or None."""
        if self.running:
            return "job running"
        if self.wants_upload and path not in self.uploaded:
            return "upload pending"
        return None


async def owner_of(jobs: JobReader, job_id: str) -> str | None:
    """The owner of job ``job_id`` as its request says; None when unknown (an admin's only)."""
    request = await jobs.request(job_id)
    return request.owner if request is not None else None


@dataclass
class JobGuard:
    """Reads job documents, each job once per guard (make one per rebuild or retention pass)."""

    jobs: JobReader
    _views: dict[str, JobView] = field(default_factory=dict)
    _owners: dict[str, str | None] = field(default_factory=dict)
    _segments: dict[str, frozenset[str]] = field(default_factory=dict)

    async def view(self, job_id: str) -> JobView:
        found = self._views.get(job_id)
        if found is None:
            request = await self.jobs.request(job_id)
            recording = await self.jobs.recording(job_id)
            upload = await self.jobs.upload(job_id)
            found = JobView(
                exists=request is not None or recording is not None,
                running=recording is not None and recording.state not in TERMINAL,
                wants_upload=request is not None and request.options.upload_s3,
                # FAILURE too: a FILE_MISSING job lists the files that did reach the bucket.
                uploaded={
                    f.path: f for f in (upload.files if upload and upload.state != "RETRY" else [])
                },
                owner=request.owner if request is not None else None,
            )
            self._views[job_id] = found
        return found

    async def owners(self, files: Iterable[tuple[str, str]]) -> dict[str, str]:
        """{path: job id} for those (path, room id) that the room's current job recorded.

        ``room.<id>`` names the last job of a room, the one that may still be recording or
        uploading; an older job's files are not found this way (their rows keep no job).
        """
        out: dict[str, str] = {}
        for path, room_id in files:
            if room_id not in self._owners:
                self._owners[room_id] = await self.jobs.room_owner(room_id)
            job_id = self._owners[room_id]
            if job_id is None:
                continue
            if job_id not in self._segments:
                recording = await self.jobs.recording(job_id)
                paths = {s.path for s in recording.segments} if recording else set()
                self._segments[job_id] = frozenset(paths)
            if path in self._segments[job_id]:
                out[path] = job_id
        return out
