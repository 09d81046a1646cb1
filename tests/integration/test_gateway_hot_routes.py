"""GET /jobs/{task_id} through the hot route answers exactly as FastAPI's route does.

Two apps on one nats-server: the gateway as it is, and the same app without HotRoutes (every
request through FastAPI's routing and dependencies). Each request goes to both; status, body
bytes and headers must agree, for every kind of job, owner, key and refusal.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from fastapi import FastAPI
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from services.gateway import middleware
from services.gateway.api_keys import key_id
from services.gateway.app import create_app
from services.gateway.hot_routes import HotRoutes
from services.gateway.nats_link import NatsLink
from services.gateway.settings import GatewaySettings
from shared.bus import Bus
from shared.events import RecordingOptions
from shared.jobs import Claim, JobRequest, SegmentEntry, Totals
from tests.helpers import job_store
from tlr.nats_server import NatsServer

ALICE = "k-alice-hot"
BOB = "k-bob-hot"
ROOT = "k-root-hot"
TIGHT_HOT, TIGHT_PLAIN = "k-tight-hot", "k-tight-plain"
KEYS_FILE = f"""bob {BOB}
root {ROOT} role=admin
tight-hot {TIGHT_HOT} 2
tight-plain {TIGHT_PLAIN} 2
"""
ALICE_NAME = key_id(ALICE)
ROOM = "7503448765740976902"
# Differ from one call to the next (a hit more is counted, a second has passed).
MOVING = {"x-ratelimit-remaining", "x-ratelimit-reset", "retry-after"}


def without_hot_routes(app: FastAPI) -> FastAPI:
    hot: object = HotRoutes
    app.user_middleware = [m for m in app.user_middleware if m.cls is not hot]
    return app


@dataclass
class Pair:
    hot: httpx.AsyncClient
    plain: httpx.AsyncClient

    async def get(
        self, path: str, key: str | None, *, plain_key: str | None = None
    ) -> tuple[httpx.Response, httpx.Response]:
        def headers(k: str | None) -> dict[str, str]:
            return {"X-Correlation-ID": "same-id"} | ({"X-API-Key": k} if k is not None else {})

        a = await self.hot.get(path, headers=headers(key))
        b = await self.plain.get(path, headers=headers(plain_key or key))
        return a, b

    async def same(self, path: str, key: str | None) -> httpx.Response:
        a, b = await self.get(path, key)
        assert_same(a, b)
        return a


def assert_same(a: httpx.Response, b: httpx.Response) -> None:
    assert (a.status_code, a.content) == (b.status_code, b.content)
    assert list(a.headers) == list(b.headers)
    assert {k: v for k, v in a.headers.items() if k not in MOVING} == {
        k: v for k, v in b.headers.items() if k not in MOVING
    }


async def pair_over(settings: GatewaySettings, link: NatsLink) -> AsyncIterator[Pair]:
    hot = httpx.ASGITransport(app=create_app(settings, link=link))
    plain = httpx.ASGITransport(app=without_hot_routes(create_app(settings, link=link)))
    async with (
        httpx.AsyncClient(transport=hot, base_url="http://gw") as a,
        httpx.AsyncClient(transport=plain, base_url="http://gw") as b,
    ):
        yield Pair(a, b)


@pytest.fixture
def settings(nats_server: NatsServer, tmp_path: Path) -> GatewaySettings:
    keys_file = tmp_path / "keys"
    keys_file.write_text(KEYS_FILE)
    return GatewaySettings(
        api_keys=[ALICE],
        api_keys_file=keys_file,
        nats_url=nats_server.client_url,
        rate_limit_per_min=100_000,
        auth_failures_per_min=3,
    )


@pytest.fixture
async def pair(settings: GatewaySettings) -> AsyncIterator[Pair]:
    async with NatsLink(settings) as link:
        await link.wait_connected()
        async for p in pair_over(settings, link):
            yield p


@pytest.fixture
async def jobs(bus: Bus) -> dict[str, str]:
    """One job of each kind and owner the route tells apart."""
    store = await job_store(bus)
    url = "https://www.tiktok.com/@alice/live"

    async def submit(job_id: str, **kw: Any) -> str:
        await store.submit(JobRequest(job_id=job_id, room_id=ROOM, url=url, **kw))
        return job_id

    recording = await submit("hot-recording", owner=ALICE_NAME, correlation_id="c-1")
    await store.claim(recording, 7, Claim("rec-1", ROOM, "a live", "alice", 1))
    for part in range(2):
        entry = SegmentEntry(path=f"{ROOM}/2026/12/07/x_{part}.flv", part=part)
        await store.segment_opened(recording, 7, entry)
    await store.progress(recording, 7, Totals(bytes=123_456, reconnects=1), 2_000_000)
    upload = await submit("hot-upload", owner=ALICE_NAME, options=RecordingOptions(upload_s3=True))
    await store.claim(upload, 3, Claim("rec-1", ROOM, None, None, 1))
    await store.upload_started(upload, 5, uploader_id="up-1", attempt=1, bytes_total=99)
    watch = await submit("hot-watch", owner=ALICE_NAME, kind="watch", watcher_key="@alice")
    cancelled = await submit("hot-cancelled", owner=ALICE_NAME)
    await store.request_cancel(cancelled)
    bobs = await submit("hot-bobs", owner="bob")
    legacy = await submit("hot-legacy")  # from before owners were recorded: an admin's only
    return {
        "recording": recording,
        "upload": upload,
        "watch": watch,
        "cancelled": cancelled,
        "bobs": bobs,
        "legacy": legacy,
    }


async def test_every_job_and_key_is_answered_the_same(pair: Pair, jobs: dict[str, str]) -> None:
    statuses = {}
    for name, job_id in jobs.items():
        for who, key in (("alice", ALICE), ("bob", BOB), ("root", ROOT)):
            statuses[name, who] = (await pair.same(f"/jobs/{job_id}", key)).status_code
    # What the answers were: each key its own jobs, the admin all, everyone else a 404.
    assert statuses == {
        (name, who): 200 if who == "root" or (who, name) in OWN else 404
        for name in jobs
        for who in ("alice", "bob", "root")
    }
    recording = (await pair.same(f"/jobs/{jobs['recording']}", ALICE)).json()
    assert recording["status"] == "STARTED"
    assert recording["progress"]["segments"] == 2
    assert recording["owner"] == ALICE_NAME
    ok = await pair.same(f"/jobs/{jobs['upload']}", ALICE)
    assert ok.json()["upload"]["state"] == "STARTED"
    assert ok.headers["x-ratelimit-limit"] == "100000"
    assert ok.headers["x-correlation-id"] == "same-id"


OWN = {("alice", n) for n in ("recording", "upload", "watch", "cancelled")} | {("bob", "bobs")}


async def test_refusals_are_answered_the_same(pair: Pair) -> None:
    assert (await pair.same("/jobs/no-such-job", ALICE)).status_code == 404
    # Not a task id: the hot route leaves it to FastAPI, which answers 422 after the key check.
    assert (await pair.same("/jobs/not_an_id!", ALICE)).status_code == 422
    assert (await pair.same(f"/jobs/{'a' * 65}", ALICE)).status_code == 422
    assert (await pair.same("/jobs/no-such-job", None)).status_code == 401
    assert (await pair.same("/jobs/no-such-job", "")).status_code == 401
    assert (await pair.same("/jobs/no-such-job", "k-nobody")).status_code == 403
    # Three failures from this address (AUTH_FAILURES_PER_MIN=3): now even a good key is 429.
    throttled = await pair.same("/jobs/no-such-job", ALICE)
    assert throttled.status_code == 429
    assert "failed authentications" in throttled.json()["error_message"]


async def test_a_spent_rate_limit_is_answered_the_same(pair: Pair) -> None:
    # Two keys of 2 per minute, one per app (the two apps share the counters in NATS).
    answers = [await pair.get("/jobs/no-such-job", TIGHT_HOT, plain_key=TIGHT_PLAIN) for _ in "abc"]
    for a, b in answers:
        assert_same(a, b)
    assert [a.status_code for a, _ in answers] == [404, 404, 429]
    limited = answers[2][0]
    assert limited.json()["error_code"] == "RATE_LIMITED"
    assert limited.headers["x-ratelimit-remaining"] == "0"
    assert 1 <= int(limited.headers["retry-after"]) <= 60


async def test_without_nats_the_answer_is_the_same(settings: GatewaySettings) -> None:
    # A link never entered: NATS is not connected for the whole test.
    async for p in pair_over(settings, NatsLink(settings)):
        r = await p.same("/jobs/some-job", ALICE)
        assert r.status_code == 503
        assert r.json()["error_code"] == "SERVICE_UNAVAILABLE"


def requests_counted(status: str) -> float:
    labels = {"method": "GET", "route": "/jobs/{task_id}", "status": status}
    return REGISTRY.get_sample_value("tlr_http_requests_total", labels) or 0.0


async def test_the_hot_route_is_logged_and_counted_as_the_route(
    pair: Pair, jobs: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A logger structlog has not cached, so capture_logs sees it (see test_gateway_http).
    monkeypatch.setattr(middleware, "log", structlog.get_logger(middleware.__name__))
    before = requests_counted("200"), requests_counted("404")
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        await pair.hot.get(f"/jobs/{jobs['recording']}", headers={"X-API-Key": ALICE})
        await pair.hot.get(f"/jobs/{jobs['bobs']}", headers={"X-API-Key": ALICE})
    assert (requests_counted("200"), requests_counted("404")) == (before[0] + 1, before[1] + 1)
    lines = [e for e in logs if e["event"] == "http.request"]
    assert [(e["route"], e["status"], e["key_name"]) for e in lines] == [
        ("/jobs/{task_id}", 200, ALICE_NAME),
        ("/jobs/{task_id}", 404, ALICE_NAME),
    ]
    assert ALICE not in str(logs)


def test_the_hot_route_hides_no_other_route(settings: GatewaySettings) -> None:
    # Another GET /jobs/<name> would never be reached: the hot route would take <name> for an id.
    paths = create_app(settings, link=NatsLink(settings)).openapi()["paths"]
    one_segment = [p for p in paths if p.startswith("/jobs/") and "/" not in p[len("/jobs/") :]]
    assert one_segment == ["/jobs/{task_id}"]
    assert {"get", "delete"} == set(paths["/jobs/{task_id}"])
