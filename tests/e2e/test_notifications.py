"""Black box: `tlr up` against the fake TikTok; a webhook receiver subscribed over the REST API
gets a signed `room.live`, then a signed `recording.finished`, for a watched user's live."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from tests.helpers import eventually, free_port
from tests.webhook_receiver import Received, WebhookReceiver
from tlr.fake_tiktok import FakeTikTok

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

KEY = "e2e-notify-key-0123456789"
FAKE_TIKTOK_OPTIONS = {"speed": 4.0}


@asynccontextmanager
async def tlr_up(tmp_path: Path, fake: FakeTikTok) -> AsyncIterator[httpx.AsyncClient]:
    """The whole stack as `tlr up` runs it, pointed at the fake TikTok; its API client."""
    env = {
        **os.environ,
        "TLR_VAR_DIR": str(tmp_path / "var"),
        "TLR_NATS_PORT": "0",
        "TLR_NATS_MONITOR_PORT": "0",
        "TLR_METRICS_PORT_BASE": "0",
        "GATEWAY_PORT": str(free_port()),
        "PYTHONUNBUFFERED": "1",
        "API_KEYS": KEY,
        "RECORDINGS_DIR": str(tmp_path / "recordings"),
        "TIKTOK_WEB_BASE": fake.base_url,
        "TIKTOK_WEBCAST_BASE": fake.base_url,
        "STREAM_HOST_SUFFIXES": "127.0.0.1",
        "ALLOW_PRIVATE_STREAM_HOSTS": "true",
        # The receiver listens on loopback: allowed here only.
        "ALLOW_PRIVATE_WEBHOOKS": "true",
    }
    env.pop("API_KEYS_FILE", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tlr.cli",
        "up",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdout is not None
    try:
        api = None
        while api is None:
            line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
            assert line, "tlr up exited before printing its banner"
            if m := re.match(r"\s+API:\s+(\S+)", line):
                api = m.group(1)
        drain = asyncio.create_task(proc.stdout.read())  # the pipe must never fill
        async with httpx.AsyncClient(
            base_url=api, timeout=10, headers={"X-API-Key": KEY}
        ) as client:

            async def ready() -> bool:
                return (await client.get("/ready")).status_code == 200

            await eventually(ready, timeout=60)
            yield client
        proc.send_signal(signal.SIGINT)
        await asyncio.wait_for(proc.wait(), 60)
        await drain
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def signed(request: Received, secret: str) -> bool:
    timestamp = request.headers["x-tlr-timestamp"]
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + request.body, hashlib.sha256)
    return hmac.compare_digest(request.headers["x-tlr-signature"], f"sha256={mac.hexdigest()}")


async def test_a_receiver_gets_a_signed_live_and_recording_finished_of_a_watched_user(
    tmp_path: Path, fake_tiktok: FakeTikTok
) -> None:
    await fake_tiktok.create_user("nina")
    async with WebhookReceiver() as receiver, tlr_up(tmp_path, fake_tiktok) as api:
        created = await api.post(
            "/subscriptions",
            json={
                "events": ["room.live", "recording.finished"],
                "watchers": ["@nina"],
                "target": {"type": "webhook", "url": f"{receiver.url}/tlr"},
            },
        )
        assert created.status_code == 201, created.text
        secret = created.json()["secret"]
        watched = await api.post("/watchers", json={"url": "@nina", "poll_interval": 10})
        assert watched.status_code == 202, watched.text
        await fake_tiktok.go_live("nina", title="cooking")
        await receiver.wait_for(1, timeout=60)
        job_id = receiver.requests[0].json()["job_id"]

        async def recording() -> bool:
            job = (await api.get(f"/jobs/{job_id}")).json()
            return bool(job.get("status") == "STARTED" and job["progress"]["segments"] > 0)

        await eventually(recording, timeout=60, interval=0.2)
        await fake_tiktok.end("nina")
        await receiver.wait_for(2, timeout=90)

    live, finished = receiver.delivered
    assert live.json()["type"] == "room.live"
    assert live.json()["title"] == "cooking"
    assert finished.json()["type"] == "recording.finished"
    assert finished.json()["job_id"] == job_id
    assert finished.json()["files"]
    for request in (live, finished):
        assert request.path == "/tlr"
        assert signed(request, secret)
