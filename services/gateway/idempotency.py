"""Idempotency-Key: a POST retried under the same key answers the job the first one made."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
from dataclasses import dataclass, field
from typing import Annotated

import msgspec
from fastapi import Depends, Header, Request
from pydantic import BaseModel

from services.gateway.commands import Conflict
from services.gateway.deps import ApiKeyDep
from shared import events as ev
from shared import jobs
from shared.bus import Bus
from shared.job_store import JobExists, JobStore
from shared.jobs import IdempotentJob

HEADER = "Idempotency-Key"
# 1-128 printable ASCII characters; none at either end is a space, which HTTP would drop.
PATTERN = r"^[!-~](?:[ -~]{0,126}[!-~])?$"
DESCRIPTION = (
    "Makes a retry safe: the same key (per API key, 1-128 printable ASCII characters) answers "
    "the job the first request made, for 24 h at least, starting nothing new; with another "
    "body it is a 409. A retry after a 503 starts that job if the first try could not."
)


@dataclass(frozen=True)
class Once:
    """One request under an Idempotency-Key: whose (``scope``: its API key's hash), the key,
    and the keyed hash of what it asks."""

    scope: str
    key: str = field(repr=False)
    body_hash: str

    async def earlier(self, bus: Bus, store: JobStore) -> str | None:
        """The job a request under this key made already, started if that may have failed;
        None when the key is new. :class:`Conflict` when that request asked something else."""
        found = await store.idempotent_job(self.scope, self.key)
        return None if found is None else await self._carry_out(bus, store, found)

    async def start(self, bus: Bus, store: JobStore, doc: jobs.JobRequest, event: ev.Event) -> str:
        """``commands.Start`` under this key: the key is bound to the job first (of concurrent
        requests one binds it, the others answer its job), then the job is stored and its
        event published. A failure takes nothing back: the client's retry finishes the start,
        and the same event id lets JetStream drop a copy stored before."""
        job = IdempotentJob(
            body_hash=self.body_hash, request=doc, event=msgspec.Raw(ev.encode(event))
        )
        held = await store.remember_idempotency(self.scope, self.key, job)
        return await self._carry_out(bus, store, held)

    async def _carry_out(self, bus: Bus, store: JobStore, held: IdempotentJob) -> str:
        if held.body_hash != self.body_hash:
            msg = f"{HEADER} was used already for another request"
            raise Conflict(msg)
        if not held.started:
            with contextlib.suppress(JobExists):
                await store.submit(held.request)
            await bus.publish(ev.decode(bytes(held.event)))
            await store.idempotent_job_started(self.scope, self.key)
        return held.job_id


@dataclass(frozen=True)
class IdempotencyKey:
    """A valid Idempotency-Key header and the API key it came with."""

    scope: str
    key: str = field(repr=False)
    secret: bytes = field(repr=False)

    def once(self, operation: str, body: BaseModel) -> Once:
        """The request ``operation`` (method and path) with ``body``, as the key binds it.

        The body is normalised (defaults filled in, keys sorted) and hashed with the API key,
        which NATS never sees, so the hash tells a reader of KV nothing (not a proxy password).
        """
        normal = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        digest = hmac.new(self.secret, f"{operation}\n{normal}".encode(), hashlib.sha256)
        return Once(scope=self.scope, key=self.key, body_hash=digest.hexdigest())


async def idempotency_key(
    request: Request,
    api_key: ApiKeyDep,
    key: Annotated[
        str | None,
        Header(
            alias=HEADER,
            description=DESCRIPTION,
            min_length=1,
            max_length=128,
            pattern=PATTERN,
            examples=["3f0c8a4e-7d1b-4c55-9b8e-2a6f1d0e9c41"],
        ),
    ] = None,
) -> IdempotencyKey | None:
    """The request's Idempotency-Key (a malformed one is a 422 before this runs), or None."""
    if key is None:
        return None
    raw = request.headers.get("X-API-Key", "")  # present: ``api_key`` authenticated it
    return IdempotencyKey(scope=api_key.counter_id, key=key, secret=raw.encode())


IdempotencyDep = Annotated[IdempotencyKey | None, Depends(idempotency_key)]
