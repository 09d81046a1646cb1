"""The recorder's dependencies, as small Protocols, and what it knows of a job it records."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Literal, Protocol

from services.recorder.endings import Endings
from services.recorder.media import Media
from services.recorder.settings import RecorderSettings
from services.recorder.startup import StartUps
from shared.egresses import PickReply
from shared.events import Event, RecordingOptions, RecordingRequested, RoomLive
from shared.job_store import JobStore
from shared.lease import Leases
from shared.subjects import LEASE_RENEW
from shared.tiktok.client import TikTokClient

Work = RecordingRequested | RoomLive
StopReason = Literal["cancelled", "lease_lost", "shutdown"]


class Publisher(Protocol):
    async def publish(self, event: Event) -> object: ...


class TikTokPool(Protocol):
    """The process's TikTok clients (``shared.tiktok.pool.ClientPool``)."""

    def client(self, options: RecordingOptions) -> TikTokClient: ...

    def holding(self, options: RecordingOptions) -> AbstractContextManager[TikTokClient]:
        """The client, kept open while held (never closed as idle)."""
        ...


class PickFailed(Exception):
    """The scheduler gave no usable answer to an egress pick (the message says why, never a
    URL): no scheduler, no answer in time, an error reply."""


class EgressPicker(Protocol):
    """The scheduler's egress pool (``egress_pick.NatsEgressPicker``)."""

    async def pick(self, name: str | None) -> PickReply:
        """``name``'s egress while healthy, else the least-loaded healthy one (proxy sealed);
        no name in the reply: no pool. Raises PickFailed."""
        ...


@dataclass
class Job:
    """A recording in progress in this process: how to stop it and why it stopped."""

    job_id: str
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    reason: StopReason | None = None

    def halt(self, reason: StopReason) -> None:
        if self.reason is None:
            self.reason = reason
        self.stop.set()


@dataclass(frozen=True)
class RecorderDeps:
    """Everything a recorder's handlers use, built once in ``service.py``."""

    recorder_id: str
    settings: RecorderSettings
    store: JobStore
    leases: Leases
    publisher: Publisher
    tiktok: TikTokPool
    media: Media
    egresses: EgressPicker
    clock: Callable[[], float] = time.monotonic
    renew_every: float = LEASE_RENEW  # how often a held room lease is renewed
    active: dict[str, Job] = field(default_factory=dict)
    endings: Endings = field(default_factory=Endings)  # sessions ended, outcomes not yet written
    # Jobs another recorder was recording when their message came here, and since when: its
    # holder gets a moment to take its lease again before this process does (handlers.py).
    deferred: dict[str, float] = field(default_factory=dict)
    # Jobs between their message and a running session, at most settings.max_startups at once.
    startups: StartUps = field(default_factory=StartUps)
    # The commit each engine runs, where it has one (tlr-cli: its checkout's), for the job.
    engine_commits: dict[str, str] = field(default_factory=dict)
