"""What the API can ask the system to do: record, watch, pause, resume, stop, cancel, reindex.

Each command takes the handles it needs and returns a result or raises a :class:`CommandError`;
it knows nothing of HTTP (``errors.py`` maps its errors, and NATS outages, to answers). A
change travels as a JetStream command its owner consumes in order, or as ``desired`` in a
``job.<id>`` document of KV ``jobs``, so it is accepted here and applied moments later.

What a command makes is owned by the asking key's name; a command on a job or a watcher that
the asking key does not see (:meth:`ApiKey.sees`) is :class:`NotFound`, exactly as for one that
does not exist.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import msgspec

from services.gateway.api_keys import ApiKey
from services.gateway.job_status import assemble, assemble_watch
from services.gateway.micro_client import get_watcher, rebuild_index
from services.gateway.nats_link import NatsLink
from services.gateway.schemas import (
    JobStatus,
    RecordingCreate,
    RecordingOptionsIn,
    WatcherCreate,
    WatcherOptionsPatch,
    WatcherUpdate,
)
from services.gateway.validators import check_proxy_destination
from shared import files, jobs
from shared.bus import TRANSIENT, Bus
from shared.events import (
    Event,
    RecordingOptions,
    RecordingRequested,
    WatchDeleted,
    WatchPaused,
    WatchRequested,
    WatchResumed,
    WatchUpdated,
    new_id,
)
from shared.job_store import JobStore
from shared.secrets import SecretBox
from shared.tiktok import CookiesError, load_cookies
from shared.tiktok.targets import parse_target
from shared.watchers import Watcher, watcher_key


class CommandError(Exception):
    """A command refused; its message says why, for a human."""


class Invalid(CommandError):
    """What was asked cannot be done as given: an option or a target that cannot work."""


class NotFound(CommandError):
    """What the command acts on does not exist."""


class Conflict(CommandError):
    """It exists, but its state forbids the command (finished, paused, being deleted)."""


# One message for unknown and not the caller's: an answer must not tell them apart.
NO_JOB = "no such job"
NO_WATCHER = "no such watcher"


# --- options ------------------------------------------------------------------------------------


async def recording_options(
    opts: RecordingOptionsIn,
    output_template: str | None,
    secrets: SecretBox | None,
    cookies_dir: Path,
    *,
    allow_private_proxies: bool,
) -> RecordingOptions:
    """The options as they travel in events and KV: the cookies file checked, the proxy
    checked for where it points (ALLOW_PRIVATE_PROXIES) and sealed (never readable)."""
    if opts.cookies is not None:
        await _check_cookies_file(opts.cookies, cookies_dir)
    proxy = opts.proxy
    if proxy is not None:
        if secrets is None:
            msg = "options.proxy: this deployment has no SECRET_KEY to protect proxy credentials"
            raise Invalid(msg)
        try:
            await check_proxy_destination(proxy, allow_private=allow_private_proxies)
        except ValueError as exc:
            # A fixed phrase (validators.PRIVATE_PROXY): it never quotes the proxy's password.
            msg = f"options.proxy: {exc}"
            raise Invalid(msg) from None
        proxy = secrets.seal(proxy)
    return RecordingOptions(
        upload_s3=opts.upload_s3,
        quality=opts.quality,
        proxy=proxy,
        cookies=opts.cookies,
        output_template=output_template,
        engine=opts.engine,
        format=opts.format,
        join=opts.join,
        keep_segments=opts.keep_segments,
    )


async def _check_cookies_file(name: str, cookies_dir: Path) -> None:
    """Refuse ``name`` unless it loads as cookies from ``cookies_dir`` (inside it after
    symlinks, a regular readable file, size-limited, parsable). Skipped when this host has no
    such folder: the recorders, which read the file, check it again."""
    if not await asyncio.to_thread(cookies_dir.is_dir):
        return
    try:
        await asyncio.to_thread(load_cookies, name, cookies_dir)
    except (CookiesError, OSError) as exc:
        # CookiesError messages name the file, never its content (the cookies are secrets).
        reason = str(exc) if isinstance(exc, CookiesError) else "cannot be read"
        msg = f"options.cookies: {reason}"
        raise Invalid(msg) from None


# --- recordings ---------------------------------------------------------------------------------


# How a new job is stored and started; returns its id. An Idempotency-Key has its own.
Start = Callable[[Bus, JobStore, jobs.JobRequest, Event], Awaitable[str]]


async def submit_recording(
    link: NatsLink,
    store: JobStore,
    ask: RecordingCreate,
    *,
    owner: str,
    secrets: SecretBox | None,
    cookies_dir: Path,
    allow_private_proxies: bool,
    correlation_id: str,
    start: Start | None = None,
) -> str:
    """Record a live now: ``job.<id>`` of ``owner`` stored PENDING, then
    ``recording.requested`` for the recorder fleet (by ``start``, :func:`store_and_publish`
    unless given). Returns the job id."""
    options = await recording_options(
        ask.options,
        ask.output_template,
        secrets,
        cookies_dir,
        allow_private_proxies=allow_private_proxies,
    )
    job_id = new_id()
    doc = jobs.JobRequest(
        job_id=job_id,
        room_id=ask.room_id,
        url=ask.url,
        duration=ask.duration,
        options=options,
        correlation_id=correlation_id,
        owner=owner,
    )
    event = RecordingRequested(
        event_id=f"rec:{job_id}",
        correlation_id=correlation_id,
        job_id=job_id,
        room_id=ask.room_id,
        url=ask.url,
        duration=ask.duration,
        options=options,
        owner=owner,
    )
    return await (start or store_and_publish)(link.require_bus(), store, doc, event)


async def store_and_publish(bus: Bus, store: JobStore, doc: jobs.JobRequest, event: Event) -> str:
    """Store the job, then publish what starts it; a failed publish takes the job back out."""
    await store.submit(doc)
    try:
        await bus.publish(event)
    except TRANSIENT:
        # Never leave a PENDING job that no service will ever see.
        with contextlib.suppress(*TRANSIENT):
            await store.withdraw(doc.job_id)
        raise
    return doc.job_id


# --- watchers -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class WatchTarget:
    """What a watcher watches: its key, and the room id or ``@user`` name the target gives."""

    key: str
    room_id: str | None = None
    unique_id: str | None = None


def watch_target(room_id: str | None, url: str | None) -> WatchTarget:
    """The target of a new watcher; :class:`Invalid` when ``url`` names nothing to watch."""
    try:
        key = watcher_key(room_id, url)
        if url is None:
            return WatchTarget(key=key, room_id=room_id)
        target = parse_target(url)
    except ValueError:
        msg = "url: names no TikTok user, room or short link (expected /@user or /@user/live)"
        raise Invalid(msg) from None
    return WatchTarget(
        key=key,
        room_id=target.value if target.kind == "room_id" else None,
        unique_id=target.value if target.kind == "user" else None,
    )


async def create_watcher(
    link: NatsLink,
    store: JobStore,
    ask: WatcherCreate,
    *,
    owner: str,
    secrets: SecretBox | None,
    cookies_dir: Path,
    allow_private_proxies: bool,
    correlation_id: str,
    start: Start | None = None,
) -> str:
    """Watch a room or user: ``job.<id>`` of kind watch stored, then ``watch.requested`` for
    the scheduler (by ``start``, as for a recording); the watcher, its watch job and every
    job it starts are ``owner``'s. Returns the watch job's id."""
    target = watch_target(ask.room_id, ask.url)
    template = ask.options.output_template
    options = await recording_options(
        ask.options, template, secrets, cookies_dir, allow_private_proxies=allow_private_proxies
    )
    # A key is free again once its watcher is being deleted: the delete is queued first. A
    # target is watched once per deployment, whoever watches it: 409 tells that it is watched,
    # never by whom (nor anything else of that watcher).
    existing = await _scheduler_watcher(link, target.key)
    if existing is not None and not await _being_deleted(store, existing):
        msg = f"a watcher with key {target.key} exists"
        raise Conflict(msg)
    task_id = new_id()
    doc = jobs.JobRequest(
        job_id=task_id,
        kind="watch",
        watcher_key=target.key,
        room_id=target.room_id,
        url=ask.url,
        options=options,
        correlation_id=correlation_id,
        owner=owner,
    )
    event = WatchRequested(
        event_id=f"watch:{task_id}",
        correlation_id=correlation_id,
        task_id=task_id,
        key=target.key,
        room_id=target.room_id,
        url=ask.url,
        unique_id=target.unique_id,
        poll_interval=ask.poll_interval,
        options=options,
        owner=owner,
    )
    return await (start or store_and_publish)(link.require_bus(), store, doc, event)


async def read_watcher(link: NatsLink, key: str, *, caller: ApiKey) -> Watcher:
    """The watcher under ``key``, if ``caller`` sees it."""
    watcher = await _scheduler_watcher(link, key)
    if watcher is None or not caller.sees(watcher.owner):
        raise NotFound(NO_WATCHER)
    return watcher


async def delete_watcher(
    link: NatsLink, store: JobStore, key: str, *, caller: ApiKey, correlation_id: str
) -> None:
    """Stop watching ``key``; the recording in progress stops and its files are finalized."""
    watcher = await _changeable_watcher(link, store, key, caller)
    await _end_watch(
        link.require_bus(),
        store,
        key=watcher.key,
        task_id=watcher.task_id,
        current_job_id=watcher.current_job_id,
        correlation_id=correlation_id,
    )


async def pause_watcher(
    link: NatsLink, store: JobStore, key: str, *, caller: ApiKey, correlation_id: str
) -> None:
    """Stop polling ``key`` until resumed; the recording in progress stops cleanly."""
    watcher = await _changeable_watcher(link, store, key, caller)
    if watcher.status == "paused":
        msg = "watcher is paused already"
        raise Conflict(msg)
    if watcher.current_job_id:
        await _cancel_unfinished(store, watcher.current_job_id)
    await link.require_bus().publish(WatchPaused(correlation_id=correlation_id, key=watcher.key))


async def resume_watcher(
    link: NatsLink, store: JobStore, key: str, *, caller: ApiKey, correlation_id: str
) -> None:
    """Poll a paused ``key`` again; the scheduler checks the room right away."""
    watcher = await _changeable_watcher(link, store, key, caller)
    if watcher.status != "paused":
        msg = "watcher is not paused"
        raise Conflict(msg)
    await link.require_bus().publish(WatchResumed(correlation_id=correlation_id, key=watcher.key))


async def update_watcher(
    link: NatsLink,
    store: JobStore,
    key: str,
    ask: WatcherUpdate,
    *,
    caller: ApiKey,
    secrets: SecretBox | None,
    cookies_dir: Path,
    allow_private_proxies: bool,
    correlation_id: str,
) -> Watcher:
    """Change ``key`` from its next check on (``watch.updated``); the recording in progress
    goes on as it was, also when paused this way. Returns the watcher as it will be."""
    patch = ask.options if ask.options is not None and ask.options.model_fields_set else None
    if ask.poll_interval is None and patch is None and ask.paused is None:
        msg = "give at least one of poll_interval, options, paused to change"
        raise Invalid(msg)
    watcher = await _changeable_watcher(link, store, key, caller)
    options = None
    if patch is not None:
        options = await _patched_options(
            watcher.options, patch, secrets, cookies_dir, allow_private_proxies
        )
    event = WatchUpdated(
        correlation_id=correlation_id,
        key=watcher.key,
        task_id=watcher.task_id,
        poll_interval=ask.poll_interval,
        options=options,
        paused=ask.paused,
    )
    await link.require_bus().publish(event)
    status = watcher.status
    if ask.paused is not None:
        status = "paused" if ask.paused else "active"
    return msgspec.structs.replace(
        watcher,
        poll_interval=ask.poll_interval or watcher.poll_interval,
        options=options or watcher.options,
        status=status,
    )


async def _patched_options(
    old: RecordingOptions,
    patch: WatcherOptionsPatch,
    secrets: SecretBox | None,
    cookies_dir: Path,
    allow_private_proxies: bool,
) -> RecordingOptions:
    """``old`` with the fields ``patch`` sends, each checked (and a proxy sealed) as on create."""
    given = patch.model_fields_set
    checked = await recording_options(
        RecordingOptionsIn(
            proxy=patch.proxy,
            cookies=patch.cookies,
            quality=patch.quality,
            engine=patch.engine,
            format=patch.format or "mp4",
        ),
        patch.output_template,
        secrets,
        cookies_dir,
        allow_private_proxies=allow_private_proxies,
    )
    # A switch left null is kept; anything else sent is the new value (null: the default).
    switches = ("upload_s3", "join", "keep_segments")
    changes: dict[str, object] = {
        name: getattr(checked, name) for name in given if name not in switches
    }
    for name in switches:
        if getattr(patch, name) is not None:
            changes[name] = getattr(patch, name)
    return msgspec.structs.replace(old, **changes)


async def _scheduler_watcher(link: NatsLink, key: str) -> Watcher | None:
    """The scheduler's watcher under ``key`` (None: unknown); raises ServiceUnavailable."""
    return await get_watcher(link.require_bus().nc, key)


