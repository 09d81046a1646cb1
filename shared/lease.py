"""Leases in KV ``claims``: one recorder per live room, one polling scheduler; CAS-fenced.

A lease is created (fails if held), renewed with ``update(last=revision)`` every few seconds,
and expires by the bucket's TTL when its holder dies. A renewal that fails means another
process may hold it now: the holder must stop acting at once (stop writing, stop polling).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import msgspec
import nats.js.errors
from nats.js.kv import KeyValue

from shared.bus import TRANSIENT
from shared.logging import get_logger
from shared.subjects import CLAIMS, LEASE_RENEW

log = get_logger(__name__)

# A holder that could not renew for this long stops acting: by then the lease may have lapsed
# (the bucket's TTL) and another process may hold it.
LEASE_DOUBT = (CLAIMS.ttl or 8.0) - LEASE_RENEW


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


async def lead(
    kv: KeyValue,
    name: str,
    holder: Holder,
    stop: asyncio.Event,
    act: Callable[[asyncio.Event], Awaitable[object]],
    on_change: Callable[[bool], None],
) -> None:
    """Hold the lease ``name`` whenever it is free, until ``stop``: one leader, the rest standby.

    While held, ``act(lost)`` runs; ``lost`` is set when the lease is lost, doubtful or
    ``stop`` comes, and ``act`` must then return. ``on_change`` hears True and False.
    Log lines are ``<purpose>.leader_elected``, ``.leadership_lost``, ``.leadership_doubtful``.
    """
    while not stop.is_set():
        lease = None
        try:
            lease = await acquire(kv, name, holder)
        except TRANSIENT:
            pass
        except Exception:  # a server error must not end the standby for good
            log.exception(f"{holder.purpose}.lease_error")
        if lease is None:
            await _pause(stop, LEASE_RENEW)
            continue
        log.info(f"{holder.purpose}.leader_elected", instance=holder.owner)
        await _hold(lease, stop, act, on_change)


async def _hold(
    lease: Lease,
    stop: asyncio.Event,
    act: Callable[[asyncio.Event], Awaitable[object]],
    on_change: Callable[[bool], None],
) -> None:
    purpose = lease.holder.purpose
    lost = asyncio.Event()
    on_change(True)
    acting = asyncio.ensure_future(act(lost))
    loop = asyncio.get_running_loop()
    renewed = loop.time()
    try:
        while not stop.is_set():
            await _pause(stop, LEASE_RENEW)
            try:
                if not await lease.renew():
                    log.warning(f"{purpose}.leadership_lost")
                    return
                renewed = loop.time()
            except Exception as exc:  # NATS away or erring: is the lease still ours?
                log.debug(f"{purpose}.lease_renew_failed", error=repr(exc))
                if loop.time() - renewed > LEASE_DOUBT:
                    log.warning(f"{purpose}.leadership_doubtful", seconds=LEASE_DOUBT)
                    return
    finally:
        lost.set()
        await asyncio.gather(acting, return_exceptions=True)
        await lease.release()
        on_change(False)


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
