"""The scheduler under faults (issue 15): nothing lost, nothing resurrected, no silent death."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import nats.errors
import pytest
from prometheus_client import REGISTRY

from services.scheduler.service import SchedulerService
from shared.bus import Bus
from shared.errors import ErrorCode
from shared.events import RoomLive, WatchDeleted, WatchPaused, WatchRequested
from shared.jobs import Outcome
from shared.metrics import PREFIX
from shared.tiktok import RoomRef, TikTokClient
from shared.watchers import Watcher
from tests.helpers import eventually, job_store
from tests.integration.test_scheduler import lives_published, scheduler_settings, watch, watcher
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
        self.broken: set[str] = set()  # unique ids whose resolve hits a bug of ours

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    async def resolve(self, target: str) -> RoomRef:
        if target.lstrip("@") in self.broken:
            msg = "a bug no error mapping knows"
            raise RuntimeError(msg)
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


# --- 6. polling never dies silently while the lease is held -----------------------------------


async def lived_once(fake: FakeTikTok, *users: str) -> None:
    """Users with a finished live: a resolve finds their last room id, check_alive asks it."""
    for user in users:
        await fake.create_user(user)
        await fake.go_live(user)
        await fake.end(user)


async def checked_again(bus: Bus, key: str) -> None:
    """Wait until ``key`` is checked by a pass that starts after this call."""
    before = await watcher(bus, key)
    assert before is not None
    assert before.last_run_at is not None

    async def later() -> bool:
        w = await watcher(bus, key)
        seen = w.last_run_at if w is not None else None
        return seen is not None and before.last_run_at is not None and seen > before.last_run_at

    await eventually(later, timeout=15)


@pytest.mark.parametrize("fault", ["invalid room id", "bug"])
async def test_a_fault_of_one_watcher_is_its_error_and_the_others_are_polled(
    bus: Bus, nats_server: NatsServer, fake_tiktok: FakeTikTok, tmp_path: Path, fault: str
) -> None:
    await lived_once(fake_tiktok, "bad", "tom")
    async with SchedulerService(bus, scheduler_settings(nats_server, fake_tiktok, tmp_path)) as s:
        client = faulty(s)
        if fault == "bug":
            client.broken.add("bad")
        else:
            client.room_ids["bad"] = "123"  # what check_alive refuses (15-20 digits)
        code = ErrorCode.INTERNAL if fault == "bug" else ErrorCode.SERVICE_UNAVAILABLE
        await watch(bus, "@bad", poll=1, unique_id="bad")
        await watch(bus, "@tom", poll=1, unique_id="tom")

        async def both_checked() -> bool:
            bad, tom = await watcher(bus, "@bad"), await watcher(bus, "@tom")
            return (
                bad is not None
                and bad.error_code == code
                and tom is not None
                and tom.last_outcome == "offline"
            )

        await eventually(both_checked, timeout=15)
        bad = await watcher(bus, "@bad")
        assert bad is not None
        assert bad.error_message is not None
        assert ("RuntimeError" if fault == "bug" else "'123'") in bad.error_message
        await checked_again(bus, "@tom")  # the poller lives on


def pass_failures() -> float:
    return REGISTRY.get_sample_value(f"{PREFIX}_scheduler_pass_failures_total") or 0.0


async def test_a_pass_that_raises_is_counted_and_polling_goes_on(
    bus: Bus, nats_server: NatsServer, fake_tiktok: FakeTikTok, tmp_path: Path
) -> None:
    await lived_once(fake_tiktok, "sue")
    settings = scheduler_settings(nats_server, fake_tiktok, tmp_path)
    async with SchedulerService(bus, settings):
        await watch(bus, "@sue", poll=1, unique_id="sue")

        async def checked() -> bool:
            w = await watcher(bus, "@sue")
            return w is not None and w.last_outcome == "offline"

        await eventually(checked, timeout=15)
        failures = pass_failures()
        # A real SQLite fault: the table is gone for a while (as after a bad migration).
        with sqlite3.connect(settings.scheduler_db, timeout=10) as db:
            db.execute("ALTER TABLE watchers RENAME TO watchers_away")

        async def failing() -> bool:
            return pass_failures() >= failures + 2  # and the loop tried again

        await eventually(failing, timeout=15)
        with sqlite3.connect(settings.scheduler_db, timeout=10) as db:
            db.execute("ALTER TABLE watchers_away RENAME TO watchers")
        await checked_again(bus, "@sue")


# --- 5. a live that outlives its job is recorded again ----------------------------------------


async def test_a_live_that_outlives_its_job_gets_a_new_job_with_backoff(
    bus: Bus, nats_server: NatsServer, fake_tiktok: FakeTikTok, tmp_path: Path
) -> None:
    # No recorder runs: the test ends each job the way a recorder that gave up would.
    await fake_tiktok.create_user("liv")
    live = await fake_tiktok.go_live("liv")
    jobs = await job_store(bus)
    poll = 1
    async with SchedulerService(bus, scheduler_settings(nats_server, fake_tiktok, tmp_path)):
        await watch(bus, "@liv", poll=poll, unique_id="liv")

        async def lives(n: int) -> list[RoomLive]:
            published: list[RoomLive] = []

            async def enough() -> bool:
                published[:] = await lives_published(bus)
                return len(published) >= n

            await eventually(enough, timeout=20)
            return published

        [first] = await lives(1)
        ended, _ = await jobs.finish(first.job_id, Outcome("FAILURE", error_code="DISK_FULL"))
        second = (await lives(2))[1]
        assert second.job_id != first.job_id
        assert second.room_id == first.room_id == live.room_id
        assert ended.ended_at is not None
        assert second.occurred_at >= ended.ended_at + timedelta(seconds=poll)

        async def current(job_id: str) -> bool:
            w = await watcher(bus, "@liv")
            return w is not None and w.current_job_id == job_id

        await eventually(lambda: current(second.job_id), timeout=10)
        # It fails at once again: the next job waits twice as long (it does not loop).
        ended, _ = await jobs.finish(second.job_id, Outcome("FAILURE", error_code="DISK_FULL"))
        third = (await lives(3))[2]
        assert ended.ended_at is not None
        assert third.occurred_at >= ended.ended_at + timedelta(seconds=2 * poll)
        await eventually(lambda: current(third.job_id), timeout=10)
        w = await watcher(bus, "@liv")
        assert w is not None
        assert w.jobs == [first.job_id, second.job_id, third.job_id]

        # Cancelled on purpose (DELETE /jobs/{id}): the live is not recorded again.
        ended, _ = await jobs.finish(third.job_id, Outcome("CANCELLED", error_code="CANCELLED"))
        assert ended.ended_at is not None
        quiet_until = ended.ended_at + timedelta(seconds=4 * poll + 1)

        async def checked_past_the_backoff() -> bool:
            w = await watcher(bus, "@liv")
            return w is not None and w.last_run_at is not None and w.last_run_at > quiet_until

        await eventually(checked_past_the_backoff, timeout=20)
        assert len(await lives_published(bus)) == 3


# --- 9. a live whose job was lost with the NATS store is recorded again -----------------------


async def test_a_live_whose_job_was_lost_with_the_store_gets_a_new_job(
    bus: Bus, nats_server: NatsServer, fake_tiktok: FakeTikTok, tmp_path: Path
) -> None:
    await fake_tiktok.create_user("los")
    live = await fake_tiktok.go_live("los")
    async with SchedulerService(bus, scheduler_settings(nats_server, fake_tiktok, tmp_path)):
        await watch(bus, "@los", poll=1, unique_id="los")
        published: list[RoomLive] = []

        async def lives() -> bool:
            # Until the scheduler provisioned the lost store again, EVENTS does not exist.
            with contextlib.suppress(nats.errors.Error):
                published[:] = await lives_published(bus)
            return len(published) == 1

        async def current(job_id: str) -> bool:
            w = await watcher(bus, "@los")
            return w is not None and w.current_job_id == job_id

        await eventually(lives, timeout=20)
        [first] = published
        await eventually(lambda: current(first.job_id), timeout=10)

        # The job, its room.live and the lease go with the store; the watcher (SQLite) stays.
        await nats_server.lose_store()
        published.clear()
        await eventually(lives, timeout=30)
        [second] = published
        assert second.job_id != first.job_id
        assert second.room_id == first.room_id == live.room_id
        await eventually(lambda: current(second.job_id), timeout=10)
        jobs = await job_store(bus)
        request = await jobs.request(second.job_id)
        assert request is not None
        assert request.watcher_key == "@los"
        w = await watcher(bus, "@los")
        assert w is not None
        assert w.jobs == [first.job_id, second.job_id]