async def _changeable_watcher(link: NatsLink, store: JobStore, key: str, caller: ApiKey) -> Watcher:
    """The watcher under ``key``, unless it is unknown (to ``caller``) or being deleted
    already. Ownership comes first: another key's watcher is a 404, being deleted or not."""
    watcher = await read_watcher(link, key, caller=caller)
    if await _being_deleted(store, watcher):
        msg = "watcher is being deleted"
        raise Conflict(msg)
    return watcher


async def _being_deleted(store: JobStore, watcher: Watcher) -> bool:
    """A delete was asked already: the scheduler marks it, or the gateway cancelled its job."""
    if watcher.status == "deleted":
        return True
    found = await store.request(watcher.task_id)
    return found is not None and found.desired == "cancel"


async def _end_watch(
    bus: Bus,
    store: JobStore,
    *,
    key: str,
    task_id: str,
    current_job_id: str | None,
    correlation_id: str,
) -> None:
    """End the watcher of watch job ``task_id``: cancel its recording in progress, tell the
    scheduler (``watch.deleted``), then mark the watch job cancelled.

    The order makes a failure safe to retry: the watch job only reads CANCELLED once
    ``watch.deleted`` is stored.
    """
    if current_job_id:
        await _cancel_unfinished(store, current_job_id)
    event = WatchDeleted(
        event_id=f"watch-deleted:{task_id}", correlation_id=correlation_id, key=key
    )
    await bus.publish(event)
    await _ask_cancel(store, task_id)


