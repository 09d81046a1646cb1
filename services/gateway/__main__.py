"""Entry point: ``python -m services.gateway`` serves the REST API with uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import uvicorn
import uvloop

from services.gateway.app import create_app
from shared.config import GatewaySettings
from shared.logging import configure_logging, get_logger
from shared.runtime import stop_on_signals

log = get_logger(__name__)


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: our stop event drives shutdown."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve(settings: GatewaySettings) -> None:
    stop = asyncio.Event()
    stop_on_signals(stop)
    config = uvicorn.Config(
        create_app(settings),
        host=settings.gateway_host,
        port=settings.gateway_port,
        log_config=None,
        access_log=False,
        lifespan="on",
    )
    server = _Server(config)
    serving = asyncio.create_task(server.serve())
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
    log.info("service.draining")
    server.should_exit = True
    stopping.cancel()
    await serving
    log.info("service.stopped")


def main() -> None:
    settings = GatewaySettings()
    configure_logging("gateway", settings.log_level, settings.log_format)
    uvloop.run(serve(settings))


if __name__ == "__main__":
    main()
