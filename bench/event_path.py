"""Event path: `room.live` published -> first media byte on disk, and `POST /recordings` -> same.

Starts a nats-server, the fake TikTok (its own process, one live user per job; TikTok's late-2026
defences on, as the services meet them), one recorder process (`python -m services.recorder`)
and one gateway process (`python -m services.gateway`). Then, after a few warm-up jobs:

(a) ``--jobs`` jobs as the scheduler starts them: the job document into KV ``jobs``, then
    ``room.live`` (room id and @user) published; the clock starts at the publish;
(b) ``--jobs`` jobs through ``POST /recordings {"room_id": ...}`` (keep-alive client); the clock
    starts when the request is sent;
(c) with ``--burst``: ``--jobs`` ``room.live`` at once.

Jobs of (a) and (b) are spread at ``--rate`` per second so the figure is a latency, not a queue.
"First byte on disk" is the job's segment file under RECORDINGS_DIR with size > 0, seen by a
thread that polls the rooms still waiting every ``--poll-ms`` (no inotify in the stdlib). Each
job is cancelled as soon as its first byte is seen (``--hold`` to keep it longer), so only a few
recordings run at a time; each phase ends once every job is finished (remuxed).

TikTok's own answer time: the fake runs in this script's ``--serve-fake`` mode, which times every
TikTok request it answers (arrival -> its answer's headers; for the FLV stream the first media
bytes are written in the same step). A job's requests are found by its room id, @user and stream
id; the figure "net of TikTok" subtracts their answer times from the job's latency.

    .venv/bin/python bench/event_path.py --jobs 200 --rate 10 --burst
    .venv/bin/python bench/event_path.py --jobs 20           # quick check
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._proc import cpu_seconds, free_port, rss_mib, wait_for  # noqa: E402
from shared.bus import Bus  # noqa: E402
from shared.documents import KvDocuments  # noqa: E402
from shared.events import RoomLive  # noqa: E402
from shared.job_store import JobStore  # noqa: E402
from shared.jobs import TERMINAL, JobRequest  # noqa: E402
from shared.subjects import JOBS_BUCKET  # noqa: E402
from tlr.nats_server import NatsServer  # noqa: E402

KEY = "bench-key"
WARMUP = 5
CHILDREN = "recorder's ffmpeg"


def children_cpu_seconds(pid: int) -> float:
    """cutime + cstime of ``pid``: its children's CPU once reaped (the recorder's remuxes)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")


# --- the fake TikTok, timed ---------------------------------------------------------------------


def serve_fake(
    port: int, users: list[str], profile: str, scenario: dict[str, Any], delivery: str
) -> None:
    """The fake TikTok with every TikTok request's answer time kept (GET /__bench/timings)."""
    import inspect

    from aiohttp import web

    import tlr.fake_tiktok.server as fake_server
    from tlr.fake_tiktok.media import default_media_dir

    timings: list[dict[str, Any]] = []
    arrived = web.RequestKey("bench_arrived", float)

    @web.middleware
    async def arrival(request: web.Request, handler: Any) -> web.StreamResponse:
        if not request.path.startswith(("/__fake/", "/__bench/")):
            request[arrived] = time.time()
        response: web.StreamResponse = await handler(request)
        return response

    async def on_prepare(request: web.Request, response: web.StreamResponse) -> None:
        t0 = request.get(arrived)
        if t0 is not None:
            timings.append(
                {
                    "path": request.path,
                    "query": request.query_string,
                    "status": response.status,
                    "t0": t0,
                    "t1": time.time(),
                }
            )

    async def get_timings(_request: web.Request) -> web.Response:
        return web.json_response(timings)

    from tlr.fake_tiktok.app import make_app

    def timed_app(*args: Any, **kwargs: Any) -> web.Application:
        app = make_app(*args, **kwargs)
        app.middlewares.insert(0, arrival)  # outermost: before the fake's own edge
        app.on_response_prepare.append(on_prepare)
        app.router.add_get("/__bench/timings", get_timings)
        return app

    # The server module builds its app with the name it imported: replace it there.
    vars(fake_server)["make_app"] = timed_app

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        options: dict[str, Any] = {}
        if "delivery" in inspect.signature(fake_server.start_fake_tiktok).parameters:
            options["delivery"] = delivery
        elif delivery != "chunks":
            msg = f"this fake TikTok has no delivery modes (asked: {delivery})"
            raise SystemExit(msg)
        async with fake_server.start_fake_tiktok(
            media_dir=default_media_dir(), port=port, **options
        ) as fake:
            if scenario:
                await fake.set_scenario(**scenario)
            rooms = {}
            for user in users:
                await fake.create_user(user)
                rooms[user] = list(await fake.go_live(user, profile=profile))
            sys.stdout.write(json.dumps({"base": fake.base_url, "rooms": rooms}) + "\n")
            sys.stdout.flush()
            await stop.wait()

    asyncio.run(run())