# --- jobs ---------------------------------------------------------------------------------------


async def cancel_job(
    link: NatsLink, store: JobStore, task_id: str, *, caller: ApiKey, correlation_id: str
) -> JobStatus:
    """Cancel a job; its status once asked. A recording stops and its files are finalized; a
    watch job is cancelled by ending its watcher, as :func:`delete_watcher` does."""
    found = await store.request(task_id)
    if found is None or not caller.sees(found.owner):
        raise NotFound(NO_JOB)
    if found.kind == "watch":
        return await _cancel_watch_job(link, store, found, correlation_id)
    recording = await store.recording(task_id)
    if recording is not None and recording.state in jobs.TERMINAL:
        msg = f"job already {recording.state}"
        raise Conflict(msg)
    request = await store.request_cancel(task_id)
    assert request is not None  # read just above
    return assemble(request, await store.recording(task_id))


@dataclass(frozen=True)
class EndWatch:
    """The watcher to end to cancel a watch job, and the recording of it to stop."""

    key: str
    current_job_id: str | None = None


def watch_to_end(request: jobs.JobRequest, watcher: Watcher | None) -> EndWatch | None:
    """What cancelling watch job ``request`` ends, given the scheduler's watcher under its key
    (None: unknown, or not asked). None: only the job is marked cancelled."""
    key = request.watcher_key
    mine = watcher is not None and watcher.task_id == request.job_id
    # A newer watcher under the same key belongs to another job: leave it alone.
    newer = watcher is not None and not mine and watcher.created_at > request.created_at
    if request.desired == "cancel" or not key or newer:
        return None
    # Also when the scheduler has not registered it yet: the delete queues after it.
    return EndWatch(key=key, current_job_id=watcher.current_job_id if watcher and mine else None)


