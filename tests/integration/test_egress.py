"""SSRF guards end to end (issue 17): the gateway, a recorder, a scheduler, nats-server, the fake
TikTok, a forwarding proxy, and a loopback "canary" service that counts every connection made
to it. A stream URL, a redirect or a proxy aimed at it must never reach it, and nothing it
says may come back through the API."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from services.gateway.app import create_app
from services.gateway.nats_link import NatsLink
from services.gateway.settings import GatewaySettings
from services.recorder.service import RecorderService
from services.recorder.settings import RecorderSettings
from services.scheduler.service import SchedulerService
from services.scheduler.settings import SchedulerSettings
from shared.bus import Bus
from shared.events import RecordingOptions, WatchRequested
from shared.secrets import SecretBox, new_key
from shared.watchers import GET, GetRequest, Watcher
from tests.helpers import JobsApi, eventually, job_store
from tests.http_proxy import AuthProxy
from tests.loopback import LoopbackServer
from tlr.fake_tiktok import FakeTikTok
from tlr.nats_server import NatsServer

KEY = "k-egress"
FAKE_TIKTOK_OPTIONS = {"speed": 4.0}
# Ends in a blank line, as an HTTP head would: HTTP clients then quote it ("illegal status
# line: ...") rather than report a connection closed before any answer.
BANNER = b"SSH-2.0-OpenSSH_9.6 billing-db.internal.corp\r\n\r\n"
# What an API answer must never carry: the canary's words, its address, its name.
LEAKS = ("OpenSSH", "billing-db", "internal.corp", "localhost", "169.254")


class Canary(LoopbackServer):
    """A loopback TCP service (an SSH port, a database): counts connections, greets each
    with a banner, reads what is sent, hangs up."""

    def __init__(self) -> None:
        self.connections = 0
        self.received = b""

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        writer.write(BANNER)
        with contextlib.suppress(Exception):
            await writer.drain()
            self.received += await asyncio.wait_for(reader.read(4096), 2)
        writer.close()


class Stack(JobsApi):
    def __init__(self, client: httpx.AsyncClient, fake: FakeTikTok, secret: str) -> None:
        super().__init__(client, KEY)
        self.fake = fake
        self.secret = secret

    async def failed(self, task_id: str) -> dict[str, Any]:
        job = await self.wait(task_id, "FAILURE", "SUCCESS", timeout=30)
        assert job["status"] == "FAILURE", job
        message = job["error_message"] or ""
        assert not [leak for leak in LEAKS if leak in message], message
        return job


StackFactory = Callable[..., AbstractAsyncContextManager[Stack]]


@pytest.fixture
def stack(
    nats_server: NatsServer, bus: Bus, fake_tiktok: FakeTikTok, tmp_path: Path
) -> StackFactory:
    """A gateway and one recorder against the fake; keywords are the recorder's settings."""

    @contextlib.asynccontextmanager
    async def make(**recorder: Any) -> AsyncIterator[Stack]:
        secret = new_key()
        gw = GatewaySettings(
            api_keys=[KEY],
            nats_url=nats_server.client_url,
            secret_key=secret,
            rate_limit_per_min=100_000,
            allow_private_proxies=True,  # the tests' proxies listen on 127.0.0.1
        )
        rec = RecorderSettings(
            nats_url=nats_server.client_url,
            instance_id="rec-egress",
            recordings_dir=tmp_path / "recordings",
            tiktok_web_base=fake_tiktok.base_url,
            tiktok_webcast_base=fake_tiktok.base_url,
            secret_key=secret,
            read_timeout=2.0,
            **recorder,
        )
        async with NatsLink(gw) as link, RecorderService(bus, rec):
            await link.wait_connected()
            transport = httpx.ASGITransport(app=create_app(gw, link=link))
            async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
                yield Stack(client, fake_tiktok, secret)

    return make


async def live(fake: FakeTikTok, user: str) -> None:
    await fake.create_user(user)
    await fake.go_live(user)


