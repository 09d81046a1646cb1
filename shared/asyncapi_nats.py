"""The event catalogue's ``x-nats`` extension: the streams (EVENTS; NOTIFY, the notifier's
queue of copies of events), their durable consumers, KV ``jobs``."""

from __future__ import annotations

import inspect
from typing import Any

from nats.js.api import StreamConfig

from shared import jobs
from shared.subjects import DURABLES, EVENTS, JOBS, NOTIFY, Durable

# The documents of KV bucket ``jobs`` by key; the values are JSON except ``room.<room_id>``.
JOB_KEYS: tuple[tuple[str, type[Any] | None], ...] = (
    (jobs.request_key("<id>"), jobs.JobRequest),
    (jobs.recording_key("<id>"), jobs.RecordingPart),
    (jobs.upload_key("<id>"), jobs.UploadPart),
    (jobs.room_key("<room_id>"), None),
)


def _durable_info(durable: Durable) -> dict[str, Any]:
    c = durable.config
    return {
        "description": c.description,
        "filter_subjects": list(c.filter_subjects or []),
        "deliver_policy": c.deliver_policy.value if c.deliver_policy else None,
        "ack_policy": c.ack_policy.value if c.ack_policy else None,
        "ack_wait_s": c.ack_wait,
        "max_ack_pending": c.max_ack_pending,
        "max_deliver": c.max_deliver,
    }


def _stream_info(stream: StreamConfig) -> dict[str, Any]:
    return {
        "description": stream.description,
        "subjects": list(stream.subjects or []),
        "retention": stream.retention.value if stream.retention else None,
        "storage": stream.storage.value if stream.storage else None,
        "discard": stream.discard.value if stream.discard else None,
        "max_age_s": stream.max_age,
        "duplicate_window_s": stream.duplicate_window,
        "consumers": {d.name: _durable_info(d) for d in DURABLES if d.stream == stream.name},
    }


def extension(schemas: str) -> dict[str, Any]:
    """Where the events are kept and who reads them: the stream, durables and KV ``jobs``.

    ``schemas`` is the ``$ref`` prefix under which the document keeps the JOB_KEYS types.
    """
    assert EVENTS.name is not None
    keys: dict[str, Any] = {}
    for key, doc_type in JOB_KEYS:
        if doc_type is None:
            keys[key] = {
                "description": "The job that owns the room's recording: its id as plain text.",
                "schema": {"type": "string"},
            }
        else:
            keys[key] = {
                "description": inspect.cleandoc(doc_type.__doc__ or ""),
                "schema": {"$ref": schemas + doc_type.__name__},
            }
    return {
        "streams": {stream.name: _stream_info(stream) for stream in (EVENTS, NOTIFY)},
        "kv": {
            JOBS.bucket: {
                "description": JOBS.description,
                "history": JOBS.history,
                "ttl_s": JOBS.ttl,
                "keys": keys,
            }
        },
    }
