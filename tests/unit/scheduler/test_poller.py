"""A poll pass resolves users concurrently within the budget; a throttled egress stops at once."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

from services.scheduler.budget import Budget
from services.scheduler.poller import RESOLVE_CONCURRENCY, PollDeps, pace, poll_once
from services.scheduler.store import WatcherStore
from shared.job_store import JobStore
from shared.tiktok import RoomRef, TikTokClient
from shared.tiktok.errors import WafBlocked
from shared.watchers import Watcher
from tests.fakes.documents import MemoryDocuments
from tests.fakes.publisher import MemoryPublisher


def _room(n: int) -> str:
    return str(7_000_000_000_000_000_000 + n)


class Client:
    """resolve and check_alive, counted; resolve can wait at a gate or fail for one user."""

    def __init__(self) -> None:
        self.resolves: list[str] = []
        self.checked: list[str] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.gate: asyncio.Event | None = None
        self.open_at = 0  # the gate opens once this many resolves are in flight
        self.waf_for: str | None = None

    async def resolve(self, target: str) -> RoomRef:
        self.resolves.append(target)
        if target == self.waf_for:
            raise WafBlocked(endpoint="profile_page", reason="challenge")
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.gate is not None:
                if self.in_flight >= self.open_at:
                    self.gate.set()
                await self.gate.wait()
        finally:
            self.in_flight -= 1
        n = int(target.removeprefix("@u"))
        return RoomRef(room_id=_room(n), unique_id=target[1:])

    async def check_alive(self, room_ids: Sequence[str]) -> dict[str, bool]:
        self.checked.extend(room_ids)
        return dict.fromkeys(room_ids, False)


async def _deps(tmp_path: Path, client: Client, per_minute: float) -> PollDeps:
    store = await WatcherStore(tmp_path / "w.sqlite3").__aenter__()
    return PollDeps(
        store=store,
        budget=Budget(per_minute),
        jobs=JobStore(MemoryDocuments()),
        publish=MemoryPublisher().publish,
        client_for=lambda _w: cast(TikTokClient, client),
        egress_of=lambda _w: "direct",
        batch_size=50,
    )


async def _watch_users(deps: PollDeps, count: int) -> None:
    now = datetime.now(UTC)
    await deps.store.put_many(
        [
            (Watcher(key=f"@u{n}", task_id=f"t{n}", unique_id=f"u{n}", created_at=now), 0.0)
            for n in range(count)
        ]
    )


async def test_users_are_resolved_concurrently_and_every_one_is_checked(tmp_path: Path) -> None:
    client = Client()
    client.gate, client.open_at = asyncio.Event(), RESOLVE_CONCURRENCY
    deps = await _deps(tmp_path, client, per_minute=6_000_000)
    try:
        await _watch_users(deps, RESOLVE_CONCURRENCY + 8)
        assert await poll_once(deps) == RESOLVE_CONCURRENCY + 8
        # The gate opened only once RESOLVE_CONCURRENCY resolves were waiting at it together.
        assert client.most_in_flight == RESOLVE_CONCURRENCY
        assert sorted(client.resolves) == sorted(f"@u{n}" for n in range(RESOLVE_CONCURRENCY + 8))
        assert sorted(client.checked) == sorted(_room(n) for n in range(RESOLVE_CONCURRENCY + 8))
        for n in range(RESOLVE_CONCURRENCY + 8):
            w = await deps.store.get(f"@u{n}")
            assert w is not None
            assert w.last_outcome == "offline"
            assert w.room_id == _room(n)
    finally:
        await deps.store.__aexit__(None, None, None)


async def test_a_throttled_egress_starts_no_other_resolve_nor_sits_out_its_backoff(
    tmp_path: Path,
) -> None:
    client = Client()
    client.waf_for = "@u0"
    # One request a minute: the first resolve has a permit, the others wait for theirs. The
    # WAF answer must end the pass now, not after a minute nor after the egress's backoff.
    deps = await _deps(tmp_path, client, per_minute=1)
    try:
        await _watch_users(deps, 5)
        await poll_once(deps)
        assert client.resolves == ["@u0"]
        assert client.checked == []  # no room checked on a throttled egress either
        blocked = await deps.store.get("@u0")
        assert blocked is not None
        assert blocked.last_outcome == "waf_blocked"
        for n in range(1, 5):  # untouched: due again next pass
            w = await deps.store.get(f"@u{n}")
            assert w is not None
            assert w.last_outcome is None
    finally:
        await deps.store.__aexit__(None, None, None)


async def test_pace_counts_what_every_active_watcher_needs(tmp_path: Path) -> None:
    deps = await _deps(tmp_path, Client(), per_minute=600_000)
    try:
        now = datetime.now(UTC)
        rows = [
            (Watcher(key=f"@u{n}", task_id=f"t{n}", unique_id=f"u{n}", created_at=now), 0.0)
            for n in range(100)
        ] + [
            (Watcher(key=_room(n), task_id=f"r{n}", room_id=_room(n), created_at=now), 0.0)
            for n in range(400)
        ]
        paused = Watcher(key="@p", task_id="p", unique_id="p", status="paused", created_at=now)
        await deps.store.put_many([*rows, (paused, 0.0)])
        await pace(deps)
        # 100 users: a resolve each + a 50th of a check_alive; 400 room ids: a 50th each; 60 s.
        need = (100 * (1 + 1 / 50) + 400 / 50) / 60
        assert abs(deps.budget.egress("direct").rate - need * 1.25) < 1e-9
        # Not computed again until a command changes the watchers; then it is.
        deps.budget.egress("direct").rate = 1.0
        await pace(deps)
        assert deps.budget.egress("direct").rate == 1.0
        await deps.store.delete("@u0")
        await pace(deps)
        need -= (1 + 1 / 50) / 60
        assert abs(deps.budget.egress("direct").rate - need * 1.25) < 1e-9
    finally:
        await deps.store.__aexit__(None, None, None)
