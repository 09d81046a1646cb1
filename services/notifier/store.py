"""Subscriptions and failed attempts in KV ``subscriptions``; the notifier is its only writer.

    index               the ids of every subscription (one document: listing needs no
                        consumer, which a service's NATS user may not create)
    sub.<id>            a subscription (msgspec JSON), dead letters included
    try.<id>.<seq>      failed attempts at the queued notification ``seq`` of subscription id

Writes are compare-and-set on the key's revision, retried on a conflict, so notifier
instances never lose each other's changes. A crash between writing ``sub.<id>`` and the
index leaves a document no one lists; one between the index and deleting it, an id whose
document is gone: both read as no subscription.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec
import nats.js.errors
from nats.js.kv import KeyValue

from shared.notifications import DEAD_LETTERS_KEPT, DeadLetter, Subscription

INDEX = "index"
_CAS_TRIES = 20


class SubscriptionExists(Exception):
    """A subscription with this id exists already."""


def sub_key(sub_id: str) -> str:
    return f"sub.{sub_id}"


def try_key(sub_id: str, seq: int) -> str:
    return f"try.{sub_id}.{seq}"


class KvSubscriptions:
    """The ``Subscriptions`` and ``Attempts`` of the handlers, and what the endpoints change."""

    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv
        self._ids = msgspec.json.Decoder(list[str])
        self._sub = msgspec.json.Decoder(Subscription)

    async def _read(self, key: str) -> tuple[bytes, int] | None:
        try:
            entry = await self.kv.get(key)
        except nats.js.errors.KeyNotFoundError:
            return None
        if not entry.value or entry.revision is None:
            return None
        return entry.value, entry.revision

    async def _change(self, key: str, change: Callable[[bytes | None], bytes | None]) -> None:
        """Apply ``change`` to the key's value (None: absent) with compare-and-set; a change
        that answers None leaves the key as it is."""
        for _ in range(_CAS_TRIES):
            found = await self._read(key)
            new = change(found[0] if found else None)
            if new is None:
                return
            try:
                if found is None:
                    await self.kv.create(key, new)
                else:
                    await self.kv.update(key, new, last=found[1])
            except nats.js.errors.KeyWrongLastSequenceError:
                continue
            return
        msg = f"{key}: too many concurrent writers"
        raise RuntimeError(msg)

    # --- subscriptions ----------------------------------------------------------------------

    async def ids(self) -> list[str]:
        found = await self._read(INDEX)
        return self._ids.decode(found[0]) if found else []

    async def get(self, sub_id: str) -> Subscription | None:
        found = await self._read(sub_key(sub_id))
        return self._sub.decode(found[0]) if found else None

    async def all(self) -> list[Subscription]:
        subs = []
        for sub_id in await self.ids():
            sub = await self.get(sub_id)
            if sub is not None:
                subs.append(sub)
        return subs

    async def create(self, sub: Subscription) -> None:
        try:
            await self.kv.create(sub_key(sub.id), msgspec.json.encode(sub))
        except nats.js.errors.KeyWrongLastSequenceError:
            raise SubscriptionExists(sub.id) from None

        def add(value: bytes | None) -> bytes | None:
            ids = self._ids.decode(value) if value else []
            return None if sub.id in ids else msgspec.json.encode([*ids, sub.id])

        await self._change(INDEX, add)

    async def delete(self, sub_id: str) -> bool:
        """Forget the subscription; False when there was none."""
        if sub_id not in await self.ids():
            return False

        def remove(value: bytes | None) -> bytes | None:
            ids = self._ids.decode(value) if value else []
            return msgspec.json.encode([i for i in ids if i != sub_id]) if sub_id in ids else None

        await self._change(INDEX, remove)
        await self.kv.delete(sub_key(sub_id))
        return True

    async def dead_letter(self, sub_id: str, letter: DeadLetter) -> None:
        def add(value: bytes | None) -> bytes | None:
            if value is None:  # deleted meanwhile: nobody to tell
                return None
            sub = self._sub.decode(value)
            sub.dead_letters_total += 1
            sub.dead_letters = [*sub.dead_letters, letter][-DEAD_LETTERS_KEPT:]
            return msgspec.json.encode(sub)

        await self._change(sub_key(sub_id), add)

    # --- failed attempts --------------------------------------------------------------------

    async def failed(self, sub_id: str, seq: int) -> int:
        """Count one more failed attempt at notification ``seq``; the count so far."""
        count = 0

        def bump(value: bytes | None) -> bytes:
            nonlocal count
            count = (int(value) if value else 0) + 1
            return str(count).encode()

        await self._change(try_key(sub_id, seq), bump)
        return count

    async def clear(self, sub_id: str, seq: int) -> None:
        if await self._read(try_key(sub_id, seq)) is not None:
            await self.kv.delete(try_key(sub_id, seq))
