"""Scheduler at scale: 10,000 watchers against the fake TikTok, within a request budget.

Starts a nats-server, the fake TikTok (its own process) and one scheduler process
(`python -m services.scheduler`), creates the accounts in the fake (one bulk control call),
registers the watchers through NATS (`watch.requested`: a mix of room-id and @user watchers)
and lets the scheduler poll. After a warm-up it measures over a window:

- TikTok requests per minute by endpoint, from the fake's request log, and the most requests
  in any 1 s / 10 s / 60 s (sliding) window against the budget: is it ever exceeded, are
  there bursts;
- check_alive calls per poll interval against (watchers with a room id) / batch size;
- the effective poll interval: time between two checks of the same watcher (a room id in a
  check_alive call, a user in a resolve: its profile page /@user, or api-live user/room);
- the scheduler's CPU (utime + stime over the window, % of a core) and RSS;
- detection latency: random watched users go live at the fake at random times during the
  window; latency = go-live call -> `room.live` received on a core NATS subscription.

A second, shorter run gives the scheduler a budget tighter than its watchers need: the checks
slow down (the effective interval grows) while the rate stays within the budget.

Targets (MISSION.md, the scheduler issue): budget never exceeded, no bursts; about
watchers/batch_size check_alive calls per interval; CPU < 10 % of a core; detection p99 <=
poll_interval + 2 s while the budget allows it.

    .venv/bin/python bench/scheduler_scale.py                # both runs, ~8 minutes
    .venv/bin/python bench/scheduler_scale.py --no-tight --window 300
    .venv/bin/python bench/scheduler_scale.py --no-tight --watchers 100000 --batch 200

`--watchers N` splits N watchers 80 % room id / 20 % @user; the run also reports the
registration time, RSS and SQLite size after it, the scheduler's CPU per poll interval and the
spread of watcher checks over the interval (per 1 s / 10 s / 60 s against an even spread).
`--profile FILE` runs the scheduler under cProfile and writes its stats to FILE.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgspec

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._proc import cpu_seconds, free_port, rss_mib, wait_for  # noqa: E402
from shared import events  # noqa: E402
from shared.bus import Bus  # noqa: E402
from shared.events import RoomLive, WatchRequested  # noqa: E402
from shared.logging import configure_logging  # noqa: E402
from shared.watchers import LIST, ListReply, ListRequest  # noqa: E402
from tlr.nats_server import NatsServer  # noqa: E402

BUCKET_CAPACITY = 2  # services/scheduler/budget.py: a bucket holds at most 2 tokens
USER_ROOM = "/api-live/user/room/"
PROFILE_PAGE = "/@{user}"  # how the client resolves a user first (request paths normalised)
LIVE_PAGE = "/@{user}/live"
RESOLVES = (PROFILE_PAGE, USER_ROOM)  # one per user check (the live page is a fallback)
CHECK_ALIVE = "/webcast/room/check_alive/"
ROOM_INFO = "/webcast/room/info/"
BULK_ACCOUNTS = 10_000  # accounts per bulk control call to the fake


@dataclass
class RunConfig:
    name: str
    room_watchers: int
    user_watchers: int
    poll: int
    batch: int
    budget: float  # requests per minute (per egress; everything here is one egress)
    window: float
    lives: int
    warmup: float | None
    seed: int
    profile: Path | None = None  # run the scheduler under cProfile, write its stats here
    waf_challenge: bool = True  # the fake's default: every www page behind a proof of work

    @property
    def watchers(self) -> int:
        return self.room_watchers + self.user_watchers

    @property
    def need_per_interval(self) -> int:
        """Requests one round of checks costs when nobody is live: a resolve per user, and
        check_alive for every room id (room-id watchers + users' last room ids) in batches."""
        with_room = self.room_watchers + self.user_watchers  # every user here has a past live
        return self.user_watchers + math.ceil(with_room / self.batch)

    @property
    def need_per_min(self) -> float:
        return self.need_per_interval * 60.0 / self.poll

    @property
    def expected_interval(self) -> float:
        return self.poll * max(1.0, self.need_per_min / self.budget)


@dataclass
class Request:
    time: float
    path: str
    query: dict[str, str]
    status: int | None


@dataclass
class Probe:
    """CPU seconds and RSS of one process."""

    pid: int
    rss_max: float = 0.0

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def rss(self) -> float:
        value = rss_mib(self.pid)
        self.rss_max = max(self.rss_max, value)
        return value


@dataclass
class Result:
    lines: list[str] = field(default_factory=list)

    def add(self, label: str, value: str) -> None:
        line = f"{label + ':':<34}{value}"
        self.lines.append(line)
        print(line, flush=True)


def pct(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def sliding_max(times: list[float], width: float) -> int:
    """The most events in any window [t, t + width) (times sorted)."""
    best, j = 0, 0
    for i, t in enumerate(times):
        while t - times[j] >= width:
            j += 1
        best = max(best, i - j + 1)
    return best


async def collect_requests(
    fake: httpx.AsyncClient, since: float, into: list[Request], stop: asyncio.Event
) -> None:
    """Copy the fake's request log (bounded at 20,000 records) every few seconds."""
    while True:
        stopping = stop.is_set()
        reply = await fake.get("/__fake/requests", params={"since": repr(since)})
        reply.raise_for_status()
        for r in reply.json():
            path, query = _normalise(r["path"], r["query"])
            into.append(Request(r["time"], path, query, r["status"]))
            since = max(since, r["time"])
        if stopping:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 5.0)


def _normalise(path: str, query: dict[str, str]) -> tuple[str, dict[str, str]]:
    """A page of a user (/@name, /@name/live) under one path, the user in ``uniqueId``."""
    if not path.startswith("/@"):
        return path, query
    user, _, rest = path[2:].partition("/")
    return (LIVE_PAGE if rest.startswith("live") else PROFILE_PAGE), {**query, "uniqueId": user}


async def go_lives(
    fake: httpx.AsyncClient,
    users: list[str],
    offsets: list[float],
    t0: float,
    started: dict[str, tuple[str, float]],
) -> None:
    """Turn `users` live at t0 + offsets; room_id -> (user, time of the go-live call)."""
    for user, offset in zip(users, offsets, strict=True):
        await asyncio.sleep(max(0.0, t0 + offset - time.time()))
        at = time.time()
        reply = await fake.post(f"/__fake/users/{user}/live", json={})
        reply.raise_for_status()
        started[reply.json()["room_id"]] = (user, at)


async def run(cfg: RunConfig) -> Result:
    rng = random.Random(cfg.seed)
    tmp = Path(tempfile.mkdtemp(prefix="tlr-bench-sched-"))
    procs: list[subprocess.Popen[bytes]] = []
    nats = NatsServer(tmp / "nats")
    out = Result()
    print(f"\n== {cfg.name} ==", flush=True)
    try:
        await nats.start()
        fake_proc = subprocess.Popen(
            [sys.executable, "-m", "tlr.fake_tiktok", "--port", str(free_port())],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        procs.append(fake_proc)
        assert fake_proc.stdout is not None
        base = (await asyncio.to_thread(fake_proc.stdout.readline)).decode().strip()
        fake = httpx.AsyncClient(base_url=base, timeout=60)

        if not cfg.waf_challenge:
            reply = await fake.put("/__fake/scenario", json={"waf_challenge": False})
            reply.raise_for_status()

        # Accounts: every room-id watcher watches the (ended) room of its own account; every
        # watched user has streamed before, so a resolve gives a stale room id to check.
        digits = max(5, len(str(max(cfg.room_watchers, cfg.user_watchers))))
        owners = [f"room{i:0{digits}d}" for i in range(cfg.room_watchers)]
        users = [f"user{i:0{digits}d}" for i in range(cfg.user_watchers)]
        rooms: dict[str, str] = {}
        t_accounts = time.time()
        for names in (owners, users):
            for i in range(0, len(names), BULK_ACCOUNTS):  # bounded request bodies
                reply = await fake.post(
                    "/__fake/bulk/users",
                    json={"unique_ids": names[i : i + BULK_ACCOUNTS], "rooms": "ended"},
                )
                reply.raise_for_status()
                rooms.update(reply.json()["rooms"])
        print(f"{len(rooms)} accounts in the fake in {time.time() - t_accounts:.1f} s", flush=True)
        watched_rooms = {rooms[o] for o in owners}

        env = {
            **os.environ,
            "NATS_URL": nats.client_url,
            "SCHEDULER_DB": str(tmp / "scheduler.sqlite3"),
            "TIKTOK_WEB_BASE": base,
            "TIKTOK_WEBCAST_BASE": base,
            "CHECK_BATCH_SIZE": str(cfg.batch),
            "TIKTOK_REQUESTS_PER_MIN": str(cfg.budget),
            "LOG_LEVEL": "WARNING",
            "LOG_FORMAT": "json",
            "INSTANCE_ID": "bench-scheduler",
        }
        log_path = tmp / "scheduler.log"
        profiler = ["-m", "cProfile", "-o", str(cfg.profile)] if cfg.profile else []
        with log_path.open("wb") as log_file:
            sched_proc = subprocess.Popen(
                [sys.executable, *profiler, "-m", "services.scheduler"],
                cwd=ROOT,
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        procs.append(sched_proc)
        sched, fake_probe = Probe(sched_proc.pid), Probe(fake_proc.pid)
        assert nats.proc is not None
        nats_probe = Probe(nats.proc.pid)

        bus = await Bus.connect([nats.client_url], service="bench")
        assert bus is not None
        await bus.provision()
        detected: dict[str, float] = {}
        progress = asyncio.Event()

        async def on_live(msg: Any) -> None:
            event = events.decode(msg.data)
            if isinstance(event, RoomLive):
                detected.setdefault(event.room_id, time.time())
                progress.set()

        await bus.nc.subscribe("room.live", cb=on_live)

        async def total_watchers() -> int:
            try:
                reply = await bus.nc.request(
                    LIST, msgspec.json.encode(ListRequest(page=1, page_size=1)), timeout=5
                )
                return msgspec.json.decode(reply.data, type=ListReply).total
            except Exception:  # not answering yet
                return -1

        await wait_for(lambda: _ge(total_watchers, 0), 60, "the scheduler to answer", every=1.0)
        await asyncio.sleep(1)
        idle_rss = sched.rss()

        watch = [
            WatchRequested(
                task_id=f"bench-{o}", key=rooms[o], room_id=rooms[o], poll_interval=cfg.poll
            )
            for o in owners
        ] + [
            WatchRequested(
                task_id=f"bench-{u}", key=f"@{u}", unique_id=u, url=f"@{u}", poll_interval=cfg.poll
            )
            for u in users
        ]
        rng.shuffle(watch)
        t_reg, cpu_reg = time.time(), sched.cpu()
        for i in range(0, len(watch), 500):
            await asyncio.gather(*(bus.publish(w) for w in watch[i : i + 500]))
        t_pub = time.time()
        await wait_for(
            lambda: _ge(total_watchers, cfg.watchers),
            max(600, cfg.watchers / 50),
            "every watcher stored",
            every=1.0,
        )
        t_stored = time.time()
        cpu_stored, rss_stored, db_stored = sched.cpu(), sched.rss(), db_mib(tmp)
        out.add("watchers", f"{cfg.room_watchers} room-id + {cfg.user_watchers} @user")
        out.add("poll interval / batch", f"{cfg.poll} s / {cfg.batch} ids per check_alive")
        out.add("fake's WAF challenge", "on (every www page)" if cfg.waf_challenge else "off")
        out.add(
            "budget",
            f"{cfg.budget:.0f} req/min; a round of checks needs {cfg.need_per_interval} "
            f"requests = {cfg.need_per_min:.0f}/min",
        )
        out.add(
            "expected effective interval",
            f"{cfg.expected_interval:.0f} s (poll interval x max(1, need / budget))",
        )
        out.add(
            "registration",
            f"published in {t_pub - t_reg:.1f} s, all stored after {t_stored - t_reg:.1f} s, "
            f"scheduler CPU {cpu_stored - cpu_reg:.1f} s",
        )
        out.add(
            "after registration",
            f"scheduler RSS {rss_stored:.1f} MiB, SQLite {db_stored:.1f} MiB (db + wal)",
        )

        warmup = cfg.warmup if cfg.warmup is not None else cfg.expected_interval + 5
        await asyncio.sleep(max(0.0, t_stored + warmup - time.time()))

        # --- the measurement window --------------------------------------------------------
        log: list[Request] = []
        stop = asyncio.Event()
        t0 = time.time()
        cpu0 = (sched.cpu(), fake_probe.cpu(), nats_probe.cpu())
        collector = asyncio.create_task(collect_requests(fake, t0, log, stop))
        live_users = rng.sample(users, min(cfg.lives, len(users)))
        # Go-lives early enough that even the slowest detection still falls in the window.
        span = max(1.0, cfg.window - cfg.expected_interval - 5)
        offsets = sorted(rng.uniform(1.0, span) for _ in live_users)
        started: dict[str, tuple[str, float]] = {}
        lives_task = asyncio.create_task(go_lives(fake, live_users, offsets, t0, started))
        rss_samples: list[float] = []
        while time.time() < t0 + cfg.window:
            rss_samples.append(sched.rss())
            await asyncio.sleep(min(2.0, max(0.0, t0 + cfg.window - time.time())))
        t1 = time.time()
        cpu1 = (sched.cpu(), fake_probe.cpu(), nats_probe.cpu())
        rss_end = sched.rss()
        db_end = db_mib(tmp)
        await lives_task
        # Stragglers (only when the budget is the limit): wait a little more, outside the window.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(15):
                while not set(started) <= set(detected):
                    progress.clear()
                    await progress.wait()
        stop.set()
        await collector
        if sched_proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:]
            msg = f"the scheduler exited ({sched_proc.returncode}):\n{tail}"
            raise SystemExit(msg)
        await bus.close()
        await fake.aclose()

        _report(cfg, out, log, t0, t1, watched_rooms, users, started, detected)
        elapsed = t1 - t0
        cores = (cpu1[0] - cpu0[0]) / elapsed
        out.add(
            "scheduler CPU",
            f"{cores * 100:.1f} % of a core (utime+stime over the window) = "
            f"{cores * cfg.poll:.1f} s per {cfg.poll} s poll interval",
        )
        out.add(
            "scheduler RSS",
            f"{rss_end:.1f} MiB at the end, max {max(rss_samples):.1f} MiB "
            f"(idle, no watchers: {idle_rss:.1f} MiB)",
        )
        out.add("SQLite file", f"{db_end:.1f} MiB (db + wal) at the end of the window")
        out.add(
            "not counted",
            f"fake TikTok {(cpu1[1] - cpu0[1]) / elapsed * 100:.1f} % of a core, "
            f"nats-server {(cpu1[2] - cpu0[2]) / elapsed * 100:.1f} %",
        )
        warnings = Counter(
            _event_name(line) for line in log_path.read_text(errors="replace").splitlines()
        )
        out.add("scheduler warnings", ", ".join(f"{k} x{v}" for k, v in warnings.items()) or "none")
        return out
    finally:
        if cfg.profile and len(procs) > 1 and procs[1].poll() is None:
            procs[1].send_signal(signal.SIGTERM)  # drains and exits: cProfile writes its stats
            with contextlib.suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(procs[1].wait, 60)
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
        await nats.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def _event_name(line: str) -> str:
    try:
        record = json.loads(line)
        return str(record.get("msg") or record.get("event") or line[:60])  # shared/logging: msg
    except (ValueError, AttributeError):
        return line[:60]


def db_mib(tmp: Path) -> float:
    """Size of the scheduler's SQLite file with its WAL (and shared memory), MiB."""
    paths = [tmp / f"scheduler.sqlite3{suffix}" for suffix in ("", "-wal", "-shm")]
    return sum(p.stat().st_size for p in paths if p.exists()) / 2**20


async def _ge(get, value: int) -> bool:  # type: ignore[no-untyped-def]
    return bool(await get() >= value)


def _report(
    cfg: RunConfig,
    out: Result,
    log: list[Request],
    t0: float,
    t1: float,
    watched_rooms: set[str],
    users: list[str],
    started: dict[str, tuple[str, float]],
    detected: dict[str, float],
) -> None:
    elapsed = t1 - t0
    window = sorted((r for r in log if t0 <= r.time < t1), key=lambda r: r.time)
    minutes = elapsed / 60
    by_path = Counter(r.path for r in window)
    per_min = ", ".join(f"{p} {n / minutes:.0f}" for p, n in by_path.most_common())
    out.add("window", f"{elapsed:.0f} s")
    out.add("TikTok requests/min", f"{len(window) / minutes:.0f} total: {per_min}")
    bad = Counter(r.status for r in window if r.status != 200)
    out.add("non-200 answers", ", ".join(f"{s} x{n}" for s, n in bad.items()) or "none")

    # Budget and bursts: sliding windows against what the token bucket allows.
    times = [r.time for r in window]
    rate = cfg.budget / 60
    for width in (1.0, 10.0, 60.0):
        most = sliding_max(times, width)
        allowed = rate * width + BUCKET_CAPACITY
        verdict = "within" if most <= allowed else "OVER"
        out.add(
            f"max in any {width:.0f} s",
            f"{most} requests (budget {rate * width:.0f}, +{BUCKET_CAPACITY} bucket: {verdict})",
        )
    per_second = Counter(int(t - t0) for t in times)
    seconds = [per_second.get(s, 0) for s in range(int(elapsed))]
    per_10 = [sum(seconds[i : i + 10]) for i in range(0, len(seconds) - 9, 10)]
    idle = sum(1 for n in seconds if n == 0)
    out.add(
        "spread (per 1 s / per 10 s)",
        f"1 s: p50 {pct(seconds, 50):.0f}, max {max(seconds)}, {100 * idle / len(seconds):.0f} % "
        f"of seconds idle; 10 s: min {min(per_10)}, mean {sum(per_10) / len(per_10):.0f}, "
        f"max {max(per_10)}",
    )

    # Spread of watcher checks (a room id of a room-id watcher in check_alive, or a user's
    # resolve) over the interval, in back-to-back windows, against an even spread.
    check_times: list[float] = []
    for r in window:
        if r.path == CHECK_ALIVE:
            ids = r.query.get("room_ids", "").split(",")
            check_times.extend(r.time for rid in ids if rid in watched_rooms)
        elif r.path in RESOLVES:
            check_times.append(r.time)
    even = cfg.watchers / cfg.expected_interval
    for width in (1, 10, 60):
        buckets = Counter(int((t - t0) // width) for t in check_times)
        counts = [buckets.get(b, 0) for b in range(int(elapsed // width))]
        if not counts:
            continue
        out.add(
            f"watcher checks per {width} s",
            f"min {min(counts)}, p50 {pct(counts, 50):.0f}, max {max(counts)} "
            f"(even spread: {even * width:.0f}; max/even {max(counts) / (even * width):.2f}, "
            f"{len(counts)} windows)",
        )

    # check_alive economy.
    checks = [r for r in window if r.path == CHECK_ALIVE]
    ids_per_call = [len(r.query.get("room_ids", "").split(",")) for r in checks]
    intervals = elapsed / cfg.poll
    expected_rooms = math.ceil(cfg.room_watchers / cfg.batch)
    expected_all = math.ceil((cfg.room_watchers + cfg.user_watchers) / cfg.batch)
    if checks:
        out.add(
            "check_alive per poll interval",
            f"{len(checks) / intervals:.0f} (room-id watchers/batch = {expected_rooms}; with the "
            f"users' room ids {expected_all}); ids per call mean "
            f"{sum(ids_per_call) / len(ids_per_call):.1f}, "
            f"{100 * sum(1 for n in ids_per_call if n == cfg.batch) / len(checks):.0f} % full",
        )

    # Effective poll interval: time between two checks of the same watcher in the window.
    seen: dict[str, list[float]] = defaultdict(list)
    for r in window:
        if r.path == CHECK_ALIVE:
            for rid in r.query.get("room_ids", "").split(","):
                if rid in watched_rooms:
                    seen[rid].append(r.time)
        elif r.path in RESOLVES:
            seen["@" + r.query.get("uniqueId", "")].append(r.time)
    for label, keys in (("room-id", watched_rooms), ("@user", {f"@{u}" for u in users})):
        gaps = [b - a for k in keys for a, b in zip(seen[k], seen[k][1:], strict=False)]
        checked = sum(1 for k in keys if seen[k])
        if gaps:
            out.add(
                f"effective interval, {label}",
                f"p50 {pct(gaps, 50):.1f} s, p99 {pct(gaps, 99):.1f} s, max {max(gaps):.1f} s "
                f"({len(gaps)} gaps; {checked}/{len(keys)} watchers checked in the window)",
            )
        else:
            out.add(f"effective interval, {label}", f"no watcher checked twice ({checked} once)")

    # Detection latency on the users turned live during the window.
    latencies = [detected[rid] - at for rid, (_, at) in started.items() if rid in detected]
    missed = len(started) - len(latencies)
    if latencies:
        out.add(
            "detection latency",
            f"p50 {pct(latencies, 50):.1f} s, p99 {pct(latencies, 99):.1f} s, max "
            f"{max(latencies):.1f} s ({len(latencies)} go-lives; not detected: {missed}); "
            f"target p99 <= {cfg.poll + 2} s",
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--room-watchers", type=int, default=8000)
    parser.add_argument("--user-watchers", type=int, default=2000)
    parser.add_argument(
        "--watchers",
        type=int,
        help="watchers in all, 80 %% by room id and 20 %% by @user (overrides the two above)",
    )
    parser.add_argument(
        "--waf-challenge",
        choices=("on", "off"),
        default="on",
        help="the fake's proof of work on every www page (on: its default; a solve costs "
        "~0.2 s of CPU per @user check)",
    )
    parser.add_argument(
        "--profile", type=Path, help="run the scheduler under cProfile; its stats go to this file"
    )
    parser.add_argument("--poll", type=int, default=60, help="poll_interval of every watcher, s")
    parser.add_argument("--batch", type=int, default=50, help="CHECK_BATCH_SIZE")
    parser.add_argument(
        "--budget", type=float, help="TIKTOK_REQUESTS_PER_MIN (default: 1.4 x what is needed)"
    )
    parser.add_argument("--window", type=float, default=180.0, help="seconds measured")
    parser.add_argument("--warmup", type=float, help="s after registration (default: 1 interval)")
    parser.add_argument("--lives", type=int, default=60, help="users turned live in the window")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-tight", action="store_true", help="skip the tight-budget run")
    parser.add_argument("--only-tight", action="store_true", help="only the tight-budget run")
    parser.add_argument("--tight-room-watchers", type=int, default=1600)
    parser.add_argument("--tight-user-watchers", type=int, default=400)
    parser.add_argument("--tight-poll", type=int, default=30)
    parser.add_argument(
        "--tight-ratio", type=float, default=0.5, help="tight budget = ratio x what is needed"
    )
    parser.add_argument("--tight-window", type=float, default=120.0)
    parser.add_argument("--tight-lives", type=int, default=20)
    args = parser.parse_args()
    if args.watchers is not None:
        args.room_watchers = round(args.watchers * 0.8)
        args.user_watchers = args.watchers - args.room_watchers

    main_cfg = RunConfig(
        name="budget that allows the load",
        room_watchers=args.room_watchers,
        user_watchers=args.user_watchers,
        poll=args.poll,
        batch=args.batch,
        budget=0.0,
        window=args.window,
        lives=args.lives,
        warmup=args.warmup,
        seed=args.seed,
        profile=args.profile.resolve() if args.profile else None,
        waf_challenge=args.waf_challenge == "on",
    )
    main_cfg.budget = args.budget or math.ceil(main_cfg.need_per_min * 1.4 / 100) * 100
    tight = RunConfig(
        name=f"tight budget ({args.tight_ratio:.0%} of what the watchers need)",
        room_watchers=args.tight_room_watchers,
        user_watchers=args.tight_user_watchers,
        poll=args.tight_poll,
        batch=args.batch,
        budget=0.0,
        window=args.tight_window,
        lives=args.tight_lives,
        warmup=None,
        seed=args.seed + 1,
        waf_challenge=args.waf_challenge == "on",
    )
    tight.budget = round(tight.need_per_min * args.tight_ratio)
    configs = [] if args.only_tight else [main_cfg]
    if not args.no_tight:
        configs.append(tight)
    configure_logging("bench", "WARNING", "console")
    for cfg in configs:
        asyncio.run(run(cfg))


if __name__ == "__main__":
    main()
