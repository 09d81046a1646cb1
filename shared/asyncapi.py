"""The event catalogue: an AsyncAPI 3.0 document generated from shared.events and shared.subjects.

Nothing in it is written by hand that the code already declares: the JSON Schemas come from the
msgspec types (:mod:`shared.msgspec_schemas`), the subjects from the event tags, the stream,
consumers and buckets from :mod:`shared.subjects` (:mod:`shared.asyncapi_nats`). The gateway
serves it at ``GET /asyncapi.json``; ``tlr asyncapi`` (:mod:`tlr.asyncapi_file`) writes it to
``docs/asyncapi.json``; a test fails when the checked-in file differs.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from nats.micro.request import ERROR_CODE_HEADER, ERROR_HEADER
from nats.micro.service import ServicePing

from shared import (
    asyncapi_nats,
    egresses,
    files,
    generated,
    job_list,
    msgspec_schemas,
    notifications,
    watchers,
)
from shared.config import Settings
from shared.events import (
    EVENT_TYPES,
    SCHEMA_VERSION,
    EgressAdded,
    EgressFailed,
    EgressRemoved,
    Event,
    FileDeleted,
    RecordingFinished,
    RecordingRequested,
    RecordingStarted,
    RoomLive,
    UploadDone,
    WatchDeleted,
    WatchPaused,
    WatchRequested,
    WatchResumed,
    WatchUpdated,
)
from shared.subjects import DURABLES, EVENTS, subject_for

SERVER = "nats"
CONTENT_TYPE = "application/json"
SCHEMAS = "#/components/schemas/"

# Who publishes each event. Declared nowhere else; a test checks it against every place in
# services/ that constructs an event.
PRODUCERS: dict[type[Event], tuple[str, ...]] = {
    WatchRequested: ("gateway",),
    WatchDeleted: ("gateway",),
    WatchPaused: ("gateway",),
    WatchResumed: ("gateway",),
    WatchUpdated: ("gateway",),
    EgressAdded: ("gateway",),
    EgressRemoved: ("gateway",),
    EgressFailed: ("recorder",),
    RecordingRequested: ("gateway",),
    RoomLive: ("scheduler",),
    RecordingStarted: ("recorder",),
    RecordingFinished: ("recorder",),
    UploadDone: ("uploader",),
    FileDeleted: ("indexer", "uploader"),
}

# The headers Bus.publish sets on every event (the live test checks real messages against them).
EVENT_HEADERS: dict[str, str] = {
    "Nats-Msg-Id": "The event's `event_id`: JetStream drops a second message with the same id "
    "within the stream's duplicate window.",
    "Event-Type": "The event's type tag, which is also its subject.",
    "Event-Version": "The event's schema version `v`, as a decimal string.",
    "Correlation-Id": "The event's `correlation_id`.",
}


@dataclass(frozen=True)
class Endpoint:
    """A request/reply subject of the public contract (a ``nats.micro`` endpoint)."""

    subject: str
    service: str
    summary: str
    request: type[Any] | None  # None: the request body is empty
    reply: type[Any]
    errors: str = ""


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        files.QUERY,
        files.SERVICE,
        "One page of the file index, newest first (GET /files asks this).",
        files.FileQuery,
        files.FilePage,
        "400 (bad query), 500, 503 (the indexer is stopping)",
    ),
    Endpoint(
        files.GET,
        files.SERVICE,
        "One indexed file by id (GET /files/{id}/content and /thumbnail ask this).",
        files.FileGet,
        files.IndexedFile,
        "400 (bad request), 404 (no such file), 500, 503 (the indexer is stopping)",
    ),
    Endpoint(
        files.REBUILD,
        files.SERVICE,
        "Rescan RECORDINGS_DIR and reconcile the index (POST /files/rebuild asks this).",
        None,
        files.RebuildReply,
        "500, 503 (the indexer is stopping)",
    ),
    Endpoint(
        job_list.QUERY,
        job_list.SERVICE,
        "One page of the job index, newest first, from a cursor (GET /jobs asks this).",
        job_list.JobQuery,
        job_list.JobPage,
        "400 (bad query), 500, 503 (the indexer is stopping)",
    ),
    Endpoint(
        watchers.GET,
        watchers.SERVICE,
        "One watcher by key (room id or @user).",
        watchers.GetRequest,
        watchers.Watcher,
        "404 (no such watcher)",
    ),
    Endpoint(
        watchers.LIST,
        watchers.SERVICE,
        "One page of watchers, oldest first.",
        watchers.ListRequest,
        watchers.ListReply,
    ),
    Endpoint(
        egresses.LIST,
        egresses.SERVICE,
        "The egress pool: each egress's kind, budget, health and load, never its URL "
        "(GET /egresses asks this).",
        None,
        egresses.EgressList,
    ),
    Endpoint(
        egresses.PICK,
        egresses.SERVICE,
        "The sealed proxy of an egress by name, or of the least-loaded healthy one (a "
        "recorder asks this before it fetches a room through the pool).",
        egresses.PickRequest,
        egresses.PickReply,
        "400 (bad request)",
    ),
    Endpoint(
        notifications.CREATE,
        notifications.SERVICE,
        "Store a subscription the gateway checked and sealed (POST /subscriptions asks this).",
        notifications.Subscription,
        notifications.Subscription,
        "400 (bad request), 409 (the id exists)",
    ),
    Endpoint(
        notifications.GET,
        notifications.SERVICE,
        "One subscription by id, its target sealed, with its dead letters.",
        notifications.SubscriptionRef,
        notifications.Subscription,
        "404 (no such subscription)",
    ),
    Endpoint(
        notifications.LIST,
        notifications.SERVICE,
        "Every subscription of an owner (of everyone with no owner), oldest first.",
        notifications.SubscriptionsQuery,
        notifications.SubscriptionsReply,
    ),
    Endpoint(
        notifications.DELETE,
        notifications.SERVICE,
        "Forget a subscription; its queued notifications are dropped as they come up.",
        notifications.SubscriptionRef,
        notifications.SubscriptionDeleted,
    ),
    Endpoint(
        "$SRV.PING",
        "every service",
        "nats.micro discovery: every service instance answers (`nats micro ls` uses it; so "
        "does GET /services). `$SRV.INFO` and `$SRV.STATS` work the same way, and "
        "`$SRV.PING.<name>` asks the instances of one service.",
        None,
        ServicePing,
    ),
)


def _ident(subject: str) -> str:
    """A map key for a subject: AsyncAPI keys allow only letters, digits, ``_`` and ``-``."""
    return "".join(c if c.isalnum() else "_" for c in subject).strip("_")


def _doc(obj: object) -> str:
    return inspect.cleandoc(obj.__doc__ or "")


def _first_line(text: str) -> str:
    return text.split("\n\n", 1)[0].replace("\n", " ")


def _ref(path: str) -> dict[str, str]:
    return {"$ref": path}


def _durables_of(subject: str) -> list[str]:
    return [d.name for d in DURABLES if subject in (d.config.filter_subjects or [])]


def _headers_schema(event_type: type[Event]) -> dict[str, Any]:
    props: dict[str, Any] = {
        name: {"type": "string", "description": text} for name, text in EVENT_HEADERS.items()
    }
    props["Event-Type"]["const"] = subject_for(event_type)
    props["Event-Version"]["pattern"] = "^[0-9]+$"
    return {
        "type": "object",
        "properties": props,
        "required": sorted(EVENT_HEADERS),
        # NATS may add its own, e.g. Nats-Expected-Stream, which names the stream.
        "additionalProperties": True,
    }


def _event_parts(
    event_type: type[Event],
) -> tuple[str, dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Channel id, channel, message and operation of one event type."""
    subject = subject_for(event_type)
    ident = _ident(subject)
    text = _doc(event_type)
    producers = list(PRODUCERS[event_type])
    durables = _durables_of(subject)
    where = (
        f"Stream `{EVENTS.name}`. Published by: {', '.join(producers)}. "
        f"Read by the durable consumers: {', '.join(durables) or 'none (for integrators)'}."
    )
    channel: dict[str, Any] = {
        "address": subject,
        "title": subject,
        "summary": _first_line(text),
        "description": f"{text}\n\n{where}",
        "messages": {ident: _ref(f"#/components/messages/{ident}")},
        "servers": [_ref(f"#/servers/{SERVER}")],
        "x-stream": EVENTS.name,
        "x-producers": producers,
        "x-durables": durables,
    }
    message: dict[str, Any] = {
        "name": subject,
        "title": event_type.__name__,
        "summary": _first_line(text),
        "description": text,
        "contentType": CONTENT_TYPE,
        "payload": _ref(SCHEMAS + event_type.__name__),
        "headers": _headers_schema(event_type),
        "correlationId": {
            "description": "Follows one job from the REST request through every service.",
            "location": "$message.payload#/correlation_id",
        },
    }
    operation: dict[str, Any] = {
        "action": "send",
        "title": f"{subject}, published by {', '.join(producers)}",
        "summary": _first_line(text),
        "channel": _ref(f"#/channels/{ident}"),
        "messages": [_ref(f"#/channels/{ident}/messages/{ident}")],
    }
    return ident, channel, message, operation


