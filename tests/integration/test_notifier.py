"""The notifier on a real nats-server, delivering to a real HTTP receiver on loopback: signed
webhooks, retries after 500s, order per job, dead letters, SSRF refusals, Apprise json://."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import msgspec
import pytest

from services.notifier.destinations import REFUSED
from services.notifier.service import NotifierService
from services.notifier.settings import NotifierSettings
from shared.bus import Bus
from shared.documents import KvDocuments
from shared.events import RecordedFile, RecordingFinished, RoomLive
from shared.job_store import JobStore
from shared.jobs import JobRequest
from shared.notifications import CREATE, GET, Subscription, shown
from shared.secrets import SecretBox, new_key
from shared.subjects import JOBS_BUCKET
from tests.helpers import eventually
from tests.webhook_receiver import WebhookReceiver
from tlr.nats_server import NatsServer

KEY = new_key()
BOX = SecretBox(KEY)
SECRET = "whsec-test-1"

Notifier = Callable[..., AbstractAsyncContextManager[NotifierService]]


@pytest.fixture
def notifier(bus: Bus, nats_server: NatsServer) -> Notifier:
    @asynccontextmanager
    async def start(**extra: Any) -> AsyncIterator[NotifierService]:
        settings = NotifierSettings(
            nats_url=nats_server.client_url,
            instance_id="notifier-1",
            secret_key=KEY,
            notify_retry_base=0.05,
            notify_retry_cap=0.2,
            **{"allow_private_webhooks": True, "notify_max_attempts": 3, **extra},
        )
        async with NotifierService(bus, settings) as service:
            yield service

    return start


async def subscribe(
    bus: Bus,
    url: str,
    *,
    owner: str = "alice",
    kind: str = "webhook",
    events: tuple[str, ...] = ("room.live", "recording.finished"),
    watchers: list[str] | None = None,
    sub_id: str = "s1",
) -> Subscription:
    sub = Subscription(
        id=sub_id,
        owner=owner,
        events=list(events),
        watchers=watchers,
        kind=kind,  # type: ignore[arg-type]
        target_sealed=BOX.seal(url),
        target_shown=shown(kind, url),  # type: ignore[arg-type]
        secret_sealed=BOX.seal(SECRET) if kind == "webhook" else None,
    )
    reply = await bus.nc.request(CREATE, msgspec.json.encode(sub), timeout=5)
    return msgspec.json.decode(reply.data, type=Subscription)


async def read_sub(bus: Bus, sub_id: str) -> Subscription:
    reply = await bus.nc.request(GET, msgspec.json.encode({"id": sub_id}), timeout=5)
    return msgspec.json.decode(reply.data, type=Subscription)


async def job_of(bus: Bus, job_id: str, owner: str = "alice") -> None:
    jobs = JobStore(KvDocuments(await bus.kv(JOBS_BUCKET)))
    await jobs.submit(
        JobRequest(job_id=job_id, kind="recording", owner=owner, watcher_key="@alice")
    )


def live(job_id: str) -> RoomLive:
    return RoomLive(
        job_id=job_id, room_id="7001", watcher_key="@alice", unique_id="alice", title="cooking"
    )


def finished(job_id: str) -> RecordingFinished:
    files = [
        RecordedFile(path="7001/a.mp4", size=10, duration_s=1200.0),
        RecordedFile(path="7001/b.mp4", size=10, duration_s=1260.0, part=1),
    ]
    return RecordingFinished(job_id=job_id, room_id="7001", watcher_key="@alice", files=files)


def verify(request: Any) -> None:
    """What a receiver does: recompute the signature over the timestamp and the raw body."""
    timestamp = request.headers["x-tlr-timestamp"]
    mac = hmac.new(SECRET.encode(), timestamp.encode() + b"." + request.body, hashlib.sha256)
    assert hmac.compare_digest(request.headers["x-tlr-signature"], f"sha256={mac.hexdigest()}")


async def test_a_signed_webhook_carries_the_event_as_declared(
    bus: Bus, notifier: Notifier, uid: str
) -> None:
    async with WebhookReceiver() as receiver, notifier():
        await subscribe(bus, f"{receiver.url}/hook?token=abc")
        await subscribe(bus, f"{receiver.url}/bob", owner="bob", sub_id="s2")
        await job_of(bus, uid)
        event = live(uid)
        await bus.publish(event)
        await receiver.wait_for(1)

    (got,) = receiver.requests
    assert got.method == "POST"
    assert got.path == "/hook?token=abc"
    assert got.body == msgspec.json.encode(event)  # the event as the catalogue declares it
    assert got.json()["type"] == "room.live"
    assert got.headers["x-tlr-event"] == "room.live"
    assert got.headers["content-type"] == "application/json"
    verify(got)


async def test_a_webhook_answering_500_is_retried_until_it_takes_it(
    bus: Bus, notifier: Notifier, uid: str
) -> None:
    async with WebhookReceiver(500, 503) as receiver, notifier():
        await subscribe(bus, receiver.url)
        await job_of(bus, uid)
        await bus.publish(live(uid))
        await receiver.wait_for(1)
        sub = await read_sub(bus, "s1")

    assert [r.status for r in receiver.requests] == [500, 503, 200]
    assert len({r.body for r in receiver.requests}) == 1  # the same notification each time
    for request in receiver.requests:
        verify(request)
    assert sub.dead_letters_total == 0


async def test_a_jobs_notifications_arrive_in_order_while_the_first_is_retried(
    bus: Bus, notifier: Notifier, uid: str
) -> None:
    async with WebhookReceiver(500, 500) as receiver, notifier():
        await subscribe(bus, receiver.url)
        await job_of(bus, uid)
        await bus.publish(live(uid))
        await bus.publish(finished(uid))
        await receiver.wait_for(2)

    types = [(r.json()["type"], r.status) for r in receiver.requests]
    assert types == [
        ("room.live", 500),
        ("room.live", 500),
        ("room.live", 200),
        ("recording.finished", 200),
    ]


async def test_a_notification_failing_every_attempt_is_a_dead_letter_and_the_next_goes(
    bus: Bus, notifier: Notifier, uid: str
) -> None:
    async with WebhookReceiver(500, 500, 500) as receiver, notifier(notify_max_attempts=3):
        await subscribe(bus, receiver.url)
        await job_of(bus, uid)
        await bus.publish(live(uid))
        await bus.publish(finished(uid))
        await receiver.wait_for(1)
        sub = await read_sub(bus, "s1")

    assert [(r.json()["type"], r.status) for r in receiver.requests] == [
        ("room.live", 500),
        ("room.live", 500),
        ("room.live", 500),
        ("recording.finished", 200),
    ]
    assert sub.dead_letters_total == 1
    (letter,) = sub.dead_letters
    assert (letter.event_type, letter.job_id, letter.attempts) == ("room.live", uid, 3)
    assert letter.error == "the target answered HTTP 500"


async def test_a_loopback_webhook_is_refused_unless_the_operator_allows_it(
    bus: Bus, notifier: Notifier, uid: str
) -> None:
    async with WebhookReceiver() as receiver, notifier(allow_private_webhooks=False):
        await subscribe(bus, receiver.url)
        await job_of(bus, uid)
        await bus.publish(live(uid))

        async def dead_lettered() -> bool:
            return (await read_sub(bus, "s1")).dead_letters_total > 0

        await eventually(dead_lettered, timeout=15)
        sub = await read_sub(bus, "s1")

    assert receiver.requests == []
    assert sub.dead_letters[0].error == REFUSED


async def test_an_apprise_json_target_gets_a_short_human_message(
    bus: Bus, notifier: Notifier, uid: str
) -> None:
    async with WebhookReceiver() as receiver, notifier():
        await subscribe(bus, f"json://127.0.0.1:{receiver.port}/chat", kind="apprise")
        await job_of(bus, uid)
        await bus.publish(live(uid))
        await bus.publish(finished(uid))
        await receiver.wait_for(2)

    bodies = [r.json() for r in receiver.requests]
    assert [b["message"] for b in bodies] == [
        "@alice is live: cooking",
        "recording finished: 2 files, 41 min",
    ]
    assert {r.path for r in receiver.requests} == {"/chat"}
