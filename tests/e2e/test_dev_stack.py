"""`tlr up` as a user runs it: the stack comes up, answers, survives a NATS crash, stops clean."""

from __future__ import annotations

import asyncio
import gc
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
from shared.nats_auth import OPERATOR
from tests.helpers import eventually, free_port
from tlr.devstack import SERVICES, Child, _banner, dev_api_key

pytestmark = pytest.mark.e2e


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is gone for our purpose.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


# nats-py leaves the refused connection's socket to the garbage collector.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
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

            # The embedded NATS is locked: no credentials, no connection (so no room.live).
            async def _quiet(_exc: Exception) -> None:
                pass

            with pytest.raises(nats.errors.Error, match="Authorization Violation"):
                await nats.connect(
                    banner["NATS"], allow_reconnect=False, connect_timeout=2, error_cb=_quiet
                )
            gc.collect()
            auth = tmp_path / "var" / "nats-auth"
            for user in [*SERVICES, OPERATOR, "provisioner"]:
                assert (auth / user / "password").stat().st_mode & 0o777 == 0o600
            nc = await nats.connect(
                banner["NATS"],
                user=OPERATOR,
                password=(auth / OPERATOR / "password").read_text().strip(),
            )
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
        # Each service got its own NATS user and password file, and no one else's.
        for service in SERVICES:
            child_env = _environ(pids[f"{service}-1"])
            assert child_env["NATS_USER"] == service
            assert child_env["NATS_PASSWORD_FILE"] == str(auth / service / "password")
            assert child_env["NATS_PROVISION"] == "false"
            assert "NATS_PASSWORD" not in child_env
            passwords = [(auth / u / "password").read_text().strip() for u in SERVICES]
            environ = (Path("/proc") / str(pids[f"{service}-1"]) / "environ").read_text()
            assert not any(p in environ for p in passwords)
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        await asyncio.wait_for(proc.wait(), 60)
        await drain
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0
    assert [name for name, pid in pids.items() if alive(pid)] == []


def _environ(pid: int) -> dict[str, str]:
    raw = (Path("/proc") / str(pid) / "environ").read_bytes()
    pairs = [item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item]
    return {k.decode(): v.decode(errors="replace") for k, v in pairs}


def test_the_banner_shows_a_key_only_when_tlr_up_made_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    children: list[Child] = []
    api = "http://127.0.0.1:8000"
    # No key given: tlr up makes one for development, keeps it, and shows it.
    env: dict[str, str] = {}
    made = dev_api_key(env, tmp_path)
    assert made is not None
    assert made.startswith("dev-")
    assert env["API_KEYS"] == made
    assert (tmp_path / "dev-api-key").stat().st_mode & 0o777 == 0o600
    _banner(api, env, None, children, dev_key=made)
    assert made in capsys.readouterr().out
    # A key from API_KEYS: used as given, never printed.
    env = {"API_KEYS": "op-secret-key-1,op-secret-key-2"}
    assert dev_api_key(env, tmp_path) is None
    assert env["API_KEYS"] == "op-secret-key-1,op-secret-key-2"
    _banner(api, env, None, children, dev_key=None)
    out = capsys.readouterr().out
    assert "op-secret-key" not in out
    assert "from API_KEYS" in out
    # API_KEYS_FILE: no development key is added beside the file's keys, and none printed.
    keys_file = tmp_path / "keys"
    keys_file.write_text("ops op-file-key-3\n")
    env = {"API_KEYS_FILE": str(keys_file)}
    assert dev_api_key(env, tmp_path) is None
    assert "API_KEYS" not in env
    _banner(api, env, None, children, dev_key=None)
    out = capsys.readouterr().out
    assert "op-file-key" not in out
    assert made not in out
    assert "from API_KEYS_FILE" in out
