"""How late this process's event loop runs its callbacks: a gauge, and a gate start-ups wait on.

Why: the loop renews every lease, answers NATS and reads every stream. A recorder taking on
more than its machine can carry (a burst of 1,000 start-ups, a CPU shared with others) falls
behind on all of them at once, and leases lapse while it still records. Measured lateness is
the one signal that covers every cause; new start-ups wait while it is high, so the recordings
already running keep their leases and another recorder can take the waiting jobs' messages.
"""

from __future__ import annotations

import asyncio
import collections

from services.recorder import metrics

EVERY_S = 0.25  # one probe this often
WINDOW_S = 1.0  # the lag is the worst probe of this last stretch


class LoopLag:
    """A timer every :data:`EVERY_S` that measures how late it fires.

    ``lag`` is the worst lateness over the last :data:`WINDOW_S`; :meth:`calm` waits until
    it is at most ``limit``.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, limit: float) -> None:
        self._loop = loop
        self.limit = limit
        self._samples: collections.deque[tuple[float, float]] = collections.deque()
        self._calm = asyncio.Event()
        self._calm.set()
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0

    @property
    def lag(self) -> float:
        return max((late for _, late in self._samples), default=0.0)

    def start(self) -> None:
        if self._handle is None:
            self._due = self._loop.time() + EVERY_S
            self._handle = self._loop.call_at(self._due, self._probe)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    async def calm(self) -> None:
        """Until the loop's lag is at most ``limit``."""
        self.start()
        await self._calm.wait()

    def _probe(self) -> None:
        now = self._loop.time()
        samples = self._samples
        samples.append((now, max(0.0, now - self._due)))
        while samples and samples[0][0] < now - WINDOW_S:
            samples.popleft()
        lag = self.lag
        metrics.LOOP_LAG.set(lag)
        if lag > self.limit:
            self._calm.clear()
        else:
            self._calm.set()
        self._due = now + EVERY_S
        self._handle = self._loop.call_at(self._due, self._probe)
