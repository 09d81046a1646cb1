"""Registration of a process as a ``nats.micro`` service, so ``nats micro ls`` lists it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import msgspec
import nats.errors
from nats.aio.client import Client
from nats.micro import add_service
from nats.micro.request import Request
from nats.micro.service import Group, Service

from shared import __version__

StatusFn = Callable[[], dict[str, Any]]


def endpoint_subject(service: str, endpoint: str) -> str:
    """Subject of a request/reply endpoint: ``tlr.<service>.<endpoint>``."""
    return f"tlr.{service}.{endpoint}"


async def register(
    nc: Client,
    *,
    name: str,
    description: str,
    instance: str,
    status: StatusFn,
    metadata: dict[str, str] | None = None,
) -> tuple[Service, Group]:
    """Add the micro service with its ``status`` endpoint; returns it and its endpoint group.
    ``metadata`` is shown by ``$SRV.PING`` (GET /services) beside the instance name."""
    started = time.time()
    service = await add_service(
        nc,
        name=name,
        version=__version__,
        description=description,
        metadata={**(metadata or {}), "instance": instance},
    )
    group = service.add_group(name=f"tlr.{name}")

    async def on_status(req: Request) -> None:
        body = {
            "service": name,
            "instance": instance,
            "version": __version__,
            "uptime_s": round(time.time() - started, 3),
            **status(),
        }
        await req.respond(msgspec.json.encode(body))

    await group.add_endpoint(name="status", handler=on_status)
    return service, group


async def ping_all(nc: Client, *, wait: float = 0.3) -> list[dict[str, Any]]:
    """Scatter-gather ``$SRV.PING``: every micro service instance that answers within ``wait``."""
    replies: list[dict[str, Any]] = []
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    try:
        await nc.publish("$SRV.PING", b"", reply=inbox)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while (left := deadline - loop.time()) > 0:
            try:
                msg = await sub.next_msg(timeout=left)
            except nats.errors.TimeoutError:
                break
            with contextlib.suppress(msgspec.DecodeError):
                replies.append(msgspec.json.decode(msg.data))
    finally:
        await sub.unsubscribe()
    return replies
