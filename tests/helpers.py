"""Small test helpers: waiting on an outcome with a deadline, free ports, decode checks."""

from __future__ import annotations

import asyncio
import socket
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from services.recorder.ffmpeg import ffmpeg_binary
from shared.bus import Bus
from shared.documents import KvDocuments
from shared.job_store import JobStore
from shared.subjects import JOBS_BUCKET


async def eventually(
    check: Callable[[], Awaitable[bool]], *, timeout: float = 10.0, interval: float = 0.05
) -> None:
    """Wait until ``check()`` is true, or fail after ``timeout`` seconds.

    For outcomes that have no event to wait on (an HTTP status, a server-side counter).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        if await check():
            return
        if loop.time() >= deadline:
            msg = f"condition not met within {timeout}s"
            raise AssertionError(msg)
        await asyncio.sleep(interval)


async def job_store(bus: Bus) -> JobStore:
    """The job store the services use, over the test's nats-server."""
    return JobStore(KvDocuments(await bus.kv(JOBS_BUCKET)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def decode_errors(path: Path) -> str:
    """Full decode with the real ffmpeg; what it complained about (empty = clean)."""
    out = subprocess.run(
        [ffmpeg_binary(None), "-v", "error", "-i", str(path), "-f", "null", "-"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return out.stderr.strip() + ("" if out.returncode == 0 else f" (exit {out.returncode})")


class JobsApi:
    """The REST calls tests make about recordings: create one, read its job, wait for a state."""

    def __init__(self, client: httpx.AsyncClient, api_key: str) -> None:
        self.client = client
        self.headers = {"X-API-Key": api_key}

    async def record(self, **body: Any) -> str:
        r = await self.client.post("/recordings", json=body, headers=self.headers)
        assert r.status_code == 202, r.text
        task_id: str = r.json()["task_id"]
        return task_id

    async def job(self, task_id: str) -> dict[str, Any]:
        r = await self.client.get(f"/jobs/{task_id}", headers=self.headers)
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    async def wait(self, task_id: str, *states: str, timeout: float = 30) -> dict[str, Any]:
        async def reached() -> bool:
            return (await self.job(task_id))["status"] in states

        await eventually(reached, timeout=timeout, interval=0.1)
        return await self.job(task_id)
