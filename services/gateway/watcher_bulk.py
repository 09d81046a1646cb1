"""Watchers in bulk: many POST /watchers bodies made in one request, and the caller's exported.

Each item is checked and made on its own, exactly as POST /watchers makes one (the same
model, the same command), so a bad item is refused in its result and the others are made:
all-or-nothing is not promised. An export never carries a proxy (it is sealed, and a
secret): it is given again when imported.
"""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from pydantic import ValidationError

from services.gateway import commands, micro_client
from services.gateway.api_keys import ApiKey
from services.gateway.errors import OUTAGES, describe_validation, outage_message, refusal
from services.gateway.nats_link import NatsLink
from services.gateway.schemas import (
    WatcherBulkResult,
    WatcherCreate,
    WatcherOptionsIn,
)
from shared.errors import ErrorCode
from shared.events import FORMATS
from shared.watchers import Watcher

# Items made at once: enough to hide the round trips of one (scheduler, KV, publish), few
# enough that one bulk request does not crowd out everyone else's.
CONCURRENCY = 16
EXPORT_PAGE = 500
CSV_COLUMNS = (
    "room_id",
    "url",
    "poll_interval",
    "upload_s3",
    "quality",
    "cookies",
    "output_template",
)

Create = Callable[[WatcherCreate], Awaitable[str]]


async def create_many(items: list[dict[str, Any]], create: Create) -> list[WatcherBulkResult]:
    """One result per item, in order: each validated as a POST /watchers body and made by
    ``create`` (which raises what :func:`commands.create_watcher` raises). An item whose key
    an earlier item of the same request has is a 409, as it would be one request later."""
    results: list[WatcherBulkResult | None] = [None] * len(items)
    todo: list[tuple[int, str, WatcherCreate]] = []
    seen: dict[str, int] = {}
    for index, raw in enumerate(items):
        try:
            body = WatcherCreate.model_validate(raw)
            key = _key_of(body)
        except ValidationError as exc:
            results[index] = _refused(index, None, 422, ErrorCode.VALIDATION_ERROR, exc)
            continue
        except commands.CommandError as exc:
            results[index] = _refused(index, None, *refusal(exc), exc)
            continue
        if key in seen:
            msg = f"item {seen[key]} of this request watches {key} already"
            results[index] = _refused(index, key, 409, ErrorCode.CONFLICT, msg)
            continue
        seen[key] = index
        todo.append((index, key, body))

    gate = asyncio.Semaphore(CONCURRENCY)

    async def make(index: int, key: str, body: WatcherCreate) -> None:
        async with gate:
            try:
                task_id = await create(body)
            except commands.CommandError as exc:
                results[index] = _refused(index, key, *refusal(exc), exc)
            except OUTAGES as exc:  # this item is not made; a retry of it may be
                message = outage_message(exc)
                results[index] = _refused(index, key, 503, ErrorCode.SERVICE_UNAVAILABLE, message)
            else:
                results[index] = WatcherBulkResult(
                    index=index, key=key, status=202, task_id=task_id
                )

    await asyncio.gather(*(make(*item) for item in todo))
    return [r for r in results if r is not None]


def _key_of(body: WatcherCreate) -> str:
    if (body.room_id is None) == (body.url is None):
        msg = "give exactly one of room_id or url"
        raise commands.Invalid(msg)
    return commands.watch_target(body.room_id, body.url).key


def _refused(
    index: int, key: str | None, status: int, code: ErrorCode, why: object
) -> WatcherBulkResult:
    message = describe_validation(why) if isinstance(why, ValidationError) else str(why)
    return WatcherBulkResult(
        index=index, key=key, status=status, error_code=code, error_message=message
    )


# --- export -------------------------------------------------------------------------------------


async def watchers_of(link: NatsLink, caller: ApiKey) -> AsyncIterator[Watcher]:
    """Every watcher ``caller`` sees, oldest first, a page of the scheduler's at a time."""
    page = 1
    while True:
        reply = await micro_client.list_watchers(
            link.require_bus().nc, page, EXPORT_PAGE, owner=caller.owner_filter
        )
        for w in reply.items:
            if caller.sees(w.owner) and w.status != "deleted":
                yield w
        if not reply.items or page * EXPORT_PAGE >= reply.total:
            return
        page += 1


def as_create(w: Watcher) -> WatcherCreate:
    """The POST /watchers body that makes ``w`` again (its proxy left out: never exported)."""
    o = w.options
    options = WatcherOptionsIn(
        upload_s3=o.upload_s3,
        quality=o.quality,
        cookies=o.cookies,
        output_template=o.output_template,
        format=o.format if o.format in FORMATS else "mp4",
        join=o.join,
        keep_segments=o.keep_segments,
    )
    if w.url:
        return WatcherCreate(url=w.url, poll_interval=w.poll_interval, options=options)
    if w.unique_id:
        return WatcherCreate(url=f"@{w.unique_id}", poll_interval=w.poll_interval, options=options)
    return WatcherCreate(room_id=w.key, poll_interval=w.poll_interval, options=options)


def to_csv(bodies: list[WatcherCreate]) -> str:
    """One row per watcher under a header of :data:`CSV_COLUMNS`; empty cells for none."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for b in bodies:
        o = b.options
        writer.writerow(
            [
                b.room_id or "",
                b.url or "",
                b.poll_interval,
                "true" if o.upload_s3 else "false",
                o.quality or "",
                o.cookies or "",
                o.output_template or "",
            ]
        )
    return buffer.getvalue()
