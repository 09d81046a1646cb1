"""Start-up slots: how many jobs one recorder takes from their message to a running session
at once (the KV reads, TikTok's room lookup, the room lease, a take-over, confirm_live, the
claim). A burst of jobs (a restart, a failover, 1,000 requests at once) then ramps instead of
starving the event loop that renews leases and answers NATS; a job waiting for a slot has
taken no lease, and the consumer keeps its message alive meanwhile (``in_progress``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from services.recorder.loop_lag import LoopLag


class Slot:
    """One start-up slot, given back when the session starts or the start-up ends."""

    def __init__(self, owner: StartUps) -> None:
        self._owner = owner
        self._held = True
        owner.running += 1

    def release(self) -> None:
        if self._held:
            self._held = False
            self._owner.running -= 1
            self._owner._free.release()


class StartUps:
    """At most ``limit`` start-ups at once; the others wait in arrival order. With
    ``max_lag``, a start-up also waits while the event loop runs more than ``max_lag`` late
    (``loop_lag.py``): the recordings running keep their leases, and the load grows only as
    fast as the process carries it."""

    def __init__(self, limit: int = 32, *, max_lag: float | None = None) -> None:
        self.limit = limit
        self._free = asyncio.Semaphore(limit)
        self._max_lag = max_lag
        self._lag: LoopLag | None = None
        self.running = 0
        self.waiting = 0

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[Slot]:
        """A slot for the caller's start-up; ``release()`` it once the session runs."""
        self.waiting += 1
        try:
            await self._free.acquire()
            try:
                await self._calm()
            except BaseException:
                self._free.release()
                raise
        finally:
            self.waiting -= 1
        slot = Slot(self)
        try:
            yield slot
        finally:
            slot.release()

    async def _calm(self) -> None:
        if self._max_lag is None:
            return
        if self._lag is None:
            self._lag = LoopLag(asyncio.get_running_loop(), self._max_lag)
        await self._lag.calm()

    def close(self) -> None:
        """Stop measuring the loop (the service stops)."""
        if self._lag is not None:
            self._lag.stop()
