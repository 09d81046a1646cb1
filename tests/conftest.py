"""Fixtures shared by every test: a real nats-server per test, a connected bus, unique names."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shared.bus import Bus
from tlr.nats_server import NatsServer

pytest_plugins = ["tests.fake_tiktok_plugin", "tests.s3_server"]


@pytest.fixture
def uid() -> str:
    return uuid.uuid4().hex[:12]


@pytest.fixture
async def nats_server(tmp_path: Path) -> AsyncIterator[NatsServer]:
    """A real nats-server with JetStream on free ports and its own store dir."""
    async with NatsServer(tmp_path / "nats") as server:
        yield server


@pytest.fixture
async def bus(nats_server: NatsServer) -> AsyncIterator[Bus]:
    """A connected, provisioned bus: the same provisioning every service runs."""
    connected = await Bus.connect([nats_server.client_url], service="test")
    assert connected is not None
    await connected.provision()
    yield connected
    await connected.close()
