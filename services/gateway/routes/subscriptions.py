"""Notification subscriptions: create, list, read, delete (the notifier owns them).

A subscription says which events (``room.live``, ``recording.finished``...), of which of the
key's watchers (or all its jobs), go to which target: a webhook (the event's JSON, signed with
HMAC-SHA256) or an Apprise URL (a short human message). The target is checked here (its
host against the egress rules, an Apprise URL against Apprise), sealed with SECRET_KEY and
never shown again but redacted; a webhook's signing secret is answered once, on create.
A key sees and deletes only its own subscriptions (admins: all; an admin's subscription hears
every job's events).
"""

from __future__ import annotations

import asyncio
import secrets
from datetime import datetime
from typing import Annotated, Literal, get_args
from urllib.parse import urlsplit

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field, field_validator

from services.gateway import micro_client
from services.gateway.deps import ApiKeyDep, LinkDep, SecretsDep, SettingsDep
from services.gateway.errors import JSON_BODY_RESPONSES, ApiError, documented
from services.gateway.schemas import Ok
from shared.egress import canonical_host, ip_of, is_private, resolve
from shared.errors import ErrorCode
from shared.events import new_id
from shared.notifications import (
    NOTIFIABLE_TYPES,
    WEBHOOK_SCHEMES,
    Subscription,
    TargetKind,
    host_checked,
    scheme_of,
    shown,
)
from shared.watchers import watcher_key

router = APIRouter(tags=["subscriptions"])

MAX_PER_KEY = 100
MAX_URL = 2048
MAX_WATCHERS = 1000
RESOLVE_TIMEOUT_S = 2.0
EventType = Literal[
    "room.live", "recording.started", "recording.finished", "upload.done", "file.deleted"
]
# The same list as the notifier's: a subscription to an event it never sends would be a lie.
assert set(get_args(EventType)) == set(NOTIFIABLE_TYPES)

PRIVATE_TARGET = "a private address (this deployment does not allow it: ALLOW_PRIVATE_WEBHOOKS)"
NOT_FOUND = documented(404, "No such subscription")
NOTIFIER_UNAVAILABLE = documented(503, "NATS or the notifier is not reachable")
SubscriptionId = Annotated[
    str, Path(pattern=r"^[0-9a-f]{32}$", description="The id POST /subscriptions answered")
]


class TargetIn(BaseModel):
    """Where notifications go."""

    type: TargetKind = Field(
        examples=["webhook"],
        description="webhook: POST of the event's JSON, signed; apprise: a short message "
        "through Apprise (tgram://, discord://, slack://, ntfy://, mailto://, json://...)",
    )
    url: str = Field(
        min_length=1,
        max_length=MAX_URL,
        description="The webhook's http(s) URL, or the Apprise URL; stored sealed, never shown",
        examples=["https://hooks.example.com/tlr"],
    )

    @field_validator("url")
    @classmethod
    def _plain(cls, value: str) -> str:
        if any(c.isspace() or not c.isprintable() for c in value):
            msg = "no spaces or control characters"
            raise ValueError(msg)
        return value


