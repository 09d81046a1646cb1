"""Queries to the services' ``nats.micro`` endpoints: watchers and egresses (scheduler), files
and jobs (indexer).

Those services own their state; the gateway only reads it here (and changes it through
JetStream commands). Anything that keeps an answer from arriving (no instance running, a
timeout, a lost connection, an error reply other than "not found", a reply that does not
decode) is :class:`ServiceUnavailable`, which the API answers with 503.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

import msgspec
import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.micro.request import ERROR_CODE_HEADER, ERROR_HEADER

from shared import egresses, files, job_list, notifications, watchers
from shared.bus import TRANSIENT

T = TypeVar("T")
TIMEOUT = 2.0
# A query (not a rebuild) is asked again when an answer is late: the queue group picks an
# instance at random, so a frozen one (a stopped process, a GC pause) costs a second try on
# another, not a 503. The tries share the timeout: 25 %, 25 %, then the rest.
QUERY_TRIES = (0.25, 0.25, 0.5)
REBUILD_TIMEOUT = 120.0  # a scan of a large RECORDINGS_DIR takes a while
NOT_FOUND = "404"  # the nats.micro error code our services answer for an unknown key

_encoder = msgspec.json.Encoder()


class ServiceUnavailable(Exception):
    """The service gave no usable answer; ``service`` names it (scheduler, indexer)."""

    def __init__(self, service: str, why: str) -> None:
        super().__init__(f"{service}: {why}")
        self.service = service


class _NotFound(Exception):
    pass


class _Late(ServiceUnavailable):
    """No answer within the timeout: the instance asked may be frozen."""


async def get_watcher(nc: Client, key: str, *, timeout: float = TIMEOUT) -> watchers.Watcher | None:
    """The watcher under ``key``, or None when the scheduler does not know it."""
    try:
        request = watchers.GetRequest(key=key)
        return await _query(nc, watchers.SERVICE, watchers.GET, request, watchers.Watcher, timeout)
    except _NotFound:
        return None


async def list_watchers(
    nc: Client, page: int, page_size: int, *, owner: str | None, timeout: float = TIMEOUT
) -> watchers.ListReply:
    """One page of watchers (oldest first) and the total count: ``owner``'s, or everyone's
    when None."""
    request = watchers.ListRequest(page=page, page_size=page_size, owner=owner)
    return await _found(
        _query(nc, watchers.SERVICE, watchers.LIST, request, watchers.ListReply, timeout),
        watchers.SERVICE,
        watchers.LIST,
    )


async def list_egresses(nc: Client, *, timeout: float = TIMEOUT) -> egresses.EgressList:
    """Every egress of the pool with its health (never a proxy URL)."""
    return await _found(
        _query(nc, egresses.SERVICE, egresses.LIST, None, egresses.EgressList, timeout),
        egresses.SERVICE,
        egresses.LIST,
    )


async def query_files(
    nc: Client, query: files.FileQuery, *, timeout: float = TIMEOUT
) -> files.FilePage:
    """One page of indexed files, newest first, and the total count."""
    return await _found(
        _query(nc, files.SERVICE, files.QUERY, query, files.FilePage, timeout),
        files.SERVICE,
        files.QUERY,
    )


async def get_file(
    nc: Client, file_id: int, *, timeout: float = TIMEOUT
) -> files.IndexedFile | None:
    """The indexed file ``file_id``, or None when the index has none."""
    try:
        request = files.FileGet(id=file_id)
        return await _query(nc, files.SERVICE, files.GET, request, files.IndexedFile, timeout)
    except _NotFound:
        return None


async def query_jobs(
    nc: Client, query: job_list.JobQuery, *, timeout: float = TIMEOUT
) -> job_list.JobPage:
    """One page of the job index, newest first."""
    return await _found(
        _query(nc, job_list.SERVICE, job_list.QUERY, query, job_list.JobPage, timeout),
        job_list.SERVICE,
        job_list.QUERY,
    )


async def rebuild_index(nc: Client, *, timeout: float = REBUILD_TIMEOUT) -> files.RebuildReply:
    """Have the indexer scan RECORDINGS_DIR and reconcile its index; what it changed."""
    return await _found(
        _ask(nc, files.SERVICE, files.REBUILD, None, files.RebuildReply, timeout),
        files.SERVICE,
        files.REBUILD,
    )


async def create_subscription(
    nc: Client, sub: notifications.Subscription, *, timeout: float = TIMEOUT
) -> notifications.Subscription:
    """Have the notifier store ``sub`` (asked once: a create is not repeated on a late answer)."""
    return await _found(
        _ask(
            nc,
            notifications.SERVICE,
            notifications.CREATE,
            sub,
            notifications.Subscription,
            timeout,
        ),
        notifications.SERVICE,
        notifications.CREATE,
    )


async def get_subscription(
    nc: Client, sub_id: str, *, timeout: float = TIMEOUT
) -> notifications.Subscription | None:
    """The subscription ``sub_id``, or None when the notifier does not know it."""
    request = notifications.SubscriptionRef(id=sub_id)
    try:
        return await _query(
            nc,
            notifications.SERVICE,
            notifications.GET,
            request,
            notifications.Subscription,
            timeout,
        )
    except _NotFound:
        return None


async def list_subscriptions(
    nc: Client, *, owner: str | None, timeout: float = TIMEOUT
) -> notifications.SubscriptionsReply:
    """``owner``'s subscriptions (everyone's when None), oldest first."""
    request = notifications.SubscriptionsQuery(owner=owner)
    return await _found(
        _query(
            nc,
            notifications.SERVICE,
            notifications.LIST,
            request,
            notifications.SubscriptionsReply,
            timeout,
        ),
        notifications.SERVICE,
        notifications.LIST,
    )


async def delete_subscription(nc: Client, sub_id: str, *, timeout: float = TIMEOUT) -> bool:
    """Have the notifier forget ``sub_id``; False when it did not know it."""
    request = notifications.SubscriptionRef(id=sub_id)
    reply = await _found(
        _ask(
            nc,
            notifications.SERVICE,
            notifications.DELETE,
            request,
            notifications.SubscriptionDeleted,
            timeout,
        ),
        notifications.SERVICE,
        notifications.DELETE,
    )
    return reply.deleted


async def _found(asking: Awaitable[T], service: str, subject: str) -> T:
    try:
        return await asking
    except _NotFound as exc:
        raise ServiceUnavailable(service, f"{subject} answered not found") from exc


async def _query(
    nc: Client, service: str, subject: str, request: object, reply_type: type[T], timeout: float
) -> T:
    """``_ask``, tried again on another instance when the answer is late (QUERY_TRIES)."""
    for share in QUERY_TRIES[:-1]:
        try:
            return await _ask(nc, service, subject, request, reply_type, timeout * share)
        except _Late:
            continue
    try:
        return await _ask(nc, service, subject, request, reply_type, timeout * QUERY_TRIES[-1])
    except _Late as exc:
        raise ServiceUnavailable(service, f"no answer on {subject}") from exc


async def _ask(
    nc: Client, service: str, subject: str, request: object, reply_type: type[T], timeout: float
) -> T:
    if not nc.is_connected:
        raise ServiceUnavailable(service, "NATS is not connected")
    payload = b"" if request is None else _encoder.encode(request)
    try:
        reply: Msg = await nc.request(subject, payload, timeout=timeout)
    except (TimeoutError, nats.errors.TimeoutError) as exc:
        raise _Late(service, f"no answer on {subject} within {timeout:.1f}s") from exc
    except (*TRANSIENT, nats.errors.Error) as exc:
        raise ServiceUnavailable(service, f"no answer on {subject}") from exc
    code = (reply.headers or {}).get(ERROR_CODE_HEADER)
    if code == NOT_FOUND:
        raise _NotFound
    if code:
        description = (reply.headers or {}).get(ERROR_HEADER, "")
        raise ServiceUnavailable(service, f"{subject} error {code}: {description}")
    try:
        return msgspec.json.decode(reply.data, type=reply_type)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise ServiceUnavailable(service, f"reply on {subject} does not decode") from exc
