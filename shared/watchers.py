"""Watchers as the scheduler shows them, and the request/reply contract to ask it.

The scheduler owns watcher state (SQLite). The gateway reads it through ``nats.micro``
endpoints of the scheduler (subjects below); it changes it only through JetStream commands
(``watch.requested``, ``watch.deleted``, ``watch.paused``, ``watch.resumed``,
``watch.updated``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec

from shared.events import RecordingOptions
from shared.micro import endpoint_subject
from shared.tiktok.targets import parse_target

WatcherStatus = Literal["active", "paused", "deleted"]
LiveState = Literal["unknown", "offline", "live", "paused"]

SERVICE = "scheduler"
GET = endpoint_subject(SERVICE, "watchers.get")
LIST = endpoint_subject(SERVICE, "watchers.list")


class Watcher(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One watched account or room. Options keep secrets sealed."""

    key: str
    task_id: str
    room_id: str | None = None  # the room id last seen (TikTok issues a new one per live)
    unique_id: str | None = None  # the user, when watched by @user or URL
    url: str | None = None
    poll_interval: int = 60
    status: WatcherStatus = "active"
    options: RecordingOptions = msgspec.field(default_factory=RecordingOptions)
    created_at: datetime
    last_run_at: datetime | None = None
    last_outcome: str | None = None  # live, offline, paused, or an error code
    live_state: LiveState = "unknown"
    last_live_at: datetime | None = None
    current_job_id: str | None = None
    jobs: list[str] = msgspec.field(default_factory=list)  # recording jobs started, newest last
    failures: int = 0
    # Why the last check failed, an ErrorCode and a message without secrets; a check that
    # succeeds clears both. VALIDATION_ERROR: options the scheduler cannot use (a proxy it
    # cannot unseal, cookies it cannot load), so it does not ask TikTok at all.
    error_code: str | None = None
    error_message: str | None = None
    next_check_at: datetime | None = None
    generation: int = 0  # bumped on resume: a live seen again after a pause is a new job
    # When the last watch.updated was made (its occurred_at): an older one redelivered after
    # it changes nothing.
    updated_at: datetime | None = None
    # The request's correlation id: every live of this watcher carries it to every service.
    correlation_id: str = ""
    # The name of the API key that made it; the jobs it starts are that key's too. None: made
    # before ownership was recorded, an admin's only.
    owner: str | None = None


class GetRequest(msgspec.Struct):
    key: str


class ListRequest(msgspec.Struct):
    page: int = 1
    page_size: int = 50
    owner: str | None = None  # only this owner's watchers (and total); None: everyone's


class ListReply(msgspec.Struct):
    items: list[Watcher]
    total: int


def watcher_key(room_id: str | None, url: str | None) -> str:
    """The key of a watcher: its room id, or ``@user`` for a user / profile / live URL.

    Short links (vm.tiktok.com/...) keep the URL itself as the key. Raises ValueError for
    anything that is not a TikTok target.
    """
    if room_id:
        return room_id
    target = parse_target(url or "")
    if target.kind == "user":
        return f"@{target.value}"
    return target.value