# --- first byte on disk -------------------------------------------------------------------------


class DiskWatch:
    """A thread polling the room directories of jobs still waiting for their first byte.

    Two moments per room: its segment file exists (the recorder creates it at the first
    keyframe it receives) and the file holds a byte (the recorder's first write)."""

    def __init__(self, root: Path, every: float) -> None:
        self.root = root
        self.every = every
        self._waiting: dict[str, tuple[asyncio.AbstractEventLoop, Seen]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="disk-watch", daemon=True)
        self.polls = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def expect(self, room_id: str) -> Seen:
        """Futures set to time.time() when a file under ``<root>/<room_id>`` exists, and when
        it has a byte."""
        loop = asyncio.get_running_loop()
        seen = Seen(loop.create_future(), loop.create_future())
        with self._lock:
            self._waiting[room_id] = (loop, seen)
        return seen

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                waiting = list(self._waiting.items())
            for room, (loop, seen) in waiting:
                found = self._scan(self.root / room)
                if found is None:
                    continue
                now = time.time()
                if not seen.created.done():
                    loop.call_soon_threadsafe(_settle, seen.created, now)
                if found:
                    loop.call_soon_threadsafe(_settle, seen.first_byte, now)
                    with self._lock:
                        self._waiting.pop(room, None)
            self.polls += 1
            time.sleep(self.every)

    @staticmethod
    def _scan(path: Path) -> bool | None:
        """None: no file under ``path``; False: only empty ones; True: one has a byte."""
        try:
            entries = list(os.scandir(path))
        except FileNotFoundError:
            return None
        found: bool | None = None
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                sub = DiskWatch._scan(Path(entry.path))
            else:
                try:
                    sub = entry.stat(follow_symlinks=False).st_size > 0
                except FileNotFoundError:
                    continue
            if sub:
                return True
            if sub is not None:
                found = False
        return found


@dataclass
class Seen:
    created: asyncio.Future[float]
    first_byte: asyncio.Future[float]


def _settle(fut: asyncio.Future[float], value: float) -> None:
    if not fut.done():
        fut.set_result(value)


# --- jobs ---------------------------------------------------------------------------------------


@dataclass
class Job:
    user: str
    room_id: str
    stream_id: str
    job_id: str = ""
    t0: float = 0.0  # time.time() when the event was published / the POST sent
    created: float | None = None  # its segment file exists (first keyframe received)
    first_byte: float | None = None
    # the fake's TikTok requests of this job: (path, arrival, answered)
    tiktok: list[tuple[str, float, float]] = field(default_factory=list)

    @property
    def latency_ms(self) -> float:
        assert self.first_byte is not None
        return (self.first_byte - self.t0) * 1000

    @property
    def created_ms(self) -> float:
        assert self.created is not None
        return (self.created - self.t0) * 1000

    @property
    def tiktok_ms(self) -> float:
        return sum(t1 - t0 for _, t0, t1 in self.tiktok) * 1000

    def stage_ms(self) -> tuple[float, float, float, float]:
        """Event -> first TikTok request -> last CDN request -> file created -> first byte."""
        assert self.first_byte is not None
        assert self.created is not None
        assert self.tiktok
        first = self.tiktok[0][1]
        cdn = [t0 for path, t0, _ in self.tiktok if _is_cdn(path)]
        last_cdn = cdn[-1] if cdn else self.created
        return (
            (first - self.t0) * 1000,
            (last_cdn - first) * 1000,
            (self.created - last_cdn) * 1000,
            (self.first_byte - self.created) * 1000,
        )


