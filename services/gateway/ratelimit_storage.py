"""An async ``limits`` storage on JetStream counters, so every gateway replica shares one budget."""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import nats.errors
import nats.js.errors
from limits.aio.storage import SlidingWindowCounterSupport, Storage
from limits.errors import ConfigurationError, StorageError
from nats.js import JetStreamContext
from nats.js.api import Header, StreamConfig

T = TypeVar("T")

# Float noise must not turn an exact share (30.0) into one more counted hit (31).
_EPSILON = 1e-9
# Seconds into a window after which the previous window's counter is taken as final and read
# no more: a hit started before the boundary lands within a NATS timeout (1 s) of it, its undo
# within another, and replicas' clocks agree far better than the rest.
SETTLE = 5.0


def weighted_count(previous: int, previous_ttl: float, current: int, expiry: float) -> int:
    """Hits counted against a sliding window: the current window's, plus the previous window's
    share that still overlaps it.

    limits' own storages floor that share, which just after a window boundary forgives one hit
    (59.9 + 1 counts as 60). Rounding it up instead never admits more than the limit within
    one period when the hits all come at once, as they do in a burst.
    """
    share = previous * previous_ttl / expiry if previous else 0.0
    return math.ceil(share - _EPSILON) + current


class NatsCounterStorage(Storage, SlidingWindowCounterSupport):
    """limits storage over a JetStream stream with ``allow_msg_counter``.

    Each counter is a subject ``<prefix>.<sha256 of the limits key>[.<window>]``. An increment
    is one publish with ``Nats-Incr``: the server adds atomically and returns the total in the
    PubAck, so replicas never lose each other's hits. Counter streams refuse per-message TTLs,
    so counters expire with the stream's ``max_age`` after their last change. That suits the
    sliding-window-counter strategy, whose counters are per window (the window number is in the
    subject); a plain counter (``incr``, as the fixed-window strategy uses it) would only reset
    after ``max_age`` of quiet, so use this storage with the sliding window.

    :meth:`count_hits` (the gateway's path) reads the previous window's counter once it has
    settled (``SETTLE`` seconds into the next window) and then keeps it: no hit goes to a window
    after that, so it cannot change.
    """

    STORAGE_SCHEME = None  # built from a live connection, never from a URI

    def __init__(
        self,
        js: JetStreamContext,
        stream: StreamConfig,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not stream.allow_msg_counter or not stream.name or not stream.subjects:
            msg = f"stream {stream.name} is not a counter stream"
            raise ConfigurationError(msg)
        prefix = stream.subjects[0]
        if not prefix.endswith(".>"):
            msg = f"stream {stream.name} must take a `prefix.>` subject"
            raise ConfigurationError(msg)
        self.js = js
        self.stream = stream.name
        self.prefix = prefix[:-2]
        self.max_age = stream.max_age or math.inf
        self.clock = clock
        # Per limits key: the previous window's subject and its final count (see SETTLE).
        self._settled: dict[str, tuple[str, int]] = {}
        # Errors come out as limits.errors.StorageError: callers need not know NATS.
        super().__init__(None, wrap_exceptions=True)

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        # nats.errors.Error covers JetStream's errors, TimeoutError asyncio's own; ValueError is a
        # counter body that is not a number.
        return (nats.errors.Error, TimeoutError, ValueError)

    # --- subjects -------------------------------------------------------------------------------

    def subject(self, key: str) -> str:
        # The limits key may hold any character; a hash is a valid, fixed-size subject token.
        return f"{self.prefix}.{hashlib.sha256(key.encode()).hexdigest()[:32]}"

    def window_subjects(self, key: str, expiry: int, now: float) -> tuple[str, str]:
        """The previous and the current window's counter subjects (windows follow the clock)."""
        if 2 * expiry > self.max_age:
            msg = f"a {expiry}s window needs the stream to keep counters {2 * expiry}s"
            raise ConfigurationError(msg)
        base = self.subject(key)
        current = int(now // expiry)
        return f"{base}.{current - 1}", f"{base}.{current}"

    # --- counters -------------------------------------------------------------------------------

    async def _value(self, subject: str) -> int:
        try:
            msg = await self.js.get_last_msg(self.stream, subject, direct=True)
        except nats.js.errors.NotFoundError:
            return 0
        return int(json.loads(msg.data or b"{}").get("val", 0))

    async def _add(self, subject: str, amount: int) -> int:
        # No stream= here: nats-server 2.15 refuses an increment with Nats-Expected-Stream (10171).
        ack = await self.js.publish(subject, b"", headers={Header.INCR.value: str(amount)})
        if ack.val is None:
            msg = f"no counter value in the PubAck of {self.stream}"
            raise ValueError(msg)
        return int(ack.val)

    async def _last_time(self, subject: str) -> float | None:
        try:
            msg = await self.js.get_last_msg(self.stream, subject, direct=True)
        except nats.js.errors.NotFoundError:
            return None
        return msg.time.timestamp() if msg.time else None

    # --- limits Storage -------------------------------------------------------------------------

    async def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        """Add ``amount``; the counter lives ``max_age`` after its last change, not ``expiry``."""
        if expiry > self.max_age:
            msg = f"counters for {expiry}s need a stream that keeps them that long"
            raise ConfigurationError(msg)
        return await self._add(self.subject(key), amount)

    async def get(self, key: str) -> int:
        return await self._value(self.subject(key))

    async def get_expiry(self, key: str) -> float:
        last = await self._last_time(self.subject(key))
        return self.clock() if last is None else last + self.max_age

    async def check(self) -> bool:
        try:
            await self.js.stream_info(self.stream)
        except (TimeoutError, nats.errors.Error):
            return False
        return True

    async def reset(self) -> int | None:
        messages = (await self.js.stream_info(self.stream)).state.messages
        await self.js.purge_stream(self.stream)
        return messages

    async def clear(self, key: str) -> None:
        await self.js.purge_stream(self.stream, subject=self.subject(key))

    # --- sliding window counter -----------------------------------------------------------------

    async def acquire_sliding_window_entry(
        self, key: str, limit: int, expiry: int, amount: int = 1
    ) -> bool:
        return (await self.acquire_and_count(key, limit, expiry, amount)).allowed

    async def acquire_and_count(
        self, key: str, limit: int, expiry: int, amount: int = 1
    ) -> WindowCount:
        """Count ``amount`` hits unless that goes over ``limit``; either way, the window as it
        stands after (what ``get_sliding_window`` would read next, without reading it again).

        Raises:
            StorageError: NATS could not be reached (as every method limits calls).
        """
        try:
            return await self._acquire_and_count(key, limit, expiry, amount)
        except self.base_exceptions as exc:
            raise StorageError(exc) from exc

    async def _acquire_and_count(
        self, key: str, limit: int, expiry: int, amount: int
    ) -> WindowCount:
        now = self.clock()
        previous_subject, current_subject = self.window_subjects(key, expiry, now)
        previous, current = await _both(self._value(previous_subject), self._value(current_subject))
        previous_ttl = _previous_ttl(previous, expiry, now)
        allowed = amount <= limit
        if allowed and weighted_count(previous, previous_ttl, current, expiry) + amount > limit:
            allowed = False
        if allowed:
            # Another replica may have counted a hit since the read: the total the server
            # returns settles who got the last places. Undo ours if it went over.
            current = await self._add(current_subject, amount)
            if weighted_count(previous, previous_ttl, current, expiry) > limit:
                current = await self._add(current_subject, -amount)
                allowed = False
        return WindowCount(allowed, previous, previous_ttl, current, _current_ttl(expiry, now), now)

    async def count_hits(self, key: str, limit: int, expiry: int, hits: int) -> HitCount:
        """Count ``hits`` separate hits of ``key`` in one increment, as if they came one after
        another: those the limit admits stay counted, the rest are taken back at once.

        Counted first, checked after: hits the limit admits cost one round trip (the PubAck
        carries the total), not a read of the window and then a write. Only refused hits cost
        a second one, their undo.

        Raises:
            StorageError: NATS could not be reached (as every method limits calls).
        """
        try:
            return await self._count_hits(key, limit, expiry, hits)
        except self.base_exceptions as exc:
            raise StorageError(exc) from exc

    async def _count_hits(self, key: str, limit: int, expiry: int, hits: int) -> HitCount:
        now = self.clock()
        previous_subject, current_subject = self.window_subjects(key, expiry, now)
        kept = self._settled.get(key)
        if kept is not None and kept[0] == previous_subject:
            previous = kept[1]
        else:
            previous = await self._value(previous_subject)
            if now % expiry >= SETTLE:
                self._settled[key] = (previous_subject, previous)
        total = await self._add(current_subject, hits)
        previous_ttl = _previous_ttl(previous, expiry, now)
        before = total - hits
        admitted = 0
        # Another replica's hits may have come between: the total settles who got the places.
        while (
            admitted < hits
            and weighted_count(previous, previous_ttl, before + admitted + 1, expiry) <= limit
        ):
            admitted += 1
        current = total
        if admitted < hits:
            current = await self._add(current_subject, admitted - hits)
        window = WindowCount(
            admitted == hits, previous, previous_ttl, current, _current_ttl(expiry, now), now
        )
        return HitCount(admitted=admitted, before=before, window=window)

    async def get_sliding_window(self, key: str, expiry: int) -> tuple[int, float, int, float]:
        now = self.clock()
        previous_subject, current_subject = self.window_subjects(key, expiry, now)
        previous, current = await _both(self._value(previous_subject), self._value(current_subject))
        return previous, _previous_ttl(previous, expiry, now), current, _current_ttl(expiry, now)

    async def clear_sliding_window(self, key: str, expiry: int) -> None:  # noqa: ARG002
        # Every window of the key, not only the two ``expiry`` points at.
        await self.js.purge_stream(self.stream, subject=f"{self.subject(key)}.>")


@dataclass(frozen=True, slots=True)
class WindowCount:
    """The outcome of one acquire, and the sliding window's counters right after it."""

    allowed: bool
    previous: int
    previous_ttl: float
    current: int
    current_ttl: float
    now: float


@dataclass(frozen=True, slots=True)
class HitCount:
    """The outcome of :meth:`NatsCounterStorage.count_hits`: the first ``admitted`` hits were
    counted, on top of ``before`` in the current window; ``window`` is as it stands after."""

    admitted: int
    before: int
    window: WindowCount


def _current_ttl(expiry: int, now: float) -> float:
    """Time left of the current window, plus a period: as limits' own storages report it."""
    return (1 - ((now / expiry) % 1)) * expiry + expiry


def _previous_ttl(previous: int, expiry: int, now: float) -> float:
    """How much of the previous window still overlaps the sliding one (seconds)."""
    if not previous:
        return 0.0
    return (1 - (((now - expiry) / expiry) % 1)) * expiry


async def _both(first: Awaitable[T], second: Awaitable[T]) -> tuple[T, T]:
    """Two reads at once; the first error is raised only after both ended (none left over)."""
    a, b = await asyncio.gather(first, second, return_exceptions=True)
    if isinstance(a, BaseException):
        raise a
    if isinstance(b, BaseException):
        raise b
    return a, b
