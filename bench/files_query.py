"""GET /files at a million indexed files: latency through the gateway, first and deep pages.

Loads an index of ``--rows`` files (default 1,000,000: ``--rooms`` rooms, one user per room,
mtimes spread over a year) with the indexer's own bulk insert, then starts a nats-server, one
indexer process (`python -m services.indexer`) on that index and one gateway process
(`python -m services.gateway`), and times HTTP requests from this process (a keep-alive
client on localhost, one request at a time unless ``--concurrency``):

- unfiltered: page 1, the middle page (the deepest an offset scan gets), the last page, and
  random pages;
- room-filtered (a random room each time): page 1 and its last page;
- time-filtered (a random 30-day window): page 1 and its middle page;
- page 1 with page_size 500.

Every file is owned by the name of the one key asking (``role=user``, from an API_KEYS_FILE):
an ordinary key's query, the common case, has the owner filter an admin's has not.

Target (the files issue): p99 < 50 ms for each (the seed asks < 500 ms).

    .venv/bin/python bench/files_query.py                  # ~2 minutes on 2 vCPUs
    .venv/bin/python bench/files_query.py --rows 100000 --requests 100
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._proc import cpu_seconds, free_port, rss_mib, wait_for  # noqa: E402
from services.indexer.store import IndexStore  # noqa: E402
from shared.files import IndexedFile  # noqa: E402
from tlr.nats_server import NatsServer  # noqa: E402

KEY = "bench-key"
# The key's name in API_KEYS_FILE: the owner of its jobs' files, as the indexer records it.
OWNER = "bench"
YEAR_START = datetime(2026, 1, 1, tzinfo=UTC)
SECONDS_IN_YEAR = 365 * 86_400
PAGE_SIZE = 50


def room_id(n: int) -> str:
    return f"7{n:018d}"


def rows(count: int, rooms: int, seed: int) -> Any:
    """``count`` files in chunks: random rooms, mtimes uniform over a year."""
    rnd = random.Random(seed)
    chunk: list[IndexedFile] = []
    for i in range(count):
        room = rnd.randrange(rooms)
        mtime = YEAR_START + timedelta(seconds=rnd.uniform(0, SECONDS_IN_YEAR))
        rel = f"{room_id(room)}/2026/{mtime:%m/%d}/{mtime:%Y%m%d_%H%M%S}_live_{i}.mp4"
        chunk.append(
            IndexedFile(
                name=Path(rel).name,
                path=rel,
                size=rnd.randrange(10_000_000, 2_000_000_000),
                mtime=mtime,
                duration_s=rnd.uniform(60, 7200),
                room_id=room_id(room),
                user=f"user{room}",
                url=f"https://www.tiktok.com/@user{room}/live",
                title=f"live {i}",
                job_id=f"job-{i // 4}",
                started_at=mtime - timedelta(hours=1),
                upload_wanted=i % 3 == 0,
                owner=OWNER,
            )
        )
        if len(chunk) == 10_000:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


async def load(db: Path, count: int, rooms: int, seed: int) -> float:
    started = time.perf_counter()
    store = IndexStore(db)
    async with store:
        for chunk in rows(count, rooms, seed):
            await store.bulk_insert(chunk)
    return time.perf_counter() - started


def db_size_mib(db: Path) -> float:
    """The database with its WAL and shared-memory files."""
    return sum(os.path.getsize(p) for p in glob.glob(f"{db}*")) / 2**20


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def timed(
    client: httpx.AsyncClient, params_of: Callable[[], dict[str, Any]], n: int, concurrency: int
) -> tuple[list[float], int]:
    """Latencies (ms) of ``n`` requests; also the largest total any answer reported."""
    latencies: list[float] = []
    totals = 0
    queue = list(range(n))

    async def worker() -> None:
        nonlocal totals
        while queue:
            queue.pop()
            params = params_of()
            t = time.perf_counter()
            r = await client.get("/files", params=params, headers={"X-API-Key": KEY})
            latencies.append((time.perf_counter() - t) * 1000)
            if r.status_code != 200:
                msg = f"GET /files {params} -> {r.status_code} {r.text[:200]}"
                raise SystemExit(msg)
            body = r.json()
            totals = max(totals, body["total"])
            if body["total"] and not body["items"] and params.get("page", 1) == 1:
                msg = f"empty first page for {params}"
                raise SystemExit(msg)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, totals


def window(rnd: random.Random) -> dict[str, str]:
    start = YEAR_START + timedelta(seconds=rnd.uniform(0, SECONDS_IN_YEAR - 30 * 86_400))
    return {"from": start.isoformat(), "to": (start + timedelta(days=30)).isoformat()}


async def run(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="tlr-files-bench-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        db = tmp / "index.sqlite3"
        print(f"loading {args.rows:,} rows ...", flush=True)
        load_s = await load(db, args.rows, args.rooms, args.seed)
        db_mib = db_size_mib(db)
        print(f"loaded in {load_s:.1f} s ({args.rows / load_s:,.0f} rows/s), {db_mib:.0f} MiB")

        async with NatsServer(tmp / "nats") as nats:
            port = free_port()
            keys_file = tmp / "api-keys"
            keys_file.write_text(f"{OWNER} {KEY} role=user\n")
            env = {
                **os.environ,
                "NATS_URL": nats.client_url,
                "INDEX_DB": str(db),
                "RECORDINGS_DIR": str(tmp / "recordings"),
                "API_KEYS": "",
                "API_KEYS_FILE": str(keys_file),
                # Latency is measured, not the limiter: 60 a minute would 429 the second scenario.
                "RATE_LIMIT_PER_MIN": "1000000000",
                "GATEWAY_PORT": str(port),
                "LOG_LEVEL": "WARNING",
                "LOG_FORMAT": "json",
            }
            (tmp / "recordings").mkdir()
            for name in ("indexer", "gateway"):
                log = (tmp / f"{name}.log").open("wb")
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", f"services.{name}"],
                        cwd=ROOT,
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
            indexer_pid, gateway_pid = procs[0].pid, procs[1].pid
            limits = httpx.Limits(max_connections=args.concurrency)
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{port}", timeout=30, limits=limits
            ) as client:

                async def answering() -> bool:
                    try:
                        r = await client.get("/files", headers={"X-API-Key": KEY})
                    except httpx.TransportError:
                        return False
                    return r.status_code == 200 and r.json()["total"] == args.rows

                await wait_for(answering, 120, "the gateway and the indexer to answer")
                await report(client, args, indexer_pid, gateway_pid)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)


async def report(
    client: httpx.AsyncClient, args: argparse.Namespace, indexer_pid: int, gateway_pid: int
) -> None:
    rnd = random.Random(args.seed + 1)
    total = args.rows
    last = -(-total // PAGE_SIZE)
    middle = last // 2
    per_room = total // args.rooms

    def room_last() -> dict[str, Any]:
        # Rooms hold ~rows/rooms files each; the page just before the end of a typical one.
        return {
            "room_id": room_id(rnd.randrange(args.rooms)),
            "page": max(1, per_room // PAGE_SIZE),
        }

    def window_middle() -> dict[str, Any]:
        in_window = total * 30 // 365
        return {**window(rnd), "page": max(1, in_window // PAGE_SIZE // 2)}

    scenarios: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("unfiltered, page 1", lambda: {}),
        (f"unfiltered, middle page ({middle:,})", lambda: {"page": middle}),
        (f"unfiltered, last page ({last:,})", lambda: {"page": last}),
        ("unfiltered, random page", lambda: {"page": rnd.randint(1, last)}),
        ("room, page 1", lambda: {"room_id": room_id(rnd.randrange(args.rooms))}),
        (f"room, deep page (~{max(1, per_room // PAGE_SIZE)})", room_last),
        ("30-day window, page 1", lambda: window(rnd)),
        ("30-day window, middle page", window_middle),
        ("page 1, page_size 500", lambda: {"page_size": 500}),
    ]
    # Warm the caches a real deployment would have warm.
    await timed(client, lambda: {"page": rnd.randint(1, last)}, 50, 1)

    cpu0 = cpu_seconds(indexer_pid), cpu_seconds(gateway_pid)
    wall0 = time.perf_counter()
    print()
    print(
        f"{args.rows:,} rows, {args.rooms:,} rooms, page_size {PAGE_SIZE}, "
        f"{args.requests} requests per line, concurrency {args.concurrency}"
    )
    print()
    print("| query | p50 ms | p99 ms | max ms | total matched |")
    print("|---|---|---|---|---|")
    worst = 0.0
    for label, params_of in scenarios:
        latencies, matched = await timed(client, params_of, args.requests, args.concurrency)
        p99 = pct(latencies, 99)
        worst = max(worst, p99)
        print(
            f"| {label} | {pct(latencies, 50):.1f} | {p99:.1f} | {max(latencies):.1f} "
            f"| {matched:,} |",
            flush=True,
        )
    wall = time.perf_counter() - wall0
    cpu1 = cpu_seconds(indexer_pid), cpu_seconds(gateway_pid)
    print()
    print(f"worst p99: {worst:.1f} ms (target < 50 ms)")
    print(
        f"CPU during the run: indexer {100 * (cpu1[0] - cpu0[0]) / wall:.0f} % of a core, "
        f"gateway {100 * (cpu1[1] - cpu0[1]) / wall:.0f} %; RSS indexer "
        f"{rss_mib(indexer_pid):.0f} MiB, gateway {rss_mib(gateway_pid):.0f} MiB"
    )
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rooms", type=int, default=2_000)
    parser.add_argument("--requests", type=int, default=300, help="per scenario")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--seed", type=int, default=7)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