def _is_cdn(path: str) -> bool:
    return path.endswith(".flv")


@dataclass
class Stack:
    tmp: Path
    bus: Bus
    store: JobStore
    http: httpx.AsyncClient
    watch: DiskWatch
    fake_base: str
    pids: dict[str, int]
    cancel_after: float


async def run_job(stack: Stack, job: Job, start: Callable[[Job], Awaitable[None]]) -> None:
    seen = stack.watch.expect(job.room_id)
    await start(job)
    try:
        job.first_byte = await asyncio.wait_for(seen.first_byte, 60)
        job.created = seen.created.result()
    except TimeoutError:
        print(f"  no first byte for {job.job_id} (room {job.room_id}) in 60 s", flush=True)
        return
    if stack.cancel_after:
        await asyncio.sleep(stack.cancel_after)
    await stack.store.request_cancel(job.job_id)


def by_event(stack: Stack, phase: str) -> Callable[[Job], Awaitable[None]]:
    async def start(job: Job) -> None:
        job.job_id = f"ev-{phase}-{job.user}"
        url = f"https://www.tiktok.com/@{job.user}/live"
        key = f"user:{job.user}"
        # As the scheduler does: the job document first, then the event.
        await stack.store.submit(
            JobRequest(job_id=job.job_id, room_id=job.room_id, url=url, watcher_key=key)
        )
        event = RoomLive(
            event_id=f"live:{job.job_id}",
            job_id=job.job_id,
            room_id=job.room_id,
            watcher_key=key,
            url=url,
            unique_id=job.user,
        )
        job.t0 = time.time()
        await stack.bus.publish(event)

    return start


def by_post(stack: Stack) -> Callable[[Job], Awaitable[None]]:
    async def start(job: Job) -> None:
        job.t0 = time.time()
        r = await stack.http.post("/recordings", json={"room_id": job.room_id})
        if r.status_code != 202:
            msg = f"POST /recordings -> {r.status_code} {r.text[:300]}"
            raise SystemExit(msg)
        job.job_id = r.json()["task_id"]

    return start


async def run_phase(
    stack: Stack,
    jobs: list[Job],
    start: Callable[[Job], Awaitable[None]],
    rate: float | None,
) -> tuple[float, dict[str, float]]:
    """Start every job (at ``rate`` per second, or all at once), wait for every first byte and
    every job to end; the wall time and each process's CPU seconds over the phase."""
    cpu0 = {name: cpu_seconds(pid) for name, pid in stack.pids.items()}
    remux0 = children_cpu_seconds(stack.pids["recorder"])
    t0 = time.perf_counter()
    tasks = []
    for i, job in enumerate(jobs):
        if rate:
            await asyncio.sleep(max(0.0, t0 + i / rate - time.perf_counter()))
        tasks.append(asyncio.create_task(run_job(stack, job, start)))
    await asyncio.gather(*tasks)
    wall = time.perf_counter() - t0
    cpu = {name: cpu_seconds(pid) - cpu0[name] for name, pid in stack.pids.items()}
    cpu[CHILDREN] = children_cpu_seconds(stack.pids["recorder"]) - remux0

    async def all_ended() -> bool:
        for job in jobs:
            if not job.job_id:
                continue
            rec = await stack.store.recording(job.job_id)
            if rec is None or rec.state not in TERMINAL:
                request = await stack.store.request(job.job_id)
                if request is not None and (rec is not None or request.desired != "cancel"):
                    return False
        return True

    await wait_for(all_ended, 120, "every job of the phase to end", every=0.5)
    await asyncio.sleep(1.0)  # remuxes announced, queues empty
    return wall, cpu


# --- figures ------------------------------------------------------------------------------------


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def attach_timings(jobs: list[Job], timings: list[dict[str, Any]]) -> None:
    for job in jobs:
        if job.first_byte is None:
            continue
        marks = (job.room_id, job.stream_id, f"@{job.user}", f"uniqueId={job.user}")
        for t in timings:
            where = f"{t['path']}?{t['query']}"
            if job.t0 <= t["t0"] <= job.first_byte and any(m in where for m in marks):
                job.tiktok.append((t["path"], t["t0"], t["t1"]))
        job.tiktok.sort(key=lambda x: x[1])


