"""The egress policy on httpx requests: stream GETs, their redirects, proxies, error texts."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator

import httpx
import pytest

from shared.egress import IPAddress, Refusal, StreamPolicy, parse_host_list
from shared.errors import ErrorCode
from shared.tiktok import NetworkTimeout, ProxyNotAllowed, TikTokClient
from shared.tiktok.guards import (
    SESSION_REFUSALS,
    STREAM_REQUEST,
    ProxyGuard,
    ProxyRefused,
    Refusals,
    StreamGuard,
    StreamHostRefused,
    transport_reason,
)

CDN = "https://pull-flv-l1-va01.tiktokcdn.com/game/stream-1.flv?expire=1&sign=2"
BANNER = "SSH-2.0-OpenSSH_9.6 internal-billing-db.corp"


class Answers:
    """A resolver that answers ``addresses`` for every name (none: it does not resolve),
    and records what it was asked."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = [ipaddress.ip_address(a) for a in addresses]
        self.asked: list[str] = []

    async def __call__(self, host: str, _port: int) -> list[IPAddress]:
        self.asked.append(host)
        if not self.addresses:
            msg = "no such host"
            raise OSError(msg)
        return self.addresses


def stream(url: str) -> httpx.Request:
    return httpx.Request("GET", url, extensions={STREAM_REQUEST: True})


async def test_unmarked_requests_are_none_of_its_business() -> None:
    guard = StreamGuard(StreamPolicy(), via_proxy=False, resolver=Answers())
    await guard(httpx.Request("GET", "http://127.0.0.1/anything"))


@pytest.mark.parametrize(
    ("url", "resolved", "reason"),
    [
        (CDN, ("151.101.1.1",), None),
        ("https://evil-tiktokcdn.com/x.flv", ("151.101.1.1",), Refusal.HOST_NOT_ALLOWED),
        ("http://127.0.0.1:8080/x.flv", (), Refusal.HOST_NOT_ALLOWED),
        ("http://169.254.169.254/latest/meta-data/", (), Refusal.HOST_NOT_ALLOWED),
        ("http://2130706433/x.flv", (), Refusal.BAD_HOST),
        # On the list, but its name resolves to a private address (one is enough).
        (CDN, ("127.0.0.1",), Refusal.RESOLVES_PRIVATE),
        (CDN, ("151.101.1.1", "::ffff:10.0.0.1"), Refusal.RESOLVES_PRIVATE),
    ],
)
async def test_stream_gets_directly(url: str, resolved: tuple[str, ...], reason: Refusal) -> None:
    guard = StreamGuard(StreamPolicy(), via_proxy=False, resolver=Answers(*resolved))
    if reason is None:
        await guard(stream(url))
        return
    with pytest.raises(StreamHostRefused) as refused:
        await guard(stream(url))
    assert refused.value.reason == reason
    assert str(refused.value) == "the stream host is not allowed"  # nothing of the host


async def test_through_a_proxy_names_are_not_resolved_but_addresses_are_judged() -> None:
    resolver = Answers("127.0.0.1")
    listed = StreamPolicy(parse_host_list(["tiktokcdn.com", "10.0.0.5"]))
    guard = StreamGuard(listed, via_proxy=True, resolver=resolver)
    await guard(stream(CDN))  # the proxy resolves it
    with pytest.raises(StreamHostRefused, match="not allowed") as refused:
        await guard(stream("http://10.0.0.5/x.flv"))  # listed, but private
    assert refused.value.reason == Refusal.PRIVATE_ADDRESS
    assert resolver.asked == []


async def test_a_name_that_does_not_resolve_is_not_fetched() -> None:
    guard = StreamGuard(StreamPolicy(), via_proxy=False, resolver=Answers())
    with pytest.raises(httpx.ConnectError, match="could not resolve"):
        await guard(stream(CDN))


async def test_private_addresses_when_allowed() -> None:
    resolver = Answers("127.0.0.1")
    local = StreamPolicy(parse_host_list(["localhost", "127.0.0.1"]), allow_private=True)
    guard = StreamGuard(local, via_proxy=False, resolver=resolver)
    await guard(stream("http://localhost:8080/x.flv"))
    await guard(stream("http://127.0.0.1:8080/x.flv"))
    assert resolver.asked == []  # nothing to refuse


async def test_refusals_are_counted_for_the_session_that_made_them() -> None:
    guard = StreamGuard(StreamPolicy(), via_proxy=True)
    refusals = Refusals()
    token = SESSION_REFUSALS.set(refusals)
    try:
        for _ in range(2):
            with pytest.raises(StreamHostRefused):
                await guard(stream("http://127.0.0.1/x.flv"))
        await guard(stream(CDN))
    finally:
        SESSION_REFUSALS.reset(token)
    assert refusals.count == 2


