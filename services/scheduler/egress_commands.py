"""The pool's commands and its file, applied by the leader to the pool and its store, and
what recorders report of the egresses they record through.

Idempotent: adding an egress again sets the same proxy and budget, removing one that is
gone changes nothing.
"""

from __future__ import annotations

from datetime import datetime

from services.scheduler.egress_file import EgressEntry
from services.scheduler.egress_pool import EgressPool
from services.scheduler.egress_store import EgressStore
from shared.errors import ErrorCode
from shared.events import EgressAdded, EgressFailed, EgressRemoved
from shared.logging import get_logger

log = get_logger(__name__)

# A recorder's report older than this (queued while no scheduler led) says nothing of the
# egress now: the pool's own answers and probes have spoken since.
REPORT_STALE = 60.0


async def on_egress_added(event: EgressAdded, pool: EgressPool, store: EgressStore) -> None:
    await store.put(pool.put(event.name, event.proxy, event.requests_per_min, "api"))


async def on_egress_removed(event: EgressRemoved, pool: EgressPool, store: EgressStore) -> None:
    pool.remove(event.name)
    await store.remove(event.name)


def on_egress_failed(event: EgressFailed, pool: EgressPool, now: datetime) -> None:
    """A recorder met a WAF page or an empty body through a pool egress: counted like one of
    the poller's, so two running (the recorder's and the poller's alike) block it. A
    redelivered report counts once more at worst: one WAF answer, never a lost one."""
    try:
        code = ErrorCode(event.error_code)
    except ValueError:
        return  # a code of a newer recorder: nothing this pool knows how to count
    if (now - event.occurred_at).total_seconds() > REPORT_STALE:
        return
    if pool.failed(event.name, code):
        log.warning("scheduler.egress_blocked_by_recorder", egress=event.name, job_id=event.job_id)


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
