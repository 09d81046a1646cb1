"""flv_pull: the routes it reads off an httpx client, the chunked decoder (without sockets), and
the egress guards it awaits before every hop (with local servers)."""

from __future__ import annotations

import asyncio
import contextlib
import random

import httpx
import pytest

from services.recorder.flv_pull import FlvResponse, open_flv, route_for
from services.recorder.flv_socket import Connection, Stats
from shared.egress import StreamPolicy
from shared.tiktok.guards import StreamGuard, StreamHostRefused
from tests.loopback import LoopbackServer

URL = httpx.URL("http://cdn.example/stream.flv")


async def test_direct_client() -> None:
    async with httpx.AsyncClient() as client:
        route = route_for(client, URL)
    assert route is not None
    assert route.kind == "direct"
    assert route.ssl_context is not None


async def test_http_proxy_with_credentials() -> None:
    async with httpx.AsyncClient(proxy="http://user:secret@127.0.0.1:3128") as client:
        route = route_for(client, URL)
    assert route is not None
    assert (route.kind, route.proxy_host, route.proxy_port) == ("http", "127.0.0.1", 3128)
    assert (b"Proxy-Authorization", b"Basic dXNlcjpzZWNyZXQ=") in route.proxy_headers


@pytest.mark.parametrize("scheme", ["socks5", "socks5h"])
async def test_socks_proxy_with_credentials(scheme: str) -> None:
    async with httpx.AsyncClient(proxy=f"{scheme}://user:secret@127.0.0.1:1080") as client:
        route = route_for(client, URL)
    assert route is not None
    assert (route.kind, route.proxy_port, route.socks_auth) == (
        "socks5",
        1080,
        (b"user", b"secret"),
    )


async def test_clients_it_cannot_follow_stream_through_httpx() -> None:
    class Custom(httpx.AsyncHTTPTransport):
        pass

    async with httpx.AsyncClient(transport=Custom()) as client:
        assert route_for(client, URL) is None
    async with httpx.AsyncClient(proxy="https://127.0.0.1:3128") as client:
        assert route_for(client, URL) is None  # TLS to the proxy itself


def _chunked(payload: bytes, rng: random.Random) -> bytes:
    out = bytearray()
    pos = 0
    while pos < len(payload):
        n = rng.randint(1, 3000)
        piece = payload[pos : pos + n]
        ext = b";x=1" if rng.random() < 0.1 else b""
        out += b"%x%b\r\n%b\r\n" % (len(piece), ext, piece)
        pos += n
    return bytes(out + b"0\r\nTrailer: 1\r\n\r\n")


async def _decode(
    wire: bytes, framing: str, rng: random.Random, left: int = 0, most: int = 5000
) -> bytes:
    """Feed ``wire`` to a connection in random pieces while a task reads the body."""
    conn = Connection(Stats())
    response = FlvResponse(200, [], conn, framing, left)  # type: ignore[arg-type]

    async def read() -> bytes:
        return b"".join([piece async for piece in response.chunks()])

    reader = asyncio.create_task(read())
    pos = 0
    while pos < len(wire):
        n = min(rng.randint(1, most), len(wire) - pos)
        while n:
            buf = conn.get_buffer(-1)
            k = min(n, len(buf))
            buf[:k] = wire[pos : pos + k]
            conn.buffer_updated(k)
            pos, n = pos + k, n - k
        await asyncio.sleep(0)  # the reader takes what is there (a partial frame stays)
    conn.eof_received()
    return await reader


async def test_chunked_body_split_anywhere() -> None:
    rng = random.Random(7)
    payload = rng.randbytes(200_000)
    assert await _decode(_chunked(payload, rng), "chunked", rng) == payload
    small = rng.randbytes(5_000)  # byte by byte: every cut of a size line and of a CRLF
    assert await _decode(_chunked(small, rng), "chunked", rng, most=3) == small
    # Far more than the buffer between two reads (a consumer waiting for the disk): it grows.
    big = rng.randbytes(1_000_000)
    assert await _decode(_chunked(big, rng), "chunked", rng, most=400_000) == big


async def test_length_and_close_delimited_bodies() -> None:
    rng = random.Random(8)
    payload = rng.randbytes(100_000)
    assert await _decode(payload, "length", rng, left=len(payload)) == payload
    assert await _decode(payload, "close", rng) == payload


async def test_a_chunked_body_cut_short_is_an_error() -> None:
    rng = random.Random(9)
    wire = _chunked(rng.randbytes(10_000), rng)[:-100]
    with pytest.raises(httpx.RemoteProtocolError, match="complete message body"):
        await _decode(wire, "chunked", rng)


async def test_malformed_chunk_size() -> None:
    rng = random.Random(10)
    with pytest.raises(httpx.RemoteProtocolError, match="chunk size"):
        await _decode(b"zz\r\nabc\r\n0\r\n\r\n", "chunked", rng)


# --- egress (issue 17): the client's request hooks on every hop --------------------------------


class Server(LoopbackServer):
    """A local HTTP server answering every connection with ``answer`` (then closing); counts
    connections."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.connections = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        with contextlib.suppress(Exception):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(self.answer)
            await writer.drain()
        writer.close()


def redirect_to(location: str) -> bytes:
    return f"HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n".encode()


@pytest.mark.parametrize("target", ["localhost", "169.254.169.254"])
async def test_a_redirect_off_the_list_is_refused_before_connecting(target: str) -> None:
    local = StreamPolicy(("127.0.0.1",), allow_private=True)  # the test's CDN, on loopback
    guard = StreamGuard(local, via_proxy=False, every_request=True)
    async with Server(b"") as canary:
        port = canary.url.rsplit(":", 1)[1]
        location = f"http://{target}:{port}/x" if target == "localhost" else f"http://{target}/"
        async with (
            Server(redirect_to(location)) as cdn,
            httpx.AsyncClient(event_hooks={"request": [guard]}) as client,
        ):
            url = f"{cdn.url}/game/stream-1.flv"
            route = route_for(client, httpx.URL(url))
            assert route is not None
            with pytest.raises(StreamHostRefused):
                await open_flv(client, route, url, connect_timeout=5, read_timeout=5)
            assert cdn.connections == 1
        assert canary.connections == 0


async def test_a_first_url_off_the_list_is_never_connected_to() -> None:
    guard = StreamGuard(StreamPolicy(), via_proxy=False, every_request=True)
    async with Server(b"HTTP/1.1 200 OK\r\n\r\n") as service:
        async with httpx.AsyncClient(event_hooks={"request": [guard]}) as client:
            url = f"{service.url}/x.flv"
            route = route_for(client, httpx.URL(url))
            assert route is not None
            with pytest.raises(StreamHostRefused):
                await open_flv(client, route, url, connect_timeout=5, read_timeout=5)
        assert service.connections == 0


async def test_a_malformed_content_length_does_not_quote_the_peer() -> None:
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: SSH-2.0-OpenSSH_9.6\r\n\r\n"
    async with Server(answer) as service, httpx.AsyncClient() as client:
        url = f"{service.url}/x.flv"
        route = route_for(client, httpx.URL(url))
        assert route is not None
        with pytest.raises(httpx.RemoteProtocolError) as failed:
            await open_flv(client, route, url, connect_timeout=5, read_timeout=5)
    assert "OpenSSH" not in str(failed.value)
