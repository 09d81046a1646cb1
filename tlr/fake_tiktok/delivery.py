"""How the fake CDN hands FLV bytes to the socket: in whole batches, or as a real CDN does.

``chunks`` (the default) writes each batch of whole tags the streamer produces (one write per
40 ms tick): cheap, and what every test was written against. A real CDN relaying a 2 Mbit/s
live does not write like that: the bytes reach the client as TCP segments, mostly one ~1.4 KB
segment at a time, cutting through tags, and a reader wakes for each. Two modes reproduce it:

- ``segments``: one write of at most :data:`SEGMENT` bytes at a time;
- ``irregular``: writes of 1 byte to 48 KB (log-uniform), cutting through tags.

Both are paced in real time: one :class:`Wire` per server ticks every :data:`TICK_S` and sends
each connection's due bytes a piece at a time, one piece per tick unless the connection has
fallen more than :data:`SPREAD` bytes behind (a keyframe), so a stream's bytes are spread over
time instead of leaving in bursts. Each piece is one ``send()``: it is written straight to the
transport as one HTTP chunk, and a connection whose previous piece is still in user space
(the kernel's buffer was full) is skipped until it has left, so pieces never merge in our
buffers (the kernel still merges them when the client lets its socket buffer fill, as with a
real CDN).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import socket
from typing import Literal

from aiohttp import web

Delivery = Literal["chunks", "segments", "irregular"]
DELIVERIES: tuple[Delivery, ...] = ("chunks", "segments", "irregular")
SEGMENT = 1400  # an Ethernet MSS less TCP options, about what a CDN's segment carries
IRREGULAR_MAX = 48 * 1024
TICK_S = 0.005
SPREAD = 8 * 1024  # backlog above which a tick sends more than one piece
HIGH_WATER = 1024 * 1024  # a streamer further ahead than this waits (its client is slow)


def parse_delivery(value: object) -> Delivery:
    if value not in DELIVERIES:
        msg = f"delivery must be one of {', '.join(DELIVERIES)}"
        raise ValueError(msg)
    return value  # narrowed to Delivery by the membership test


class Outlet:
    """One FLV response's bytes waiting for the :class:`Wire` (segments or irregular mode)."""

    def __init__(self, wire: Wire, request: web.Request) -> None:
        transport = request.transport
        assert transport is not None
        self._wire = wire
        self.transport = transport
        self.pending = bytearray()
        self.sent = 0  # bytes this outlet handed to the kernel (payload, not chunk framing)
        self.writes = 0  # sends made (one per piece)
        self._drained: asyncio.Future[None] | None = None
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # Each piece leaves at once as its own segment, not merged by Nagle.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # aiohttp holds the status line and headers until the first body write: send them now,
        # since the pieces bypass its writer.
        request.writer.send_headers()

    async def write(self, data: bytes | bytearray) -> None:
        """Queue ``data``; waits only while more than HIGH_WATER bytes are queued."""
        if self.transport.is_closing():
            raise ConnectionResetError
        self.pending += data
        self._wire.activate(self)
        if len(self.pending) > HIGH_WATER:
            await self._wait(HIGH_WATER)

    async def flush(self) -> None:
        """Wait until every queued byte has been sent (or the connection closed)."""
        await self._wait(0)

    def discard(self) -> None:
        self.pending.clear()
        self._wake()

    async def _wait(self, level: int) -> None:
        while len(self.pending) > level and not self.transport.is_closing():
            self._drained = asyncio.get_running_loop().create_future()
            await self._drained
        if self.transport.is_closing():
            raise ConnectionResetError

    def _wake(self) -> None:
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def send_due(self, size: int) -> bool:
        """Send one piece of at most ``size`` bytes; False if nothing was sent (nothing
        queued, the connection closed, or the previous piece has not left yet)."""
        transport = self.transport
        pending = self.pending
        if transport.is_closing():
            pending.clear()
        if not pending:
            self._wake()
            return False
        if transport.get_write_buffer_size():
            return False  # the last piece has not left yet: never merge two in user space
        n = min(size, len(pending))
        transport.write(b"%x\r\n" % n + pending[:n] + b"\r\n")
        del pending[:n]
        self.sent += n
        self.writes += 1
        wire = self._wire
        wire.writes += 1
        wire.largest = max(wire.largest, n)
        if len(pending) <= HIGH_WATER:
            self._wake()
        return True


class Wire:
    """The server's one ticker that sends every shaped connection's pieces."""

    def __init__(self, mode: Delivery, seed: int | None = None) -> None:
        self.mode = mode
        self._rng = random.Random(seed)
        self._active: set[Outlet] = set()
        self._handle: asyncio.TimerHandle | None = None
        self._log_max = math.log(IRREGULAR_MAX)
        self.writes = 0  # pieces sent, over every connection (for tests and benchmarks)
        self.largest = 0  # the largest piece sent

    def outlet(self, request: web.Request) -> Outlet | None:
        """An outlet for a new FLV response, or None in ``chunks`` mode (write directly)."""
        return None if self.mode == "chunks" else Outlet(self, request)

    def activate(self, outlet: Outlet) -> None:
        self._active.add(outlet)
        if self._handle is None:
            self._handle = asyncio.get_running_loop().call_later(TICK_S, self._tick)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        for outlet in self._active:
            outlet.discard()
        self._active.clear()

    def _piece(self) -> int:
        if self.mode == "segments":
            return SEGMENT
        return max(1, int(math.exp(self._rng.random() * self._log_max)))

    def _tick(self) -> None:
        self._handle = None
        done = []
        for outlet in self._active:
            sent = outlet.send_due(self._piece())
            while sent and len(outlet.pending) > SPREAD:  # behind: catch up within this tick
                sent = outlet.send_due(self._piece())
            if not outlet.pending:
                done.append(outlet)
        for outlet in done:
            self._active.discard(outlet)
        if self._active:
            self._handle = asyncio.get_running_loop().call_later(TICK_S, self._tick)
