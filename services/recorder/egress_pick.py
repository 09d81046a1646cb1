"""The recorder's adapter to the scheduler's egress pool: which egress a job goes through.

It asks ``tlr.scheduler.egresses.pick`` (:data:`shared.egresses.PICK`). Anything that keeps a
usable answer from arriving (no scheduler running, a timeout, a lost connection, an error
reply, a reply that does not decode) is ``PickFailed``: the caller decides what then.
"""

from __future__ import annotations

import msgspec
import nats.errors
from nats.aio.client import Client
from nats.micro.request import ERROR_CODE_HEADER

from services.recorder.deps import PickFailed
from shared.egresses import PICK, PickReply, PickRequest

# A job's start waits this long at most for the scheduler: it is a local request/reply, so
# more means the scheduler is stuck, and the job is better off going direct now.
PICK_TIMEOUT = 2.0


class NatsEgressPicker:
    """:class:`services.recorder.deps.EgressPicker` over NATS request/reply."""

    def __init__(self, nc: Client, *, timeout: float = PICK_TIMEOUT) -> None:
        self._nc = nc
        self._timeout = timeout

    async def pick(self, name: str | None) -> PickReply:
        """The egress ``name`` if it is healthy, else the least-loaded healthy one, with its
        proxy sealed; a reply without a name: the pool is empty. Raises PickFailed."""
        body = msgspec.json.encode(PickRequest(name=name))
        try:
            reply = await self._nc.request(PICK, body, timeout=self._timeout)
        except nats.errors.NoRespondersError as exc:
            msg = "no scheduler answers egress picks"
            raise PickFailed(msg) from exc
        except nats.errors.TimeoutError as exc:
            msg = f"no answer from the scheduler within {self._timeout:g} s"
            raise PickFailed(msg) from exc
        except nats.errors.Error as exc:  # connection closed or draining, permissions
            msg = f"the pick request failed: {type(exc).__name__}"
            raise PickFailed(msg) from exc
        code = reply.headers.get(ERROR_CODE_HEADER) if reply.headers else None
        if code:
            msg = f"the scheduler answered error {code}"
            raise PickFailed(msg)
        try:
            return msgspec.json.decode(reply.data, type=PickReply)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            msg = "the scheduler's answer does not decode"
            raise PickFailed(msg) from exc
