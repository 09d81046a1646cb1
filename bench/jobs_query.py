"""GET /jobs at ~100,000 jobs: the job index's catch-up, then latency through the gateway.

Writes ``--jobs`` job documents into KV ``jobs`` on a fresh nats-server (requests created over
30 days, four owners; most with a recording document written twice, STARTED then its end),
then starts one indexer (`python -m services.indexer`, an empty INDEX_DB) and times how long
its job index takes to read the bucket's stream from the start. Then a gateway
(`python -m services.gateway`), and HTTP requests from this process as the key owning a
quarter of the jobs (``role=user``): page 1, a cursor walk through all of its jobs, each
filter. Last, the indexer is stopped, ``--changes`` documents are written, and it is started
again: the time it takes to catch up from its stored position.

    .venv/bin/python bench/jobs_query.py                    # ~1 minute on 2 vCPUs
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import msgspec

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._proc import free_port, rss_mib, wait_for  # noqa: E402
from shared.bus import Bus  # noqa: E402
from shared.jobs import (  # noqa: E402
    JobRequest,
    RecordingPart,
    RecState,
    recording_key,
    request_key,
)
from shared.subjects import JOBS_BUCKET  # noqa: E402
from tlr.nats_server import NatsServer  # noqa: E402

KEY = "bench-key"
OWNERS = ("bench", "other-a", "other-b", "other-c")  # "bench" is KEY's name
START = datetime(2026, 11, 1, tzinfo=UTC)
SPAN_S = 30 * 86_400
ENDS: tuple[RecState, ...] = ("SUCCESS",) * 14 + ("FAILURE",) * 3 + ("CANCELLED", "RETRY")


def room_id(n: int) -> str:
    return f"7{n:018d}"


def documents(count: int, rooms: int, seed: int, prefix: str) -> Any:
    """(key, value) of ``count`` jobs: the request, then (9 in 10) its recording twice."""
    rnd = random.Random(seed)
    for i in range(count):
        job_id = f"{prefix}{i:07d}-{rnd.getrandbits(32):08x}"
        room = rnd.randrange(rooms)
        created = START + timedelta(seconds=rnd.uniform(0, SPAN_S))
        request = JobRequest(
            job_id=job_id,
            room_id=room_id(room),
            url=f"https://www.tiktok.com/@user{room}/live",
            created_at=created,
            owner=OWNERS[i % len(OWNERS)],
        )
        yield request_key(job_id), msgspec.json.encode(request)
        if i % 10 == 9:
            continue  # still PENDING
        rec = RecordingPart(job_id=job_id, room_id=room_id(room), unique_id=f"user{room}")
        yield recording_key(job_id), msgspec.json.encode(rec)
        rec.state = rnd.choice(ENDS)
        rec.error_code = "LIVE_OFFLINE" if rec.state == "FAILURE" else None
        yield recording_key(job_id), msgspec.json.encode(rec)


async def write(bus: Bus, docs: Any) -> tuple[int, float]:
    started = time.perf_counter()
    n = 0
    for key, value in docs:
        await bus.js.publish_async(f"$KV.{JOBS_BUCKET}.{key}", value)
        n += 1
    await bus.js.publish_async_completed()
    return n, time.perf_counter() - started


def position(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            row = conn.execute("SELECT seq FROM job_index_position WHERE id = 1").fetchone()
    except sqlite3.OperationalError:
        return 0
    return int(row[0]) if row else 0


async def caught_up(bus: Bus, db: Path, timeout: float) -> float:
    """Seconds until the index's position reaches the stream's last sequence."""
    last = (await bus.js.stream_info(f"KV_{JOBS_BUCKET}")).state.last_seq
    started = time.perf_counter()

    async def there() -> bool:
        return await asyncio.to_thread(position, db) >= last

    await wait_for(there, timeout, "the job index to catch up", every=0.05)
    return time.perf_counter() - started


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def get(client: httpx.AsyncClient, params: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    t = time.perf_counter()
    r = await client.get("/jobs", params=params, headers={"X-API-Key": KEY})
    ms = (time.perf_counter() - t) * 1000
    if r.status_code != 200:
        msg = f"GET /jobs {params} -> {r.status_code} {r.text[:200]}"
        raise SystemExit(msg)
    body: dict[str, Any] = r.json()
    return ms, body


def start(name: str, env: dict[str, str], tmp: Path) -> subprocess.Popen[bytes]:
    log = (tmp / f"{name}.log").open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", f"services.{name}"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


async def run(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="tlr-jobs-bench-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        async with NatsServer(tmp / "nats") as nats:
            bus = await Bus.connect([nats.client_url], service="bench")
            assert bus is not None
            await bus.provision()
            n, secs = await write(bus, documents(args.jobs, args.rooms, args.seed, "j"))
            print(f"wrote {n:,} documents of {args.jobs:,} jobs in {secs:.1f} s", flush=True)
            db = tmp / "index.sqlite3"
            port = free_port()
            keys_file = tmp / "api-keys"
            keys_file.write_text(f"{OWNERS[0]} {KEY} role=user\n")
            env = {
                **os.environ,
                "NATS_URL": nats.client_url,
                "INDEX_DB": str(db),
                "RECORDINGS_DIR": str(tmp / "recordings"),
                "API_KEYS": "",
                "API_KEYS_FILE": str(keys_file),
                "RATE_LIMIT_PER_MIN": "1000000000",
                "GATEWAY_PORT": str(port),
                "LOG_LEVEL": "WARNING",
                "LOG_FORMAT": "json",
            }
            (tmp / "recordings").mkdir()
            indexer = start("indexer", env, tmp)
            procs.append(indexer)
            full = await caught_up(bus, db, 600)
            print(f"empty index caught up in {full:.1f} s ({n / full:,.0f} documents/s)")
            procs.append(start("gateway", env, tmp))
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:

                async def answering() -> bool:
                    try:
                        r = await c.get("/jobs", headers={"X-API-Key": KEY})
                    except httpx.TransportError:
                        return False
                    return r.status_code == 200 and bool(r.json()["items"])

                await wait_for(answering, 60, "the gateway to answer")
                await report(c, args)
            print(f"RSS indexer {rss_mib(indexer.pid):.0f} MiB")

            stop(indexer)
            procs.remove(indexer)
            more = documents(args.changes, args.rooms, args.seed + 1, "k")
            n2, _ = await write(bus, more)
            procs.append(start("indexer", env, tmp))
            again = await caught_up(bus, db, 600)
            print(f"after a restart, {n2:,} new documents caught up in {again:.2f} s")
            await bus.close()
    finally:
        for proc in procs:
            stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")


async def report(client: httpx.AsyncClient, args: argparse.Namespace) -> None:
    rnd = random.Random(args.seed + 2)

    def day() -> dict[str, Any]:
        since = START + timedelta(seconds=rnd.uniform(0, SPAN_S - 86_400))
        return {"since": since.isoformat(), "until": (since + timedelta(days=1)).isoformat()}

    scenarios: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("page 1", dict),
        ("status=FAILURE", lambda: {"status": "FAILURE"}),
        ("status=RETRY (rare)", lambda: {"status": "RETRY"}),
        ("status=PENDING&status=STARTED", lambda: {"status": ["PENDING", "STARTED"]}),
        ("room", lambda: {"room": room_id(rnd.randrange(args.rooms))}),
        ("user", lambda: {"user": f"@user{rnd.randrange(args.rooms)}"}),
        ("one day (since, until)", day),
        ("kind=watch (none match)", lambda: {"kind": "watch"}),
        ("page_size=200", lambda: {"page_size": 200}),
    ]
    for _ in range(30):  # warm up
        await get(client, {})
    print()
    print(f"{args.jobs:,} jobs ({args.jobs // len(OWNERS):,} the key's), {args.rooms} rooms")
    print()
    print("| query (the key's own jobs) | p50 ms | p99 ms | max ms |")
    print("|---|---|---|---|")
    for label, params_of in scenarios:
        latencies = [(await get(client, params_of()))[0] for _ in range(args.requests)]
        print(
            f"| {label} | {pct(latencies, 50):.1f} | {pct(latencies, 99):.1f} "
            f"| {max(latencies):.1f} |",
            flush=True,
        )
    walk: list[float] = []
    seen = 0
    params: dict[str, Any] = {"page_size": 50}
    while True:
        ms, body = await get(client, params)
        walk.append(ms)
        seen += len(body["items"])
        if not body["next_cursor"]:
            break
        params["cursor"] = body["next_cursor"]
    print(
        f"| cursor walk, {len(walk)} pages of 50 ({seen:,} jobs) | {pct(walk, 50):.1f} "
        f"| {pct(walk, 99):.1f} | {max(walk):.1f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--rooms", type=int, default=2_000)
    parser.add_argument("--changes", type=int, default=1_000, help="jobs added while stopped")
    parser.add_argument("--requests", type=int, default=200, help="per scenario")
    parser.add_argument("--seed", type=int, default=7)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
