"""Requests per minute per API key, counted in NATS so every gateway replica shares the budget.

Every request is counted in NATS before it is answered: one increment, whose PubAck carries the
total that decides it; hits past the limit are taken back at once (a second round trip). A key's
requests that come while its last increment is in flight are counted together in the next one
(``batches``), each decided as if they had come one after another. A hit that is taken back may
be seen by another replica meanwhile: only when the budget is full anyway, save that the
previous window's share may have decayed by one hit since, as with two replicas counting at once.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from limits import RateLimitItem, RateLimitItemPerMinute
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.errors import StorageError
from nats.aio.client import Client
from nats.js.api import StreamConfig
from prometheus_client import Counter

from services.gateway.api_keys import ApiKey
from services.gateway.batches import Batches
from services.gateway.errors import ApiError
from services.gateway.ratelimit_storage import (
    HitCount,
    NatsCounterStorage,
    WindowCount,
    weighted_count,
)
from shared.errors import ErrorCode
from shared.logging import get_logger
from shared.metrics import PREFIX
from shared.subjects import RATELIMIT

log = get_logger(__name__)

# A limiter that waits on NATS holds the request; past this, it counts as unreachable.
NATS_TIMEOUT = 1.0
# Fail closed for these when the counters cannot be reached; reads are let through.
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
STATUS_HEADER = "X-RateLimit-Status"

RATE_LIMITED = Counter(
    f"{PREFIX}_gateway_rate_limited_total", "Requests refused with 429, by API key name", ["key"]
)
LIMITER_UNAVAILABLE = Counter(
    f"{PREFIX}_gateway_rate_limiter_unavailable_total",
    "Requests met while the rate limiter could not reach NATS: refused (writes) or allowed",
    ["outcome"],
)


class RateLimiterUnavailable(Exception):
    """The counters in NATS cannot be read or written now."""


class _SlidingWindow(SlidingWindowCounterRateLimiter):
    """limits' sliding window counter, counting the way the storage decides admissions.

    Without this the X-RateLimit-Remaining header (limits floors the previous window's share)
    could promise one request more than the storage admits just after a window boundary.
    """

    def _weighted_count(
        self,
        item: RateLimitItem,
        previous_count: int,
        previous_expires_in: float,
        current_count: int,
    ) -> float:
        return float(
            weighted_count(previous_count, previous_expires_in, current_count, item.get_expiry())
        )


@dataclass(frozen=True)
class Decision:
    """The outcome of one request against its key's budget."""

    allowed: bool
    limit: int
    remaining: int
    reset_at: float  # epoch seconds when one more request will be admitted

    def headers(self, now: float) -> dict[str, str]:
        headers = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(math.ceil(self.reset_at)),
        }
        if not self.allowed:
            headers["Retry-After"] = str(self.retry_after(now))
        return headers

    def retry_after(self, now: float) -> int:
        return max(1, math.ceil(self.reset_at - now))


class RateLimiter:
    """A sliding window of one minute per API key, over :class:`NatsCounterStorage`."""

    def __init__(
        self,
        nc: Client,
        *,
        default_limit: int,
        stream: StreamConfig = RATELIMIT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.nc = nc
        self.default_limit = default_limit
        self.storage = NatsCounterStorage(nc.jetstream(timeout=NATS_TIMEOUT), stream, clock=clock)
        self.strategy = _SlidingWindow(self.storage)
        self._batches: Batches[ApiKey, Decision] = Batches(self._count)

    def limit_for(self, key: ApiKey) -> int:
        return key.rate_limit or self.default_limit

    async def hit(self, key: ApiKey) -> Decision:
        """Count one request of ``key`` unless its budget is spent.

        Raises:
            RateLimiterUnavailable: NATS cannot be reached.
        """
        # nats-py buffers requests while it reconnects; don't hold the request for that.
        if not self.nc.is_connected:
            msg = "NATS is not connected"
            raise RateLimiterUnavailable(msg)
        return await self._batches.submit(key)

    async def _count(self, key: ApiKey, hits: int) -> list[Decision]:
        """``hits`` requests of ``key`` in one increment; a decision for each, in order."""
        limit = self.limit_for(key)
        item = RateLimitItemPerMinute(limit)
        expiry = item.get_expiry()
        try:
            count = await self.storage.count_hits(item.key_for(key.counter_id), limit, expiry, hits)
        except StorageError as exc:
            cause = exc.storage_error
            detail = getattr(cause, "description", None) or str(cause)
            msg = f"rate-limit counters unreachable: {type(cause).__name__} {detail}".strip()
            raise RateLimiterUnavailable(msg) from exc
        return [_decision(count, i, limit, expiry) for i in range(hits)]


def _decision(count: HitCount, i: int, limit: int, expiry: int) -> Decision:
    """The ``i``-th hit of a batch: admitted ones see the window as it stood right after them
    (the headers a lone request would get), refused ones the window after the undo."""
    window = count.window
    if i >= count.admitted:
        return Decision(allowed=False, limit=limit, remaining=0, reset_at=_reset_at(window, expiry))
    current = count.before + i + 1
    mine = replace(window, current=current)
    used = weighted_count(window.previous, window.previous_ttl, current, expiry)
    return Decision(
        allowed=True,
        limit=limit,
        remaining=max(0, limit - used),
        reset_at=_reset_at(mine, expiry),
    )


def _reset_at(count: WindowCount, expiry: int) -> float:
    """When one more hit will be admitted, as limits' sliding window counter reports it."""
    if not (count.previous or count.current):
        return count.now
    previous_in = count.previous_ttl % (expiry / count.previous) if count.previous else math.inf
    current_in = count.current_ttl % expiry if count.current else math.inf
    return count.now + min(previous_in, current_in)


async def enforce(limiter: RateLimiter | None, key: ApiKey, method: str) -> dict[str, str]:
    """Count one request of ``key``; the headers to send with its response.

    ``limiter`` is None while the gateway has no NATS connection yet.

    Raises:
        ApiError: 429 once the key's budget is spent; 503 for a write when the counters cannot
            be reached (a read is let through, flagged by the ``X-RateLimit-Status`` header).
    """
    try:
        if limiter is None:
            msg = "NATS is not connected"
            raise RateLimiterUnavailable(msg)
        decision = await limiter.hit(key)
    except RateLimiterUnavailable as exc:
        unavailable = {STATUS_HEADER: "unavailable"}
        if method.upper() in WRITE_METHODS:
            LIMITER_UNAVAILABLE.labels("refused").inc()
            log.warning("gateway.rate_limiter_unavailable", outcome="refused", error=str(exc))
            message = "rate limiter unavailable (NATS unreachable): writes refused until it is back"
            raise ApiError(
                503, ErrorCode.SERVICE_UNAVAILABLE, message, headers=unavailable
            ) from exc
        LIMITER_UNAVAILABLE.labels("allowed").inc()
        log.warning("gateway.rate_limiter_unavailable", outcome="allowed", error=str(exc))
        return unavailable
    now = time.time()
    headers = decision.headers(now)
    if not decision.allowed:
        RATE_LIMITED.labels(key.name).inc()
        log.info("gateway.rate_limited", limit=decision.limit)
        message = (
            f"rate limit of {decision.limit} requests per minute exceeded; "
            f"retry in {decision.retry_after(now)} s"
        )
        raise ApiError(429, ErrorCode.RATE_LIMITED, message, headers=headers)
    return headers
