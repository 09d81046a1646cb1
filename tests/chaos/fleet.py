"""Recorders as real processes, each reaching the NATS cluster through its own fault proxy."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import httpx

from shared.bus import Bus
from shared.micro import ping_all
from tests.chaos.fault_proxy import FaultProxy
from tests.helpers import JobsApi, eventually
from tlr.nats_server import NatsCluster

KEY = "k-chaos"


class ChaosFleet(JobsApi):
    """Recorders as real processes, each reaching every node through its own FaultProxy."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        bus: Bus,
        cluster: NatsCluster,
        env: dict[str, str],
        tmp: Path,
    ) -> None:
        super().__init__(client, KEY)
        self.bus = bus
        self.cluster = cluster
        self.env = env
        self.tmp = tmp
        self.recordings = tmp / "recordings"
        self.procs: dict[str, asyncio.subprocess.Process] = {}
        self.proxies: dict[str, FaultProxy] = {}

    async def start(self, name: str, *, launcher: tuple[str, ...] = ()) -> None:
        """Start recorder ``name``; ``launcher`` is put before its argv (a wrapper that execs)."""
        upstreams = [(node.host, node.port) for node in self.cluster.nodes]
        proxy = self.proxies[name] = await FaultProxy(upstreams).start()
        log = (self.tmp / f"{name}.log").open("wb")
        self.procs[name] = await asyncio.create_subprocess_exec(
            *launcher,
            sys.executable,
            "-m",
            "services.recorder",
            env={**self.env, "INSTANCE_ID": name, "NATS_URL": ",".join(proxy.urls)},
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
        )
        log.close()

        async def answering() -> bool:
            proc = self.procs[name]
            assert proc.returncode is None, f"{name} exited: {self.log_of(name)[-2000:]}"
            replies = await ping_all(self.bus.nc, wait=0.1)
            return any(r.get("metadata", {}).get("instance") == name for r in replies)

        await eventually(answering, timeout=30)

    def log_of(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text(errors="replace")

    async def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        for proxy in self.proxies.values():
            await proxy.close()
