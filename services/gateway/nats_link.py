"""The gateway's NATS connection, made in the background so the API is up before NATS is."""

from __future__ import annotations

import asyncio
import contextlib

from nats.micro.service import Service

from services.gateway.settings import GatewaySettings
from shared import micro
from shared.bus import TRANSIENT, Bus
from shared.logging import get_logger

log = get_logger(__name__)

SERVICE = "gateway"


class NotConnected(Exception):
    """NATS has not been reached yet: nothing that needs it can be done."""


class NatsLink:
    """Owns the gateway's :class:`Bus`; knows whether NATS and its resources are usable."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.bus: Bus | None = None
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._provisioned = asyncio.Event()
        self._micro: Service | None = None
        self._reprovision: asyncio.Task[None] | None = None

    async def __aenter__(self) -> NatsLink:
        self._task = asyncio.create_task(self._connect())
        return self

    async def __aexit__(self, *_exc: object) -> None:
        self._stop.set()
        for task in (self._task, self._reprovision):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._micro is not None:
            with contextlib.suppress(Exception):
                await self._micro.stop()
        if self.bus is not None:
            await self.bus.close()

    async def wait_connected(self) -> Bus:
        """For tests and tools: the bus once NATS is reached and provisioned."""
        await self._provisioned.wait()
        assert self.bus is not None
        return self.bus

    def require_bus(self) -> Bus:
        """The bus, once NATS was first reached; :class:`NotConnected` before."""
        if self.bus is None:
            msg = "NATS is not connected"
            raise NotConnected(msg)
        return self.bus

    async def ready(self) -> bool:
        """NATS connected and every stream and bucket answering."""
        if self.bus is None or not self._provisioned.is_set():
            return False
        return await self.bus.resources_ready()

    async def _connect(self) -> None:
        bus = await Bus.connect(
            self.settings.nats_servers,
            service=SERVICE,
            instance=self.settings.instance_id,
            replicas=self.settings.nats_replicas,
            stop=self._stop,
            on_reconnect=self._on_reconnect,
        )
        if bus is None:
            return
        self.bus = bus
        await self._provision()
        self._micro, _ = await micro.register(
            bus.nc,
            name=SERVICE,
            description="REST gateway of the TikTok LIVE recorder",
            instance=self.settings.instance_id,
            status=lambda: {"nats_connected": bus.nc.is_connected},
        )

    async def _provision(self) -> None:
        assert self.bus is not None
        delay = 0.2
        while not self._stop.is_set():
            try:
                await self.bus.provision()
            except TRANSIENT as exc:
                log.warning("gateway.provision_retry", error=repr(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            self._provisioned.set()
            return

    async def _on_reconnect(self) -> None:
        # A restarted server may have lost its store: provision again, off the callback.
        if self._reprovision is None or self._reprovision.done():
            self._reprovision = asyncio.create_task(self._provision())