async def test_every_redirect_hop_passes_the_policy() -> None:
    """httpx awaits request hooks before each hop: the redirect to the metadata service is
    refused before anything is sent to it."""
    sent: list[str] = []

    def cdn(request: httpx.Request) -> httpx.Response:
        sent.append(str(request.url))
        return httpx.Response(302, headers={"Location": "http://169.254.169.254/latest/"})

    guard = StreamGuard(StreamPolicy(), via_proxy=True)
    async with httpx.AsyncClient(
        transport=httpx.MockTransport(cdn), event_hooks={"request": [guard]}
    ) as client:
        with pytest.raises(StreamHostRefused):
            await client.get(CDN, follow_redirects=True, extensions={STREAM_REQUEST: True})
    assert sent == [CDN]


# --- proxies -------------------------------------------------------------------------------


async def test_a_proxy_name_resolving_to_a_private_address_is_refused() -> None:
    now = [0.0]
    resolver = Answers("151.101.1.1")
    guard = ProxyGuard("proxy.example", 3128, resolver=resolver, ttl=60, clock=lambda: now[0])
    await guard.check()
    await guard.check()
    assert resolver.asked == ["proxy.example"]  # once per ttl
    rebound = ProxyGuard("proxy.example", 3128, resolver=Answers("10.1.2.3"))
    with pytest.raises(ProxyRefused, match="private address"):
        await rebound.check()
    unknown = ProxyGuard("proxy.example", 3128, resolver=Answers())
    await unknown.check()  # let through: the connection fails on its own


@pytest.mark.parametrize(
    "proxy",
    [
        "http://u:hunter2@127.0.0.1:3128",
        "socks5://10.0.0.7:1080",
        "http://[::1]:3128",
        "http://169.254.169.254:80",
        "http://[::ffff:192.168.1.1]:3128",
        "http://2130706433:3128",
    ],
)
def test_a_client_with_a_private_literal_proxy_is_refused(proxy: str) -> None:
    with pytest.raises(ValueError, match="proxy") as refused:
        TikTokClient(web_base="http://web.test", webcast_base="http://web.test", proxy=proxy)
    assert "hunter2" not in str(refused.value)


async def test_private_proxies_when_allowed() -> None:
    async with TikTokClient(
        web_base="http://web.test",
        webcast_base="http://web.test",
        proxy="http://127.0.0.1:3128",
        allow_private_proxy=True,
    ):
        pass


async def test_a_proxy_named_localhost_is_refused_before_anything_is_sent() -> None:
    async with TikTokClient(
        web_base="http://web.test", webcast_base="http://web.test", proxy="http://localhost:9"
    ) as client:
        with pytest.raises(ProxyNotAllowed) as refused:
            await client.room_info("7503448765740976902")
    assert refused.value.code == ErrorCode.VALIDATION_ERROR
    assert refused.value.retryable is False


# --- what an answer may say ----------------------------------------------------------------


@pytest.fixture
async def banner() -> AsyncIterator[int]:
    """A TCP service that greets every connection with a banner and hangs up (an SSH or
    database port a proxy was aimed at)."""

    async def greet(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(f"{BANNER}\r\n\r\n".encode())  # a blank line: clients quote it
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(greet, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def test_a_banner_behind_a_proxy_never_reaches_the_error(banner: int) -> None:
    base = "http://web.test"
    proxy = f"http://127.0.0.1:{banner}"  # the "proxy" is the banner service itself
    async with TikTokClient(
        web_base=base, webcast_base=base, proxy=proxy, allow_private_proxy=True, timeout=5
    ) as client:
        with pytest.raises(NetworkTimeout) as failed:
            await client.room_info("7503448765740976902")
    assert "OpenSSH" not in str(failed.value)
    assert "internal-billing" not in str(failed.value)
    assert str(failed.value).startswith("network error calling TikTok room_info: ")


async def test_a_banner_as_the_answer_never_reaches_the_error(banner: int) -> None:
    base = f"http://127.0.0.1:{banner}"
    async with TikTokClient(web_base=base, webcast_base=base, timeout=5) as client:
        with pytest.raises(NetworkTimeout) as failed:
            await client.check_alive(["7503448765740976902"])
    assert "OpenSSH" not in str(failed.value)


@pytest.mark.parametrize(
    ("exc", "phrase"),
    [
        (httpx.ProxyError(f"503 {BANNER}"), "the proxy refused the connection"),
        (httpx.ConnectTimeout(BANNER), "connecting timed out"),
        (httpx.ReadTimeout(BANNER), "no answer in time"),
        (httpx.ConnectError(BANNER), "could not connect"),
        (httpx.RemoteProtocolError(f"illegal status line: {BANNER!r}"), "not valid HTTP"),
        (httpx.ReadError(BANNER), "the connection failed"),
        (OSError(BANNER), "the connection failed"),
        (RuntimeError(BANNER), "network error"),
    ],
)
def test_transport_reasons_are_fixed_phrases(exc: BaseException, phrase: str) -> None:
    assert phrase in transport_reason(exc)
    assert "OpenSSH" not in transport_reason(exc)
