"""A reverse proxy in front of the fake TikTok's www and webcast routes that can answer garbage.

The fake TikTok has no control for answers that are no answer at all, so the chaos suite puts
this between the services (TIKTOK_WEB_BASE, TIKTOK_WEBCAST_BASE) and the fake. It forwards each
request with the fake's own Host, so the stream URLs in the answers point straight at the fake:
the CDN (the media itself) never passes through here. While ``garbage`` is on, every request
gets, in turn, one of GARBAGE: JSON cut mid-value, an HTML page where JSON is expected, a 5xx
(500, 502, 503, 504 in turn) with an HTML body, and an empty 200.
"""

from __future__ import annotations

from collections import Counter
from typing import Literal

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from tests.helpers import free_port

Garbage = Literal["bad_json", "html", "5xx", "empty"]
GARBAGE: tuple[Garbage, ...] = ("bad_json", "html", "5xx", "empty")
_5XX = (500, 502, 503, 504)
_DROP = frozenset({"host", "content-length", "transfer-encoding", "connection", "keep-alive"})
_HTML = b"<!DOCTYPE html><html><head><title>TikTok</title></head><body>Oops</body></html>"


class TikTokGarbageProxy:
    """``garbage`` on: answer GARBAGE in turn; ``served`` counts the garbage by kind."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.garbage = False
        self.served: Counter[Garbage] = Counter()
        self.forwarded = 0
        self._turn = 0
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """What a service needs to reach TikTok through this proxy."""
        return {"TIKTOK_WEB_BASE": self.base_url, "TIKTOK_WEBCAST_BASE": self.base_url}

    async def __aenter__(self) -> TikTokGarbageProxy:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._session = aiohttp.ClientSession(auto_decompress=False)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        self.port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    def _garbage(self) -> web.Response:
        kind = GARBAGE[self._turn % len(GARBAGE)]
        status = _5XX[(self._turn // len(GARBAGE)) % len(_5XX)]
        self._turn += 1
        self.served[kind] += 1
        if kind == "bad_json":
            body = b'{"status_code":0,"data":{"user":{"roomId":"7'
            return web.Response(body=body, content_type="application/json")
        if kind == "html":
            return web.Response(body=_HTML, content_type="text/html")
        if kind == "5xx":
            return web.Response(status=status, body=_HTML, content_type="text/html")
        return web.Response(body=b"", content_type="application/json")

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self.garbage:
            return self._garbage()
        self.forwarded += 1
        assert self._session is not None
        headers = CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() not in _DROP)
        async with self._session.request(
            request.method,
            self.upstream + request.path_qs,
            headers=headers,
            data=body or None,
            allow_redirects=False,
        ) as reply:
            data = await reply.read()
            back = CIMultiDict((k, v) for k, v in reply.headers.items() if k.lower() not in _DROP)
            return web.Response(status=reply.status, headers=back, body=data)
