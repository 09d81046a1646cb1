"""Rate limits per API key, shared through NATS by two gateway processes; fail-closed writes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import nats
import pytest
from fastapi import Depends, FastAPI
from limits import RateLimitItemPerMinute

from services.gateway.api_keys import ApiKey
from services.gateway.app import create_app
from services.gateway.deps import require_api_key
from services.gateway.nats_link import NatsLink
from services.gateway.ratelimit import RateLimiter
from services.gateway.ratelimit_storage import SETTLE, weighted_count
from services.gateway.settings import GatewaySettings
from shared.bus import Bus
from shared.subjects import RATELIMIT, RATELIMIT_STREAM
from tests.helpers import eventually, free_port
from tlr.nats_server import NatsServer

KEY_A = "key-a-0f3c9b7e2d"
KEY_B = "key-b-5a1e8c4f90"
OPS_KEY = "ops-key-77d2e1a0c3"  # API_KEYS_FILE: 5 per minute
VIEWER_KEY = "viewer-key-1b9f3e"  # API_KEYS_FILE: the default limit; an admin (GET /services)
KEYS_FILE = f"""# gateway keys
ops {OPS_KEY} 5   # the override
viewer {VIEWER_KEY} role=admin
"""
ERROR_FIELDS = {"error_code", "error_message", "correlation_id"}
RATE_HEADERS = ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset")


def unknown_job() -> str:
    """A cheap protected read: a job that cannot exist is a 404 once admitted."""
    return f"/jobs/{uuid.uuid4()}"


class Gateway:
    """``python -m services.gateway`` on a free port; its JSON log goes to a file."""

    def __init__(self, nats_url: str, keys_file: Path, log: Path, name: str) -> None:
        self.port = free_port()
        self.log = log
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "NATS_URL": nats_url,
            "GATEWAY_PORT": str(self.port),
            "API_KEYS": f"{KEY_A},{KEY_B}",
            "API_KEYS_FILE": str(keys_file),
            "RATE_LIMIT_PER_MIN": "60",
            "INSTANCE_ID": name,
            "LOG_FORMAT": "json",
            "PYTHONUNBUFFERED": "1",
        }
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "services.gateway"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def logged(self, event: str) -> list[dict[str, object]]:
        lines = [json.loads(line) for line in self.log.read_text().splitlines() if line]
        return [line for line in lines if line.get("msg") == event]

    async def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.to_thread(self.proc.wait), 20)
            except TimeoutError:
                self.proc.kill()
                await asyncio.to_thread(self.proc.wait)


@pytest.fixture
def keys_file(tmp_path: Path) -> Path:
    path = tmp_path / "api-keys.txt"
    path.write_text(KEYS_FILE)
    return path


@pytest.fixture
def start_gateway(
    nats_server: NatsServer, keys_file: Path, tmp_path: Path
) -> Iterator[Callable[[str], Gateway]]:
    started: list[Gateway] = []

    def start(name: str) -> Gateway:
        gw = Gateway(nats_server.client_url, keys_file, tmp_path / f"{name}.log", name)
        started.append(gw)
        return gw

    yield start
    for gw in started:
        if gw.proc.poll() is None:
            gw.proc.kill()
            gw.proc.wait()


@pytest.fixture
async def gateways(
    start_gateway: Callable[[str], Gateway],
) -> AsyncIterator[tuple[Gateway, Gateway]]:
    pair = (start_gateway("gw-1"), start_gateway("gw-2"))
    async with httpx.AsyncClient(timeout=10) as client:
        for gw in pair:

            async def ready(gw: Gateway = gw) -> bool:
                try:
                    return (await client.get(f"{gw.url}/ready")).status_code == 200
                except httpx.TransportError:
                    return False

            await eventually(ready, timeout=30, interval=0.1)
    yield pair
    await asyncio.gather(*(gw.stop() for gw in pair))


async def test_two_gateways_share_one_budget_per_key(
    gateways: tuple[Gateway, Gateway],
) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        responses = [
            await client.get(gateways[i % 2].url + unknown_job(), headers={"X-API-Key": KEY_A})
            for i in range(100)
        ]
        # One budget across both processes: 30 admitted by each, not 60 by each.
        assert [r.status_code for r in responses] == [404] * 60 + [429] * 40
        for r in responses[60:]:
            body = r.json()
            assert set(body) == ERROR_FIELDS
            assert body["error_code"] == "RATE_LIMITED"
            assert 1 <= int(r.headers["retry-after"]) <= 60
            assert r.headers["x-ratelimit-limit"] == "60"
            assert r.headers["x-ratelimit-remaining"] == "0"
            assert int(r.headers["x-ratelimit-reset"]) > 0

        # Another key has its own budget, and an admitted success carries the headers.
        other = {"X-API-Key": VIEWER_KEY}
        assert (await client.get(gateways[0].url + unknown_job(), headers=other)).status_code == 404
        ok = await client.get(f"{gateways[1].url}/services", headers=other)
        assert ok.status_code == 200
        assert ok.headers["x-ratelimit-limit"] == "60"
        assert ok.headers["x-ratelimit-remaining"] == "58"
        assert int(ok.headers["x-ratelimit-reset"]) > 0

        # Health, readiness and metrics are never limited, key or not.
        for gw in gateways:
            for path in ("/healthz", "/ready", "/metrics"):
                for headers in ({}, {"X-API-Key": KEY_A}):
                    r = await client.get(gw.url + path, headers=headers)
                    assert r.status_code == 200, path
                    assert "x-ratelimit-limit" not in r.headers

    # Logs name the key, never show it; counters are keyed by a hash, never the key.
    for gw in gateways:
        text = gw.log.read_text()
        assert KEY_A not in text
        assert KEY_B not in text
        limited = gw.logged("gateway.rate_limited")
        assert limited
        assert {line["key_name"] for line in limited} == {ApiKey.bare(KEY_A).name}


async def test_keys_file_override_and_default(gateways: tuple[Gateway, Gateway], bus: Bus) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        ops = [
            await client.get(gateways[i % 2].url + unknown_job(), headers={"X-API-Key": OPS_KEY})
            for i in range(7)
        ]
        assert [r.status_code for r in ops] == [404] * 5 + [429] * 2
        assert {r.headers["x-ratelimit-limit"] for r in ops[5:]} == {"5"}
        assert gateways[0].logged("gateway.rate_limited")[0]["key_name"] == "ops"

        viewer = await client.get(f"{gateways[0].url}/services", headers={"X-API-Key": VIEWER_KEY})
        assert viewer.status_code == 200
        assert viewer.headers["x-ratelimit-limit"] == "60"

    subjects = (await bus.js.stream_info(RATELIMIT_STREAM, subjects_filter=">")).state.subjects
    assert subjects
    for subject in subjects:
        assert all(key not in subject for key in (OPS_KEY, VIEWER_KEY))


async def test_nats_down_refuses_writes_and_lets_reads_through(
    gateways: tuple[Gateway, Gateway], nats_server: NatsServer
) -> None:
    gw = gateways[0]
    h = {"X-API-Key": KEY_A}
    async with httpx.AsyncClient(timeout=20) as client:
        await nats_server.stop()

        async def not_ready() -> bool:
            return (await client.get(f"{gw.url}/ready")).status_code == 503

        await eventually(not_ready, timeout=15)

        write = await client.post(f"{gw.url}/recordings", json={"url": "@alice"}, headers=h)
        assert write.status_code == 503
        assert write.json()["error_code"] == "SERVICE_UNAVAILABLE"
        assert "rate limiter unavailable" in write.json()["error_message"]
        assert write.headers["x-ratelimit-status"] == "unavailable"

        read = await client.get(gw.url + unknown_job(), headers=h)
        # Let through by the limiter; the route itself then finds NATS gone.
        assert read.status_code != 429
        assert "rate limiter" not in read.json()["error_message"]
    outcomes = [line["outcome"] for line in gw.logged("gateway.rate_limiter_unavailable")]
    assert outcomes == ["refused", "allowed"]


async def test_a_malformed_keys_file_stops_the_gateway_at_start(
    start_gateway: Callable[[str], Gateway], keys_file: Path
) -> None:
    await asyncio.to_thread(keys_file.write_text, f"ops {OPS_KEY}\nbroken {KEY_B} many\n")
    gw = start_gateway("gw-bad")
    code = await asyncio.wait_for(asyncio.to_thread(gw.proc.wait), 30)
    assert code == 2
    (error,) = gw.logged("gateway.api_keys_invalid")
    assert "line 2" in str(error["error"])
    assert KEY_B not in gw.log.read_text()


# --- in process: the dependency itself, and the storage with a clock of our own --------------


def probe_app(settings: GatewaySettings, link: NatsLink) -> FastAPI:
    """The real app plus two trivial protected routes, to see the headers of a 200."""
    app = create_app(settings, link=link)

    async def read() -> dict[str, bool]:
        return {"ok": True}

    protected = [Depends(require_api_key)]
    app.add_api_route("/probe", read, methods=["GET"], dependencies=protected)
    app.add_api_route("/probe", read, methods=["POST"], dependencies=protected)
    return app


async def test_without_nats_a_read_is_flagged_and_a_write_refused(tmp_path: Path) -> None:
    server = NatsServer(tmp_path / "nats", port=free_port())
    settings = GatewaySettings(api_keys=[KEY_A], nats_url=server.client_url)
    await server.start()
    try:
        async with NatsLink(settings) as link:
            await link.wait_connected()
            transport = httpx.ASGITransport(app=probe_app(settings, link))
            async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
                h = {"X-API-Key": KEY_A}
                up = await client.get("/probe", headers=h)
                assert up.status_code == 200
                assert up.headers["x-ratelimit-remaining"] == "59"
                assert "x-ratelimit-status" not in up.headers

                await server.stop()
                read = await client.get("/probe", headers=h)
                assert read.status_code == 200
                assert read.headers["x-ratelimit-status"] == "unavailable"
                write = await client.post("/probe", headers=h)
                assert write.status_code == 503
                assert "rate limiter unavailable" in write.json()["error_message"]
    finally:
        await server.stop()


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


PERIOD = 60.0
BOUNDARY = 1_800_000_000.0  # a multiple of the period: a window starts here


async def test_no_burst_gets_through_at_a_window_boundary(bus: Bus) -> None:
    clock = Clock(BOUNDARY - 5)
    limiter = RateLimiter(bus.nc, default_limit=60, clock=clock)
    key = ApiKey.bare("boundary-key")
    assert [(await limiter.hit(key)).allowed for _ in range(30)] == [True] * 30
    # Just after the boundary the previous window still counts whole: 30 more, not 31.
    clock.now = BOUNDARY + 0.001
    decisions = [await limiter.hit(key) for _ in range(35)]
    assert [d.allowed for d in decisions] == [True] * 30 + [False] * 5
    assert decisions[29].remaining == 0
    # Two seconds in, the previous window's share has decayed by one hit (30 * 2/60).
    clock.now = BOUNDARY + 2.0
    assert [(await limiter.hit(key)).allowed for _ in range(2)] == [True, False]
    # Two periods later nothing is left of either window: a full budget again.
    clock.now = BOUNDARY + 2 * PERIOD + 1
    assert [(await limiter.hit(key)).allowed for _ in range(61)] == [True] * 60 + [False]


async def test_concurrent_hits_from_two_connections_never_exceed_the_limit(
    bus: Bus, nats_server: NatsServer
) -> None:
    clock = Clock(BOUNDARY + 30)
    other = await nats.connect(nats_server.client_url)
    try:
        replicas = [
            RateLimiter(bus.nc, default_limit=60, clock=clock),
            RateLimiter(other, default_limit=60, clock=clock),
        ]
        key = ApiKey.bare("concurrent-key")
        decisions = await asyncio.gather(*(replicas[i % 2].hit(key) for i in range(100)))
    finally:
        await other.close()
    assert sum(d.allowed for d in decisions) == 60
    stats = await replicas[0].strategy.get_window_stats(RateLimitItemPerMinute(60), key.counter_id)
    assert stats.remaining == 0


def test_the_counter_stream_keeps_two_windows() -> None:
    assert RATELIMIT.allow_msg_counter
    assert RATELIMIT.max_age is not None
    assert RATELIMIT.max_age >= 2 * PERIOD


def count_calls(monkeypatch: pytest.MonkeyPatch, obj: object, name: str) -> list[str]:
    """Record the subject of every call of ``obj.name`` (a storage's reads or increments)."""
    calls: list[str] = []
    method = getattr(obj, name)

    async def spy(subject: str, *args: object) -> object:
        calls.append(subject)
        return await method(subject, *args)

    monkeypatch.setattr(obj, name, spy)
    return calls


async def test_requests_that_come_together_are_counted_in_one_increment(
    bus: Bus, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock(BOUNDARY + 30)
    limiter = RateLimiter(bus.nc, default_limit=60, clock=clock)
    increments = count_calls(monkeypatch, limiter.storage, "_add")
    key = ApiKey.bare("batched-key")
    decisions = await asyncio.gather(*(limiter.hit(key) for _ in range(70)))
    # Decided as if they had come one after another: the first 60 in, each told what is left.
    assert [d.allowed for d in decisions] == [True] * 60 + [False] * 10
    assert [d.remaining for d in decisions] == [*range(59, -1, -1), *[0] * 10]
    assert all(d.limit == 60 for d in decisions)
    # All 70 came before the first write: one increment of 70, one undo of the 10 refused.
    assert len(increments) == 2
    stats = await limiter.strategy.get_window_stats(RateLimitItemPerMinute(60), key.counter_id)
    assert stats.remaining == 0


async def test_the_previous_window_is_read_until_it_settles_then_kept(
    bus: Bus, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock(BOUNDARY - 10)
    limiter = RateLimiter(bus.nc, default_limit=60, clock=clock)
    reads = count_calls(monkeypatch, limiter.storage, "_value")
    key = ApiKey.bare("settling-key")
    for _ in range(30):
        await limiter.hit(key)
    # A replica whose request started just before the boundary counts it just after it: the
    # previous window is read again by every request until SETTLE seconds into the next one.
    late = RateLimiter(bus.nc, default_limit=60, clock=Clock(BOUNDARY - 0.5))
    reads.clear()
    clock.now = BOUNDARY + 1
    await limiter.hit(key)
    await late.hit(key)
    clock.now = BOUNDARY + 2
    assert (await limiter.hit(key)).remaining == 60 - weighted_count(31, 58, 2, 60)
    assert len(reads) == 2
    # Settled: read once more, then kept (nothing reaches a window that far behind).
    clock.now = BOUNDARY + SETTLE + 1
    await limiter.hit(key)
    clock.now = BOUNDARY + SETTLE + 2
    await limiter.hit(key)
    assert len(reads) == 3
    assert (await limiter.hit(key)).remaining == 60 - weighted_count(31, 60 - SETTLE - 2, 5, 60)
    assert len(reads) == 3