def _endpoint_parts(
    endpoint: Endpoint,
) -> tuple[str, dict[str, dict[str, Any]], dict[str, Any], dict[str, Any]]:
    """Channel id, channels (request and reply), messages and operation of one endpoint."""
    ident = _ident(endpoint.subject)
    reply_ident = f"{ident}_reply"
    request: dict[str, Any] = {
        "name": f"{endpoint.subject} request",
        "summary": f"Request to {endpoint.subject}.",
        "contentType": CONTENT_TYPE,
    }
    if endpoint.request is None:
        request["description"] = "Empty body."
    else:
        request["payload"] = _ref(SCHEMAS + endpoint.request.__name__)
        request["description"] = _doc(endpoint.request) or endpoint.summary
    errors = f" Error codes: {endpoint.errors}." if endpoint.errors else ""
    reply: dict[str, Any] = {
        "name": f"{endpoint.subject} reply",
        "summary": f"Reply of {endpoint.subject}.",
        "description": f"{_doc(endpoint.reply)}\n\nAn error is an empty body with the headers "
        f"`{ERROR_CODE_HEADER}` and `{ERROR_HEADER}` (nats.micro).{errors}",
        "contentType": CONTENT_TYPE,
        "payload": _ref(SCHEMAS + endpoint.reply.__name__),
        "headers": {
            "type": "object",
            "properties": {
                ERROR_CODE_HEADER: {"type": "string", "description": "HTTP-like status code"},
                ERROR_HEADER: {"type": "string", "description": "What went wrong"},
            },
        },
    }
    channels: dict[str, dict[str, Any]] = {
        ident: {
            "address": endpoint.subject,
            "title": endpoint.subject,
            "summary": endpoint.summary,
            "description": f"{endpoint.summary}\n\nRequest/reply (core NATS, not JetStream), "
            f"answered by: {endpoint.service}.",
            "messages": {"request": _ref(f"#/components/messages/{ident}_request")},
            "servers": [_ref(f"#/servers/{SERVER}")],
        },
        reply_ident: {
            "address": None,
            "title": f"{endpoint.subject} reply",
            "description": "The requester's inbox (the NATS reply subject of the request).",
            "messages": {"reply": _ref(f"#/components/messages/{ident}_reply")},
            "servers": [_ref(f"#/servers/{SERVER}")],
        },
    }
    operation: dict[str, Any] = {
        "action": "receive",
        "title": f"{endpoint.service} answers {endpoint.subject}",
        "summary": endpoint.summary,
        "channel": _ref(f"#/channels/{ident}"),
        "messages": [_ref(f"#/channels/{ident}/messages/request")],
        "reply": {
            "channel": _ref(f"#/channels/{reply_ident}"),
            "messages": [_ref(f"#/channels/{reply_ident}/messages/reply")],
        },
    }
    messages = {f"{ident}_request": request, f"{ident}_reply": reply}
    return ident, channels, messages, operation