async def test_a_stream_url_at_a_loopback_service_off_the_list_is_never_fetched(
    stack: StackFactory, fake_tiktok: FakeTikTok
) -> None:
    async with Canary() as canary, stack(**fake_tiktok.egress_settings) as s:
        await live(fake_tiktok, "ada")
        # TikTok's JSON now names the canary (by a name off the list) for every stream.
        await fake_tiktok.set_scenario(cdn_base_url=f"http://localhost:{canary.port}")
        job = await s.failed(await s.record(url="@ada", duration=5))
    assert job["error_code"] == "STREAM_HOST_NOT_ALLOWED"
    assert canary.connections == 0


async def test_a_listed_name_that_resolves_to_loopback_is_never_fetched(
    stack: StackFactory, fake_tiktok: FakeTikTok
) -> None:
    # localhost is on the list, but private addresses are not allowed: it is resolved, and
    # its addresses are loopback ones. Refused when fetched, each URL; then the job ends.
    async with Canary() as canary, stack(stream_host_suffixes=["localhost"]) as s:
        await live(fake_tiktok, "bea")
        await fake_tiktok.set_scenario(cdn_base_url=f"http://localhost:{canary.port}")
        job = await s.failed(await s.record(url="@bea", duration=5))
    assert job["error_code"] == "STREAM_HOST_NOT_ALLOWED"
    assert canary.connections == 0


@pytest.mark.parametrize("target", ["canary", "http://169.254.169.254/latest/meta-data/"])
async def test_a_cdn_redirect_off_the_list_is_not_followed(
    stack: StackFactory, fake_tiktok: FakeTikTok, target: str
) -> None:
    async with Canary() as canary, stack(**fake_tiktok.egress_settings) as s:
        await live(fake_tiktok, "cid")
        location = f"http://localhost:{canary.port}/x" if target == "canary" else target
        await fake_tiktok.set_scenario(cdn_redirect=location)
        job = await s.failed(await s.record(url="@cid", duration=5))
        cdn = [r for r in await fake_tiktok.requests("/") if "stream-" in r["path"]]
    assert job["error_code"] == "STREAM_HOST_NOT_ALLOWED"
    assert cdn  # the fake's CDN was asked, and answered the redirect
    assert canary.connections == 0


async def test_through_a_proxy_a_redirect_to_a_listed_private_address_is_refused(
    stack: StackFactory, fake_tiktok: FakeTikTok
) -> None:
    """Through a proxy the proxy resolves names, so only literal addresses are judged: the
    CDN's name passes, its redirect to 127.0.0.1 does not, though 127.0.0.1 is listed."""
    async with (
        Canary() as canary,
        AuthProxy("rec", "pw", hosts={"cdn.test": "127.0.0.1"}) as proxy,
        stack(stream_host_suffixes=["cdn.test", "127.0.0.1"], allow_private_proxies=True) as s,
    ):
        await live(fake_tiktok, "dot")
        await fake_tiktok.set_scenario(
            cdn_base_url=f"http://cdn.test:{fake_tiktok.port}",
            cdn_redirect=f"http://127.0.0.1:{canary.port}/x",
        )
        task = await s.record(url="@dot", duration=5, options={"proxy": proxy.url()})
        job = await s.failed(task)
    assert job["error_code"] == "STREAM_HOST_NOT_ALLOWED"
    assert any(path.endswith(".flv") for path in proxy.requests)  # the CDN, through the proxy
    assert "/x" not in proxy.requests
    assert canary.connections == 0


async def test_a_proxy_on_loopback_is_refused_by_the_recorder(
    stack: StackFactory, fake_tiktok: FakeTikTok
) -> None:
    # A job from a gateway that let it through (an older one, or NATS): the recorder checks.
    async with Canary() as canary, stack(**fake_tiktok.egress_settings) as s:
        await live(fake_tiktok, "eve")
        task = await s.record(
            url="@eve", duration=5, options={"proxy": f"http://127.0.0.1:{canary.port}"}
        )
        job = await s.failed(task)
    assert job["error_code"] == "VALIDATION_ERROR"
    assert "options.proxy" in job["error_message"]
    assert canary.connections == 0


