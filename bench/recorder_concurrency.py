"""Recorder density: N concurrent recordings of a ~2 Mbit/s live in ONE recorder process.

Starts a nats-server, the fake TikTok (its own process, N live users) and one recorder
process (`python -m services.recorder`), asks for N recordings through NATS, waits until all
of them write, then measures the recorder's CPU time and RSS over a window. Prints the totals
and the cost per stream. Target (MISSION.md): 200 streams, < 0.6 core, < 3 MiB RSS per stream;
issue 16: <= 0.15 core and <= 1 MiB RSS per stream all-in with the CDN-like delivery.

    .venv/bin/python bench/recorder_concurrency.py --streams 200 --window 30 --delivery segments

``--target`` says how each job names its live: ``room`` (the default: a room id, as
``room.live`` and most watchers carry; no TikTok profile lookup) or ``user`` (``@u0001``: the
recorder looks the profile up first, through the fake's default defences: WAF challenges to
solve, a signed user API; 1,000 such jobs at once logged 9,311 resolve steps).

``--delivery`` is the fake CDN's way of writing (tlr/fake_tiktok/delivery.py): ``chunks``
(whole tags per 40 ms tick, the old default), ``segments`` (one ~1.4 KB TCP segment at a time,
paced in real time, as a CDN delivers 2 Mbit/s) or ``irregular`` (writes of 1 B-48 KB).

Also printed: per-stream lag, how far each stream's written media time falls behind the wall
clock (which the fake's sending follows) over the window, sampled every few seconds from the
FLV files on disk (start of window = 0; a recorder that keeps up stays within its write
buffer, one that falls behind grows); and the recorder's lease renewals, from the KV
``claims`` updates (the largest gap between two writes of a lease) and from its log
(``lease.doubtful``, ``lease.lost``, ``lease.keeper_stuck``; ``lease.renew_failed`` too with
``--log-level DEBUG``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from nats.aio.msg import Msg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._proc import (  # noqa: E402
    cpu_seconds,
    flv_last_ts_ms,
    free_port,
    lease_gaps,
    percentile,
    rss_mib,
    wait_for,
)
from shared.bus import Bus  # noqa: E402
from shared.documents import KvDocuments  # noqa: E402
from shared.events import RecordingRequested  # noqa: E402
from shared.job_store import JobStore  # noqa: E402
from shared.jobs import JobRequest  # noqa: E402
from shared.subjects import CLAIMS_BUCKET, JOBS_BUCKET, LEASE_RENEW  # noqa: E402
from tlr.fake_tiktok.delivery import DELIVERIES  # noqa: E402
from tlr.nats_server import NatsServer  # noqa: E402

LEASE_EVENTS = ("lease.renew_failed", "lease.doubtful", "lease.lost", "lease.keeper_stuck")
SAMPLE_EVERY_S = 5.0


class LeaseWatch:
    """Times every write of a lease key in KV ``claims`` (a renewal, a take, a release)."""

    def __init__(self) -> None:
        self.writes: dict[str, list[float]] = {}

    async def on_msg(self, msg: Msg) -> None:
        key = msg.subject.split(".", 2)[2]
        self.writes.setdefault(key, []).append(time.monotonic())


async def _media_ms(store: JobStore, job_ids: list[str], root: Path) -> dict[str, tuple[str, int]]:
    """Each job's open segment and the last media timestamp (ms) written to it so far."""
    out: dict[str, tuple[str, int]] = {}
    for job_id in job_ids:
        doc = await store.recording(job_id)
        if doc is None or not doc.segments:
            continue
        path = doc.segments[-1].path
        ts = await asyncio.to_thread(flv_last_ts_ms, root / path)
        if ts is not None:
            out[job_id] = (path, ts)
    return out


def _room_ids(fake_log: str) -> dict[str, str]:
    """The room id of each live user, from the lines the fake writes as they go live."""
    rooms = {}
    for line in fake_log.splitlines():
        if line.startswith("@") and " live: room_id=" in line:
            user, rest = line[1:].split(" live: room_id=", 1)
            rooms[user] = rest.split()[0]
    return rooms


