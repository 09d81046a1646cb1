"""``tlr demo``: the whole path on one machine with no internet, narrated.

The fake TikTok (``tlr.fake_tiktok``) and an S3 server (moto, a dev dependency) start as child
processes, ``tlr up``'s stack starts on free ports, and then the demo acts as a user would over
the REST API: it registers a watcher, makes the fake host go live for ~20 s, follows the job,
lists the files, checks that every MP4 decodes, and shows what each service's ``/metrics`` saw.
Everything lives under ``var/demo/`` (wiped at the next run); the services' logs go to
``var/demo/stack.log``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any, TypeVar

import httpx
from prometheus_client.parser import text_string_to_metric_families

from shared.events import utc_now
from shared.runtime import stop_on_signals
from shared.watchers import watcher_key
from tlr.devstack import DevStackSettings, up
from tlr.nats_server import die_with_parent

T = TypeVar("T")

HOST = "tlr_demo"
LIVE_SECONDS = 20.0
POLL_INTERVAL = 10  # the smallest the API accepts
BUCKET = "tlr-demo"
MARKER = ".tlr-demo"
STEP_TIMEOUT = 90.0
# What each service's /metrics should show after the demo (all must be non-zero).
KEY_METRICS: dict[str, tuple[str, ...]] = {
    "gateway": ("tlr_http_requests_total", "tlr_jobs_total"),
    "scheduler": (
        "tlr_watchers_active",
        "tlr_tiktok_requests_total",
        "tlr_jobs_total",
        "tlr_scheduler_detection_seconds_count",
    ),
    "recorder": (
        "tlr_recorder_bytes_total",
        "tlr_recordings_success_total",
        "tlr_recorder_segments_total",
    ),
    "uploader": ("tlr_uploader_bytes_total", "tlr_uploader_file_seconds_count"),
    "indexer": ("tlr_indexer_files", "tlr_disk_bytes_free"),
}


class DemoFailed(Exception):
    """A step of the demo did not happen in time; the message says which."""


@dataclass(frozen=True)
class Ports:
    gateway: int
    nats: int
    nats_monitor: int
    metrics_base: int  # scheduler, recorder, uploader, indexer: base .. base+3
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
    while not all(_bindable(p) for p in range(base, base + 4)):
        base += 4
    taken.update(range(base, base + 4))
    return Ports(one(), one(), one(), base, one(), one())


def _say(text: str = "") -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


async def _until(
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


def _prepare(var_dir: Path) -> None:
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

    await _until("the S3 server to listen", listening, timeout=30)
    return proc


def _stack_env(ports: Ports, var_dir: Path, fake: str, s3: bool) -> dict[str, str]:
    env = {
        "TIKTOK_WEB_BASE": fake,
        "TIKTOK_WEBCAST_BASE": fake,
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


def _sum_samples(text: str, name: str) -> float:
    """Sum of every sample of ``name`` (all label sets) in Prometheus text."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    )


