"""flv_pull without sockets: the routes it reads off an httpx client, the chunked decoder."""

from __future__ import annotations

import asyncio
import random

import httpx
import pytest

from services.recorder.flv_pull import FlvResponse, route_for
from services.recorder.flv_socket import Connection, Stats

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
