"""Scenario 6: the recordings disk full for 60 s under a live recording, then room again."""

from __future__ import annotations

import asyncio
import errno
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.chaos.fleet import ChaosFleet
from tests.chaos.invariants import check_invariants, end_live
from tests.chaos.lives import growing, recorded_bytes, report_outcomes, start_lives
from tests.helpers import eventually
from tlr.fake_tiktok import FakeTikTok

FAKE_TIKTOK_OPTIONS = {"speed": 1.0}  # real time: losses are measured in seconds of live
FULL_S = 60.0
MAX_RESUME_S = 30.0  # recording again at most this long after the disk has room again
# The recorder runs in its own mount namespace, its RECORDINGS_DIR a size-limited tmpfs: a real
# ENOSPC, no loop device, and the mount goes away with the process. Root is mapped when the
# test is not root (an unprivileged user namespace).
_NAMESPACE = ("--mount",) if os.geteuid() == 0 else ("--map-root-user", "--mount")
_MOUNT = 'mount -t tmpfs -o size=32m tlr-chaos "$RECORDINGS_DIR" && exec "$@"'


def _can_mount(where: Path) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    probe = ["unshare", *_NAMESPACE, "sh", "-c", f"mount -t tmpfs -o size=1m probe '{where}'"]
    try:
        return subprocess.run(probe, capture_output=True, timeout=10, check=False).returncode == 0
    except OSError:
        return False


def _fill(path: Path) -> int:
    """Write ``path`` until the filesystem has no block left; the bytes it took."""
    written = 0
    with path.open("wb", buffering=0) as f:
        for chunk in (1 << 20, 4096, 1):
            try:
                while True:
                    written += f.write(b"\0" * chunk) or 0
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
    return written


@pytest.mark.chaos
@pytest.mark.timeout(300)
async def test_the_recordings_disk_full_for_60s(
    chaos_fleet: ChaosFleet, fake_tiktok: FakeTikTok, chaos_report: Callable[[str], None]
) -> None:
    """While the disk is full the job goes to RETRY (DISK_FULL) and is tried again every 10 s;
    once there is room it records again within MAX_RESUME_S, and every listed file is there."""
    if not _can_mount(chaos_fleet.tmp / "probe"):
        pytest.skip("no mount namespace with a tmpfs here (unshare --mount refused)")
    chaos_fleet.recordings.mkdir(parents=True, exist_ok=True)
    launcher = ("unshare", *_NAMESPACE, "sh", "-c", _MOUNT, "sh")
    await chaos_fleet.start("rec-a", launcher=launcher)
    pid = chaos_fleet.procs["rec-a"].pid
    # The tmpfs as the recorder sees it (its mount namespace, through /proc).
    disk = Path(f"/proc/{pid}/root") / chaos_fleet.recordings.relative_to("/")
    [live] = await start_lives(chaos_fleet, fake_tiktok, ["kim"])

    loop = asyncio.get_running_loop()
    filler = disk / "filler.bin"
    full = loop.time()
    filled = await asyncio.to_thread(_fill, filler)
    statuses: list[str] = []

    async def retrying() -> bool:
        job = await chaos_fleet.job(live.task_id)
        statuses.append(job["status"])
        return bool(job["status"] == "RETRY")

    try:
        await eventually(retrying, timeout=FULL_S - 10, interval=0.2)
        noticed = loop.time() - full
        await asyncio.sleep(max(0.0, FULL_S - (loop.time() - full)))  # the rest of it
    finally:
        filler.unlink()
    room = loop.time()
    assert "DISK_FULL" in chaos_fleet.log_of("rec-a"), chaos_fleet.log_of("rec-a")[-3000:]
    before = max(await recorded_bytes(chaos_fleet, live.task_id), 0)

    async def recording_again() -> bool:
        return await recorded_bytes(chaos_fleet, live.task_id) > before

    await eventually(recording_again, timeout=MAX_RESUME_S, interval=0.2)
    resumed = loop.time() - room
    await growing(chaos_fleet, live.task_id, timeout=30)
    await end_live(fake_tiktok, live)
    job = await chaos_fleet.wait(live.task_id, "SUCCESS", "FAILURE", timeout=60)
    assert job["status"] == "SUCCESS", job

    files = job["progress"]["files"]
    chaos_report(
        f"tmpfs filled ({filled / 1e6:.1f} MB more) for {FULL_S:.0f}s: job in RETRY after "
        f"{noticed:.1f}s; recording again {resumed:.1f}s after the room came back; files listed: "
        + ", ".join(f"{f['state']} {f['size']} B {f['duration_s']:.1f}s" for f in files)
    )
    assert resumed <= MAX_RESUME_S
    [outcome] = await check_invariants(chaos_fleet, chaos_fleet.bus, fake_tiktok, disk, [live])
    report_outcomes(chaos_report, [outcome])
