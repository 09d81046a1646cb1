"""The one way services talk to NATS: connect, provision, publish (shared.consumer consumes)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, PubAck, StreamConfig
from nats.js.kv import KeyValue

from shared import events as ev
from shared import metrics
from shared.config import NatsClientSettings
from shared.logging import get_logger
from shared.nats_auth import connect_options
from shared.subjects import (
    BUCKETS,
    CLAIMS_BUCKET,
    EVENTS_STREAM,
    LEASE_CALL_TIMEOUT,
    STREAMS,
    Durable,
    kv_stream_config,
    subject_for,
    with_replicas,
)

if TYPE_CHECKING:
    from shared.consumer import Consumer, Handler

log = get_logger(__name__)

STREAM_CONFIG_CHANGED = 10058  # "stream name already in use with a different configuration"

# Errors that mean "NATS is momentarily unreachable": retry the same operation.
TRANSIENT = (
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.OutboundBufferLimitError,
    nats.js.errors.NoStreamResponseError,
    nats.js.errors.ServiceUnavailableError,
    asyncio.TimeoutError,
)


class Bus:
    """A NATS connection with its JetStream context, for one process.

    ``may_provision`` False (``NATS_PROVISION=false``, a NATS user without the right to create
    streams): :meth:`provision` only waits until the provisioner has made what is needed.
    """

    def __init__(
        self,
        nc: Client,
        *,
        service: str,
        replicas: int = 1,
        may_provision: bool = True,
        stop: asyncio.Event | None = None,
    ) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream(timeout=5.0)
        self.service = service
        self.replicas = replicas
        self.may_provision = may_provision
        self._stop = stop
        self._kv: dict[str, KeyValue] = {}
        self._claims: KeyValue | None = None
        self._reconnect_hooks: list[Callable[[], Awaitable[None]]] = []

    @classmethod
    async def connect(
        cls,
        servers: list[str],
        *,
        service: str,
        instance: str = "",
        replicas: int = 1,
        stop: asyncio.Event | None = None,
        on_reconnect: Callable[[], Awaitable[None]] | None = None,
        on_disconnect: Callable[[], Awaitable[None]] | None = None,
        auth: NatsClientSettings | None = None,
    ) -> Bus | None:
        """Connect, retrying until NATS answers or ``stop`` is set (then None).

        nats-py retries the first connection by itself forever (max_reconnect_attempts=-1), so
        this races it against ``stop``. Once connected, the client reconnects by itself; the
        callbacks log, keep the ``tlr_nats_connected`` gauge true and let the caller react.
        Credentials, TLS and ``NATS_PROVISION`` come from ``auth``, else from the environment
        (the ``NATS_*`` settings): a bad one raises :class:`shared.config.SettingsError`.
        """
        if auth is None:
            auth = NatsClientSettings()
        client_auth = connect_options(auth)
        nc = Client()
        failures = 0
        bus: Bus | None = None

        async def error_cb(exc: Exception) -> None:
            nonlocal failures
            if nc.is_connected or nc.is_reconnecting:
                log.debug("nats.error", error=repr(exc))
                return
            failures += 1
            if failures & (failures - 1) == 0:  # 1, 2, 4, 8 ...: visible, not a flood
                log.warning(
                    "nats.connect_failed", servers=servers, error=repr(exc), attempts=failures
                )

        async def disconnected_cb() -> None:
            metrics.NATS_CONNECTED.labels(service).set(0)
            if nc.is_closed or nc.is_draining:
                return  # our own close(), not a loss
            log.warning("nats.disconnected")
            if on_disconnect:
                await on_disconnect()

        async def reconnected_cb() -> None:
            metrics.NATS_CONNECTED.labels(service).set(1)
            metrics.NATS_RECONNECTS.labels(service).inc()
            log.info("nats.reconnected", server=_server_of(nc))
            if on_reconnect:
                await on_reconnect()
            if bus is not None:
                await bus._reconnected()

        async def lame_duck_cb() -> None:
            log.warning("nats.lame_duck_mode")

        connecting = asyncio.create_task(
            nc.connect(
                servers,
                name=f"{service}:{instance}" if instance else service,
                connect_timeout=2,
                reconnect_time_wait=0.5,  # type: ignore[arg-type]  # annotated int, used as float
                max_reconnect_attempts=-1,
                allow_reconnect=True,
                # A partition that drops packets without closing the socket is noticed within
                # ~15 s, not after nats-py's default 2 x 120 s of unanswered pings.
                ping_interval=5,
                max_outstanding_pings=3,
                error_cb=error_cb,
                disconnected_cb=disconnected_cb,
                reconnected_cb=reconnected_cb,
                lame_duck_mode_cb=lame_duck_cb,
                **client_auth.options,
            )
        )
        waits: set[asyncio.Future[Any]] = {connecting}
        stopping = asyncio.create_task(stop.wait()) if stop is not None else None
        if stopping is not None:
            waits.add(stopping)
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if stopping is not None:
                stopping.cancel()
        if not connecting.done():
            connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await connecting
            with contextlib.suppress(Exception):
                await nc.close()
            return None
        connecting.result()  # a configuration error (bad URL) surfaces here
        metrics.NATS_CONNECTED.labels(service).set(1)
        log.info(
            "nats.connected", server=_server_of(nc), auth=client_auth.method, tls=client_auth.tls
        )
        bus = cls(
            nc,
            service=service,
            replicas=replicas,
            may_provision=auth.nats_provision,
            stop=stop,
        )
        return bus

    def add_reconnect_hook(self, hook: Callable[[], Awaitable[None]]) -> Callable[[], None]:
        """Await ``hook`` after every reconnection (it must return quickly: nats-py waits for
        it before it resumes); returns what removes it. Only for a bus made by :meth:`connect`."""
        self._reconnect_hooks.append(hook)

        def remove() -> None:
            with contextlib.suppress(ValueError):  # removed already
                self._reconnect_hooks.remove(hook)

        return remove

    async def _reconnected(self) -> None:
        for hook in list(self._reconnect_hooks):
            try:
                await hook()
            except Exception:  # one hook's bug must not keep the others from running
                log.exception("nats.reconnect_hook_failed")

    async def close(self) -> None:
        """Drain: flush what is pending, unsubscribe, then close."""
        with contextlib.suppress(Exception):
            await self.nc.drain()
        metrics.NATS_CONNECTED.labels(self.service).set(0)

    # --- provisioning ---------------------------------------------------------------------------

    async def provision(
        self,
        *,
        streams: Iterable[StreamConfig] = STREAMS,
        buckets: Iterable[KeyValueConfig] = BUCKETS,
        durables: Iterable[Durable] = (),
    ) -> None:
        """Create or update streams, KV buckets and durables. Safe to run any number of times.

        Without the right to (``may_provision`` False), wait until they all exist instead.
        """
        if not self.may_provision:
            await self.await_provisioned(streams=streams, buckets=buckets, durables=durables)
            return
        for stream in [*streams, *(kv_stream_config(b) for b in buckets)]:
            await self.ensure_stream(with_replicas(stream, self.replicas))
        for durable in durables:
            await self.js.add_consumer(durable.stream, durable.config)

    async def missing(
        self,
        *,
        streams: Iterable[StreamConfig] = STREAMS,
        buckets: Iterable[KeyValueConfig] = BUCKETS,
        durables: Iterable[Durable] = (),
    ) -> list[str]:
        """The streams (``KV_<bucket>`` for a bucket) and durables (``STREAM/durable``) that do
        not exist; NATS errors other than "not found" are raised."""
        gone: list[str] = []
        for stream in [*streams, *(kv_stream_config(b) for b in buckets)]:
            assert stream.name is not None
            try:
                await self.js.stream_info(stream.name)
            except nats.js.errors.NotFoundError:
                gone.append(stream.name)
        for durable in durables:
            try:
                await self.js.consumer_info(durable.stream, durable.name)
            except nats.js.errors.NotFoundError:
                gone.append(f"{durable.stream}/{durable.name}")
        return gone

    async def await_provisioned(
        self,
        *,
        streams: Iterable[StreamConfig] = STREAMS,
        buckets: Iterable[KeyValueConfig] = BUCKETS,
        durables: Iterable[Durable] = (),
        poll: float = 0.5,
    ) -> None:
        """Return once every stream, bucket and durable exists (or ``stop`` is set), saying
        what is missing now and then: the provisioner makes them (``tlr up`` does at start)."""
        streams, buckets, durables = list(streams), list(buckets), list(durables)
        checks = 0
        while True:
            gone = await self.missing(streams=streams, buckets=buckets, durables=durables)
            if not gone:
                if checks:
                    log.info("nats.provisioned")
                return
            checks += 1
            if checks & (checks - 1) == 0:  # 1, 2, 4, 8 ...
                log.warning(
                    "nats.awaiting_provisioning",
                    missing=gone,
                    hint="run the provisioner: python -m tlr.nats_auth provision",
                )
            if self._stop is None:
                await asyncio.sleep(poll)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), poll)
                if self._stop.is_set():
                    return

    async def ensure_stream(self, config: StreamConfig) -> None:
        try:
            await self.js.add_stream(config)
        except nats.js.errors.BadRequestError as exc:
            if exc.err_code != STREAM_CONFIG_CHANGED:
                raise
            assert config.name is not None
            existing = (await self.js.stream_info(config.name)).config
            config = never_fewer_replicas(existing, config)
            log.info("nats.stream_updated", stream=config.name, replicas=config.num_replicas)
            await self.js.update_stream(config)

    async def resources_ready(self, *, probe_timeout: float = 1.0) -> bool:
        """True when NATS answers and every stream and bucket exists (readiness probes)."""
        if not self.nc.is_connected:
            return False
        names = [s.name for s in STREAMS] + [kv_stream_config(b).name for b in BUCKETS]
        jsm = self.nc.jetstream(timeout=probe_timeout)
        try:
            for name in names:
                assert name is not None
                await jsm.stream_info(name)
        except (*TRANSIENT, nats.js.errors.NotFoundError):
            return False
        return True

    async def kv(self, bucket: str) -> KeyValue:
        if bucket not in self._kv:
            self._kv[bucket] = await self.js.key_value(bucket)
        return self._kv[bucket]

    async def claims(self) -> KeyValue:
        """The leases bucket, whose calls give up after LEASE_CALL_TIMEOUT (not 5 s): a renewal
        lost in an election is tried again while the lease still stands."""
        if self._claims is None:
            js = self.nc.jetstream(timeout=LEASE_CALL_TIMEOUT)
            self._claims = await js.key_value(CLAIMS_BUCKET)
        return self._claims

    # --- publishing -----------------------------------------------------------------------------

    async def publish(self, event: ev.Event, *, retry_for: float = 10.0) -> PubAck:
        """Publish ``event`` on its subject with ``Nats-Msg-Id = event_id``.

        Retries transient failures (a leader election takes ~4 s) with the same Msg-Id, so a
        retry is deduplicated by the server rather than stored twice.
        """
        subject = subject_for(type(event))
        headers = {
            "Nats-Msg-Id": event.event_id,
            "Event-Type": subject,
            "Event-Version": str(event.v),
            "Correlation-Id": event.correlation_id,
        }
        data = ev.encode(event)
        deadline = time.monotonic() + retry_for
        delay = 0.1
        while True:
            try:
                ack = await self.js.publish(subject, data, headers=headers, stream=EVENTS_STREAM)
            except TRANSIENT as exc:
                if time.monotonic() + delay > deadline:
                    raise
                log.warning("bus.publish_retry", subject=subject, error=repr(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            metrics.EVENTS_PUBLISHED.labels(subject, str(bool(ack.duplicate)).lower()).inc()
            return ack

    # --- consuming ------------------------------------------------------------------------------

    def consumer(
        self,
        durable: Durable,
        handler: Handler,
        *,
        concurrency: int = 1,
        heartbeat: float | None = None,
    ) -> Consumer:
        # Imported here: shared.consumer builds on this module (Bus, TRANSIENT).
        from shared.consumer import Consumer

        return Consumer(self, durable, handler, concurrency=concurrency, heartbeat=heartbeat)


def never_fewer_replicas(existing: StreamConfig, wanted: StreamConfig) -> StreamConfig:
    """``wanted``, with the existing stream's replicas if it has more: one process started
    with the default NATS_REPLICAS=1 must not turn a cluster's R3 streams into R1."""
    have, want = existing.num_replicas or 1, wanted.num_replicas or 1
    if have <= want:
        return wanted
    log.warning("nats.replicas_kept", stream=wanted.name, replicas=have, asked=want)
    return dataclasses.replace(wanted, num_replicas=have)


def _server_of(nc: Client) -> str:
    return str(nc.connected_url.netloc) if nc.connected_url else ""


__all__ = ["TRANSIENT", "Bus"]
