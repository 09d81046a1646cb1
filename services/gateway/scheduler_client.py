"""Watcher queries to the scheduler over NATS request/reply (its ``nats.micro`` endpoints).

The scheduler owns watcher state; the gateway only reads it here (and changes it through
JetStream commands). Anything that keeps an answer from arriving (no scheduler running, a
timeout, a lost connection, an error reply other than "not found", a reply that does not
decode) is :class:`SchedulerUnavailable`, which the routes turn into 503.
"""

from __future__ import annotations

from typing import TypeVar

import msgspec
import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.micro.request import ERROR_CODE_HEADER, ERROR_HEADER

from shared.bus import TRANSIENT
from shared.watchers import GET, LIST, GetRequest, ListReply, ListRequest, Watcher

T = TypeVar("T")
TIMEOUT = 2.0
NOT_FOUND = "404"  # the scheduler's nats.micro error code for an unknown key

_encoder = msgspec.json.Encoder()
_watcher_decoder = msgspec.json.Decoder(Watcher)
_list_decoder = msgspec.json.Decoder(ListReply)


class SchedulerUnavailable(Exception):
    """The scheduler gave no usable answer."""


class _NotFound(Exception):
    pass


async def get_watcher(nc: Client, key: str, *, timeout: float = TIMEOUT) -> Watcher | None:
    """The watcher under ``key``, or None when the scheduler does not know it."""
    try:
        data = await _ask(nc, GET, _encoder.encode(GetRequest(key=key)), timeout)
    except _NotFound:
        return None
    return _decode(_watcher_decoder, data)


async def list_watchers(
    nc: Client, page: int, page_size: int, *, timeout: float = TIMEOUT
) -> ListReply:
    """One page of watchers (oldest first) and the total count."""
    request = ListRequest(page=page, page_size=page_size)
    try:
        data = await _ask(nc, LIST, _encoder.encode(request), timeout)
    except _NotFound as exc:
        msg = "scheduler: list answered not found"
        raise SchedulerUnavailable(msg) from exc
    return _decode(_list_decoder, data)


async def _ask(nc: Client, subject: str, payload: bytes, timeout: float) -> bytes:
    if not nc.is_connected:
        msg = "NATS is not connected"
        raise SchedulerUnavailable(msg)
    try:
        reply: Msg = await nc.request(subject, payload, timeout=timeout)
    except (*TRANSIENT, nats.errors.Error) as exc:
        msg = "scheduler did not answer"
        raise SchedulerUnavailable(msg) from exc
    code = (reply.headers or {}).get(ERROR_CODE_HEADER)
    if code == NOT_FOUND:
        raise _NotFound
    if code:
        description = (reply.headers or {}).get(ERROR_HEADER, "")
        msg = f"scheduler error {code}: {description}"
        raise SchedulerUnavailable(msg)
    return reply.data


def _decode(decoder: msgspec.json.Decoder[T], data: bytes) -> T:
    try:
        return decoder.decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        msg = "scheduler reply does not decode"
        raise SchedulerUnavailable(msg) from exc
