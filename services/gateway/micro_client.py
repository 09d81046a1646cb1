"""Queries to the services' ``nats.micro`` endpoints: watchers (scheduler), files (indexer).

Those services own their state; the gateway only reads it here (and changes it through
JetStream commands). Anything that keeps an answer from arriving (no instance running, a
timeout, a lost connection, an error reply other than "not found", a reply that does not
decode) is :class:`ServiceUnavailable`, which the routes turn into 503.
"""

from __future__ import annotations

from typing import TypeVar

import msgspec
import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.micro.request import ERROR_CODE_HEADER, ERROR_HEADER

from shared import files, watchers
from shared.bus import TRANSIENT

T = TypeVar("T")
TIMEOUT = 2.0
REBUILD_TIMEOUT = 120.0  # a scan of a large RECORDINGS_DIR takes a while
NOT_FOUND = "404"  # the nats.micro error code our services answer for an unknown key

_encoder = msgspec.json.Encoder()


class ServiceUnavailable(Exception):
    """The service gave no usable answer."""


class _NotFound(Exception):
    pass


async def get_watcher(nc: Client, key: str, *, timeout: float = TIMEOUT) -> watchers.Watcher | None:
    """The watcher under ``key``, or None when the scheduler does not know it."""
    try:
        return await _ask(nc, watchers.GET, watchers.GetRequest(key=key), watchers.Watcher, timeout)
    except _NotFound:
        return None


async def list_watchers(
    nc: Client, page: int, page_size: int, *, timeout: float = TIMEOUT
) -> watchers.ListReply:
    """One page of watchers (oldest first) and the total count."""
    request = watchers.ListRequest(page=page, page_size=page_size)
    return await _ask_found(nc, watchers.LIST, request, watchers.ListReply, timeout)


async def query_files(
    nc: Client, query: files.FileQuery, *, timeout: float = TIMEOUT
) -> files.FilePage:
    """One page of indexed files, newest first, and the total count."""
    return await _ask_found(nc, files.QUERY, query, files.FilePage, timeout)


async def rebuild_index(nc: Client, *, timeout: float = REBUILD_TIMEOUT) -> files.RebuildReply:
    """Have the indexer scan RECORDINGS_DIR and reconcile its index; what it changed."""
    return await _ask_found(nc, files.REBUILD, None, files.RebuildReply, timeout)


async def _ask_found(
    nc: Client, subject: str, request: object, reply_type: type[T], timeout: float
) -> T:
    try:
        return await _ask(nc, subject, request, reply_type, timeout)
    except _NotFound as exc:
        msg = f"{subject} answered not found"
        raise ServiceUnavailable(msg) from exc


async def _ask(nc: Client, subject: str, request: object, reply_type: type[T], timeout: float) -> T:
    if not nc.is_connected:
        msg = "NATS is not connected"
        raise ServiceUnavailable(msg)
    payload = b"" if request is None else _encoder.encode(request)
    try:
        reply: Msg = await nc.request(subject, payload, timeout=timeout)
    except (*TRANSIENT, nats.errors.Error) as exc:
        msg = f"no answer on {subject}"
        raise ServiceUnavailable(msg) from exc
    code = (reply.headers or {}).get(ERROR_CODE_HEADER)
    if code == NOT_FOUND:
        raise _NotFound
    if code:
        description = (reply.headers or {}).get(ERROR_HEADER, "")
        msg = f"{subject} error {code}: {description}"
        raise ServiceUnavailable(msg)
    try:
        return msgspec.json.decode(reply.data, type=reply_type)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        msg = f"reply on {subject} does not decode"
        raise ServiceUnavailable(msg) from exc
