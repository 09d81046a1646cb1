"""The egress pool at scale: 2,000 @user and 8,000 room-id watchers over 50 proxies, one blocked
halfway (issue 18).

Starts a nats-server, the fake TikTok (its own process), 50 tagging proxies (tests/http_proxy.py,
in this process: each forwarded request carries its proxy's name in the fake's EGRESS_HEADER)
and one scheduler process whose EGRESS_FILE lists the 50 proxies, each with its own budget.
It registers the watchers through NATS (`watch.requested`, none with a proxy of its own, so
the pool spreads them all), and measures from the moment every watcher is stored:

- requests per egress, from the fake's request log (the proxy's tag on each request): the most
  in any 10 s and 60 s sliding window of each egress against its budget (+ the token bucket's
  2), the max over the egresses: the budget must never be exceeded;
- halfway, the fake blocks one egress (its `blocked_egresses`: WAF pages on www, empty bodies
  from the APIs, to the requests that proxy tags); how long until the pool sidelines it and
  has moved all its watchers (the scheduler's `egresses.list`), and, black-box, until every
  watcher that was checked through it in the interval before the block is checked through
  another egress: both must be within two poll intervals;
- every watcher keeps being checked: a check is a request that names the watcher (a room id in
  a check_alive call, a user's profile page) and went through a working egress; the longest
  gap of each watcher over the window (from the first watcher stored to the end: the bulk
  import's first round included), the effective interval, and any watcher not checked within
  two intervals;
- no live missed: after the block, users go live at the fake (half of them among the users
  the blocked egress was checking), and `room.live` must come within the poll interval (+2 s)
  of the go-live, through a working egress. The lives are detected, not recorded (no recorder:
  10,000 watchers already fill this 2-core machine's share; tests/integration/test_egress_pool.py
  records one live through a pool with a blocked proxy).

The fake cannot make an ended room id live again (TikTok issues a new room id per live), so
lives are on @user watchers; room-id watchers are measured for cost, moves and intervals. The
fake's WAF proof of work is off (as in scheduler_scale.py's 100,000 run): with it on, every
@user check costs ~0.2 s of CPU, and 2,000 users at 60 s would need ~7 cores.

    flock /tmp/bench.lock .venv/bin/python bench/egress_pool.py              # ~5.5 minutes
    .venv/bin/python bench/egress_pool.py --minutes 3 --lives 10           # shorter
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgspec

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._proc import cpu_seconds, free_port, wait_for  # noqa: E402
from bench.scheduler_scale import (  # noqa: E402
    BUCKET_CAPACITY,
    BULK_ACCOUNTS,
    CHECK_ALIVE,
    RESOLVES,
    Probe,
    Result,
    _event_name,
    _ge,
    _normalise,
    go_lives,
    pct,
    sliding_max,
)
from shared import events  # noqa: E402
from shared.bus import Bus  # noqa: E402
from shared.egresses import LIST as EGRESSES_LIST  # noqa: E402
from shared.egresses import EgressList  # noqa: E402
from shared.events import RoomLive, WatchRequested  # noqa: E402
from shared.logging import configure_logging  # noqa: E402
from shared.secrets import new_key  # noqa: E402
from shared.watchers import LIST, ListReply, ListRequest  # noqa: E402
from tests.http_proxy import AuthProxy  # noqa: E402
from tlr.fake_tiktok.app import EGRESS_HEADER  # noqa: E402
from tlr.nats_server import NatsServer  # noqa: E402

TAG = EGRESS_HEADER.lower()  # the fake logs header names in lower case
PROXY_USER = "bench"
LIVE_MARGIN = 2.0  # s: detection within poll_interval + this (the scheduler bench's target)


@dataclass
class Config:
    room_watchers: int
    user_watchers: int
    egresses: int
    poll: int
    batch: int
    budget: float  # requests per minute, each egress
    window: float  # s, from every watcher stored; the block comes halfway
    lives: int
    seed: int

    @property
    def need_per_min(self) -> float:
        """What the watchers cost a minute (the pool's own sum: a resolve per user, and every
        watcher's share of a check_alive batch)."""
        per_interval = self.user_watchers + (self.user_watchers + self.room_watchers) / self.batch
        return per_interval * 60.0 / self.poll


@dataclass
class Request:
    time: float
    path: str
    query: dict[str, str]
    status: int | None
    egress: str | None  # the tag of the proxy it came through


@dataclass
class PoolSample:
    time: float
    pool: EgressList


@dataclass
class Run:
    """What happened, for the report."""

    cfg: Config
    t0: float = 0.0  # every watcher stored
    t_block: float = 0.0
    t1: float = 0.0
    blocked: str = ""
    log: list[Request] = field(default_factory=list)
    samples: list[PoolSample] = field(default_factory=list)
    room_of: dict[str, str] = field(default_factory=dict)  # room id -> watcher key
    users: set[str] = field(default_factory=set)  # the @user watchers' keys
    started: dict[str, tuple[str, float]] = field(default_factory=dict)  # room -> user, at
    detected: dict[str, tuple[float, str | None]] = field(default_factory=dict)  # -> at, egress
    on_blocked: set[str] = field(default_factory=set)  # keys checked through it before
    cpu: tuple[float, ...] = ()  # cores over the window: scheduler, fake, this process
    rss: float = 0.0  # the scheduler's, MiB, at the end of the window
    warnings: Counter[str] = field(default_factory=Counter)  # the scheduler's log


async def collect_requests(
    fake: httpx.AsyncClient, since: float, into: list[Request], stop: asyncio.Event
) -> None:
    """Copy the fake's request log (bounded at 20,000 records) every few seconds, with the
    egress tag scheduler_scale.collect_requests leaves out."""
    while True:
        stopping = stop.is_set()
        reply = await fake.get("/__fake/requests", params={"since": repr(since)})
        reply.raise_for_status()
        for r in reply.json():
            path, query = _normalise(r["path"], r["query"])
            into.append(Request(r["time"], path, query, r["status"], r["headers"].get(TAG)))
            since = max(since, r["time"])
        if stopping:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 5.0)


