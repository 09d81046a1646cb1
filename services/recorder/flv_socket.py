"""Sockets of the HTTP-FLV pull: the route an httpx client takes, and a connection whose reads
pause between deliveries so the kernel's buffer fills (see flv_pull.py for why).

A :class:`Connection` is an ``asyncio.BufferedProtocol`` with one receive buffer it reuses. Once
``coalesce`` is set (once media flows), every read is followed by a pause of
:data:`COALESCE_S` (to a :data:`TICK_S` more), unless it filled all the room it had (more is
waiting: read it now); a consumer more than :data:`HIGH_WATER` behind (waiting for the disk)
keeps it paused until it takes data. The pauses end on one shared timer per event loop
(:class:`Resumer`, every :data:`TICK_S`), not one timer per connection per read. :func:`connect`
opens one along a :class:`Route`: direct, through an HTTP proxy (CONNECT for https targets) or a
SOCKS5 proxy, then TLS for https.
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import ssl
from dataclasses import dataclass
from typing import Literal, cast

import httpcore
import httpx

COALESCE_S = 0.25  # at most one read per stream this often while the body flows
TICK_S = COALESCE_S / 4  # how often the shared Resumer ends the pauses that are due
BUFFER = 64 * 1024  # initial receive buffer; grows to what one read needs
HIGH_WATER = 512 * 1024  # raw bytes held for a consumer that stopped reading (disk)
# The most one read hands the consumer. A stream behind has up to HIGH_WATER waiting: parsed
# whole, 1,000 such streams held the event loop for ~25 s at a time (leases lapsed).
MAX_PIECE = 128 * 1024
MAX_HEAD = 64 * 1024


@dataclass(frozen=True)
class Route:
    """How an httpx client reaches a URL: directly, or through an HTTP or SOCKS5 proxy."""

    kind: Literal["direct", "http", "socks5"]
    ssl_context: ssl.SSLContext | None = None
    proxy_host: str = ""
    proxy_port: int = 0
    proxy_headers: tuple[tuple[bytes, bytes], ...] = ()
    socks_auth: tuple[bytes, bytes] | None = None


def route_for(client: httpx.AsyncClient, url: httpx.URL) -> Route | None:
    """The route ``client`` would take to ``url``; None when it is not one we can take.

    Reads the client's transport (private attributes of httpx 0.2x and httpcore 1.x, pinned by
    uv.lock; tests/unit/recorder/test_flv_pull.py holds them to it).
    """
    transport = client._transport_for_url(url)
    if type(transport) is not httpx.AsyncHTTPTransport:
        return None
    pool = transport._pool
    if type(pool) is httpcore.AsyncConnectionPool:
        return Route("direct", ssl_context=pool._ssl_context)
    if type(pool) is httpcore.AsyncHTTPProxy:
        proxy = pool._proxy_url
        if proxy.scheme != b"http":
            return None  # TLS to the proxy itself: left to httpx
        return Route(
            "http",
            ssl_context=pool._ssl_context,
            proxy_host=proxy.host.decode("ascii"),
            proxy_port=proxy.port or 80,
            proxy_headers=tuple(pool._proxy_headers),
        )
    if type(pool) is httpcore.AsyncSOCKSProxy:
        proxy = pool._proxy_url
        return Route(
            "socks5",
            ssl_context=pool._ssl_context,
            proxy_host=proxy.host.decode("ascii"),
            proxy_port=proxy.port or 1080,
            socks_auth=pool._proxy_auth,
        )
    return None


@dataclass
class Stats:
    """What a connection's socket did: ``recvs`` reads from the kernel, ``deliveries`` pieces
    handed to the consumer (the body's, after the head)."""

    recvs: int = 0
    deliveries: int = 0
    bytes: int = 0


class Connection(asyncio.BufferedProtocol):
    """One connection: a reused receive buffer, and reads paused between deliveries."""

    def __init__(self, stats: Stats) -> None:
        self._loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray(BUFFER)
        self._view = memoryview(self._buf)
        self.start = 0  # unread data is self._buf[start:end]
        self.end = 0
        self._offered = 0
        self.eof = False
        self.error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self.coalesce = False  # set once media flows (FlvResponse.steady)
        self._paused = False
        self._timed = False  # paused for coalescing: the Resumer resumes it
        self.stats = stats

    # --- asyncio callbacks ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's is not a subclass of asyncio.Transport: no isinstance).
        self.transport = cast(asyncio.Transport, transport)

    def get_buffer(self, sizehint: int) -> memoryview:  # noqa: ARG002  (we know our size)
        free = len(self._buf) - self.end
        if free < BUFFER // 4:
            self._compact()
            free = len(self._buf) - self.end
            if free < BUFFER // 4:  # the consumer is behind: grow (bounded by HIGH_WATER)
                # A new buffer, not a resize: views of the old one may still be alive.
                unread = self.end - self.start
                grown = bytearray(2 * len(self._buf))
                grown[:unread] = self._view[self.start : self.end]
                self._buf, self._view = grown, memoryview(grown)
                self.start, self.end = 0, unread
                free = len(grown) - unread
        self._offered = free
        return self._view[self.end :]

    def buffer_updated(self, nbytes: int) -> None:
        self.end += nbytes
        self.stats.recvs += 1
        self._wake()
        # Coalescing: no more reads for a while, unless this one filled all the room it had
        # (more is waiting in the kernel: read it now rather than let the sender stall).
        if self._paused:
            return
        if self.end - self.start >= HIGH_WATER:
            # The consumer is behind (the disk, a starved loop): no more reads until it takes
            # data, else reads that fill their room would grow the buffer without bound.
            self._pause(timed=False)
        elif self.coalesce and nbytes < self._offered:
            self._pause(timed=True)

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        if exc is not None and self.error is None:
            self.error = exc
        self._timed = False
        self._wake()

    # --- reading -------------------------------------------------------------------------

    def _compact(self) -> None:
        if self.start:
            n = self.end - self.start
            self._buf[:n] = self._view[self.start : self.end]
            self.start, self.end = 0, n

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _pause(self, *, timed: bool) -> None:
        """Stop reading; again after COALESCE_S when ``timed`` (else when the consumer takes
        data)."""
        if self.transport is None or self.transport.is_closing():
            return
        self._paused = True
        self.transport.pause_reading()
        if timed:
            self._timed = True
            resumer(self._loop).add(self)

    def _resume_due(self) -> None:
        """The Resumer's call: the pause is over, unless the connection ended meanwhile."""
        if self._timed:
            self._resume_reading()

    def _resume_reading(self) -> None:
        self._timed = False
        if self.end - self.start >= HIGH_WATER:
            return  # the consumer is behind (waiting for the disk): it resumes us
        self._paused = False
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def taken(self) -> None:
        """The consumer took data: reading may go on if it was held back for it."""
        if self._paused and not self._timed:
            self._resume_reading()

    async def wait(self) -> None:
        """Until there is unread data or the connection ended."""
        while self.start == self.end and not self.eof:
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def data(self) -> memoryview:
        return self._view[self.start : self.end]

    def consume(self, n: int) -> None:
        self.start += n
        if self.start == self.end:
            self.start = self.end = 0
            if len(self._buf) > BUFFER:
                # Caught up after being behind: give the grown buffer back (a new one, as
                # views of the old one may still be alive).
                self._buf = bytearray(BUFFER)
                self._view = memoryview(self._buf)

    async def read_exact(self, n: int) -> bytes:
        while self.end - self.start < n:
            if self.eof:
                msg = "the connection closed during a handshake"
                raise self._closed_error(msg)
            await self.wait_more(self.end - self.start)
        out = bytes(self._view[self.start : self.start + n])
        self.consume(n)
        return out

    async def wait_more(self, have: int) -> None:
        while self.end - self.start == have and not self.eof:
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    async def read_head(self) -> bytes:
        """Bytes up to and including the blank line that ends a response head."""
        searched = 0
        while True:
            data = self._buf.find(b"\r\n\r\n", self.start + max(0, searched - 3), self.end)
            if data >= 0:
                head = bytes(self._view[self.start : data + 4])
                self.consume(data + 4 - self.start)
                return head
            searched = self.end - self.start
            if searched > MAX_HEAD:
                msg = "response head too large"
                raise httpx.RemoteProtocolError(msg)
            if self.eof:
                msg_0 = "the server closed the connection without a response"
                raise self._closed_error(msg_0)
            await self.wait_more(searched)

    def _closed_error(self, msg: str) -> Exception:
        if isinstance(self.error, OSError):
            return self.error
        return httpx.RemoteProtocolError(msg)

    def close(self) -> None:
        self._timed = False  # the Resumer drops it at its next tick
        if self.transport is not None:
            self.transport.abort()  # a live stream never ends on its own: no FIN wait
        self._view.release()


class Resumer:
    """Ends the coalescing pauses of every connection on one event loop with one timer: every
    :data:`TICK_S` while any is paused, it resumes those paused at least :data:`COALESCE_S`
    ago (pauses come in time order: a deque, oldest first). Instead of a ``call_later`` per
    connection per read (thousands a second at 1,000 streams), ~40 callbacks a second."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._paused: collections.deque[tuple[float, Connection]] = collections.deque()
        self._timer: asyncio.TimerHandle | None = None
        self.ticks = 0

    def __len__(self) -> int:
        return len(self._paused)

    def add(self, conn: Connection) -> None:
        self._paused.append((self.loop.time(), conn))
        if self._timer is None:
            self._timer = self.loop.call_later(TICK_S, self._on_timer)

    def tick(self, now: float) -> int:
        """Resume the connections paused at ``now - COALESCE_S`` or before; how many."""
        self.ticks += 1
        due = now - COALESCE_S
        resumed = 0
        paused = self._paused
        while paused and paused[0][0] <= due:
            _, conn = paused.popleft()
            conn._resume_due()
            resumed += 1
        return resumed

    def _on_timer(self) -> None:
        self._timer = None
        self.tick(self.loop.time())
        if self._paused:
            self._timer = self.loop.call_later(TICK_S, self._on_timer)


_resumer: Resumer | None = None


def resumer(loop: asyncio.AbstractEventLoop) -> Resumer:
    """The Resumer of ``loop`` (one event loop per process; a new loop gets a new one)."""
    global _resumer
    if _resumer is None or _resumer.loop is not loop:
        _resumer = Resumer(loop)
    return _resumer


async def connect(route: Route, url: httpx.URL, timeout: float, stats: Stats) -> Connection:
    """A connection to ``url``'s origin over ``route``: proxy handshakes and TLS done."""
    loop = asyncio.get_running_loop()
    host = url.host
    port = url.port or (443 if url.scheme == "https" else 80)
    tls = url.scheme == "https"
    conn: Connection | None = None
    try:
        async with asyncio.timeout(timeout):
            if route.kind == "direct":
                _, conn = await loop.create_connection(
                    lambda: Connection(stats), host, port, ssl=None
                )
            else:
                _, conn = await loop.create_connection(
                    lambda: Connection(stats), route.proxy_host, route.proxy_port
                )
                if route.kind == "socks5":
                    await _socks5(conn, route, host, port)
                elif tls:  # an HTTP proxy tunnels https with CONNECT; plain http is forwarded
                    await _http_connect(conn, route, host, port)
            if tls:
                conn = await _start_tls(conn, route, host)
            return conn
    except TimeoutError:
        if conn is not None:
            conn.close()
        msg = f"connect to {host}:{port} timed out"
        raise httpx.ConnectTimeout(msg) from None
    except OSError as exc:
        if conn is not None:
            conn.close()
        msg_0 = f"{type(exc).__name__}: {exc}"
        raise httpx.ConnectError(msg_0) from exc
    except BaseException:
        if conn is not None:
            conn.close()
        raise


async def _start_tls(conn: Connection, route: Route, host: str) -> Connection:
    loop = asyncio.get_running_loop()
    assert conn.transport is not None
    context = route.ssl_context or httpx.create_ssl_context()
    transport = await loop.start_tls(conn.transport, conn, context, server_hostname=host)
    if transport is None:
        msg = "TLS handshake failed"
        raise httpx.ConnectError(msg)
    conn.transport = transport
    return conn


async def _http_connect(conn: Connection, route: Route, host: str, port: int) -> None:
    assert conn.transport is not None
    target = f"{host}:{port}".encode("ascii")
    lines = [b"CONNECT " + target + b" HTTP/1.1", b"Host: " + target]
    lines += [k + b": " + v for k, v in route.proxy_headers]
    conn.transport.write(b"\r\n".join(lines) + b"\r\n\r\n")
    status, _ = parse_head(await conn.read_head())
    if not 200 <= status < 300:
        msg = f"the proxy refused CONNECT: {status}"
        raise httpx.ProxyError(msg)


async def _socks5(conn: Connection, route: Route, host: str, port: int) -> None:
    """RFC 1928 CONNECT (and RFC 1929 username/password), the target by name unless an IP."""
    assert conn.transport is not None
    write = conn.transport.write
    method = 2 if route.socks_auth else 0
    write(bytes((5, 1, method)))
    reply = await conn.read_exact(2)
    if reply != bytes((5, method)):
        msg = f"SOCKS5 proxy refused the method: {reply!r}"
        raise httpx.ProxyError(msg)
    if route.socks_auth:
        user, password = route.socks_auth
        write(bytes((1, len(user))) + user + bytes((len(password),)) + password)
        if (await conn.read_exact(2))[1] != 0:
            msg = "SOCKS5 proxy refused the credentials"
            raise httpx.ProxyError(msg)
    try:
        ip = ipaddress.ip_address(host)
        address = bytes((1 if ip.version == 4 else 4,)) + ip.packed
    except ValueError:
        name = host.encode("idna")
        address = bytes((3, len(name))) + name
    write(bytes((5, 1, 0)) + address + port.to_bytes(2, "big"))
    _, rep, _, atyp = await conn.read_exact(4)
    if rep != 0:
        msg = f"SOCKS5 proxy could not connect (reply {rep})"
        raise httpx.ProxyError(msg)
    if atyp == 3:
        await conn.read_exact((await conn.read_exact(1))[0] + 2)
    else:
        await conn.read_exact((4 if atyp == 1 else 16) + 2)


def parse_head(head: bytes) -> tuple[int, list[tuple[str, str]]]:
    """(status, [(lower-case name, value)]) of an HTTP/1.x response head."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        msg = f"malformed status line {lines[0][:64]!r}"
        raise httpx.RemoteProtocolError(msg)
    headers = []
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers.append((name.strip().lower(), value.strip()))
    return int(parts[1]), headers
