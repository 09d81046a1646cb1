"""Chaos fixtures: a 3-node NATS cluster, recorders behind fault proxies, an in-process gateway."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from services.gateway.app import create_app
from services.gateway.nats_link import NatsLink
from services.gateway.settings import GatewaySettings
from shared.bus import Bus
from shared.secrets import new_key
from tests.chaos.fleet import KEY, ChaosFleet
from tests.chaos.s3 import ChaosS3
from tests.s3_fault_proxy import S3FaultProxy
from tests.s3_server import S3Server
from tlr.fake_tiktok import FakeTikTok
from tlr.nats_server import NatsCluster

REPLICAS = 3
_REPORT = pytest.StashKey[list[str]]()


@pytest.fixture
def chaos_report(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """Figures a scenario measured, printed in the terminal summary (not only on failure)."""
    lines = request.config.stash.setdefault(_REPORT, [])

    def report(line: str) -> None:
        lines.append(f"{request.node.name}: {line}")

    return report


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    lines = config.stash.get(_REPORT, [])
    if lines:
        terminalreporter.section("chaos figures")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[NatsCluster]:
    """Three JetStream nodes routed together on loopback, each with its own store."""
    async with NatsCluster(tmp_path / "nats") as started:
        yield started


@pytest.fixture
async def cluster_bus(cluster: NatsCluster) -> AsyncIterator[Bus]:
    """The test's own connection, straight to every node (no proxy): R3 streams and buckets."""
    connected = await Bus.connect(cluster.client_urls, service="test", replicas=REPLICAS)
    assert connected is not None
    await connected.provision()
    yield connected
    await connected.close()


@pytest.fixture
async def chaos_fleet(
    cluster: NatsCluster, cluster_bus: Bus, fake_tiktok: FakeTikTok, tmp_path: Path
) -> AsyncIterator[ChaosFleet]:
    secret = new_key()
    env = {
        **os.environ,
        "NATS_REPLICAS": str(REPLICAS),
        "RECORDINGS_DIR": str(tmp_path / "recordings"),
        "COOKIES_DIR": str(tmp_path / "cookies"),
        "TIKTOK_WEB_BASE": fake_tiktok.base_url,
        "TIKTOK_WEBCAST_BASE": fake_tiktok.base_url,
        **fake_tiktok.egress_env,
        "SECRET_KEY": secret,
        "READ_TIMEOUT": "2",
        "LOG_FORMAT": "json",
        "PYTHONUNBUFFERED": "1",
    }
    # An admin: the scenarios look at every job and rebuild the index (POST /files/rebuild).
    keys_file = tmp_path / "api-keys"
    keys_file.write_text(f"chaos {KEY} role=admin\n")
    gw = GatewaySettings(
        api_keys_file=keys_file,
        nats_url=",".join(cluster.client_urls),
        nats_replicas=REPLICAS,
        secret_key=secret,
        rate_limit_per_min=100_000,  # polls job status many times a second
    )
    async with NatsLink(gw) as link:
        await link.wait_connected()
        transport = httpx.ASGITransport(app=create_app(gw, link=link))
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            fleet = ChaosFleet(client, cluster_bus, cluster, env, tmp_path)
            try:
                yield fleet
            finally:
                await fleet.stop_all()


@pytest.fixture
async def chaos_s3(s3_server: S3Server) -> AsyncIterator[ChaosS3]:
    """A real S3 server (moto) and, in front of it, the fault proxy uploaders talk to."""
    async with S3FaultProxy(s3_server.endpoint_url) as proxy:
        yield ChaosS3(s3_server, proxy)
