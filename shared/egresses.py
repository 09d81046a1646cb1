"""The egress pool as the services see it: names, health, and the request/reply contract.

The scheduler owns the pool (SQLite, beside the watchers). The gateway changes it only
through JetStream commands (``egress.added``, ``egress.removed``) and reads it through the
scheduler's ``nats.micro`` endpoints below; recorders ask the scheduler which proxy an egress
name stands for (:data:`PICK`). A proxy URL crosses NATS only sealed (``shared.secrets``), and
never in an answer to the REST API: an egress shows as its name and its health.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Final, Literal

import msgspec

from shared.micro import endpoint_subject

SERVICE: Final = "scheduler"
LIST: Final = endpoint_subject(SERVICE, "egresses.list")
PICK: Final = endpoint_subject(SERVICE, "egresses.pick")

# A label in metrics and logs: short, lower case, no dots (a subject token), never a URL.
NAME_PATTERN: Final = r"^[a-z0-9][a-z0-9_-]{0,39}$"
_NAME = re.compile(NAME_PATTERN)
# Per-watcher proxies are labelled proxy-<8 hex> (ClientPool.egress): a pool name never is.
RESERVED_PREFIX: Final = "proxy-"

EgressState = Literal["healthy", "blocked", "down", "probing"]
EgressKind = Literal["direct", "proxy"]
EgressSource = Literal["file", "api"]


def check_name(name: str) -> str:
    """``name`` if it can name an egress; ValueError (saying why) otherwise."""
    if not _NAME.fullmatch(name):
        msg = "an egress name is 1-40 of a-z, 0-9, '_' and '-', starting with a letter or digit"
        raise ValueError(msg)
    if name.startswith(RESERVED_PREFIX):
        msg = f"egress names starting with {RESERVED_PREFIX!r} are reserved (per-watcher proxies)"
        raise ValueError(msg)
    return name


class EgressStatus(msgspec.Struct, kw_only=True):
    """One egress: what it is (never its URL), its budget, its health and its load."""

    name: str
    kind: EgressKind
    source: EgressSource
    requests_per_min: float
    state: EgressState = "healthy"
    # Why it is blocked or down (an error code), and since when; None while healthy.
    reason: str | None = None
    since: datetime | None = None
    backoff_s: float = 0.0  # until the next probe, while blocked or down
    assigned_watchers: int = 0
    need_per_min: float = 0.0  # requests a minute its watchers cost
    requests: int = 0
    waf_answers: int = 0
    challenge_solves: int = 0
    errors: int = 0


class EgressList(msgspec.Struct, kw_only=True):
    items: list[EgressStatus]
    healthy_capacity_per_min: float = 0.0  # the budgets of the healthy egresses
    need_per_min: float = 0.0  # what every watcher of the pool costs


class PickRequest(msgspec.Struct, kw_only=True):
    """Which proxy to use: ``name``'s, or (None, or no longer healthy) the least-loaded
    healthy egress's."""

    name: str | None = None


class PickReply(msgspec.Struct, kw_only=True):
    """``name`` None: the pool is empty (go direct, as without a pool). ``proxy`` sealed, or
    None for a direct egress."""

    name: str | None = None
    proxy: str | None = None
