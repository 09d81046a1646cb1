"""Room leases in KV ``claims``: one recorder per live room, fenced by compare-and-set.

A lease is created (fails if held), renewed with ``update(last=revision)`` every few seconds,
and expires by the bucket's TTL when its holder dies. A renewal that fails means another
recorder may hold the room now: the holder must stop writing at once.
"""

from __future__ import annotations

import contextlib

import msgspec
import nats.js.errors
from nats.js.kv import KeyValue

from shared.bus import TRANSIENT


class Holder(msgspec.Struct, frozen=True):
    recorder_id: str
    job_id: str


def lease_key(room_id: str) -> str:
    return f"room.{room_id}"


class Lease:
    """A held lease; ``renew`` returns False once it is lost."""

    def __init__(self, kv: KeyValue, room_id: str, holder: Holder, revision: int) -> None:
        self.kv = kv
        self.room_id = room_id
        self.holder = holder
        self.revision = revision

    async def renew(self) -> bool:
        try:
            self.revision = await self.kv.update(
                lease_key(self.room_id), msgspec.json.encode(self.holder), last=self.revision
            )
        except (nats.js.errors.KeyWrongLastSequenceError, nats.js.errors.NotFoundError):
            return False
        return True

    async def release(self) -> None:
        """Delete only if still ours (CAS): never free a lease someone else took over."""
        with contextlib.suppress(*TRANSIENT, nats.js.errors.APIError):
            await self.kv.delete(lease_key(self.room_id), last=self.revision)


async def acquire(kv: KeyValue, room_id: str, holder: Holder) -> Lease | None:
    """Take the room's lease, or None if someone holds it."""
    try:
        revision = await kv.create(lease_key(room_id), msgspec.json.encode(holder))
    except nats.js.errors.KeyWrongLastSequenceError:
        return None
    return Lease(kv, room_id, holder, revision)


async def current_holder(kv: KeyValue, room_id: str) -> Holder | None:
    try:
        entry = await kv.get(lease_key(room_id))
    except nats.js.errors.KeyNotFoundError:
        return None
    if not entry.value:
        return None
    return msgspec.json.decode(entry.value, type=Holder)