async def test_a_proxy_named_localhost_is_refused_by_the_recorder(
    stack: StackFactory, fake_tiktok: FakeTikTok
) -> None:
    async with Canary() as canary, stack(**fake_tiktok.egress_settings) as s:
        await live(fake_tiktok, "fay")
        task = await s.record(
            url="@fay", duration=5, options={"proxy": f"http://localhost:{canary.port}"}
        )
        job = await s.failed(task)
    assert job["error_code"] == "VALIDATION_ERROR"
    assert canary.connections == 0


async def test_a_proxy_banner_never_reaches_the_job(
    stack: StackFactory, fake_tiktok: FakeTikTok, bus: Bus
) -> None:
    """Private proxies allowed, the "proxy" is the canary: TikTok's API cannot be reached
    through it, and the job says so in its own words, never the canary's. (Read while it
    waits to be retried: the same error_message is its answer once the retries are spent.)"""
    async with (
        Canary() as canary,
        stack(**fake_tiktok.egress_settings, allow_private_proxies=True) as s,
    ):
        await live(fake_tiktok, "gus")
        port = str(canary.port)
        proxy = f"http://127.0.0.1:{port}"
        task = await s.record(url="@gus", duration=5, options={"proxy": proxy})
        await s.wait(task, "RETRY", timeout=30)
        assert canary.connections > 0  # it was used, and it answered its banner
        doc = await (await job_store(bus)).recording(task)
    assert doc is not None
    assert doc.error_code == "NETWORK_TIMEOUT"
    message = doc.error_message or ""
    assert message.startswith("network error calling TikTok ")
    assert not [leak for leak in (*LEAKS, "127.0.0.1", port) if leak in message]


# --- the scheduler: a watcher's error_message ----------------------------------------------


async def _watcher(bus: Bus, key: str) -> Watcher | None:
    reply = await bus.nc.request(GET, msgspec.json.encode(GetRequest(key=key)), timeout=2)
    if reply.headers and reply.headers.get("Nats-Service-Error-Code"):
        return None
    return msgspec.json.decode(reply.data, type=Watcher)


@pytest.mark.parametrize("allow", [False, True])
async def test_a_watcher_through_a_loopback_proxy(
    bus: Bus, nats_server: NatsServer, fake_tiktok: FakeTikTok, tmp_path: Path, allow: bool
) -> None:
    """Refused (no connection) unless private proxies are allowed; allowed, the canary's
    banner still never shows in the watcher's error_message."""
    await fake_tiktok.create_user("hal")
    secret = new_key()
    settings = SchedulerSettings(
        nats_url=nats_server.client_url,
        instance_id="sched-egress",
        scheduler_db=tmp_path / "scheduler.sqlite3",
        tiktok_web_base=fake_tiktok.base_url,
        tiktok_webcast_base=fake_tiktok.base_url,
        secret_key=secret,
        allow_private_proxies=allow,
    )
    async with Canary() as canary, SchedulerService(bus, settings):
        sealed = SecretBox(secret).seal(f"http://127.0.0.1:{canary.port}")
        event = WatchRequested(
            task_id="task-hal",
            key="@hal",
            unique_id="hal",
            poll_interval=10,
            options=RecordingOptions(proxy=sealed),
        )
        await bus.publish(event)

        async def checked() -> bool:
            w = await _watcher(bus, "@hal")
            return w is not None and w.error_code is not None

        await eventually(checked, timeout=15)
        w = await _watcher(bus, "@hal")
        assert w is not None
        assert w.error_message is not None
        assert not [leak for leak in (*LEAKS, str(canary.port)) if leak in w.error_message]
        if allow:
            assert canary.connections > 0
            assert w.error_code == "NETWORK_TIMEOUT"
        else:
            assert canary.connections == 0
            assert w.error_code == "VALIDATION_ERROR"
            assert "options.proxy" in w.error_message
