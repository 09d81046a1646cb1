"""The jobs a watcher starts belong to the watcher's owner: stamped as they are stored."""

from __future__ import annotations

import msgspec

from services.scheduler.lives import MAX_ATTEMPTS, job_id_for
from services.scheduler.store import WatcherStore
from shared.documents import Documents
from shared.job_store import JobStore
from shared.jobs import JobRequest
from shared.watchers import Watcher


class WatcherJobs(JobStore):
    """The job store the poller writes through: a job it submits for a watcher gets that
    watcher's owner, so the API key that made the watcher sees the lives it records.

    The owner is read from the watcher store by the job's ``watcher_key`` and given only when
    that watcher is the one the job id is derived from (same task id and generation): a
    watcher deleted and made again by another key while a poll pass ran does not pass its
    owner on to the old watcher's live.
    """

    def __init__(self, docs: Documents, watchers: WatcherStore) -> None:
        super().__init__(docs)
        self.watchers = watchers

    async def submit(self, request: JobRequest) -> None:
        if request.owner is None and request.watcher_key and request.room_id:
            watcher = await self.watchers.get(request.watcher_key)
            if watcher is not None and started_by(watcher, request):
                request = msgspec.structs.replace(request, owner=watcher.owner)
        await super().submit(request)


def started_by(watcher: Watcher, request: JobRequest) -> bool:
    """Whether ``request`` is a job of one of ``watcher``'s lives (any attempt)."""
    room_id = request.room_id
    if room_id is None:
        return False
    return any(
        job_id_for(watcher, room_id, attempt) == request.job_id for attempt in range(MAX_ATTEMPTS)
    )
