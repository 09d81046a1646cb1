"""The client CLI as a user runs it (a subprocess), against a real gateway on a real port.

Gateway (uvicorn), recorder, scheduler and indexer on one real nats-server, the fake TikTok,
real ffmpeg. The CLI only ever talks HTTP to the gateway. Last, the follow loop alone against
scripted answers: a gateway that restarts, rate limits, or does not know the job.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import os
import re
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from services.gateway.app import create_app
from services.gateway.nats_link import NatsLink
from services.gateway.settings import GatewaySettings
from services.indexer.service import IndexerService
from services.indexer.settings import IndexerSettings
from services.notifier.service import NotifierService
from services.notifier.settings import NotifierSettings
from services.recorder.service import RecorderService
from services.recorder.settings import RecorderSettings
from services.scheduler.service import SchedulerService
from services.scheduler.settings import SchedulerSettings
from shared.bus import Bus
from shared.secrets import new_key
from tests.helpers import eventually, free_port
from tlr.client import postman
from tlr.client.api import ApiError, Unreachable
from tlr.client.progress import PATIENCE, PlainView, follow, human_bytes
from tlr.fake_tiktok import FakeTikTok
from tlr.nats_server import NatsServer

KEY = "k-cli"
ADMIN_KEY = "k-cli-admin"  # role=admin, as the dev key `tlr up` makes (the Postman run uses it)
FAKE_TIKTOK_OPTIONS = {"speed": 4.0}
# The CLI's own variables, dropped so the developer's environment cannot leak into a test.
CLI_ENV = ("TLR_API", "TLR_API_KEY", "TLR_VAR_DIR")


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: the fixture stops it."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass
class Run:
    code: int
    out: str
    err: str


@dataclass
class Gateway:
    url: str
    fake: FakeTikTok
    recordings: Path
    http: httpx.AsyncClient

    async def job(self, task_id: str) -> dict[str, Any]:
        r = await self.http.get(f"/jobs/{task_id}")
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CLI_ENV}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


async def start_tlr(
    *argv: str, env: dict[str, str], cwd: Path | None = None
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tlr.client",
        *argv,
        env=env,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def finish(proc: asyncio.subprocess.Process, timeout: float = 30) -> Run:
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(), err.decode())


@pytest.fixture
async def gateway(
    nats_server: NatsServer, bus: Bus, fake_tiktok: FakeTikTok, tmp_path: Path
) -> AsyncIterator[Gateway]:
    root = tmp_path / "recordings"
    nats_url = nats_server.client_url
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"ops {ADMIN_KEY} role=admin\n")
    secret = new_key()  # webhook targets are sealed (subscriptions)
    gw = GatewaySettings(
        api_keys=[KEY],
        api_keys_file=keys_file,
        nats_url=nats_url,
        rate_limit_per_min=100_000,
        secret_key=secret,
    )
    rec = RecorderSettings(
        nats_url=nats_url,
        instance_id="rec-1",
        recordings_dir=root,
        read_timeout=2.0,
        tiktok_web_base=fake_tiktok.base_url,
        tiktok_webcast_base=fake_tiktok.base_url,
        **fake_tiktok.egress_settings,
    )
    sched = SchedulerSettings(
        nats_url=nats_url,
        instance_id="sched-1",
        scheduler_db=tmp_path / "scheduler.sqlite3",
        tiktok_web_base=fake_tiktok.base_url,
        tiktok_webcast_base=fake_tiktok.base_url,
    )
    idx = IndexerSettings(
        nats_url=nats_url,
        instance_id="idx-1",
        recordings_dir=root,
        index_db=tmp_path / "index.sqlite3",
    )
    async with (
        NatsLink(gw) as link,
        RecorderService(bus, rec),
        SchedulerService(bus, sched),
        IndexerService(bus, idx),
        NotifierService(bus, NotifierSettings(nats_url=nats_url, secret_key=secret)),
    ):
        await link.wait_connected()
        port = free_port()
        config = uvicorn.Config(
            create_app(gw, link=link),
            host="127.0.0.1",
            port=port,
            log_config=None,
            access_log=False,
            lifespan="on",
        )
        server = _Server(config)
        serving = asyncio.create_task(server.serve())

        async def started() -> bool:
            return server.started

        await eventually(started, timeout=10)
        url = f"http://127.0.0.1:{port}"
        try:
            async with httpx.AsyncClient(base_url=url, headers={"X-API-Key": KEY}) as http:
                yield Gateway(url, fake_tiktok, root, http)
        finally:
            server.should_exit = True
            await serving


@pytest.fixture
def env(gateway: Gateway) -> dict[str, str]:
    """The CLI pointed at the gateway through its environment, as a user would set it."""
    return cli_env(TLR_API=gateway.url, TLR_API_KEY=KEY)


async def tlr(*argv: str, env: dict[str, str], cwd: Path | None = None) -> Run:
    return await finish(await start_tlr(*argv, env=env, cwd=cwd))


def task_id_of(run: Run) -> str:
    match = re.search(r"^task_id:\s+(\S+)$", run.out, re.MULTILINE)
    assert match, run.out
    return match.group(1)


async def test_record_then_follow_ends_with_the_live(gateway: Gateway, env: dict[str, str]) -> None:
    await gateway.fake.create_user("cleo")
    await gateway.fake.go_live("cleo", title="from the terminal")
    run = await tlr("record", "@cleo", "--quality", "hd", env=env)
    assert run.code == 0, run.err
    task_id = task_id_of(run)
    assert f"{gateway.url}/jobs/{task_id}" in run.out
    assert f"tlr jobs {task_id} --follow" in run.out

    follower = await start_tlr("jobs", task_id, "--follow", "--interval", "0.2", env=env)
    assert follower.stdout is not None
    seen: list[
        str
    ] = []  # the follower's lines until it shows the recording (stdout is a pipe: plain)
    while not seen or not seen[-1].startswith("STARTED "):
        line = await asyncio.wait_for(follower.stdout.readline(), 20)
        assert line, f"follow ended early: {seen}"
        seen.append(line.decode().rstrip("\n"))

    async def recording() -> bool:
        return bool((await gateway.job(task_id))["progress"]["segments"] > 0)

    await eventually(recording, timeout=20, interval=0.1)
    await gateway.fake.end("cleo")
    run = await finish(follower)
    assert run.code == 0, run.err
    job = await gateway.job(task_id)
    assert job["status"] == "SUCCESS"
    lines = [*seen, *run.out.splitlines()]
    assert [line.split()[0] for line in lines[:3]] in (
        ["STARTED", "SUCCESS", "task_id:"],
        ["PENDING", "STARTED", "SUCCESS"],
    ), lines
    last = next(line for line in lines if line.startswith("SUCCESS "))
    assert human_bytes(job["progress"]["bytes"]) in last
    assert re.search(r"\b0:00:\d\d\b", last), last  # the recorded duration
    assert "status:   SUCCESS" in run.out
    for path in job["result"]["files"]:
        assert path in run.out


async def test_record_follow_and_files_lists_what_was_recorded(
    gateway: Gateway, env: dict[str, str]
) -> None:
    await gateway.fake.create_user("fred")
    await gateway.fake.go_live("fred")
    run = await tlr(
        "record", "@fred", "--max-duration", "2", "--follow", "--interval", "0.2", env=env
    )
    assert run.code == 0, run.err
    task_id = task_id_of(run)
    files = (await gateway.job(task_id))["result"]["files"]
    assert files

    async def indexed() -> bool:
        r = await gateway.http.get("/files", params={"job_id": task_id})
        return bool(r.json()["total"] == len(files))

    await eventually(indexed, timeout=15)
    run = await tlr("files", "--url", "@fred", env=env)
    assert run.code == 0, run.err
    header, *rows, footer = run.out.splitlines()
    assert header.split()[:2] == ["WRITTEN", "(UTC)"]
    at = header.index("PATH")  # the last column: a path may hold spaces
    assert sorted(row[at:] for row in rows) == sorted(files)
    assert all("fred" in row for row in rows)
    assert footer == f"page 1 of 1, {len(files)} file{'s' if len(files) != 1 else ''}"

    run = await tlr("files", "--job-id", task_id, "--json", env=env)
    assert run.code == 0, run.err
    assert {i["path"] for i in json.loads(run.out)["items"]} == set(files)


async def test_cancel_makes_follow_exit_1(gateway: Gateway, env: dict[str, str]) -> None:
    await gateway.fake.create_user("cami")
    await gateway.fake.go_live("cami")
    task_id = task_id_of(await tlr("record", "@cami", env=env))

    async def recording() -> bool:
        return bool((await gateway.job(task_id))["progress"]["segments"] > 0)

    await eventually(recording, timeout=20, interval=0.1)
    run = await tlr("cancel", task_id, env=env)
    assert run.code == 0, run.err
    assert run.out.startswith(f"{task_id}: ")
    run = await tlr("jobs", task_id, "--follow", "--interval", "0.2", env=env)
    assert run.code == 1
    assert "CANCELLED" in run.out
    assert (await gateway.job(task_id))["status"] == "CANCELLED"

    # The list of jobs (GET /jobs), filtered by status, once the job index has it.
    async def listed() -> bool:
        r = await gateway.http.get("/jobs", params={"status": "CANCELLED"})
        return task_id in [j["task_id"] for j in r.json()["items"]]

    await eventually(listed, timeout=15)
    run = await tlr("jobs", "--status", "CANCELLED", "--status", "FAILURE", env=env)
    assert run.code == 0, run.err
    header, *rows, footer = run.out.splitlines()
    assert header.split()[:3] == ["ASKED", "(UTC)", "STATUS"]
    assert [row.split()[-1] for row in rows] == [task_id]
    assert rows[0].split()[2:4] == ["CANCELLED", "recording"]
    assert footer == "no more jobs"
    run = await tlr("jobs", "--status", "SUCCESS", "--json", env=env)
    assert run.code == 0, run.err
    assert task_id not in [j["task_id"] for j in json.loads(run.out)["items"]]


async def test_watch_creates_a_watcher_and_unwatch_deletes_it(
    gateway: Gateway, env: dict[str, str]
) -> None:
    await gateway.fake.create_user("wendy")
    run = await tlr("watch", "https://www.tiktok.com/@wendy/live", "--poll-interval", "30", env=env)
    assert run.code == 0, run.err
    task_id = task_id_of(run)

    async def registered() -> bool:
        r = await gateway.http.get("/watchers")
        return bool([w["key"] for w in r.json()["items"]] == ["@wendy"])

    await eventually(registered, timeout=15)
    run = await tlr("watchers", env=env)
    assert run.code == 0, run.err
    header, row, footer = run.out.splitlines()
    assert header.split()[:2] == ["KEY", "STATUS"]
    assert row.split()[:2] == ["@wendy", "active"]
    assert row.split()[-1] == task_id
    assert footer == "page 1 of 1, 1 watcher"

    run = await tlr("watch", "@wendy", env=env)
    assert run.code == 1
    assert "CONFLICT" in run.err

    run = await tlr("unwatch", "@wendy", env=env)
    assert run.code == 0, run.err

    async def gone() -> bool:
        r = await gateway.http.get("/watchers/@wendy")
        return r.status_code == 404 or bool(r.json()["status"] == "deleted")

    await eventually(gone, timeout=15)


async def test_watch_from_a_file_then_export_and_import_the_export(
    gateway: Gateway, env: dict[str, str], tmp_path: Path
) -> None:
    listing = tmp_path / "watch.txt"
    listing.write_text("@ann\n# a comment\n\nhttps://www.tiktok.com/@ben/live\nnot a target!\n")
    run = await tlr("watch", "--from-file", str(listing), "--poll-interval", "30", env=env)
    assert run.code == 1  # one line refused: the others are made all the same
    assert run.out.strip() == "2 watchers made, 1 refused"
    assert "line 5" in run.err
    assert "VALIDATION_ERROR" in run.err

    async def registered() -> bool:
        r = await gateway.http.get("/watchers")
        return len(r.json()["items"]) == 2

    await eventually(registered, timeout=15)
    run = await tlr("watchers", "--export", "--format", "csv", env=env)
    assert run.code == 0, run.err
    rows = list(csv.DictReader(io.StringIO(run.out)))
    assert sorted((r["url"], r["poll_interval"]) for r in rows) == [
        ("@ann", "30"),
        ("https://www.tiktok.com/@ben/live", "30"),
    ]
    for fmt in ("csv", "json"):
        run = await tlr("watchers", "--export", "--format", fmt, env=env)
        exported = tmp_path / f"watchers.{fmt}"
        exported.write_text(run.out)
        # Read back as the same two watchers: both are watched already.
        run = await tlr("watch", "--from-file", str(exported), "--json", env=env)
        assert run.code == 1
        results = json.loads(run.out)["results"]
        assert sorted((r["key"], r["error_code"]) for r in results) == [
            ("@ann", "CONFLICT"),
            ("@ben", "CONFLICT"),
        ]


async def test_api_errors_exit_1_with_the_error_code(env: dict[str, str]) -> None:
    run = await tlr("record", "https://evil.example/@alice/live", env=env)
    assert run.code == 1
    assert run.out == ""
    assert "VALIDATION_ERROR" in run.err
    assert "HTTP 422" in run.err
    assert "correlation id:" in run.err

    run = await tlr("jobs", "0b9e3f4e-0000-4000-8000-000000000000", env=env)
    assert run.code == 1
    assert "NOT_FOUND" in run.err

    run = await tlr("record", "@alice", "--quality", "8k", env=env)
    assert run.code == 2  # refused by the CLI: usage
    assert "invalid choice" in run.err


async def test_api_key_from_flag_env_or_dev_key_file(gateway: Gateway, tmp_path: Path) -> None:
    bare = cli_env(TLR_API=gateway.url)
    run = await tlr("watchers", env=bare, cwd=tmp_path)
    assert run.code == 2
    assert "no API key" in run.err
    assert "TLR_API_KEY" in run.err

    run = await tlr("watchers", "--api-key", "wrong", env=bare, cwd=tmp_path)
    assert run.code == 1
    assert "FORBIDDEN" in run.err

    # `tlr up` writes var/dev-api-key; the CLI finds it from the same folder.
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "dev-api-key").write_text(KEY + "\n")
    run = await tlr("watchers", env=bare, cwd=tmp_path)
    assert run.code == 0, run.err
    assert run.out.splitlines()[-1] == "page 1 of 1, 0 watchers"


async def test_unreachable_api_exits_3_with_a_hint(tmp_path: Path) -> None:
    env = cli_env(TLR_API=f"http://127.0.0.1:{free_port()}", TLR_API_KEY=KEY)
    run = await tlr("jobs", "abc", env=env, cwd=tmp_path)
    assert run.code == 3
    assert "cannot reach the API" in run.err
    assert "make run" in run.err


async def test_postman_collection_runs_against_the_gateway(gateway: Gateway) -> None:
    """Every request of the collection, as Postman would send it with the dev stack's (admin)
    key: none is malformed (400, 401, 415, 422) or breaks the server; unknown names are 404;
    the bodies are accepted."""
    collection = json.loads(postman.render())
    variables = {v["key"]: v["value"] for v in collection["variable"]}
    variables.update(baseUrl=gateway.url, apiKey=ADMIN_KEY)

    def fill(text: str) -> str:
        return re.sub(r"\{\{(\w+)\}\}", lambda m: variables[m.group(1)], text)

    items = [r for folder in collection["item"] for r in folder["item"]]
    async with httpx.AsyncClient() as http:
        for item in items:
            request = item["request"]
            url = request["url"]
            path = "/".join(fill(variables[s[1:]]) if s.startswith(":") else s for s in url["path"])
            headers = {h["key"]: h["value"] for h in request["header"]}
            if "auth" not in request:  # the collection's apikey auth
                headers["X-API-Key"] = ADMIN_KEY
            r = await http.request(
                request["method"],
                f"{gateway.url}/{path}",
                params={
                    q["key"]: q["value"] for q in url.get("query", []) if not q.get("disabled")
                },
                headers=headers,
                content=request.get("body", {}).get("raw"),
            )
            where = f"{request['method']} {path}"
            if "body" in request:  # accepted (a command) or made at once (a subscription)
                assert r.status_code in (201, 202), f"{where}: {r.text}"
            else:
                assert r.status_code in (200, 202, 404), f"{where}: {r.text}"
            for event in item.get("event", []):  # the scripts keep task_id
                for line in event["script"]["exec"]:
                    if m := re.search(r"set\('(\w+)', pm\.response\.json\(\)\.(\w+)\)", line):
                        variables[m.group(1)] = r.json()[m.group(2)]
    assert variables["task_id"]


class Script:
    """GET /jobs answers in order (an exception is raised), on a clock only sleep advances."""

    def __init__(self, *answers: dict[str, Any] | Exception) -> None:
        self.answers = list(answers)
        self.now = 0.0
        self.slept: list[float] = []

    def fetch(self) -> dict[str, Any]:
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds

    def follow(self, out: io.StringIO) -> dict[str, Any]:
        return follow(
            self.fetch,
            PlainView(out, clock=lambda: self.now),
            sleep=self.sleep,
            clock=lambda: self.now,
        )


def job(status: str, size: int = 0) -> dict[str, Any]:
    return {"status": status, "progress": {"bytes": size}, "result": {}}


def test_follow_waits_out_a_gateway_restart_and_rate_limits() -> None:
    script = Script(
        job("STARTED", 1000),
        Unreachable("http://gw", "connection refused"),
        ApiError(503, "SERVICE_UNAVAILABLE", "NATS is not connected"),
        job("STARTED", 2000),
        ApiError(429, "RATE_LIMITED", "slow down", retry_after=7),
        job("SUCCESS", 3000),
    )
    out = io.StringIO()
    assert script.follow(out)["status"] == "SUCCESS"
    assert script.slept == [1.0, 1.0, 1.0, 1.0, 7.0]  # Retry-After is honoured
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("STARTED   1.0 kB")
    assert lines[1].startswith("waiting for the API: cannot reach the API at http://gw")
    assert lines[2] == "the API answers again"
    assert lines[-1].startswith("SUCCESS   3.0 kB")


def test_follow_gives_up_when_the_gateway_stays_away() -> None:
    script = Script(job("STARTED"), Unreachable("http://gw", "connection refused"))
    with pytest.raises(Unreachable):
        script.follow(io.StringIO())
    assert script.now == pytest.approx(PATIENCE + 1, abs=1)


def test_follow_stops_at_once_on_an_unknown_job() -> None:
    script = Script(ApiError(404, "NOT_FOUND", "no such job"))
    with pytest.raises(ApiError):
        script.follow(io.StringIO())
    assert script.slept == []
