"""The polling budget: TikTok requests per minute per egress, spread evenly, with backoff.

A token bucket per egress (direct, or one per proxy) holds at most a couple of tokens, so
requests are paced at the configured rate instead of bursting. A WAF answer, an empty body
or a network error puts the whole egress in exponential backoff: every watcher behind that
IP waits, which is what gets an IP unblocked (TikTok blocks IPs, not accounts).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

from services.scheduler import metrics

BACKOFF_START = 5.0
BACKOFF_MAX = 300.0


@dataclass
class Egress:
    name: str
    rate: float  # tokens per second
    capacity: float = 2.0
    tokens: float = 1.0
    updated: float = field(default_factory=time.monotonic)
    blocked_until: float = 0.0
    backoff: float = 0.0
    turn: asyncio.Lock = field(default_factory=asyncio.Lock)  # the taker waiting for a token


class BudgetStopped(Exception):
    """``take`` gave up waiting: the poller is stopping (shutdown or leadership lost)."""


class Budget:
    """Request permits per egress."""

    def __init__(self, per_minute: float) -> None:
        self.rate = per_minute / 60.0
        self._egress: dict[str, Egress] = {}
        self._caps: dict[str, float] = {}  # pool egresses' own budgets (tokens per second)
        # Set by the poller's owner; a backoff can last minutes, and a stopping scheduler
        # must not sit it out (nor keep polling after another one took the lease).
        self.stop = asyncio.Event()
        self.waiting = 0  # takers waiting for a permit now

    def egress(self, name: str) -> Egress:
        if name not in self._egress:
            self._egress[name] = Egress(name, self.cap(name))
        return self._egress[name]

    def cap(self, name: str) -> float:
        """The most requests per second ``name`` may make."""
        return self._caps.get(name, self.rate)

    def limit(self, name: str, per_minute: float) -> None:
        """Give ``name`` a budget of its own (a pool egress) instead of the default."""
        self._caps[name] = per_minute / 60.0
        eg = self.egress(name)
        eg.rate = min(eg.rate, self._caps[name])

    async def take(self, name: str, endpoint: str) -> None:
        """Wait until a request through ``name`` is allowed, then count it.

        Raises BudgetStopped as soon as ``stop`` is set.
        """
        eg = self.egress(name)
        self.waiting += 1
        try:
            # One taker at a time waits for the next token, the others queue behind it in
            # order: concurrent takers (resolves) do not all wake for every token.
            async with eg.turn:
                await self._wait_for_token(eg, endpoint)
        finally:
            self.waiting -= 1

    async def _wait_for_token(self, eg: Egress, endpoint: str) -> None:
        while True:
            if self.stop.is_set():
                raise BudgetStopped
            now = time.monotonic()
            if now < eg.blocked_until:
                await self._pause(eg.blocked_until - now)
                continue
            eg.tokens = min(eg.capacity, eg.tokens + (now - eg.updated) * eg.rate)
            eg.updated = now
            if eg.tokens >= 1.0:
                eg.tokens -= 1.0
                metrics.REQUESTS.labels(endpoint).inc()
                return
            await self._pause((1.0 - eg.tokens) / eg.rate)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), seconds)

    def pace(self, name: str, per_second: float) -> None:
        """Run the egress at ``per_second``, never above its budget."""
        self.egress(name).rate = min(self.cap(name), per_second)

    def penalize(self, name: str) -> float:
        """Back the egress off (doubling); returns the pause in seconds."""
        eg = self.egress(name)
        eg.backoff = min(BACKOFF_MAX, eg.backoff * 2 if eg.backoff else BACKOFF_START)
        eg.blocked_until = time.monotonic() + eg.backoff
        metrics.EGRESS_BACKOFF.labels(name).set(eg.backoff)
        return eg.backoff

    def forgive(self, name: str) -> None:
        """Drop the egress's backoff: the pool probes it after a backoff of its own."""
        eg = self.egress(name)
        eg.backoff, eg.blocked_until = 0.0, 0.0
        metrics.EGRESS_BACKOFF.labels(name).set(0)

    def succeeded(self, name: str) -> None:
        eg = self.egress(name)
        if eg.backoff:
            eg.backoff = 0.0
            metrics.EGRESS_BACKOFF.labels(name).set(0)
