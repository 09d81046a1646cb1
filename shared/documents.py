"""Versioned documents with compare-and-set: the job store's backend (KV ``jobs`` here)."""

from __future__ import annotations

from typing import Protocol

import nats.js.errors
from nats.js.kv import KeyValue


class Conflict(Exception):
    """The key was written by someone else since it was read (or exists, on create)."""


class Documents(Protocol):
    """Where the documents live: a versioned key-value store with compare-and-set."""

    async def read(self, key: str) -> tuple[bytes, int] | None: ...

    async def create(self, key: str, data: bytes) -> int:
        """Write a new key; raises Conflict if it exists."""
        ...

    async def update(self, key: str, data: bytes, revision: int) -> int:
        """Write if the key is still at ``revision``; raises Conflict otherwise."""
        ...

    async def put(self, key: str, data: bytes) -> int: ...

    async def delete(self, key: str) -> None: ...


class KvDocuments:
    """``Documents`` over a NATS KV bucket."""

    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv

    async def read(self, key: str) -> tuple[bytes, int] | None:
        try:
            entry = await self.kv.get(key)
        except nats.js.errors.KeyNotFoundError:
            return None
        if not entry.value or entry.revision is None:  # deleted or purged
            return None
        return entry.value, entry.revision

    async def create(self, key: str, data: bytes) -> int:
        try:
            return int(await self.kv.create(key, data))
        except nats.js.errors.KeyWrongLastSequenceError as exc:
            raise Conflict(key) from exc

    async def update(self, key: str, data: bytes, revision: int) -> int:
        try:
            return int(await self.kv.update(key, data, last=revision))
        except nats.js.errors.KeyWrongLastSequenceError as exc:
            raise Conflict(key) from exc

    async def put(self, key: str, data: bytes) -> int:
        return int(await self.kv.put(key, data))

    async def delete(self, key: str) -> None:
        await self.kv.delete(key)
