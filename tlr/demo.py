"""``tlr demo``: the whole path on one machine with no internet, narrated.

The fake TikTok (``tlr.fake_tiktok``) and an S3 server (moto, a dev dependency) start as child
processes, ``tlr up``'s stack starts on free ports (all three: :mod:`tlr.demo_stack`), and then
the demo acts as a user would over the REST API: it registers a watcher, makes the fake host go
live for ~20 s, follows the job, lists the files, checks that every MP4 decodes, and shows what
each service's ``/metrics`` saw.
Everything lives under ``var/demo/`` (wiped at the next run); the services' logs go to
``var/demo/stack.log``.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from shared.events import utc_now
from shared.runtime import stop_on_signals
from shared.watchers import watcher_key
from tlr.demo_stack import HOST, DemoFailed, demo_stack, pick_ports, poll_until, prepare

LIVE_SECONDS = 20.0
POLL_INTERVAL = 10  # the smallest the API accepts
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


def _say(text: str = "") -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


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
        prepare(self.var_dir)
        log_path = self.var_dir / "stack.log"
        with log_path.open("ab") as log:
            _say(f"Starting the fake TikTok, an S3 server and the stack (logs: {log_path}) ...")
            async with demo_stack(self.ports, self.var_dir, log) as stack:
                self.s3 = stack.s3
                story = self._story(stack.api_key, stack.fake)
                return await self._race(stop, stack.running, story)

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

        await poll_until("the API to be ready", ready)
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

        job_id = await poll_until(
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

        job = await poll_until("the recording to finish", finished)
        if self.s3:

            async def uploaded() -> dict[str, Any] | None:
                job = _json(await api.get(f"/jobs/{job_id}"))
                upload = job.get("upload") or {}
                return job if upload.get("state") in ("SUCCESS", "FAILURE") else None

            job = await poll_until("the upload to S3", uploaded)
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

        files = await poll_until("the files to be indexed", listed)
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
