"""The demo's processes: the fake TikTok, an S3 server and `tlr up`'s stack, on free ports."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TypeVar

import httpx

from tlr.devstack import DevStackSettings, up
from tlr.nats_server import die_with_parent

T = TypeVar("T")

HOST = "tlr_demo"
BUCKET = "tlr-demo"
MARKER = ".tlr-demo"
STEP_TIMEOUT = 90.0


class DemoFailed(Exception):
    """A step of the demo did not happen in time; the message says which."""


@dataclass(frozen=True)
class Ports:
    gateway: int
    nats: int
    nats_monitor: int
    metrics_base: int  # scheduler, recorder, uploader, indexer, notifier: base .. base+4
    fake: int
    s3: int


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def pick_ports() -> Ports:
    """Free ports for everything, so a demo runs beside a `tlr up` or another project."""
    taken: set[int] = set()

    def one() -> int:
        while True:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port: int = s.getsockname()[1]
            if port not in taken:
                taken.add(port)
                return port

    base = 20000
    while not all(_bindable(p) for p in range(base, base + 5)):
        base += 5
    taken.update(range(base, base + 5))
    return Ports(one(), one(), one(), base, one(), one())


async def poll_until(
    what: str, probe: Callable[[], Awaitable[T | None]], *, timeout: float = STEP_TIMEOUT
) -> T:
    """Call ``probe`` every half second until it returns a value; DemoFailed after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last = ""
    while True:
        try:
            value = await probe()
        except (httpx.HTTPError, DemoFailed) as exc:  # a service restarting: try again
            last = f" (last answer: {exc})"
        else:
            if value is not None:
                return value
        if loop.time() > deadline:
            msg = f"timed out after {timeout:.0f} s waiting for {what}{last}"
            raise DemoFailed(msg)
        await asyncio.sleep(0.5)


def prepare(var_dir: Path) -> None:
    """Start from an empty folder; refuse to wipe one the demo did not make."""
    if var_dir.exists():
        if not (var_dir / MARKER).exists() and any(var_dir.iterdir()):
            msg = f"{var_dir} exists and was not made by `tlr demo`; remove it or pick another"
            raise DemoFailed(msg)
        shutil.rmtree(var_dir)
    var_dir.mkdir(parents=True)
    (var_dir / MARKER).write_text("made by tlr demo; wiped at the next run\n")


def _spawn(
    argv: list[str], log: IO[bytes], *, stdout_pipe: bool = False
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE if stdout_pipe else log,
        stderr=log,
        start_new_session=True,
        preexec_fn=die_with_parent if sys.platform == "linux" else None,
    )


async def _start_fake(ports: Ports, var_dir: Path, log: IO[bytes]) -> subprocess.Popen[bytes]:
    # Installed with `tlr` itself, so the demo runs from any folder, not only a checkout.
    argv = [sys.executable, "-m", "tlr.fake_tiktok", "--port", str(ports.fake)]
    argv += ["--media-dir", str(var_dir / "fake-media"), "--user", HOST]
    proc = _spawn(argv, log, stdout_pipe=True)
    assert proc.stdout is not None
    # It prints its base URL once it listens.
    line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 60)
    if not line.startswith(b"http"):
        msg = "the fake TikTok did not start; see var/demo/stack.log"
        raise DemoFailed(msg)
    return proc


async def _start_s3(ports: Ports, log: IO[bytes]) -> subprocess.Popen[bytes] | None:
    if importlib.util.find_spec("moto") is None:
        return None  # installed without the dev extras: record and index, no upload
    proc = _spawn(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(ports.s3)], log
    )

    async def listening() -> bool | None:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", ports.s3)
        except OSError:
            return None
        writer.close()
        return True

    await poll_until("the S3 server to listen", listening, timeout=30)
    return proc


def _stack_env(ports: Ports, var_dir: Path, fake: str, s3: bool) -> dict[str, str]:
    env = {
        "TIKTOK_WEB_BASE": fake,
        "TIKTOK_WEBCAST_BASE": fake,
        # The fake's CDN is this machine: its host on the allow-list, loopback allowed (the
        # defaults, TikTok's CDNs and no private address, are for real deployments).
        "STREAM_HOST_SUFFIXES": "127.0.0.1",
        "ALLOW_PRIVATE_STREAM_HOSTS": "true",
        "GATEWAY_HOST": "127.0.0.1",
        "GATEWAY_PORT": str(ports.gateway),
        "API_KEYS": "demo-" + os.urandom(12).hex(),
        "LOG_FORMAT": "json",
        "RECORDINGS_DIR": str(var_dir / "stack" / "recordings"),
    }
    if s3:
        env |= {
            "S3_BUCKET": BUCKET,
            "S3_ENDPOINT_URL": f"http://127.0.0.1:{ports.s3}",
            # moto accepts any credentials; these exist only inside this demo.
            "AWS_ACCESS_KEY_ID": "demo",
            "AWS_SECRET_ACCESS_KEY": "demo-only-not-a-secret",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    return env


@dataclass(frozen=True)
class Stack:
    """What the demo's story needs of the processes started for it."""

    fake: str  # the fake TikTok's base URL
    s3: bool  # an S3 server runs: the story asks for uploads
    api_key: str
    running: asyncio.Task[int]  # `tlr up`'s stack; it ends only when stopped or broken


@contextlib.asynccontextmanager
async def demo_stack(ports: Ports, var_dir: Path, log: IO[bytes]) -> AsyncIterator[Stack]:
    """The fake TikTok, S3 (when moto is installed) and the stack; all stopped on the way out."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(await _start_fake(ports, var_dir, log))
        fake = f"http://127.0.0.1:{ports.fake}"
        s3_proc = await _start_s3(ports, log)
        if s3_proc is not None:
            procs.append(s3_proc)
        env = _stack_env(ports, var_dir, fake, s3_proc is not None)
        os.environ.update(env)  # the stack's children inherit this process's environment
        stack = DevStackSettings(
            var_dir=var_dir / "stack",
            nats_port=ports.nats,
            nats_monitor_port=ports.nats_monitor,
            metrics_port_base=ports.metrics_base,
        )
        stack_stop = asyncio.Event()
        running = asyncio.create_task(up(stack, stop=stack_stop, output=log))
        try:
            yield Stack(fake, s3_proc is not None, env["API_KEYS"], running)
        finally:
            stack_stop.set()
            with contextlib.suppress(Exception):
                await running
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(proc.wait, 10)
            if proc.poll() is None:
                proc.kill()
