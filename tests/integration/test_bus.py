"""The bus against a real nats-server: provisioning, dedupe, and the consume loop's acks."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import msgspec
import pytest
from nats.js.api import ConsumerInfo

from shared import events as ev
from shared.bus import Bus
from shared.consumer import Delivery
from shared.errors import PermanentError, RetryLater
from shared.subjects import (
    BUCKETS,
    DURABLES,
    EVENTS,
    EVENTS_STREAM,
    RECORDERS,
    SCHEDULER,
    STREAMS,
)
from tests.helpers import eventually


async def consumer_info(bus: Bus, durable_name: str) -> ConsumerInfo:
    return await bus.js.consumer_info(EVENTS_STREAM, durable_name)


async def test_provisioning_is_idempotent(bus: Bus) -> None:
    await bus.provision(durables=DURABLES)
    await bus.provision(durables=DURABLES)  # again: no error, nothing duplicated
    names = {s.config.name for s in await bus.js.streams_info()}
    assert names == {*(c.name for c in STREAMS), *(f"KV_{b.bucket}" for b in BUCKETS)}
    for durable in DURABLES:
        info = await bus.js.consumer_info(durable.stream, durable.name)
        assert info.config.filter_subjects == durable.config.filter_subjects
    assert await bus.resources_ready()


async def test_provisioning_updates_a_changed_stream(bus: Bus) -> None:
    await bus.ensure_stream(replace(EVENTS, max_age=3600))
    assert (await bus.js.stream_info(EVENTS_STREAM)).config.max_age == 3600
    await bus.provision()
    assert (await bus.js.stream_info(EVENTS_STREAM)).config.max_age == EVENTS.max_age


async def test_provisioning_keeps_stored_events(bus: Bus) -> None:
    await bus.publish(ev.WatchDeleted(key="k"))
    await bus.provision()
    assert (await bus.js.stream_info(EVENTS_STREAM)).state.messages == 1


async def test_publish_dedupes_by_event_id(bus: Bus) -> None:
    event = ev.RoomLive(event_id="live:7501:s1", job_id="j1", room_id="7501", watcher_key="w")
    first = await bus.publish(event)
    again = await bus.publish(event)
    assert not first.duplicate
    assert again.duplicate
    assert again.seq == first.seq
    other = await bus.publish(msgspec.structs.replace(event, event_id="live:7501:s2"))
    assert other.seq == first.seq + 1


async def test_published_message_carries_headers(bus: Bus) -> None:
    event = ev.WatchDeleted(key="@alice")
    ack = await bus.publish(event)
    raw = await bus.js.get_msg(EVENTS_STREAM, ack.seq)
    assert raw.headers is not None
    assert raw.headers["Nats-Msg-Id"] == event.event_id
    assert raw.headers["Event-Type"] == "watch.deleted"
    assert raw.headers["Correlation-Id"] == event.correlation_id
    assert ev.decode(raw.data or b"") == event


async def run_consumer(
    bus: Bus, handler: object, *, heartbeat: float | None = None
) -> tuple[asyncio.Event, asyncio.Task[None]]:
    await bus.provision(durables=(SCHEDULER,))
    stop = asyncio.Event()
    consumer = bus.consumer(SCHEDULER, handler, heartbeat=heartbeat)  # type: ignore[arg-type]
    return stop, asyncio.create_task(consumer.run(stop, grace=5))


async def test_success_is_acked_once(bus: Bus) -> None:
    seen: asyncio.Queue[tuple[ev.Event, Delivery]] = asyncio.Queue()

    async def handler(event: ev.Event, delivery: Delivery) -> None:
        await seen.put((event, delivery))

    stop, task = await run_consumer(bus, handler)
    sent = ev.WatchRequested(task_id="t", key="@a")
    await bus.publish(sent)
    got, delivery = await asyncio.wait_for(seen.get(), 5)
    assert got == sent
    assert delivery.num_delivered == 1
    assert delivery.subject == "watch.requested"

    async def acked() -> bool:
        info = await consumer_info(bus, SCHEDULER.name)
        return info.num_ack_pending == 0 and info.ack_floor.stream_seq == delivery.stream_seq

    await eventually(acked)
    stop.set()
    await asyncio.wait_for(task, 10)
    assert seen.empty()


async def test_failure_is_nakked_and_redelivered(bus: Bus) -> None:
    attempts: list[int] = []
    done = asyncio.Event()

    async def handler(_event: ev.Event, delivery: Delivery) -> None:
        attempts.append(delivery.num_delivered)
        if delivery.num_delivered == 1:
            msg = "transient"
            raise RuntimeError(msg)
        done.set()

    stop, task = await run_consumer(bus, handler)
    await bus.publish(ev.WatchDeleted(key="k"))
    await asyncio.wait_for(done.wait(), 10)
    assert attempts == [1, 2]
    stop.set()
    await asyncio.wait_for(task, 10)


async def test_retry_later_uses_the_requested_delay(bus: Bus) -> None:
    times: list[float] = []
    done = asyncio.Event()
    loop = asyncio.get_running_loop()

    async def handler(_event: ev.Event, delivery: Delivery) -> None:
        times.append(loop.time())
        if delivery.num_delivered == 1:
            reason = "lease held elsewhere"
            raise RetryLater(reason, delay=0.3)
        done.set()

    stop, task = await run_consumer(bus, handler)
    await bus.publish(ev.WatchDeleted(key="k"))
    await asyncio.wait_for(done.wait(), 10)
    assert times[1] - times[0] >= 0.25
    stop.set()
    await asyncio.wait_for(task, 10)


@pytest.mark.parametrize("poison", ["handler_rejects", "undecodable"])
async def test_poison_messages_are_terminated_not_redelivered(bus: Bus, poison: str) -> None:
    calls: list[int] = []

    async def handler(_event: ev.Event, delivery: Delivery) -> None:
        calls.append(delivery.num_delivered)
        msg = "cannot ever succeed"
        raise PermanentError(msg)

    stop, task = await run_consumer(bus, handler)
    if poison == "undecodable":
        ack = await bus.js.publish("watch.requested", b'{"type": "watch.requested"}')
    else:
        ack = await bus.publish(ev.WatchDeleted(key="k"))
    # A later good message proves the loop carried on past the poison one.
    follow = await bus.publish(ev.WatchDeleted(key="after"))

    async def settled() -> bool:
        info = await consumer_info(bus, SCHEDULER.name)
        return info.ack_floor.stream_seq >= follow.seq and info.num_ack_pending == 0

    await eventually(settled)
    info = await consumer_info(bus, SCHEDULER.name)
    assert info.num_redelivered == 0
    assert ack.seq < follow.seq
    assert calls == ([1, 1] if poison == "handler_rejects" else [1])
    stop.set()
    await asyncio.wait_for(task, 10)


async def test_heartbeat_keeps_a_long_handler_from_redelivery(bus: Bus) -> None:
    # ack_wait 1 s, the handler takes 2.5 s: without in_progress() it would be redelivered.
    await bus.provision(
        durables=(replace(SCHEDULER, config=replace(SCHEDULER.config, ack_wait=1)),)
    )
    deliveries: list[int] = []

    async def slow(_event: ev.Event, delivery: Delivery) -> None:
        deliveries.append(delivery.num_delivered)
        await asyncio.sleep(2.5)  # stands for a long recording

    stop = asyncio.Event()
    consumer = bus.consumer(SCHEDULER, slow, concurrency=2, heartbeat=0.3)
    task = asyncio.create_task(consumer.run(stop))
    ack = await bus.publish(ev.WatchDeleted(key="k"))

    async def acked() -> bool:
        return (await consumer_info(bus, SCHEDULER.name)).ack_floor.stream_seq == ack.seq

    await eventually(acked, timeout=10)
    assert deliveries == [1]
    stop.set()
    await asyncio.wait_for(task, 10)


async def test_stop_lets_work_in_flight_finish_and_ack(bus: Bus) -> None:
    started = asyncio.Event()
    finished: list[str] = []

    async def handler(event: ev.Event, _delivery: Delivery) -> None:
        started.set()
        await asyncio.sleep(0.5)
        assert isinstance(event, ev.WatchDeleted)
        finished.append(event.key)

    stop, task = await run_consumer(bus, handler)
    ack = await bus.publish(ev.WatchDeleted(key="in-flight"))
    await asyncio.wait_for(started.wait(), 5)
    stop.set()
    await asyncio.wait_for(task, 10)
    assert finished == ["in-flight"]
    await eventually(
        lambda: _ack_floor_at(bus, SCHEDULER.name, ack.seq),
    )


async def test_work_unfinished_at_grace_is_handed_back_at_once(bus: Bus) -> None:
    await bus.provision(durables=(RECORDERS,))
    started = asyncio.Event()

    async def endless(_event: ev.Event, _delivery: Delivery) -> None:
        started.set()
        await asyncio.Event().wait()

    stop = asyncio.Event()
    task = asyncio.create_task(bus.consumer(RECORDERS, endless).run(stop, grace=0.2))
    await bus.publish(ev.RecordingRequested(job_id="j", room_id="1"))
    await asyncio.wait_for(started.wait(), 5)
    stop.set()
    await asyncio.wait_for(task, 5)

    # Another recorder gets the job right away, not after ack_wait (30 s).
    redelivered = asyncio.Event()

    async def take(_event: ev.Event, delivery: Delivery) -> None:
        assert delivery.num_delivered == 2
        redelivered.set()

    stop2 = asyncio.Event()
    task2 = asyncio.create_task(bus.consumer(RECORDERS, take).run(stop2))
    await asyncio.wait_for(redelivered.wait(), 5)
    stop2.set()
    await asyncio.wait_for(task2, 5)


async def _ack_floor_at(bus: Bus, durable: str, seq: int) -> bool:
    return (await consumer_info(bus, durable)).ack_floor.stream_seq == seq
