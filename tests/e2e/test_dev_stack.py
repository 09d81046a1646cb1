"""`tlr up` as a user runs it: the stack comes up, answers, survives a NATS crash, stops clean."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from pathlib import Path

import httpx
import nats
import pytest

from shared.micro import ping_all
from tests.helpers import eventually, free_port
from tlr.devstack import SERVICES

pytestmark = pytest.mark.e2e


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is gone for our purpose.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


async def test_tlr_up_runs_the_whole_stack_and_leaves_nothing_behind(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "TLR_VAR_DIR": str(tmp_path / "var"),
        "TLR_NATS_PORT": "0",
        "TLR_NATS_MONITOR_PORT": "0",
        "TLR_METRICS_PORT_BASE": "0",
        "GATEWAY_PORT": str(port),
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("API_KEYS", None)
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
    banner: dict[str, str] = {}
    try:
        while "NATS" not in banner:
            line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
            assert line, "tlr up exited before printing its banner"
            if m := re.match(r"\s+(API|API key|NATS):\s+(\S+)", line):
                banner[m.group(1)] = m.group(2)
        # Keep reading the output so the pipe never fills.
        drain = asyncio.create_task(proc.stdout.read())
        api, key = banner["API"], banner["API key"]
        async with httpx.AsyncClient(base_url=api, timeout=5) as client:
            assert (await client.get("/healthz")).status_code == 200
            assert (await client.get("/ready")).status_code == 200
            assert "paths" in (await client.get("/openapi.json")).json()
            unauth = await client.get("/services")
            assert unauth.status_code == 401
            assert unauth.json()["error_code"] == "UNAUTHORIZED"

            nc = await nats.connect(banner["NATS"])
            try:

                async def all_five_answer() -> bool:
                    names = {r["name"] for r in await ping_all(nc, wait=0.2)}
                    return names == set(SERVICES)

                await eventually(all_five_answer, timeout=30)
            finally:
                await nc.close()

            listed = await client.get("/services", headers={"X-API-Key": key})
            assert {s["name"] for s in listed.json()["items"]} == set(SERVICES)

            # Kill NATS: /ready says so; the supervisor restarts it; /ready recovers by itself.
            pids_file = tmp_path / "var" / "run" / "pids.json"
            os.kill(json.loads(pids_file.read_text())["nats-server"], signal.SIGKILL)

            async def ready_is(status: int) -> bool:
                return (await client.get("/ready")).status_code == status

            await eventually(lambda: ready_is(503), timeout=15)
            await eventually(lambda: ready_is(200), timeout=30)

        pids = json.loads(pids_file.read_text())
        assert set(pids) == {f"{s}-1" for s in SERVICES} | {"nats-server"}
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        await asyncio.wait_for(proc.wait(), 60)
        await drain
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0
    assert [name for name, pid in pids.items() if alive(pid)] == []
