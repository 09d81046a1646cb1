"""POST /recordings, GET and DELETE /jobs against a real nats-server (no recorder running)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from services.gateway.app import create_app
from services.gateway.nats_link import NatsLink
from services.gateway.settings import GatewaySettings
from shared import events as ev
from shared.bus import Bus
from shared.secrets import new_key
from shared.subjects import EVENTS_STREAM, JOBS_BUCKET
from tlr.nats_server import NatsServer

KEY = "k-jobs"
H = {"X-API-Key": KEY}
ROOM = "7503448765740976902"
PROXY = "http://bob:hunter2@proxy.example:8080"


@pytest.fixture
async def client(nats_server: NatsServer) -> AsyncIterator[httpx.AsyncClient]:
    settings = GatewaySettings(
        api_keys=[KEY], nats_url=nats_server.client_url, secret_key=new_key()
    )
    async with NatsLink(settings) as link:
        await link.wait_connected()
        transport = httpx.ASGITransport(app=create_app(settings, link=link))
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as c:
            yield c


async def stored_events(bus: Bus) -> list[ev.Event]:
    info = await bus.js.stream_info(EVENTS_STREAM)
    out = []
    for seq in range(1, info.state.last_seq + 1):
        msg = await bus.js.get_msg(EVENTS_STREAM, seq)
        out.append(ev.decode(msg.data or b""))
    return out


async def test_create_then_status_pending_then_cancel(client: httpx.AsyncClient, bus: Bus) -> None:
    r = await client.post(
        "/recordings",
        json={"url": "https://www.tiktok.com/@alice/live", "duration": 30},
        headers={**H, "X-Correlation-ID": "corr-1"},
    )
    assert r.status_code == 202
    task_id = r.json()["task_id"]
    assert r.json()["status"] == "PENDING"

    status = (await client.get(f"/jobs/{task_id}", headers=H)).json()
    assert status["status"] == "PENDING"
    assert status["url"] == "https://www.tiktok.com/@alice/live"

    (event,) = await stored_events(bus)
    assert isinstance(event, ev.RecordingRequested)
    assert event.job_id == task_id
    assert event.duration == 30
    assert event.correlation_id == "corr-1"

    r = await client.delete(f"/jobs/{task_id}", headers=H)
    assert r.status_code == 202
    assert r.json()["status"] == "CANCELLED"
    assert r.json()["error_code"] == "CANCELLED"


async def test_unknown_job_is_404(client: httpx.AsyncClient) -> None:
    for path in ("/jobs/0b9e3f4e-0000-4000-8000-000000000000", "/jobs/..%2F..%2Fetc"):
        r = await client.get(path, headers=H)
        assert r.status_code == 404, path
        assert r.json()["error_code"] == "NOT_FOUND"
    r = await client.delete("/jobs/nope", headers=H)
    assert r.status_code == 404


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({}, 400),
        ({"room_id": ROOM, "url": "@alice"}, 400),
        ({"room_id": "123"}, 422),
        ({"room_id": "; rm -rf /"}, 422),
        ({"room_id": "$(id)"}, 422),
        ({"url": "https://evil.example/@alice/live"}, 422),
        ({"url": "http://www.tiktok.com/@alice/live"}, 422),
        ({"url": "file:///etc/passwd"}, 422),
        ({"url": "@alice`id`"}, 422),
        ({"url": "https://www.tiktok.com/@a/live\nX-Injected: 1"}, 422),
        ({"room_id": ROOM, "duration": 0}, 422),
        ({"room_id": ROOM, "duration": 86_401}, 422),
        ({"room_id": ROOM, "duration": "long"}, 422),
        ({"room_id": ROOM, "output_template": "../../etc/passwd"}, 422),
        ({"room_id": ROOM, "output_template": "/abs/{room_id}.mp4"}, 422),
        ({"room_id": ROOM, "output_template": "{room_id}/{nope}.mp4"}, 422),
        ({"room_id": ROOM, "output_template": "$(id)/{room_id}\x00.mp4"}, 422),
        ({"room_id": ROOM, "options": {"proxy": "ftp://h:21"}}, 422),
        ({"room_id": ROOM, "options": {"proxy": "http://h"}}, 422),
        ({"room_id": ROOM, "options": {"proxy": "http://h:8080/$(id)"}}, 422),
        ({"room_id": ROOM, "options": {"cookies": "../../etc/passwd"}}, 422),
        ({"room_id": ROOM, "options": {"cookies": "/etc/passwd"}}, 422),
        ({"room_id": ROOM, "options": {"quality": "8k"}}, 422),
        ({"room_id": ROOM, "options": {"unknown": 1}}, 422),
    ],
)
async def test_bad_input_is_refused_with_error_code(
    client: httpx.AsyncClient, bus: Bus, body: dict[str, object], status: int
) -> None:
    r = await client.post("/recordings", json=body, headers=H)
    assert r.status_code == status
    assert r.json()["error_code"] == "VALIDATION_ERROR"
    assert (await bus.js.stream_info(EVENTS_STREAM)).state.messages == 0  # nothing published


async def test_proxy_password_never_reaches_nats(client: httpx.AsyncClient, bus: Bus) -> None:
    r = await client.post(
        "/recordings", json={"room_id": ROOM, "options": {"proxy": PROXY}}, headers=H
    )
    assert r.status_code == 202
    (event,) = await stored_events(bus)
    assert isinstance(event, ev.RecordingRequested)
    assert event.options.proxy is not None
    assert "hunter2" not in ev.encode(event).decode()
    kv = await bus.kv(JOBS_BUCKET)
    for key in await kv.keys():
        entry = await kv.get(key)
        assert b"hunter2" not in (entry.value or b"")
    status = await client.get(f"/jobs/{r.json()['task_id']}", headers=H)
    assert "hunter2" not in status.text
