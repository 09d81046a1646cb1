"""An ffmpeg the recorder started dies with the recorder (no orphan racing a takeover)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from tests.helpers import eventually

# A process that runs a 10-minute ffmpeg through the recorder's own runner, silent as a remux
# is (-loglevel error): it never writes to its pipes, so their closing does not stop it.
CHILD = """
import asyncio
from services.recorder.ffmpeg import ffmpeg_binary, run_ffmpeg
argv = [ffmpeg_binary(None), "-nostdin", "-nostats", "-loglevel", "error", "-f", "lavfi",
        "-re", "-i", "anullsrc", "-t", "600", "-f", "null", "/dev/null"]
asyncio.run(run_ffmpeg(argv, timeout=900))
"""


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux's")
async def test_ffmpeg_dies_when_its_recorder_is_killed() -> None:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", CHILD, cwd=os.getcwd())
    found: list[int] = []

    async def ffmpeg_running() -> bool:
        found[:] = _children(proc.pid)
        return bool(found)

    try:
        await eventually(ffmpeg_running, timeout=30)
        (ffmpeg,) = found
        proc.send_signal(signal.SIGKILL)
        await proc.wait()

        async def ffmpeg_gone() -> bool:
            return not _alive(ffmpeg)

        await eventually(ffmpeg_gone, timeout=10)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        for pid in found:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
