"""How every service process runs: settings, logging, metrics, signals -> stop -> drain."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from typing import Any

from shared.bus import Bus
from shared.config import Settings
from shared.logging import configure_logging, get_logger
from shared.ops_http import OpsServer
from shared.service import BaseService

log = get_logger(__name__)

ServiceFactory = Callable[[Bus], AbstractAsyncContextManager[Any]]


def run(name: str, settings: Settings, factory: ServiceFactory) -> None:
    """The body of every ``python -m services.<name>``: returns once drained after SIGTERM."""
    configure_logging(name, settings.log_level, settings.log_format)
    run_loop(serve(name, settings, factory))


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` on uvloop where it is installed, else on asyncio's own loop.

    uvloop is the same asyncio API with a cheaper loop; it matters for the recorder, which
    handles thousands of socket reads per second. It does not build on Windows or PyPy, where
    pyproject.toml's marker leaves it out and the services run as well, only slower.
    """
    try:
        import uvloop
    except ImportError:
        log.info("runtime.event_loop", loop="asyncio")
        asyncio.run(main)
        return
    uvloop.run(main)


def stop_on_signals(stop: asyncio.Event) -> None:
    """SIGTERM and SIGINT set ``stop`` instead of killing the process mid-write."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


async def serve(
    name: str,
    settings: Settings,
    factory: ServiceFactory,
    *,
    stop: asyncio.Event | None = None,
    ready: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Connect to NATS, run the service until ``stop`` (or a signal), then drain."""
    if stop is None:
        stop = asyncio.Event()
        stop_on_signals(stop)
    started = False
    bus: Bus | None = None

    def is_ready() -> bool:
        return started and bus is not None and bus.nc.is_connected

    # Up before NATS is: a process waiting for NATS is alive (/healthz) but not ready (/ready).
    ops = (
        OpsServer(settings.metrics_port, is_ready, host=settings.metrics_host)
        if settings.metrics_port
        else None
    )
    if ops is not None:
        await ops.start()
    try:
        bus = await Bus.connect(
            settings.nats_servers,
            service=name,
            instance=settings.instance_id,
            replicas=settings.nats_replicas,
            stop=stop,
        )
        if bus is None:
            log.info("service.stopped_before_connect")
            return
        try:
            async with factory(bus):
                started = True
                if ready is not None:
                    await ready()
                await stop.wait()
                started = False  # draining: take this instance out of rotation
                log.info("service.draining")
        finally:
            await bus.close()
        log.info("service.stopped")
    finally:
        if ops is not None:
            await ops.close()


def main(service: type[BaseService]) -> None:
    """``python -m services.<name>`` for a :class:`BaseService`: settings from the environment."""
    settings = service.settings_type()
    run(service.name, settings, lambda bus: service(bus, settings))
