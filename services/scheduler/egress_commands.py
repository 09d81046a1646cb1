"""The pool's commands and its file, applied by the leader to the pool and its store.

Idempotent: adding an egress again sets the same proxy and budget, removing one that is
gone changes nothing.
"""

from __future__ import annotations

from services.scheduler.egress_file import EgressEntry
from services.scheduler.egress_pool import EgressPool
from services.scheduler.egress_store import EgressStore
from shared.events import EgressAdded, EgressRemoved


async def on_egress_added(event: EgressAdded, pool: EgressPool, store: EgressStore) -> None:
    await store.put(pool.put(event.name, event.proxy, event.requests_per_min, "api"))


async def on_egress_removed(event: EgressRemoved, pool: EgressPool, store: EgressStore) -> None:
    pool.remove(event.name)
    await store.remove(event.name)


async def apply_egress_file(
    entries: list[EgressEntry], pool: EgressPool, store: EgressStore
) -> None:
    """The file's egresses in the pool, and none it no longer lists."""
    for entry in entries:
        await store.put(pool.put(entry.name, entry.proxy, entry.per_min, "file"))
    listed = {e.name for e in entries}
    gone = [n for n, e in pool.egresses.items() if e.source == "file" and n not in listed]
    for name in gone:
        pool.remove(name)
        await store.remove(name)
