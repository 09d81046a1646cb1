"""A TCP fault proxy between one service and the NATS nodes: pass, blackhole, reset, delay."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

Mode = Literal["pass", "blackhole", "reset", "delay"]
_CHUNK = 65536


@dataclass(eq=False)
class _Conn:
    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    # Bytes were dropped: the NATS protocol stream has a hole, it cannot carry on afterwards.
    tainted: bool = False

    def abort(self) -> None:
        for writer in self.writers:
            writer.transport.abort()


class FaultProxy:
    """One listener per upstream (a NATS node), all under one mode, switchable at run time.

    - ``pass``: bytes flow both ways.
    - ``blackhole``: connections stay open but every byte is dropped, both ways, and new ones
      are accepted and never answered: a partition as the client sees it. When the blackhole
      ends, the connections that lost bytes are reset (TCP would have retransmitted them; a
      proxy cannot), so the client reconnects as it would after a real partition.
    - ``reset``: open connections are aborted (RST); new ones are accepted and aborted at once.
    - ``delay``: each chunk is forwarded ``delay`` seconds late (in order, one at a time).
    """

    def __init__(self, upstreams: list[tuple[str, int]], *, host: str = "127.0.0.1") -> None:
        self.upstreams = upstreams
        self.host = host
        self.mode: Mode = "pass"
        self.delay = 0.0
        self.ports: list[int] = []
        self._servers: list[asyncio.Server] = []
        self._conns: set[_Conn] = set()
        self._changed = asyncio.Event()

    @property
    def urls(self) -> list[str]:
        return [f"nats://{self.host}:{port}" for port in self.ports]

    async def start(self) -> FaultProxy:
        for upstream in self.upstreams:
            server = await asyncio.start_server(self._handler(upstream), self.host, 0)
            self._servers.append(server)
            self.ports.append(server.sockets[0].getsockname()[1])
        return self

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        for conn in list(self._conns):
            conn.abort()
        for server in self._servers:
            await server.wait_closed()

    def set_mode(self, mode: Mode, *, delay: float = 0.0) -> None:
        previous, self.mode, self.delay = self.mode, mode, delay
        if mode == "reset" or (previous == "blackhole" and mode != "blackhole"):
            for conn in list(self._conns):
                if mode == "reset" or conn.tainted:
                    conn.abort()
        self._changed.set()
        self._changed = asyncio.Event()

    def _handler(
        self, upstream: tuple[str, int]
    ) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            conn = _Conn([writer])
            self._conns.add(conn)
            try:
                if self.mode == "reset":
                    return
                if self.mode == "blackhole":
                    conn.tainted = True
                    await self._drain_until_healed(reader)
                    return
                try:
                    up_reader, up_writer = await asyncio.open_connection(*upstream)
                except OSError:
                    return  # the node is down: the client sees its connection closed
                conn.writers.append(up_writer)
                pumps = [
                    asyncio.create_task(self._pump(reader, up_writer, conn)),
                    asyncio.create_task(self._pump(up_reader, writer, conn)),
                ]
                # Either side closing ends the connection (NATS has no half-closed use).
                _, pending = await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
                for task in pending:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            finally:
                conn.abort()
                self._conns.discard(conn)

        return handle

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: _Conn
    ) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(_CHUNK):
                if self.mode == "blackhole":
                    conn.tainted = True
                    continue
                if self.mode == "delay" and self.delay > 0:
                    await asyncio.sleep(self.delay)
                writer.write(data)
                await writer.drain()
            if self.mode == "blackhole":
                # A close inside a partition reaches nobody: hold it until the partition ends.
                conn.tainted = True
                await self._healed()

    async def _drain_until_healed(self, reader: asyncio.StreamReader) -> None:
        healed = asyncio.create_task(self._healed())
        try:
            with contextlib.suppress(ConnectionError):
                while not healed.done():
                    reading = asyncio.create_task(reader.read(_CHUNK))
                    await asyncio.wait({reading, healed}, return_when=asyncio.FIRST_COMPLETED)
                    if not reading.done():
                        reading.cancel()
                    elif not reading.result():
                        await healed  # EOF: stay silent until the partition ends
        finally:
            healed.cancel()

    async def _healed(self) -> None:
        while self.mode == "blackhole":
            await self._changed.wait()