def _schemas() -> dict[str, Any]:
    types: list[Any] = [*EVENT_TYPES]
    for endpoint in ENDPOINTS:
        types += [t for t in (endpoint.request, endpoint.reply) if t is not None]
    types += [t for _, t in asyncapi_nats.JOB_KEYS if t is not None]
    normalised: dict[str, Any] = generated.normalised(
        msgspec_schemas.components(types, ref_template=SCHEMAS + "{name}")
    )
    return normalised


def _server() -> dict[str, Any]:
    default = str(Settings.model_fields["nats_url"].default)
    url = urlsplit(default)
    return {
        "host": url.netloc,
        "protocol": url.scheme,
        "title": "NATS with JetStream",
        "description": f"The deployment's NATS_URL (default `{default}`; a cluster in "
        "production). Connect with any NATS client; the events are in the JetStream stream "
        f"`{EVENTS.name}`.",
    }


def _info() -> dict[str, Any]:
    days = (EVENTS.max_age or 0) / 86_400
    return {
        "title": "TikTok LIVE recorder: events",
        "version": str(SCHEMA_VERSION),
        "description": "\n\n".join(
            [
                "The events of the TikTok LIVE recorder fleet, on NATS JetStream. The subject "
                "of every event is its type tag (the payload's `type` field). docs/events.md "
                "explains them with an example subscriber.",
                "This document describes the whole fleet as one application. An operation "
                "with action `send` is an event the fleet publishes: integrators subscribe to "
                "it. An operation with action `receive` is a request/reply subject the fleet "
                "answers (nats.micro). The commands (`watch.*`, `recording.requested`) are "
                "published by the gateway for REST requests; integrators use the REST API for "
                "those and only read them here.",
                f"Every event is stored in stream `{EVENTS.name}` ({days:g} days, then "
                f"discarded): a new consumer can replay that far. Delivery is at least once: "
                f"consumers must be idempotent (by `event_id`). A publish retried with the "
                f"same `Nats-Msg-Id` within {EVENTS.duplicate_window:g} s is stored once.",
                "Versioning: `v` is the schema version (`info.version`). Changes are "
                "additive: a new field always has a default, no field changes type or "
                "meaning, so decoders must ignore fields they do not know.",
            ]
        ),
    }


def build() -> dict[str, Any]:
    """The AsyncAPI 3.0.0 document, as a JSON-ready dict."""
    channels: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for event_type in EVENT_TYPES:
        ident, channel, message, operation = _event_parts(event_type)
        channels[ident] = channel
        messages[ident] = message
        operations[f"send_{ident}"] = operation
    for endpoint in ENDPOINTS:
        ident, endpoint_channels, endpoint_messages, operation = _endpoint_parts(endpoint)
        channels.update(endpoint_channels)
        messages.update(endpoint_messages)
        operations[f"answer_{ident}"] = operation
    return {
        "asyncapi": "3.0.0",
        "id": "urn:tiktok-live-recorder:events",
        "info": _info(),
        "defaultContentType": CONTENT_TYPE,
        "servers": {SERVER: _server()},
        "channels": channels,
        "operations": operations,
        "components": {"schemas": _schemas(), "messages": messages},
        "x-nats": asyncapi_nats.extension(SCHEMAS),
    }


def render() -> str:
    """The document as the checked-in file holds it: sorted keys, so it compares byte for byte."""
    return json.dumps(build(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
