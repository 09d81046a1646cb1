"""The leader's polling: each egress checks its own due watchers, none waits for another.

One pass of all egresses at once (:func:`poll_once`) lasts as long as its slowest egress, and
the others sit idle meanwhile: at 10,000 watchers over 50 egresses, watchers were checked every
~65 s at poll 60 s (docs/benchmarks.md, egress pool). Here each :meth:`Poller.dispatch` hands
every egress that is not checking already the due watchers it has, as a task of its own; a
watcher being checked is never handed out again until its check is saved (``in_flight``).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from services.scheduler import metrics
from services.scheduler.budget import BudgetStopped
from services.scheduler.poller import (
    MAX_DUE,
    EgressDue,
    PollDeps,
    check_egress,
    group_due,
    keep_jobs,
)
from services.scheduler.probes import probe_egresses
from shared.bus import TRANSIENT
from shared.logging import get_logger

log = get_logger(__name__)

# After an egress's check raised, its next one waits this long, doubling while they keep
# failing: a broken store is not hammered, and the other egresses go on meanwhile.
CHECK_BACKOFF = 1.0
CHECK_BACKOFF_MAX = 30.0
# A check stops at its next permit once the lease is lost; not cancelled before (a cancelled
# write could leave rows uncommitted on the store's connection), unless stuck this long.
CLOSE_WAIT = 15.0


@dataclass
class Poller:
    """The egresses' checks in flight, between the leader's dispatches."""

    deps: PollDeps
    running: dict[str, asyncio.Task[int]] = field(default_factory=dict)  # egress -> its check
    in_flight: set[str] = field(default_factory=set)  # keys of the watchers being checked
    failures: dict[str, int] = field(default_factory=dict)  # egress -> checks failed running
    resume_at: dict[str, float] = field(default_factory=dict)  # egress -> monotonic time
    # Set when a check ended having checked watchers: its egress may have more due already.
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    seen: set[str] = field(default_factory=set)  # egresses that had due watchers
    stopped: bool = False  # a check met BudgetStopped: the lease is lost
    probing: asyncio.Task[None] | None = None

    async def dispatch(self, now: float | None = None) -> int:
        """Start a check of each idle egress's due watchers; how many watchers it handed out
        (a watcher whose options cannot be used counts: it is saved with its error)."""
        self._raise_if_stopped()
        self.ended.clear()
        now = time.time() if now is None else now
        self._probe()
        if self.seen and self.seen <= self.running.keys():
            # Every egress that had watchers is checking: reading the due rows (the ones in
            # flight among them) would only hand out nothing. One that ends wakes the loop.
            return 0
        # The watchers in flight are due too, and the most overdue: read past them.
        rows = await self.deps.store.due(now, MAX_DUE + len(self.in_flight))
        rows = [(w, v) for w, v in rows if w.key not in self.in_flight]
        if not rows:
            return 0
        groups, unusable = await group_due(self.deps, rows, now)
        self.seen |= {g.egress for g in groups}
        clock = time.monotonic()
        handed = [
            g
            for g in groups
            if g.egress not in self.running and self.resume_at.get(g.egress, 0.0) <= clock
        ]
        for group in handed:
            self._start(group, now)
        due = [w for g in handed for w in g.watchers]
        await keep_jobs(self.deps, due, now)
        return unusable + len(due)

    async def wait(self, timeout: float) -> None:
        """Until a check ends having checked watchers, the lease is lost, or ``timeout``."""
        waits = [
            asyncio.ensure_future(self.ended.wait()),
            asyncio.ensure_future(self.deps.budget.stop.wait()),
        ]
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
        self.ended.clear()  # heard: the next wait is for the next check that ends
        self._raise_if_stopped()

    async def close(self) -> None:
        """Let every check end (leadership lost, shutdown: each stops at its next permit, and
        what it learned is dropped, so those watchers are due again for the next leader);
        one stuck in a request past CLOSE_WAIT is cancelled."""
        if self.probing is not None:
            self.probing.cancel()  # a probe writes no watcher
        tasks = [*self.running.values(), *([self.probing] if self.probing else [])]
        if not tasks:
            return
        _, stuck = await asyncio.wait(tasks, timeout=CLOSE_WAIT)
        for task in stuck:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _start(self, group: EgressDue, now: float) -> None:
        keys = {w.key for w in group.watchers}
        self.in_flight |= keys
        task = asyncio.create_task(check_egress(self.deps, group, now))
        self.running[group.egress] = task
        task.add_done_callback(lambda t: self._done(group.egress, keys, t))

    def _done(self, egress: str, keys: set[str], task: asyncio.Task[int]) -> None:
        self.running.pop(egress, None)
        self.in_flight -= keys
        if task.cancelled():
            return
        error = task.exception()
        if error is None:
            self.failures.pop(egress, None)
            if task.result():
                self.ended.set()
            return
        if isinstance(error, BudgetStopped):
            self.stopped = True
            self.ended.set()
            return
        failed = self.failures[egress] = self.failures.get(egress, 0) + 1
        pause = min(CHECK_BACKOFF_MAX, CHECK_BACKOFF * 2.0 ** (failed - 1))
        self.resume_at[egress] = time.monotonic() + pause
        metrics.PASS_FAILURES.inc()
        if isinstance(error, TRANSIENT):  # NATS away for a moment: no stack needed
            log.warning("scheduler.pass_failed", egress=egress, error=repr(error), retry_in_s=pause)
        else:
            log.error(
                "scheduler.pass_failed",
                egress=egress,
                error=repr(error),
                retry_in_s=pause,
                exc_info=error,
            )

    def _probe(self) -> None:
        """Probe the egresses whose backoff is over, beside the checks: a probe through a
        blocked proxy may take a timeout, and no egress waits for it."""
        if self.probing is not None and not self.probing.done():
            return
        if self.probing is not None and not self.probing.cancelled():
            error = self.probing.exception()
            if isinstance(error, BudgetStopped):
                self.stopped = True
            elif error is not None:
                log.error("scheduler.probes_failed", error=repr(error), exc_info=error)
        self._raise_if_stopped()
        deps = self.deps
        self.probing = asyncio.create_task(
            probe_egresses(deps.pool, deps.budget, deps.egress_client)
        )

    def _raise_if_stopped(self) -> None:
        if self.stopped or self.deps.budget.stop.is_set():
            raise BudgetStopped


__all__ = ["Poller"]