def report(label: str, jobs: list[Job], wall: float, cpu: dict[str, float]) -> None:
    done = [j for j in jobs if j.first_byte is not None]
    lat = [j.latency_ms for j in done]
    net = [j.latency_ms - j.tiktok_ms for j in done]
    created = [j.created_ms for j in done]
    created_net = [j.created_ms - j.tiktok_ms for j in done]
    tik = [j.tiktok_ms for j in done]
    print()
    print(f"### {label}: {len(done)}/{len(jobs)} jobs wrote a first byte, {wall:.1f} s")
    print("| figure | p50 ms | p99 ms | max ms |")
    print("|---|---|---|---|")
    for name, values in (
        ("to first byte on disk", lat),
        ("  net of TikTok's answer time", net),
        ("to its segment file created (first keyframe in)", created),
        ("  net of TikTok's answer time", created_net),
        ("TikTok's answer time (sum per job)", tik),
    ):
        print(f"| {name} | {pct(values, 50):.1f} | {pct(values, 99):.1f} | {max(values):.1f} |")
    staged = [j.stage_ms() for j in done if j.tiktok]
    names = (
        "stage: start -> first TikTok request",
        "stage: first TikTok request -> (last) CDN request",
        "stage: CDN request -> segment file created",
        "stage: file created -> first byte on disk",
    )
    for i, name in enumerate(names):
        values = [s[i] for s in staged]
        print(f"| {name} | {pct(values, 50):.1f} | {pct(values, 99):.1f} | {max(values):.1f} |")
    kinds: dict[str, list[float]] = {}
    for job in done:
        for path, t0, t1 in job.tiktok:
            kind = "CDN (to the FLV's first bytes)" if _is_cdn(path) else path
            kinds.setdefault(kind, []).append((t1 - t0) * 1000)
    for kind, values in sorted(kinds.items()):
        print(
            f"| TikTok answer {kind} (x{len(values)}) | {pct(values, 50):.2f} "
            f"| {pct(values, 99):.2f} | {max(values):.2f} |"
        )
    per = len(done) / len(jobs) if jobs else 1.0
    shares = ", ".join(f"{name} {100 * s / wall:.0f} %" for name, s in cpu.items())
    print(f"CPU over the phase (% of a core): {shares}  [{per:.0%} of jobs done]")


# --- the run ------------------------------------------------------------------------------------


