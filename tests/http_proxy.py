"""A small forwarding HTTP proxy with Basic auth, so tests can record through a real proxy.

It serves absolute-form requests (``GET http://host:port/path HTTP/1.1``), which is how an
HTTP client talks to a proxy for plain-http targets such as the fake TikTok: it checks
``Proxy-Authorization``, forwards the request with ``Connection: close`` and pipes the answer
(a streaming FLV included) back until the upstream closes. 407 for wrong credentials. With a
``tag``, each forwarded request carries it in the fake TikTok's EGRESS_HEADER, so the fake can
block the requests of one proxy (its ``blocked_egresses``) and serve the others.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

from tlr.fake_tiktok.app import EGRESS_HEADER

MAX_HEAD = 64 * 1024


class AuthProxy:
    """Listens on 127.0.0.1; ``requests`` counts the requests forwarded, by target path.
    ``hosts`` is the proxy's own name resolution (name -> address): a test's DNS."""

    def __init__(
        self,
        user: str,
        password: str,
        *,
        hosts: dict[str, str] | None = None,
        tag: str | None = None,
    ) -> None:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        self._expected = f"Basic {token}"
        self.user = user
        self.password = password
        self.requests: Counter[str] = Counter()
        self.refused = 0
        self.hosts = hosts or {}
        self.tag = tag
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    def url(self, *, password: str | None = None) -> str:
        return f"http://{self.user}:{password or self.password}@127.0.0.1:{self.port}"

    async def __aenter__(self) -> AuthProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._open):
                writer.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._open.add(writer)
        try:
            await self._forward(reader, writer)
        finally:
            self._open.discard(writer)
            await _close(writer)

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        lines = head.decode("latin-1").split("\r\n")
        method, target, version = lines[0].split(" ", 2)
        headers = [line.split(":", 1) for line in lines[1:] if ":" in line]
        auth = next((v.strip() for k, v in headers if k.lower() == "proxy-authorization"), "")
        if auth != self._expected:
            self.refused += 1
            writer.write(
                b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                b'Proxy-Authenticate: Basic realm="test"\r\nContent-Length: 0\r\n'
                b"Connection: close\r\n\r\n"
            )
            await _close(writer)
            return
        parts = urlsplit(target)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        self.requests[parts.path] += 1
        kept = [
            (k, v)
            for k, v in headers
            if not k.lower().startswith("proxy-")
            and k.lower() not in ("connection", EGRESS_HEADER.lower())
        ]
        if self.tag is not None:
            kept.append((EGRESS_HEADER, f" {self.tag}"))
        upstream_head = f"{method} {path or '/'} {version}\r\n" + "".join(
            f"{k}:{v}\r\n" for k, v in kept
        )
        upstream_head += "Connection: close\r\n\r\n"
        try:
            host = self.hosts.get(parts.hostname or "", parts.hostname)
            up_reader, up_writer = await asyncio.open_connection(host, parts.port or 80)
        except OSError:
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            await _close(writer)
            return
        self._open.add(up_writer)
        up_writer.write(upstream_head.encode("latin-1"))
        # The request body (if any) goes up while the answer comes down; the exchange is over
        # when the upstream closes (we asked it to), whatever the client's keep-alive says.
        upload = asyncio.create_task(_pipe(reader, up_writer))
        try:
            await _pipe(up_reader, writer)
        except ConnectionError:
            pass
        finally:
            upload.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await upload
            self._open.discard(up_writer)
            await _close(up_writer)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        async for chunk in _chunks(reader):
            writer.write(chunk)
            await writer.drain()
    finally:
        with contextlib.suppress(Exception):
            if writer.can_write_eof():
                writer.write_eof()


async def _chunks(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
    while chunk := await reader.read(65536):
        yield chunk


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()
