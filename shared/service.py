"""The common shape of a JetStream-driven service: provision, register, consume, drain."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from types import TracebackType
from typing import Any, ClassVar, Generic, Self

from nats.micro.service import Group, Service
from typing_extensions import TypeVar

from shared import micro
from shared.bus import TRANSIENT, Bus
from shared.config import Settings
from shared.consumer import Consumer, Handler
from shared.logging import get_logger
from shared.metrics import CONSUMER_ACK_PENDING, CONSUMER_PENDING, CONSUMER_REDELIVERED
from shared.subjects import Durable

log = get_logger(__name__)

# A service's own settings class. Covariant, as a service only reads its (frozen) settings: a
# BaseService[SchedulerSettings] is a BaseService, which is what runtime.main takes. The default
# keeps a bare ``BaseService`` subclass valid, reading ``self.settings`` as plain Settings.
S = TypeVar("S", bound=Settings, default=Settings, covariant=True)


class BaseService(Generic[S]):
    """An async context manager owning a service's consumers and micro registration.

    ``__aenter__`` provisions the streams, buckets and durables the service owns (idempotent;
    again after every reconnection, as the server may have lost its store), registers it with
    ``nats.micro`` and calls :meth:`start`; ``__aexit__`` stops pulling, lets handlers in
    flight finish, then unregisters. Subclasses add their consumers in ``start``.
    ``BaseService[XSettings]`` types ``self.settings`` as XSettings; ``settings_type`` names the
    same class for :func:`shared.runtime.main`, which builds it from the environment.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    durables: ClassVar[tuple[Durable, ...]] = ()
    settings_type: ClassVar[type[Settings]] = Settings
    drain_grace: ClassVar[float] = 10.0
    lag_interval: ClassVar[float] = 10.0

    def __init__(self, bus: Bus, settings: S) -> None:
        self.bus = bus
        self.settings = settings
        self._stop = asyncio.Event()
        self._consumers: list[Consumer] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._micro: Service | None = None
        self._reprovision: asyncio.Task[None] | None = None
        self._forget_reconnect: Callable[[], None] | None = None

    async def __aenter__(self) -> Self:
        await self.bus.provision(durables=self.durables)
        self._forget_reconnect = self.bus.add_reconnect_hook(self._on_reconnect)
        self._micro, group = await micro.register(
            self.bus.nc,
            name=self.name,
            description=self.description,
            instance=self.settings.instance_id,
            status=self._status,
            metadata=self.metadata(),
        )
        await self.start(group)
        if self.durables:
            self._tasks.append(asyncio.create_task(self._sample_lag()))
        log.info("service.started", instance=self.settings.instance_id)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        forget, self._forget_reconnect = self._forget_reconnect, None
        if forget is not None:
            forget()
        await self.draining()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._reprovision is not None:
            await asyncio.gather(self._reprovision, return_exceptions=True)
        await self.stop()
        if self._micro is not None:
            await self._micro.stop()

    async def start(self, group: Group) -> None:
        """Hook: add request/reply endpoints to ``group`` and start consumers."""

    async def draining(self) -> None:
        """Hook: pulling has stopped; tell long handlers to wrap up within ``drain_grace``."""

    async def stop(self) -> None:
        """Hook: release what ``start`` acquired, after the consumers have drained."""

    def status(self) -> dict[str, Any]:
        """Hook: extra fields of the ``status`` endpoint."""
        return {}

    def metadata(self) -> dict[str, str]:
        """Hook: what ``$SRV.PING`` (GET /services) shows of this instance, known at start."""
        return {}

    def consume(
        self,
        durable: Durable,
        handler: Handler,
        *,
        concurrency: int = 1,
        heartbeat: float | None = None,
    ) -> Consumer:
        """Run ``handler`` on ``durable`` until the service stops."""
        consumer = self.bus.consumer(durable, handler, concurrency=concurrency, heartbeat=heartbeat)
        self._consumers.append(consumer)
        self._tasks.append(asyncio.create_task(consumer.run(self._stop, grace=self.drain_grace)))
        return consumer

    async def _on_reconnect(self) -> None:
        # The server may have restarted without its store (a wiped volume, a replaced R1 node):
        # everything this service needs is provisioned again (idempotent, a few requests).
        # In a task: nats-py awaits this callback before it resumes, and provisioning needs it.
        if self._stop.is_set() or (self._reprovision and not self._reprovision.done()):
            return
        self._reprovision = asyncio.create_task(self._provision_again())

    async def _provision_again(self) -> None:
        delay = 0.2
        while not self._stop.is_set():
            try:
                await self.bus.provision(durables=self.durables)
            except TRANSIENT as exc:  # JetStream not up yet on the restarted server
                log.warning("service.provision_retry", error=repr(exc), retry_in_s=delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay)
                delay = min(delay * 2, 5.0)
                continue
            except Exception:  # a fetch that finds its durable gone provisions it again
                log.exception("service.provision_failed")
                return
            log.info("service.provisioned_again")
            return

    async def _sample_lag(self) -> None:
        """Export each durable's backlog as gauges, the figures ``nats consumer info`` shows."""
        while not self._stop.is_set():
            for durable in self.durables:
                try:
                    info = await self.bus.js.consumer_info(durable.stream, durable.name)
                except Exception as exc:  # NATS away: keep the last figures, say why once a turn
                    log.debug("service.lag_unavailable", durable=durable.name, error=str(exc))
                    continue
                CONSUMER_PENDING.labels(durable.name).set(info.num_pending or 0)
                CONSUMER_ACK_PENDING.labels(durable.name).set(info.num_ack_pending or 0)
                CONSUMER_REDELIVERED.labels(durable.name).set(info.num_redelivered or 0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.lag_interval)

    def _status(self) -> dict[str, Any]:
        return {
            "nats_connected": self.bus.nc.is_connected,
            "in_flight": {c.durable.name: c.in_flight for c in self._consumers},
            **self.status(),
        }