async def main(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="tlr-event-bench-"))
    procs: list[subprocess.Popen[bytes]] = []
    nats = NatsServer(tmp / "nats")
    watch = DiskWatch(tmp / "recordings", args.poll_ms / 1000)
    phases = ["w", "a", "b"] + (["c"] if args.burst else [])
    counts = {"w": WARMUP, "a": args.jobs, "b": args.jobs, "c": args.jobs}
    users = {p: [f"{p}{i:04d}" for i in range(counts[p])] for p in phases}
    try:
        await nats.start()
        fake_port = free_port()
        argv = [sys.executable, __file__, "--serve-fake", "--fake-port", str(fake_port)]
        argv += ["--profile", args.profile, "--scenario", args.scenario]
        argv += ["--delivery", args.delivery]
        argv += ["--users", ",".join(u for p in phases for u in users[p])]
        fake = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE)
        procs.append(fake)
        assert fake.stdout is not None
        line = await asyncio.to_thread(fake.stdout.readline)
        if not line:
            msg = "the fake TikTok did not start"
            raise SystemExit(msg)
        started = json.loads(line)
        base, rooms = started["base"], started["rooms"]
        (tmp / "recordings").mkdir()
        gateway_port = free_port()
        env = {
            **os.environ,
            "NATS_URL": nats.client_url,
            "RECORDINGS_DIR": str(tmp / "recordings"),
            "TIKTOK_WEB_BASE": base,
            "TIKTOK_WEBCAST_BASE": base,
            "MAX_RECORDINGS": str(max(args.jobs, 50)),
            "LOG_LEVEL": "WARNING",
            "LOG_FORMAT": "json",
            "API_KEYS": KEY,
            "RATE_LIMIT_PER_MIN": "1000000",
            "GATEWAY_PORT": str(gateway_port),
        }
        pids = {"fake TikTok": fake.pid}
        for name in ("recorder", "gateway"):
            log = (tmp / f"{name}.log").open("wb")
            proc = subprocess.Popen(
                [sys.executable, "-m", f"services.{name}"],
                cwd=ROOT,
                env={**env, "INSTANCE_ID": f"bench-{name}"},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            procs.append(proc)
            pids[name] = proc.pid
        assert nats.proc is not None
        pids["nats-server"] = nats.proc.pid
        pids["bench (this process)"] = os.getpid()
        bus = await Bus.connect([nats.client_url], service="bench")
        assert bus is not None
        await bus.provision()
        store = JobStore(KvDocuments(await bus.kv(JOBS_BUCKET)))
        watch.start()
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{gateway_port}", headers={"X-API-Key": KEY}, timeout=30
        ) as http:

            async def gateway_ready() -> bool:
                try:
                    return (await http.get("/ready")).status_code == 200
                except httpx.TransportError:
                    return False

            await wait_for(gateway_ready, 60, "the gateway to be ready")
            stack = Stack(tmp, bus, store, http, watch, base, pids, args.hold)

            def jobs_of(phase: str) -> list[Job]:
                return [Job(u, *rooms[u]) for u in users[phase]]

            warm = jobs_of("w")
            await run_phase(stack, warm[:3], by_event(stack, "w"), 2.0)
            await run_phase(stack, warm[3:], by_post(stack), 2.0)
            if any(j.first_byte is None for j in warm):
                msg = "warm-up jobs did not record: see the recorder's log in " + str(tmp)
                raise SystemExit(msg)
            results = []
            spread = f"{args.rate:g} jobs/s"
            plan: list[tuple[str, str, Callable[[Job], Awaitable[None]], float | None]] = [
                ("a", f"(a) room.live -> first byte, {spread}", by_event(stack, "a"), args.rate),
                ("b", f"(b) POST /recordings -> first byte, {spread}", by_post(stack), args.rate),
            ]
            if args.burst:
                plan.append(("c", "(c) room.live, all at once", by_event(stack, "c"), None))
            for phase, label, start, rate in plan:
                jobs = jobs_of(phase)
                print(f"{label} ...", flush=True)
                wall, cpu = await run_phase(stack, jobs, start, rate)
                results.append((label, jobs, wall, cpu))
            timings = (await http.get(f"{base}/__bench/timings")).json()
            rss = {name: rss_mib(pid) for name, pid in pids.items() if name != "fake TikTok"}
        await bus.close()
        print()
        print(
            f"{args.jobs} jobs per phase; fake profile {args.profile}, delivery "
            f"{args.delivery}; disk polled every "
            f"{args.poll_ms:g} ms ({watch.polls} polls); jobs cancelled "
            f"{args.hold:g} s after their first byte"
        )
        for label, jobs, wall, cpu in results:
            attach_timings(jobs, timings)
            report(label, jobs, wall, cpu)
        print()
        print("RSS at the end: " + ", ".join(f"{n} {v:.0f} MiB" for n, v in rss.items()))
        print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
    finally:
        watch.stop()
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        await nats.stop()
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=200, help="jobs per phase")
    parser.add_argument("--rate", type=float, default=10.0, help="jobs started per second")
    parser.add_argument("--burst", action="store_true", help="also: --jobs room.live at once")
    parser.add_argument("--hold", type=float, default=0.0, help="seconds recorded per job")
    parser.add_argument("--poll-ms", type=float, default=1.0, help="disk poll period")
    parser.add_argument("--profile", default="h264_720p_2m", help="fake TikTok media profile")
    parser.add_argument(
        "--delivery",
        default="segments",
        help="how the fake's CDN writes: segments (~1.4 KB at a time, as a real CDN at these "
        "rates), irregular, chunks (whole tags per 40 ms tick)",
    )
    parser.add_argument("--scenario", default="{}", help="fake TikTok flags (JSON), e.g. KIND")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--serve-fake", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--fake-port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--users", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_fake:
        users = args.users.split(",")
        serve_fake(args.fake_port, users, args.profile, json.loads(args.scenario), args.delivery)
    else:
        asyncio.run(main(args))
