"""Recorder density: N concurrent recordings of a ~2 Mbit/s live in ONE recorder process.

Starts a nats-server, the fake TikTok (its own process, N live users) and one recorder
process (`python -m services.recorder`), asks for N recordings through NATS, waits until all
of them write, then measures the recorder's CPU time and RSS over a window. Prints the totals
and the cost per stream. Target (MISSION.md): 200 streams, < 0.6 core, < 3 MiB RSS per stream;
issue 16: <= 0.15 core and <= 1 MiB RSS per stream all-in with the CDN-like delivery.

    .venv/bin/python bench/recorder_concurrency.py --streams 200 --window 30 --delivery segments
    .venv/bin/python bench/recorder_concurrency.py --streams 1000 --window 60 --delivery segments \
        --sender fast

``--target`` says how each job names its live: ``room`` (the default: a room id, as
``room.live`` and most watchers carry; no TikTok profile lookup) or ``user`` (``@u0001``: the
recorder looks the profile up first, through the fake's default defences: WAF challenges to
solve, a signed user API; 1,000 such jobs at once logged 9,311 resolve steps).

``--delivery`` is the fake CDN's way of writing (tlr/fake_tiktok/delivery.py): ``chunks``
(whole tags per 40 ms tick, the old default), ``segments`` (one ~1.4 KB TCP segment at a time,
paced in real time, as a CDN delivers 2 Mbit/s) or ``irregular`` (writes of 1 B-48 KB).

``--sender`` says who sends the lives. ``fake`` (the default): the fake TikTok itself, from its
Python event loop; it costs about as much CPU as the recorder it feeds (0.78 core for 600
streams in ``segments``) and could not send 1,000. ``fast``: bench/fast_sender.py's sender,
bench/flv_sender.c built with ``gcc -O2`` into the run's temporary directory (no gcc: its Python
loop, said so on stderr; ``fast-py`` asks for that loop): one thread, epoll, the same profile's
media in one shared buffer (a cursor per stream, timestamps rewritten as tags leave), the same
pacing and the same ``--delivery`` modes (``--segment`` bytes per write on the wire, default
1,448; ``--framing chunked`` as the fake, or ``close``), 5 MiB of RSS for 1,000 streams. The
fake still answers the API (its stream URLs point at the sender: ``--public-base-url``). What
is left of the sender's CPU is the kernel's: each ~1.4 KB write is one loopback TCP segment,
and the receiving socket's side of it (softirq) runs in the sender's system time too. Printed
beside the recorder's: the sender's CPU (user and sys), RSS, writes a second and how far its
send cursors are behind the wall clock (0 when the sender keeps up, so the lag below is the
recorder's); and the whole machine's busy cores over the window (nats-server's and the bench's
own CPU time too).

Also printed: per-stream lag, how far each stream's written media time falls behind the wall
clock (which the fake's sending follows) over the window, sampled every few seconds from the
FLV files on disk (start of window = 0; a recorder that keeps up stays within its write
buffer, one that falls behind grows); and the recorder's lease renewals, from the KV
``claims`` updates (the largest gap between two writes of a lease) and from its log
(``lease.doubtful``, ``lease.lost``, ``lease.keeper_stuck``; ``lease.renew_failed`` too with
``--log-level DEBUG``); the recorder log's most frequent warnings and errors (with the error,
e.g. a KV write's ``TimeoutError()``) and its peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from nats.aio.msg import Msg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._proc import (  # noqa: E402
    busy_cores,
    cpu_split,
    flv_last_ts_ms,
    free_port,
    lease_gaps,
    percentile,
    rss_mib,
    wait_for,
)
from bench.fast_sender import (  # noqa: E402
    FRAMINGS,
    SEGMENT,
    SenderProcess,
    start_sender,
    write_media,
)
from shared.bus import Bus  # noqa: E402
from shared.documents import KvDocuments  # noqa: E402
from shared.events import RecordingRequested  # noqa: E402
from shared.job_store import JobStore  # noqa: E402
from shared.jobs import JobRequest  # noqa: E402
from shared.subjects import CLAIMS, CLAIMS_BUCKET, JOBS_BUCKET, LEASE_RENEW  # noqa: E402
from tlr.fake_tiktok.delivery import DELIVERIES  # noqa: E402
from tlr.nats_server import NatsServer  # noqa: E402

LEASE_EVENTS = ("lease.renew_failed", "lease.doubtful", "lease.lost", "lease.keeper_stuck")
SAMPLE_EVERY_S = 5.0
SENDER_STATS_S = 5.0  # the sender's own stats interval (fast_sender.start_sender's default)
KV_PROBE_S = 0.5
STREAM_BYTES_S = 2.2e6 / 8 * 1.05  # a 2 Mbit/s profile on disk, FLV overhead included


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


def _check_disk(tmp: Path, args: argparse.Namespace) -> None:
    """Refuse a run whose recordings would not fit on the disk (with a tenth to spare): the
    bench keeps every file until the end, ~275 KB/s per stream (a 1,000-stream run with a
    3-minute settle once filled this machine's disk, and everyone's runs failed with it)."""
    ramp = args.ramp_timeout or max(60.0, args.streams * 0.1)
    need = args.streams * STREAM_BYTES_S * (ramp + args.settle + args.window + 30)
    free = shutil.disk_usage(tmp).free
    if need > 0.9 * free:
        shutil.rmtree(tmp, ignore_errors=True)
        msg = (
            f"{args.streams} streams for ~{ramp + args.settle + args.window + 30:.0f} s would write"
            f" ~{need / 1e9:.0f} GB, {free / 1e9:.0f} GB free under {tmp.parent}: shorten"
            " --settle/--window or free space"
        )
        raise SystemExit(msg)


async def _kv_probe(store: JobStore, job_id: str, out: list[float]) -> None:
    """Time one KV read of a job document every KV_PROBE_S: NATS's answer time as a client
    other than the recorder sees it (the recorder's own KV calls time out when its loop lags)."""
    while True:
        t = time.monotonic()
        await store.recording(job_id)
        out.append(time.monotonic() - t)
        await asyncio.sleep(KV_PROBE_S)


def _warnings(log: str, top: int = 8) -> str:
    """The most frequent warning and error events of a JSON log, with their counts; for
    ``recorder.write_failed`` and the like, by error too (which KV call timed out)."""
    counts: Counter[str] = Counter()
    for line in log.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if not isinstance(entry, dict) or entry.get("level") not in ("warning", "error"):
            continue
        name = str(entry.get("msg", entry.get("event", "?")))
        if "error" in entry:
            name += f" [{str(entry['error'])[:60]}]"
        counts[name] += 1
    return ", ".join(f"{name} {n}" for name, n in counts.most_common(top))


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
    _check_disk(tmp, args)
    procs: list[subprocess.Popen[bytes]] = []
    nats = NatsServer(tmp / "nats")
    log_path = tmp / "recorder.log"
    sender: SenderProcess | None = None
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
        if args.sender != "fake":
            # The fake answers the API; its stream URLs point at the sender, which serves any
            # .flv path (the fake's signature ignored) with the same profile's media.
            media_file = await write_media(profile, tmp / "media.bin")
            sender = start_sender(
                media_file,
                kind="python" if args.sender == "fast-py" else "c",
                mode=args.delivery,
                framing=args.framing,
                segment=args.segment,
                procs=args.sender_procs,
                workdir=tmp,
                nice=args.sender_nice,
            )
            argv += ["--public-base-url", sender.url]
            print(
                f"sender:                  {sender.kind} ({len(sender.pids)} process(es)) at "
                f"{sender.url}, {args.delivery}"
                + (f" of {args.segment} B" if args.delivery == "segments" else "")
                + f", {args.framing} framing"
                + (f", nice {args.sender_nice}" if args.sender_nice else "")
            )
        for user in users:
            argv += ["--live", user]
        fake_log = tmp / "fake.log"  # "@u0001 live: room_id=... stream_id=..." per user
        with fake_log.open("wb") as fake_err:
            fake = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=fake_err)
        procs.append(fake)
        assert fake.stdout is not None
        await asyncio.to_thread(fake.stdout.readline)  # its base URL: it is up
        base = f"http://127.0.0.1:{port}"  # (printed: the sender's with --public-base-url)
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
            # The stream URLs are on loopback (the fake, or the sender): allowed explicitly
            # since the egress guards of issue 17.
            "STREAM_HOST_SUFFIXES": "127.0.0.1",
            "ALLOW_PRIVATE_STREAM_HOSTS": "true",
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

        shown = [time.monotonic()]

        async def all_writing() -> bool:
            docs = [await store.recording(j) for j in job_ids]
            writing[0] = sum(d is not None and bool(d.segments) for d in docs)
            if time.monotonic() - shown[0] >= 30:  # a long ramp shows it is moving
                shown[0] = time.monotonic()
                print(
                    f"ramp:                    {writing[0]} writing after "
                    f"{shown[0] - started:.0f} s",
                    flush=True,
                )
            return bool(writing[0] == streams)

        started = time.monotonic()
        try:
            ramp = args.ramp_timeout or max(300, streams * 0.6)
            await wait_for(all_writing, ramp, f"{streams} writing", every=2)
        except SystemExit:
            if writing[0] < args.min_writing * streams:
                raise
            # A few jobs that never started must not void the run: measured as they are.
        finally:
            print(f"writing:                 {writing[0]} after {time.monotonic() - started:.0f} s")
        await asyncio.sleep(args.settle)  # past the start-up burst (and its catching up)
        root = tmp / "recordings"
        disk0 = sum(f.stat().st_size for f in root.rglob("*.flv"))
        sampler = None
        if args.sample_cmd:  # e.g. a profiler attached to the recorder during the window
            # An argument list, no shell: the command is split first, then {pid} filled in.
            argv = [a.format(pid=recorder.pid) for a in shlex.split(args.sample_cmd)]
            sampler = subprocess.Popen(argv)
            procs.append(sampler)
        cpu0, t0 = cpu_split(recorder.pid), time.monotonic()
        others = {"nats-server": nats.proc.pid if nats.proc else None, "bench": os.getpid()}
        others_cpu0 = {name: cpu_split(pid) for name, pid in others.items() if pid}
        machine0 = busy_cores()
        fake_cpu0 = cpu_split(fake.pid)
        sender_pids = sender.pids if sender is not None else []
        sender_cpu0 = [cpu_split(pid) for pid in sender_pids]
        lease_from = time.monotonic()
        kv_rtt: list[float] = []
        probe = asyncio.create_task(_kv_probe(store, job_ids[0], kv_rtt))
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
        cpu1, t1 = cpu_split(recorder.pid), time.monotonic()
        probe.cancel()
        machine1 = busy_cores()
        others_cpu1 = {name: cpu_split(pid) for name, pid in others.items() if pid}
        sender_cpu1 = [cpu_split(pid) for pid in sender_pids]
        if sampler is not None:
            await asyncio.to_thread(sampler.wait)
        fake_cpu1 = cpu_split(fake.pid)
        disk1 = sum(f.stat().st_size for f in root.rglob("*.flv"))
        rss = rss_mib(recorder.pid)
        elapsed = t1 - t0
        r_user, r_sys = ((b - a) / elapsed for a, b in zip(cpu0, cpu1, strict=True))
        cores = r_user + r_sys
        mbit = (disk1 - disk0) * 8 / elapsed / 1e6
        print(
            f"streams:                 {streams} x {profile}, delivery {args.delivery}, "
            f"requested by {'room id' if args.target == 'room' else '@user'}"
        )
        print(f"window:                  {elapsed:.1f} s")
        print(f"written to disk:         {mbit:.1f} Mbit/s total, {mbit / streams:.2f} per stream")
        per = 100 * cores / streams
        print(
            f"recorder CPU:            {cores:.3f} core total (user {r_user:.3f}, sys {r_sys:.3f}),"
            f" {per:.3f} % of a core per stream"
        )
        print(f"recorder RSS:            {rss:.1f} MiB (idle {idle_rss:.1f} MiB)")
        above, all_in = (rss - idle_rss) / streams, rss / streams
        print(f"RSS per stream:          {above:.2f} MiB above idle, {all_in:.2f} MiB all-in")
        fake_user, fake_sys = ((b - a) / elapsed for a, b in zip(fake_cpu0, fake_cpu1, strict=True))
        print(
            f"fake TikTok CPU:         {fake_user + fake_sys:.3f} core (user {fake_user:.3f}, "
            f"sys {fake_sys:.3f}; not counted), RSS {rss_mib(fake.pid):.1f} MiB "
            f"(peak {rss_mib(fake.pid, 'VmHWM'):.1f} MiB)"
            + ("; the API only" if sender is not None else "")
        )
        if sender is not None:
            s_user = sum(b[0] - a[0] for a, b in zip(sender_cpu0, sender_cpu1, strict=True))
            s_sys = sum(b[1] - a[1] for a, b in zip(sender_cpu0, sender_cpu1, strict=True))
            s_rss = sum(rss_mib(pid) for pid in sender_pids)
            s_peak = sum(rss_mib(pid, "VmHWM") for pid in sender_pids)
            print(
                f"sender CPU:              {(s_user + s_sys) / elapsed:.3f} core (user "
                f"{s_user / elapsed:.3f}, sys {s_sys / elapsed:.3f}; not counted), RSS "
                f"{s_rss:.1f} MiB (peak {s_peak:.1f} MiB)"
            )
            st = sender.stats
            print(
                f"sender, last {SENDER_STATS_S:.0f} s:       {st.total('conns'):.0f} streams, "
                f"{st.total('sends_per_s'):,.0f} writes/s, {st.total('mbit_per_s'):.1f} Mbit/s; "
                f"send cursor behind the wall clock: max {st.worst('behind_max_ms'):.0f} ms, "
                f"{st.total('behind_over_1s'):.0f} streams over 1 s; "
                f"{st.total('eagain'):.0f} full socket buffers since start"
            )
        spent = ", ".join(
            f"{name} {(sum(others_cpu1[name]) - sum(others_cpu0[name])) / elapsed:.3f}"
            for name in others_cpu0
        )
        print(
            f"machine:                 {(machine1 - machine0) / elapsed:.2f} of "
            f"{os.cpu_count()} cores busy (everything, other engineers' runs too), of which "
            f"{spent} core"
        )
        last = sorted(v[-1] for v in lags.values() if v)
        peak = sorted(max(v) for v in lags.values() if v)
        if last:
            print(
                f"lag vs wall clock:       end of window p50 {percentile(last, 50):+.2f} s, "
                f"p99 {percentile(last, 99):+.2f} s; worst sample {peak[-1]:+.2f} s "
                f"({len(last)} streams in one segment all window)"
            )
        if kv_rtt:
            kv_rtt.sort()
            print(
                f"bench's KV reads:        {len(kv_rtt)} in the window (one every "
                f"{KV_PROBE_S} s, a job document): p50 {percentile(kv_rtt, 50) * 1000:.1f} ms, "
                f"p99 {percentile(kv_rtt, 99) * 1000:.1f} ms, max {kv_rtt[-1] * 1000:.1f} ms "
                "(NATS as another client sees it)"
            )
        gaps = lease_gaps(leases.writes, lease_from)
        late = sum(g > 2 * LEASE_RENEW for g in gaps)
        ttl = CLAIMS.ttl or 8.0
        lapsed = sum(g > ttl for g in gaps)
        print(
            f"lease writes:            {len(leases.writes)} leases, largest gap "
            f"{max(gaps, default=0):.1f} s (renewal every {LEASE_RENEW:.0f} s), "
            f"{late} gaps over {2 * LEASE_RENEW:.0f} s, {lapsed} over the {ttl:.0f} s TTL"
            " (the lease lapsed)"
        )
        text = log_path.read_text(errors="replace")
        counts = ", ".join(f"{name} {text.count(json.dumps(name))}" for name in LEASE_EVENTS)
        print(f"recorder log:            {counts}")
        print(f"recorder log warnings:   {_warnings(text) or 'none'}")
        print(f"recorder peak RSS:       {rss_mib(recorder.pid, 'VmHWM'):.1f} MiB")
        await bus.close()
    finally:
        if sender is not None:
            sender.stop()
        for proc in procs:
            if proc.poll() is None:
                # SIGINT lets a cProfile'd recorder write its profile; the others are killed.
                proc.send_signal(signal.SIGINT if args.profile_out else signal.SIGKILL)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        try:
            await nats.stop()
            if args.keep_log:
                shutil.copy(log_path, args.keep_log)
        finally:  # the recordings go whatever happens (at 1,000 streams: 16 GB a minute)
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
        "--sender",
        choices=("fake", "fast", "fast-py"),
        default="fake",
        help="who sends the lives: the fake TikTok itself (default), or bench/fast_sender.py's"
        " sender: flv_sender.c built with gcc (fast; Python if gcc is missing) or its Python"
        " loop (fast-py). The fake still answers the API either way",
    )
    parser.add_argument(
        "--segment",
        type=int,
        default=SEGMENT,
        help="fast sender, --delivery segments: bytes on the wire per write (default 1448)",
    )
    parser.add_argument(
        "--framing",
        choices=FRAMINGS,
        default="chunked",
        help="fast sender: HTTP chunked body (as the fake) or one delimited by the close",
    )
    parser.add_argument("--sender-procs", type=int, default=1, help="fast sender processes")
    parser.add_argument(
        "--sender-nice",
        type=int,
        default=0,
        help="fast sender: run it under nice -n N, so the recorder has the CPU first",
    )
    parser.add_argument(
        "--target",
        choices=("room", "user"),
        default="room",
        help="request each recording by room id (no lookup; default) or by @user (a profile"
        " lookup through the fake's WAF and signing per job first)",
    )
    parser.add_argument(
        "--ramp-timeout",
        type=float,
        help="seconds to wait for every stream to write (default max(300, 0.6 per stream))",
    )
    parser.add_argument(
        "--min-writing",
        type=float,
        default=0.95,
        help="after --ramp-timeout, measure anyway if this share of the streams writes",
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=5.0,
        help="seconds between every stream writing and the window (a recorder behind after"
        " the ramp catches up first)",
    )
    parser.add_argument("--log-level", default="INFO", help="the recorder's LOG_LEVEL")
    parser.add_argument("--keep-log", type=Path, help="copy the recorder's log here")
    parser.add_argument(
        "--sample-cmd",
        help="a command run (no shell) during the window, {pid} the recorder's (e.g. py-spy record"
        " --pid {pid} --duration 20 --format raw --output stacks.txt --nonblocking)",
    )
    parser.add_argument(
        "--profile-out", help="run the recorder under cProfile, writing its stats here"
    )
    asyncio.run(main(parser.parse_args()))
