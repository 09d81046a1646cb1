"""A fault-injecting proxy in front of the moto S3 server: fails calls, goes down, counts bytes.

The uploader's S3_ENDPOINT_URL points at it (path-style, so every request passes through); it
forwards each request to the server and its answer back, except:

- the UploadPart calls ``fail`` picks: a 500 InternalError, without reaching the server;
- the calls ``slow_down`` picks (any call): a 503 SlowDown, the store's "back off" answer;
- while ``down`` is set, every call: ``"503"`` answers 503 ServiceUnavailable, ``"refuse"``
  closes the listener (new connections are refused) and aborts the open ones.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Literal

import aiohttp
from aiohttp import web

from tests.helpers import free_port

Outage = Literal["503", "refuse"]

# Hop-by-hop and framing headers: aiohttp sets its own.
_DROP = frozenset({"host", "content-length", "transfer-encoding", "connection", "keep-alive"})


def _error(code: str, message: str) -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
        f"<Message>{message}</Message></Error>"
    ).encode()


_FAILED = _error("InternalError", "injected fault")
_SLOW_DOWN = _error("SlowDown", "Please reduce your request rate.")
_UNAVAILABLE = _error("ServiceUnavailable", "injected outage")


def every_nth(rate: float, *, first: int = 1) -> Callable[[int], bool]:
    """A rule failing a fraction ``rate`` of calls, evenly spread: call ``first`` fails, then
    one in every ``round(1 / rate)`` after it (deterministic, so a short run sees faults)."""
    step = max(1, round(1 / rate))
    return lambda n: n >= first and (n - first) % step == 0


class S3FaultProxy:
    """``fail(n)`` decides whether the n-th UploadPart call (1-based) fails; ``slow_down(n)``
    whether the n-th call of any kind gets a 503 SlowDown; ``part_bytes`` counts the part
    bodies that reached the server, ``failed`` the UploadPart calls refused, ``slowed`` the
    SlowDown answers, ``refused`` the calls answered (or cut) during an outage."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.fail: Callable[[int], bool] = lambda _n: False
        self.slow_down: Callable[[int], bool] = lambda _n: False
        self.down: Outage | None = None
        self.calls = 0
        self.part_calls = 0
        self.part_bytes = 0
        self.failed = 0
        self.slowed = 0
        self.refused = 0
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._session: aiohttp.ClientSession | None = None
        self.port = 0

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reset(
        self,
        fail: Callable[[int], bool] | None = None,
        *,
        slow_down: Callable[[int], bool] | None = None,
    ) -> None:
        """New counters (and new fault rules: none if not given)."""
        self.fail = fail or (lambda _n: False)
        self.slow_down = slow_down or (lambda _n: False)
        self.calls = self.part_calls = self.part_bytes = 0
        self.failed = self.slowed = self.refused = 0

    async def set_down(self, outage: Outage | None) -> None:
        """Start an outage of the given kind, or end it (None)."""
        previous, self.down = self.down, outage
        if outage == "refuse" and self._site is not None:
            site, self._site = self._site, None
            await site.stop()  # no new connections; open ones are cut at their next call
        if previous == "refuse" and outage != "refuse":
            await self._listen()

    async def __aenter__(self) -> S3FaultProxy:
        app = web.Application(client_max_size=1024**3)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._session = aiohttp.ClientSession(auto_decompress=False)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        self.port = free_port()
        await self._listen()
        return self

    async def _listen(self) -> None:
        assert self._runner is not None
        self._site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await self._site.start()

    async def __aexit__(self, *_exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.calls += 1
        if self.down is not None:
            self.refused += 1
            if self.down == "refuse" and request.transport is not None:
                request.transport.abort()  # a kept-alive connection from before the outage
            return _xml(503, _UNAVAILABLE)
        if self.slow_down(self.calls):
            self.slowed += 1
            return _xml(503, _SLOW_DOWN)
        if request.method == "PUT" and {"partNumber", "uploadId"} <= request.query.keys():
            self.part_calls += 1
            if self.fail(self.part_calls):
                self.failed += 1
                return _xml(500, _FAILED)
            self.part_bytes += len(body)
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _DROP}
        async with self._session.request(
            request.method,
            self.upstream + request.path_qs,
            headers=headers,
            data=io.BytesIO(body),  # raw bytes this large would warn (and block the loop)
            allow_redirects=False,
        ) as reply:
            data = await reply.read()
            back = {k: v for k, v in reply.headers.items() if k.lower() not in _DROP}
            return web.Response(status=reply.status, headers=back, body=data)


def _xml(status: int, body: bytes) -> web.Response:
    return web.Response(status=status, body=body, content_type="application/xml")
