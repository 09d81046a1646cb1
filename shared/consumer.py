"""Consuming a durable: the pull loop, a handler per message, ack/nak/term and heartbeats."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec
import nats.errors
import nats.js.errors
import structlog
from nats.aio.msg import Msg

from shared import events as ev
from shared import metrics
from shared.bus import TRANSIENT, Bus
from shared.errors import NotMine, PermanentError, RetryLater
from shared.logging import get_logger
from shared.subjects import Durable

log = get_logger(__name__)

# What a fetch raises when its durable is gone: the server answers a pull on a consumer that
# does not exist with "no responders" (503), the same as during a leader election.
MAYBE_GONE = (nats.js.errors.ServiceUnavailableError, nats.js.errors.NotFoundError)


@dataclass(frozen=True)
class Delivery:
    """What a handler may know about the message besides its event (handlers never see NATS)."""

    subject: str
    num_delivered: int
    stream_seq: int
    in_progress: Callable[[], Awaitable[None]]


Handler = Callable[[ev.Event, Delivery], Awaitable[None]]


def retry_delay(
    num_delivered: int,
    *,
    base: float = 1.0,
    cap: float = 60.0,
    rng: Callable[[], float] = random.random,
) -> float:
    """Nak delay with full jitter: uniform in [0, min(cap, base * 2^(n-1))].

    The ceiling grows 1, 2, 4 ... s up to ``cap``; the draw under it spreads the retries of
    every process that failed in the same outage, so they do not all come back at once.
    """
    ceiling = min(cap, base * 2 ** min(max(0, num_delivered - 1), 64))
    return float(ceiling * rng())


class Consumer:
    """Pulls a durable and runs a handler per message: ack on success, nak on error, term poison.

    It pulls only as many messages as it has free slots, because ``max_ack_pending`` is shared
    by every process on the durable: a busy process must leave work to the others.
    """

    def __init__(
        self,
        bus: Bus,
        durable: Durable,
        handler: Handler,
        *,
        concurrency: int = 1,
        heartbeat: float | None = None,
        fetch_timeout: float = 1.0,
    ) -> None:
        self.bus = bus
        self.durable = durable
        self.handler = handler
        self.concurrency = concurrency
        self.heartbeat = heartbeat
        self.fetch_timeout = fetch_timeout
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def run(self, stop: asyncio.Event, *, grace: float = 10.0) -> None:
        """Consume until ``stop`` is set, then let handlers in flight finish within ``grace``."""
        sub = await self.bus.js.pull_subscribe_bind(self.durable.name, stream=self.durable.stream)
        try:
            while not stop.is_set():
                free = self.concurrency - len(self._tasks)
                if free <= 0:
                    await self._wait_for_slot(stop)
                    continue
                try:
                    msgs = await sub.fetch(free, timeout=self.fetch_timeout)
                except TimeoutError:
                    # Nothing to deliver; nats-py raises its own or, when the server's answer
                    # to a batch pull is late, the builtin one: an empty fetch either way.
                    continue
                except (*TRANSIENT, nats.js.errors.APIError) as exc:
                    log.warning("bus.fetch_failed", durable=self.durable.name, error=repr(exc))
                    if isinstance(exc, MAYBE_GONE):
                        await self._restore_if_gone()
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(stop.wait(), 1.0)
                    continue
                if stop.is_set():
                    # Pulled while we began to drain: hand them straight back.
                    for msg in msgs:
                        await self._settle(msg, "nak", delay=0)
                    break
                for msg in msgs:
                    task = asyncio.create_task(self._handle(msg))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
        finally:
            await self._finish(grace)
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _restore_if_gone(self) -> None:
        """Provision the durable (and the streams and buckets) again when it no longer exists:
        the server lost its store, or someone deleted it. The pull subscription needs no new
        bind: its next fetch reaches the durable re-created under the same name."""
        try:
            await self.bus.js.consumer_info(self.durable.stream, self.durable.name)
        except nats.js.errors.NotFoundError:
            pass  # consumer not found, or its stream not found
        except (*TRANSIENT, nats.js.errors.APIError):
            return  # NATS away or electing a leader: the next fetch tells more
        else:
            return
        log.warning("bus.durable_missing", durable=self.durable.name, stream=self.durable.stream)
        try:
            await self.bus.provision(durables=(self.durable,))
        except (*TRANSIENT, nats.js.errors.APIError) as exc:
            log.warning("bus.durable_restore_failed", durable=self.durable.name, error=repr(exc))
            return
        log.info("bus.durable_restored", durable=self.durable.name)

    async def _wait_for_slot(self, stop: asyncio.Event) -> None:
        stopper = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({*self._tasks, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()

    async def _finish(self, grace: float) -> None:
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)

    async def _handle(self, msg: Msg) -> None:
        name = self.durable.name
        try:
            event = ev.decode(msg.data)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            log.error("bus.poison_message", durable=name, subject=msg.subject, error=str(exc))
            await self._settle(msg, "term")
            return
        md = msg.metadata
        delivery = Delivery(
            subject=msg.subject,
            num_delivered=md.num_delivered or 1,
            stream_seq=md.sequence.stream if md.sequence else 0,
            in_progress=msg.in_progress,
        )
        heart = asyncio.create_task(self._beat(msg)) if self.heartbeat else None
        started = time.perf_counter()
        with structlog.contextvars.bound_contextvars(**log_context(event)):
            try:
                await self.handler(event, delivery)
            except asyncio.CancelledError:
                # Shutdown with the handler unfinished: hand the message to another process now.
                await self._settle(msg, "nak", delay=0)
                raise
            except NotMine as exc:
                log.warning("bus.handler_not_mine", durable=name, reason=str(exc))
                metrics.MESSAGES.labels(name, "left").inc()
            except PermanentError as exc:
                log.error("bus.handler_rejected", durable=name, error=str(exc))
                await self._settle(msg, "term")
            except RetryLater as exc:
                log.info("bus.handler_retry_later", durable=name, reason=str(exc), delay=exc.delay)
                await self._settle(msg, "nak", delay=exc.delay)
            except Exception:
                delay = retry_delay(delivery.num_delivered)
                log.exception(
                    "bus.handler_failed",
                    durable=name,
                    num_delivered=delivery.num_delivered,
                    retry_in=delay,
                )
                await self._settle(msg, "nak", delay=delay)
            else:
                await self._settle(msg, "ack")
            finally:
                if heart:
                    heart.cancel()
                elapsed = time.perf_counter() - started
                metrics.HANDLER_SECONDS.labels(name).observe(elapsed)
                log.debug("bus.handled", durable=name, duration=round(elapsed, 3))

    async def _beat(self, msg: Msg) -> None:
        assert self.heartbeat
        while True:
            await asyncio.sleep(self.heartbeat)
            with contextlib.suppress(*TRANSIENT):
                await msg.in_progress()

    async def _settle(self, msg: Msg, outcome: str, *, delay: float | None = None) -> None:
        metrics.MESSAGES.labels(self.durable.name, outcome).inc()
        try:
            if outcome == "ack":
                await msg.ack()
            elif outcome == "term":
                await msg.term()
            else:
                await msg.nak(delay=delay or None)
        except (*TRANSIENT, nats.errors.MsgAlreadyAckdError) as exc:
            # The server redelivers after ack_wait; handlers are idempotent.
            log.warning("bus.settle_failed", outcome=outcome, error=repr(exc))


def log_context(event: ev.Event) -> dict[str, Any]:
    """What every log line about ``event`` carries: the correlation id that came from the
    gateway, the job as ``task_id`` (the API's name for it) and the room or URL when known."""
    context: dict[str, Any] = {
        "correlation_id": event.correlation_id,
        "event_type": event.type_name(),
        "event_id": event.event_id,
    }
    pairs = (("job_id", "task_id"), ("task_id", "task_id"), ("room_id", "room_id"), ("url", "url"))
    for field, key in pairs:
        value = getattr(event, field, None)
        if value:
            context[key] = value
    return context


__all__ = ["Consumer", "Delivery", "Handler", "retry_delay"]
