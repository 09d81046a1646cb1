"""Failed authentications limited per client address, in a real gateway process on a real
nats-server: 429 past AUTH_FAILURES_PER_MIN, other addresses unaffected, X-Forwarded-For
believed only from FORWARDED_ALLOW_IPS, and no NATS counter spent on a failure."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import httpx
import nats.js.errors
import pytest

from shared.bus import Bus
from shared.subjects import RATELIMIT_STREAM
from tests.helpers import eventually, free_port
from tlr.nats_server import NatsServer

KEY = "k-auth-failures-0c1d"
GUESSER = {"X-Forwarded-For": "198.51.100.7"}
NEIGHBOUR = {"X-Forwarded-For": "203.0.113.9"}

Gateway = Callable[..., AbstractAsyncContextManager[str]]


@pytest.fixture
def gateway(nats_server: NatsServer, tmp_path: Path) -> Gateway:
    """``python -m services.gateway`` with extra environment; yields its base URL."""

    @asynccontextmanager
    async def start(**env: str) -> AsyncIterator[str]:
        port = free_port()
        full = {
            **os.environ,
            "NATS_URL": nats_server.client_url,
            "GATEWAY_PORT": str(port),
            "API_KEYS": KEY,
            "AUTH_FAILURES_PER_MIN": "20",
            "LOG_FORMAT": "json",
            **env,
        }
        with (tmp_path / f"gw-{port}.log").open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "services.gateway"], env=full, stdout=log, stderr=log
            )
        url = f"http://127.0.0.1:{port}"
        try:
            async with httpx.AsyncClient(timeout=5) as client:

                async def ready() -> bool:
                    try:
                        return (await client.get(f"{url}/ready")).status_code == 200
                    except httpx.TransportError:
                        return False

                await eventually(ready, timeout=30, interval=0.1)
            yield url
        finally:
            proc.terminate()
            await asyncio.to_thread(proc.wait, 20)

    return start


async def rate_counters(bus: Bus) -> int:
    try:
        info = await bus.js.stream_info(RATELIMIT_STREAM, subjects_filter=">")
    except nats.js.errors.NotFoundError:
        return 0
    return len(info.state.subjects or {})


async def test_21_bad_keys_from_one_address_then_429_while_another_address_goes_on(
    gateway: Gateway, bus: Bus
) -> None:
    # The test talks from 127.0.0.1, made a trusted proxy: X-Forwarded-For names the client,
    # as a reverse proxy in front of the gateway would.
    async with (
        gateway(FORWARDED_ALLOW_IPS="127.0.0.1") as url,
        httpx.AsyncClient(base_url=url, timeout=10) as client,
    ):
        for i in range(20):
            r = await client.get("/watchers", headers={**GUESSER, "X-API-Key": f"guess-{i}"})
            assert r.status_code == 403
        r = await client.get("/watchers", headers={**GUESSER, "X-API-Key": "guess-20"})
        assert r.status_code == 429
        assert r.json()["error_code"] == "RATE_LIMITED"
        assert 1 <= int(r.headers["Retry-After"]) <= 60
        good_key = {**GUESSER, "X-API-Key": KEY}
        assert (await client.get("/watchers", headers=good_key)).status_code == 429
        # Failures cost no NATS round trip: no rate-limit counter was touched.
        assert await rate_counters(bus) == 0

        missing = await client.get("/watchers", headers=NEIGHBOUR)
        assert missing.status_code == 401
        job = await client.get(
            "/jobs/0b9e3f4e-0000-4000-8000-000000000000", headers={**NEIGHBOUR, "X-API-Key": KEY}
        )
        assert job.status_code == 404  # authenticated, counted, answered


async def test_x_forwarded_for_is_ignored_from_a_peer_not_in_forwarded_allow_ips(
    gateway: Gateway,
) -> None:
    # FORWARDED_ALLOW_IPS unset: no proxy is trusted, not even one on 127.0.0.1.
    async with gateway() as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        for i in range(20):
            # A new X-Forwarded-For every time buys nothing: the peer's address counts.
            spoofed = {"X-Forwarded-For": f"192.0.2.{i}", "X-API-Key": f"guess-{i}"}
            assert (await client.get("/watchers", headers=spoofed)).status_code == 403
        r = await client.get("/watchers", headers={**NEIGHBOUR, "X-API-Key": "guess-20"})
        assert r.status_code == 429
