"""Helpers the benchmarks share: free ports, CPU time and RSS of a process, deadline waits."""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def cpu_split(pid: int) -> tuple[float, float]:
    """(utime, stime) of ``pid`` so far, in seconds: user space and the kernel apart."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICK, int(fields[12]) / TICK


def busy_cores() -> float:
    """CPU seconds the whole machine has spent busy so far (all cores; idle and iowait not)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    # user nice system idle iowait irq softirq steal (guest time is inside user already)
    return (sum(fields[:8]) - fields[3] - fields[4]) / TICK


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    """``VmRSS`` of ``pid`` in MiB (``field="VmHWM"``: its peak so far)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def wait_for(
    check: Callable[[], Awaitable[bool]], timeout: float, what: str, *, every: float = 0.5
) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            msg = f"timed out waiting for {what}"
            raise SystemExit(msg)
        await asyncio.sleep(every)


def flv_last_ts_ms(path: Path) -> int | None:
    """The timestamp of the last complete tag of an FLV file being written, or None.

    A file being appended to ends on a tag or inside one; the last PreviousTagSize that
    points back to a tag header gives the last whole tag. The last 64 KB are read first (at
    1,000 streams sampled every 5 s, reading 512 KB of each cost the bench a tenth of a core),
    512 KB when no whole tag ends in them (a large keyframe).
    """
    for tail in (64 * 1024, 512 * 1024):
        try:
            with path.open("rb") as f:
                size = f.seek(0, os.SEEK_END)
                f.seek(max(0, size - tail))
                data = f.read()
        except OSError:
            return None
        ts = _last_ts(data)
        if ts is not None or size <= tail:
            return ts
    return None


def _last_ts(data: bytes) -> int | None:
    end = len(data)
    while end >= 15:
        # Walk back from the end to a PreviousTagSize that frames a plausible tag.
        prev = int.from_bytes(data[end - 4 : end], "big")
        head = end - 4 - prev
        if (
            11 < prev < end
            and head >= 0
            and data[head] in (8, 9, 18)
            and int.from_bytes(data[head + 1 : head + 4], "big") == prev - 11
        ):
            return int.from_bytes(data[head + 4 : head + 7], "big") | (data[head + 7] << 24)
        end -= 1
    return None


def percentile(sorted_values: list[float], pct: float) -> float:
    """Nearest-rank percentile of an already sorted, non-empty list."""
    rank = max(0, min(len(sorted_values) - 1, round(pct / 100 * len(sorted_values)) - 1))
    return sorted_values[rank]


def lease_gaps(writes: dict[str, list[float]], since: float) -> list[float]:
    """Every gap between two consecutive writes of a lease key after ``since`` (seconds)."""
    gaps: list[float] = []
    for times in writes.values():
        kept = [t for t in times if t >= since]
        gaps.extend(b - a for a, b in itertools.pairwise(kept))
    return gaps
