"""Leases in KV ``claims``: one recorder per live room, one polling scheduler; CAS-fenced.

A lease is created (fails if held), renewed with ``update(last=revision)`` every few seconds,
and expires by the bucket's TTL when its holder dies. A renewal that fails means another
process may hold it now: the holder must stop acting at once (stop writing, stop polling).
"""

from __future__ import annotations

import contextlib

import msgspec
import nats.js.errors
from nats.js.kv import KeyValue

from shared.bus import TRANSIENT


class Holder(msgspec.Struct, frozen=True):
    """Who holds a lease: a process (instance id) and what for (a job id, a role)."""

    owner: str
    purpose: str


class Lease:
    """A held lease; ``renew`` returns False once it is lost."""

    def __init__(self, kv: KeyValue, name: str, holder: Holder, revision: int) -> None:
        self.kv = kv
        self.name = name
        self.holder = holder
        self.revision = revision

    async def renew(self) -> bool:
        try:
            self.revision = await self.kv.update(
                self.name, msgspec.json.encode(self.holder), last=self.revision
            )
        except (nats.js.errors.KeyWrongLastSequenceError, nats.js.errors.NotFoundError):
            return False
        return True

    async def release(self) -> None:
        """Delete only if still ours (CAS): never free a lease someone else took over."""
        with contextlib.suppress(*TRANSIENT, nats.js.errors.APIError):
            await self.kv.delete(self.name, last=self.revision)


async def acquire(kv: KeyValue, name: str, holder: Holder) -> Lease | None:
    """Take the lease ``name``, or None if someone holds it."""
    try:
        revision = await kv.create(name, msgspec.json.encode(holder))
    except nats.js.errors.KeyWrongLastSequenceError:
        return None
    return Lease(kv, name, holder, revision)


async def current_holder(kv: KeyValue, name: str) -> Holder | None:
    try:
        entry = await kv.get(name)
    except nats.js.errors.KeyNotFoundError:
        return None
    if not entry.value:
        return None
    return msgspec.json.decode(entry.value, type=Holder)
