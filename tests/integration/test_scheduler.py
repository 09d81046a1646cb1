"""The scheduler against a real nats-server and the fake TikTok: detect lives, poll in budget."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from services.recorder.service import RecorderService
from services.recorder.settings import RecorderSettings
from services.scheduler.service import SchedulerService
from services.scheduler.settings import SchedulerSettings
from services.scheduler.store import WatcherStore
from shared.bus import Bus
from shared.errors import ErrorCode
from shared.events import RecordingOptions, RoomLive, WatchDeleted, WatchRequested
from shared.secrets import SecretBox, new_key
from shared.subjects import EVENTS_STREAM, SCHEDULER, subject_for
from shared.watchers import GET, GetRequest, Watcher
from tests.helpers import decode_errors, eventually, job_store
from tests.http_proxy import AuthProxy
from tlr.fake_tiktok import FakeTikTok
from tlr.nats_server import NatsServer

FAKE_TIKTOK_OPTIONS = {"speed": 4.0}


def scheduler_settings(
    nats: NatsServer, fake: FakeTikTok, tmp: Path, name: str = "sched-1", **extra: object
) -> SchedulerSettings:
    return SchedulerSettings(
        nats_url=nats.client_url,
        instance_id=name,
        scheduler_db=tmp / "scheduler.sqlite3",
        tiktok_web_base=fake.base_url,
        tiktok_webcast_base=fake.base_url,
        **extra,  # type: ignore[arg-type]
    )


@pytest.fixture
async def recorder(
    bus: Bus, nats_server: NatsServer, fake_tiktok: FakeTikTok, tmp_path: Path
) -> AsyncIterator[Path]:
    settings = RecorderSettings(
        nats_url=nats_server.client_url,
        instance_id="rec-1",
        recordings_dir=tmp_path / "recordings",
        tiktok_web_base=fake_tiktok.base_url,
        tiktok_webcast_base=fake_tiktok.base_url,
        read_timeout=2.0,
        **fake_tiktok.egress_settings,
    )
    async with RecorderService(bus, settings):
        yield settings.recordings_dir


async def watcher(bus: Bus, key: str) -> Watcher | None:
    reply = await bus.nc.request(GET, msgspec.json.encode(GetRequest(key=key)), timeout=2)
    if reply.headers and reply.headers.get("Nats-Service-Error-Code"):
        return None
    return msgspec.json.decode(reply.data, type=Watcher)


async def lives_published(bus: Bus) -> list[RoomLive]:
    info = await bus.js.stream_info(EVENTS_STREAM)
    out = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        with contextlib.suppress(Exception):
            msg = await bus.js.get_msg(EVENTS_STREAM, seq)
            if msg.subject == subject_for(RoomLive):
                out.append(msgspec.json.decode(msg.data or b"", type=RoomLive))
    return out


async def watch(bus: Bus, key: str, *, poll: int, **fields: object) -> None:
    await bus.publish(WatchRequested(task_id=f"task-{key}", key=key, poll_interval=poll, **fields))  # type: ignore[arg-type]


async def test_offline_then_live_records_then_second_live_second_job(
    bus: Bus, nats_server: NatsServer, fake_tiktok: FakeTikTok, tmp_path: Path, recorder: Path
) -> None:
    await fake_tiktok.create_user("amy")
    poll = 10
    async with SchedulerService(bus, scheduler_settings(nats_server, fake_tiktok, tmp_path)):
        await watch(bus, "@amy", poll=poll, unique_id="amy", url="@amy")

        async def checked_offline() -> bool:
            w = await watcher(bus, "@amy")
            return w is not None and w.live_state == "offline"

        await eventually(checked_offline, timeout=15)
        await fake_tiktok.go_live("amy")

        async def job_started() -> bool:
            w = await watcher(bus, "@amy")
            return w is not None and w.current_job_id is not None

        # Within a poll interval or so; the bound is generous (a loaded CI machine solves the
        # fake's proof of work slowly): this is a failure guard, not a speed check.
        await eventually(job_started, timeout=3 * poll, interval=0.1)
        first = await watcher(bus, "@amy")
        assert first is not None
        assert first.current_job_id is not None
        store = await job_store(bus)

        async def recording(job_id: str) -> bool:
            doc = await store.recording(job_id)
            return doc is not None and doc.bytes > 0

        await eventually(lambda: recording(first.current_job_id or ""), timeout=20)
        await fake_tiktok.end("amy")

        async def finished(job_id: str) -> bool:
            doc = await store.recording(job_id)
            return doc is not None and doc.state == "SUCCESS"

        await eventually(lambda: finished(first.current_job_id or ""), timeout=20)
        doc = await store.recording(first.current_job_id)
        assert doc is not None
        assert doc.segments
        for seg in doc.segments:
            assert decode_errors(recorder / seg.path) == ""

        await fake_tiktok.go_live("amy")

        async def second_job() -> bool:
            w = await watcher(bus, "@amy")
            return w is not None and len(w.jobs) == 2

        await eventually(second_job, timeout=poll + 15, interval=0.1)
        lives = await lives_published(bus)
        assert len({e.job_id for e in lives}) == 2
        assert len({e.room_id for e in lives}) == 2


async def test_fake_alive_never_starts_a_recording_for_an_offline_room(
    bus: Bus, nats_server: NatsServer, fake_tiktok: FakeTikTok, tmp_path: Path
) -> None:
    await fake_tiktok.create_user("bea")
    live = await fake_tiktok.go_live("bea")
    await fake_tiktok.end("bea")
    await fake_tiktok.set_scenario(fake_alive=True)
    async with SchedulerService(bus, scheduler_settings(nats_server, fake_tiktok, tmp_path)):
        await watch(bus, live.room_id, poll=1, room_id=live.room_id)

        async def confirmed_offline_twice() -> bool:
            infos = await fake_tiktok.requests("/webcast/room/info")
            return len(infos) >= 2

        await eventually(confirmed_offline_twice, timeout=15)
        w = await watcher(bus, live.room_id)
        assert w is not None
        assert w.live_state == "offline"
        assert await lives_published(bus) == []


async def test_room_watchers_are_checked_in_batches(
    bus: Bus, nats_server: NatsServer, fake_tiktok: FakeTikTok, tmp_path: Path
) -> None:
    rooms = []
    for i in range(12):
        await fake_tiktok.create_user(f"c{i}")
        rooms.append((await fake_tiktok.go_live(f"c{i}")).room_id)
        await fake_tiktok.end(f"c{i}")
    settings = scheduler_settings(nats_server, fake_tiktok, tmp_path, check_batch_size=5)
    async with SchedulerService(bus, settings):
        for room in rooms:
            await watch(bus, room, poll=30, room_id=room)

        async def all_checked() -> bool:
            ws = [await watcher(bus, r) for r in rooms]
            return all(w is not None and w.live_state == "offline" for w in ws)

        await eventually(all_checked, timeout=20)
    checks = await fake_tiktok.requests("/webcast/room/check_alive")
    asked = [len(r["query"]["room_ids"].split(",")) for r in checks]
    assert sum(asked) == 12
    assert max(asked) <= 5
    assert len(checks) <= 4  # 12 rooms in batches of 5 (+1 if a command landed mid-pass)


async def test_waf_backs_off_and_polling_resumes(
    bus: Bus, nats_server: NatsServer, fake_tiktok: FakeTikTok, tmp_path: Path
) -> None:
    await fake_tiktok.create_user("dee")
    await fake_tiktok.set_scenario(waf=True)
    async with SchedulerService(bus, scheduler_settings(nats_server, fake_tiktok, tmp_path)):
        await watch(bus, "@dee", poll=1, unique_id="dee")

        async def blocked() -> bool:
            w = await watcher(bus, "@dee")
            return w is not None and w.last_outcome == "waf_blocked"

        await eventually(blocked, timeout=15)
        await fake_tiktok.clear_requests()
        await asyncio.sleep(4)  # a window of the WAF period: count what the poller sends
        # One resolve attempt = the profile page, then the live page (both blocked).
        pages = len(await fake_tiktok.requests("/@dee"))
        # poll_interval 1 s would mean ~4 attempts (8 pages) in 4 s; the backoff (5 s, then
        # 10 s) allows 1.
        assert pages <= 2
        assert await fake_tiktok.requests("/api-live/") == []  # no signer: never asked
        await fake_tiktok.set_scenario(waf=False)

        async def recovered() -> bool:
            w = await watcher(bus, "@dee")
            return w is not None and w.last_outcome == "offline"

        await eventually(recovered, timeout=30)


async def test_a_live_user_is_checked_by_room_id_and_resolved_again_only_after(
    bus: Bus, nats_server: NatsServer, fake_tiktok: FakeTikTok, tmp_path: Path
) -> None:
    # www is where the WAF and the ~20-accounts-per-IP limit bite (upstream #354).
    await fake_tiktok.create_user("gus")
    live = await fake_tiktok.go_live("gus")
    async with SchedulerService(bus, scheduler_settings(nats_server, fake_tiktok, tmp_path)):
        await watch(bus, "@gus", poll=1, unique_id="gus")

        async def detected() -> bool:
            w = await watcher(bus, "@gus")
            return w is not None and w.current_job_id is not None

        await eventually(detected, timeout=15)
        pages = len(await fake_tiktok.requests("/@gus"))
        checks = len(await fake_tiktok.requests("/webcast/room/check_alive"))
        assert pages >= 1

        async def checked_three_more_times() -> bool:
            asked = await fake_tiktok.requests("/webcast/room/check_alive")
            return len(asked) >= checks + 3 and all(
                live.room_id in r["query"]["room_ids"] for r in asked[checks:]
            )

        await eventually(checked_three_more_times, timeout=20)
        assert len(await fake_tiktok.requests("/@gus")) == pages  # no www while it is live
        await fake_tiktok.end("gus")

        async def resolved_again() -> bool:
            w = await watcher(bus, "@gus")
            offline = w is not None and w.live_state == "offline"
            return offline and len(await fake_tiktok.requests("/@gus")) > pages

        await eventually(resolved_again, timeout=20)


async def test_restart_reloads_watchers_and_never_records_a_live_twice(
    bus: Bus, nats_server: NatsServer, fake_tiktok: FakeTikTok, tmp_path: Path
) -> None:
    await fake_tiktok.create_user("eve")
    await fake_tiktok.go_live("eve")
    settings = scheduler_settings(nats_server, fake_tiktok, tmp_path)
    async with SchedulerService(bus, settings):
        await watch(bus, "@eve", poll=1, unique_id="eve")

        async def detected() -> bool:
            return len(await lives_published(bus)) == 1

        await eventually(detected, timeout=15)
    # Simulate a crash between "publish room.live" and "save state": forget the job.
    async with WatcherStore(settings.scheduler_db) as store:
        w = await store.get("@eve")
        assert w is not None
        w.current_job_id, w.jobs, w.live_state = None, [], "unknown"
        await store.put(w, next_check=0)
    async with SchedulerService(bus, settings):

        async def polled_again() -> bool:
            again = await watcher(bus, "@eve")
            return again is not None and again.live_state == "live"

        await eventually(polled_again, timeout=15)
        lives = await lives_published(bus)
        assert len(lives) == 1  # the second publish was deduplicated (same live, same id)
        await bus.publish(WatchDeleted(key="@eve"))

        async def gone() -> bool:
            return await watcher(bus, "@eve") is None

        await eventually(gone, timeout=10)


async def test_only_one_scheduler_polls_and_a_standby_takes_over(
    bus: Bus, nats_server: NatsServer, fake_tiktok: FakeTikTok, tmp_path: Path
) -> None:
    await fake_tiktok.create_user("fay")
    a = SchedulerService(bus, scheduler_settings(nats_server, fake_tiktok, tmp_path, "sched-a"))
    b = SchedulerService(bus, scheduler_settings(nats_server, fake_tiktok, tmp_path, "sched-b"))
    async with b:
        await a.__aenter__()
        try:
            await watch(bus, "@fay", poll=1, unique_id="fay")

            async def one_leader() -> bool:
                return a.leader != b.leader

            await eventually(one_leader, timeout=15)
            first = a if a.leader else b
            await eventually(lambda: _polled(fake_tiktok), timeout=15)
        finally:
            if first is a:
                await a.__aexit__(None, None, None)
        other = b if first is a else a
        if first is b:
            await b.__aexit__(None, None, None)
        await fake_tiktok.clear_requests()

        async def took_over() -> bool:
            return other.leader

        await eventually(took_over, timeout=30)
        await eventually(lambda: _polled(fake_tiktok), timeout=15)
        if other is a:
            await a.__aexit__(None, None, None)


async def _polled(fake: FakeTikTok) -> bool:
    return len(await fake.requests("/@fay")) > 0  # a resolve reads the profile page


async def test_stop_is_prompt_while_the_poller_waits_out_an_egress_backoff(
    bus: Bus, nats_server: NatsServer, fake_tiktok: FakeTikTok, tmp_path: Path
) -> None:
    # An egress in its longest backoff (5 min): a poll pass that comes to it waits in the
    # budget. A rolling upgrade must not wait with it.
    await fake_tiktok.create_user("eve")
    service = SchedulerService(bus, scheduler_settings(nats_server, fake_tiktok, tmp_path))
    await service.__aenter__()
    try:
        for _ in range(8):
            service.deps.budget.penalize("direct")
        await watch(bus, "@eve", poll=10, unique_id="eve")

        async def waiting_in_budget() -> bool:
            return service.deps.budget.waiting > 0

        await eventually(waiting_in_budget, timeout=15)
    finally:
        # Far below the 300 s backoff: stopping interrupts the wait instead of sitting it out.
        await asyncio.wait_for(service.__aexit__(None, None, None), 15)
    assert service.deps.budget.waiting == 0


@pytest.mark.parametrize("scheduler_key", ["another key", "no key"])
async def test_a_watcher_whose_proxy_cannot_be_unsealed_never_asks_tiktok(
    bus: Bus, nats_server: NatsServer, fake_tiktok: FakeTikTok, tmp_path: Path, scheduler_key: str
) -> None:
    # Polling it without its proxy would show TikTok the very IP the proxy is there to hide.
    await fake_tiktok.create_user("pia")
    await fake_tiktok.create_user("tom")
    sealing_key = new_key()
    async with AuthProxy("sched", "s3cret") as proxy:
        options = RecordingOptions(proxy=SecretBox(sealing_key).seal(proxy.url()))
        wrong = scheduler_settings(
            nats_server,
            fake_tiktok,
            tmp_path,
            secret_key=new_key() if scheduler_key == "another key" else None,
        )
        async with SchedulerService(bus, wrong):
            await watch(bus, "@pia", poll=1, unique_id="pia", options=options)
            await watch(bus, "@tom", poll=1, unique_id="tom")  # the same pass, no proxy

            async def both_passed() -> bool:
                ws = [await watcher(bus, key) for key in ("@pia", "@tom")]
                return all(w is not None and w.last_run_at is not None for w in ws)

            await eventually(both_passed, timeout=15)
            assert await fake_tiktok.requests("/@pia") == []
            assert proxy.requests == {}
            assert await fake_tiktok.requests("/@tom") != []
            pia = await watcher(bus, "@pia")
            assert pia is not None
            assert pia.last_outcome == "validation_error"
            assert pia.error_code == ErrorCode.VALIDATION_ERROR
            assert pia.error_message is not None
            assert "SECRET_KEY" in pia.error_message
            assert "s3cret" not in pia.error_message
            assert pia.live_state == "unknown"

        # Given the key that sealed it, the scheduler polls it, through its proxy only (on
        # 127.0.0.1: private proxies allowed).
        right = scheduler_settings(
            nats_server,
            fake_tiktok,
            tmp_path,
            secret_key=sealing_key,
            allow_private_proxies=True,
        )
        async with SchedulerService(bus, right):

            async def polled_through_proxy() -> bool:
                w = await watcher(bus, "@pia")
                return w is not None and w.last_outcome == "offline" and proxy.requests["/@pia"] > 0

            await eventually(polled_through_proxy, timeout=15)
            pia = await watcher(bus, "@pia")
            assert pia is not None
            assert (pia.error_code, pia.error_message) == (None, None)


async def test_commands_about_one_watcher_apply_in_order_while_many_are_handled_at_once(
    bus: Bus, nats_server: NatsServer, fake_tiktok: FakeTikTok, tmp_path: Path
) -> None:
    # A bulk import: the scheduler handles many commands at once (their writes share
    # transactions), yet a watcher registered, deleted and registered again in quick
    # succession ends as its last command says.
    keys = [str(7_100_000_000_000_000_000 + i) for i in range(300)]
    async with SchedulerService(bus, scheduler_settings(nats_server, fake_tiktok, tmp_path)):
        for i, key in enumerate(keys):
            await watch(bus, key, poll=3600, room_id=key)
            if i % 2 == 0:
                await bus.publish(WatchDeleted(key=key))
            if i % 3 == 0:
                await bus.publish(
                    WatchRequested(task_id=f"again-{key}", key=key, poll_interval=3600, room_id=key)
                )

        async def all_applied() -> bool:
            info = await bus.js.consumer_info(SCHEDULER.stream, SCHEDULER.name)
            return info.num_pending == 0 and info.num_ack_pending == 0

        await eventually(all_applied, timeout=30)
        for i, key in enumerate(keys):
            w = await watcher(bus, key)
            if i % 3 == 0:
                assert w is not None
                assert w.task_id == f"again-{key}"
            elif i % 2 == 0:
                assert w is None
            else:
                assert w is not None
                assert w.task_id == f"task-{key}"
