"""A fault-injecting proxy in front of the moto S3 server: fails UploadPart calls, counts bytes.

The uploader's S3_ENDPOINT_URL points at it (path-style, so every request passes through); it
forwards each request to the server and its answer back, except the UploadPart calls it is
told to fail, which get a 500 InternalError without reaching the server.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import aiohttp
from aiohttp import web

from tests.helpers import free_port

# Hop-by-hop and framing headers: aiohttp sets its own.
_DROP = frozenset({"host", "content-length", "transfer-encoding", "connection", "keep-alive"})
_FAILED = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code>'
    b"<Message>injected fault</Message></Error>"
)


class S3FaultProxy:
    """``fail(n)`` decides whether the n-th UploadPart call (1-based) fails; ``part_bytes``
    counts the part bodies that reached the server, ``failed`` the calls refused."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.fail: Callable[[int], bool] = lambda _n: False
        self.part_calls = 0
        self.part_bytes = 0
        self.failed = 0
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.port = 0

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reset(self, fail: Callable[[int], bool] | None = None) -> None:
        """New counters (and a new fault rule: none if not given)."""
        self.fail = fail or (lambda _n: False)
        self.part_calls = self.part_bytes = self.failed = 0

    async def __aenter__(self) -> S3FaultProxy:
        app = web.Application(client_max_size=1024**3)
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

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if request.method == "PUT" and {"partNumber", "uploadId"} <= request.query.keys():
            self.part_calls += 1
            if self.fail(self.part_calls):
                self.failed += 1
                return web.Response(status=500, body=_FAILED, content_type="application/xml")
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
