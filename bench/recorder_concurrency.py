"""Recorder density: N concurrent recordings of a ~2 Mbit/s live in ONE recorder process.

Starts a nats-server, the fake TikTok (its own process, N live users) and one recorder
process (`python -m services.recorder`), asks for N recordings through NATS, waits until all
of them write, then measures the recorder's CPU time and RSS over a window. Prints the totals
and the cost per stream. Target (MISSION.md): 200 streams, < 0.6 core, < 3 MiB RSS per stream.

    .venv/bin/python bench/recorder_concurrency.py --streams 200 --window 30
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._proc import cpu_seconds, free_port, rss_mib, wait_for  # noqa: E402
from shared.bus import Bus  # noqa: E402
from shared.documents import KvDocuments  # noqa: E402
from shared.events import RecordingRequested  # noqa: E402
from shared.job_store import JobStore  # noqa: E402
from shared.jobs import JobRequest  # noqa: E402
from shared.subjects import JOBS_BUCKET  # noqa: E402
from tlr.nats_server import NatsServer  # noqa: E402


async def main(streams: int, window: float, profile: str) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="tlr-bench-"))
    procs: list[subprocess.Popen[bytes]] = []
    nats = NatsServer(tmp / "nats")
    try:
        await nats.start()
        port = free_port()
        users = [f"u{i:04d}" for i in range(streams)]
        argv = [
            sys.executable,
            "-m",
            "tlr.fake_tiktok",
            "--port",
            str(port),
            "--profile",
            profile,
        ]
        for user in users:
            argv += ["--live", user]
        fake = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        procs.append(fake)
        assert fake.stdout is not None
        base = (await asyncio.to_thread(fake.stdout.readline)).decode().strip()
        env = {
            **os.environ,
            "NATS_URL": nats.client_url,
            "RECORDINGS_DIR": str(tmp / "recordings"),
            "TIKTOK_WEB_BASE": base,
            "TIKTOK_WEBCAST_BASE": base,
            "MAX_RECORDINGS": str(streams),
            "LOG_LEVEL": "WARNING",
            "INSTANCE_ID": "bench-recorder",
        }
        recorder = subprocess.Popen(
            [sys.executable, "-m", "services.recorder"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        procs.append(recorder)
        bus = await Bus.connect([nats.client_url], service="bench")
        assert bus is not None
        await bus.provision()
        await asyncio.sleep(3)  # let the recorder settle before its idle RSS is read
        idle_rss = rss_mib(recorder.pid)

        job_ids = []
        store = JobStore(KvDocuments(await bus.kv(JOBS_BUCKET)))
        for user in users:
            event = RecordingRequested(job_id=f"bench-{user}", url=f"@{user}", duration=36_000)
            job_ids.append(event.job_id)
            # As the gateway does: the job first (a recorder skips a job it cannot find).
            await store.submit(JobRequest(job_id=event.job_id, url=event.url, duration=36_000))
            await bus.publish(event)

        async def all_writing() -> bool:
            docs = [await store.recording(j) for j in job_ids]
            return all(d is not None and d.segments for d in docs)

        await wait_for(all_writing, 120, f"{streams} recordings to write")
        await asyncio.sleep(5)  # past the start-up burst
        disk0 = sum(f.stat().st_size for f in (tmp / "recordings").rglob("*.flv"))
        cpu0, t0 = cpu_seconds(recorder.pid), time.monotonic()
        fake_cpu0 = cpu_seconds(fake.pid)
        await asyncio.sleep(window)
        cpu1, t1 = cpu_seconds(recorder.pid), time.monotonic()
        fake_cpu1 = cpu_seconds(fake.pid)
        disk1 = sum(f.stat().st_size for f in (tmp / "recordings").rglob("*.flv"))
        rss = rss_mib(recorder.pid)
        elapsed = t1 - t0
        cores = (cpu1 - cpu0) / elapsed
        mbit = (disk1 - disk0) * 8 / elapsed / 1e6
        print(f"streams:                 {streams} x {profile}")
        print(f"window:                  {elapsed:.1f} s")
        print(f"written to disk:         {mbit:.1f} Mbit/s total, {mbit / streams:.2f} per stream")
        per = 100 * cores / streams
        print(f"recorder CPU:            {cores:.3f} core total, {per:.3f} % of a core per stream")
        print(f"recorder RSS:            {rss:.1f} MiB (idle {idle_rss:.1f} MiB)")
        above, all_in = (rss - idle_rss) / streams, rss / streams
        print(f"RSS per stream:          {above:.2f} MiB above idle, {all_in:.2f} MiB all-in")
        print(
            f"fake TikTok CPU:         {(fake_cpu1 - fake_cpu0) / elapsed:.3f} core (not counted)"
        )
        await bus.close()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
        await nats.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--window", type=float, default=30.0, help="seconds measured")
    parser.add_argument("--profile", default="h264_720p_2m", help="fake TikTok media profile")
    args = parser.parse_args()
    asyncio.run(main(args.streams, args.window, args.profile))