async def watch_pool(bus: Bus, into: list[PoolSample], stop: asyncio.Event) -> None:
    """The scheduler's view of the pool, every second."""
    while not stop.is_set():
        with contextlib.suppress(Exception):  # a slow answer: the next sample
            reply = await bus.nc.request(EGRESSES_LIST, b"", timeout=2)
            into.append(PoolSample(time.time(), msgspec.json.decode(reply.data, type=EgressList)))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)


def checked_keys(r: Request, room_of: dict[str, str]) -> list[str]:
    """The watchers a request checks: the room ids of a check_alive call (a room-id watcher's
    room, a live user's room), the user of a profile page."""
    if r.path == CHECK_ALIVE:
        ids = r.query.get("room_ids", "").split(",")
        return [room_of[i] for i in ids if i in room_of]
    if r.path in RESOLVES and r.query.get("uniqueId"):
        return ["@" + r.query["uniqueId"]]
    return []


async def run(cfg: Config) -> Run:
    rng = random.Random(cfg.seed)
    tmp = Path(tempfile.mkdtemp(prefix="tlr-bench-egress-"))
    procs: list[subprocess.Popen[bytes]] = []
    nats = NatsServer(tmp / "nats")
    state = Run(cfg)
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
        reply = await fake.put("/__fake/scenario", json={"waf_challenge": False})
        reply.raise_for_status()

        # Accounts, each with one ended live: a room-id watcher watches its account's ended
        # room, a user's resolve gives a stale room id that joins the check_alive batches.
        digits = max(5, len(str(max(cfg.room_watchers, cfg.user_watchers))))
        owners = [f"room{i:0{digits}d}" for i in range(cfg.room_watchers)]
        users = [f"user{i:0{digits}d}" for i in range(cfg.user_watchers)]
        rooms: dict[str, str] = {}
        for names in (owners, users):
            for i in range(0, len(names), BULK_ACCOUNTS):
                reply = await fake.post(
                    "/__fake/bulk/users",
                    json={"unique_ids": names[i : i + BULK_ACCOUNTS], "rooms": "ended"},
                )
                reply.raise_for_status()
                rooms.update(reply.json()["rooms"])
        # A user is checked by its resolve; its stale room id in a check_alive batch is the same
        # check's second half, not a check of its own (only a live user's room is).
        state.room_of = {rooms[o]: rooms[o] for o in owners}
        state.users = {f"@{u}" for u in users}

        async with contextlib.AsyncExitStack() as stack:
            password = new_key()[:16]
            names = [f"eg{i:02d}" for i in range(cfg.egresses)]
            proxies = [
                await stack.enter_async_context(AuthProxy(PROXY_USER, password, tag=name))
                for name in names
            ]
            egress_file = tmp / "egresses"
            egress_file.write_text(
                "".join(f"{p.tag} {p.url()} {cfg.budget:g}\n" for p in proxies), encoding="utf-8"
            )
            env = {
                **os.environ,
                "NATS_URL": nats.client_url,
                "SCHEDULER_DB": str(tmp / "scheduler.sqlite3"),
                "TIKTOK_WEB_BASE": base,
                "TIKTOK_WEBCAST_BASE": base,
                "CHECK_BATCH_SIZE": str(cfg.batch),
                "TIKTOK_REQUESTS_PER_MIN": str(cfg.budget),
                "EGRESS_FILE": str(egress_file),
                "SECRET_KEY": new_key(),
                "ALLOW_PRIVATE_PROXIES": "true",  # the proxies listen on loopback
                "LOG_LEVEL": "WARNING",
                "LOG_FORMAT": "json",
                "INSTANCE_ID": "bench-scheduler",
            }
            log_path = tmp / "scheduler.log"
            with log_path.open("wb") as log_file:
                sched_proc = subprocess.Popen(
                    [sys.executable, "-m", "services.scheduler"],
                    cwd=ROOT,
                    env=env,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                )
            procs.append(sched_proc)
            await measure(cfg, state, rng, fake, nats, sched_proc, fake_proc, owners, users, rooms)
            if sched_proc.poll() is not None:
                tail = log_path.read_text(errors="replace")[-2000:]
                msg = f"the scheduler exited ({sched_proc.returncode}):\n{tail}"
                raise SystemExit(msg)
            state.warnings = Counter(
                _event_name(line) for line in log_path.read_text(errors="replace").splitlines()
            )
            await fake.aclose()
        return state
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
        await nats.stop()
        shutil.rmtree(tmp, ignore_errors=True)


