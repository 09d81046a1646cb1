"""The tlr-cli engine: jobs recorded by the upstream CLI run as a subprocess, through the
gateway, a real nats-server, real ffmpeg and the fake TikTok.

The CLI is the stand-in in tests/cli_standin unless TLR_ROOT names a checkout of the real
one (Michele0303/tiktok-live-recorder), run by TLR_PYTHON (default: its .venv/bin/python,
else this interpreter); docs/runbook.md section 17 says how. Either reaches the fake
through tests/cli_standin/site/sitecustomize.py (TikTok hosts rewritten, nothing else).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from services.gateway.app import create_app
from services.gateway.nats_link import NatsLink
from services.gateway.settings import GatewaySettings
from services.recorder.engines.checkout import read_commit
from services.recorder.engines.process_group import group_alive
from services.recorder.service import RecorderService
from services.recorder.settings import RecorderSettings
from services.scheduler.service import SchedulerService
from services.scheduler.settings import SchedulerSettings
from shared.bus import Bus
from shared.micro import ping_all
from shared.secrets import new_key
from tests.helpers import JobsApi, decode_errors, eventually
from tlr.fake_tiktok import FakeTikTok
from tlr.nats_server import NatsServer

KEY = "k-tlr-cli"
FAKE_TIKTOK_OPTIONS = {"speed": 4.0}
STANDIN = Path(__file__).resolve().parents[1] / "cli_standin"
REAL_ROOT = os.environ.get("TLR_ROOT")
ROOT = Path(REAL_ROOT) if REAL_ROOT else STANDIN
PYTHON = Path(os.environ["TLR_PYTHON"]) if os.environ.get("TLR_PYTHON") else None
CLI = {"engine": "tlr-cli"}


class Stack(JobsApi):
    def __init__(self, client: httpx.AsyncClient, fake: FakeTikTok, recordings: Path) -> None:
        super().__init__(client, KEY)
        self.fake = fake
        self.recordings = recordings

    async def segments(self, task_id: str) -> int:
        return int((await self.job(task_id))["progress"]["segments"])

    async def wait_segments(self, task_id: str, n: int, timeout: float = 20) -> None:
        async def enough() -> bool:
            return await self.segments(task_id) >= n

        await eventually(enough, timeout=timeout, interval=0.1)

    def files(self, job: dict[str, Any]) -> list[Path]:
        return [self.recordings / f for f in job["result"]["files"]]


def settings(nats_url: str, fake: FakeTikTok, tmp: Path, secret: str, **extra: Any) -> Any:
    values: dict[str, Any] = {
        "nats_url": nats_url,
        "instance_id": "rec-tlr",
        "recordings_dir": tmp / "recordings",
        "cookies_dir": tmp / "cookies",
        "tiktok_web_base": fake.base_url,
        "tiktok_webcast_base": fake.base_url,
        "secret_key": secret,
        "read_timeout": 1.0,
        "tlr_stall_factor": 3.0,
        "tlr_root": ROOT,
        "tlr_python": PYTHON,
        "tlr_pass_env": "PYTHONPATH,TLR_FAKE_TIKTOK_BASE",
        **fake.egress_settings,
    }
    values.update(extra)
    return RecorderSettings(**values)


@pytest.fixture
async def make_stack(
    nats_server: NatsServer,
    bus: Bus,
    fake_tiktok: FakeTikTok,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Any:
    """A gateway and a recorder with the given recorder settings (``async with``)."""
    monkeypatch.setenv("PYTHONPATH", str(STANDIN / "site"))
    monkeypatch.setenv("TLR_FAKE_TIKTOK_BASE", fake_tiktok.base_url)
    # Both CLIs take the best rung's main URL and have no fallback (bench/upstream_compare.py).
    await fake_tiktok.set_scenario(dead_top_rung=False)
    secret = new_key()
    (tmp_path / "cookies").mkdir()

    @asynccontextmanager
    async def make(*, scheduler: bool = False, **extra: Any) -> AsyncIterator[Stack]:
        gw = GatewaySettings(
            api_keys=[KEY],
            nats_url=nats_server.client_url,
            secret_key=secret,
            rate_limit_per_min=100_000,
        )
        rec = settings(nats_server.client_url, fake_tiktok, tmp_path, secret, **extra)
        sched = SchedulerSettings(
            nats_url=nats_server.client_url,
            instance_id="sched-tlr",
            scheduler_db=tmp_path / "scheduler.sqlite3",
            tiktok_web_base=fake_tiktok.base_url,
            tiktok_webcast_base=fake_tiktok.base_url,
            secret_key=secret,
        )
        async with contextlib.AsyncExitStack() as services:
            link = await services.enter_async_context(NatsLink(gw))
            await services.enter_async_context(RecorderService(bus, rec))
            if scheduler:
                await services.enter_async_context(SchedulerService(bus, sched))
            await link.wait_connected()
            transport = httpx.ASGITransport(app=create_app(gw, link=link))
            async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
                yield Stack(client, fake_tiktok, rec.recordings_dir)

    return make


def cli_pids(logs: list[dict[str, Any]]) -> list[int]:
    return [e["pid"] for e in logs if e.get("event") == "recorder.cli_started"]


def assert_all_decode(stack: Stack, job: dict[str, Any]) -> list[Path]:
    files = stack.files(job)
    assert files
    for f in files:
        assert f.suffix == ".mp4"
        assert f.resolve().is_relative_to(stack.recordings.resolve())
        assert decode_errors(f) == "", f
    return files


async def test_a_reconnect_and_a_resolution_change_become_playable_files(
    make_stack: Any,
) -> None:
    async with make_stack() as stack:
        await stack.fake.create_user("cli_alice")
        live = await stack.fake.go_live("cli_alice", profile="h264_360p")
        task_id = await stack.record(room_id=live.room_id, options=CLI)
        await stack.wait_segments(task_id, 1)
        await stack.fake.switch(live.stream_id, "h264_540p")  # new sequence headers mid-file
        await stack.wait_segments(task_id, 2)
        await stack.fake.drop(live.stream_id, after_bytes=0, mode="reset")  # it reconnects
        await stack.wait_segments(task_id, 3)
        await stack.fake.end("cli_alice", mode="eof")
        job = await stack.wait(task_id, "SUCCESS", "FAILURE", timeout=30)
        assert job["status"] == "SUCCESS", job
        # Its one file held a second FLV header and two resolutions: split, each part plays.
        assert job["progress"]["reconnects"] >= 1
        assert len(assert_all_decode(stack, job)) >= 3
        assert job["progress"]["engine"] == "tlr-cli"


async def test_a_stalled_socket_does_not_hang_the_job(make_stack: Any) -> None:
    async with make_stack() as stack:
        await stack.fake.create_user("cli_bob")
        live = await stack.fake.go_live("cli_bob")
        with capture_logs() as logs:
            task_id = await stack.record(room_id=live.room_id, options=CLI)
            await stack.wait_segments(task_id, 1)
            await stack.fake.drop(live.stream_id, after_bytes=0, mode="stall")
            # The watchdog kills the hung CLI and runs it again: the live goes on recording.
            await stack.wait_segments(task_id, 2, timeout=30)
            await stack.fake.end("cli_bob", mode="eof")
            job = await stack.wait(task_id, "SUCCESS", "FAILURE", timeout=30)
        assert job["status"] == "SUCCESS", job
        assert job["progress"]["stalls"] >= 1
        assert_all_decode(stack, job)
        pids = cli_pids(logs)
        assert len(pids) >= 2
        assert not any(group_alive(pid) for pid in pids)


async def test_cancel_keeps_the_partial_output_and_leaves_no_process(make_stack: Any) -> None:
    async with make_stack() as stack:
        await stack.fake.create_user("cli_carol")
        live = await stack.fake.go_live("cli_carol")
        with capture_logs() as logs:
            task_id = await stack.record(room_id=live.room_id, options=CLI)
            await stack.wait_segments(task_id, 1)
            r = await stack.client.delete(f"/jobs/{task_id}", headers=stack.headers)
            assert r.status_code == 202
            job = await stack.wait(task_id, "CANCELLED", timeout=20)
        assert job["error_code"] == "CANCELLED"
        assert_all_decode(stack, job)
        pids = cli_pids(logs)
        assert pids
        assert not any(group_alive(pid) for pid in pids)
        # Nothing of the run is left: its folder under RECORDINGS_DIR is gone.
        assert not any((stack.recordings / ".tlr-cli").iterdir())


async def test_a_failure_it_exits_0_on_gets_the_error_code_its_log_names(make_stack: Any) -> None:
    async with make_stack() as stack:
        await stack.fake.create_user("cli_dave")
        await stack.fake.go_live("cli_dave")
        # room/info answers 4003110 to everyone: our client records from the live page, the
        # CLI cannot find the room's host, logs so and exits 0.
        await stack.fake.set_scenario(room_info_restricted=True)
        task_id = await stack.record(url="@cli_dave", duration=5, options=CLI)
        job = await stack.wait(task_id, "SUCCESS", "FAILURE", timeout=30)
        assert job["status"] == "FAILURE", job
        assert job["error_code"] == "USER_NOT_FOUND"
        assert job["result"]["files"] == []


async def test_a_cli_that_exits_non_zero_fails_the_job(make_stack: Any, tmp_path: Path) -> None:
    broken = tmp_path / "broken-checkout"
    (broken / "src").mkdir(parents=True)
    (broken / "src" / "main.py").write_text('raise RuntimeError("a half-pulled upgrade")\n')
    async with make_stack(tlr_root=broken, tlr_python=None) as stack:
        await stack.fake.create_user("cli_erin")
        live = await stack.fake.go_live("cli_erin")
        task_id = await stack.record(room_id=live.room_id, duration=5, options=CLI)
        job = await stack.wait(task_id, "SUCCESS", "FAILURE", timeout=30)
        assert job["status"] == "FAILURE", job
        assert job["error_code"] == "RECORDER_EXIT_NONZERO"


@pytest.mark.parametrize("engine", ["native", "tlr-cli"])
async def test_without_ffmpeg_a_job_fails_with_ffmpeg_missing(make_stack: Any, engine: str) -> None:
    async with make_stack(ffmpeg_bin="/nonexistent/ffmpeg") as stack:
        await stack.fake.create_user("cli_frank")
        live = await stack.fake.go_live("cli_frank")
        task_id = await stack.record(room_id=live.room_id, options={"engine": engine})
        job = await stack.wait(task_id, "SUCCESS", "FAILURE", timeout=30)
        assert job["status"] == "FAILURE", job
        assert job["error_code"] == "FFMPEG_MISSING"


async def test_a_checkout_off_its_pin_is_refused(make_stack: Any) -> None:
    async with make_stack(tlr_pin="0123456789abcdef") as stack:
        await stack.fake.create_user("cli_gina")
        live = await stack.fake.go_live("cli_gina")
        task_id = await stack.record(room_id=live.room_id, options=CLI)
        job = await stack.wait(task_id, "SUCCESS", "FAILURE", timeout=30)
        assert job["error_code"] == "ENGINE_PIN_MISMATCH"
        assert "TLR_PIN" in job["error_message"]


async def test_the_commit_it_runs_shows_in_the_job_and_in_services(
    make_stack: Any, bus: Bus, tmp_path: Path
) -> None:
    root = ROOT
    if not REAL_ROOT:  # the stand-in as a checkout at a commit
        root = tmp_path / "checkout"
        shutil.copytree(STANDIN, root, ignore=shutil.ignore_patterns("__pycache__"))
        (root / ".git").mkdir()
        (root / ".git" / "HEAD").write_text("5eea05a7a50e3d7a28fb0e6ca1985d2bbb9e9372\n")
    commit = read_commit(root)
    assert commit is not None
    async with make_stack(tlr_root=root, tlr_pin=commit[:7]) as stack:
        recorders = [r for r in await ping_all(bus.nc) if r.get("name") == "recorder"]
        assert [r["metadata"]["upstream_commit"] for r in recorders] == [commit]
        assert recorders[0]["metadata"]["upstream_pin"] == "match"
        await stack.fake.create_user("cli_hank")
        live = await stack.fake.go_live("cli_hank")
        task_id = await stack.record(room_id=live.room_id, duration=3, options=CLI)
        job = await stack.wait(task_id, "SUCCESS", "FAILURE", timeout=30)
        assert job["status"] == "SUCCESS", job
        assert (job["progress"]["engine"], job["progress"]["engine_commit"]) == ("tlr-cli", commit)
        assert_all_decode(stack, job)


async def test_a_watcher_records_its_lives_with_the_engine_it_names(make_stack: Any) -> None:
    async with make_stack(scheduler=True) as stack:
        await stack.fake.create_user("cli_ivy")
        live = await stack.fake.go_live("cli_ivy")
        r = await stack.client.post(
            "/watchers",
            json={"room_id": live.room_id, "poll_interval": 10, "options": CLI},
            headers=stack.headers,
        )
        assert r.status_code == 202, r.text

        async def watcher() -> dict[str, Any]:
            r = await stack.client.get(f"/watchers/{live.room_id}", headers=stack.headers)
            return dict(r.json()) if r.status_code == 200 else {}

        async def recording() -> bool:
            w = await watcher()
            return bool(w.get("current_job_id")) and await stack.segments(w["current_job_id"]) > 0

        await eventually(recording, timeout=30, interval=0.1)
        w = await watcher()
        assert w["options"]["engine"] == "tlr-cli"
        await stack.fake.end("cli_ivy", mode="eof")
        job = await stack.wait(w["current_job_id"], "SUCCESS", "FAILURE", timeout=30)
        assert job["status"] == "SUCCESS", job
        assert job["progress"]["engine"] == "tlr-cli"
        assert_all_decode(stack, job)


async def test_an_unknown_engine_is_refused_at_the_gateway(make_stack: Any) -> None:
    async with make_stack() as stack:
        r = await stack.client.post(
            "/recordings",
            json={"room_id": "7503448765740976902", "options": {"engine": "ffmpeg; rm -rf /"}},
            headers=stack.headers,
        )
        assert r.status_code == 422
        assert r.json()["error_code"] == "VALIDATION_ERROR"
