"""Services as real processes, each reaching the NATS cluster through its own fault proxy."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from pathlib import Path
from typing import Literal

import httpx

from shared.bus import Bus
from shared.lease import current_holder
from shared.micro import ping_all
from shared.subjects import CLAIMS_BUCKET
from tests.chaos.fault_proxy import FaultProxy
from tests.helpers import JobsApi, eventually
from tlr.nats_server import NatsCluster

KEY = "k-chaos"

Service = Literal["recorder", "uploader", "indexer", "scheduler"]


class ChaosFleet(JobsApi):
    """Services as real processes (``python -m services.<name>``), each reaching every node
    through its own FaultProxy. Schedulers share one SCHEDULER_DB and indexers one INDEX_DB
    (as they must), all share RECORDINGS_DIR."""

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
        self.env = {
            "SCHEDULER_DB": str(tmp / "scheduler.sqlite3"),
            "INDEX_DB": str(tmp / "index.sqlite3"),
            **env,
        }
        self.tmp = tmp
        self.recordings = tmp / "recordings"
        self.procs: dict[str, asyncio.subprocess.Process] = {}
        self.proxies: dict[str, FaultProxy] = {}

    async def start(
        self,
        name: str,
        *,
        service: Service = "recorder",
        env: dict[str, str] | None = None,
        launcher: tuple[str, ...] = (),
    ) -> None:
        """Start ``service`` as instance ``name``, with ``env`` on top of the fleet's;
        ``launcher`` is put before its argv (a wrapper that execs). Returns once it answers
        $SRV.PING."""
        upstreams = [(node.host, node.port) for node in self.cluster.nodes]
        proxy = self.proxies[name] = await FaultProxy(upstreams).start()
        log = (self.tmp / f"{name}.log").open("wb")
        self.procs[name] = await asyncio.create_subprocess_exec(
            *launcher,
            sys.executable,
            "-m",
            f"services.{service}",
            env={
                **self.env,
                **(env or {}),
                "INSTANCE_ID": name,
                "NATS_URL": ",".join(proxy.urls),
            },
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

    def log_events(self, name: str) -> list[str]:
        """The ``msg`` of every JSON log line of ``name``, in order."""
        found = []
        for line in self.log_of(name).splitlines():
            with contextlib.suppress(ValueError, AttributeError):
                found.append(str(json.loads(line).get("msg")))
        return found

    async def leader(self, role: Literal["scheduler", "indexer"]) -> str | None:
        """The instance holding ``leader.<role>`` in KV claims (None: nobody)."""
        holder = await current_holder(await self.bus.kv(CLAIMS_BUCKET), f"leader.{role}")
        return None if holder is None else holder.owner

    async def wait_leader(
        self, role: Literal["scheduler", "indexer"], *, among: set[str], timeout: float = 30
    ) -> str:
        """Wait until one of ``among`` leads ``role``; its name."""
        found: list[str] = []

        async def elected() -> bool:
            with contextlib.suppress(Exception):  # NATS may be between leaders itself
                leader = await self.leader(role)
                if leader in among:
                    found.append(leader)
                    return True
            return False

        await eventually(elected, timeout=timeout, interval=0.2)
        return found[-1]

    def freeze(self, name: str) -> None:
        self.procs[name].send_signal(signal.SIGSTOP)

    def thaw(self, name: str) -> None:
        self.procs[name].send_signal(signal.SIGCONT)

    async def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGCONT)  # a frozen one would not die of SIGKILL late
                proc.kill()
                await proc.wait()
        for proxy in self.proxies.values():
            await proxy.close()
