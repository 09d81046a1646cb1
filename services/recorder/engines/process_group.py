"""A child in a process group of its own, and how that whole group is stopped.

The upstream CLI runs ffmpeg as its own child; SIGTERM to the CLI alone would leave that
ffmpeg running, so every signal goes to the group (``killpg``), and once the CLI is gone
the group is SIGKILLed again for anything it left.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Mapping
from pathlib import Path

from services.recorder.ffmpeg import die_with_parent

# SIGTERM, then this long for the group to go, then SIGKILL.
TERM_GRACE = 5.0


async def spawn(
    argv: list[str], *, cwd: Path, env: Mapping[str, str]
) -> asyncio.subprocess.Process:
    """Start ``argv`` (no shell) as the leader of a new session and process group, its
    stdout and stderr one pipe; it is SIGKILLed if the recorder dies."""
    return await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        env=dict(env),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=die_with_parent,
    )


def signal_group(pgid: int, signum: int) -> bool:
    """Send ``signum`` to the group; False when no process of it is left."""
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        return False
    return True


async def stop_group(proc: asyncio.subprocess.Process, grace: float = TERM_GRACE) -> None:
    """SIGTERM the group of ``proc``, SIGKILL it after ``grace`` s, reap ``proc``; then
    SIGKILL whatever is left in the group. Finishes even if cancelled meanwhile (re-raised)."""
    pgid = proc.pid
    waiter = asyncio.ensure_future(proc.wait())
    cancelled = False
    if proc.returncode is None:
        signal_group(pgid, signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), grace)
        except TimeoutError:
            pass
        except asyncio.CancelledError:
            cancelled = True
    signal_group(pgid, signal.SIGKILL)
    while not waiter.done():
        try:
            await asyncio.shield(waiter)
        except asyncio.CancelledError:
            cancelled = True
    with contextlib.suppress(asyncio.CancelledError):
        waiter.result()
    if cancelled:
        raise asyncio.CancelledError


def group_alive(pgid: int) -> bool:
    """True while any process of the group exists (signal 0 probes without sending)."""
    return signal_group(pgid, 0)
