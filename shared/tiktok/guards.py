"""The egress policy (``shared.egress``) on the requests an httpx client sends.

Request hooks refuse, before any connection: a stream GET off STREAM_HOST_SUFFIXES or to a
private address (names resolved first, unless a proxy resolves them), and any request through
a proxy whose name resolves to a private address. httpx awaits a client's request hooks before
every request it sends, each redirect hop included, and so does the recorder's own FLV GET
(``services/recorder/flv_pull.py``): every hop passes the policy.

A refusal raises :class:`EgressRefused`, an ``httpx.RequestError`` (callers that handle httpx
errors handle it), whose message is generic: the host and the reason go to the log only.
:func:`transport_reason` does the same for every other transport failure: what an API answer
may say is a fixed phrase, never the exception's text (a proxy or a service behind it could
put its banner there).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Final

import httpx

from shared.egress import (
    IPAddress,
    Refusal,
    StreamPolicy,
    canonical_host,
    ip_of,
    is_private,
    resolve,
)
from shared.logging import get_logger

log = get_logger(__name__)

# A request extension: this GET fetches a stream (the recorder's pulls, `tlr check`'s probes).
# The TikTok client's httpx client also calls TikTok's APIs; those are not streams.
STREAM_REQUEST: Final = "tlr_stream"
PROXY_CHECK_TTL_S: Final = 60.0
STREAM_HOST_REFUSED: Final = "the stream host is not allowed"
PROXY_REFUSED: Final = "the proxy is on a private address, which is not allowed"

Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]


class EgressRefused(httpx.RequestError):
    """A request the egress policy refused: nothing was sent. The message is generic."""

    def __init__(
        self, message: str, *, reason: Refusal, host: str, request: httpx.Request | None = None
    ) -> None:
        super().__init__(message, request=request)
        self.reason = reason
        self.host = host


class StreamHostRefused(EgressRefused):
    """A stream GET (or one of its redirects) to a host or address the policy refuses."""


class ProxyRefused(EgressRefused):
    """A request through a proxy on a private address."""


@dataclass
class Refusals:
    """How many stream GETs the StreamGuard refused in one recording session."""

    count: int = 0


# Set by the recorder around one recording session (its task and what it awaits).
SESSION_REFUSALS: ContextVar[Refusals | None] = ContextVar("tlr_stream_refusals", default=None)


async def _resolve(host: str, port: int) -> list[IPAddress]:
    return await resolve(host, port)


def stream_refusal(policy: StreamPolicy, url: str) -> Refusal | None:
    """What ``policy`` says of a GET of ``url`` before resolving anything, the URL read as
    httpx reads it (the host it would connect to)."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        return Refusal.BAD_HOST
    return policy.refusal(parsed.scheme, parsed.raw_host.decode("ascii", "replace"))


class StreamGuard:
    """Request hook: a stream GET goes only where ``policy`` allows.

    ``via_proxy``: the client sends through a proxy, which resolves names: only the host and
    literal addresses are judged. Otherwise a name is resolved and every address it has must
    pass (one that does not resolve fails like a connection would, and is never sent).
    ``every_request``: judge every request, not only those marked ``STREAM_REQUEST`` (a client
    that only ever fetches streams).
    """

    def __init__(
        self,
        policy: StreamPolicy,
        *,
        via_proxy: bool,
        every_request: bool = False,
        resolver: Resolver = _resolve,
    ) -> None:
        self.policy = policy
        self._via_proxy = via_proxy
        self._every = every_request
        self._resolve = resolver

    async def __call__(self, request: httpx.Request) -> None:
        if not self._every and not request.extensions.get(STREAM_REQUEST):
            return
        url = request.url
        host = url.raw_host.decode("ascii", "replace")  # what the connection will use
        reason = self.policy.refusal(url.scheme, host)
        if reason is None and not self._via_proxy and not self.policy.allow_private:
            name = canonical_host(host)
            if ip_of(name) is None:
                port = url.port or (443 if url.scheme == "https" else 80)
                try:
                    addresses = await self._resolve(name, port)
                except OSError:
                    log.warning("egress.stream_host_unresolved", host=name)
                    msg = "could not resolve the stream host"
                    raise httpx.ConnectError(msg, request=request) from None
                reason = self.policy.address_refusal(addresses)
        if reason is None:
            return
        refusals = SESSION_REFUSALS.get()
        if refusals is not None:
            refusals.count += 1
        log.warning("egress.stream_refused", reason=reason, host=host, via_proxy=self._via_proxy)
        raise StreamHostRefused(STREAM_HOST_REFUSED, reason=reason, host=host, request=request)


class ProxyGuard:
    """Request hook (and :meth:`check`): no request through a proxy whose name resolves to a
    private address. A literal address is judged once, when the client is made; a name at
    most every ``ttl`` seconds. A name that does not resolve is let through: the connection
    to the proxy then fails on its own, as a network error (retried)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        resolver: Resolver = _resolve,
        ttl: float = PROXY_CHECK_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._host = host
        self._port = port
        self._resolve = resolver
        self._ttl = ttl
        self._clock = clock
        self._good_until = float("-inf")

    async def __call__(self, request: httpx.Request) -> None:
        await self.check(request)

    async def check(self, request: httpx.Request | None = None) -> None:
        if self._clock() < self._good_until:
            return
        try:
            addresses = await self._resolve(self._host, self._port)
        except OSError:
            return
        if any(is_private(a) for a in addresses):
            log.warning("egress.proxy_refused", reason=Refusal.RESOLVES_PRIVATE)
            raise ProxyRefused(
                PROXY_REFUSED, reason=Refusal.RESOLVES_PRIVATE, host=self._host, request=request
            )
        self._good_until = self._clock() + self._ttl


def transport_reason(exc: BaseException) -> str:
    """What may be said of a failed connection: a fixed phrase by the kind of failure."""
    if isinstance(exc, EgressRefused):
        return str(exc)
    if isinstance(exc, httpx.ProxyError):
        return "the proxy refused the connection"
    if isinstance(exc, httpx.ConnectTimeout):
        return "connecting timed out"
    if isinstance(exc, httpx.TimeoutException):
        return "no answer in time"
    if isinstance(exc, httpx.ConnectError):
        return "could not connect"
    if isinstance(exc, httpx.ProtocolError | httpx.DecodingError):
        return "the answer was not valid HTTP"
    if isinstance(exc, httpx.TooManyRedirects):
        return "too many redirects"
    if isinstance(exc, httpx.NetworkError | OSError):
        return "the connection failed"
    return "network error"
