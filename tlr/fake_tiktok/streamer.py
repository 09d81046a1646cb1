"""One endless HTTP-FLV response (§5.5): real-time pacing, switches, pause, end and faults."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time

from aiohttp import web

from tlr.fake_tiktok.delivery import Outlet
from tlr.fake_tiktok.flv import LoopCursor
from tlr.fake_tiktok.media import MediaLibrary
from tlr.fake_tiktok.state import FaultMode, Room, RoomStatus, StreamConn

_LINGER_ZERO = struct.pack("ii", 1, 0)
_FLUSH_TIMEOUT_S = 5.0


class Pacer:
    """Maps the monotonic clock onto media time (ms), `speed` times faster than real time."""

    def __init__(self, speed: float, media_ts: int) -> None:
        self._ms_per_s = speed * 1000.0
        self._t0 = 0.0
        self._m0 = 0
        self.anchor(media_ts)

    def anchor(self, media_ts: int) -> None:
        """Declare `media_ts` due now (at start and after a pause: no catch-up burst)."""
        self._t0 = time.monotonic()
        self._m0 = media_ts

    def media_now(self) -> int:
        return self._m0 + int((time.monotonic() - self._t0) * self._ms_per_s)

    def seconds_until(self, media_ts: int) -> float:
        return (media_ts - self._m0) / self._ms_per_s - (time.monotonic() - self._t0)


def _initial_ts(room: Room, speed: float, ts_offset_ms: int) -> int:
    # Like a CDN relaying an RTMP ingest, timestamps count from the start of the broadcast, so a
    # reconnect continues the timeline instead of restarting at zero.
    return ts_offset_ms + int((time.monotonic() - room.started_mono) * speed * 1000)


class FlvStreamer:
    """Writes the FLV for one connection until the room's state or a fault says to stop."""

    def __init__(
        self,
        request: web.Request,
        response: web.StreamResponse,
        room: Room,
        conn: StreamConn,
        media: MediaLibrary,
        *,
        speed: float,
        tick_s: float,
        ts_offset_ms: int,
    ) -> None:
        self._request = request
        # Set once the response is prepared, in the segments and irregular deliveries: the
        # bytes go to the server's Wire, not straight to the response.
        self.outlet: Outlet | None = None
        self._response = response
        self._room = room
        self._conn = conn
        self._media = media
        self._tick_s = tick_s
        self._gen = room.profile_gen
        source = media.get(room.profile).variant(audio_only=conn.audio_only)
        self._cursor = LoopCursor(source, _initial_ts(room, speed, ts_offset_ms))
        self._pacer = Pacer(speed, self._cursor.next_ts())

    async def run(self) -> None:
        room, conn, cursor, pacer = self._room, self._conn, self._cursor, self._pacer
        out = bytearray(cursor.start())
        while True:
            # State is checked between batches, and batches only hold whole tags, so every stop
            # below happens on a tag boundary (except a drop, which cuts at an exact byte count).
            if room.status == RoomStatus.ENDED:
                await self._stop(room.end_mode or "eof", flush=False)
                return
            if conn.drop is not None and conn.bytes_sent >= conn.drop.after_bytes:
                await self._stop(conn.drop.mode, flush=True)
                return
            if room.status == RoomStatus.PAUSED:
                await conn.sleep(None)  # woken by resume / end / drop / switch
                pacer.anchor(cursor.next_ts())  # carry on where we were, no catch-up burst
                continue
            if room.profile_gen != self._gen:
                self._gen = room.profile_gen
                new_source = self._media.get(room.profile).variant(audio_only=conn.audio_only)
                out += cursor.switch(new_source)
                pacer.anchor(cursor.next_ts())
            out += cursor.take_until(pacer.media_now())
            if out:
                if not await self._send(out):
                    continue  # the drop budget ran out mid-batch: the check above fires
                out = bytearray()
            await conn.sleep(max(self._tick_s, pacer.seconds_until(cursor.next_ts())))

    async def _send(self, data: bytearray) -> bool:
        """Write `data`, or only what the pending drop allows; False if the drop was reached."""
        conn = self._conn
        complete = True
        if conn.drop is not None:
            budget = max(0, conn.drop.after_bytes - conn.bytes_sent)
            if budget < len(data):
                del data[budget:]
                complete = False
        if data:
            if self.outlet is not None:
                await self.outlet.write(data)
            else:
                await self._response.write(data)
            conn.bytes_sent += len(data)
        if not complete:
            data.clear()
        return complete

    async def _stop(self, mode: FaultMode, *, flush: bool) -> None:
        if self.outlet is not None:
            # What the streamer wrote is still queued in the outlet: it leaves first, as it
            # would have from a socket buffer (a reset without flush discards it, like abort).
            if mode == "reset" and not flush:
                self.outlet.discard()
            else:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(_FLUSH_TIMEOUT_S):
                        await self.outlet.flush()
        if mode == "eof":
            await self._response.write_eof()  # the terminating zero-length chunk: a clean EOF
        elif mode == "reset":
            await self._reset(flush=flush)
        else:
            while True:  # stall: keep the socket open and silent until the client gives up
                await self._conn.sleep(None)

    async def _reset(self, *, flush: bool) -> None:
        transport = self._request.transport
        if transport is None:
            return
        if flush:
            # For a drop, let the bytes already written reach the kernel first so the client
            # receives exactly `after_bytes` before the RST (abort discards the user-space
            # buffer). Bounded, so a client that stopped reading cannot hold the reset back.
            transport.set_write_buffer_limits(high=0)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_FLUSH_TIMEOUT_S):
                    await self._request.writer.drain()
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # Linger 0 turns close() into an RST instead of a FIN.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
        transport.abort()
