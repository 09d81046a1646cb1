"""``Leases`` in memory, with a hand on the clock: expire a lease as the TTL would."""

from __future__ import annotations

import itertools

from shared.lease import Holder


class MemoryLease:
    def __init__(self, leases: MemoryLeases, name: str, holder: Holder, token: int) -> None:
        self.leases = leases
        self.name = name
        self.holder = holder
        self.token = token

    async def renew(self) -> bool:
        return self.leases.held.get(self.name) is self

    async def reclaim(self) -> bool:
        return await self.renew()

    async def release(self) -> None:
        if self.leases.held.get(self.name) is self:
            del self.leases.held[self.name]


class MemoryLeases:
    """Tokens only grow, as KV revisions do; ``expire`` is the TTL running out."""

    def __init__(self) -> None:
        self.held: dict[str, MemoryLease] = {}
        self._tokens = itertools.count(1)

    async def acquire(self, name: str, holder: Holder) -> MemoryLease | None:
        if name in self.held:
            return None
        lease = MemoryLease(self, name, holder, next(self._tokens))
        self.held[name] = lease
        return lease

    async def holder(self, name: str) -> Holder | None:
        lease = self.held.get(name)
        return lease.holder if lease else None

    def expire(self, name: str) -> None:
        self.held.pop(name, None)
