"""TikTok requests per watched @user per hour, offline and live, with and without the WAF page.

Runs the scheduler's own poll pass (`services.scheduler.poller.poll_once`, the real client,
store, budget and a real nats-server) in this process against the fake TikTok (its own
process, TikTok as it is today: proof-of-work pages, unsigned api-live answering nothing).
Each run watches USERS accounts by @user and makes every watcher due PASSES times; it counts
the requests the fake received, by kind, per watcher check, and scales them to an hour at a
60 s poll interval. The CPU of the proof of work is read from the solver's own histogram
(`tlr_tiktok_waf_solve_seconds`, process time per solve) and from this process's CPU.

Scenarios: offline users (each check resolves the user: www) and live users (the first check
resolves and confirms; later ones are one share of a check_alive batch, no www), each with the
WAF challenge on (today) and off.

    .venv/bin/python bench/tiktok_requests.py            # ~1 minute
    .venv/bin/python bench/tiktok_requests.py --users 50 --passes 5
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
from prometheus_client import REGISTRY

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._proc import free_port  # noqa: E402
from services.scheduler.budget import Budget  # noqa: E402
from services.scheduler.poller import PollDeps, poll_once  # noqa: E402
from services.scheduler.store import WatcherStore  # noqa: E402
from shared.bus import Bus  # noqa: E402
from shared.config import Settings  # noqa: E402
from shared.documents import KvDocuments  # noqa: E402
from shared.job_store import JobStore  # noqa: E402
from shared.logging import configure_logging  # noqa: E402
from shared.subjects import JOBS_BUCKET  # noqa: E402
from shared.tiktok.factory import client_from_settings  # noqa: E402
from shared.watchers import Watcher  # noqa: E402
from tlr.nats_server import NatsServer  # noqa: E402

POLL_S = 60


@dataclass
class Figures:
    name: str
    checks: int
    per_check: dict[str, float]
    solves: int
    solve_cpu_ms: float
    process_cpu_ms: float

    def per_hour(self, kind: str) -> float:
        return self.per_check.get(kind, 0.0) * 3600 / POLL_S


def kind_of(path: str) -> str:
    if path.startswith("/@"):
        return "www"
    if path.startswith("/api-live/"):
        return "api_live"
    if path.startswith("/webcast/room/check_alive"):
        return "check_alive"
    if path.startswith("/webcast/room/info"):
        return "room_info"
    return "other"


def solve_sample(name: str) -> float:
    return REGISTRY.get_sample_value(f"tlr_tiktok_waf_solve_seconds_{name}") or 0.0


async def scenario(
    fake: httpx.AsyncClient,
    base: str,
    tmp: Path,
    bus: Bus,
    *,
    live: bool,
    waf: bool,
    args: argparse.Namespace,
) -> list[Figures]:
    await fake.post("/__fake/reset")
    await fake.put("/__fake/scenario", json={"waf_challenge": waf})
    names = [f"u{i:04d}" for i in range(args.users)]
    reply = await fake.post(
        "/__fake/bulk/users", json={"unique_ids": names, "rooms": "live" if live else "ended"}
    )
    reply.raise_for_status()
    settings = Settings(tiktok_web_base=base, tiktok_webcast_base=base)
    client = client_from_settings(settings)
    db = tmp / f"watchers-{live}-{waf}.sqlite3"
    label = f"{'live' if live else 'offline'}, WAF challenge {'on' if waf else 'off'}"
    figures: list[Figures] = []
    async with WatcherStore(db) as store:
        now = datetime.now(UTC)
        await store.put_many(
            [
                (
                    Watcher(
                        key=f"@{n}",
                        task_id=f"t-{n}",
                        unique_id=n,
                        url=f"@{n}",
                        poll_interval=POLL_S,
                        created_at=now,
                    ),
                    0.0,
                )
                for n in names
            ]
        )

        async def publish(_event: object) -> None:
            return None

        deps = PollDeps(
            store=store,
            budget=Budget(1_000_000),
            jobs=JobStore(KvDocuments(await bus.kv(JOBS_BUCKET))),
            publish=publish,
            client_for=lambda _w: client,
            egress_of=lambda _w: "direct",
        )
        for n in range(args.passes):
            await fake.delete("/__fake/requests")
            solves0, cpu0 = solve_sample("count"), solve_sample("sum")
            started = time.process_time()
            rows = [(w, 0.0) for w in await store.active()]
            await store.put_many(rows)  # all due now
            checked = await poll_once(deps, now=time.time())
            process_ms = (time.process_time() - started) * 1000
            log = (await fake.get("/__fake/requests")).json()
            kinds = Counter(kind_of(r["path"]) for r in log)
            name = f"{label}, {'first check' if n == 0 else 'later checks'}"
            per_check = {k: v / max(1, checked) for k, v in kinds.items()}
            solves = int(solve_sample("count") - solves0)
            solve_ms = (solve_sample("sum") - cpu0) * 1000
            if n == 0 or not figures or figures[-1].name != name:
                figures.append(Figures(name, checked, per_check, solves, solve_ms, process_ms))
            else:  # average the later checks
                last = figures[-1]
                total = last.checks + checked
                merged = {
                    k: (last.per_check.get(k, 0) * last.checks + per_check.get(k, 0) * checked)
                    / total
                    for k in set(last.per_check) | set(per_check)
                }
                figures[-1] = Figures(
                    name,
                    total,
                    merged,
                    last.solves + solves,
                    last.solve_cpu_ms + solve_ms,
                    last.process_cpu_ms + process_ms,
                )
    await client.aclose()
    return figures


def report(all_figures: list[Figures]) -> None:
    print(
        f"\n{'scenario':<48} {'checks':>6} {'www/h':>7} {'api-live/h':>10} "
        f"{'check_alive/h':>13} {'room_info/h':>11} {'solve ms':>9} {'CPU ms/check':>12}"
    )
    for f in all_figures:
        solve = f.solve_cpu_ms / f.solves if f.solves else 0.0
        print(
            f"{f.name:<48} {f.checks:>6} {f.per_hour('www'):>7.1f} {f.per_hour('api_live'):>10.1f} "
            f"{f.per_hour('check_alive'):>13.2f} {f.per_hour('room_info'):>11.2f} "
            f"{solve:>9.1f} {f.process_cpu_ms / max(1, f.checks):>12.1f}"
        )
    print(
        "\n(per watched @user per hour at poll 60 s; 'solve ms' is the process time of one "
        "proof of work; 'CPU ms/check' this process's CPU per watcher check, solving included)"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--passes", type=int, default=4)
    args = parser.parse_args()
    configure_logging("bench", "WARNING", "console")
    tmp = Path(tempfile.mkdtemp(prefix="tlr-bench-tiktok-"))
    nats = NatsServer(tmp / "nats")
    fake_proc = subprocess.Popen(
        [sys.executable, "-m", "tlr.fake_tiktok", "--port", str(free_port())],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        await nats.start()
        assert fake_proc.stdout is not None
        base = (await asyncio.to_thread(fake_proc.stdout.readline)).decode().strip()
        bus = await Bus.connect([nats.client_url], service="bench", instance="bench")
        assert bus is not None
        await bus.provision()
        figures: list[Figures] = []
        async with httpx.AsyncClient(base_url=base, timeout=60) as fake:
            for live in (False, True):
                for waf in (True, False):
                    figures += await scenario(fake, base, tmp, bus, live=live, waf=waf, args=args)
        await bus.close()
        report(figures)
    finally:
        fake_proc.terminate()
        fake_proc.wait(10)
        await nats.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