async def _cancel_watch_job(
    link: NatsLink, store: JobStore, request: jobs.JobRequest, correlation_id: str
) -> JobStatus:
    watcher = None
    if request.desired != "cancel" and request.watcher_key:
        watcher = await _scheduler_watcher(link, request.watcher_key)
    end = watch_to_end(request, watcher)
    if end is None:
        await _ask_cancel(store, request.job_id)
    else:
        await _end_watch(
            link.require_bus(),
            store,
            key=end.key,
            task_id=request.job_id,
            current_job_id=end.current_job_id,
            correlation_id=correlation_id,
        )
    found = await store.request(request.job_id)
    assert found is not None
    return assemble_watch(found, watcher)


async def _ask_cancel(store: JobStore, job_id: str) -> None:
    """Set ``desired=cancel`` on ``job.<id>``: the recorder holding the job stops and finalizes
    its files; one that has not taken it yet never starts it."""
    await store.request_cancel(job_id)


async def _cancel_unfinished(store: JobStore, job_id: str) -> None:
    """Cancel a job unless it is unknown or already finished."""
    recording = await store.recording(job_id)
    if recording is None or recording.state not in jobs.TERMINAL:
        await _ask_cancel(store, job_id)


# --- files --------------------------------------------------------------------------------------


async def rebuild_file_index(link: NatsLink) -> files.RebuildReply:
    """Have the indexer rescan RECORDINGS_DIR: files it misses added, those gone dropped."""
    return await rebuild_index(link.require_bus().nc)
