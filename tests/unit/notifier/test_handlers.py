"""The notifier's handlers over in-memory fakes: who is told, in what order, and what a failing
target costs (retries counted, then a dead letter)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from services.notifier.handlers import (
    UNSEALABLE,
    WAIT_DELAY,
    DeliveryFailed,
    NotifierDeps,
    on_event,
    on_notification,
    order_key,
)
from services.notifier.messages import message
from services.notifier.settings import NotifierSettings
from shared.consumer import Delivery
from shared.errors import RetryLater
from shared.events import (
    Event,
    FileDeleted,
    RecordedFile,
    RecordingFinished,
    RecordingStarted,
    RoomLive,
)
from shared.jobs import JobRequest
from shared.notifications import DeadLetter, Subscription
from shared.secrets import SecretError


@dataclass
class Fakes:
    subs: dict[str, Subscription] = field(default_factory=dict)
    letters: list[tuple[str, DeadLetter]] = field(default_factory=list)
    tries: dict[tuple[str, int], int] = field(default_factory=dict)
    jobs: dict[str, JobRequest] = field(default_factory=dict)
    queued: list[tuple[str, Event, str]] = field(default_factory=list)
    first: int | None = None  # the oldest queued seq on the subject asked about
    failures: list[str] = field(default_factory=list)  # the sender's next answers
    sent: list[tuple[str, str | None, Event]] = field(default_factory=list)

    # Subscriptions
    async def all(self) -> list[Subscription]:
        return list(self.subs.values())

    async def get(self, sub_id: str) -> Subscription | None:
        return self.subs.get(sub_id)

    async def dead_letter(self, sub_id: str, letter: DeadLetter) -> None:
        self.letters.append((sub_id, letter))

    # Attempts
    async def failed(self, sub_id: str, seq: int) -> int:
        self.tries[sub_id, seq] = self.tries.get((sub_id, seq), 0) + 1
        return self.tries[sub_id, seq]

    async def clear(self, sub_id: str, seq: int) -> None:
        self.tries.pop((sub_id, seq), None)

    # Jobs
    async def request(self, job_id: str) -> JobRequest | None:
        return self.jobs.get(job_id)

    # Queue
    async def enqueue(self, subject: str, event: Event, msg_id: str) -> None:
        self.queued.append((subject, event, msg_id))

    async def first_seq(self, subject: str) -> int | None:  # noqa: ARG002
        return self.first

    # Sender
    async def send(self, target: str, secret: str | None, event: Event) -> None:
        if self.failures:
            raise DeliveryFailed(self.failures.pop(0))
        self.sent.append((target, secret, event))

    # Unsealer
    def unseal(self, token: str) -> str:
        if not token.startswith("sealed:"):
            msg = "not sealed"
            raise SecretError(msg)
        return token.removeprefix("sealed:")


def deps(fakes: Fakes, attempts: int = 3) -> NotifierDeps:
    settings = NotifierSettings(
        notify_max_attempts=attempts, notify_retry_base=1.0, notify_retry_cap=30.0
    )
    return NotifierDeps(
        settings=settings,
        subscriptions=fakes,
        attempts=fakes,
        jobs=fakes,
        queue=fakes,
        senders={"webhook": fakes, "apprise": fakes},
        secrets=fakes,
    )


def sub(sub_id: str, owner: str = "alice", **extra: object) -> Subscription:
    fields: dict[str, object] = {
        "events": ["room.live", "recording.started", "recording.finished"],
        "kind": "webhook",
        "target_sealed": f"sealed:https://hooks.example/{sub_id}",
        "target_shown": "https://hooks.example/…",
        "secret_sealed": "sealed:s3cret",
        **extra,
    }
    return Subscription(id=sub_id, owner=owner, **fields)  # type: ignore[arg-type]


def live(job_id: str = "j1", watcher: str = "@alice") -> RoomLive:
    return RoomLive(job_id=job_id, room_id="7001", watcher_key=watcher, unique_id="alice")


def delivery(sub_id: str, seq: int, num_delivered: int = 1, job: str = "j1") -> Delivery:
    async def beat() -> None:
        return None

    return Delivery(f"notify.{sub_id}.{job}", num_delivered, seq, beat)


# --- fan-out ------------------------------------------------------------------------------------


async def test_an_event_is_queued_for_the_subscriptions_of_its_jobs_owner_only() -> None:
    fakes = Fakes(jobs={"j1": JobRequest(job_id="j1", owner="alice", watcher_key="@alice")})
    fakes.subs = {
        "a": sub("a"),
        "b": sub("b", owner="bob"),
        "admin": sub("admin", owner="ops", sees_all=True),
        "ends": sub("ends", events=["recording.finished"]),
        "other": sub("other", watchers=["@carol"]),
        "mine": sub("mine", watchers=["@alice"]),
    }
    event = live()
    await on_event(event, deps(fakes))
    assert [(s, m) for s, _, m in fakes.queued] == [
        ("notify.a.j1", f"{event.event_id}.a"),
        ("notify.admin.j1", f"{event.event_id}.admin"),
        ("notify.mine.j1", f"{event.event_id}.mine"),
    ]
    assert all(e is event for _, e, _ in fakes.queued)


async def test_an_events_watcher_comes_from_its_job_when_the_event_has_none() -> None:
    fakes = Fakes(jobs={"j1": JobRequest(job_id="j1", owner="alice", watcher_key="@alice")})
    fakes.subs = {"mine": sub("mine", watchers=["@alice"]), "not": sub("not", watchers=["@x"])}
    await on_event(RecordingStarted(job_id="j1", room_id="7001", recorder_id="r"), deps(fakes))
    assert [s for s, _, _ in fakes.queued] == ["notify.mine.j1"]


async def test_an_event_of_no_known_owner_goes_to_admins_only() -> None:
    fakes = Fakes()
    fakes.subs = {
        "a": sub("a", events=["file.deleted"]),
        "ops": sub("ops", owner="ops", sees_all=True, events=["file.deleted"]),
    }
    await on_event(FileDeleted(path="7001/a.mp4", reason="retention"), deps(fakes))
    assert [s for s, _, _ in fakes.queued] == ["notify.ops.none"]


def test_the_order_key_is_one_safe_subject_token() -> None:
    assert order_key(live("3f2c-uuid_1")) == "3f2c-uuid_1"
    odd = order_key(live("a.b>*"))
    assert len(odd) == 32
    assert odd.isalnum()
    assert odd == order_key(live("a.b>*"))


# --- delivery -----------------------------------------------------------------------------------


async def test_a_notification_is_sent_with_its_target_and_secret_unsealed() -> None:
    fakes = Fakes(subs={"a": sub("a")})
    event = live()
    await on_notification(event, delivery("a", 5), deps(fakes))
    assert fakes.sent == [("https://hooks.example/a", "s3cret", event)]


async def test_a_notification_behind_an_older_one_of_its_job_waits_without_an_attempt() -> None:
    fakes = Fakes(subs={"a": sub("a")}, first=4)
    with pytest.raises(RetryLater) as waited:
        await on_notification(live(), delivery("a", 5, num_delivered=7), deps(fakes))
    assert waited.value.delay == WAIT_DELAY
    assert fakes.sent == []
    assert fakes.tries == {}


async def test_failed_attempts_are_counted_then_the_last_one_is_a_dead_letter() -> None:
    fakes = Fakes(subs={"a": sub("a")}, failures=["the target answered HTTP 500"] * 3)
    event = live()
    for n in (1, 2):
        with pytest.raises(RetryLater) as retry:
            await on_notification(event, delivery("a", 5, num_delivered=n), deps(fakes))
        assert 0 <= retry.value.delay <= 2 ** (n - 1)
        assert fakes.tries == {("a", 5): n}
    await on_notification(event, delivery("a", 5, num_delivered=3), deps(fakes))  # given up
    ((sub_id, letter),) = fakes.letters
    assert sub_id == "a"
    assert (letter.event_id, letter.event_type, letter.job_id) == (
        event.event_id,
        "room.live",
        "j1",
    )
    assert (letter.attempts, letter.error) == (3, "the target answered HTTP 500")
    assert fakes.tries == {}
    assert fakes.sent == []


async def test_a_success_after_failures_forgets_them() -> None:
    fakes = Fakes(subs={"a": sub("a")}, failures=["could not connect"])
    with pytest.raises(RetryLater):
        await on_notification(live(), delivery("a", 5), deps(fakes))
    await on_notification(live(), delivery("a", 5, num_delivered=2), deps(fakes))
    assert len(fakes.sent) == 1
    assert fakes.tries == {}
    assert fakes.letters == []


async def test_a_deleted_subscriptions_notification_is_dropped_with_its_attempts() -> None:
    fakes = Fakes(tries={("gone", 5): 2})
    await on_notification(live(), delivery("gone", 5, num_delivered=3), deps(fakes))
    assert fakes.sent == []
    assert fakes.letters == []
    assert fakes.tries == {}


async def test_a_target_this_key_cannot_open_fails_like_an_attempt() -> None:
    fakes = Fakes(subs={"a": sub("a", target_sealed="plain-text")})
    await on_notification(live(), delivery("a", 5), deps(fakes, attempts=1))
    ((_, letter),) = fakes.letters
    assert letter.error == UNSEALABLE


# --- messages -----------------------------------------------------------------------------------


def test_the_human_messages_are_short() -> None:
    files = [
        RecordedFile(path="a.mp4", size=1, duration_s=1200.0),
        RecordedFile(path="b.mp4", size=1, duration_s=1260.0),
    ]
    assert (
        message(
            RoomLive(job_id="j", room_id="1", watcher_key="@a", unique_id="alice", title="cooking")
        )
        == "@alice is live: cooking"
    )
    assert message(RoomLive(job_id="j", room_id="1", watcher_key="@alice")) == "@alice is live"
    assert message(RecordingFinished(job_id="j", files=files)) == (
        "recording finished: 2 files, 41 min"
    )
    joined = RecordedFile(path="a-joined.mp4", size=2, duration_s=2460.0, joined_from=(0, 1))
    assert message(RecordingFinished(job_id="j", files=[*files, joined])) == (
        "recording finished: 2 files, 41 min, joined into one"  # not 3 files, 82 min
    )
    assert message(RecordingFinished(job_id="j", returncode=1, error_code="LIVE_OFFLINE")) == (
        "recording failed: LIVE_OFFLINE"
    )
