"""Each service provisions what it owns, answers nats.micro, and drains on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import httpx
import msgspec
import pytest

from services.indexer.service import IndexerService
from services.notifier.service import NotifierService
from services.recorder.service import RecorderService
from services.scheduler.service import SchedulerService
from services.uploader.service import UploaderService
from shared.bus import Bus
from shared.micro import endpoint_subject, ping_all
from shared.service import BaseService
from tests.helpers import eventually, free_port
from tlr.nats_server import NatsServer

SERVICES: list[type[BaseService]] = [
    SchedulerService,
    RecorderService,
    UploaderService,
    IndexerService,
    NotifierService,
]


@pytest.mark.parametrize("service_type", SERVICES, ids=lambda s: s.name)
async def test_service_provisions_and_answers_micro(
    bus: Bus, nats_server: NatsServer, service_type: type[BaseService], tmp_path: Path
) -> None:
    # Every file a service may write goes under tmp_path, never into the repository's var/.
    settings = service_type.settings_type(
        nats_url=nats_server.client_url,
        instance_id=f"{service_type.name}-t",
        recordings_dir=tmp_path / "recordings",
        cookies_dir=tmp_path / "cookies",
        scheduler_db=tmp_path / "scheduler.sqlite3",
        index_db=tmp_path / "index.sqlite3",
    )
    async with service_type(bus, settings):
        for durable in service_type.durables:
            info = await bus.js.consumer_info(durable.stream, durable.name)
            assert info.config.durable_name == durable.name
        replies = await ping_all(bus.nc)
        assert [(r["name"], r["metadata"]["instance"]) for r in replies] == [
            (service_type.name, f"{service_type.name}-t")
        ]
        reply = await bus.nc.request(endpoint_subject(service_type.name, "status"), b"", timeout=2)
        status = msgspec.json.decode(reply.data)
        assert status["service"] == service_type.name
        assert status["nats_connected"] is True
        # What `nats micro stats <name>` shows: per-endpoint requests, errors, latency.
        reply = await bus.nc.request(f"$SRV.STATS.{service_type.name}", b"", timeout=2)
        stats = msgspec.json.decode(reply.data)
        assert stats["name"] == service_type.name
        by_name = {e["name"]: e for e in stats["endpoints"]}
        assert by_name["status"]["num_requests"] >= 1
    # Once exited, the service no longer answers.
    assert await ping_all(bus.nc) == []


async def test_process_drains_and_exits_zero_on_sigterm(
    bus: Bus, nats_server: NatsServer, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "NATS_URL": nats_server.client_url,
        "SCHEDULER_DB": str(tmp_path / "scheduler.sqlite3"),
        "RECORDINGS_DIR": str(tmp_path / "recordings"),
        "LOG_FORMAT": "json",
        "INSTANCE_ID": "sched-proc",
        "METRICS_PORT": str(ops_port := free_port()),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.scheduler",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:

        async def answering() -> bool:
            return any(r["name"] == "scheduler" for r in await ping_all(bus.nc, wait=0.1))

        await eventually(answering, timeout=20)
        # The ops endpoints Prometheus and Kubernetes probes use, on METRICS_PORT.
        ops = f"http://127.0.0.1:{ops_port}"
        async with httpx.AsyncClient(timeout=5) as http:
            assert (await http.get(f"{ops}/healthz")).status_code == 200
            assert (await http.get(f"{ops}/ready")).status_code == 200
            assert (await http.get(f"{ops}/nope")).status_code == 404

            async def lag_exported() -> bool:
                text = (await http.get(f"{ops}/metrics")).text
                return 'tlr_consumer_pending{durable="scheduler"}' in text

            await eventually(lag_exported, timeout=20)
            text = (await http.get(f"{ops}/metrics")).text
            assert 'tlr_nats_connected{service="scheduler"} 1.0' in text
        proc.send_signal(signal.SIGTERM)
        out, _ = await asyncio.wait_for(proc.communicate(), 20)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0
    messages = [msgspec.json.decode(line)["msg"] for line in out.splitlines() if line]
    assert messages.index("service.draining") < messages.index("service.stopped")
    assert await ping_all(bus.nc, wait=0.1) == []


async def test_process_waiting_for_nats_still_stops_on_sigterm() -> None:
    env = {
        **os.environ,
        "NATS_URL": "nats://127.0.0.1:1",
        "LOG_FORMAT": "json",
        "PYTHONUNBUFFERED": "1",
        "METRICS_PORT": str(ops_port := free_port()),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.uploader",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdout is not None
    # Wait until it has tried (and failed) to connect at least once.
    while b"nats.connect_failed" not in await asyncio.wait_for(proc.stdout.readline(), 20):
        pass
    # Alive but not ready: a liveness probe must not restart a process that waits for NATS.
    async with httpx.AsyncClient(timeout=5) as http:
        assert (await http.get(f"http://127.0.0.1:{ops_port}/healthz")).status_code == 200
        assert (await http.get(f"http://127.0.0.1:{ops_port}/ready")).status_code == 503
    proc.send_signal(signal.SIGTERM)
    await asyncio.wait_for(proc.communicate(), 10)
    assert proc.returncode == 0
