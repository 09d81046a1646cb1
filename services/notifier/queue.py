"""The NOTIFY work queue: a copy of an event per subscription, on notify.<sub>.<job>."""

from __future__ import annotations

import asyncio
import time

import nats.js.errors
from nats.js import JetStreamContext

from shared import events as ev
from shared.bus import TRANSIENT
from shared.logging import get_logger
from shared.subjects import NOTIFY_STREAM

log = get_logger(__name__)


class NotifyQueue:
    """The ``Queue`` of the handlers over JetStream."""

    def __init__(self, js: JetStreamContext, *, retry_for: float = 10.0) -> None:
        self.js = js
        self.retry_for = retry_for

    async def enqueue(self, subject: str, event: ev.Event, msg_id: str) -> None:
        """Queue ``event`` on ``subject``; the same ``msg_id`` again is dropped by JetStream.
        Transient failures are retried with the same id (a leader election takes ~4 s)."""
        headers = {
            "Nats-Msg-Id": msg_id,
            "Event-Type": event.type_name(),
            "Correlation-Id": event.correlation_id,
        }
        data = ev.encode(event)
        deadline = time.monotonic() + self.retry_for
        delay = 0.1
        while True:
            try:
                await self.js.publish(subject, data, headers=headers, stream=NOTIFY_STREAM)
                return
            except TRANSIENT as exc:
                if time.monotonic() + delay > deadline:
                    raise
                log.warning("notifier.enqueue_retry", error=repr(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def first_seq(self, subject: str) -> int | None:
        """The stream sequence of the oldest notification still queued on ``subject``."""
        try:
            msg = await self.js.get_msg(NOTIFY_STREAM, seq=1, subject=subject, next=True)
        except nats.js.errors.NotFoundError:
            return None
        return msg.seq