class Demo:
    """One run: start everything, act as a user, report, stop everything."""

    def __init__(self, var_dir: Path, *, keep: bool) -> None:
        self.var_dir = var_dir.resolve()
        self.keep = keep
        self.ports = pick_ports()
        self.api = f"http://127.0.0.1:{self.ports.gateway}"
        self.s3 = False

    async def run(self, stop: asyncio.Event) -> int:
        _prepare(self.var_dir)
        log_path = self.var_dir / "stack.log"
        procs: list[subprocess.Popen[bytes]] = []
        with log_path.open("ab") as log:
            try:
                _say(f"Starting the fake TikTok, an S3 server and the stack (logs: {log_path}) ...")
                procs.append(await _start_fake(self.ports, self.var_dir, log))
                fake = f"http://127.0.0.1:{self.ports.fake}"
                s3_proc = await _start_s3(self.ports, log)
                if s3_proc is not None:
                    procs.append(s3_proc)
                    self.s3 = True
                env = _stack_env(self.ports, self.var_dir, fake, self.s3)
                os.environ.update(env)  # the stack's children inherit this process's environment
                stack = DevStackSettings(
                    var_dir=self.var_dir / "stack",
                    nats_port=self.ports.nats,
                    nats_monitor_port=self.ports.nats_monitor,
                    metrics_port_base=self.ports.metrics_base,
                )
                stack_stop = asyncio.Event()
                running = asyncio.create_task(up(stack, stop=stack_stop, output=log))
                try:
                    return await self._race(stop, running, self._story(env["API_KEYS"], fake))
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

    async def _race(
        self, stop: asyncio.Event, running: asyncio.Task[int], story: Awaitable[int]
    ) -> int:
        """The story, unless Ctrl-C comes first or the stack itself ends."""
        told = asyncio.ensure_future(story)
        stopped = asyncio.create_task(stop.wait())
        try:
            done, _ = await asyncio.wait(
                {told, stopped, running}, return_when=asyncio.FIRST_COMPLETED
            )
            if told in done:
                code = told.result()
                if code == 0 and self.keep:
                    _say(f"\nThe stack keeps running: {self.api}/docs  (Ctrl-C stops it)")
                    await stop.wait()
                return code
            _say("stopped before the end of the demo")
            return 130 if stopped in done else 1
        finally:
            told.cancel()
            stopped.cancel()

    async def _story(self, key: str, fake: str) -> int:
        headers = {"X-API-Key": key}
        async with (
            httpx.AsyncClient(base_url=self.api, headers=headers, timeout=10) as api,
            httpx.AsyncClient(base_url=fake, timeout=10) as tiktok,
        ):
            try:
                await self._tell(api, tiktok)
            except DemoFailed as exc:
                _say(f"\nDEMO FAILED: {exc}\nThe services' logs are in {self.var_dir}/stack.log")
                return 1
        return 0

    async def _tell(self, api: httpx.AsyncClient, tiktok: httpx.AsyncClient) -> None:
        async def ready() -> bool | None:
            return True if (await api.get("/ready")).status_code == 200 else None

        await _until("the API to be ready", ready)
        _say(f"API ready at {self.api} (key in this process only)\n")

        body: dict[str, Any] = {
            "url": f"@{HOST}",
            "poll_interval": POLL_INTERVAL,
            "options": {"upload_s3": self.s3},
        }
        _say(f"1. Watch @{HOST}:  POST /watchers {json.dumps(body)}")
        accepted = _json(await api.post("/watchers", json=body))
        key = watcher_key(None, body["url"])
        _say(f"   watcher {key!r}, watch job {accepted['task_id']}")

        _say(f"2. @{HOST} goes live on the fake TikTok")
        _json(await tiktok.post(f"/__fake/users/{HOST}/live", json={"title": "tlr demo"}))

        async def recording_job() -> str | None:
            current = _json(await api.get(f"/watchers/{key}")).get("current_job_id")
            if current and _json(await api.get(f"/jobs/{current}"))["status"] == "STARTED":
                return str(current)
            return None

        job_id = await _until(
            "the watcher to detect the live and a recorder to start", recording_job
        )
        _say(f"3. Live detected; recording job {job_id} STARTED. Recording ~{LIVE_SECONDS:.0f} s:")
        loop = asyncio.get_running_loop()
        until = loop.time() + LIVE_SECONDS
        while loop.time() < until:
            await asyncio.sleep(2)
            job = _json(await api.get(f"/jobs/{job_id}"))
            mb = job["progress"]["bytes"] / 1e6
            started = job["result"].get("started_at")
            elapsed = (
                (utc_now() - datetime.fromisoformat(started)).total_seconds() if started else 0
            )
            _say(f"   {job['status']:8} {mb:6.2f} MB  {elapsed:5.1f} s")

        _say(f"4. @{HOST} ends the live")
        _json(await tiktok.post(f"/__fake/users/{HOST}/end", json={"mode": "eof"}))

        async def finished() -> dict[str, Any] | None:
            job = _json(await api.get(f"/jobs/{job_id}"))
            return job if job["status"] in ("SUCCESS", "FAILURE", "CANCELLED") else None

        job = await _until("the recording to finish", finished)
        if self.s3:

            async def uploaded() -> dict[str, Any] | None:
                job = _json(await api.get(f"/jobs/{job_id}"))
                upload = job.get("upload") or {}
                return job if upload.get("state") in ("SUCCESS", "FAILURE") else None

            job = await _until("the upload to S3", uploaded)
        _say(f"\nGET /jobs/{job_id}\n{json.dumps(job, indent=2)}")
        cid = job.get("correlation_id")
        _say(f"   Every service logged this job with correlation_id {cid}:")
        _say(f"   grep {cid} {self.var_dir}/stack.log")
        if job["status"] != "SUCCESS":
            msg = f"the recording ended {job['status']}: {job.get('error_code')}"
            raise DemoFailed(msg)

        async def listed() -> list[dict[str, Any]] | None:
            page = _json(await api.get("/files", params={"job_id": job_id}))
            items = page["items"]
            if items and (not self.s3 or all(i.get("s3") for i in items)):
                return list(items)
            return None

        files = await _until("the files to be indexed", listed)
        _say(f"\nGET /files?job_id={job_id}")
        await self._show_files(files)
        await self._show_metrics(api)

    async def _show_files(self, files: list[dict[str, Any]]) -> None:
        from services.recorder.ffmpeg import ffmpeg_binary, run_ffmpeg

        root = self.var_dir / "stack" / "recordings"
        playable = 0
        for item in files:
            path = root / item["path"]
            verdict = "missing"
            if path.is_file():
                argv = [ffmpeg_binary(), "-hide_banner", "-nostdin", "-v", "error"]
                argv += ["-i", str(path), "-f", "null", "-"]
                run = await run_ffmpeg(argv, timeout=60)
                ok = run.returncode == 0 and not run.stderr.strip()
                verdict = "plays (decoded without an error)" if ok else "DOES NOT DECODE"
                playable += ok and path.suffix == ".mp4"
            s3 = item.get("s3") or {}
            where = f"  s3://{s3['bucket']}/{s3['key']}" if s3 else ""
            _say(f"   {item['path']}  {item['size']:,} B  {item.get('duration_s')} s  {verdict}")
            if where:
                _say(f"  {where}")
        if not playable:
            msg = "no playable MP4 was listed by /files"
            raise DemoFailed(msg)
        _say(f"   {playable} playable MP4 file(s) under {root}")

    async def _show_metrics(self, api: httpx.AsyncClient) -> None:
        _say("\nWhat Prometheus sees (curl <service>/metrics):")
        ports = {
            "gateway": self.ports.gateway,
            "scheduler": self.ports.metrics_base,
            "recorder": self.ports.metrics_base + 1,
            "uploader": self.ports.metrics_base + 2,
            "indexer": self.ports.metrics_base + 3,
        }
        zero = []
        for service, port in ports.items():
            if service == "uploader" and not self.s3:
                continue
            url = f"http://127.0.0.1:{port}/metrics"
            text = (await api.get(url)).text
            values = {m: _sum_samples(text, m) for m in KEY_METRICS[service]}
            zero += [f"{service}: {m}" for m, v in values.items() if not v]
            figures = ", ".join(f"{m}={v:g}" for m, v in values.items())
            _say(f"   {service:9} {url}\n             {figures}")
        if zero:
            msg = f"metrics still at zero after the demo: {', '.join(zero)}"
            raise DemoFailed(msg)


def _json(response: httpx.Response) -> Any:
    if not response.is_success:
        msg = f"{response.request.method} {response.request.url.path}: {response.status_code} "
        raise DemoFailed(msg + response.text[:300])
    return response.json()


async def demo(var_dir: Path, *, keep: bool = False) -> int:
    """Run the demo; 0 when at least one playable MP4 was recorded, indexed and listed."""
    stop = asyncio.Event()
    stop_on_signals(stop)
    try:
        return await Demo(var_dir, keep=keep).run(stop)
    except DemoFailed as exc:
        _say(f"DEMO FAILED: {exc}")
        return 1
