"""Fixtures of the /watchers tests: a gateway on a real nats-server, and the stand-in scheduler."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from services.gateway.app import create_app
from services.gateway.nats_link import NatsLink
from services.gateway.settings import GatewaySettings
from shared.secrets import new_key
from tests.integration.gateway_watchers.helpers import KEY, FakeScheduler
from tlr.nats_server import NatsServer


@pytest.fixture
def secret() -> str:
    return new_key()


@pytest.fixture
async def client(nats_server: NatsServer, secret: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = GatewaySettings(api_keys=[KEY], nats_url=nats_server.client_url, secret_key=secret)
    async with NatsLink(settings) as link:
        await link.wait_connected()
        transport = httpx.ASGITransport(app=create_app(settings, link=link))
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as c:
            yield c


@pytest.fixture
async def scheduler(nats_server: NatsServer) -> AsyncIterator[FakeScheduler]:
    fake = FakeScheduler()
    await fake.start(nats_server.client_url)
    yield fake
    await fake.stop()
