"""What the notifier does: fan an event out to the subscriptions that want it, then deliver
each copy, in order per subscription and job, retried until it succeeds or is given up.

Plain async functions over a frozen deps object of small Protocols: no NATS here.

Fan-out (durable ``notifier`` on EVENTS, one event at a time): the subscriptions that want
the event (its type, its job's owner, its watcher) each get a copy queued on
``notify.<subscription>.<job>``, deduplicated by ``<event_id>.<subscription>``, so an event
fanned out again after a crash queues nothing twice.

Delivery (durable ``notifier-deliveries``): a copy waits while an older one of the same
subject is still queued (order per job); a failed attempt is counted (KV, so every notifier
instance and a restart agree) and retried after a growing, jittered delay (nak); the last
allowed failure records a dead letter on the subscription and removes the copy, which lets
the next one of the job go.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Protocol

from services.notifier import metrics
from services.notifier.settings import NotifierSettings
from shared.consumer import Delivery, retry_delay
from shared.errors import RetryLater
from shared.events import Event
from shared.jobs import JobRequest
from shared.logging import get_logger
from shared.notifications import NOTIFIABLE_TYPES, DeadLetter, Subscription
from shared.secrets import SecretError
from shared.subjects import NOTIFY_SUBJECT_PREFIX

log = get_logger(__name__)

# A copy behind an older one of its job asks again this often (not an attempt: not counted).
WAIT_DELAY = 1.0
UNSEALABLE = "the target cannot be opened with this SECRET_KEY"
_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,64}")


class DeliveryFailed(Exception):
    """An attempt that did not get through; the message is a fixed phrase, safe to show."""


class Subscriptions(Protocol):
    async def all(self) -> list[Subscription]: ...
    async def get(self, sub_id: str) -> Subscription | None: ...
    async def dead_letter(self, sub_id: str, letter: DeadLetter) -> None: ...


class Attempts(Protocol):
    """Failed attempts per queued copy (``sub_id`` and its stream sequence)."""

    async def failed(self, sub_id: str, seq: int) -> int: ...
    async def clear(self, sub_id: str, seq: int) -> None: ...


class Jobs(Protocol):
    async def request(self, job_id: str) -> JobRequest | None: ...


class Queue(Protocol):
    async def enqueue(self, subject: str, event: Event, msg_id: str) -> None: ...
    async def first_seq(self, subject: str) -> int | None: ...


class Sender(Protocol):
    """One kind of target: raises :class:`DeliveryFailed` when the attempt failed."""

    async def send(self, target: str, secret: str | None, event: Event) -> None: ...


class Unsealer(Protocol):
    def unseal(self, token: str) -> str: ...


@dataclass(frozen=True)
class NotifierDeps:
    """Everything the notifier's handlers use, built once in ``service.py``."""

    settings: NotifierSettings
    subscriptions: Subscriptions
    attempts: Attempts
    jobs: Jobs
    queue: Queue
    senders: dict[str, Sender]
    secrets: Unsealer


def order_key(event: Event) -> str:
    """What a subscription's notifications are ordered by: the job (else the room), as one
    subject token."""
    key = getattr(event, "job_id", None) or getattr(event, "room_id", None) or "none"
    if _TOKEN.fullmatch(key):
        return str(key)
    return hashlib.sha256(str(key).encode()).hexdigest()[:32]


def subject_of(sub_id: str, event: Event) -> str:
    return f"{NOTIFY_SUBJECT_PREFIX}.{sub_id}.{order_key(event)}"


def wants(sub: Subscription, event: Event, owner: str | None, watcher_key: str | None) -> bool:
    """Whether ``sub`` is told of ``event``, whose job belongs to ``owner`` (None: unknown,
    an admin's only) and was started by ``watcher_key``."""
    if event.type_name() not in sub.events:
        return False
    if not sub.sees_all and (owner is None or owner != sub.owner):
        return False
    return sub.watchers is None or (watcher_key is not None and watcher_key in sub.watchers)


async def on_event(event: Event, deps: NotifierDeps) -> None:
    """Queue a copy of ``event`` for every subscription that wants it."""
    if event.type_name() not in NOTIFIABLE_TYPES:
        return
    subs = await deps.subscriptions.all()
    if not subs:
        return
    owner: str | None = None
    watcher_key: str | None = getattr(event, "watcher_key", None)
    job_id = getattr(event, "job_id", None)
    if job_id:
        request = await deps.jobs.request(job_id)
        if request is not None:
            owner = request.owner
            watcher_key = watcher_key or request.watcher_key
    for sub in subs:
        if wants(sub, event, owner, watcher_key):
            await deps.queue.enqueue(subject_of(sub.id, event), event, f"{event.event_id}.{sub.id}")
            metrics.QUEUED.labels(event.type_name()).inc()


def _sub_id(subject: str) -> str:
    return subject.split(".", 2)[1]


async def on_notification(event: Event, delivery: Delivery, deps: NotifierDeps) -> None:
    """Deliver one queued copy: returns when it is done with (delivered, given up, or its
    subscription is gone); raises RetryLater to be asked again."""
    seq = delivery.stream_seq
    first = await deps.queue.first_seq(delivery.subject)
    if first is not None and first < seq:
        msg = "an older notification of this job is not delivered yet"
        raise RetryLater(msg, WAIT_DELAY)
    sub_id = _sub_id(delivery.subject)
    sub = await deps.subscriptions.get(sub_id)
    if sub is None:
        log.info("notifier.subscription_gone", subscription=sub_id)
        if delivery.num_delivered > 1:  # failed attempts of a target no one wants any more
            await deps.attempts.clear(sub_id, seq)
        return
    sender = deps.senders[sub.kind]
    try:
        secret = deps.secrets.unseal(sub.secret_sealed) if sub.secret_sealed else None
        target = deps.secrets.unseal(sub.target_sealed)
    except SecretError:
        await _failed(event, seq, sub, UNSEALABLE, deps)
        return
    try:
        with metrics.SEND_SECONDS.labels(sub.kind).time():
            await sender.send(target, secret, event)
    except DeliveryFailed as exc:
        await _failed(event, seq, sub, str(exc), deps)
        return
    metrics.SENT.labels(sub.kind, "delivered").inc()
    log.info("notifier.delivered", subscription=sub.id, kind=sub.kind)
    if delivery.num_delivered > 1:  # a first delivery has no failed attempts to forget
        await deps.attempts.clear(sub.id, seq)


async def _failed(
    event: Event, seq: int, sub: Subscription, error: str, deps: NotifierDeps
) -> None:
    settings = deps.settings
    attempts = await deps.attempts.failed(sub.id, seq)
    if attempts < settings.notify_max_attempts:
        metrics.SENT.labels(sub.kind, "failed").inc()
        delay = retry_delay(
            attempts, base=settings.notify_retry_base, cap=settings.notify_retry_cap
        )
        log.warning("notifier.attempt_failed", subscription=sub.id, error=error, attempts=attempts)
        msg = f"attempt {attempts} failed: {error}"
        raise RetryLater(msg, delay)
    metrics.SENT.labels(sub.kind, "dead_letter").inc()
    log.error("notifier.dead_letter", subscription=sub.id, error=error, attempts=attempts)
    letter = DeadLetter(
        event_id=event.event_id,
        event_type=event.type_name(),
        job_id=getattr(event, "job_id", None),
        attempts=attempts,
        error=error,
    )
    await deps.subscriptions.dead_letter(sub.id, letter)
    await deps.attempts.clear(sub.id, seq)
