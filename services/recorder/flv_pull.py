"""The HTTP-FLV GET on a plain asyncio protocol that reads each socket in large pieces.

Why: a CDN delivers a 2 Mbit/s live as ~1.4 KB TCP segments. Read through httpx, every
segment wakes the event loop and walks httpx, httpcore, h11 and anyio, one HTTP chunk at a
time: about a core for 200 streams, while parsing and writing the same bytes costs a
twentieth of that. Here, once the response head is in, a connection stops reading after
each delivery (``pause_reading``) for ``flv_socket.COALESCE_S``: the kernel's socket buffer fills
meanwhile and the next read takes it all at once, into a buffer the connection reuses, and the
HTTP chunked framing is stripped (by llhttp, in C) over that whole piece. About four reads a
second per stream, whatever the CDN's write sizes. Until the caller says media flows
(:meth:`FlvResponse.steady`, once the first keyframe is written), every read is taken as it
arrives: the head, the CDN's first burst and the first keyframe are never held back.

What stays as with httpx (the caller's client still decides it): the request headers
(``client.build_request``), the request event hooks, awaited before every hop as httpx does
(the egress guards, ``shared.tiktok.guards``: a refused hop is never connected to), redirects
(``follow_redirects``, ``max_redirects``), proxies (HTTP
with CONNECT for https targets, SOCKS5 with or without auth; the client's own routing, mounts
included), TLS with the client's SSL context, and httpx's exceptions (ConnectTimeout,
ReadTimeout, ConnectError, ProxyError, RemoteProtocolError, TooManyRedirects), so the caller
treats both paths alike. :func:`route_for` returns None for a client it cannot follow (a
custom transport, an HTTPS proxy): the caller then streams through httpx as before.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal

import httptools
import httpx

from services.recorder.flv_socket import (
    MAX_PIECE,
    Connection,
    Route,
    Stats,
    connect,
    parse_head,
    route_for,
)
from shared.tiktok.guards import STREAM_REQUEST

REDIRECTS = frozenset({301, 302, 303, 307, 308})
# What llhttp is told of the response (its head is already parsed): a chunked body follows.
_CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"


class Dechunker:
    """Strips HTTP/1.1 chunked framing with llhttp (httptools), in C.

    Why not Python: a CDN relaying a live often frames every TCP segment as one HTTP chunk,
    ~180 chunks a second per 2 Mbit/s stream; a Python loop paid ~1 µs per chunk (36,000 a
    second at 200 streams), llhttp ~0.15 µs. It keeps any cut size line or CRLF itself, so each
    piece is fed whole.
    """

    __slots__ = ("_parser", "_parts", "done")

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self.done = False
        self._parser = httptools.HttpResponseParser(self)
        self._parser.feed_data(_CHUNKED_HEAD)

    def on_body(self, body: bytes) -> None:
        self._parts.append(body)

    def on_message_complete(self) -> None:
        self.done = True

    def feed(self, data: memoryview) -> bytes:
        """The payload in ``data``; b"" while only framing arrived.

        Raises:
            httpx.RemoteProtocolError: the framing is malformed.
        """
        if not self.done:
            try:
                self._parser.feed_data(data)
            except httptools.HttpParserError as exc:
                if not self.done:  # bytes after the last chunk are ignored, as before
                    msg = f"malformed chunked body (chunk size or framing: {exc})"
                    raise httpx.RemoteProtocolError(msg) from None
        parts = self._parts
        if not parts:
            return b""
        payload = parts[0] if len(parts) == 1 else b"".join(parts)
        parts.clear()
        return payload


__all__ = ["FlvResponse", "Route", "Stats", "flv_get", "open_flv", "route_for"]


@dataclass
class FlvResponse:
    """A 200 (or any final) response whose body :meth:`chunks` yields in large pieces."""

    status: int
    headers: list[tuple[str, str]]
    _conn: Connection
    _framing: Literal["chunked", "length", "close"]
    _left: int = 0  # length framing: bytes still to come
    _state: Literal["body", "done"] = "body"
    stats: Stats = field(default_factory=Stats)
    _chunked: Dechunker | None = None

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (lower case), or None."""
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def steady(self) -> None:
        """Media flows: from now on each read waits for more to arrive (coalescing)."""
        self._conn.coalesce = True

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body, decoded (chunked framing stripped), one piece per socket read."""
        conn = self._conn
        left = 0  # undecodable bytes left by the last pass (a cut chunk-size line or CRLF)
        while True:
            if conn.end - conn.start > left:
                # More is waiting already (this stream is behind): let the loop run the others'
                # reads, timers and lease renewals before this one takes its next piece.
                await asyncio.sleep(0)
            await conn.wait_more(left)
            whole = conn.data()
            if not whole:
                self._check_complete()
                return
            view = whole[:MAX_PIECE]
            whole.release()
            payload, used = self._decode(view)
            left = len(view) - used
            view.release()
            conn.consume(used)
            conn.taken()
            if payload:
                self.stats.deliveries += 1
                self.stats.bytes += len(payload)
                yield payload
            if self._state == "done":
                return
            if conn.eof and left == conn.end - conn.start:  # nothing more is coming
                self._check_complete()
                return

    def _check_complete(self) -> None:
        conn = self._conn
        if self._framing == "close" and conn.error is None:
            return
        if self._state == "done":
            return
        if isinstance(conn.error, OSError):
            raise conn.error
        msg = f"peer closed connection without sending complete message body ({self._framing})"
        raise httpx.RemoteProtocolError(msg)

    def _decode(self, view: memoryview) -> tuple[bytes, int]:
        """(payload, bytes of ``view`` used): strip the framing from what has arrived."""
        if self._framing == "close":
            return bytes(view), len(view)
        if self._framing == "length":
            n = min(self._left, len(view))
            self._left -= n
            if self._left == 0:
                self._state = "done"
            return bytes(view[:n]), n
        return self._dechunk(view)

    def _dechunk(self, view: memoryview) -> tuple[bytes, int]:
        if self._chunked is None:
            self._chunked = Dechunker()
        payload = self._chunked.feed(view)
        if self._chunked.done:
            self._state = "done"
        return payload, len(view)

    def close(self) -> None:
        self._conn.close()


async def open_flv(
    client: httpx.AsyncClient,
    route: Route,
    url: httpx.URL | str,
    *,
    connect_timeout: float,
    read_timeout: float,
    follow_redirects: bool = True,
) -> FlvResponse:
    """GET ``url`` as ``client`` would, over ``route``; the caller closes the response.

    Raises:
        httpx.HTTPError: ConnectTimeout, ReadTimeout (no head within ``read_timeout``),
            ConnectError, ProxyError, RemoteProtocolError, TooManyRedirects, or what a
            request hook raised (``guards.EgressRefused``).
        OSError: the connection failed in another way.
    """
    redirects = 0
    while True:
        request = client.build_request("GET", url, extensions={STREAM_REQUEST: True})
        request.headers["Accept-Encoding"] = "identity"  # the body is fed as is to the parser
        for hook in client.event_hooks["request"]:
            await hook(request)
        conn = await connect(route, request.url, connect_timeout, Stats())
        try:
            response = await _exchange(conn, request, route, read_timeout)
        except BaseException:
            conn.close()
            raise
        location = response.header("location")
        if follow_redirects and response.status in REDIRECTS and location:
            response.close()
            redirects += 1
            if redirects > client.max_redirects:
                msg = "Exceeded maximum allowed redirects."
                raise httpx.TooManyRedirects(msg, request=request)
            url = request.url.join(location)
            route = route_for(client, url) or route
            continue
        return response


async def _exchange(
    conn: Connection, request: httpx.Request, route: Route, read_timeout: float
) -> FlvResponse:
    """Send the GET, read the head; the body's framing is set up, nothing of it is read."""
    assert conn.transport is not None
    url = request.url
    forward = route.kind == "http" and url.scheme == "http"
    target = str(url) if forward else url.raw_path.decode("ascii")
    lines = [f"GET {target} HTTP/1.1".encode("ascii")]
    lines += [k + b": " + v for k, v in request.headers.raw]
    if forward:
        lines += [k + b": " + v for k, v in route.proxy_headers]
    conn.transport.write(b"\r\n".join(lines) + b"\r\n\r\n")
    try:
        async with asyncio.timeout(read_timeout):
            head = await conn.read_head()
    except TimeoutError:
        msg = "no response head in time"
        raise httpx.ReadTimeout(msg, request=request) from None
    status, headers = parse_head(head)
    values = dict(headers)
    encoding = values.get("transfer-encoding", "").lower()
    framing: Literal["chunked", "length", "close"] = "close"
    left = 0
    if "chunked" in encoding:
        framing = "chunked"
    elif "content-length" in values:
        length = values["content-length"]
        if not length.isdigit():
            # Not int()'s ValueError: its text would quote the header (the peer's words).
            msg = "malformed Content-Length"
            raise httpx.RemoteProtocolError(msg, request=request)
        framing, left = "length", int(length)
    if values.get("content-encoding", "identity").lower() not in ("identity", ""):
        msg = f"unsupported content encoding {values['content-encoding']!r}"
        raise httpx.DecodingError(msg, request=request)
    response = FlvResponse(status, headers, conn, framing, left, stats=conn.stats)
    if framing == "length" and left == 0:
        response._state = "done"
    return response


@contextlib.asynccontextmanager
async def flv_get(
    client: httpx.AsyncClient,
    route: Route,
    url: str,
    *,
    connect_timeout: float,
    read_timeout: float,
) -> AsyncIterator[FlvResponse]:
    """:func:`open_flv` as a context manager that always closes the connection."""
    response = await open_flv(
        client, route, url, connect_timeout=connect_timeout, read_timeout=read_timeout
    )
    try:
        yield response
    finally:
        response.close()
