"""`tlr jobs ID --follow`: poll a job until it ends, as a live line (rich) or plain log lines."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, TextIO

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn

from tlr.client.api import ApiError, Unreachable

TERMINAL = frozenset({"SUCCESS", "FAILURE", "CANCELLED"})
# A plain line at most this often while nothing but the figures changes (logs stay readable).
PLAIN_EVERY = 5.0
# How long the gateway may stay unreachable (or busy) before following gives up.
PATIENCE = 30.0


@dataclass(frozen=True)
class Snapshot:
    """What the view shows of one answer of GET /jobs/{id}."""

    status: str
    bytes: int
    duration_s: float | None
    segments: int
    bitrate_kbps: float
    reconnects: int
    stalls: int

    @classmethod
    def of(cls, job: dict[str, Any], now: datetime | None = None) -> Snapshot:
        progress = job.get("progress") or {}
        result = job.get("result") or {}
        return cls(
            status=str(job.get("status", "?")),
            bytes=int(progress.get("bytes") or 0),
            duration_s=recorded_seconds(result, now or datetime.now(UTC)),
            segments=int(progress.get("segments") or 0),
            bitrate_kbps=float(progress.get("bitrate_kbps") or 0.0),
            reconnects=int(progress.get("reconnects") or 0),
            stalls=int(progress.get("stalls") or 0),
        )

    def figures(self) -> str:
        """Everything but the state, e.g. ``1.2 MB  0:00:12  2 segments  812 kbit/s``."""
        parts = [human_bytes(self.bytes), human_duration(self.duration_s)]
        if self.segments:
            parts.append(f"{self.segments} segment{'s' if self.segments != 1 else ''}")
        if self.bitrate_kbps:
            parts.append(f"{self.bitrate_kbps:.0f} kbit/s")
        if self.reconnects:
            parts.append(f"{self.reconnects} reconnects")
        if self.stalls:
            parts.append(f"{self.stalls} stalls")
        return "  ".join(parts)

    def line(self) -> str:
        return f"{self.status:<9} {self.figures()}"


def recorded_seconds(result: dict[str, Any], now: datetime) -> float | None:
    """Wall time the job has recorded: from ``started_at`` to ``ended_at`` (or now)."""
    started = _when(result.get("started_at"))
    if started is None:
        return None
    ended = _when(result.get("ended_at")) or now
    return max(0.0, (ended - started).total_seconds())


def _when(text: object) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def human_bytes(n: int) -> str:
    """Decimal units, one decimal place: ``0 B``, ``812 B``, ``1.2 MB``."""
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError  # pragma: no cover - the loop always returns


def human_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-:--:--"
    whole = int(seconds)
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


class View(Protocol):
    def update(self, snap: Snapshot) -> None: ...

    def note(self, text: str) -> None: ...

    def close(self) -> None: ...


class PlainView:
    """One line per change of state, else one every PLAIN_EVERY seconds: for pipes and logs."""

    def __init__(self, out: TextIO, clock: Callable[[], float] = time.monotonic) -> None:
        self._out = out
        self._clock = clock
        self._last: Snapshot | None = None
        self._last_at = 0.0

    def update(self, snap: Snapshot) -> None:
        now = self._clock()
        changed = self._last is None or snap.status != self._last.status
        if changed or snap.status in TERMINAL or now - self._last_at >= PLAIN_EVERY:
            if snap != self._last:
                self._out.write(snap.line() + "\n")
                self._out.flush()
            self._last, self._last_at = snap, now

    def note(self, text: str) -> None:
        self._out.write(text + "\n")
        self._out.flush()

    def close(self) -> None:
        return None


class RichView:
    """A live line on a terminal: spinner, state, a pulsing bar, bytes, duration and the rest."""

    def __init__(self, console: Console, label: str) -> None:
        self._progress = Progress(
            SpinnerColumn(finished_text="[bold]*[/]"),
            TextColumn("[bold]{task.description}"),
            TextColumn("{task.fields[status]:<9}"),
            BarColumn(bar_width=24),
            TextColumn("{task.fields[figures]}"),
            console=console,
        )
        self._task: TaskID = self._progress.add_task(label, total=None, status="", figures="")
        self._progress.start()

    def update(self, snap: Snapshot) -> None:
        done = snap.status in TERMINAL
        self._progress.update(
            self._task,
            status=snap.status,
            figures=snap.figures(),
            total=1 if done else None,
            completed=1 if done else 0,
        )

    def note(self, text: str) -> None:
        self._progress.console.print(text, markup=False, highlight=False)

    def close(self) -> None:
        self._progress.stop()


def follow(
    fetch: Callable[[], dict[str, Any]],
    view: View,
    *,
    interval: float = 1.0,
    pace: Callable[[], float] = lambda: 0.0,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    patience: float = PATIENCE,
) -> dict[str, Any]:
    """Poll ``fetch`` (GET /jobs/{id}) every ``interval`` seconds, or slower when the rate
    limit asks (``pace``), until the job reaches a terminal state; return its last answer.

    A gateway that is briefly unreachable, busy (503) or rate limiting (429) is waited for,
    up to ``patience`` seconds in a row; then the error is raised. Other API errors (404: the
    job does not exist) are raised at once.
    """
    failing_since: float | None = None
    try:
        while True:
            try:
                job = fetch()
            except (ApiError, Unreachable) as exc:
                if isinstance(exc, ApiError) and not exc.transient:
                    raise
                now = clock()
                if failing_since is None:
                    failing_since = now
                    view.note(f"waiting for the API: {exc}")
                elif now - failing_since > patience:
                    raise
                retry_after = exc.retry_after if isinstance(exc, ApiError) else None
                sleep(max(interval, retry_after or 0.0))
                continue
            if failing_since is not None:
                failing_since = None
                view.note("the API answers again")
            snap = Snapshot.of(job)
            view.update(snap)
            if snap.status in TERMINAL:
                return job
            sleep(max(interval, pace()))
    finally:
        view.close()
