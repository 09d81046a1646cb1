"""Leases in KV ``claims``: one recorder per live room, one uploader per job, one polling
scheduler; CAS-fenced.

A lease is created (fails if held), renewed with ``update(last=revision)`` every few seconds,
and expires by the bucket's TTL when its holder dies. A renewal that fails means another
process may hold it now: the holder must stop acting at once (stop writing, stop polling).
Its ``token`` (the revision it was created at) only grows from one holder to the next: the
job store refuses writes carrying an older token than the newest holder's.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

import msgspec
import nats.js.errors
from nats.js.kv import KeyValue

from shared.bus import TRANSIENT
from shared.logging import get_logger
from shared.subjects import CLAIMS, LEASE_RENEW, LEASE_RETRY

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
        self.token = revision  # the fencing token: fixed for this holding

    async def renew(self) -> bool:
        try:
            self.revision = await self.kv.update(
                self.name, msgspec.json.encode(self.holder), last=self.revision
            )
        except (nats.js.errors.KeyWrongLastSequenceError, nats.js.errors.NotFoundError):
            return False
        return True

    async def reclaim(self) -> bool:
        """After a refused renewal: True, and renewed, if the key still names this holder.

        A renewal of ours can land with its answer lost (a timeout while the server was
        frozen or electing; requests queued in the socket all run at once when it wakes):
        the key moved on without us, and the next renewal is refused. Only this process
        writes this holder, so the lease is still ours, with the same token.
        """
        try:
            entry = await self.kv.get(self.name)
        except nats.js.errors.KeyNotFoundError:
            return False
        if not entry.value or entry.revision is None:
            return False
        try:
            holder = msgspec.json.decode(entry.value, type=Holder)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return False
        if holder != self.holder:
            return False
        self.revision = entry.revision
        return await self.renew()

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


class HeldLease(Protocol):
    """A lease one holds: renew it, release it, fence writes with its token."""

    name: str
    token: int

    async def renew(self) -> bool: ...

    async def reclaim(self) -> bool:
        """After a refused renewal: still ours after all (our own renewal's answer was lost)?"""
        ...

    async def release(self) -> None: ...


class Leases(Protocol):
    """Where leases are taken: KV ``claims`` (``KvLeases``), or a fake in unit tests."""

    async def acquire(self, name: str, holder: Holder) -> HeldLease | None: ...

    async def holder(self, name: str) -> Holder | None: ...


class KvLeases:
    """``Leases`` over the ``claims`` bucket."""

    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv

    async def acquire(self, name: str, holder: Holder) -> Lease | None:
        return await acquire(self.kv, name, holder)

    async def holder(self, name: str) -> Holder | None:
        return await current_holder(self.kv, name)


class Keeper:
    """Renews a held lease every LEASE_RENEW s while its holder works.

    ``lost`` is set when a renewal is refused (someone else may hold it now) and it cannot be
    taken again (``retake``), or, with ``doubt_steps_down``, when none has succeeded for
    LEASE_DOUBT s (NATS away, or this process was frozen): the holder must stop acting. A
    lease taken again replaces ``lease`` (a new token) and ``on_retaken`` hears it. ``fresh()``
    answers, without I/O, whether acting now is still safe: a process that wakes from a long
    freeze finds it False before its first renewal is even tried.
    """

    def __init__(
        self,
        lease: HeldLease,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_renewed: Callable[[], Awaitable[object]] | None = None,
        every: float = LEASE_RENEW,
        retake: Callable[[], Awaitable[HeldLease | None]] | None = None,
        on_retaken: Callable[[HeldLease], Awaitable[object]] | None = None,
        doubt_steps_down: bool = True,
    ) -> None:
        self.lease = lease
        self._first = lease
        self.retake = retake
        self.on_retaken = on_retaken
        self.doubt_steps_down = doubt_steps_down
        self.every = every
        self.clock = clock
        self.on_renewed = on_renewed
        self.lost = asyncio.Event()
        self.renewed_at = clock()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def stopped(self) -> bool:
        """Nothing renews the lease any more."""
        return self._task is None or self._task.done()

    def fresh(self) -> bool:
        return not self.lost.is_set() and self.clock() - self.renewed_at < LEASE_DOUBT

    async def __aenter__(self) -> Keeper:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        # A flag as well as a cancel: a cancellation that races a reply can be swallowed
        # inside a NATS request, and a keeper that never stops renews a finished job's
        # lease for ever. The wait is bounded for the same reason.
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            done, _ = await asyncio.wait({self._task}, timeout=self.every + 1.0)
            if not done:
                log.error("lease.keeper_stuck", lease=self.lease.name)
        if self.lease is not self._first:  # taken again here: the holder releases the first
            await self.lease.release()

    async def _run(self) -> None:
        pause = self.every
        while not self.lost.is_set() and not self._closing:
            await asyncio.sleep(pause)
            pause = self.every
            try:
                renewed = await self.lease.renew()
            except Exception as exc:  # NATS away or erring: is the lease still ours?
                log.debug("lease.renew_failed", lease=self.lease.name, error=repr(exc))
                # Sooner than the beat: the first moment NATS answers again must find the
                # lease still standing (its TTL counts from the last renewal that landed).
                pause = min(self.every, LEASE_RETRY)
                if self.clock() - self.renewed_at >= LEASE_DOUBT and self.doubt_steps_down:
                    log.warning("lease.doubtful", lease=self.lease.name, seconds=LEASE_DOUBT)
                    self.lost.set()
                continue
            # Refused: it lapsed, and someone may hold it and write with a newer token.
            # (A renewal that succeeds proves no one took it meanwhile, however late.)
            if not renewed:
                taken = await self._take_again()
                if taken is None:
                    continue  # NATS away again: try at the next beat
                if not taken:
                    log.warning("lease.lost", lease=self.lease.name)
                    self.lost.set()
                    return
            self.renewed_at = self.clock()
            if self._closing:
                return
            if self.on_renewed is not None:
                with contextlib.suppress(*TRANSIENT):
                    await self.on_renewed()

    async def _take_again(self) -> bool | None:
        """After a refused renewal: take the lease again if no one else did (True); False if
        someone holds it; None if NATS could not say."""
        try:
            if await self.lease.reclaim():
                log.info("lease.reclaimed", lease=self.lease.name)
                return True
        except Exception as exc:
            log.debug("lease.reclaim_failed", lease=self.lease.name, error=repr(exc))
            return None
        if self.retake is None:
            return False
        try:
            new = await self.retake()
        except Exception as exc:
            log.debug("lease.retake_failed", lease=self.lease.name, error=repr(exc))
            return None
        if new is None:
            return False
        log.info("lease.retaken", lease=new.name, token=new.token)
        old, self.lease = self.lease, new
        if old is not self._first:
            with contextlib.suppress(Exception):
                await old.release()
        if self.on_retaken is not None:
            try:
                await self.on_retaken(new)
            except Exception as exc:  # e.g. the store refuses: a newer holder has the job
                log.warning("lease.retake_refused", lease=new.name, error=repr(exc))
                return False
        return True


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

    While held, ``act(lost)`` runs; ``lost`` is set when the lease is lost, in doubt or
    ``stop`` comes, and ``act`` must then return. ``on_change`` hears True and False.

    In doubt (no renewal has landed for LEASE_DOUBT s: NATS away, an election) the leader
    pauses (``act`` stops, before the TTL could let a standby in) but keeps its lease and
    tries to renew: once one lands it acts again, with no hand-over. A refused renewal means
    the lease lapsed: the leader takes it again if no one else did, else it steps down.
    Log lines are ``<purpose>.leader_elected``, ``.leadership_paused``, ``.leadership_resumed``,
    ``.leadership_retaken`` and ``.leadership_lost``.
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
        await _Leadership(lease, stop, act, on_change).hold()


class _Leadership:
    """One holding of a leader lease: renew it, pause and resume ``act`` as it stands."""

    def __init__(
        self,
        lease: Lease,
        stop: asyncio.Event,
        act: Callable[[asyncio.Event], Awaitable[object]],
        on_change: Callable[[bool], None],
    ) -> None:
        self.lease = lease
        self.stop = stop
        self.act = act
        self.on_change = on_change
        self.purpose = lease.holder.purpose
        self._acting: asyncio.Future[object] | None = None
        self._lost = asyncio.Event()

    async def hold(self) -> None:
        loop = asyncio.get_running_loop()
        renewed = loop.time()
        self._start()
        try:
            while not self.stop.is_set():
                await _pause(self.stop, LEASE_RENEW if self._acting else LEASE_RETRY)
                if self.stop.is_set():
                    return
                try:
                    if not await self.lease.renew() and not await self._take_again():
                        log.warning(f"{self.purpose}.leadership_lost")
                        return
                except Exception as exc:  # NATS away or erring: is the lease still ours?
                    log.debug(f"{self.purpose}.lease_renew_failed", error=repr(exc))
                    if self._acting and loop.time() - renewed >= LEASE_DOUBT:
                        log.warning(f"{self.purpose}.leadership_paused", seconds=LEASE_DOUBT)
                        await self._halt()
                    continue
                renewed = loop.time()
                if not self._acting:
                    log.info(f"{self.purpose}.leadership_resumed")
                    self._start()
        finally:
            await self._halt()
            await self.lease.release()

    async def _take_again(self) -> bool:
        """After a refused renewal: the lease lapsed. Take it again if it is still free."""
        if await self.lease.reclaim():  # our own renewal landed, its answer lost
            return True
        if self._acting:
            await self._halt()  # it lapsed while acting: someone may have held it meanwhile
        again = await acquire(self.lease.kv, self.lease.name, self.lease.holder)
        if again is None:
            return False
        log.info(f"{self.purpose}.leadership_retaken")
        self.lease = again
        return True

    def _start(self) -> None:
        self._lost = asyncio.Event()
        self.on_change(True)
        self._acting = asyncio.ensure_future(self.act(self._lost))

    async def _halt(self) -> None:
        acting, self._acting = self._acting, None
        if acting is None:
            return
        self._lost.set()
        await asyncio.gather(acting, return_exceptions=True)
        self.on_change(False)


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
