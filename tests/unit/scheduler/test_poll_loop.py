"""Each egress checks its watchers on its own: a slow egress holds up no other one, and a
failed batch is one answer of its egress."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

import pytest

from services.scheduler.budget import BACKOFF_START, Budget, BudgetStopped
from services.scheduler.poll_loop import Poller
from services.scheduler.poller import PollDeps, poll_once
from services.scheduler.store import WatcherStore
from shared.job_store import JobStore
from shared.tiktok import RoomRef, TikTokClient
from shared.tiktok.errors import WafBlocked
from shared.watchers import Watcher
from tests.fakes.documents import MemoryDocuments
from tests.fakes.publisher import MemoryPublisher

ROOMS = 3  # room-id watchers per egress


def _room(egress: str, n: int) -> str:
    return str((7 if egress == "fast" else 8) * 10**18 + n)


class Store(WatcherStore):
    """The real store; says when a pass's news was written."""

    saved: asyncio.Event
    reads = 0

    async def due(self, now: float, limit: int) -> list[tuple[Watcher, int]]:
        self.reads += 1
        return await super().due(now, limit)

    async def save_checked(self, rows: list[tuple[Watcher, float, int]]) -> int:
        written = await super().save_checked(rows)
        self.saved.set()
        return written


class Client:
    """check_alive (nobody is live), counted; the slow egress's answers wait at ``gate``."""

    def __init__(self, gate: asyncio.Event | None = None) -> None:
        self.checked: list[str] = []
        self.gate = gate
        self.asked = asyncio.Event()

    async def check_alive(self, room_ids: Sequence[str]) -> dict[str, bool]:
        self.checked.extend(room_ids)
        self.asked.set()
        if self.gate is not None:
            await self.gate.wait()
        return dict.fromkeys(room_ids, False)

    async def resolve(self, target: str) -> RoomRef:
        message = f"no user is watched here: {target}"
        raise AssertionError(message)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = await Store(tmp_path / "w.sqlite3").__aenter__()
    s.saved = asyncio.Event()
    try:
        yield s
    finally:
        await s.__aexit__(None, None, None)


async def _deps(store: Store, clients: dict[str, Client]) -> PollDeps:
    now = datetime.now(UTC)
    await store.put_many(
        [
            (Watcher(key=_room(e, n), task_id=f"{e}{n}", room_id=_room(e, n), created_at=now), 0.0)
            for e in clients
            for n in range(ROOMS)
        ]
    )

    def egress_of(w: Watcher) -> str:
        return "fast" if w.key.startswith("7") else "slow"

    return PollDeps(
        store=store,
        budget=Budget(6_000_000),
        jobs=JobStore(MemoryDocuments()),
        publish=MemoryPublisher().publish,
        client_for=lambda w: cast(TikTokClient, clients[egress_of(w)]),
        egress_of=egress_of,
    )


async def _outcomes(store: Store, egress: str) -> list[str | None]:
    watchers = [await store.get(_room(egress, n)) for n in range(ROOMS)]
    return [w.last_outcome if w else "gone" for w in watchers]


async def test_a_pass_saves_each_egress_as_it_ends_not_when_the_slowest_does(
    store: Store,
) -> None:
    gate = asyncio.Event()
    fast, slow = Client(), Client(gate)
    deps = await _deps(store, {"fast": fast, "slow": slow})
    passing = asyncio.create_task(poll_once(deps))
    try:
        await asyncio.wait_for(slow.asked.wait(), 5)
        # The slow egress's answer is still held: the fast one's news is written anyway.
        await asyncio.wait_for(store.saved.wait(), 5)
        assert await _outcomes(store, "fast") == ["offline"] * ROOMS
        assert await _outcomes(store, "slow") == [None] * ROOMS
        gate.set()
        assert await asyncio.wait_for(passing, 5) == 2 * ROOMS
        assert await _outcomes(store, "slow") == ["offline"] * ROOMS
    finally:
        gate.set()
        await passing


async def test_an_egress_checks_again_while_another_is_still_checking(store: Store) -> None:
    gate = asyncio.Event()
    fast, slow = Client(), Client(gate)
    deps = await _deps(store, {"fast": fast, "slow": slow})
    poller = Poller(deps)
    try:
        now = time.time()
        assert await poller.dispatch(now) == 2 * ROOMS
        await asyncio.wait_for(slow.asked.wait(), 5)
        await poller.wait(5)  # the fast egress's check ended
        assert await _outcomes(store, "fast") == ["offline"] * ROOMS
        # An interval later (a fake clock) every watcher is due again: the fast egress checks
        # its own again; the slow one's watchers are still being checked, so not handed out.
        assert await poller.dispatch(now + 120) == ROOMS
        await poller.wait(5)
        fast_ids = sorted(_room("fast", n) for n in range(ROOMS))
        assert sorted(fast.checked) == sorted(fast_ids * 2)
        assert sorted(slow.checked) == sorted(_room("slow", n) for n in range(ROOMS))
        assert set(poller.running) == {"slow"}
        gate.set()
        await poller.wait(5)
        assert not poller.running
        assert await _outcomes(store, "slow") == ["offline"] * ROOMS
    finally:
        gate.set()
        await poller.close()


async def test_a_lost_lease_stops_every_check_and_saves_nothing_of_them(store: Store) -> None:
    gate = asyncio.Event()
    slow = Client(gate)
    deps = await _deps(store, {"slow": slow})
    poller = Poller(deps)
    try:
        assert await poller.dispatch() == ROOMS
        await asyncio.wait_for(slow.asked.wait(), 5)
        reads = store.reads
        # Its only egress is checking: nothing to hand out, and nothing read to learn that.
        assert await poller.dispatch(time.time() + 120) == 0
        assert store.reads == reads
        deps.budget.stop.set()  # the lease is lost while the slow answer is on its way
        gate.set()
        with pytest.raises(BudgetStopped):
            await poller.wait(5)
        await poller.close()
        assert not poller.running
        assert await _outcomes(store, "slow") == [None] * ROOMS  # due again for the next leader
        with pytest.raises(BudgetStopped):
            await poller.dispatch()
    finally:
        gate.set()
        await poller.close()


class Blocked(Client):
    """Every check_alive gets a WAF page (an empty body, a "Please wait..." page)."""

    async def check_alive(self, room_ids: Sequence[str]) -> dict[str, bool]:
        self.checked.extend(room_ids)
        raise WafBlocked(endpoint="check_alive", reason="empty body")


async def test_a_failed_batch_is_one_waf_answer_for_its_egress(store: Store) -> None:
    deps = await _deps(store, {"slow": Blocked()})
    deps.pool.put("slow", None, 63.0, "api")
    assert await poll_once(deps) == ROOMS
    egress = deps.pool.egresses["slow"]
    # One request, one answer: no block yet (that takes two running), no backoff doubled.
    assert (egress.waf_answers, egress.state) == (1, "healthy")
    assert deps.budget.egress("slow").backoff == BACKOFF_START
    outcomes = await _outcomes(store, "slow")
    assert outcomes == ["waf_blocked"] * ROOMS
    watchers = [await store.get(_room("slow", n)) for n in range(ROOMS)]
    next_checks = {w.next_check_at for w in watchers if w is not None}
    assert len(next_checks) == 1  # all checked again once the egress may be used