async def main(args: argparse.Namespace) -> None:
    streams, window, profile = args.streams, args.window, args.profile
    tmp = Path(tempfile.mkdtemp(prefix="tlr-bench-"))
    procs: list[subprocess.Popen[bytes]] = []
    nats = NatsServer(tmp / "nats")
    log_path = tmp / "recorder.log"
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
            "--delivery",
            args.delivery,
        ]
        for user in users:
            argv += ["--live", user]
        fake_log = tmp / "fake.log"  # "@u0001 live: room_id=... stream_id=..." per user
        with fake_log.open("wb") as fake_err:
            fake = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=fake_err)
        procs.append(fake)
        assert fake.stdout is not None
        base = (await asyncio.to_thread(fake.stdout.readline)).decode().strip()
        rooms = _room_ids(fake_log.read_text(errors="replace"))
        env = {
            **os.environ,
            "NATS_URL": nats.client_url,
            "RECORDINGS_DIR": str(tmp / "recordings"),
            "TIKTOK_WEB_BASE": base,
            "TIKTOK_WEBCAST_BASE": base,
            "MAX_RECORDINGS": str(streams),
            "LOG_LEVEL": args.log_level,
            "LOG_JSON": "true",
            "INSTANCE_ID": "bench-recorder",
        }
        recorder_argv = [sys.executable, "-m", "services.recorder"]
        if args.profile_out:  # the recorder under cProfile (dumped when it is stopped)
            recorder_argv[1:1] = ["-m", "cProfile", "-o", args.profile_out]
        with log_path.open("wb") as log_file:
            recorder = subprocess.Popen(
                recorder_argv, cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT
            )
        procs.append(recorder)
        bus = await Bus.connect([nats.client_url], service="bench")
        assert bus is not None
        await bus.provision()
        leases = LeaseWatch()
        await bus.nc.subscribe(f"$KV.{CLAIMS_BUCKET}.room.>", cb=leases.on_msg)
        await asyncio.sleep(3)  # let the recorder settle before its idle RSS is read
        idle_rss = rss_mib(recorder.pid)

        job_ids = []
        store = JobStore(KvDocuments(await bus.kv(JOBS_BUCKET)))
        for user in users:
            # By room id (what most watchers and room.live carry: no profile lookup), or by
            # @user (the recorder resolves each through the fake's WAF and signing first).
            target = {"room_id": rooms[user]} if args.target == "room" else {"url": f"@{user}"}
            job_id = f"bench-{user}"
            event = RecordingRequested(job_id=job_id, duration=36_000, **target)  # type: ignore[arg-type]
            job_ids.append(event.job_id)
            # As the gateway does: the job first (a recorder skips a job it cannot find).
            await store.submit(JobRequest(job_id=job_id, duration=36_000, **target))  # type: ignore[arg-type]
            await bus.publish(event)

        writing = [0]

        async def all_writing() -> bool:
            docs = [await store.recording(j) for j in job_ids]
            writing[0] = sum(d is not None and bool(d.segments) for d in docs)
            return writing[0] == streams

        started = time.monotonic()
        try:
            await wait_for(all_writing, max(300, streams * 0.6), f"{streams} writing", every=2)
        except SystemExit:
            if writing[0] < 0.95 * streams:
                raise
            # A few jobs that never started must not void the run: measured as they are.
        finally:
            print(f"writing:                 {writing[0]} after {time.monotonic() - started:.0f} s")
        await asyncio.sleep(5)  # past the start-up burst
        root = tmp / "recordings"
        disk0 = sum(f.stat().st_size for f in root.rglob("*.flv"))
        sampler = None
        if args.sample_cmd:  # e.g. a profiler attached to the recorder during the window
            cmd = args.sample_cmd.format(pid=recorder.pid)
            sampler = subprocess.Popen(cmd, shell=True)
            procs.append(sampler)
        cpu0, t0 = cpu_seconds(recorder.pid), time.monotonic()
        fake_cpu0 = cpu_seconds(fake.pid)
        lease_from = time.monotonic()
        media0 = await _media_ms(store, job_ids, root)
        lag_t0 = time.monotonic()
        lags: dict[str, list[float]] = {j: [] for j in media0}
        while (left := t0 + window - time.monotonic()) > 0:
            await asyncio.sleep(min(SAMPLE_EVERY_S, left))
            media = await _media_ms(store, job_ids, root)
            now = time.monotonic()
            for job_id, (path, ts) in media.items():
                if job_id in lags and media0[job_id][0] == path:  # same segment as at the start
                    behind = (now - lag_t0) * 1000 - (ts - media0[job_id][1])
                    lags[job_id].append(behind / 1000)
        cpu1, t1 = cpu_seconds(recorder.pid), time.monotonic()
        if sampler is not None:
            await asyncio.to_thread(sampler.wait)
        fake_cpu1 = cpu_seconds(fake.pid)
        disk1 = sum(f.stat().st_size for f in root.rglob("*.flv"))
        rss = rss_mib(recorder.pid)
        elapsed = t1 - t0
        cores = (cpu1 - cpu0) / elapsed
        mbit = (disk1 - disk0) * 8 / elapsed / 1e6
        print(
            f"streams:                 {streams} x {profile}, delivery {args.delivery}, "
            f"requested by {'room id' if args.target == 'room' else '@user'}"
        )
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
        last = sorted(v[-1] for v in lags.values() if v)
        peak = sorted(max(v) for v in lags.values() if v)
        if last:
            print(
                f"lag vs wall clock:       end of window p50 {percentile(last, 50):+.2f} s, "
                f"p99 {percentile(last, 99):+.2f} s; worst sample {peak[-1]:+.2f} s "
                f"({len(last)} streams in one segment all window)"
            )
        gaps = lease_gaps(leases.writes, lease_from)
        late = sum(g > 2 * LEASE_RENEW for g in gaps)
        print(
            f"lease writes:            {len(leases.writes)} leases, largest gap "
            f"{max(gaps, default=0):.1f} s (renewal every {LEASE_RENEW:.0f} s), "
            f"{late} gaps over {2 * LEASE_RENEW:.0f} s"
        )
        text = log_path.read_text(errors="replace")
        counts = ", ".join(f"{name} {text.count(json.dumps(name))}" for name in LEASE_EVENTS)
        print(f"recorder log:            {counts}")
        await bus.close()
    finally:
        for proc in procs:
            if proc.poll() is None:
                # SIGINT lets a cProfile'd recorder write its profile; the others are killed.
                proc.send_signal(signal.SIGINT if args.profile_out else signal.SIGKILL)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        await nats.stop()
        if args.keep_log:
            shutil.copy(log_path, args.keep_log)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--window", type=float, default=30.0, help="seconds measured")
    parser.add_argument("--profile", default="h264_720p_2m", help="fake TikTok media profile")
    parser.add_argument(
        "--delivery",
        choices=DELIVERIES,
        default="chunks",
        help="how the fake CDN writes: chunks, segments (CDN-like) or irregular",
    )
    parser.add_argument(
        "--target",
        choices=("room", "user"),
        default="room",
        help="request each recording by room id (no lookup; default) or by @user (a profile"
        " lookup through the fake's WAF and signing per job first)",
    )
    parser.add_argument("--log-level", default="INFO", help="the recorder's LOG_LEVEL")
    parser.add_argument("--keep-log", type=Path, help="copy the recorder's log here")
    parser.add_argument(
        "--sample-cmd",
        help="a shell command run during the window, {pid} the recorder's (e.g. py-spy record"
        " --pid {pid} --duration 20 --format raw --output stacks.txt --nonblocking)",
    )
    parser.add_argument(
        "--profile-out", help="run the recorder under cProfile, writing its stats here"
    )
    asyncio.run(main(parser.parse_args()))
