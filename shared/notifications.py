"""Subscriptions as the notifier keeps them, and the request/reply contract to ask it.

The notifier owns subscriptions (KV ``subscriptions``; it is the only writer). The gateway
creates, reads and deletes them through the notifier's ``nats.micro`` endpoints below. Targets
and webhook secrets arrive sealed (``shared.secrets``): nothing readable crosses NATS or sits
in KV; ``target_shown`` is the redacted form an answer may carry.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from urllib.parse import urlsplit

import msgspec

from shared.events import (
    Event,
    FileDeleted,
    RecordingFinished,
    RecordingStarted,
    RoomLive,
    UploadDone,
    utc_now,
)
from shared.micro import endpoint_subject

SERVICE = "notifier"
CREATE = endpoint_subject(SERVICE, "subscriptions.create")
GET = endpoint_subject(SERVICE, "subscriptions.get")
LIST = endpoint_subject(SERVICE, "subscriptions.list")
DELETE = endpoint_subject(SERVICE, "subscriptions.delete")

# The events a subscription may ask for: what happens to lives, recordings and files. The
# watcher commands are the API's own echo, not news.
NOTIFIABLE: tuple[type[Event], ...] = (
    RoomLive,
    RecordingStarted,
    RecordingFinished,
    UploadDone,
    FileDeleted,
)
NOTIFIABLE_TYPES: tuple[str, ...] = tuple(t.type_name() for t in NOTIFIABLE)

TargetKind = Literal["webhook", "apprise"]
# Dead letters kept on a subscription (the newest); ``dead_letters_total`` counts them all.
DEAD_LETTERS_KEPT = 20


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A notification given up after the last attempt; ``error`` is a fixed phrase (never
    the target's answer, which may quote the URL)."""

    event_id: str
    event_type: str
    job_id: str | None = None
    attempts: int
    error: str
    at: datetime = msgspec.field(default_factory=utc_now)


class Subscription(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Which events of which watchers go to which target, for one API key."""

    id: str
    owner: str  # the name of the API key that made it
    sees_all: bool = False  # an admin's: every job's events, whoever owns it
    events: list[str]
    watchers: list[str] | None = None  # watcher keys; None: all the owner's
    kind: TargetKind
    target_sealed: str
    target_shown: str
    secret_sealed: str | None = None  # a webhook's HMAC key
    created_at: datetime = msgspec.field(default_factory=utc_now)
    dead_letters_total: int = 0
    dead_letters: list[DeadLetter] = msgspec.field(default_factory=list)


class SubscriptionRef(msgspec.Struct):
    id: str


class SubscriptionsQuery(msgspec.Struct):
    owner: str | None = None  # only this owner's subscriptions; None: everyone's


class SubscriptionsReply(msgspec.Struct):
    items: list[Subscription]


class SubscriptionDeleted(msgspec.Struct):
    deleted: bool


# --- targets ----------------------------------------------------------------------------------

WEBHOOK_SCHEMES = frozenset({"http", "https"})
# Apprise schemes whose URL names a host of the user's choosing (a JSON/XML/form POST, a
# self-hosted server): that host passes the same egress rules as a webhook's. The others name
# a vendor's service (tgram://, discord://, slack://...), whose host Apprise fixes.
APPRISE_HOST_SCHEMES = frozenset(
    {
        "json",
        "jsons",
        "xml",
        "xmls",
        "form",
        "forms",
        "gotify",
        "gotifys",
        "mmost",
        "mmosts",
        "rocket",
        "rockets",
        "matrix",
        "matrixs",
        "apprise",
        "apprises",
    }
)
SIGNATURE_HEADER = "X-TLR-Signature"
TIMESTAMP_HEADER = "X-TLR-Timestamp"
EVENT_HEADER = "X-TLR-Event"
DELIVERY_HEADER = "X-TLR-Delivery"


def scheme_of(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else ""


def host_checked(kind: TargetKind, url: str) -> bool:
    """Whether the egress rules judge this target's host (a webhook, or an Apprise URL whose
    host the user chose)."""
    return kind == "webhook" or scheme_of(url) in APPRISE_HOST_SCHEMES


def shown(kind: TargetKind, url: str) -> str:
    """The target as an answer may show it: the scheme, and the host where the user chose it;
    never credentials, a path or a query (a Slack or Discord URL holds its token there)."""
    scheme = scheme_of(url)
    if not host_checked(kind, url):
        return f"{scheme}://…"
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    rest = "/…" if (parts.path.strip("/") or parts.query) else ""
    return f"{scheme}://{host}{port}{rest}"
