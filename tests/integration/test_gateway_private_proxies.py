"""A proxy on a private address is a 422 at the gateway unless ALLOW_PRIVATE_PROXIES (issue 17)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import httpx
import pytest

from services.gateway.app import create_app
from services.gateway.nats_link import NatsLink
from services.gateway.settings import GatewaySettings
from shared import events as ev
from shared import jobs
from shared.bus import Bus
from shared.secrets import new_key
from tests.integration.gateway_watchers.helpers import (
    KEY,
    FakeScheduler,
    H,
    event_count,
    kv_keys,
    stored_events,
)
from tlr.nats_server import NatsServer

ROOM = "7503448765740976902"
PASSWORD = "hunter2"
PRIVATE = [
    f"http://bob:{PASSWORD}@127.0.0.1:8080",  # loopback
    "socks5://169.254.169.254:1080",  # link-local: a cloud's metadata service
]
# Each way a proxy reaches the recorders: a recording now, or a watcher's lives.
POSTS = [
    ("/recordings", {"room_id": ROOM}),
    ("/watchers", {"url": "@alice"}),
]

Gateway = Callable[[bool], AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
async def gateway(nats_server: NatsServer) -> AsyncIterator[Gateway]:
    """A gateway on the test's nats-server, with ALLOW_PRIVATE_PROXIES as asked; the
    stand-in scheduler answers that no watcher exists yet."""
    scheduler = FakeScheduler()
    await scheduler.start(nats_server.client_url)

    @asynccontextmanager
    async def start(allow_private_proxies: bool) -> AsyncIterator[httpx.AsyncClient]:
        settings = GatewaySettings(
            api_keys=[KEY],
            nats_url=nats_server.client_url,
            secret_key=new_key(),
            allow_private_proxies=allow_private_proxies,
        )
        async with NatsLink(settings) as link:
            await link.wait_connected()
            transport = httpx.ASGITransport(app=create_app(settings, link=link))
            async with httpx.AsyncClient(transport=transport, base_url="http://gw") as c:
                yield c

    yield start
    await scheduler.stop()


@pytest.mark.parametrize(("path", "body"), POSTS)
@pytest.mark.parametrize("proxy", PRIVATE)
async def test_a_private_proxy_is_422_and_nothing_is_made(
    gateway: Gateway, bus: Bus, path: str, body: dict[str, object], proxy: str
) -> None:
    async with gateway(False) as client:
        r = await client.post(path, json={**body, "options": {"proxy": proxy}}, headers=H)
        assert r.status_code == 422, r.text
        assert r.json()["error_code"] == "VALIDATION_ERROR"
        assert r.json()["error_message"].startswith("options.proxy: ")
        assert "ALLOW_PRIVATE_PROXIES" in r.json()["error_message"]
        assert PASSWORD not in r.text
        # No job stored, nothing published (no recording.requested for the recorders, no
        # watch.requested from which the scheduler would make a watcher).
        assert await kv_keys(bus) == []
        assert await event_count(bus) == 0


@pytest.mark.parametrize(("path", "body"), POSTS)
@pytest.mark.parametrize("proxy", PRIVATE)
async def test_a_private_proxy_is_accepted_when_the_deployment_allows_it(
    gateway: Gateway, bus: Bus, path: str, body: dict[str, object], proxy: str
) -> None:
    async with gateway(True) as client:
        r = await client.post(path, json={**body, "options": {"proxy": proxy}}, headers=H)
        assert r.status_code == 202, r.text
        task_id = r.json()["task_id"]
    assert await kv_keys(bus) == [jobs.request_key(task_id)]
    (event,) = await stored_events(bus)
    assert isinstance(event, ev.RecordingRequested | ev.WatchRequested)
    assert event.options.proxy is not None  # sealed
    assert PASSWORD not in event.options.proxy
