"""The watchdog over recordings whose session has ended: each must reach its outcome soon."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from services.recorder import metrics
from shared.logging import get_logger

log = get_logger(__name__)

# Writing the outcome takes seconds, retries through an election included; a job still not
# settled this long after its session ended is stuck (a lost wake-up, a swallowed cancel).
ENDING_DEADLINE = 120.0
CHECK_EVERY = 10.0


class Endings:
    """Jobs whose session ended in this process and whose handler has not returned yet.

    ``check`` finds those past the deadline, logs ``recorder.job_stuck`` and cancels their
    handler, again at every check until it returns (a cancellation can be swallowed once):
    the message is then handed back, and its redelivery writes and publishes the outcome.
    """

    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic, deadline: float = ENDING_DEADLINE
    ) -> None:
        self.clock = clock
        self.deadline = deadline
        self._ended: dict[str, tuple[float, asyncio.Task[object]]] = {}

    def session_ended(self, job_id: str) -> None:
        """From now on the job's handler (the running task) must settle within the deadline."""
        task = asyncio.current_task()
        assert task is not None
        self._ended[job_id] = (self.clock(), task)

    def extend(self, job_id: str, seconds: float) -> None:
        """Give the job's handler ``seconds`` more (a join of its segments: long work that is
        not stuck); nothing for a job whose session has not ended here."""
        found = self._ended.get(job_id)
        if found is not None:
            self._ended[job_id] = (found[0] + seconds, found[1])

    def settled(self, job_id: str) -> None:
        self._ended.pop(job_id, None)

    def check(self) -> list[str]:
        """Cancel the handlers of the jobs stuck past the deadline; their ids."""
        now = self.clock()
        stuck = []
        for job_id, (since, task) in list(self._ended.items()):
            if task.done():
                self._ended.pop(job_id, None)
                continue
            if now - since < self.deadline:
                continue
            stuck.append(job_id)
            log.error("recorder.job_stuck", job_id=job_id, seconds=round(now - since))
            metrics.JOBS_STUCK.inc()
            task.cancel()
        return stuck

    async def watch(self, stop: asyncio.Event, every: float = CHECK_EVERY) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)
            self.check()
