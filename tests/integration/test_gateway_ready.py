"""/ready follows NATS: 503 before it is up, 200 once provisioned, 503 when it dies, 200 back."""

from __future__ import annotations

from pathlib import Path

import httpx

from services.gateway.app import create_app
from services.gateway.nats_link import NatsLink
from services.gateway.settings import GatewaySettings
from shared.subjects import BUCKETS, EVENTS_STREAM
from tests.helpers import eventually, free_port
from tlr.nats_server import NatsServer

KEY = "k-ready"


async def test_ready_tracks_nats_without_restarting_the_gateway(tmp_path: Path) -> None:
    server = NatsServer(tmp_path / "nats", port=free_port())
    settings = GatewaySettings(api_keys=[KEY], nats_url=server.client_url)
    async with NatsLink(settings) as link:
        app = create_app(settings, link=link)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:

            def ready_is(status: int):  # type: ignore[no-untyped-def]
                async def check() -> bool:
                    return (await client.get("/ready")).status_code == status

                return check

            # NATS not started yet: the gateway is alive but not ready.
            assert (await client.get("/healthz")).status_code == 200
            assert (await client.get("/ready")).status_code == 503

            await server.start()
            try:
                await eventually(ready_is(200), timeout=20)
                bus = await link.wait_connected()
                names = {s.config.name for s in await bus.js.streams_info()}
                assert {EVENTS_STREAM, *(f"KV_{b.bucket}" for b in BUCKETS)} <= names

                await server.stop(9)  # SIGKILL: a crash, not a clean shutdown
                await eventually(ready_is(503), timeout=10)
                assert (await client.get("/healthz")).status_code == 200

                await server.start()
                await eventually(ready_is(200), timeout=20)
            finally:
                await server.stop()


async def test_ready_recovers_when_nats_comes_back_empty(tmp_path: Path) -> None:
    """A server restarted without its store: the gateway provisions again by itself."""
    port = free_port()
    first = NatsServer(tmp_path / "a", port=port)
    settings = GatewaySettings(api_keys=[KEY], nats_url=first.client_url)
    await first.start()
    try:
        async with NatsLink(settings) as link:
            await link.wait_connected()
            assert await link.ready()
            await first.stop(9)
            second = NatsServer(tmp_path / "b", port=port)  # same address, no streams
            await second.start()
            try:

                async def ready() -> bool:
                    return await link.ready()

                await eventually(ready, timeout=20)
            finally:
                await second.stop()
    finally:
        await first.stop()


async def test_services_route_lists_micro_instances_to_admins_only(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text("ops k-ready-admin role=admin\n")
    settings = GatewaySettings(
        api_keys=[KEY], api_keys_file=keys_file, nats_url=nats_server.client_url
    )
    async with NatsLink(settings) as link:
        await link.wait_connected()
        app = create_app(settings, link=link)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:

            async def gateway_listed() -> bool:
                r = await client.get("/services", headers={"X-API-Key": "k-ready-admin"})
                return [i["name"] for i in r.json()["items"]] == ["gateway"]

            await eventually(gateway_listed)
            # The fleet is no business of a key without role=admin.
            r = await client.get("/services", headers={"X-API-Key": KEY})
            assert r.status_code == 403
            assert r.json()["error_code"] == "FORBIDDEN"
