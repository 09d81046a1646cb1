"""Gateway throughput: GET /jobs/{id} and GET /files under 64 concurrent clients.

Starts a nats-server, seeds ``--seed-jobs`` recording jobs straight into KV ``jobs`` (with the
job store, as the gateway and a recorder write them: request, claim, two segments, progress)
and ``--seed-files`` files into an index (the indexer's own bulk insert), starts one indexer
process on that index, then one gateway process (`python -m services.gateway`, uvloop) and,
for the second round, two (two ports; the load is split evenly between them).

The load uses one ordinary key (``role=user``, from an API_KEYS_FILE), the common case: every
seeded job and file is owned by its name, so each answer goes through the ownership check and
the indexer's owner filter as a customer's would (an admin's key skips both).

The load comes from a SEPARATE process (this script with ``--client``): ``--connections``
keep-alive HTTP/1.1 connections over asyncio streams on uvloop, each sending one request at a
time for ``--duration`` seconds after a warm-up second (a closed loop: a slow gateway slows
the load). GET /jobs/{id} asks for a random seeded job; GET /files for the first page (50
files) of everything or of a random room. Every answer must be 200. The client reports its own
CPU time so one can see it is not the bottleneck; the gateways', the indexer's and
nats-server's CPU are read from /proc over the same window.

Target (issue 16): >= 2,000 req/s and p99 < 25 ms for GET /jobs/{id} per gateway process.

    .venv/bin/python bench/gateway_load.py                       # ~2 minutes
    .venv/bin/python bench/gateway_load.py --duration 5 --gateways 1 --routes jobs
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._proc import cpu_seconds, free_port, rss_mib, wait_for  # noqa: E402

KEY = "bench-key"
# The key's name in API_KEYS_FILE: the owner the gateway records on what the key makes.
OWNER = "bench"
ROOMS = 200


def room_id(n: int) -> str:
    return f"7{n:018d}"


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


# --- the load generator (its own process) -------------------------------------------------------


async def client_main(args: argparse.Namespace, ids: list[str]) -> None:
    """Closed-loop load over raw keep-alive HTTP/1.1; prints one JSON line of results."""
    ports = [int(p) for p in args.ports.split(",")]
    rnd = random.Random(args.seed)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    warmup_end = time.perf_counter() + args.warmup
    end = warmup_end + args.duration

    def target() -> str:
        if args.route == "jobs":
            return f"/jobs/{rnd.choice(ids)}"
        if args.route == "files-room":
            return f"/files?room_id={room_id(rnd.randrange(ROOMS))}"
        return "/files"

    async def connection(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        head = f"Host: 127.0.0.1:{port}\r\nX-API-Key: {KEY}\r\n\r\n".encode()
        try:
            while True:
                started = time.perf_counter()
                if started >= end:
                    return
                writer.write(f"GET {target()} HTTP/1.1\r\n".encode() + head)
                headers = await reader.readuntil(b"\r\n\r\n")
                status = int(headers[9:12])
                length = 0
                for line in headers.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                        break
                await reader.readexactly(length)
                done = time.perf_counter()
                if started >= warmup_end:
                    latencies.append(done - started)
                    statuses[status] = statuses.get(status, 0) + 1
        finally:
            writer.close()

    cpu0 = time.process_time()
    await asyncio.gather(*(connection(ports[i % len(ports)]) for i in range(args.connections)))
    cpu = time.process_time() - cpu0
    ms = [x * 1000 for x in latencies]
    result = {
        "requests": len(ms),
        "seconds": args.duration,
        "statuses": statuses,
        "p50": pct(ms, 50),
        "p90": pct(ms, 90),
        "p99": pct(ms, 99),
        "max": max(ms) if ms else float("nan"),
        "client_cpu_s": cpu,
        "client_wall_s": args.warmup + args.duration,
    }
    sys.stdout.write(json.dumps(result) + "\n")


# --- seeding ------------------------------------------------------------------------------------


async def seed_jobs(nats_url: str, count: int) -> list[str]:
    """``count`` recording jobs as a recorder leaves them mid-recording."""
    from shared.bus import Bus
    from shared.documents import KvDocuments
    from shared.job_store import JobStore
    from shared.jobs import Claim, JobRequest, SegmentEntry, Totals
    from shared.subjects import JOBS_BUCKET

    bus = await Bus.connect([nats_url], service="bench")
    assert bus is not None
    await bus.provision()
    store = JobStore(KvDocuments(await bus.kv(JOBS_BUCKET)))
    ids = [f"bench-job-{i:06d}" for i in range(count)]

    async def one(i: int, job_id: str) -> None:
        room = room_id(i % ROOMS)
        await store.submit(
            JobRequest(
                job_id=job_id,
                room_id=room,
                url=f"https://www.tiktok.com/@u{i}/live",
                owner=OWNER,
            )
        )
        await store.claim(job_id, 1, Claim("bench-recorder", room, f"live {i}", f"u{i}", 1))
        for part in range(2):
            path = f"{room}/2026/12/07/20261207_0{part}0000_live {i}.flv"
            await store.segment_opened(job_id, 1, SegmentEntry(path=path, part=part))
        await store.progress(job_id, 1, Totals(bytes=123_456_789, reconnects=1), 2_000_000)

    for start in range(0, count, 100):
        await asyncio.gather(*(one(i, ids[i]) for i in range(start, min(count, start + 100))))
    await bus.close()
    return ids


async def seed_files(db: Path, count: int) -> None:
    from services.indexer.store import IndexStore
    from shared.files import IndexedFile

    rnd = random.Random(7)
    year = datetime(2026, 1, 1, tzinfo=UTC)
    files = []
    for i in range(count):
        room = rnd.randrange(ROOMS)
        mtime = year + timedelta(seconds=rnd.uniform(0, 365 * 86_400))
        rel = f"{room_id(room)}/2026/{mtime:%m/%d}/{mtime:%Y%m%d_%H%M%S}_live_{i}.mp4"
        files.append(
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
                owner=OWNER,
            )
        )
    async with IndexStore(db) as store:
        await store.bulk_insert(files)


# --- the run ------------------------------------------------------------------------------------


def profiled_service(name: str, out: Path) -> None:
    """Run ``services.<name>`` in this process, under cProfile from SIGUSR1 to SIGUSR2 only
    (the measured window: no start-up, no imports)."""
    import cProfile
    import runpy
    import signal

    profiler = cProfile.Profile()
    signal.signal(signal.SIGUSR1, lambda *_: profiler.enable())

    dumps = [0]

    def dump(*_: object) -> None:
        profiler.disable()
        dumps[0] += 1
        profiler.dump_stats(f"{out}-{dumps[0]}.pstats")  # one per measured route, in order
        profiler.clear()

    signal.signal(signal.SIGUSR2, dump)
    sys.argv = [name]
    runpy.run_module(f"services.{name}", run_name="__main__")


def start_service(
    name: str, env: dict[str, str], log: Path, profile: Path | None = None
) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", f"services.{name}"]
    if profile:
        argv = [sys.executable, __file__, "--profiled", name, "--profile", str(profile)]
    return subprocess.Popen(
        argv,
        cwd=ROOT,
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


def stop(procs: Sequence[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def measure(
    args: argparse.Namespace,
    route: str,
    ports: list[int],
    ids_file: Path,
    pids: dict[str, int],
    profiled: Sequence[int] = (),
) -> dict[str, Any]:
    argv = [sys.executable, __file__, "--client", "--route", route]
    argv += ["--ports", ",".join(map(str, ports)), "--ids", str(ids_file)]
    argv += ["--connections", str(args.connections), "--duration", str(args.duration)]
    argv += ["--warmup", str(args.warmup)]
    client = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE)
    await asyncio.sleep(args.warmup)
    for pid in profiled:
        os.kill(pid, signal.SIGUSR1)
    cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
    t0 = time.perf_counter()
    out, _ = await asyncio.to_thread(client.communicate)
    wall = time.perf_counter() - t0
    for pid in profiled:
        os.kill(pid, signal.SIGUSR2)
    cpu = {name: 100 * (cpu_seconds(pid) - cpu0[name]) / wall for name, pid in pids.items()}
    if client.returncode != 0:
        msg = f"the load generator failed ({client.returncode})"
        raise SystemExit(msg)
    result: dict[str, Any] = json.loads(out)
    result["cpu"] = cpu
    result["rss"] = {name: rss_mib(pid) for name, pid in pids.items()}
    return result


def print_result(route: str, gateways: int, r: dict[str, Any], connections: int) -> None:
    rate = r["requests"] / r["seconds"]
    bad = {k: v for k, v in r["statuses"].items() if k != "200"}
    client_cpu = 100 * r["client_cpu_s"] / r["client_wall_s"]
    label = {"jobs": "GET /jobs/{id}", "files": "GET /files", "files-room": "GET /files?room_id"}
    cpu = ", ".join(f"{name} {v:.0f} %" for name, v in r["cpu"].items())
    # Gateway CPU per request: the ceiling of one process is 1,000 / this many req/s per core.
    gateway_cpu = sum(v for name, v in r["cpu"].items() if name.startswith("gateway"))
    per_request = 10 * gateway_cpu / rate if rate else float("nan")
    print(
        f"| {label[route]} | {gateways} | {connections} | {rate:,.0f} | {rate / gateways:,.0f} "
        f"| {r['p50']:.1f} | {r['p90']:.1f} | {r['p99']:.1f} | {r['max']:.1f} "
        f"| {per_request:.2f} | {client_cpu:.0f} % | {cpu} |" + (f" non-200: {bad}" if bad else ""),
        flush=True,
    )


async def run(args: argparse.Namespace) -> None:
    from tlr.nats_server import NatsServer

    tmp = Path(tempfile.mkdtemp(prefix="tlr-gateway-bench-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        db = tmp / "index.sqlite3"
        await seed_files(db, args.seed_files)
        async with NatsServer(tmp / "nats") as nats:
            t = time.perf_counter()
            ids = await seed_jobs(nats.client_url, args.seed_jobs)
            ids_file = tmp / "ids.txt"
            ids_file.write_text("\n".join(ids))
            print(
                f"seeded {len(ids):,} jobs in {time.perf_counter() - t:.1f} s, "
                f"{args.seed_files:,} files",
                flush=True,
            )
            (tmp / "recordings").mkdir()
            keys_file = tmp / "api-keys"
            keys_file.write_text(f"{OWNER} {KEY} role=user\n")
            env = {
                **os.environ,
                "NATS_URL": nats.client_url,
                "INDEX_DB": str(db),
                "RECORDINGS_DIR": str(tmp / "recordings"),
                "API_KEYS": "",
                "API_KEYS_FILE": str(keys_file),
                "RATE_LIMIT_PER_MIN": "1000000000",
                "LOG_LEVEL": "WARNING",
                "LOG_FORMAT": "json",
            }
            indexer = start_service("indexer", env, tmp / "indexer.log")
            procs.append(indexer)
            assert nats.proc is not None
            base_pids = {"nats-server": nats.proc.pid, "indexer": indexer.pid}
            print()
            print(
                "| route | gateways | clients | req/s total | req/s per gateway | p50 ms | p90 ms "
                "| p99 ms | max ms | gateway CPU ms/request | load generator CPU "
                "| CPU (% of a core) |"
            )
            print("|---|---|---|---|---|---|---|---|---|---|---|---|")
            for count in args.gateways:
                ports = [free_port() for _ in range(count)]
                gateways = [
                    start_service(
                        "gateway",
                        {**env, "GATEWAY_PORT": str(port), "INSTANCE_ID": f"bench-gw-{i}"},
                        tmp / f"gateway-{i}.log",
                        args.profile / f"gateway{count}-{i}" if args.profile else None,
                    )
                    for i, port in enumerate(ports)
                ]
                procs += gateways
                for port in ports:
                    await wait_ready(port, ids[0])
                pids = {f"gateway-{i}": g.pid for i, g in enumerate(gateways)} | base_pids
                profiled = [g.pid for g in gateways] if args.profile else []
                for route in args.routes:
                    result = await measure(args, route, ports, ids_file, pids, profiled)
                    print_result(route, count, result, args.connections)
                stop(gateways)
                for g in gateways:
                    procs.remove(g)
    finally:
        stop(procs)
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")


async def wait_ready(port: int, job_id: str) -> None:
    import httpx

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:

        async def answering() -> bool:
            try:
                r = await http.get(f"/jobs/{job_id}", headers={"X-API-Key": KEY})
                files = await http.get("/files", headers={"X-API-Key": KEY})
            except httpx.TransportError:
                return False
            if r.status_code != 200 or files.status_code != 200:
                return False
            # The key's own job and files, not an empty list: the owner was seeded right.
            if r.json()["owner"] != OWNER or not files.json()["items"]:
                msg = f"GET /jobs or /files answered no job or file of {OWNER}"
                raise SystemExit(msg)
            return True

        await wait_for(answering, 60, f"the gateway on port {port}", every=0.3)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--seed-jobs", type=int, default=10_000)
    parser.add_argument("--seed-files", type=int, default=10_000)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds measured")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before measuring")
    parser.add_argument("--gateways", default="1,2", help="gateway processes per round")
    parser.add_argument("--routes", default="jobs,files", help="jobs, files, files-room")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--profile", type=Path, help="cProfile each gateway into this directory")
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--profiled", help=argparse.SUPPRESS)
    parser.add_argument("--route", default="jobs", help=argparse.SUPPRESS)
    parser.add_argument("--ports", default="", help=argparse.SUPPRESS)
    parser.add_argument("--ids", default="", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.profiled:
        profiled_service(args.profiled, args.profile)
        return
    if args.client:
        import uvloop

        ids = Path(args.ids).read_text().split() if args.ids else []
        uvloop.run(client_main(args, ids))
        return
    args.gateways = [int(g) for g in args.gateways.split(",")]
    args.routes = args.routes.split(",")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