async def measure(
    cfg: Config,
    state: Run,
    rng: random.Random,
    fake: httpx.AsyncClient,
    nats: NatsServer,
    sched_proc: subprocess.Popen[bytes],
    fake_proc: subprocess.Popen[bytes],
    owners: list[str],
    users: list[str],
    rooms: dict[str, str],
) -> None:
    bus = await Bus.connect([nats.client_url], service="bench")
    assert bus is not None
    await bus.provision()

    progress = asyncio.Event()

    async def on_live(msg: Any) -> None:
        event = events.decode(msg.data)
        if isinstance(event, RoomLive) and event.room_id not in state.detected:
            state.detected[event.room_id] = (time.time(), event.egress)
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

    async def pool_ready() -> bool:
        with contextlib.suppress(Exception):
            reply = await bus.nc.request(EGRESSES_LIST, b"", timeout=2)
            return len(msgspec.json.decode(reply.data, type=EgressList).items) == cfg.egresses
        return False

    await wait_for(pool_ready, 60, "the pool read from EGRESS_FILE", every=1.0)
    sched, fake_probe = Probe(sched_proc.pid), Probe(fake_proc.pid)
    watch = [
        WatchRequested(task_id=f"bench-{o}", key=rooms[o], room_id=rooms[o], poll_interval=cfg.poll)
        for o in owners
    ] + [
        WatchRequested(
            task_id=f"bench-{u}", key=f"@{u}", unique_id=u, url=f"@{u}", poll_interval=cfg.poll
        )
        for u in users
    ]
    rng.shuffle(watch)
    t_reg = time.time()
    stop = asyncio.Event()
    collector = asyncio.create_task(collect_requests(fake, t_reg, state.log, stop))
    sampler = asyncio.create_task(watch_pool(bus, state.samples, stop))
    for i in range(0, len(watch), 500):
        await asyncio.gather(*(bus.publish(w) for w in watch[i : i + 500]))
    await wait_for(lambda: _ge(total_watchers, len(watch)), 600, "every watcher stored", every=1.0)
    state.t0 = time.time()
    print(f"{len(watch)} watchers stored in {state.t0 - t_reg:.1f} s", flush=True)
    cpu0 = (sched.cpu(), fake_probe.cpu(), cpu_seconds(os.getpid()))

    # Halfway: block one egress at the fake. Its watchers of the last interval are the ones
    # that must move.
    await asyncio.sleep(max(0.0, state.t0 + cfg.window / 2 - time.time()))
    state.blocked = rng.choice([f"eg{i:02d}" for i in range(cfg.egresses)])
    reply = await fake.put("/__fake/scenario", json={"blocked_egresses": [state.blocked]})
    reply.raise_for_status()
    state.t_block = time.time()
    print(f"blocked {state.blocked} at +{state.t_block - state.t0:.0f} s", flush=True)
    await asyncio.sleep(6.0)  # the collector's next copy holds the requests up to the block
    state.on_blocked = {
        key
        for r in state.log
        if r.egress == state.blocked and state.t_block - cfg.poll <= r.time < state.t_block
        for key in checked_keys(r, state.room_of)
    }

    # Lives after the block, half among the blocked egress's users, early enough to be
    # detected (one interval + margin) before the window ends.
    moved_users = sorted(k[1:] for k in state.on_blocked if k.startswith("@"))
    picked = rng.sample(moved_users, min(cfg.lives // 2, len(moved_users)))
    others = [u for u in users if u not in set(picked)]
    picked += rng.sample(others, min(cfg.lives - len(picked), len(others)))
    rng.shuffle(picked)
    first = time.time() - state.t_block
    span = max(first + 1.0, cfg.window / 2 - cfg.poll - LIVE_MARGIN - 5.0)
    offsets = sorted(rng.uniform(first, span) for _ in picked)
    lives = asyncio.create_task(go_lives(fake, picked, offsets, state.t_block, state.started))

    await asyncio.sleep(max(0.0, state.t0 + cfg.window - time.time()))
    state.t1 = time.time()
    cpu1 = (sched.cpu(), fake_probe.cpu(), cpu_seconds(os.getpid()))
    state.cpu = tuple((b - a) / (state.t1 - state.t0) for a, b in zip(cpu0, cpu1, strict=True))
    state.rss = sched.rss()
    await lives
    for room, (user, _) in state.started.items():
        state.room_of[room] = f"@{user}"
    with contextlib.suppress(TimeoutError):  # stragglers: outside the window
        async with asyncio.timeout(15):
            while not set(state.started) <= set(state.detected):
                progress.clear()
                await progress.wait()
    stop.set()
    await collector
    await sampler
    await bus.close()


def report(state: Run) -> Result:
    cfg, out = state.cfg, Result()
    t0, t1, tb = state.t0, state.t1, state.t_block
    window = sorted((r for r in state.log if t0 <= r.time < t1), key=lambda r: r.time)
    minutes = (t1 - t0) / 60
    out.add(
        "watchers",
        f"{cfg.room_watchers} room-id + {cfg.user_watchers} @user, poll {cfg.poll} s, "
        f"{cfg.batch} ids per check_alive",
    )
    need = cfg.need_per_min
    out.add(
        "egresses",
        f"{cfg.egresses} tagging proxies, budget {cfg.budget:g} req/min each; the watchers "
        f"need {need:.0f}/min = {need / cfg.egresses:.1f} per egress "
        f"({need / (cfg.egresses - 1):.1f} with one out)",
    )
    out.add(
        "window",
        f"{t1 - t0:.0f} s from every watcher stored; {state.blocked} blocked at +{tb - t0:.0f} s",
    )
    by_path = Counter(r.path for r in window)
    out.add(
        "TikTok requests/min",
        f"{len(window) / minutes:.0f}: "
        + ", ".join(f"{p} {n / minutes:.0f}" for p, n in by_path.most_common()),
    )
    untagged = sum(1 for r in window if r.egress is None)
    out.add("requests not through a proxy", str(untagged))

    # --- budget, per egress ------------------------------------------------------------
    times: dict[str, list[float]] = defaultdict(list)
    for r in window:
        if r.egress is not None:
            times[r.egress].append(r.time)
    rate = cfg.budget / 60
    for width in (10.0, 60.0):
        most = {e: sliding_max(ts, width) for e, ts in times.items()}
        worst = max(most, key=lambda e: most[e])
        allowed = rate * width + BUCKET_CAPACITY
        over = [e for e, n in most.items() if n > allowed]
        out.add(
            f"most requests in any {width:.0f} s",
            f"{most[worst]} ({worst}; budget {rate * width:.1f} +{BUCKET_CAPACITY} bucket); "
            f"egresses over: {len(over)} of {len(most)}"
            + (f" ({', '.join(sorted(over))})" if over else ""),
        )
    for label, a, b in (("before the block", t0 + cfg.poll, tb), ("after the block", tb, t1)):
        span = (b - a) / 60
        if span <= 0:
            continue
        counts = [
            sum(1 for t in times.get(e, []) if a <= t < b) / span
            for e in (f"eg{i:02d}" for i in range(cfg.egresses))
            if e != state.blocked
        ]
        blocked = sum(1 for t in times.get(state.blocked, []) if a <= t < b) / span
        out.add(
            f"req/min per egress, {label}",
            f"min {min(counts):.1f}, mean {sum(counts) / len(counts):.1f}, max {max(counts):.1f} "
            f"(the blocked one: {blocked:.1f})",
        )

    # --- the block: the pool's view and the watchers' ----------------------------------
    after = [s for s in state.samples if s.time >= tb]
    sidelined = next(
        (
            s.time
            for s in after
            for e in s.pool.items
            if e.name == state.blocked and e.state != "healthy"
        ),
        None,
    )
    emptied = next(
        (
            s.time
            for s in after
            for e in s.pool.items
            if e.name == state.blocked and e.state != "healthy" and e.assigned_watchers == 0
        ),
        None,
    )
    before = [s for s in state.samples if s.time < tb]
    had = (
        next((e.assigned_watchers for e in before[-1].pool.items if e.name == state.blocked), 0)
        if before
        else 0
    )
    out.add(
        "pool: blocked egress sidelined",
        _after(sidelined, tb) + f"; all {had} of its watchers moved: " + _after(emptied, tb),
    )
    first_ok: dict[str, float] = {}
    for r in window:
        if r.time >= tb and r.egress not in (None, state.blocked):
            for key in checked_keys(r, state.room_of):
                first_ok.setdefault(key, r.time)
    moves = sorted(first_ok[k] - tb for k in state.on_blocked if k in first_ok)
    never = len(state.on_blocked) - len(moves)
    late = sum(1 for m in moves if m > 2 * cfg.poll) + never
    if moves:
        out.add(
            "its watchers checked elsewhere",
            f"{len(state.on_blocked)} checked through {state.blocked} in the interval before "
            f"the block; each checked through another egress after p50 {pct(moves, 50):.1f} s, "
            f"max {max(moves):.1f} s; not within 2 intervals ({2 * cfg.poll} s): {late}",
        )
    last = state.samples[-1].pool if state.samples else None
    if last is not None:
        healthy = [e for e in last.items if e.state == "healthy"]
        blocked_now = next(e for e in last.items if e.name == state.blocked)
        watchers = [e.assigned_watchers for e in healthy]
        needs = [e.need_per_min for e in healthy]
        out.add(
            "pool at the end",
            f"{len(healthy)} healthy, watchers per egress {min(watchers)}-{max(watchers)}, "
            f"need per egress {min(needs):.1f}-{max(needs):.1f}/min; "
            f"{state.blocked}: {blocked_now.state} ({blocked_now.reason}), "
            f"{blocked_now.assigned_watchers} watchers, {blocked_now.waf_answers} WAF answers, "
            f"probe backoff {blocked_now.backoff_s:.0f} s",
        )

    # --- every watcher keeps being checked ---------------------------------------------
    seen: dict[str, list[float]] = defaultdict(list)
    for r in window:
        if r.egress is None or (r.egress == state.blocked and r.time >= tb):
            continue  # not through the pool, or an answer of the block
        for key in checked_keys(r, state.room_of):
            seen[key].append(r.time)
    keys = set(state.room_of.values()) | state.users
    longest: dict[str, float] = {}
    for key in keys:
        ts = [t0, *seen.get(key, []), t1]
        longest[key] = max(b - a for a, b in itertools.pairwise(ts))
    for label, group in (
        ("room-id", [k for k in keys if not k.startswith("@")]),
        ("@user", [k for k in keys if k.startswith("@")]),
    ):
        gaps = [b - a for k in group for a, b in itertools.pairwise(seen[k])]
        if gaps:
            out.add(
                f"effective interval, {label}",
                f"p50 {pct(gaps, 50):.1f} s, p99 {pct(gaps, 99):.1f} s, max {max(gaps):.1f} s "
                f"({len(gaps)} gaps, {sum(1 for k in group if seen[k])}/{len(group)} checked)",
            )
    worst = sorted(longest.values())
    stale = [k for k, g in longest.items() if g > 2 * cfg.poll]
    out.add(
        "longest gap per watcher",
        f"p50 {pct(worst, 50):.1f} s, p99 {pct(worst, 99):.1f} s, max {max(worst):.1f} s "
        f"(window edges counted); not checked within 2 intervals: {len(stale)} of {len(keys)}"
        + (
            f", {sum(1 for k in stale if k in state.on_blocked)} of them the blocked egress's"
            if stale
            else ""
        ),
    )

    # --- lives after the block ---------------------------------------------------------
    latencies = []
    through_blocked = 0
    for room, (_, at) in state.started.items():
        if room in state.detected:
            seen_at, egress = state.detected[room]
            latencies.append(seen_at - at)
            through_blocked += egress == state.blocked
    missed = len(state.started) - len(latencies)
    if state.started:
        moved_lives = sum(1 for _, (u, _) in state.started.items() if f"@{u}" in state.on_blocked)
        late = sum(1 for x in latencies if x > cfg.poll + LIVE_MARGIN) + missed
        lat = (
            f"p50 {pct(latencies, 50):.1f} s, p99 {pct(latencies, 99):.1f} s, max "
            f"{max(latencies):.1f} s; "
            if latencies
            else ""
        )
        out.add(
            "lives after the block",
            f"{len(state.started)} go-lives ({moved_lives} of the blocked egress's users): "
            f"detection {lat}not detected {missed}; later than {cfg.poll + LIVE_MARGIN:.0f} s: "
            f"{late}; room.live through {state.blocked}: {through_blocked}",
        )
    cpu = state.cpu
    out.add(
        "CPU (% of a core over the window)",
        f"scheduler {cpu[0] * 100:.1f} % (RSS {state.rss:.0f} MiB), "
        f"fake TikTok {cpu[1] * 100:.1f} %, this process (50 proxies) {cpu[2] * 100:.1f} %",
    )
    out.add(
        "scheduler warnings",
        ", ".join(f"{k} x{v}" for k, v in state.warnings.items()) or "none",
    )
    return out


def _after(at: float | None, since: float) -> str:
    return "not seen" if at is None else f"{at - since:.1f} s after the block"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--room-watchers", type=int, default=8000)
    parser.add_argument("--user-watchers", type=int, default=2000)
    parser.add_argument("--egresses", type=int, default=50)
    parser.add_argument("--poll", type=int, default=60, help="poll_interval of every watcher, s")
    parser.add_argument("--batch", type=int, default=50, help="CHECK_BATCH_SIZE")
    parser.add_argument(
        "--budget",
        type=float,
        help="requests per minute of each egress (default: 1.4 x what each needs with one out)",
    )
    parser.add_argument(
        "--minutes",
        type=float,
        default=4.5,
        help="the window from every watcher stored; the block comes halfway (default 4.5: "
        "more than two intervals on each side at poll 60 s)",
    )
    parser.add_argument("--lives", type=int, default=20, help="users turned live after the block")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    cfg = Config(
        room_watchers=args.room_watchers,
        user_watchers=args.user_watchers,
        egresses=args.egresses,
        poll=args.poll,
        batch=args.batch,
        budget=0.0,
        window=args.minutes * 60,
        lives=args.lives,
        seed=args.seed,
    )
    cfg.budget = args.budget or math.ceil(cfg.need_per_min / (cfg.egresses - 1) * 1.4)
    configure_logging("bench", "WARNING", "console")
    load = Path("/proc/loadavg").read_text().split()[:3]
    print(f"load average at the start: {' / '.join(load)}", flush=True)
    report(asyncio.run(run(cfg)))


if __name__ == "__main__":
    main()
