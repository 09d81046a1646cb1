"""The stack as a user runs it (`tlr up`, two recorders, one nats-server), from outside only:
NATS frozen for 10 s under live recordings, then the recording recorder frozen past its lease.

Every listed file decodes and each job keeps its live to SUCCESS; the media lost per fault is
what the fake served minus what the files hold.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from tests.chaos.invariants import Live, end_live, media_seconds
from tests.helpers import JobsApi, decode_errors, eventually, free_port
from tlr.fake_tiktok import FakeTikTok

FAKE_TIKTOK_OPTIONS = {"speed": 1.0}  # real time: losses are measured in seconds of live
FREEZE_NATS_S = 10.0
FREEZE_RECORDER_S = 15.0  # past the 8 s lease
MAX_LOST_PER_RECORDER_FAULT = 15.0


class Stack(JobsApi):
    """A running `tlr up`: its API, its processes' pids, its recordings folder."""

    def __init__(self, client: httpx.AsyncClient, key: str, var: Path) -> None:
        super().__init__(client, key)
        self.var = var

    def pid(self, name: str) -> int:
        pids: dict[str, int] = json.loads((self.var / "run" / "pids.json").read_text())
        return pids[name]

    async def freeze(self, name: str, seconds: float) -> None:
        pid = self.pid(name)
        os.kill(pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(seconds)  # the fault itself: a process stopped this long
        finally:
            os.kill(pid, signal.SIGCONT)

    async def bytes_of(self, task_id: str) -> int:
        r = await self.client.get(f"/jobs/{task_id}", headers=self.headers)
        if r.status_code != 200:
            return -1
        job = r.json()
        return int(job["progress"]["bytes"]) if job["status"] == "STARTED" else -1

    async def growing(self, task_id: str, *, timeout: float) -> float:
        """Seconds until the job's byte count grows past what it is now."""
        loop = asyncio.get_running_loop()
        since, before = loop.time(), await self.bytes_of(task_id)

        async def grew() -> bool:
            return await self.bytes_of(task_id) > max(before, 0)

        await eventually(grew, timeout=timeout, interval=0.2)
        return loop.time() - since


@pytest.fixture
async def stack(fake_tiktok: FakeTikTok, tmp_path: Path) -> AsyncIterator[Stack]:
    var = tmp_path / "var"
    env = {
        **os.environ,
        "TLR_VAR_DIR": str(var),
        "TLR_NATS_PORT": "0",
        "TLR_NATS_MONITOR_PORT": "0",
        "TLR_METRICS_PORT_BASE": "0",
        "TLR_RECORDERS": "2",
        "GATEWAY_PORT": str(free_port()),
        "TIKTOK_WEB_BASE": fake_tiktok.base_url,
        "TIKTOK_WEBCAST_BASE": fake_tiktok.base_url,
        **fake_tiktok.egress_env,
        "READ_TIMEOUT": "2",
        "RATE_LIMIT_PER_MIN": "100000",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("API_KEYS", None)
    log = (tmp_path / "stack.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tlr.cli", "up", env=env, stdout=log, stderr=asyncio.subprocess.STDOUT
    )
    log.close()
    try:
        banner: dict[str, str] = {}

        async def banner_printed() -> bool:
            assert proc.returncode is None, (tmp_path / "stack.log").read_text()[-3000:]
            for line in (tmp_path / "stack.log").read_text(errors="replace").splitlines():
                if m := re.match(r"\s+(API|API key):\s+(\S+)", line):
                    banner[m.group(1)] = m.group(2)
            return "API key" in banner

        await eventually(banner_printed, timeout=90, interval=0.2)
        async with httpx.AsyncClient(base_url=banner["API"], timeout=10) as client:
            yield Stack(client, banner["API key"], var)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(proc.wait(), 60)
            except TimeoutError:
                proc.kill()
                await proc.wait()


@pytest.mark.chaos
@pytest.mark.timeout(420)
async def test_the_running_stack_keeps_each_live_through_a_nats_freeze_and_a_recorder_freeze(
    stack: Stack, fake_tiktok: FakeTikTok, chaos_report: Callable[[str], None]
) -> None:
    lives = []
    for user in ("lea", "max"):
        await fake_tiktok.create_user(user)
        _, stream_id = await fake_tiktok.go_live(user)
        live = Live(user, stream_id)
        live.task_id = await stack.record(url=f"@{user}")
        lives.append(live)
    await asyncio.gather(*(stack.growing(live.task_id, timeout=60) for live in lives))

    await stack.freeze("nats-server", FREEZE_NATS_S)
    after_nats = await asyncio.gather(*(stack.growing(lv.task_id, timeout=60) for lv in lives))

    victim = (await stack.job(lives[0].task_id))["progress"]["recorder_id"]
    assert victim in ("recorder-1", "recorder-2"), victim
    await stack.freeze(victim, FREEZE_RECORDER_S)
    after_recorder = await asyncio.gather(*(stack.growing(lv.task_id, timeout=60) for lv in lives))
    await asyncio.gather(*(stack.growing(lv.task_id, timeout=30) for lv in lives))

    for live in lives:
        await end_live(fake_tiktok, live)
    cdn = await fake_tiktok.requests()
    recordings = stack.var / "recordings"
    lost = []
    for i, live in enumerate(lives):
        job = await stack.wait(live.task_id, "SUCCESS", "FAILURE", timeout=90)
        assert job["status"] == "SUCCESS", job
        files = job["progress"]["files"]
        assert files, job
        recorded = 0.0
        for f in files:
            assert f["state"] == "final", f
            path = recordings / f["path"]
            assert decode_errors(path) == "", path
            recorded += media_seconds(path)
        assert live.ended_at is not None
        served = live.ended_at - min(r["time"] for r in cdn if live.stream_id in r["path"])
        lost.append(served - recorded)
        chaos_report(
            f"job {live.task_id} ({job['progress']['recorder_id']} at the end): served "
            f"{served:.1f}s, recorded {recorded:.1f}s in {len(files)} files, lost "
            f"{served - recorded:.1f}s; progress again {after_nats[i]:.1f}s after NATS thawed, "
            f"{after_recorder[i]:.1f}s after {victim} thawed"
        )
    # One recorder fault each at most (the NATS freeze is not one): 15 s is the criterion.
    assert max(lost) <= MAX_LOST_PER_RECORDER_FAULT, lost