class SubscriptionCreate(BaseModel):
    """A new subscription."""

    events: list[EventType] = Field(
        min_length=1,
        max_length=len(NOTIFIABLE_TYPES),
        examples=[["room.live", "recording.finished"]],
    )
    watchers: list[str] | None = Field(
        None,
        max_length=MAX_WATCHERS,
        description="Watcher keys (room id, @user or URL); omitted or null: every job of the key",
        examples=[["@alice"]],
    )
    target: TargetIn

    @field_validator("watchers")
    @classmethod
    def _keys(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        keys = []
        for raw in value:
            try:
                key = watcher_key(None, raw) if not raw.isdigit() else raw
            except ValueError:
                msg = "each watcher is a room id, @user, or a TikTok user/live URL"
                raise ValueError(msg) from None
            if key not in keys:
                keys.append(key)
        return keys


class TargetOut(BaseModel):
    type: TargetKind
    url: str = Field(description="Redacted: the scheme, and the host when the user chose it")


class DeadLetterOut(BaseModel):
    event_id: str
    event_type: str
    job_id: str | None = None
    attempts: int
    error: str = Field(description="Why the last attempt failed (a fixed phrase)")
    at: datetime


class SubscriptionOut(BaseModel):
    id: str
    events: list[str]
    watchers: list[str] | None
    target: TargetOut
    created_at: datetime
    dead_letters_total: int = Field(
        description="Notifications given up after NOTIFY_MAX_ATTEMPTS failed attempts"
    )
    dead_letters: list[DeadLetterOut] = Field(description="The newest dead letters (up to 20)")

    @classmethod
    def of(cls, sub: Subscription) -> SubscriptionOut:
        return cls(
            id=sub.id,
            events=sub.events,
            watchers=sub.watchers,
            target=TargetOut(type=sub.kind, url=sub.target_shown),
            created_at=sub.created_at,
            dead_letters_total=sub.dead_letters_total,
            dead_letters=[DeadLetterOut(**_fields(d)) for d in sub.dead_letters],
        )


class SubscriptionCreated(SubscriptionOut):
    secret: str | None = Field(
        description="A webhook's signing secret, shown this once: X-TLR-Signature is "
        "sha256=HMAC-SHA256(secret, X-TLR-Timestamp + '.' + body) in hex; null for Apprise"
    )


class SubscriptionList(BaseModel):
    items: list[SubscriptionOut]


def _fields(obj: object) -> dict[str, object]:
    return {f: getattr(obj, f) for f in obj.__struct_fields__}  # type: ignore[attr-defined]


def _invalid(message: str) -> ApiError:
    return ApiError(422, ErrorCode.VALIDATION_ERROR, f"target.url: {message}")


async def _check_target(target: TargetIn, *, allow_private: bool) -> None:
    """422 unless ``target`` can be notified: a known kind of URL whose host (where the user
    chose it) passes the egress rules. A name that does not resolve here is accepted: the
    notifier resolves it again before every attempt."""
    scheme = scheme_of(target.url)
    if target.type == "webhook" and scheme not in WEBHOOK_SCHEMES:
        msg = "a webhook URL is http:// or https://"
        raise _invalid(msg)
    if target.type == "apprise" and not await asyncio.to_thread(_apprise_knows, target.url):
        msg = "not an Apprise URL this deployment can send to"
        raise _invalid(msg)
    if not host_checked(target.type, target.url):
        return
    try:
        host = canonical_host(urlsplit(target.url).hostname or "")
    except ValueError:
        msg = "no valid host"
        raise _invalid(msg) from None
    if allow_private:
        return
    ip = ip_of(host)
    try:
        addresses = [ip] if ip is not None else await resolve(host, 0, timeout=RESOLVE_TIMEOUT_S)
    except OSError:  # TimeoutError included
        return
    if any(is_private(a) for a in addresses):
        raise _invalid(PRIVATE_TARGET)


def _apprise_knows(url: str) -> bool:
    # Imported on first use: Apprise loads its plugins at import (~1 s), which the gateway's
    # other routes need not wait for.
    import apprise

    return apprise.Apprise.instantiate(url, suppress_exceptions=True) is not None


@router.post(
    "/subscriptions",
    status_code=201,
    summary="Subscribe a webhook or an Apprise target to events",
    responses={
        **documented(409, f"The key has {MAX_PER_KEY} subscriptions already"),
        **JSON_BODY_RESPONSES,
        **NOTIFIER_UNAVAILABLE,
    },
)
async def create_subscription(
    body: SubscriptionCreate,
    link: LinkDep,
    box: SecretsDep,
    settings: SettingsDep,
    api_key: ApiKeyDep,
) -> SubscriptionCreated:
    """Events of the key's jobs (``watchers``: only those started by these watchers) go to the
    target as they happen, in order per job; a failing target is retried with backoff, and a
    notification that fails NOTIFY_MAX_ATTEMPTS times is listed as a dead letter. The answer
    holds a webhook's signing secret: it is never shown again."""
    if box is None:
        msg = "this deployment has no SECRET_KEY to protect notification targets"
        raise _invalid(msg)
    await _check_target(body.target, allow_private=settings.allow_private_webhooks)
    nc = link.require_bus().nc
    mine = await micro_client.list_subscriptions(nc, owner=api_key.name)
    if len(mine.items) >= MAX_PER_KEY:
        raise ApiError(409, ErrorCode.CONFLICT, f"at most {MAX_PER_KEY} subscriptions per key")
    secret = secrets.token_urlsafe(32) if body.target.type == "webhook" else None
    sub = Subscription(
        id=new_id().replace("-", ""),
        owner=api_key.name,
        sees_all=api_key.admin,
        events=list(dict.fromkeys(body.events)),
        watchers=body.watchers,
        kind=body.target.type,
        target_sealed=box.seal(body.target.url),
        target_shown=shown(body.target.type, body.target.url),
        secret_sealed=box.seal(secret) if secret else None,
    )
    stored = await micro_client.create_subscription(nc, sub)
    return SubscriptionCreated(**SubscriptionOut.of(stored).model_dump(), secret=secret)


@router.get(
    "/subscriptions",
    summary="List subscriptions, oldest first",
    responses=NOTIFIER_UNAVAILABLE,
)
async def list_subscriptions(link: LinkDep, api_key: ApiKeyDep) -> SubscriptionList:
    """The key's own subscriptions (an admin's: all), targets redacted, with dead letters."""
    reply = await micro_client.list_subscriptions(link.require_bus().nc, owner=api_key.owner_filter)
    return SubscriptionList(
        items=[SubscriptionOut.of(s) for s in reply.items if api_key.sees(s.owner)]
    )


async def _own(link: LinkDep, api_key: ApiKeyDep, sub_id: str) -> Subscription:
    sub = await micro_client.get_subscription(link.require_bus().nc, sub_id)
    if sub is None or not api_key.sees(sub.owner):
        raise ApiError(404, ErrorCode.NOT_FOUND, "no such subscription")
    return sub


@router.get(
    "/subscriptions/{sub_id}",
    summary="One subscription, its target redacted, with its dead letters",
    responses={**NOT_FOUND, **NOTIFIER_UNAVAILABLE},
)
async def get_subscription(
    sub_id: SubscriptionId, link: LinkDep, api_key: ApiKeyDep
) -> SubscriptionOut:
    """Another key's subscription is a 404, as one that does not exist."""
    return SubscriptionOut.of(await _own(link, api_key, sub_id))


@router.delete(
    "/subscriptions/{sub_id}",
    summary="Unsubscribe: nothing more is sent to its target",
    responses={**NOT_FOUND, **NOTIFIER_UNAVAILABLE},
)
async def delete_subscription(sub_id: SubscriptionId, link: LinkDep, api_key: ApiKeyDep) -> Ok:
    """Notifications still queued for it are dropped."""
    await _own(link, api_key, sub_id)
    if not await micro_client.delete_subscription(link.require_bus().nc, sub_id):
        raise ApiError(404, ErrorCode.NOT_FOUND, "no such subscription")
    return Ok()
