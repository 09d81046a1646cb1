"""The scheduler under faults (issue 15): nothing lost, nothing resurrected, no silent death."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import pytest

from services.scheduler.service import SchedulerService
from shared.bus import Bus
from shared.events import WatchDeleted, WatchPaused, WatchRequested
from shared.tiktok import RoomRef, TikTokClient
from shared.watchers import Watcher
from tests.helpers import eventually
from tests.integration.test_scheduler import scheduler_settings, watch, watcher
from tlr.fake_tiktok import FakeTikTok
from tlr.nats_server import NatsServer


class Faulty:
    """A real TikTokClient with faults put in front of it: the scheduler sees TikTok's answers,
    late (``gate``) or altered (``room_ids``)."""

    def __init__(self, real: TikTokClient) -> None:
        self.real = real
        self.gate: asyncio.Event | None = None  # check_alive waits for it once, when set
        self.waiting = asyncio.Event()  # a check_alive is held at the gate
        self.checks_after_gate = 0  # check_alive calls made after the gate opened
        self.room_ids: dict[str, str] = {}  # unique id -> the room id TikTok "returns"

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    async def resolve(self, target: str) -> RoomRef:
        ref = await self.real.resolve(target)
        bad = self.room_ids.get(target.lstrip("@"))
        return ref if bad is None else RoomRef(room_id=bad, unique_id=ref.unique_id)

    async def check_alive(self, room_ids: Sequence[str]) -> dict[str, bool]:
        gate, self.gate = self.gate, None
        if gate is not None:
            self.waiting.set()
            await gate.wait()
        elif self.waiting.is_set():
            self.checks_after_gate += 1
        return await self.real.check_alive(room_ids)


def faulty(service: SchedulerService) -> Faulty:
    """Put a Faulty client in front of the direct one (before any watcher exists)."""
    real: Callable[[Watcher], TikTokClient] = service.deps.client_for
    shared = Faulty(cast(TikTokClient, None))

    def client_for(w: Watcher) -> TikTokClient:
        shared.real = real(w)  # one egress (direct) in these tests: one client
        return cast(TikTokClient, shared)

    service.deps.client_for = client_for
    return shared


# --- 7. a pass never resurrects a watcher a command changed meanwhile ------------------------


@pytest.mark.parametrize("command", ["deleted", "paused", "updated"])
async def test_a_command_during_a_slow_pass_wins_over_the_pass(
    bus: Bus, nats_server: NatsServer, fake_tiktok: FakeTikTok, tmp_path: Path, command: str
) -> None:
    for user in ("pam", "ned"):  # lived once: a resolve finds a room id to check_alive
        await fake_tiktok.create_user(user)
        await fake_tiktok.go_live(user)
        await fake_tiktok.end(user)
    async with SchedulerService(bus, scheduler_settings(nats_server, fake_tiktok, tmp_path)) as s:
        client = faulty(s)
        client.gate = gate = asyncio.Event()
        await watch(bus, "@pam", poll=1, unique_id="pam")
        await asyncio.wait_for(client.waiting.wait(), 15)  # the pass is held at check_alive
        # Polled on and on: its checks show when the held pass is over.
        await watch(bus, "@ned", poll=1, unique_id="ned")
        match command:
            case "deleted":
                await bus.publish(WatchDeleted(key="@pam"))
            case "paused":
                await bus.publish(WatchPaused(key="@pam"))
            case _:
                await bus.publish(
                    WatchRequested(task_id="task-2", key="@pam", poll_interval=77, unique_id="pam")
                )

        async def applied() -> bool:
            w = await watcher(bus, "@pam")
            if command == "deleted":
                return w is None
            if command == "paused":
                return w is not None and w.status == "paused"
            return w is not None and w.task_id == "task-2"

        await eventually(applied, timeout=10)
        gate.set()

        async def held_pass_over() -> bool:
            return client.checks_after_gate > 0  # passes run one after the other

        await eventually(held_pass_over, timeout=15)
        after = await watcher(bus, "@pam")
        if command == "deleted":
            assert after is None
        elif command == "paused":
            assert after is not None
            assert after.status == "paused"
        else:
            assert after is not None
            assert (after.task_id, after.poll_interval) == ("task-2", 77)
