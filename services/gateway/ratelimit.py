"""Requests per minute per API key, counted in NATS so every gateway replica shares the budget."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from limits import RateLimitItem, RateLimitItemPerMinute
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.errors import StorageError
from nats.aio.client import Client
from nats.js.api import StreamConfig
from prometheus_client import Counter

from services.gateway.api_keys import ApiKey
from services.gateway.errors import ApiError
from services.gateway.ratelimit_storage import NatsCounterStorage, WindowCount, weighted_count
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
        limit = self.limit_for(key)
        item = RateLimitItemPerMinute(limit)
        expiry = item.get_expiry()
        try:
            # One read of the window, one increment: the headers come from the same counters
            # (limits' hit + get_window_stats would read both windows a second time).
            count = await self.storage.acquire_and_count(
                item.key_for(key.counter_id), limit, expiry
            )
        except StorageError as exc:
            cause = exc.storage_error
            detail = getattr(cause, "description", None) or str(cause)
            msg = f"rate-limit counters unreachable: {type(cause).__name__} {detail}".strip()
            raise RateLimiterUnavailable(msg) from exc
        used = weighted_count(count.previous, count.previous_ttl, count.current, expiry)
        return Decision(
            allowed=count.allowed,
            limit=limit,
            remaining=max(0, limit - used) if count.allowed else 0,
            reset_at=_reset_at(count, expiry),
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
